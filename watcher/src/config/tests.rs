use super::*;

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "t.toml", Path::new("/tmp")) {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn ok(text: &str) -> Config {
    parse(text, "t.toml", Path::new("/tmp")).unwrap_or_else(|e| panic!("{e}"))
}

const JAIL: &str = "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/var/log/mail.log\"]\n";

#[test]
fn builtin_default_loads() {
    let c = builtin().expect("built-in config");
    let names: Vec<&str> = c.jails.iter().map(|j| j.name.as_str()).collect();
    assert!(names.contains(&"postfix-sasl"), "{names:?}");
    assert!(names.contains(&"postfix-auth-flood"), "{names:?}");
    let j = c
        .jails
        .iter()
        .find(|j| j.name.as_str() == "postfix-sasl")
        .expect("jail");
    assert_eq!(j.rules.maxretry, 5);
    assert_eq!(j.rules.findtime, Duration::from_secs(600));
    assert_eq!(j.rules.bantime, Some(Duration::from_secs(3600)));
    assert_eq!(j.ports, PortSet(vec![25, 465, 587]));
    assert_eq!(j.rules.ipv6_prefix, 64);
    let inc = j.rules.increment.expect("increment");
    assert_eq!(inc.factor, 2.0);
    assert_eq!(inc.max, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(j.rules.max_hosts, 1_000_000);
    match &j.sources[..] {
        [SourceConf::Files(g)] => {
            assert!(
                g == &["/var/log/mail.log"] || g == &["/var/log/maillog"],
                "{g:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn jail_overrides_defaults() {
    let c = ok(&format!(
        "[defaults]\nmaxretry = 7\nbantime = \"permanent\"\nports = \"all\"\n{JAIL}maxretry = 2\nports = [\"imaps\", 25]\n"
    ));
    let j = &c.jails[0];
    assert_eq!(j.rules.maxretry, 2);
    assert_eq!(j.rules.bantime, None);
    assert_eq!(j.ports, PortSet(vec![25, 993]));
    assert!(j.rules.increment.is_none());
}

#[test]
fn errors_name_line_and_key() {
    let p = problems(&format!(
        "max_hosts = 10\n{JAIL}maxretry = 0\nbantime = \"soon\"\n"
    ));
    assert_eq!(
        p.iter()
            .map(|p| (p.line, p.key.as_str()))
            .collect::<Vec<_>>(),
        vec![(5, "jails.sasl.maxretry"), (6, "jails.sasl.bantime")],
        "{p:?}"
    );
    assert!(
        p[0].to_string()
            .starts_with("t.toml:5:jails.sasl.maxretry: "),
        "{}",
        p[0]
    );
}

#[test]
fn unknown_key_and_syntax_errors_are_located() {
    let p = problems(&format!("{JAIL}maxretri = 3\n"));
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (4, "jails.sasl.maxretri"),
        "{p:?}"
    );
    let p = problems("[jails.sasl]\nfilter = \"postfix-sasl\nfiles = []\n");
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (2, "jails.sasl.filter"),
        "{p:?}"
    );
    let p = problems(&format!("{JAIL}maxretry = \"five\"\n"));
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (4, "jails.sasl.maxretry"),
        "{p:?}"
    );
}

#[test]
fn semantic_errors() {
    for (extra, key) in [
        ("ports = \"smtp,bogus\"\n", "jails.sasl.ports"),
        ("ipv6_prefix = 8\n", "jails.sasl.ipv6_prefix"),
        ("ipv4_prefix = 33\n", "jails.sasl.ipv4_prefix"),
        ("allowlist = [\"not-an-ip\"]\n", "jails.sasl.allowlist[0]"),
        ("ignoreregex = [\"(\"]\n", "jails.sasl.ignoreregex[0]"),
        ("findtime = \"permanent\"\n", "jails.sasl.findtime"),
        (
            "increment = { factor = 0.5 }\n",
            "jails.sasl.increment.factor",
        ),
        ("increment = { factr = 2 }\n", "jails.sasl.increment.factr"),
    ] {
        let p = problems(&format!("{JAIL}{extra}"));
        assert_eq!(p.len(), 1, "{extra}: {p:?}");
        assert_eq!((p[0].line, p[0].key.as_str()), (4, key), "{extra}: {p:?}");
    }
    let p = problems("[jails.sasl]\nfilter = \"no-such-filter\"\nfiles = [\"/x\"]\n");
    assert_eq!((p[0].line, p[0].key.as_str()), (2, "jails.sasl.filter"));
    let p = problems("[jails.sasl]\nfiles = [\"/x\"]\n");
    assert_eq!(p[0].key, "jails.sasl.filter");
    let p = problems("[jails.sasl]\nfilter = \"postfix-sasl\"\n");
    assert_eq!(p[0].key, "jails.sasl.files");
    let p = problems("[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"relative.log\"]\n");
    assert_eq!((p[0].line, p[0].key.as_str()), (3, "jails.sasl.files[0]"));
}

/// A configuration without jails runs the agent as an enforcer of manual
/// bans, blocklists and CrowdSec decisions (it failed with "no jail is
/// configured").
#[test]
fn no_jails_is_an_enforcer_only_configuration() {
    let c = ok("allowlist = []\n");
    assert!(c.jails.is_empty());
    assert!(ok("").jails.is_empty());
}

/// check-config means it: a jail prefix broader than the guard takes was
/// accepted (8..32) although every one of its bans was refused (the guard's
/// limit is /16). Jail prefixes and the guard's limit are one setting now.
#[test]
fn jail_prefixes_are_checked_against_the_guards_limit() {
    let p = problems(&format!("{JAIL}ipv4_prefix = 12\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (4, "jails.sasl.ipv4_prefix")
    );
    assert!(
        p[0].message.contains("limits.ipv4_prefix"),
        "{}",
        p[0].message
    );
    let p = problems(&format!("{JAIL}ipv6_prefix = 24\n"));
    assert_eq!(p[0].key, "jails.sasl.ipv6_prefix", "{p:?}");
    // Raising the limit (one place) makes the jail valid, and the guard uses it.
    let c = ok(&format!(
        "[limits]\nipv4_prefix = 8\n{JAIL}ipv4_prefix = 12\n"
    ));
    assert_eq!((c.jails[0].rules.ipv4_prefix, c.limits.v4), (12, 8));
    let p = problems(&format!("[limits]\nipv4_prefix = 40\n{JAIL}"));
    assert_eq!(p[0].key, "limits.ipv4_prefix", "{p:?}");
    let c = ok(&format!("[state]\nhistory = \"30d\"\n{JAIL}"));
    assert_eq!(c.history, Duration::from_secs(30 * 86_400));
    assert_eq!(builtin().expect("built-in").history, DEFAULT_HISTORY);
}

#[test]
fn shared_filters_are_compiled_once() {
    let c = ok(&format!(
        "{JAIL}[jails.other]\nfilter = \"postfix-sasl\"\nfiles = [\"/var/log/x.log\"]\n"
    ));
    assert!(Arc::ptr_eq(&c.jails[0].filters[0], &c.jails[1].filters[0]));
}

#[test]
fn files_any_takes_the_first_existing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = dir.path().join("maillog");
    std::fs::write(&b, "").expect("write");
    let c = ok(&format!(
        "[jails.s]\nfilter = \"postfix-sasl\"\nfiles_any = [\"{}\", \"{}\"]\n",
        dir.path().join("mail.log").display(),
        b.display()
    ));
    assert_eq!(
        c.jails[0].sources,
        vec![SourceConf::Files(vec![b.display().to_string()])]
    );
}

#[test]
fn disabled_jails_are_skipped_and_allowlists_merge() {
    let c = ok(&format!(
        "allowlist = [\"192.0.2.0/24\"]\n{JAIL}allowlist = [\"198.51.100.7\"]\n[jails.off]\nenabled = false\nfilter = \"nope\"\n"
    ));
    assert_eq!(c.jails.len(), 1);
    assert_eq!(
        c.allowlist,
        vec!["192.0.2.0/24".parse::<IpNet>().expect("net")]
    );
    // The jail keeps its own; the global one applies to every ban anyway.
    assert_eq!(
        c.jails[0].allowlist,
        vec!["198.51.100.7/32".parse::<IpNet>().expect("net")]
    );
}

#[test]
fn capacity_sizes_the_maps_and_is_checked() {
    assert_eq!(builtin().expect("built-in").capacity, Capacities::default());
    let c = ok(&format!("[capacity]\nbans_v4 = 2048\n{JAIL}"));
    assert_eq!(c.capacity.bans_v4, 2048);
    assert_eq!(c.capacity.bans_v6, Capacities::default().bans_v6);

    let p = problems(&format!("[capacity]\nbans_v6 = 0\n{JAIL}"));
    assert!(
        p.iter().any(|p| p.key == "capacity.bans_v6" && p.line == 1),
        "{p:?}"
    );
    let p = problems(&format!("[capacity]\nbans_v5 = 10\n{JAIL}"));
    assert!(p.iter().any(|p| p.line == 2), "{p:?}");
}

#[test]
fn readonly_group_is_resolved_and_an_unknown_one_is_located() {
    assert_eq!(ok(JAIL).readonly_group, None);
    // gid 0's name on every Linux system.
    let c = ok(&format!("{JAIL}\n[control]\nreadonly_group = \"root\"\n"));
    assert_eq!(
        c.readonly_group,
        Some(crate::control::ReadOnlyGroup {
            name: "root".into(),
            gid: 0
        })
    );
    let p = problems(&format!(
        "{JAIL}\n[control]\nreadonly_group = \"no-such-group-f2x\"\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].to_string()
            .starts_with("t.toml:6:control.readonly_group: no group named"),
        "{}",
        p[0]
    );
    let p = problems(&format!("{JAIL}\n[control]\nreadonly = \"adm\"\n"));
    assert_eq!(p[0].line, 6, "{p:?}");
}
