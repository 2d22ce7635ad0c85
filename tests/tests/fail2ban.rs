//! fail2ban's own filters and our users' fail2ban configurations, run by
//! the real binary: fail2ban's annotated sample logs (check.py, 769 checks)
//! and the seed configurations with what Debian's fail2ban 1.0.2 made of
//! them. The data is read from `<repo>/../shared` at test time.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use fail2xdp_tests::fail2xdp_bin;
use serde_json::Value;

fn shared() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let beside = repo.join("../shared");
    let p = if beside.join("fail2ban-corpus").is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared")
    };
    assert!(
        p.join("fail2ban-corpus/check.py").is_file() && p.join("seed-configs").is_dir(),
        "the fail2ban test data is missing: expected <repo>/../shared (or /work/shared) with fail2ban-corpus/ and seed-configs/"
    );
    p
}

fn stock() -> &'static Path {
    let p = Path::new("/etc/fail2ban");
    assert!(
        p.join("jail.conf").is_file() && p.join("filter.d/postfix.conf").is_file(),
        "/etc/fail2ban is missing: install Debian's fail2ban package (cargo xtask test does)"
    );
    p
}

#[test]
fn fail2ban_sample_logs_pass_check_py() {
    let bin = fail2xdp_bin();
    let out = Command::new("python3")
        .arg(shared().join("fail2ban-corpus/check.py"))
        .arg("--bin")
        .arg(&bin)
        .output()
        .expect("python3 is needed to run fail2ban-corpus/check.py");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default().to_string();
    assert!(
        out.status.success() && last == "769 passed, 0 failed",
        "check.py: {last}\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of Debian's /etc/fail2ban with a setup's jail.local and filters.
fn setup_dir(setup: &Path, into: &Path) -> PathBuf {
    let etc = into.join("etc");
    let st = Command::new("cp")
        .args(["-a"])
        .arg(stock())
        .arg(&etc)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(setup.join("jail.local"), etc.join("jail.local")).unwrap();
    if let Ok(rd) = std::fs::read_dir(setup.join("filter.d")) {
        for e in rd.flatten() {
            std::fs::copy(e.path(), etc.join("filter.d").join(e.file_name())).unwrap();
        }
    }
    etc
}

fn run_json(args: &[&str]) -> Value {
    let out = Command::new(fail2xdp_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fail2xdp {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fail2xdp {}: {e}", args.join(" ")))
}

/// Port names as Debian's /etc/services has them (unknown ones left out,
/// as the loader leaves them out with a warning).
fn ports(spec: &str) -> BTreeSet<u16> {
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let mut out = BTreeSet::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(n) = item.parse() {
            out.insert(n);
            continue;
        }
        let found = [("submissions", 465u16), ("smtps", 465), ("sieve", 4190)]
            .iter()
            .find(|(n, _)| *n == item)
            .map(|x| x.1)
            .or_else(|| {
                services.lines().find_map(|l| {
                    let l = l.split('#').next()?;
                    let mut it = l.split_whitespace();
                    let name = it.next()?;
                    let port = it.next()?.split('/').next()?.parse::<u16>().ok()?;
                    (name == item || it.any(|a| a == item)).then_some(port)
                })
            });
        out.extend(found);
    }
    out
}

fn ours_ports(s: &str) -> Option<BTreeSet<u16>> {
    (s != "all").then(|| s.split(',').map(|p| p.parse().unwrap()).collect())
}

#[test]
fn seed_configurations_load_and_match_like_fail2ban() {
    let seeds = shared().join("seed-configs");
    let mut checked = 0;
    for name in ["efa", "postfix-ddos", "kerio", "auth-flood"] {
        let setup = seeds.join(name);
        let tmp = tempfile::tempdir().unwrap();
        let etc = setup_dir(&setup, tmp.path());
        let etc_s = etc.display().to_string();
        let got = run_json(&["check-config", "--fail2ban-config", &etc_s, "--json"]);
        let want: BTreeMap<String, Value> = serde_json::from_str(
            &std::fs::read_to_string(setup.join("expected/jails.json")).unwrap(),
        )
        .unwrap();
        for (jail, w) in &want {
            let g = &got["jails"][jail];
            let ctx = format!("{name}/{jail}");
            assert!(g.is_object(), "{ctx}: jail not loaded: {got}");
            assert_eq!(g["enabled"], w["enabled"], "{ctx}: enabled");
            if w["enabled"] != true {
                continue;
            }
            assert_eq!(g["running"], true, "{ctx}: the jail does not run ({got})");
            assert_eq!(g["filter"], w["filter"], "{ctx}: filter");
            assert_eq!(g["logpath"], w["logpath"], "{ctx}: logpath");
            assert_eq!(g["maxretry"], w["maxretry"], "{ctx}: maxretry");
            assert_eq!(g["findtime_s"], w["findtime_s"], "{ctx}: findtime");
            assert_eq!(g["bantime_s"], w["bantime_s"], "{ctx}: bantime");
            assert_eq!(g["ignoreip"], w["ignoreip"], "{ctx}: ignoreip");
            assert_eq!(
                g["failregex_count"], w["failregex_count"],
                "{ctx}: failregex count"
            );
            assert_eq!(
                g["ignoreregex_count"], w["ignoreregex_count"],
                "{ctx}: ignoreregex count"
            );
            // The ports the firewall actions cover: all, or their union.
            let actions = w["actions"].as_array().cloned().unwrap_or_default();
            let all = actions.iter().any(|a| {
                a["actname"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("allports")
            });
            let want_ports = (!all).then(|| {
                actions
                    .iter()
                    .filter(|a| a["port"].is_string())
                    .flat_map(|a| ports(a["port"].as_str().unwrap()))
                    .collect::<BTreeSet<u16>>()
            });
            // A ban covers at most MAX_BAN_PORTS ports: a wider list is all
            // ports (the loader warns).
            let want_ports = want_ports.filter(|p| p.len() <= fail2xdp_common::MAX_BAN_PORTS);
            assert_eq!(
                ours_ports(g["ports"].as_str().unwrap()),
                want_ports,
                "{ctx}: ports"
            );
            checked += 1;
        }

        // Each filter on its sample log: the failures (line, host) fail2ban found.
        let filters: BTreeMap<String, Value> = serde_json::from_str(
            &std::fs::read_to_string(setup.join("expected/filters.json")).unwrap(),
        )
        .unwrap();
        let lines_tsv = std::fs::read_to_string(setup.join("logs/lines.tsv")).unwrap();
        let attacker: BTreeSet<(String, u64)> = lines_tsv
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.get(2) == Some(&"attacker")).then(|| (f[0].to_string(), f[1].parse().unwrap()))
            })
            .collect();
        for (ename, info) in &filters {
            let spec = info["filter"].as_str().unwrap();
            let (fname, opts) = match spec.split_once('[') {
                Some((n, o)) => (n, o.trim_end_matches(']')),
                None => (spec, ""),
            };
            let log = setup.join(info["log"].as_str().unwrap());
            let conf = etc.join("filter.d").join(format!("{fname}.conf"));
            let mut args: Vec<String> = vec![
                "test".into(),
                "--fail2ban-filter".into(),
                conf.display().to_string(),
                "--first-match".into(),
                "--json".into(),
                log.display().to_string(),
            ];
            for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                args.push("--option".into());
                args.push(o.to_string());
            }
            if info["usedns"] == "no" {
                args.push("--option".into());
                args.push("usedns=no".into());
            }
            let out = Command::new(fail2xdp_bin()).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{name}/{ename}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut ours: BTreeMap<u64, String> = BTreeMap::new();
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                ours.entry(v["line"].as_u64().unwrap())
                    .or_insert_with(|| v["host"].as_str().unwrap().to_string());
            }
            let expected =
                std::fs::read_to_string(setup.join(format!("expected/{ename}.jsonl"))).unwrap();
            let log_name = Path::new(info["log"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mut steered = false;
            for l in expected.lines() {
                let e: Value = serde_json::from_str(l).unwrap();
                let n = e["line"].as_u64().unwrap();
                let want = e["host"].as_str().map(str::to_string);
                assert_eq!(ours.get(&n).cloned(), want, "{name}/{ename} line {n}");
                // An attacker line that named someone else than the client.
                if let Some(h) = &want
                    && attacker.contains(&(log_name.clone(), n))
                    && h.parse::<IpAddr>()
                        .map_or(true, |a| a.to_string().starts_with("198.51.100."))
                {
                    steered = true;
                }
            }
            if steered
                && filters[ename]["jails"]
                    .as_array()
                    .is_some_and(|j| !j.is_empty())
            {
                let needle = format!("filter {fname} failregex");
                let warned = got["warnings"].as_array().unwrap().iter().any(|w| {
                    w["message"].as_str().unwrap_or_default().contains(&needle)
                        && w["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("steered")
                        && w["file"].is_string()
                        && w["line"].as_u64().is_some_and(|l| l > 0)
                });
                assert!(
                    warned,
                    "{name}/{ename}: a client steers it onto other hosts, and check-config does not warn (naming the filter and line): {}",
                    got["warnings"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} checks ran");
}
