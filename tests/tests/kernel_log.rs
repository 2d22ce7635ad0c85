//! The XDP program's own log records (aya-log), forwarded to the agent's log:
//! the first drop of each ban, once, and parse anomalies, rate-limited per
//! CPU in the kernel. Run as root: `cargo test -p fail2xdp-tests --test
//! kernel_log` (after `cargo build -p fail2xdp`).

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use fail2xdp_tests::{AgentOptions, Lab, Probe};
use object::{Object, ObjectSection, ObjectSymbol};

/// The program's budget: anomaly lines per CPU per second (ebpf/src/events.rs).
const ANOMALIES_PER_SEC: usize = 4;

/// The agent's log lines containing `pat`, once `want` of them are there
/// (or after `limit`), then after a further pause for any late duplicate.
fn lines_with(lab: &Lab, pat: &str, want: usize, limit: Duration) -> Vec<String> {
    let grab = || -> Vec<String> {
        lab.agent
            .log()
            .lines()
            .filter(|l| l.contains(pat))
            .map(str::to_owned)
            .collect()
    };
    let t0 = Instant::now();
    while grab().len() < want && t0.elapsed() < limit {
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    grab()
}

#[test]
fn first_drop_of_each_ban_is_logged_once() -> Result<()> {
    let lab = Lab::start()?;
    lab.agent.ban("198.51.100.7", &[])?;
    lab.agent.ban("2001:db8:1:2::/64", &[])?;
    // Several packets, in several rounds, to each ban.
    for _ in 0..3 {
        assert_eq!(lab.delivered(&lab.syn("198.51.100.7", 25), 10)?, 0);
        assert_eq!(lab.delivered(&lab.syn("2001:db8:1:2::9", 25), 10)?, 0);
        assert_eq!(lab.delivered(&lab.udp("2001:db8:1:2::a", 53), 5)?, 0);
    }
    // Clean traffic logs nothing.
    assert_eq!(lab.delivered(&lab.syn("198.51.100.8", 25), 10)?, 10);
    let all = lines_with(&lab, "dropping traffic", 2, Duration::from_secs(10));
    let log = lab.agent.log();
    let v4: Vec<_> = all
        .iter()
        .filter(|l| l.contains("ban 198.51.100.7 is dropping traffic"))
        .collect();
    assert_eq!(v4.len(), 1, "exact IPv4 ban: {all:#?}\n{log}");
    let v6: Vec<_> = all
        .iter()
        .filter(|l| {
            l.contains("ban 2001:db8:1:2::/64 is dropping traffic (first from 2001:db8:1:2::9)")
        })
        .collect();
    assert_eq!(v6.len(), 1, "IPv6 prefix ban: {all:#?}\n{log}");
    assert_eq!(all.len(), 2, "one line per ban: {all:#?}");
    Ok(())
}

/// Keeps this thread, and so the veth receive path its sends run, on CPU 0:
/// one CPU's budget is what is checked.
fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data; the calls only read and write `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[test]
fn parse_anomalies_are_logged_within_the_rate_limit() -> Result<()> {
    let lab = Lab::start()?;
    pin_to_cpu0();
    let cut = |p: Probe, len: usize| -> Vec<u8> {
        let mut f = p.min_len(0).frame();
        f.truncate(len);
        f
    };
    // An IPv4 header cut short, an IPv6 chain of more extension headers than
    // the parser follows, a TCP header cut short.
    let frames = [
        cut(lab.syn("198.51.100.7", 25), 14 + 16),
        lab.syn("2001:db8:1::7", 25).ip_options(7).frame(),
        cut(lab.syn("198.51.100.8", 25), 14 + 20 + 10),
    ];
    let t0 = Instant::now();
    let mut sent = 0;
    for _ in 0..100 {
        for f in &frames {
            lab.tx.send_frame(f)?;
            sent += 1;
        }
    }
    lab.rx.settle(&lab.tx)?;
    let secs = t0.elapsed().as_secs() as usize + 1;
    let lines = lines_with(&lab, "parse anomaly:", 1, Duration::from_secs(10));
    assert!(!lines.is_empty(), "no anomaly logged:\n{}", lab.agent.log());
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let most = ANOMALIES_PER_SEC * cpus * secs;
    assert!(
        lines.len() <= most,
        "{} anomaly lines for {sent} frames in {secs} s on {cpus} CPUs (at most {most}): {lines:#?}",
        lines.len()
    );
    let known = [
        "truncated IP header in a 30-byte frame",
        "IPv6 extension-header chain longer than followed",
        "truncated TCP/UDP header in a 44-byte frame",
    ];
    for l in &lines {
        assert!(known.iter().any(|k| l.contains(k)), "unexpected: {l}");
    }
    // A budget spent: after a second, the next line counts what was not logged.
    thread::sleep(Duration::from_millis(1100));
    let before = lines.len();
    for f in &frames {
        lab.tx.send_frame(f)?;
    }
    lab.rx.settle(&lab.tx)?;
    let later = lines_with(&lab, "parse anomaly:", before + 1, Duration::from_secs(10));
    assert!(later.len() > before, "nothing logged in the next second");
    assert!(
        later[before..]
            .iter()
            .any(|l| !l.contains("(0 more not logged")),
        "the suppressed count is reported: {later:#?}"
    );
    Ok(())
}

/// Where the embedded XDP object keeps aya-log's `AYA_LOG_LEVEL`: (section
/// name, offset in it).
fn log_level_symbol() -> Result<(String, usize)> {
    let obj = object::File::parse(fail2xdp::EBPF_OBJECT).context("parsing the XDP object")?;
    let sym = obj
        .symbols()
        .find(|s| s.name() == Ok("AYA_LOG_LEVEL"))
        .context("the XDP object has no AYA_LOG_LEVEL symbol")?;
    let section = obj
        .section_by_index(sym.section_index().context("AYA_LOG_LEVEL in no section")?)?
        .name()?
        .to_string();
    Ok((section, sym.address() as usize))
}

fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The contents of the map named `name` of the loaded program `prog`.
fn program_data(prog: u64, name: &str) -> Result<Vec<u8>> {
    let id = prog.to_string();
    let info = bpftool_json(&["prog", "show", "id", &id])?;
    for m in info["map_ids"].as_array().context("no map_ids")? {
        let m = m.to_string();
        if bpftool_json(&["map", "show", "id", &m])?["name"] != name {
            continue;
        }
        let dump = bpftool_json(&["map", "dump", "id", &m])?;
        let value = dump[0]["value"].as_array().context("no value")?;
        return value
            .iter()
            .map(|b| {
                let b = b.as_str().context("not a hex byte")?;
                Ok(u8::from_str_radix(b.trim_start_matches("0x"), 16)?)
            })
            .collect();
    }
    anyhow::bail!("program {prog} has no map {name}")
}

/// The program is loaded with the agent's level for its records: those the
/// agent would not log are not written to the ring buffer at all.
#[test]
fn the_programs_log_level_is_the_agents() -> Result<()> {
    let (section, offset) = log_level_symbol()?;
    for (level, want) in [
        ("warn", 2u8),
        ("info", 3),
        ("warn,fail2xdp::xdp=trace", 5),
        ("off", 0),
    ] {
        let lab = Lab::start_with(AgentOptions {
            extra_args: vec!["--log-level".into(), level.into()],
            ..Default::default()
        })?;
        let prog = lab.agent.link_info()?.prog_id;
        let data = program_data(prog, &section)?;
        assert_eq!(
            data.get(offset).copied(),
            Some(want),
            "AYA_LOG_LEVEL of the program an agent at {level:?} loaded"
        );
        if want < 3 {
            // Nothing of the first drop reaches the agent's log either.
            lab.agent.ban("198.51.100.7", &[])?;
            assert_eq!(lab.delivered(&lab.syn("198.51.100.7", 25), 10)?, 0);
            thread::sleep(Duration::from_millis(500));
            assert!(
                !lab.agent.log().contains("dropping traffic"),
                "{}",
                lab.agent.log()
            );
        }
    }
    Ok(())
}
