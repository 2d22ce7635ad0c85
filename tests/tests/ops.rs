//! Production operation with a real agent, real pins and real packets
//! (root; `cargo build -p fail2xdp` first): the log's lines, the metrics
//! endpoint under an attack, the Grafana dashboard against a live scrape.
//!
//! Attackers are 203.0.113.0/24, bans by hand 198.51.100.0/24.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use fail2xdp_tests::{
    fail2xdp_bin,
    scrape::{Scrape, http_get, random_port},
    watch::{N, Watch, fails, wait_for},
};
use serde_json::Value;

const SMTP: u16 = 25;
const JAIL: &str = "maxretry = 3\nbantime = \"1h\"\nports = \"all\"\n";

/// An agent with its metrics on 127.0.0.1 of its namespace.
fn metered(extra: &[&str]) -> Result<(Watch, SocketAddr)> {
    let port = random_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let a = addr.to_string();
    let mut args = vec!["--metrics", a.as_str()];
    args.extend_from_slice(extra);
    let w = Watch::start_with(JAIL, &args, |_| Ok(()))?;
    Ok((w, addr))
}

fn scrape(w: &Watch, addr: SocketAddr) -> Result<Scrape> {
    let body = http_get(&w.lab.pair.recv_ns, addr, "/metrics").map_err(|e| w.with_log(e))?;
    Scrape::parse(&body)
}

/// The numbers move while an attack runs: failures, the ban, its latency,
/// the drops of its packets, the lines read; and no label names an address.
#[test]
fn metrics_move_under_an_attack() -> Result<()> {
    let (w, addr) = metered(&[])?;
    let before = scrape(&w, addr)?;
    let jail = [("jail", "sasl")];
    let origin = [("origin", "sasl"), ("family", "ipv4")];
    assert_eq!(before.sum("fail2xdp_failures_total", &jail), 0.0);
    assert_eq!(before.sum("fail2xdp_ban_latency_seconds_count", &[]), 0.0);
    assert!(before.has("fail2xdp_build_info", &[]), "{}", before.text);
    assert_eq!(
        before.sum("fail2xdp_protection", &[("state", "enforcing")]),
        1.0,
        "{}",
        before.text
    );

    // The attack: three failures, then the banned source keeps sending.
    let attacker = "203.0.113.50";
    w.feed(&fails(attacker, 3))?;
    w.wait_banned("203.0.113.50/32")?;
    assert_eq!(w.delivered(attacker, SMTP)?, 0);
    assert_eq!(w.delivered("203.0.113.51", SMTP)?, N);

    let after = scrape(&w, addr)?;
    let t = &after.text;
    assert_eq!(after.sum("fail2xdp_failures_total", &jail), 3.0, "{t}");
    assert_eq!(
        after.sum("fail2xdp_bans_total", &[("origin", "sasl")]),
        1.0,
        "{t}"
    );
    assert_eq!(after.sum("fail2xdp_active_bans", &origin), 1.0, "{t}");
    assert!(
        after.sum("fail2xdp_dropped_packets_total", &origin) >= N as f64,
        "{t}"
    );
    assert!(
        after.sum("fail2xdp_xdp_packets_total", &[("verdict", "drop")]) >= N as f64,
        "{t}"
    );
    assert!(
        after.sum("fail2xdp_xdp_packets_total", &[("verdict", "pass")])
            > before.sum("fail2xdp_xdp_packets_total", &[("verdict", "pass")]),
        "{t}"
    );
    assert!(after.sum("fail2xdp_dropped_bytes_total", &[]) > 0.0, "{t}");
    assert_eq!(
        after.sum("fail2xdp_ban_latency_seconds_count", &[]),
        1.0,
        "{t}"
    );
    let latency = after.sum("fail2xdp_ban_latency_seconds_sum", &[]);
    assert!(latency > 0.0 && latency < 5.0, "latency {latency} s\n{t}");
    assert!(
        after.sum("fail2xdp_log_lines_total", &[("result", "matched")]) >= 3.0,
        "{t}"
    );
    assert!(
        after.sum("fail2xdp_map_entries", &[("map", "BANS_V4")]) >= 1.0,
        "{t}"
    );
    assert!(
        after.sum("fail2xdp_map_capacity", &[("map", "BANS_V4")]) > 0.0,
        "{t}"
    );
    println!(
        "ban latency (line at the match stage -> map write): {:.3} ms",
        latency * 1000.0
    );

    // More packets: the counter of drops only grows.
    assert_eq!(w.delivered(attacker, SMTP)?, 0);
    let later = scrape(&w, addr)?;
    assert!(
        later.sum("fail2xdp_dropped_packets_total", &origin)
            >= after.sum("fail2xdp_dropped_packets_total", &origin) + N as f64,
        "{}",
        later.text
    );

    // No label value is an address (or holds one).
    for s in &later.samples {
        for (k, v) in &s.labels {
            assert!(
                !v.contains("203.0.113.") && !v.contains("198.51.100.") && !v.contains("192.0.2."),
                "label {k}={v:?} of {} names an address",
                s.name
            );
        }
    }
    Ok(())
}

/// `--metrics` on an address others can reach is refused unless
/// `--metrics-public` says so; the refusal is one clean line.
#[test]
fn public_metrics_need_saying_so() -> Result<()> {
    let out = Command::new(fail2xdp_bin())
        .args(["run", "--iface", "lo", "--metrics", "0.0.0.0:9"])
        .env("RUST_BACKTRACE", "1")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-public"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    Ok(())
}

/// Every metric the dashboard queries is in a live scrape.
#[test]
fn the_dashboard_queries_only_metrics_that_exist() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/fail2xdp.json");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .context("the dashboard is not JSON")?;
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 5, "{exprs:?}");
    let mut queried = BTreeSet::new();
    for e in &exprs {
        let b = e.as_bytes();
        let mut i = 0;
        while let Some(p) = e[i..].find("fail2xdp_") {
            let s = i + p;
            let mut end = s;
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
            queried.insert(e[s..end].to_string());
            i = end;
        }
    }
    assert!(queried.len() >= 5, "{queried:?}");

    // A live agent with something in every family: a ban, drops, failures.
    let (w, addr) = metered(&[])?;
    w.feed(&fails("203.0.113.60", 3))?;
    w.wait_banned("203.0.113.60/32")?;
    assert_eq!(w.delivered("203.0.113.60", SMTP)?, 0);
    let live = scrape(&w, addr)?;
    let names = live.names();
    let missing: Vec<&String> = queried.iter().filter(|q| !names.contains(*q)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which the agent does not export:\n{}",
        live.text
    );
    Ok(())
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// With `--log-format json` each ban and unban is one JSON line with its
/// origin, jail, address, reason, duration and failure count as fields.
#[test]
fn bans_and_unbans_log_one_json_line_each() -> Result<()> {
    let w = Watch::start_with(JAIL, &["--log-format", "json"], |_| Ok(()))?;
    w.feed(&fails("203.0.113.70", 3))?;
    w.wait_banned("203.0.113.70/32")?;
    w.lab.agent.unban("203.0.113.70")?;
    let mut ban = None;
    let mut unban = None;
    wait_for("the ban and unban lines", Duration::from_secs(10), || {
        for l in w.lab.agent.log().lines() {
            let v: Value = serde_json::from_str(l)
                .with_context(|| format!("a log line that is not JSON: {l:?}"))?;
            match v["message"].as_str() {
                Some("ban") => ban = Some(v),
                Some("unban") => unban = Some(v),
                _ => {}
            }
        }
        Ok(ban.is_some() && unban.is_some())
    })
    .map_err(|e| w.with_log(e))?;
    let b = ban.context("no ban line")?;
    assert_eq!(b["addr"], "203.0.113.70/32", "{b}");
    assert_eq!(b["origin"], "sasl", "{b}");
    assert_eq!(b["jail"], "sasl", "{b}");
    assert_eq!(b["duration_secs"], 3600, "{b}");
    assert_eq!(b["failures"], 3, "{b}");
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("postfix-sasl")),
        "{b}"
    );
    let u = unban.context("no unban line")?;
    assert_eq!(u["addr"], "203.0.113.70/32", "{u}");
    assert_eq!(u["origin"], "sasl", "{u}");
    Ok(())
}

/// An ordinary error is one line and a non-zero exit even with
/// RUST_BACKTRACE=1; `--debug` gives the trace.
#[test]
fn errors_are_one_line_unless_debugging() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such.log");
    let run = |debug: bool| -> Result<std::process::Output> {
        let mut c = Command::new(fail2xdp_bin());
        if debug {
            c.arg("--debug");
        }
        Ok(c.arg("test")
            .arg(&missing)
            .args(["--filter", "postfix-sasl"])
            .env("RUST_BACKTRACE", "1")
            .output()?)
    };
    let out = run(false)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no-such.log"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    let out = run(true)?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Stack backtrace"), "{err}");

    // A level that is not one is said so, once.
    let out = Command::new(fail2xdp_bin())
        .args(["--log-level", "loud==x", "config", "default"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--log-level") && err.trim().lines().count() == 1,
        "{err}"
    );
    Ok(())
}

fn unit_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/fail2xdp.service")
}

/// `systemd-analyze verify` on a unit file; its complaints, if any.
fn verify(unit: &Path) -> Result<()> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .context(
            "running systemd-analyze (Debian package systemd; `cargo xtask prereqs` installs it)",
        )?;
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify {}: {}{err}",
        unit.display(),
        out.status
    );
    Ok(())
}

/// The shipped unit (with ExecStart pointing at the binary under test,
/// since verify checks that it exists) and the one `install-systemd`
/// writes both pass `systemd-analyze verify`.
#[test]
fn the_systemd_units_verify() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = fail2xdp_bin();
    let shipped = std::fs::read_to_string(unit_file())?;
    assert!(shipped.contains("\nType=notify\n"), "{shipped}");
    assert!(shipped.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    assert!(shipped.contains("\nRestart=on-failure\n"));
    let copy = dir.path().join("fail2xdp.service");
    std::fs::write(
        &copy,
        shipped.replace(
            "ExecStart=/usr/local/bin/fail2xdp ",
            &format!("ExecStart={} ", bin.display()),
        ),
    )?;
    verify(&copy)?;

    let units = dir.path().join("units");
    let installed = dir.path().join("bin/fail2xdp");
    let out = Command::new(&bin)
        .args(["--instance", "mx2", "install-systemd", "--bin"])
        .arg(&installed)
        .arg("--unit-dir")
        .arg(&units)
        .args([
            "--iface",
            "eth0",
            "--config",
            "/etc/fail2xdp/my jails.toml",
            "--metrics",
            "127.0.0.1:9100",
        ])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let unit = units.join("fail2xdp-mx2.service");
    let text = std::fs::read_to_string(&unit)?;
    assert!(
        text.contains(&format!(
            "\nExecStart={} --instance mx2 run --iface eth0 --config \"/etc/fail2xdp/my jails.toml\" --metrics 127.0.0.1:9100\n",
            installed.display()
        )),
        "{text}"
    );
    assert!(installed.is_file());
    verify(&unit)?;

    // Arguments `run` would refuse are refused here, before anything is written.
    let out = Command::new(&bin)
        .args([
            "install-systemd",
            "--print",
            "--iface",
            "eth0",
            "--config",
            "rel.toml",
        ])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("absolute"),
        "{out:?}"
    );
    let out = Command::new(&bin)
        .args([
            "install-systemd",
            "--print",
            "--iface",
            "eth0",
            "--metrics",
            "0.0.0.0:1",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "checked when the unit starts: {out:?}"
    );
    let out = Command::new(&bin)
        .args(["install-systemd", "--print", "--no-such-flag"])
        .output()?;
    assert!(!out.status.success());
    Ok(())
}

/// The capabilities the unit grants, as setpriv names them.
fn unit_caps() -> Result<Vec<String>> {
    let text = std::fs::read_to_string(unit_file())?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("no CapabilityBoundingSet in the unit")?;
    Ok(line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect())
}

/// The agent as the unit runs it: only the unit's capabilities (the
/// bounding set of a root process), `NOTIFY_SOCKET` an abstract socket the
/// test listens on. READY=1 comes once the program is attached and the
/// control socket answers; a ban is enforced; SIGHUP reloads (RELOADING=1,
/// then READY=1); SIGTERM stops (STOPPING=1) with exit 0.
#[test]
fn systemd_notify_with_only_the_units_capabilities() -> Result<()> {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr as UnixAddr, UnixDatagram},
    };

    use fail2xdp_tests::{NetnsPair, require_privileges, unique_name};

    require_privileges();
    let pair = NetnsPair::new()?;
    let (tx, rx) = (pair.sender()?, pair.receiver()?);
    let name = unique_name("f2x-notify");
    // Abstract sockets belong to a network namespace: bind it in the agent's.
    let n = name.clone();
    let notify = pair
        .recv_ns
        .run(move || UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(n.as_bytes())?))??;
    notify.set_read_timeout(Some(Duration::from_secs(60)))?;
    let recv = || -> Result<String> {
        let mut buf = [0u8; 4096];
        let n = fail2xdp_tests::interrupted::retry(|| notify.recv(&mut buf))
            .context("waiting for a notification")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };

    let dir = tempfile::tempdir()?;
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "")?;
    let config = dir.path().join("fail2xdp.toml");
    std::fs::write(
        &config,
        format!(
            "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\n{JAIL}",
            log.display()
        ),
    )?;
    let inst = Instance {
        pins: std::path::PathBuf::from("/sys/fs/bpf").join(unique_name("f2x-test")),
        state: dir.path().join("state"),
        socket: dir.path().join("control.sock"),
        netns: pair.recv_ns.path(),
    };
    let caps: Vec<String> = unit_caps()?.iter().map(|c| format!("+{c}")).collect();
    let agent_log = std::fs::File::create(dir.path().join("agent.log"))?;
    let mut cmd = pair.recv_ns.command("setpriv")?;
    cmd.arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg(fail2xdp_bin())
        .args(inst.args())
        .args(["run", "--iface", &pair.recv_if, "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("RUST_LOG", "info")
        .stdout(agent_log.try_clone()?)
        .stderr(agent_log);
    let child = cmd.spawn().context("starting setpriv (util-linux)")?;
    let mut agent = Running {
        child,
        inst,
        log: dir.path().join("agent.log"),
    };
    let pid = agent.child.id();

    let ready = recv().map_err(|e| e.context(agent.log()))?;
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");
    assert!(ready.contains("STATUS=watching with 1 jail(s)"), "{ready}");
    // Ready means attached and answering.
    assert!(
        agent
            .inst
            .pins
            .join(format!("link_{}", pair.recv_if))
            .exists()
    );
    let caps_now = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mask = |key: &str| -> Result<u64> {
        let h = caps_now
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| key.to_string())?;
        Ok(u64::from_str_radix(h.trim(), 16)?)
    };
    let bit = |c: &str| -> Result<u64> {
        Ok(1u64
            << match c.trim_start_matches("CAP_").to_lowercase().as_str() {
                "dac_read_search" => 2,
                "net_admin" => 12,
                "perfmon" => 38,
                "bpf" => 39,
                other => bail!("the unit names {other}: add its number here"),
            })
    };
    let mut unit = 0;
    for c in unit_caps()? {
        unit |= bit(&c)?;
    }
    // No cap_setpcap under the unit: the agent cannot shrink the bounding
    // set further, only its own sets, to CAP_BPF and CAP_DAC_READ_SEARCH.
    assert_eq!(mask("CapBnd:")?, unit, "the unit's capabilities only");
    assert_eq!(
        mask("CapEff:")?,
        bit("CAP_BPF")? | bit("CAP_DAC_READ_SEARCH")?,
        "kept after attaching"
    );
    let out = agent.cli(&["ban", "198.51.100.9", "--for", "10m"])?;
    assert!(out.status.success(), "{out:?}\n{}", agent.log());
    let probe = pair.syn("198.51.100.9".parse()?, SMTP);
    let before = rx.count(&probe);
    tx.send(&probe, N)?;
    rx.settle(&tx)?;
    assert_eq!(rx.count(&probe) - before, 0, "the ban does not drop");

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let r = recv()?;
    assert!(
        r.contains("RELOADING=1") && r.contains("MONOTONIC_USEC="),
        "{r}"
    );
    let r = recv()?;
    assert!(r.contains("READY=1"), "{r}");

    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let r = recv()?;
    assert!(r.contains("STOPPING=1"), "{r}");
    let st = agent.child.wait()?;
    assert!(st.success(), "{st:?}\n{}", agent.log());
    Ok(())
}

/// An instance of the agent the test started itself.
struct Instance {
    pins: std::path::PathBuf,
    state: std::path::PathBuf,
    socket: std::path::PathBuf,
    netns: std::path::PathBuf,
}

impl Instance {
    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--pin-dir".into(),
            self.pins.clone().into(),
            "--state-dir".into(),
            self.state.clone().into(),
            "--socket".into(),
            self.socket.clone().into(),
        ]
    }
}

struct Running {
    child: std::process::Child,
    inst: Instance,
    log: std::path::PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The CLI (with every capability) on this instance, in its namespace.
    fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        use std::os::unix::process::CommandExt;
        let ns = std::fs::File::open(&self.inst.netns)?;
        let mut c = Command::new(fail2xdp_bin());
        c.args(self.inst.args()).args(args);
        // SAFETY: only setns between fork and exec.
        unsafe {
            c.pre_exec(move || {
                use std::os::fd::AsRawFd;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(c.output()?)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        if self.inst.pins.exists() {
            let _ = self.cli(&["detach"]);
            let _ = std::fs::remove_dir_all(&self.inst.pins);
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
    }
}

/// Completions and man pages come from the clap definition: every command is in them.
#[test]
fn completions_and_man_pages_cover_every_command() -> Result<()> {
    let bin = fail2xdp_bin();
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(&bin).args(["completions", shell]).output()?;
        assert!(o.status.success(), "{shell}: {o:?}");
        let text = String::from_utf8(o.stdout)?;
        for cmd in ["run", "banned", "install-systemd", "unban", "top"] {
            assert!(text.contains(cmd), "{shell} completions lack {cmd}");
        }
        assert!(!text.contains("\nman"), "the hidden man command is offered");
    }
    let dir = tempfile::tempdir()?;
    let bash = dir.path().join("fail2xdp.bash");
    let o = Command::new(&bin).args(["completions", "bash"]).output()?;
    std::fs::write(&bash, &o.stdout)?;
    let o = Command::new("bash").arg("-n").arg(&bash).output()?;
    assert!(o.status.success(), "bash -n: {o:?}");

    let o = Command::new(&bin)
        .args(["man", "--out"])
        .arg(dir.path())
        .output()?;
    assert!(o.status.success(), "{o:?}");
    let main = std::fs::read_to_string(dir.path().join("fail2xdp.1"))?;
    assert!(main.starts_with(".ie") || main.starts_with(".TH"), "{main}");
    assert!(main.contains("install\\-systemd"), "{main}");
    let ban = std::fs::read_to_string(dir.path().join("fail2xdp-ban.1"))?;
    assert!(ban.contains("\\-\\-jail"), "{ban}");
    Ok(())
}

/// What a scrape costs with many bans in the maps, beside `list --json`
/// (the same listing of the maps, plus the store) measured in the same
/// run: `cargo test --release -p fail2xdp-tests --test ops -- --ignored
/// --nocapture scrape_cost` (a measurement, not a check; the machine's
/// speed drifts, so compare the two, not the absolute numbers).
#[test]
#[ignore = "a measurement; run it by name"]
fn scrape_cost_with_many_bans() -> Result<()> {
    use std::time::Instant;
    const BANS: u32 = 100_000;
    let (w, addr) = metered(&[])?;
    let list = w.dir.path().join("blocklist.txt");
    let mut text = String::new();
    for i in 0..BANS {
        // 198.18.0.0/15, the benchmarking range.
        text.push_str(&format!(
            "198.{}.{}.{}\n",
            18 + (i >> 16),
            i >> 8 & 255,
            i & 255
        ));
    }
    std::fs::write(&list, text)?;
    let out = w.lab.agent.cli_output_within(
        &[
            "ban",
            "--file",
            list.to_str().context("path")?,
            "--for",
            "1d",
        ],
        Duration::from_secs(300),
    )?;
    assert!(out.status.success(), "{out:?}");
    let mut scrapes = Vec::new();
    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s = scrape(&w, addr)?;
        scrapes.push(t.elapsed().as_secs_f64());
        assert_eq!(
            s.sum("fail2xdp_active_bans", &[]),
            f64::from(BANS),
            "{}",
            &s.text[..2000.min(s.text.len())]
        );
        let t = Instant::now();
        w.lab
            .agent
            .cli_output_within(&["list", "--json"], Duration::from_secs(120))?;
        lists.push(t.elapsed().as_secs_f64());
    }
    scrapes.sort_by(f64::total_cmp);
    lists.sort_by(f64::total_cmp);
    println!(
        "{BANS} bans: scrape median {:.3} s (5 rounds: {scrapes:?}); list --json median {:.3} s ({lists:?}); ratio {:.2}",
        scrapes[2],
        lists[2],
        scrapes[2] / lists[2]
    );
    Ok(())
}
