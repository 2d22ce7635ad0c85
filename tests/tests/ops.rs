//! Production operation with a real agent, real pins and real packets
//! (root; `cargo build -p fail2xdp` first): the log's lines, the metrics
//! endpoint under an attack, the Grafana dashboard against a live scrape.
//!
//! Attackers are 203.0.113.0/24, bans by hand 198.51.100.0/24.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result};
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
    Ok(())
}
