//! Least privilege, shown on a real agent (root; `cargo build -p fail2xdp`
//! first): after attaching it keeps exactly the documented capabilities in
//! every thread, and still bans, reads logs it does not own (after a
//! rotation too) and reloads; a configured read-only group may look
//! (status, list, explain) but never ban, and anybody else is refused.
//!
//! Bans by hand are 198.51.100.0/24, jail bans 203.0.113.0/24.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fail2xdp::privs::{kept_mask, names};
use fail2xdp_tests::{
    AgentOptions, Lab, fail2xdp_bin, require_privileges,
    watch::{N, Watch, fails, wait_for},
};

const SMTP: u16 = 25;
const NOBODY: u32 = 65534;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The capability sets and flags of one task, from its `status` file.
fn cap_sets(status: &Path) -> Result<BTreeMap<String, u64>> {
    let s = fs::read_to_string(status).with_context(|| format!("reading {}", status.display()))?;
    let mut out = BTreeMap::new();
    for key in [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    ] {
        let v = s
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .with_context(|| format!("no {key} in {}", status.display()))?
            .trim();
        let n = if key == "NoNewPrivs" {
            v.parse()?
        } else {
            u64::from_str_radix(v, 16)?
        };
        out.insert(key.to_string(), n);
    }
    Ok(out)
}

/// Every thread of `pid` has exactly the kept capabilities (effective,
/// permitted, bounding), nothing inheritable or ambient, and
/// `no_new_privs`; returns how many threads were checked.
fn check_threads(pid: u32) -> Result<usize> {
    let want = kept_mask();
    let mut checked = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task"))? {
        let t = t?;
        let sets = match cap_sets(&t.path().join("status")) {
            Ok(s) => s,
            // A thread that ended between the listing and the read.
            Err(_) if !t.path().exists() => continue,
            Err(e) => return Err(e),
        };
        let name = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        for key in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(
                sets[key],
                want,
                "thread {} ({}) {key} is {:?}, not {:?}",
                t.file_name().to_string_lossy(),
                name.trim(),
                names(sets[key]),
                names(want)
            );
        }
        assert_eq!(sets["CapInh"], 0, "thread {}: {sets:?}", name.trim());
        assert_eq!(sets["CapAmb"], 0, "thread {}: {sets:?}", name.trim());
        assert_eq!(sets["NoNewPrivs"], 1, "thread {}: {sets:?}", name.trim());
        checked += 1;
    }
    Ok(checked)
}

/// The agent's one child, the connection closer's helper: it keeps
/// cap_net_admin only (effective, permitted, bounding), with
/// `no_new_privs`.
fn check_closer_helper(pid: u32) -> Result<()> {
    let mut children = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))? {
        let list = fs::read_to_string(t?.path().join("children")).unwrap_or_default();
        children.extend(list.split_whitespace().map(str::to_owned));
    }
    let [child] = children.as_slice() else {
        bail!("the agent should have one child, its closer helper; it has {children:?}");
    };
    let cmdline = fs::read(format!("/proc/{child}/cmdline"))?;
    assert!(
        text(&cmdline).split('\0').any(|a| a == "closer-helper"),
        "the agent's child is not the closer helper: {:?}",
        text(&cmdline)
    );
    let sets = cap_sets(Path::new(&format!("/proc/{child}/status")))?;
    let want = 1u64 << fail2xdp::privs::CAP_NET_ADMIN;
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            sets[key],
            want,
            "the closer helper's {key} is {:?}, not cap_net_admin",
            names(sets[key])
        );
    }
    assert_eq!(sets["CapInh"], 0, "{sets:?}");
    assert_eq!(sets["CapAmb"], 0, "{sets:?}");
    assert_eq!(sets["NoNewPrivs"], 1, "{sets:?}");
    Ok(())
}

/// Makes `path` (a file or directory) belong to nobody, mode `mode`:
/// root can then open it only with CAP_DAC_READ_SEARCH (or more).
fn give_to_nobody(path: &Path, mode: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .with_context(|| format!("chown nobody {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// After attaching, every thread of the agent keeps cap_bpf and
/// cap_dac_read_search only (its closer helper cap_net_admin only); manual bans, jail bans from a log only
/// CAP_DAC_READ_SEARCH lets it read (a rotated one too), unbans and both
/// kinds of reload still work.
#[test]
fn the_agent_keeps_only_the_documented_capabilities() -> Result<()> {
    let w = Watch::start_config(
        |log| {
            format!(
                "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\nfindtime = \"10m\"\nmaxretry = 3\nbantime = \"1h\"\nports = \"all\"\n",
                log.display()
            )
        },
        &[],
        |log| {
            give_to_nobody(log, 0o600)?;
            give_to_nobody(log.parent().context("log dir")?, 0o700)
        },
    )?;
    let agent = &w.lab.agent;
    let pid = agent.pid().context("agent pid")?;
    assert_eq!(
        names(kept_mask()),
        ["cap_dac_read_search", "cap_bpf"],
        "the documented set changed: update README.md and this test"
    );
    let threads = check_threads(pid)?;
    check_closer_helper(pid)?;
    assert!(
        threads > 2,
        "only {threads} thread(s) checked: the runtime and readers should be running"
    );
    assert!(
        agent
            .log()
            .contains("capabilities dropped: keeping cap_dac_read_search,cap_bpf only"),
        "{}",
        agent.log()
    );
    let status = agent.cli(&["status"])?;
    assert!(
        status.contains("capabilities: cap_dac_read_search,cap_bpf\n"),
        "{status}"
    );
    let st = agent.status_json()?;
    assert_eq!(
        st["agent"]["capabilities"],
        serde_json::json!(["cap_dac_read_search", "cap_bpf"]),
        "{st}"
    );

    // A manual ban still reaches the maps, and drops.
    agent.ban("198.51.100.7", &["--for", "1h"])?;
    assert!(agent.ban_entry("198.51.100.7")?.is_some());
    assert_eq!(w.delivered("198.51.100.7", SMTP)?, 0);

    // A jail reads the log root does not own, and bans.
    w.feed(&fails("203.0.113.20", 3))?;
    w.wait_banned("203.0.113.20/32")?;
    assert_eq!(w.delivered("203.0.113.20", SMTP)?, 0);

    // SIGHUP and `fail2xdp reload` both still reload.
    let log = || agent.log();
    let before = count(&log(), "reloaded ");
    // SAFETY: kill(2) on the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_for("the SIGHUP reload", Duration::from_secs(15), || {
        Ok(count(&log(), "reloaded ") > before)
    })?;
    assert!(!log().contains("not reloaded"), "{}", log());
    let out = agent.cli(&["reload"])?;
    assert!(out.contains("reloaded"), "{out}");

    // After a rotation the new file (nobody's again) is opened with the
    // reduced set.
    let rotated = w.log.with_extension("log.1");
    fs::rename(&w.log, &rotated)?;
    fs::write(&w.log, "")?;
    give_to_nobody(&w.log, 0o600)?;
    wait_for(
        "the agent to open the new log",
        Duration::from_secs(15),
        || {
            let s = w.agent_status()?;
            Ok(s["sources"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|s| s["rotations"].as_u64())
                .is_some_and(|r| r >= 1))
        },
    )
    .map_err(|e| w.with_log(e))?;
    w.append(&fails("203.0.113.21", 3))?;
    w.wait_banned("203.0.113.21/32")?;
    assert!(
        !log().contains("ermission denied"),
        "the agent could not open something: {}",
        log()
    );

    // An unban deletes from the maps.
    agent.unban("198.51.100.7")?;
    assert!(agent.ban_entry("198.51.100.7")?.is_none());
    assert_eq!(w.delivered("198.51.100.7", SMTP)?, N);

    // Nothing of the above gave a capability back.
    check_threads(pid)?;
    check_closer_helper(pid)?;
    Ok(())
}

/// The tools the accounts need; a missing one fails the test, saying so.
fn require_tools() {
    let missing: Vec<&str> = ["useradd", "userdel", "groupadd", "groupdel", "setpriv"]
        .into_iter()
        .filter(|t| {
            !std::env::var_os("PATH").is_some_and(|p| {
                std::env::split_paths(&p).any(|d| {
                    fs::metadata(d.join(t)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
                })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the read-only group test needs {} in PATH (Debian: passwd, util-linux); it never skips",
        missing.join(", ")
    );
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), text(&out.stderr).trim());
    }
    Ok(())
}

/// A throwaway group and two users (a member, by a supplementary group,
/// and an outsider), removed on every exit path.
struct Accounts {
    group: String,
    reader: String,
    outsider: String,
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    fn create() -> Result<Self> {
        require_tools();
        // Short (useradd takes 32 characters), unique per process.
        let tag = format!("{}", std::process::id());
        let mut a = Accounts {
            group: format!("f2xro{tag}"),
            reader: format!("f2xrd{tag}"),
            outsider: format!("f2xou{tag}"),
            users: Vec::new(),
            groups: Vec::new(),
        };
        // Left by a crashed earlier run with the same pid: start clean.
        for u in [&a.reader, &a.outsider] {
            let _ = Command::new("userdel").arg(u).output();
        }
        let _ = Command::new("groupdel").arg(&a.group).output();
        run("groupadd", &[&a.group])?;
        a.groups.push(a.group.clone());
        let nologin = "/usr/sbin/nologin";
        run(
            "useradd",
            &["-M", "-s", nologin, "-U", "-G", &a.group, &a.reader],
        )?;
        a.users.push(a.reader.clone());
        run("useradd", &["-M", "-s", nologin, "-U", &a.outsider])?;
        a.users.push(a.outsider.clone());
        Ok(a)
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        // userdel removes each user's own (-U) group.
        for u in &self.users {
            if let Err(e) = run("userdel", &[u]) {
                eprintln!("warning: {e:#}");
            }
        }
        for g in &self.groups {
            if let Err(e) = run("groupdel", &[g]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// The gid of group `name`.
fn gid_of(name: &str) -> Result<u32> {
    let groups = fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name))
                .then(|| f.nth(1).and_then(|g| g.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("no group {name} in /etc/group"))
}

/// The CLI as another user, aimed at `lab`'s instance.
struct As<'a> {
    bin: &'a Path,
    lab: &'a Lab,
}

impl As<'_> {
    /// `setpriv` args select the user and groups.
    fn run(&self, setpriv: &[&str], args: &[&str]) -> Result<Output> {
        let a = &self.lab.agent;
        let out = Command::new("setpriv")
            .args(setpriv)
            .arg("--")
            .arg(self.bin)
            .arg("--pin-dir")
            .arg(a.pin_dir())
            .arg("--state-dir")
            .arg(a.state_dir())
            .arg("--socket")
            .arg(a.socket())
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .context("running setpriv")?;
        Ok(out)
    }
}

/// With `[control] readonly_group`, the socket is 0660 and that group's;
/// a member (by a supplementary group, or by its primary one) runs
/// status, list and explain, and every changing command is refused with
/// a message and changes nothing; a user outside the group is refused
/// entirely.
#[test]
fn a_readonly_group_may_look_but_never_ban() -> Result<()> {
    require_privileges();
    let acc = Accounts::create()?;
    let gid = gid_of(&acc.group)?;
    let dir = tempfile::Builder::new().prefix("f2x-ro-").tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    // The binary where the users may run it, whatever the target dir's modes.
    let bin = dir.path().join("fail2xdp");
    fs::copy(fail2xdp_bin(), &bin).context("copying the fail2xdp binary")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let config = dir.path().join("fail2xdp.toml");
    fs::write(
        &config,
        format!("[control]\nreadonly_group = \"{}\"\n", acc.group),
    )?;
    let lab = Lab::start_with(AgentOptions {
        config: Some(config),
        ..AgentOptions::default()
    })?;
    let agent = &lab.agent;
    let sock = agent.socket();
    // The instance's temp dir is root's 0700: let the users reach the socket.
    fs::set_permissions(
        sock.parent().context("socket dir")?,
        fs::Permissions::from_mode(0o711),
    )?;
    wait_for("the control socket", Duration::from_secs(20), || {
        Ok(agent.cli_output(&["status"])?.status.success())
    })?;
    let m = fs::symlink_metadata(&sock)?;
    assert_eq!(m.mode() & 0o777, 0o660, "socket mode {:o}", m.mode());
    assert_eq!(m.gid(), gid, "socket group");
    assert_eq!(m.uid(), 0, "socket owner");

    agent.ban("198.51.100.30", &["--for", "1h"])?;
    let cli = As {
        bin: &bin,
        lab: &lab,
    };
    let reader = [
        "--reuid",
        &acc.reader,
        "--regid",
        &acc.reader,
        "--init-groups",
    ];
    // The outsider with the group as its primary (and only) group.
    let by_gid = [
        "--reuid",
        &acc.outsider,
        "--regid",
        &acc.group,
        "--clear-groups",
    ];
    let outsider = [
        "--reuid",
        &acc.outsider,
        "--regid",
        &acc.outsider,
        "--init-groups",
    ];

    for who in [&reader[..], &by_gid[..]] {
        let out = cli.run(who, &["status"])?;
        assert!(out.status.success(), "status as {who:?}: {out:?}");
        let s = text(&out.stdout);
        assert!(
            s.contains("capabilities: cap_dac_read_search,cap_bpf")
                && s.contains(&format!("read-only for group {}", acc.group)),
            "{s}"
        );
        let out = cli.run(who, &["list"])?;
        assert!(out.status.success(), "list as {who:?}: {out:?}");
        assert!(text(&out.stdout).contains("198.51.100.30"), "{out:?}");
        let out = cli.run(who, &["explain", "198.51.100.30"])?;
        assert!(out.status.success(), "explain as {who:?}: {out:?}");

        for (args, cmd) in [
            (&["ban", "198.51.100.31", "--for", "1h"][..], "ban"),
            (&["unban", "198.51.100.30"][..], "unban"),
            (&["allow", "add", "198.51.100.32"][..], "allow add"),
            (&["reload"][..], "reload"),
        ] {
            let out = cli.run(who, args)?;
            assert!(!out.status.success(), "{args:?} as {who:?}: {out:?}");
            let err = text(&out.stderr);
            assert!(
                err.contains(&format!("read-only access: `{cmd}` needs root")),
                "{args:?} as {who:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // Nothing changed.
    assert!(agent.ban_entry("198.51.100.31")?.is_none());
    assert!(agent.ban_entry("198.51.100.30")?.is_some());
    assert_eq!(lab.delivered(&lab.syn("198.51.100.31", SMTP), N)?, N);
    assert_eq!(lab.delivered(&lab.syn("198.51.100.30", SMTP), N)?, 0);
    assert!(!agent.log().contains("reloaded "), "{}", agent.log());

    // A user outside the group is refused entirely.
    for args in [
        &["status"][..],
        &["list"][..],
        &["ban", "198.51.100.33"][..],
    ] {
        let out = cli.run(&outsider, args)?;
        assert!(!out.status.success(), "{args:?} as outsider: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("ermission denied") || err.contains("may not use this socket"),
            "{args:?} as outsider: {err}"
        );
    }
    assert!(agent.ban_entry("198.51.100.33")?.is_none());
    Ok(())
}

/// Without a read-only group the socket stays root's 0600.
#[test]
fn without_a_readonly_group_the_socket_is_root_only() -> Result<()> {
    let lab = Lab::start()?;
    let m = fs::symlink_metadata(lab.agent.socket())?;
    assert_eq!(m.mode() & 0o777, 0o600, "socket mode {:o}", m.mode());
    assert_eq!((m.uid(), m.gid()), (0, 0));
    Ok(())
}
