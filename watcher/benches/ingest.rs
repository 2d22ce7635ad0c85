//! Ingest benchmark: lines per second through sources + filters + jails of
//! the real agent binary (data plane in dry-run), and its peak RSS, beside
//! `fail2ban-regex` with fail2ban's own postfix filter (mode=auth) on the
//! same log; and fail2ban's postfix filter in mode=aggressive read from its
//! own files (`--fail2ban-config`) beside fail2ban-regex with the same filter. Run as root: `cargo xtask bench ingest`, or
//! `cargo bench -p fail2xdp --bench ingest`.
//!
//! The log is 1,000,000 lines from `../shared/perf/genlog.py` next to the repository (seed 42),
//! generated once and cached in the target dir. The agent runs pinned to one
//! CPU with `run --dry-run --replay` on a veth inside a namespace the bench
//! creates (and removes); the log is renamed into place once the agent answers
//! on its control socket, and progress is read from there.
//!
//! Environment: `F2X_BENCH_LINES` (default 1000000), `F2X_BENCH_F2B_LINES`
//! (lines given to fail2ban-regex, default 100000: it runs at ~20k lines/s),
//! `F2X_BENCH_CPU` (default 1), `F2X_BENCH_RUNS` (runs per row, median shown,
//! default 3; fail2ban-regex runs as often, each time right after an
//! all-CPUs run, and the ratio targets read the median of those rounds'
//! ratios), `GENLOG` (path of genlog.py). For comparing builds:
//! `F2X_BENCH_ONLY=sasl|sasl-all|default|f2b|f2b-all` runs that row alone (no peer) and
//! `F2X_BENCH_BIN` runs another `fail2xdp` binary.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fail2xdp::control::{self, Request, Response};

fn bin() -> String {
    std::env::var("F2X_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fail2xdp").into())
}
const F2B_FILTER: &str = "/etc/fail2ban/filter.d/postfix.conf";
/// Marks a configuration that is a fail2ban jail.conf (the rest of it).
const FAIL2BAN_MARK: &str = "#fail2ban-jail.conf\n";
/// One jail running fail2ban's own postfix filter in aggressive mode (its
/// look-around patterns included), from `--fail2ban-config`.
const F2B_AGGRESSIVE: &str = "#fail2ban-jail.conf\n[postfix]\nenabled = true\nfilter = postfix[mode=aggressive]\nlogpath = {LOG}\nbackend = auto\nmaxretry = 5\nusedns = no\naction = iptables-multiport[port=\"smtp,submission,submissions\"]\n";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; a filter argument that is not ours skips the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"ingest".contains(a.as_str()))
    {
        return Ok(());
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the ingest benchmark attaches XDP in a network namespace: run it as root");
    }
    let lines = env_num("F2X_BENCH_LINES", 1_000_000);
    let f2b_lines = env_num("F2X_BENCH_F2B_LINES", 100_000).min(lines);
    let cpu = env_num("F2X_BENCH_CPU", 1);
    let runs = env_num("F2X_BENCH_RUNS", 3).max(1);
    let log = maillog(lines)?;
    let work = tempfile::Builder::new().prefix("f2x-bench-").tempdir()?;

    let only = std::env::var("F2X_BENCH_ONLY").ok();
    let f2b = match only {
        Some(_) => Err(anyhow::anyhow!("skipped (F2X_BENCH_ONLY)")),
        None => fail2ban_regex(&log, f2b_lines, work.path(), "auth"),
    };
    // The same filter fail2xdp runs from fail2ban's own files below.
    let f2b_aggr = match only.as_deref() {
        Some(_) => Err(anyhow::anyhow!("skipped (F2X_BENCH_ONLY)")),
        None => fail2ban_regex(&log, f2b_lines, work.path(), "aggressive"),
    };
    // This machine drops page cache within seconds: without the lock, part
    // of a replay would measure the disk, not the agent. Taken after the
    // peer ran: a child's peak RSS as the kernel reports it includes this
    // process's, which the locked pages are part of.
    let _resident = Resident::lock(&log)?;
    const SASL: &str = "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"{LOG}\"]\nports = \"smtp,submission,submissions\"\n";
    let default_cfg = fail2xdp::config::DEFAULT_TOML.replace(
        "files_any = [\"/var/log/mail.log\", \"/var/log/maillog\"]",
        "files = [\"{LOG}\"]",
    );
    // This machine's speed wanders by a quarter from run to run: each row
    // is the median of `runs` runs (by the figure its target reads).
    let median = |tag: &str, cpu: Option<u64>, cfg: &str| -> Result<AgentRun> {
        let v = (0..runs)
            .map(|i| run_agent(&log, lines, cpu, work.path(), &format!("{tag}-{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        // Pinned runs are read per CPU second, the others by the wall clock.
        let key = |r: &AgentRun| {
            if cpu.is_some() {
                r.lines_per_cpu_sec
            } else {
                r.lines_per_sec
            }
        };
        Ok(middle(v, key))
    };
    if let Some(tag) = &only {
        let (pin, cfg) = match tag.as_str() {
            "sasl" => (Some(cpu), SASL),
            "sasl-all" => (None, SASL),
            "default" => (Some(cpu), default_cfg.as_str()),
            "f2b" => (Some(cpu), F2B_AGGRESSIVE),
            "f2b-all" => (None, F2B_AGGRESSIVE),
            _ => bail!("F2X_BENCH_ONLY: sasl, sasl-all, default, f2b or f2b-all"),
        };
        let r = median(tag, pin, cfg)?;
        println!(
            "{tag}: {} lines/s, {} lines/CPU-s, {:.1} MiB, range {}",
            group(r.lines_per_sec as u64),
            group(r.lines_per_cpu_sec as u64),
            r.peak_rss_kib as f64 / 1024.0,
            r.spread
        );
        return Ok(());
    }
    // The rows whose targets are ratios to fail2ban-regex: in each round
    // fail2ban-regex runs right after the agent, and the target reads the
    // median of the rounds' ratios, so a phase of the machine (its speed
    // drifts up to 2x within minutes) slows both sides of a ratio alike.
    let paired = |tag: &str, cfg: &str, peer: &Result<F2b>, mode: &str| -> Result<Paired> {
        if peer.is_err() {
            return Ok(Paired {
                row: median(tag, None, cfg)?,
                ratios: Vec::new(),
                peer: Vec::new(),
            });
        }
        let mut rows = Vec::new();
        let mut ratios = Vec::new();
        let mut peers = Vec::new();
        for i in 0..runs {
            let r = run_agent(&log, lines, None, work.path(), &format!("{tag}-{i}"), cfg)?;
            // The first run of the peer, at the start, is a minute or more
            // away from here: every round runs it again.
            let peer_rate = fail2ban_regex(&log, f2b_lines, work.path(), mode)?.lines_per_sec;
            ratios.push(r.lines_per_sec / peer_rate);
            peers.push(peer_rate);
            rows.push(r);
        }
        ratios.sort_by(f64::total_cmp);
        peers.sort_by(f64::total_cmp);
        Ok(Paired {
            row: middle(rows, |r| r.lines_per_sec),
            ratios,
            peer: peers,
        })
    };
    let sasl = median("sasl", Some(cpu), SASL)?;
    let all_cpus = paired("sasl-all", SASL, &f2b, "auth")?;
    let default = median("default", Some(cpu), &default_cfg)?;
    let f2b_row = median("f2b", Some(cpu), F2B_AGGRESSIVE)?;
    let f2b_all = paired("f2b-all", F2B_AGGRESSIVE, &f2b_aggr, "aggressive")?;

    println!();
    println!(
        "ingest: {lines} lines of {} (genlog.py seed 42), agent pinned to CPU {cpu} unless marked all CPUs ({} here)",
        log.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "median of {runs} runs per row (range of the figure its target reads); fail2ban-regex ran \
         beside each all-CPUs run (peak RSS of its first run), and a ratio target reads the median \
         of the rounds' ratios"
    );
    println!(
        "{:<48} {:>14} {:>16} {:>12} {:>10}  range",
        "", "lines/s", "lines/CPU-s", "peak RSS", "failures"
    );
    for r in [&sasl, &all_cpus.row, &default, &f2b_row, &f2b_all.row] {
        println!(
            "{:<48} {:>14} {:>16} {:>8.1} MiB {:>10}  {}",
            r.label,
            group(r.lines_per_sec as u64),
            group(r.lines_per_cpu_sec as u64),
            r.peak_rss_kib as f64 / 1024.0,
            r.failures,
            r.spread
        );
    }
    match &f2b {
        Ok(f) => println!(
            "{:<48} {:>14} {:>16} {:>8.1} MiB {:>10}",
            format!("fail2ban-regex postfix[mode=auth] ({} lines)", f.lines),
            group(all_cpus.peer_median(f.lines_per_sec) as u64),
            "-",
            f.peak_rss_kib as f64 / 1024.0,
            f.matched
        ),
        Err(e) => println!("fail2ban-regex: not measured: {e:#}"),
    }
    match &f2b_aggr {
        Ok(f) => println!(
            "{:<48} {:>14} {:>16} {:>8.1} MiB {:>10}",
            format!(
                "fail2ban-regex postfix[mode=aggressive] ({} lines)",
                f.lines
            ),
            group(f2b_all.peer_median(f.lines_per_sec) as u64),
            "-",
            f.peak_rss_kib as f64 / 1024.0,
            f.matched
        ),
        Err(e) => println!("fail2ban-regex (aggressive): not measured: {e:#}"),
    }
    println!();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    if let Ok(f) = &f2b {
        // Wall clock against wall clock: the agent on every CPU it may use,
        // fail2ban-regex on the one its interpreter can use.
        let ratio = all_cpus.median();
        println!(
            "target >= 100x fail2ban-regex lines/s     {ratio:>10.0}x  {} (wall, all CPUs, median of {}; one CPU: {:.0}x per CPU second)",
            verdict(ratio >= 100.0),
            all_cpus.rounds(),
            sasl.lines_per_cpu_sec / all_cpus.peer_median(f.lines_per_sec)
        );
    }
    println!(
        "target >= 2,000,000 lines/s on one core  {:>11}  {} (per CPU second; wall {})",
        group(sasl.lines_per_cpu_sec as u64),
        verdict(sasl.lines_per_cpu_sec >= 2_000_000.0),
        group(sasl.lines_per_sec as u64)
    );
    // fail2ban's own postfix filter, mode=aggressive, run from its files.
    if let Ok(f) = &f2b_aggr {
        // As for the sasl row: wall clock against wall clock.
        let ratio = f2b_all.median();
        println!(
            "fail2ban filter: target >= 50x fail2ban-regex {ratio:>8.0}x  {} (wall, all CPUs, median of {}; pinned {:.0}x, {:.0}x per CPU second)",
            verdict(ratio >= 50.0),
            f2b_all.rounds(),
            f2b_row.lines_per_sec / f2b_all.peer_median(f.lines_per_sec),
            f2b_row.lines_per_cpu_sec / f2b_all.peer_median(f.lines_per_sec)
        );
    }
    println!(
        "fail2ban filter: target >= 1,000,000 lines/s on one core {:>11}  {} (per CPU second)",
        group(f2b_row.lines_per_cpu_sec as u64),
        verdict(f2b_row.lines_per_cpu_sec >= 1_000_000.0)
    );
    let worst_rss = sasl
        .peak_rss_kib
        .max(default.peak_rss_kib)
        .max(f2b_row.peak_rss_kib)
        .max(f2b_all.row.peak_rss_kib)
        .max(all_cpus.row.peak_rss_kib);
    println!(
        "target peak RSS <= 64 MiB                {:>7.1} MiB  {}",
        worst_rss as f64 / 1024.0,
        verdict(worst_rss <= 64 * 1024)
    );
    Ok(())
}

/// 1,000 -> "1,000".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The cached synthetic maillog of `lines` lines.
fn maillog(lines: u64) -> Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench-data");
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("maillog-{lines}-s42.log"));
    if path.is_file() {
        return Ok(path);
    }
    // The generator is test data beside the repository, not part of it.
    let genlog = std::env::var("GENLOG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/perf/genlog.py").into()
    });
    if !Path::new(&genlog).is_file() {
        bail!(
            "the log generator {genlog} is missing: it lives in ../shared/perf/genlog.py beside the repository \
             (or set GENLOG to its path)"
        );
    }
    eprintln!("generating {} with {genlog} ...", path.display());
    let tmp = path.with_extension("tmp");
    let st = Command::new("python3")
        .arg(&genlog)
        .args(["-n", &lines.to_string(), "-s", "42", "-o"])
        .arg(&tmp)
        .status()
        .with_context(|| format!("running {genlog}"))?;
    if !st.success() {
        bail!("{genlog} failed: {st}");
    }
    fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The pages of a file held in memory (mapped and mlocked) while it lives.
struct Resident {
    addr: *mut libc::c_void,
    len: usize,
}

impl Resident {
    fn lock(path: &Path) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(path)?;
        let len = f.metadata()?.len() as usize;
        // SAFETY: a fresh read-only shared mapping of a file we opened; it
        // is only locked and unmapped, never read through.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            bail!(
                "mapping {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        let r = Resident { addr, len };
        // SAFETY: the range is the mapping made above.
        if unsafe { libc::mlock(r.addr, r.len) } != 0 {
            bail!(
                "locking {} in memory: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(r)
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        // SAFETY: the mapping made in lock(), unmapped once.
        unsafe {
            libc::munlock(self.addr, self.len);
            libc::munmap(self.addr, self.len);
        }
    }
}

struct F2b {
    lines: u64,
    matched: u64,
    lines_per_sec: f64,
    peak_rss_kib: u64,
}

/// fail2ban-regex on the first `n` lines; its own "processed in" time (without
/// interpreter start-up) gives the rate.
fn fail2ban_regex(log: &Path, n: u64, dir: &Path, mode: &str) -> Result<F2b> {
    if !Path::new(F2B_FILTER).is_file() {
        bail!("{F2B_FILTER} is missing (Debian package fail2ban)");
    }
    let part = dir.join(format!("f2b-input-{mode}.log"));
    {
        let mut out = std::io::BufWriter::new(fs::File::create(&part)?);
        for l in BufReader::new(fs::File::open(log)?)
            .lines()
            .take(n as usize)
        {
            writeln!(out, "{}", l?)?;
        }
    }
    eprintln!("running fail2ban-regex on {n} lines ...");
    let t0 = Instant::now();
    let cpu0 = children_cpu_secs();
    let out = Command::new("fail2ban-regex")
        .arg(&part)
        .arg(format!("{F2B_FILTER}[mode={mode}]"))
        .output()
        .context("running fail2ban-regex")?;
    let wall = t0.elapsed();
    let cpu = children_cpu_secs() - cpu0;
    // Only children waited for so far: the agent runs after this.
    let peak_rss_kib = children_maxrss_kib();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "fail2ban-regex failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secs = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("[processed in ")?
                .strip_suffix(" sec]")?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(wall.as_secs_f64());
    let matched = text
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("Lines: ")?;
            let m = rest.split(", ").find(|p| p.ends_with(" matched"))?;
            m.trim_end_matches(" matched").parse().ok()
        })
        .unwrap_or(0);
    // Its own processing time (wall, under whatever load there is) or its CPU
    // time including interpreter start-up: whichever makes it look faster.
    let rate = (n as f64 / secs.max(1e-9)).max(n as f64 / cpu.max(1e-9));
    Ok(F2b {
        lines: n,
        matched,
        lines_per_sec: rate,
        peak_rss_kib,
    })
}

/// User + system CPU seconds of the children waited for so far.
fn children_cpu_secs() -> f64 {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn children_maxrss_kib() -> u64 {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } == 0 {
        ru.ru_maxrss as u64
    } else {
        0
    }
}

/// The median of `runs` by `key`, with the range of `key` over them.
fn middle(mut runs: Vec<AgentRun>, key: impl Fn(&AgentRun) -> f64) -> AgentRun {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let spread = format!(
        "{}..{}",
        group(runs.first().map_or(0.0, &key) as u64),
        group(runs.last().map_or(0.0, &key) as u64)
    );
    let mut m = runs.swap_remove(runs.len() / 2);
    m.spread = spread;
    m
}

/// An agent row and, round by round, its ratio to fail2ban-regex run
/// beside it (sorted; empty when fail2ban-regex did not run).
struct Paired {
    row: AgentRun,
    ratios: Vec<f64>,
    /// fail2ban-regex's lines/s in each round, sorted.
    peer: Vec<f64>,
}

impl Paired {
    fn median(&self) -> f64 {
        self.ratios
            .get(self.ratios.len() / 2)
            .copied()
            .unwrap_or(0.0)
    }

    /// fail2ban-regex's median lines/s over the rounds, else `alone`'s.
    fn peer_median(&self, alone: f64) -> f64 {
        self.peer.get(self.peer.len() / 2).copied().unwrap_or(alone)
    }

    /// The rounds' ratios, lowest to highest: "54x, 57x, 61x".
    fn rounds(&self) -> String {
        let r: Vec<String> = self.ratios.iter().map(|x| format!("{x:.0}x")).collect();
        r.join(", ")
    }
}

struct AgentRun {
    label: String,
    /// Wall clock, the agent pinned to one CPU (shared with whatever else runs there).
    lines_per_sec: f64,
    /// Per second of CPU time the agent used: the rate of one dedicated core.
    lines_per_cpu_sec: f64,
    peak_rss_kib: u64,
    failures: u64,
    /// Lowest..highest of the runs this one is the median of.
    spread: String,
}

/// A namespace with a veth for the agent to attach to, and its pins; all
/// removed on drop.
struct Bench {
    ns: String,
    pin_dir: PathBuf,
    child: Option<Child>,
}

impl Bench {
    fn new(tag: &str) -> Result<Self> {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let ns = format!("f2xb-{id}");
        let b = Bench {
            ns: ns.clone(),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/f2xb-{id}")),
            child: None,
        };
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", "f2xb0", "netns", &ns, "type", "veth", "peer", "name", "f2xb1", "netns",
            &ns,
        ])?;
        for i in ["f2xb0", "f2xb1"] {
            ip(&["-n", &ns, "link", "set", i, "up"])?;
        }
        Ok(b)
    }

    /// `fail2xdp` for this instance, inside the namespace, pinned to `cpu`
    /// (reader thread, runtime workers and all) if given.
    fn command(&self, dir: &Path, cpu: Option<u64>) -> Command {
        let mut c = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), "nsenter"]);
                c
            }
            None => Command::new("nsenter"),
        };
        c.arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg(bin())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("control.sock"));
        c
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        if self.pin_dir.exists() {
            let _ = Command::new(bin())
                .arg("--pin-dir")
                .arg(&self.pin_dir)
                .arg("detach")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_dir_all(&self.pin_dir);
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn status(sock: &Path, pin_dir: &Path) -> Option<serde_json::Value> {
    let client = control::Client {
        socket: sock.to_owned(),
        pin_dir: pin_dir.to_owned(),
        timeout: Duration::from_secs(5),
    };
    match client.call(&Request::AgentStatus) {
        Ok(Response::Json(v)) => Some(v),
        _ => None,
    }
}

/// Shortest and longest wait between two status calls.
const POLL_MIN: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(100);

/// How long to wait before the next status call, `seen` of `lines` lines
/// done after `elapsed`: a quarter of the time the rest should take at the
/// rate so far, so the end is still seen within 2 ms. Asking every 2 ms
/// throughout cost the pinned agent 7% of its CPU (each answer wakes its
/// runtime on the reader's CPU): the bench measured its own polling.
fn next_poll(elapsed: Duration, seen: u64, lines: u64) -> Duration {
    if seen == 0 {
        return POLL_MIN;
    }
    let rest = elapsed.mul_f64(lines.saturating_sub(seen) as f64 / seen as f64);
    (rest / 4).clamp(POLL_MIN, POLL_MAX)
}

/// Lines every source has delivered and every jail has seen: (min over jails
/// of lines seen, failures summed).
fn progress(v: &serde_json::Value) -> (u64, u64) {
    let jails = v["jails"].as_array().cloned().unwrap_or_default();
    let seen = jails
        .iter()
        .filter_map(|j| j["lines"].as_u64())
        .min()
        .unwrap_or(0);
    let failures = jails.iter().filter_map(|j| j["failures"].as_u64()).sum();
    (seen, failures)
}

/// CPU time of `pid` so far, in ns: the process's user and system time
/// (clock ticks), which keeps the time of threads that have exited, such
/// as the match stage's helpers for one chunk. Summing the live threads'
/// schedstat, as this bench once did, missed those and overstated the
/// all-CPU rows' lines per CPU second.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces: fields count from after its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indices 11 and 12
    // of what follows the ')' (field 3, the state, is index 0).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf takes a constant and reads no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

fn vm_hwm_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn run_agent(
    log: &Path,
    lines: u64,
    cpu: Option<u64>,
    work: &Path,
    tag: &str,
    config: &str,
) -> Result<AgentRun> {
    let dir = work.join(tag);
    fs::create_dir_all(dir.join("state"))?;
    // The log appears (renamed into place) once the agent answers, so the
    // whole replay is timed: an agent replaying from its start could be
    // done before the first status answer.
    let live = dir.join("mail.log");
    let (cfg_flag, cfg) = match config.strip_prefix(FAIL2BAN_MARK) {
        // A fail2ban configuration directory: this jail.conf, fail2ban's
        // own filter.d and action.d.
        Some(jail_conf) => {
            let etc = dir.join("fail2ban");
            fs::create_dir_all(&etc)?;
            for d in ["filter.d", "action.d"] {
                let _ = fs::remove_file(etc.join(d));
                std::os::unix::fs::symlink(Path::new("/etc/fail2ban").join(d), etc.join(d))?;
            }
            fs::write(
                etc.join("jail.conf"),
                jail_conf.replace("{LOG}", &live.display().to_string()),
            )?;
            ("--fail2ban-config", etc)
        }
        None => {
            let cfg = dir.join("bench.toml");
            fs::write(&cfg, config.replace("{LOG}", &live.display().to_string()))?;
            ("--config", cfg)
        }
    };
    let staged = dir.join("staged.log");
    if fs::hard_link(log, &staged).is_err() {
        fs::copy(log, &staged).context("staging the log")?;
    }
    let mut bench = Bench::new(tag)?;
    let sock = dir.join("control.sock");
    let agent_log = fs::File::create(dir.join("agent.log"))?;
    let mut cmd = bench.command(&dir, cpu);
    cmd.args([
        "run",
        "--iface",
        "f2xb0",
        "--xdp-mode",
        "native",
        "--dry-run",
        "--replay",
        cfg_flag,
    ])
    .arg(&cfg)
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(agent_log.try_clone()?)
    .stderr(agent_log);
    eprintln!("running the agent ({tag}) on {lines} lines ...");
    let child = cmd.spawn().context("spawning the agent")?;
    let pid = child.id();
    bench.child = Some(child);

    let deadline = Instant::now() + Duration::from_secs(600);
    while status(&sock, &bench.pin_dir).is_none() {
        if Instant::now() > deadline {
            bail!("the agent did not answer; log in {}", dir.display());
        }
        if let Some(c) = bench.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            bail!(
                "the agent exited ({st}): {}",
                fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let cpu0 = cpu_ns(pid);
    fs::rename(&staged, &live).context("putting the log in place")?;
    let (done_at, failures, cpu_done) = loop {
        if Instant::now() > deadline {
            bail!(
                "the agent did not finish within 10 minutes; log in {}",
                dir.display()
            );
        }
        if let Some(c) = bench.child.as_mut()
            && let Some(st) = c.try_wait()?
        {
            bail!(
                "the agent exited ({st}): {}",
                fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
            );
        }
        let mut wait = POLL_MIN;
        if let Some(v) = status(&sock, &bench.pin_dir) {
            let (seen, failures) = progress(&v);
            if seen >= lines {
                break (Instant::now(), failures, cpu_ns(pid));
            }
            wait = next_poll(t0.elapsed(), seen, lines);
        }
        std::thread::sleep(wait);
    };
    let elapsed = done_at.duration_since(t0).as_secs_f64().max(1e-6);
    let cpu_secs = (cpu_done.saturating_sub(cpu0) as f64 / 1e9).max(1e-6);
    let peak_rss_kib = vm_hwm_kib(pid);
    drop(bench);
    let _ = fs::remove_file(&live);
    Ok(AgentRun {
        label: format!(
            "fail2xdp dry-run ({} config{})",
            tag.rsplit_once('-')
                .map_or(tag, |(t, _)| t)
                .trim_end_matches("-all"),
            if cpu.is_none() { ", all CPUs" } else { "" }
        ),
        lines_per_sec: lines as f64 / elapsed,
        lines_per_cpu_sec: lines as f64 / cpu_secs,
        peak_rss_kib,
        failures,
        spread: String::new(),
    })
}
