//! `fail2xdp explain` and `fail2xdp reload` as an operator runs them with no
//! agent: the store and the pinned maps read directly. (With a running
//! agent: tests/tests/one_path.rs, which runs a real one.)
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, SystemTime},
};

use fail2xdp::{
    addr::{PortSet, parse_net},
    ban::{JailName, Origin},
    enforcer::{BanRequest, Enforcer},
    state::{BanRecord, Explanation, Store},
};

struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    fn new() -> Self {
        Instance {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
    fn run_with_pins(&self, pins: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fail2xdp"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--pin-dir")
            .arg(pins)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_pins(&self.dir.path().join("no-pins"), args)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn evidence_record() -> BanRecord {
    let now = SystemTime::now();
    BanRecord {
        net: parse_net("192.0.2.66").unwrap(),
        origin: Origin::Jail(JailName::new("dovecot").unwrap()),
        reason: "6 failures within 10m".into(),
        evidence: vec![
            "Nov 22 05:00:01 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<a>, rip=192.0.2.66".into(),
            "Nov 22 05:00:09 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<b>, rip=192.0.2.66".into(),
        ],
        first_seen: now - Duration::from_secs(60),
        last_seen: now,
        failures: 6,
        times_banned: 1,
        banned_at: now,
        expires_at: Some(now + Duration::from_secs(3600)),
        ports: vec![143, 993],
        narrowed_from: None,
        decision: None,
    }
}

#[test]
fn explain_without_agent_reads_the_store() {
    let inst = Instance::new();
    Store::open(&inst.state())
        .unwrap()
        .record_ban(&evidence_record())
        .unwrap();
    Store::open(&inst.state())
        .unwrap()
        .record_ban(&BanRecord::manual(
            parse_net("198.51.100.0/24").unwrap(),
            Origin::Manual,
            Some("botnet range"),
            None,
            vec![],
        ))
        .unwrap();

    let o = inst.run(&["explain", "192.0.2.66"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    eprintln!("{text}");
    for want in [
        "192.0.2.66 is banned",
        "origin dovecot",
        "6 failures within 10m",
        "user=<b>, rip=192.0.2.66",
        "143,993",
        "left)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    let o = inst.run(&["explain", "198.51.100.77", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let e: Explanation = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e.bans.len(), 1);
    assert_eq!(e.bans[0].net, parse_net("198.51.100.0/24").unwrap());
    assert_eq!(e.bans[0].reason, "botnet range");
    assert_eq!(e.bans[0].expires_at, None);
    assert_eq!(e.times_banned, 0, "the host itself was never banned");
    // The text names the prefix that bans it (it said "is banned; no ban on record").
    let o = inst.run(&["explain", "198.51.100.77"]);
    let text = stdout(&o);
    assert!(
        text.starts_with("198.51.100.77 is banned as part of 198.51.100.0/24"),
        "{text}"
    );
    assert!(!text.contains("no ban on record"), "{text}");

    let o = inst.run(&["explain", "203.0.113.1"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("203.0.113.1 is not banned"),
        "{}",
        stdout(&o)
    );

    let o = inst.run(&["explain", "not-an-address"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not-an-address"));
}

#[test]
fn explain_on_a_fresh_host_creates_nothing() {
    let inst = Instance::new();
    let o = inst.run(&["explain", "2001:db8::5"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("2001:db8::5 is not banned"));
    assert!(!inst.state().exists(), "explain created a state store");
}

#[test]
fn reload_without_agent_fails_clearly() {
    let inst = Instance::new();
    let o = inst.run(&["reload"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no agent is running"), "{err}");
}

/// Pins under bpffs for one test, removed on drop (also on failure).
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = fail2xdp::enforcer::detach(&self.0, &[]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn explain_without_agent_reads_drops_and_map_only_bans_from_the_pins() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root && Path::new("/sys/fs/bpf").join(".").exists(),
        "this test needs root and bpffs at /sys/fs/bpf (cargo xtask test runs as root and mounts it)"
    );
    let inst = Instance::new();
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/fail2xdp-h7-explain-{}",
        std::process::id()
    )));
    let mut enf = Enforcer::open_or_create(&pins.0).unwrap();
    let rec = evidence_record();
    Store::open(&inst.state())
        .unwrap()
        .record_ban(&rec)
        .unwrap();
    // One ban in store and maps, one only in the maps, one only in the store.
    enf.ban(&BanRequest {
        net: rec.net,
        ttl: Some(Duration::from_secs(3600)),
        ports: PortSet(vec![143, 993]),
        jail: "dovecot".into(),
        mode: Default::default(),
    })
    .unwrap();
    enf.ban(&BanRequest {
        net: parse_net("192.0.2.64/28").unwrap(),
        ttl: None,
        ports: PortSet::all(),
        jail: "manual".into(),
        mode: Default::default(),
    })
    .unwrap();
    drop(enf);
    let mut unenforced = evidence_record();
    unenforced.net = parse_net("192.0.2.99").unwrap();
    Store::open(&inst.state())
        .unwrap()
        .record_ban(&unenforced)
        .unwrap();

    let o = inst.run_with_pins(&pins.0, &["explain", "192.0.2.66", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let e: Explanation = serde_json::from_slice(&o.stdout).unwrap();
    let nets: Vec<String> = e.bans.iter().map(|b| b.net.to_string()).collect();
    assert_eq!(nets, ["192.0.2.66/32", "192.0.2.64/28"]);
    assert_eq!(e.bans[0].drops, Some(0));
    assert_eq!(e.bans[0].in_maps, Some(true));
    assert!(e.bans[0].recorded);
    assert!(!e.bans[1].recorded, "the /28 exists only in the maps");
    assert_eq!(e.bans[1].origin, "manual");
    assert!(e.is_banned());

    // A recorded ban the maps do not hold is reported as not enforced.
    let o = inst.run_with_pins(&pins.0, &["explain", "192.0.2.99"]);
    let text = stdout(&o);
    assert!(text.contains("not in the maps"), "{text}");
}
