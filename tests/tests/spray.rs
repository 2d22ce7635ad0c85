//! Sprays stay bounded (issue 14, item 3): millions of SASL failures from
//! distinct sources through a real agent reading a real log file keep its
//! memory under a bound set by `max_hosts`, count the hosts they evict, and
//! do not save the real attackers among them.
//!
//! The spray is postfix's `SASL LOGIN authentication failed` line, one
//! failure per source, in three equal parts interleaved line by line:
//! distinct IPv4 addresses (10.0.0.0/8), distinct IPv6 /64s
//! (2001:db8:100::/40, one address each) and distinct addresses all within
//! one /64 (2001:db8:2:64::/64, which is one host for a jail banning /64s:
//! it reaches maxretry at once and is banned). Among them, attackers
//! (198.51.100.0/24 and 2001:db8:3::/48) make `maxretry` failures each,
//! spaced a tenth of the probation segment apart (a new host's first
//! failure is only evicted by a fifth of the table's worth of newer hosts;
//! its second protects it from the spray). Log lines only: no packet is
//! sent from any of these addresses.
//!
//! The bound: the jail's host table holds at most `max_hosts` hosts, each
//! [`HOST_BYTES`] plus its evidence lines (at most `2 * evidence_lines`
//! lines of its own, 4 bytes each beside the line); reading adds a fixed
//! [`READ_BYTES`] whatever the table. So the agent's RSS stays under
//! `RSS before the spray + READ_BYTES + max_hosts * (HOST_BYTES + evidence)`,
//! where the spray's evidence is one line per host (its one failure). The
//! same formula is in the `max_hosts` comment of the built-in configuration.
//! Measured (release build, lines of 139 bytes, so 655 bytes a host): the
//! agent grew by 58 MiB with a table of 100,000 (610 bytes a host, reading
//! included) and by 553 MiB with 1,000,000 (580 bytes a host).
//!
//! A benchmark, run by `cargo xtask bench spray` with the release binary:
//! `FAIL2XDP_BIN=target/release/fail2xdp cargo test --release -p
//! fail2xdp-tests --test spray -- --ignored --nocapture`. `F2X_SPRAY_LINES`
//! sets the sizes (comma-separated, default `1000000,10000000`),
//! `F2X_SPRAY_MAX_HOSTS` the table (default: a tenth of the spray, so
//! 10,000,000 lines run the built-in `max_hosts`, 1,000,000).

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use fail2xdp_tests::watch::{Watch, append_to};

/// A tracked host's own memory, whatever its failures: its slab slot
/// (address, failure times, evidence header, recency links), its hash map
/// slot at the map's worst load after growth, and allocator overhead.
const HOST_BYTES: u64 = 512;
/// What reading takes beside the table: the source's buffers and the lines
/// in flight between its stages (a chunk of 100,000 lines is 14 MB).
const READ_BYTES: u64 = 32 << 20;
const MAXRETRY: usize = 5;
/// Lines appended in one write.
const CHUNK: usize = 100_000;
const ATTACKERS_V4: usize = 4;
const ATTACKERS_V6: usize = 4;

fn sizes() -> Result<Vec<usize>> {
    let s = std::env::var("F2X_SPRAY_LINES").unwrap_or_else(|_| "1000000,10000000".into());
    s.split(',')
        .map(|n| n.trim().replace('_', "").parse().context("F2X_SPRAY_LINES"))
        .collect()
}

fn max_hosts(total: usize) -> Result<usize> {
    match std::env::var("F2X_SPRAY_MAX_HOSTS") {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .context("F2X_SPRAY_MAX_HOSTS"),
        Err(_) => Ok((total / 10).max(1_000)),
    }
}

/// The syslog stamp of now, as postfix writes it.
fn stamp() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%b %e %H:%M:%S")
        .to_string()
}

fn line(stamp: &str, pid: usize, ip: &str) -> String {
    format!(
        "{stamp} mail postfix/smtpd[{pid}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure"
    )
}

/// The spray's source number `i`: IPv4, its own /64, or within one /64.
fn spray_source(i: usize) -> String {
    let k = (i / 3) as u32;
    match i % 3 {
        0 => std::net::Ipv4Addr::from(0x0a00_0000 + k).to_string(),
        1 => format!("2001:db8:{:x}:{:x}::1", 0x100 + (k >> 16), k & 0xffff),
        _ => format!("2001:db8:2:64:{:x}:{:x}::1", k >> 16, k & 0xffff),
    }
}

fn attackers() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = (0..ATTACKERS_V4)
        .map(|a| {
            let ip = format!("198.51.100.{}", 200 + a);
            (ip.clone(), format!("{ip}/32"))
        })
        .collect();
    v.extend((0..ATTACKERS_V6).map(|a| {
        // As the agent writes them: 2001:db8:3::/64, not 2001:db8:3:0::/64.
        let net = std::net::Ipv6Addr::new(0x2001, 0xdb8, 3, a as u16, 0, 0, 0, 0);
        (format!("2001:db8:3:{a:x}::dead"), format!("{net}/64"))
    }));
    v
}

/// `VmRSS` and `VmHWM` of `pid`, bytes.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> Result<u64> {
        let l = s
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        Ok(l[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()?
            * 1024)
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

struct Outcome {
    lines: usize,
    max_hosts: usize,
    secs: f64,
    base: u64,
    peak: u64,
    bound: u64,
    tracked: u64,
    evictions: u64,
    banned: usize,
    attackers: usize,
}

fn spray(total: usize, max_hosts: usize) -> Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("f2x-spray-").tempdir()?;
    let log = dir.path().join("mail.log");
    fs::write(&log, "")?;
    let config = format!(
        "max_hosts = {max_hosts}\n[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{}\"]\n\
         findtime = \"10m\"\nmaxretry = {MAXRETRY}\nbantime = \"1h\"\nports = \"all\"\nipv6_prefix = 64\n",
        log.display()
    );
    let w = Watch::start_in(dir, log.clone(), &config, &[])?;
    let pid = w.lab.agent.pid().context("the agent's pid")?;
    let (base, _) = rss(pid)?;
    let sample = line(&stamp(), 99_999, "2001:db8:1ff:ffff::1");
    // One evidence line per spray host, behind its length.
    let per_host = HOST_BYTES + (sample.len() as u64 + 4);
    let bound = base + READ_BYTES + max_hosts as u64 * per_host;

    // Where the attackers' failures go: attacker a starts at line
    // a * total / attackers, its failures `gap` lines apart.
    let gap = (max_hosts / 5 / 10).max(1);
    let atk = attackers();
    let mut plan: Vec<(usize, usize)> = Vec::new(); // (line, attacker)
    for a in 0..atk.len() {
        let start = a * total / atk.len() + total / (2 * atk.len());
        for k in 0..MAXRETRY {
            plan.push(((start + k * gap).min(total - 1), a));
        }
    }
    plan.sort();

    let t0 = Instant::now();
    let mut written = 0usize;
    let mut next_plan = 0;
    let mut peak = base;
    let mut pidn = 0usize;
    while written < total {
        let n = CHUNK.min(total - written);
        let st = stamp();
        let mut chunk = Vec::with_capacity(n + 16);
        for i in written..written + n {
            while next_plan < plan.len() && plan[next_plan].0 == i {
                pidn += 1;
                chunk.push(line(&st, pidn, &atk[plan[next_plan].1].0));
                next_plan += 1;
            }
            pidn += 1;
            chunk.push(line(&st, pidn, &spray_source(i)));
        }
        // At most one chunk waiting to be read.
        let behind = (written + next_plan).saturating_sub(CHUNK) as u64;
        wait_lines(&w, behind, Duration::from_secs(120))?;
        append_to(&log, &chunk)?;
        written += n;
        let (r, hwm) = rss(pid)?;
        peak = peak.max(r).max(hwm);
    }
    let want = (total + plan.len()) as u64;
    wait_lines(&w, want, Duration::from_secs(300))?;
    let secs = t0.elapsed().as_secs_f64();
    let (_, hwm) = rss(pid)?;
    peak = peak.max(hwm);

    let j = w.jail()?;
    let evictions = j["evictions"].as_u64().context("evictions")?;
    let tracked = j["tracked_hosts"].as_u64().unwrap_or(0);
    let failures = j["failures"].as_u64().context("failures")?;
    ensure!(
        failures == want,
        "{failures} failures counted of {want} lines: {j}"
    );

    // The attackers (and the one /64 of the spray) are banned, in the maps.
    let list = w.lab.agent.list_json()?;
    let mut banned = 0;
    let mut missing = Vec::new();
    for (_, net) in &atk {
        if fail2xdp_tests::find_ban(&list, net).is_some() {
            banned += 1;
        } else {
            missing.push(net.clone());
        }
    }
    let one64 = fail2xdp_tests::find_ban(&list, "2001:db8:2:64::/64").is_some();
    println!(
        "spray {total}: {:.1} s ({:.0} lines/s); RSS {:.1} MiB before, peak {:.1} MiB, bound {:.1} MiB \
         (before + {} MiB + max_hosts {max_hosts} x {per_host} B); tracked {tracked}, evictions {evictions}; \
         attackers banned {banned}/{}; the one /64 banned: {one64}",
        secs,
        want as f64 / secs,
        mib(base),
        mib(peak),
        mib(bound),
        READ_BYTES >> 20,
        atk.len(),
    );
    ensure!(missing.is_empty(), "attackers not banned: {missing:?}");
    ensure!(
        one64,
        "the spray's one /64 (2001:db8:2:64::/64) was not banned"
    );
    ensure!(
        peak <= bound,
        "RSS peaked at {:.1} MiB, over the bound {:.1} MiB",
        mib(peak),
        mib(bound)
    );
    // Each single-failure host beyond the table's size was an eviction
    // (the banned ones left the table).
    // Sources 0, 3, 6, ... are IPv4, 1, 4, 7, ... their own /64s.
    let singles = (total.div_ceil(3) + (total + 1) / 3) as u64;
    ensure!(
        evictions >= singles.saturating_sub(max_hosts as u64),
        "{evictions} evictions for {singles} one-failure hosts in a table of {max_hosts}"
    );
    ensure!(tracked <= max_hosts as u64, "{tracked} hosts tracked");
    Ok(Outcome {
        lines: total,
        max_hosts,
        secs,
        base,
        peak,
        bound,
        tracked,
        evictions,
        banned,
        attackers: atk.len(),
    })
}

fn wait_lines(w: &Watch, want: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let have = w.counter("lines")?;
        if have >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent read {have} of {want} lines in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "benchmark: cargo xtask bench spray"]
fn sprays_stay_bounded() -> Result<()> {
    fail2xdp_tests::require_privileges();
    let mut rows = Vec::new();
    for n in sizes()? {
        rows.push(spray(n, max_hosts(n)?)?);
    }
    println!();
    println!(
        "| spray lines | max_hosts | seconds | RSS before | peak RSS | bound | tracked | evictions | attackers banned |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {} | {}/{} |",
            o.lines,
            o.max_hosts,
            o.secs,
            mib(o.base),
            mib(o.peak),
            mib(o.bound),
            o.tracked,
            o.evictions,
            o.banned,
            o.attackers
        );
    }
    Ok(())
}

/// The kernel maps every page of an array map when it is mmapped, so
/// setting up the data plane used to map every ban table to size them,
/// about 160 MiB of RSS whatever the bans: a dry run (which sets up, then
/// writes nothing: `bench ingest` measures one) peaked there. Setting up
/// fresh pins now maps no ban table; tables are mapped on first use. The
/// prefix and allowlist tables were still mapped to read which prefix
/// lengths they hold, empty as they were: 15 MiB more here (28 MiB at the
/// release bench's capacities, its peak RSS within 0.2 MiB of its 64).
#[test]
fn setting_up_fresh_pins_maps_no_ban_table() -> Result<()> {
    fail2xdp_tests::require_privileges();
    let w = Watch::start_with("maxretry = 2", &["--dry-run"], |_| Ok(()))?;
    let pid = w.lab.agent.pid().context("the agent's pid")?;
    let (now, peak) = rss(pid)?;
    // A debug build's own pages, heap and the kernel's BTF parsed by the
    // loader (a 16 MiB moment) peak at 35 MiB on 6.18; the prefix and
    // allowlist tables mapped added 15 MiB, the ban tables 160.
    ensure!(
        peak < 42 << 20,
        "a dry-run agent on fresh pins peaked at {:.1} MiB of RSS (now {:.1} MiB)",
        mib(peak),
        mib(now)
    );
    Ok(())
}
