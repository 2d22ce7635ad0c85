//! A fleet shares its bans through CrowdSec: real agents in their own
//! namespaces, a real Local API (Debian's crowdsec, LAPI only) in another,
//! real packets. A jail ban on one host is dropped on the other;
//! `cscli decisions add/delete` ban and unban on both; the LAPI going away
//! lifts nothing; a blocklist of 100,000 decisions is enforced; hostile
//! answers (from a fake server) meet the same guard as every ban.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::control::Request;
use fail2xdp_tests::{
    Agent, AgentOptions, Lab, NetnsPair,
    lapi::Lapi,
    watch::{N, Watch, fails, wait_for},
};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(30);

/// One mail host: an agent with a `sasl` jail (maxretry 3) over its log
/// and a `[crowdsec]` section naming the LAPI over its own link.
struct Host {
    w: Watch,
}

/// The `[crowdsec]` section for a host: `{url}` and the key files are
/// filled in; `extra` is appended.
fn crowdsec_section(url: &str, extra: &str) -> String {
    format!(
        "[crowdsec]\nurl = \"{url}\"\napi_key_file = \"bouncer.key\"\n\
         credentials_file = \"machine.yaml\"\npoll = \"1s\"\n{extra}\n"
    )
}

impl Host {
    fn start(lapi: &mut Lapi, name: &str, extra: &str) -> Result<Self> {
        Self::start_with(lapi, name, |_, url, _| Ok(crowdsec_section(url, extra)))
    }

    /// `section` makes the `[crowdsec]` section from the LAPI, the host's
    /// URL and its directory (where the key files are).
    fn start_with(
        lapi: &mut Lapi,
        name: &str,
        section: impl FnOnce(&Lapi, &str, &Path) -> Result<String>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("f2x-cs-").tempdir()?;
        let log = dir.path().join("mail.log");
        fs::write(&log, "")?;
        let pair = NetnsPair::new()?;
        let url = lapi.link(&pair.recv_ns)?;
        lapi.bouncer_key(name, &dir.path().join("bouncer.key"))?;
        lapi.machine(name, &url, &dir.path().join("machine.yaml"))?;
        let config = dir.path().join("fail2xdp.toml");
        let section = section(lapi, &url, dir.path())?;
        fs::write(
            &config,
            format!(
                "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n\n{section}",
                log.display(),
            ),
        )?;
        let rx = pair.receiver()?;
        let tx = pair.sender()?;
        let agent = Agent::start_with(
            &pair,
            AgentOptions {
                config: Some(config),
                ..AgentOptions::default()
            },
        )?;
        let w = Watch {
            lab: Lab {
                agent,
                tx,
                rx,
                pair,
            },
            log,
            dir,
        };
        w.wait_ready()?;
        let h = Host { w };
        h.wait_synced()?;
        Ok(h)
    }

    fn crowdsec(&self) -> Result<Value> {
        let s = self.w.call(&Request::AgentStatus)?;
        Ok(s["crowdsec"].clone())
    }

    fn wait_synced(&self) -> Result<()> {
        wait_for("a CrowdSec sync", SYNC, || {
            Ok(self.crowdsec()?["connected"] == Value::Bool(true))
        })
        .map_err(|e| self.w.with_log(e))
    }

    fn dropped(&self, src: &str) -> Result<bool> {
        Ok(self.w.delivered(src, 25)? == 0)
    }

    fn wait_dropped(&self, src: &str) -> Result<()> {
        wait_for(&format!("{src} dropped"), SYNC, || self.dropped(src))
            .map_err(|e| self.w.with_log(e))
    }

    fn wait_delivered(&self, src: &str) -> Result<()> {
        wait_for(&format!("{src} delivered"), SYNC, || {
            Ok(self.w.delivered(src, 25)? == N)
        })
        .map_err(|e| self.w.with_log(e))
    }

    fn explain(&self, addr: &str) -> Result<Value> {
        self.w.call(&Request::Explain {
            target: addr.into(),
        })
    }

    /// The origins of the claims on `addr` (a host address).
    fn origins(&self, addr: &str) -> Result<Vec<String>> {
        let e = self.explain(addr)?;
        let net = format!("{addr}/{}", if addr.contains(':') { 128 } else { 32 });
        Ok(e["bans"]
            .as_array()
            .context("explain has no bans")?
            .iter()
            .filter(|b| b["net"] == net.as_str())
            .filter_map(|b| b["origin"].as_str().map(str::to_owned))
            .collect())
    }
}

/// Decisions the LAPI holds for `value`.
fn decisions_for(lapi: &Lapi, value: &str) -> Result<Vec<Value>> {
    let out = lapi.cscli(&["decisions", "list", "-o", "json", "--value", value])?;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["decisions"].as_array().cloned().unwrap_or_default())
        .collect())
}

#[test]
fn a_fleet_shares_jail_bans_and_cscli_decisions() -> Result<()> {
    let mut lapi = Lapi::start()?;
    let mx1 = Host::start(&mut lapi, "mx1", "")?;
    let mx2 = Host::start(&mut lapi, "mx2", "")?;
    let attacker = "198.51.100.20";
    assert!(!mx2.dropped(attacker)?, "dropped before any ban");

    // A SASL attack on mx1: its jail bans, and mx2 drops the attacker.
    mx1.w.feed(&fails(attacker, 3))?;
    mx1.wait_dropped(attacker)?;
    mx2.wait_dropped(attacker)?;
    let e = mx2.explain(attacker)?;
    let ban = &e["bans"][0];
    assert_eq!(ban["origin"], "crowdsec/crowdsec", "{e}");
    assert_eq!(ban["reason"], "fail2xdp/sasl", "{e}");
    assert!(ban["decision"]["id"].as_i64().is_some_and(|i| i > 0), "{e}");
    assert_eq!(ban["decision"]["scenario"], "fail2xdp/sasl");
    let left = ban["remaining_secs"]
        .as_u64()
        .context("no remaining time")?;
    assert!((3500..=3600).contains(&left), "the jail's ban time: {left}");
    // The alert carries the evidence as event meta, and is pushed once:
    // neither mx1's own CrowdSec copy nor mx2's is sent back.
    let alerts = lapi.cscli(&["alerts", "list", "-o", "json"])?;
    assert!(
        alerts.contains("fail2xdp/sasl") && alerts.contains(attacker),
        "{alerts}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let d = decisions_for(&lapi, attacker)?;
    assert_eq!(d.len(), 1, "one decision, no echo: {d:?}");
    let list = mx2.w.lab.agent.list_json()?;
    let entry = fail2xdp_tests::find_ban(&list, attacker).context("not in mx2's list")?;
    assert_eq!(entry["origin"], "crowdsec/crowdsec", "{entry}");
    assert!(entry["decision"]["id"].as_i64().is_some(), "{entry}");

    // A cscli decision bans on both; `list` and `explain` name it.
    let manual = "198.51.100.30";
    lapi.add_decision(manual, "2h", &[])?;
    mx1.wait_dropped(manual)?;
    mx2.wait_dropped(manual)?;
    assert_eq!(mx1.origins(manual)?, vec!["crowdsec/cscli"]);
    let text = mx2.w.lab.agent.cli(&["explain", manual])?;
    assert!(
        text.contains("origin crowdsec/cscli") && text.contains("CrowdSec decision #"),
        "{text}"
    );
    let table = mx2.w.lab.agent.cli(&["list"])?;
    assert!(table.contains("crowdsec/cscli"), "{table}");
    let status = mx2.w.lab.agent.cli(&["status"])?;
    assert!(status.contains("crowdsec"), "{status}");

    // A range decision too.
    lapi.add_decision("198.51.100.128/25", "1h", &[])?;
    mx2.wait_dropped("198.51.100.200")?;
    assert!(!mx2.dropped("198.51.100.100")?);

    // Deleting the attacker's decision unbans it where CrowdSec banned it,
    // and leaves mx1's own jail ban in force.
    lapi.delete_decision(attacker)?;
    mx2.wait_delivered(attacker)?;
    assert!(
        mx1.dropped(attacker)?,
        "mx1's jail ban went with the decision"
    );
    wait_for("mx1's CrowdSec claim lifted", SYNC, || {
        Ok(mx1.origins(attacker)? == vec!["sasl".to_string()])
    })?;
    lapi.delete_decision(manual)?;
    mx1.wait_delivered(manual)?;
    mx2.wait_delivered(manual)?;
    lapi.delete_decision("198.51.100.128/25")?;
    mx2.wait_delivered("198.51.100.200")?;

    // Two decisions for one address: the longer holds; deleting it
    // shortens to the other.
    let twice = "198.51.100.31";
    lapi.add_decision(twice, "30m", &[])?;
    lapi.add_decision(twice, "5h", &["--reason", "second"])?;
    wait_for("the longer decision", SYNC, || {
        let e = mx2.explain(twice)?;
        Ok(e["bans"][0]["remaining_secs"]
            .as_u64()
            .is_some_and(|s| s > 4 * 3600))
    })?;
    let long_id = decisions_for(&lapi, twice)?
        .iter()
        .find(|d| d["scenario"] == "second")
        .and_then(|d| d["id"].as_i64())
        .context("no second decision")?;
    lapi.cscli(&["decisions", "delete", "--id", &long_id.to_string()])?;
    wait_for("the shorter decision in the maps", SYNC, || {
        let list = mx2.w.lab.agent.list_json()?;
        Ok(fail2xdp_tests::find_ban(&list, twice)
            .and_then(|b| b["remaining_secs"].as_u64())
            .is_some_and(|s| s <= 30 * 60))
    })
    .map_err(|e| mx2.w.with_log(e))?;
    assert!(mx2.dropped(twice)?, "shortened, not lifted");
    let st = mx2.crowdsec()?;
    assert_eq!(st["decisions_refused"], 0, "{st}");
    assert!(st["decisions_applied"].as_u64() > Some(2), "{st}");

    // `fail2xdp crowdsec check` tests both keys.
    let cfg = mx2.w.dir.path().join("fail2xdp.toml");
    let out =
        mx2.w
            .lab
            .agent
            .cli(&["crowdsec", "check", "--config", &cfg.display().to_string()])?;
    assert!(
        out.contains("bouncer: OK") && out.contains("machine: OK"),
        "{out}"
    );
    fs::write(mx2.w.dir.path().join("bouncer.key"), "not-a-key\n")?;
    let bad = mx2.w.lab.agent.cli_output(&[
        "crowdsec",
        "check",
        "--config",
        &cfg.display().to_string(),
    ])?;
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success() && text.contains("bouncer: FAILED") && text.contains("403"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_lapi_going_away_lifts_nothing_and_agents_recover() -> Result<()> {
    let mut lapi = Lapi::start()?;
    let mut mx1 = Host::start(&mut lapi, "mx1", "")?;
    let mut mx2 = Host::start(&mut lapi, "mx2", "")?;
    let (kept, missed) = ("198.51.100.40", "198.51.100.41");
    lapi.add_decision(kept, "1h", &[])?;
    lapi.add_decision(missed, "1h", &[])?;
    mx1.wait_dropped(kept)?;
    mx2.wait_dropped(kept)?;
    mx2.wait_dropped(missed)?;

    lapi.kill()?;
    for h in [&mx1, &mx2] {
        wait_for("the outage in status", SYNC, || {
            let st = h.w.status()?;
            Ok(st["protection"]["state"] == "degraded"
                && st["protection"]["problems"]
                    .to_string()
                    .contains("CrowdSec Local API"))
        })
        .map_err(|e| h.w.with_log(e))?;
        assert!(h.dropped(kept)?, "a ban went with the LAPI");
        assert_eq!(h.crowdsec()?["connected"], false);
    }
    // A jail ban while the LAPI is down waits on disk...
    let attacker = "198.51.100.42";
    mx1.w.feed(&fails(attacker, 3))?;
    mx1.wait_dropped(attacker)?;
    wait_for("the ban queued", SYNC, || {
        let c = mx1.crowdsec()?;
        Ok(c["push_queue"] == 1 && c["push_error"].is_string())
    })?;
    // ... through a restart of the agent, which keeps every ban enforced.
    mx1.w.lab.agent.stop()?;
    mx1.w.lab.agent.spawn()?;
    mx1.w.wait_ready()?;
    for a in [kept, attacker] {
        assert!(mx1.dropped(a)?, "{a} not enforced after the restart");
    }
    assert_eq!(
        mx1.crowdsec()?["push_queue"],
        1,
        "the queue survives the restart"
    );

    lapi.spawn()?;
    mx1.wait_synced()?;
    mx2.wait_synced()?;
    // The queued jail ban reaches mx2 once the LAPI is back.
    mx2.wait_dropped(attacker)?;
    wait_for("the queue drained", SYNC, || {
        Ok(mx1.crowdsec()?["push_queue"] == 0)
    })?;
    assert_eq!(decisions_for(&lapi, attacker)?.len(), 1);

    // A decision deleted while mx2 is stopped is lifted by its full sync at
    // start; one still listed is enforced at every moment in between.
    mx2.w.lab.agent.stop()?;
    lapi.delete_decision(missed)?;
    let stop = Arc::new(AtomicBool::new(false));
    let leaked = Arc::new(AtomicU64::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, leaked, probes) = (stop.clone(), leaked.clone(), probes.clone());
        let probe = mx2.w.lab.syn(kept, 25);
        let (tx, rx) = (mx2.w.lab.pair.sender()?, mx2.w.lab.pair.receiver()?);
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let before = rx.count(&probe);
                tx.send(&probe, 1)?;
                rx.settle(&tx)?;
                leaked.fetch_add(rx.count(&probe) - before, Ordering::Relaxed);
                probes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    mx2.w.lab.agent.spawn()?;
    mx2.w.wait_ready()?;
    mx2.wait_synced()?;
    mx2.wait_delivered(missed)?;
    stop.store(true, Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
    assert_eq!(
        leaked.load(Ordering::Relaxed),
        0,
        "{kept} got through during the restart"
    );
    assert!(
        probes.load(Ordering::Relaxed) > 10,
        "too few probes to tell"
    );
    assert!(mx2.dropped(kept)?);
    let log = mx2.w.lab.agent.log();
    assert!(log.contains("full sync"), "{log}");
    Ok(())
}

/// Entries of one of the data plane's maps, from `status`.
fn map_entries(h: &Host, map: &str) -> Result<u64> {
    let st = h.w.status()?;
    st["data_plane"]["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["map"] == map)
        .and_then(|m| m["entries"].as_u64())
        .with_context(|| format!("no map {map} in {st}"))
}

fn v6_list(block: u16, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("2001:db8:{block:x}::{:x}:{:x}", i >> 16, i & 0xffff))
        .collect()
}

#[test]
fn a_blocklist_of_100000_decisions_is_enforced() -> Result<()> {
    let mut lapi = Lapi::start()?;
    let mut mx = Host::start(&mut lapi, "mx1", "")?;
    // Listed while the agent is down: its full sync at start gets the
    // whole blocklist in one answer, applied as one batch.
    mx.w.lab.agent.stop()?;
    let values = v6_list(0x100, 100_000);
    let t = Instant::now();
    lapi.import(&values, "4h")?;
    let imported = t.elapsed();
    let t = Instant::now();
    mx.w.lab.agent.spawn()?;
    mx.w.wait_ready()?;
    wait_for("100,000 bans in the maps", Duration::from_secs(120), || {
        Ok(map_entries(&mx, "BANS_V6")? >= 100_000)
    })
    .map_err(|e| mx.w.with_log(e))?;
    let enforced = t.elapsed();
    let one_batch = "full sync, 100000 decision(s): 100000 ban(s) written";
    wait_for("the sync's log line", Duration::from_secs(30), || {
        Ok(mx.w.lab.agent.log().contains(one_batch))
    })
    .map_err(|e| mx.w.with_log(e))?;
    let log = mx.w.lab.agent.log();
    let line = log
        .lines()
        .find(|l| l.contains(one_batch))
        .context("no sync line")?
        .to_owned();
    eprintln!(
        "blocklist of 100,000: into the LAPI in {imported:.1?}; in the maps {enforced:.1?} after the agent started; {}",
        line.split("crowdsec: ").nth(1).unwrap_or(&line)
    );
    for v in [&values[0], &values[50_000], &values[99_999]] {
        assert!(mx.dropped(v)?, "{v} not dropped");
    }
    assert!(!mx.dropped("2001:db8:100::2:0")?, "an address not listed");
    assert_eq!(mx.crowdsec()?["decisions_active"], 100_000);

    // Another blocklist inserted while the agent pulls every second: it
    // comes in deltas, and LAPI can leave rows out of them (inserted while
    // it answered); the full sync that follows a large delta heals that.
    let more = v6_list(0x200, 20_000);
    lapi.import(&more, "4h")?;
    wait_for("120,000 bans in the maps", Duration::from_secs(150), || {
        Ok(map_entries(&mx, "BANS_V6")? >= 120_000)
    })
    .map_err(|e| mx.w.with_log(e))?;
    for v in [&more[0], &more[19_999]] {
        assert!(mx.dropped(v)?, "{v} not dropped");
    }
    Ok(())
}

/// A fake LAPI: answers the requests in turn with the given responses
/// (status line and body), the last one for ever after; counts the bytes
/// it managed to send of each.
struct Fake {
    sent: Arc<Vec<AtomicU64>>,
    served: Arc<AtomicU64>,
    port: u16,
}

enum Answer {
    Json(String),
    Raw(&'static str, Vec<u8>),
    /// Claims `len` bytes and streams them until the client gives up.
    Endless(u64),
}

fn serve(conn: &mut TcpStream, a: &Answer, sent: &AtomicU64) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let (status, body, len) = match a {
        Answer::Json(b) => ("200 OK", b.as_bytes().to_vec(), b.len() as u64),
        Answer::Raw(s, b) => (*s, b.clone(), b.len() as u64),
        Answer::Endless(n) => ("200 OK", Vec::new(), *n),
    };
    // The endless one says no length: its body ends when the connection does.
    let length = match a {
        Answer::Endless(_) => String::new(),
        _ => format!("Content-Length: {len}\r\n"),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
    )?;
    if let Answer::Endless(n) = a {
        let chunk = vec![b' '; 64 * 1024];
        let mut done = 0;
        while done < *n {
            conn.write_all(&chunk)?;
            done += chunk.len() as u64;
            sent.store(done, Ordering::Relaxed);
        }
    } else {
        conn.write_all(&body)?;
        sent.store(len, Ordering::Relaxed);
    }
    Ok(())
}

impl Fake {
    /// Listens on 127.0.0.1 inside `ns`'s namespace.
    fn start(pair: &NetnsPair, answers: Vec<Answer>) -> Result<Self> {
        let listener = pair.recv_ns.run(|| TcpListener::bind("127.0.0.1:0"))??;
        let port = listener.local_addr()?.port();
        let sent: Arc<Vec<AtomicU64>> =
            Arc::new(answers.iter().map(|_| AtomicU64::new(0)).collect());
        let served = Arc::new(AtomicU64::new(0));
        let (s2, n2) = (sent.clone(), served.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let i = (n2.fetch_add(1, Ordering::Relaxed) as usize).min(answers.len() - 1);
                let _ = serve(&mut conn, &answers[i], &s2[i]);
            }
        });
        Ok(Fake { sent, served, port })
    }
}

#[test]
fn hostile_lapi_answers_meet_the_guard_and_crash_nothing() -> Result<()> {
    fail2xdp_tests::require_privileges();
    let good = "198.51.100.50";
    let dec = |id: u32, scope: &str, value: &str, kind: &str, duration: &str| {
        format!(
            r#"{{"id":{id},"origin":"cscli","type":"{kind}","scope":"{scope}","value":"{value}","duration":"{duration}","scenario":"test"}}"#
        )
    };
    let first = format!(
        r#"{{"new":[{}],"deleted":null}}"#,
        [
            dec(1, "Ip", good, "ban", "1h"),
            dec(2, "Range", "0.0.0.0/0", "ban", "1h"),
            dec(3, "Ip", "127.0.0.1", "ban", "1h"),
            dec(4, "Ip", "::1", "ban", "1h"),
            dec(5, "Ip", &NetnsPair::RECV_V4.to_string(), "ban", "1h"),
            dec(6, "Range", "198.0.0.0/8", "ban", "1h"),
            dec(7, "Ip", "198.51.100.51", "captcha", "1h"),
            dec(8, "Country", "FR", "ban", "1h"),
            dec(9, "Ip", "not-an-address", "ban", "1h"),
            dec(10, "Ip", "198.51.100.52", "ban", "forever"),
            dec(11, "Ip", "0.0.0.0", "ban", "1h"),
        ]
        .join(",")
    );
    let answers = vec![
        Answer::Json(first.clone()),
        Answer::Json(r#"{"new":[{"id":"twelve","origin":"cscli","type":"ban","scope":"Ip","value":"198.51.100.53","duration":"1h","scenario":"x"}]}"#.into()),
        Answer::Raw("500 Internal Server Error", b"<html>oops</html>".to_vec()),
        // 10 MB that are no answer at all.
        Answer::Json(format!(r#"{{"new":[{}"#, "[".repeat(10 << 20))),
        // Past the cap: refused before it is read whole.
        Answer::Endless(200 << 20),
        // Answered again: the full sync after the failures lists it all.
        Answer::Json(first),
    ];
    let answer_count = answers.len() as u64;
    let pair = NetnsPair::new()?;
    let fake = Fake::start(&pair, answers)?;
    let dir = tempfile::Builder::new().prefix("f2x-cs-").tempdir()?;
    fs::write(dir.path().join("bouncer.key"), "fake-key\n")?;
    let config = dir.path().join("fail2xdp.toml");
    fs::write(
        &config,
        format!(
            "[crowdsec]\nurl = \"http://127.0.0.1:{}/\"\napi_key_file = \"bouncer.key\"\npoll = \"200ms\"\n",
            fake.port
        ),
    )?;
    let rx = pair.receiver()?;
    let tx = pair.sender()?;
    let agent = Agent::start_with(
        &pair,
        AgentOptions {
            config: Some(config),
            ..AgentOptions::default()
        },
    )?;
    let w = Watch {
        lab: Lab {
            agent,
            tx,
            rx,
            pair,
        },
        log: dir.path().join("none.log"),
        dir,
    };
    w.wait_ready()?;
    let pid = w.lab.agent.pid();
    wait_for(
        "every hostile answer served",
        Duration::from_secs(60),
        || Ok(fake.served.load(Ordering::Relaxed) > answer_count + 1),
    )
    .map_err(|e| w.with_log(e))?;
    // Still the same agent, answering, and the good ban held throughout.
    assert_eq!(w.lab.agent.pid(), pid);
    w.call(&Request::Ping)?;
    assert_eq!(
        w.delivered(good, 25)?,
        0,
        "the one good decision is enforced"
    );
    for spared in ["198.51.100.51", "198.51.100.52", "198.51.100.53"] {
        assert_eq!(w.delivered(spared, 25)?, N, "{spared} banned");
    }
    let st = w.call(&Request::AgentStatus)?;
    let cs = &st["crowdsec"];
    // Counted once per answer that listed them (at least twice).
    assert!(cs["decisions_refused"].as_u64() >= Some(12), "{cs}");
    assert!(cs["decisions_invalid"].as_u64() >= Some(4), "{cs}");
    assert!(
        cs["decisions_ignored"]["type captcha"].as_u64() >= Some(2),
        "{cs}"
    );
    assert!(
        cs["decisions_ignored"]["scope country"].as_u64() >= Some(2),
        "{cs}"
    );
    assert_eq!(
        cs["decisions_active"], 7,
        "listed bans, refused ones included: {cs}"
    );
    assert_eq!(cs["connected"], true, "the last answer was good: {cs}");
    // The guard said why, as for every ban.
    let refused = &st["bans"]["refused"];
    for kind in ["loopback", "unspecified", "own_address", "too_broad"] {
        assert!(refused[kind].as_u64() >= Some(1), "{kind}: {refused}");
    }
    let list = w.lab.agent.list_json()?;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    // The endless answer was cut at the cap, not read whole.
    let endless = fake.sent[4].load(Ordering::Relaxed);
    assert!(
        (64 << 20..200 << 20).contains(&endless),
        "sent {endless} bytes of an endless answer"
    );
    let log = w.lab.agent.log();
    for said in ["not what the Local API sends", "HTTP 500", "larger than"] {
        assert!(log.contains(said), "{said}: {log}");
    }
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}

#[test]
fn check_config_names_crowdsec_problems() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("f.toml");
    fs::write(
        &cfg,
        "[crowdsec]\nurl = \"ftp://lapi/\"\napi_key_file = \"missing.key\"\npoll = \"0s\"\nscopes = [\"Country\"]\n",
    )?;
    let out = std::process::Command::new(fail2xdp_tests::fail2xdp_bin())
        .args(["check-config"])
        .arg(&cfg)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let f = cfg.display().to_string();
    for want in [
        format!("{f}:2:crowdsec.url"),
        format!("{f}:3:crowdsec.api_key_file"),
        format!("{f}:4:crowdsec.poll"),
        format!("{f}:5:crowdsec.scopes[0]"),
    ] {
        assert!(err.contains(&want), "{want} in:\n{err}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("OK") {
        bail!("accepted: {stdout}");
    }
    Ok(())
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() -> Result<()> {
    let mut lapi = Lapi::start_tls()?;
    // The bouncer authenticated by its client certificate (no key), the
    // machine by its password, both over https trusting the private CA.
    let mx1 = Host::start_with(&mut lapi, "mx1", |lapi, url, dir| {
        lapi.client_cert("bouncer-ou", "mx1", dir)?;
        fs::copy(lapi.ca(), dir.join("ca.pem"))?;
        Ok(format!(
            "[crowdsec]\nurl = \"{url}\"\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\n\
             key_file = \"client.key\"\ncredentials_file = \"machine.yaml\"\npoll = \"1s\"\n"
        ))
    })?;
    assert!(
        mx1.crowdsec()?["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );
    let manual = "198.51.100.60";
    lapi.add_decision(manual, "1h", &[])?;
    mx1.wait_dropped(manual)?;
    let bouncers = lapi.cscli(&["bouncers", "list", "-o", "json"])?;
    assert!(bouncers.contains("tls"), "no bouncer by TLS: {bouncers}");
    let attacker = "198.51.100.61";
    mx1.w.feed(&fails(attacker, 3))?;
    wait_for("the jail ban pushed over https", SYNC, || {
        Ok(decisions_for(&lapi, attacker)?.len() == 1)
    })
    .map_err(|e| mx1.w.with_log(e))?;

    // Without the CA the LAPI's certificate is not trusted: refused, said.
    let pair = NetnsPair::new()?;
    let url = lapi.link(&pair.recv_ns)?;
    let dir = tempfile::tempdir()?;
    lapi.bouncer_key("mx2", &dir.path().join("bouncer.key"))?;
    let cfg = dir.path().join("f.toml");
    fs::write(
        &cfg,
        format!("[crowdsec]\nurl = \"{url}\"\napi_key_file = \"bouncer.key\"\n"),
    )?;
    let agent = Agent::new(&pair, AgentOptions::default())?;
    let out = agent.cli_output(&["crowdsec", "check", "--config", &cfg.display().to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("bouncer: FAILED") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    Ok(())
}

/// Percentile `p` (0..=100) of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// From the log line that crosses maxretry on mx1 to mx2's XDP dropping
/// that source, for a few dozen bans, with mx2 polling every 1 s and 10 s;
/// beside it, in the same run, mx1's own line-to-drop (the local jail):
/// what sharing adds. The issue's target: p99 <= 2 s + poll.
#[test]
#[ignore = "a benchmark: cargo xtask bench fleet"]
fn fleet_latency() -> Result<()> {
    const BANS: usize = 30;
    let mut rows = Vec::new();
    for (poll, every) in [
        ("1s", Duration::from_millis(700)),
        ("10s", Duration::from_millis(1300)),
    ] {
        let mut lapi = Lapi::start()?;
        let section = |_: &Lapi, url: &str, _: &Path| {
            Ok(format!(
                "[crowdsec]\nurl = \"{url}\"\napi_key_file = \"bouncer.key\"\n\
                 credentials_file = \"machine.yaml\"\npoll = \"{poll}\"\n"
            ))
        };
        let mx1 = Host::start_with(&mut lapi, "mx1", section)?;
        let mx2 = Host::start_with(&mut lapi, "mx2", section)?;
        let addrs: Vec<String> = (0..BANS)
            .map(|i| format!("198.51.100.{}", 100 + i))
            .collect();
        // Two failures each in advance: the timed line is the third.
        for a in &addrs {
            mx1.w.feed(&fails(a, 2))?;
        }
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        // (address, when its crossing line was written, dropped on mx1, on mx2)
        let mut pending: Vec<(String, Instant, bool, bool)> = Vec::new();
        let mut next = 0;
        let mut next_at = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(300);
        while next < BANS || !pending.is_empty() {
            if Instant::now() > deadline {
                bail!("bans not shared within 300 s: {pending:?}");
            }
            if next < BANS && Instant::now() >= next_at {
                let line = fails(&addrs[next], 1);
                let t0 = Instant::now();
                fail2xdp_tests::watch::append_to(&mx1.w.log, &line)?;
                pending.push((addrs[next].clone(), t0, false, false));
                next += 1;
                next_at = t0 + every;
            }
            for p in pending.iter_mut() {
                if !p.2 && mx1.w.lab.delivered(&mx1.w.lab.syn(&p.0, 25), 1)? == 0 {
                    p.2 = true;
                    local.push(p.1.elapsed());
                }
                if !p.3 && mx2.w.lab.delivered(&mx2.w.lab.syn(&p.0, 25), 1)? == 0 {
                    p.3 = true;
                    remote.push(p.1.elapsed());
                }
            }
            pending.retain(|p| !(p.2 && p.3));
        }
        local.sort();
        remote.sort();
        let target =
            Duration::from_secs(2) + fail2xdp::addr::parse_ban_length(poll)?.unwrap_or_default();
        rows.push((poll, local, remote, target));
        // Hosts, then the LAPI, go before the next round.
        drop(mx2);
        drop(mx1);
        drop(lapi);
    }
    println!(
        "\nfleet latency: log line crossing maxretry on mx1 -> XDP drop ({BANS} bans per row; shared machine)\n"
    );
    println!(
        "| mx2 poll | mx1 own drop p50 / p99 | mx2 drop p50 | mx2 drop p99 | mx2 max | target p99 | verdict |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (poll, local, remote, target) in &rows {
        let p99 = percentile(remote, 99);
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        println!(
            "| {poll} | {} / {} | {} | {} | {} | <= {} | {} |",
            ms(percentile(local, 50)),
            ms(percentile(local, 99)),
            ms(percentile(remote, 50)),
            ms(p99),
            ms(remote.last().copied().unwrap_or_default()),
            ms(*target),
            if p99 <= *target { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
