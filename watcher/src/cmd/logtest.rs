//! `fail2xdp test`: run one filter over a log file and report what it found,
//! like fail2ban-regex. With `--json`, stdout carries one object per failure
//! (for scripts and the fail2ban corpus check) and the summary goes to
//! stderr, so stdout stays machine-readable.
use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader, BufWriter, IsTerminal, Write},
    net::IpAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use jiff::{Timestamp, tz::TimeZone};
use serde_json::json;

use fail2xdp::{
    filter::{Filter, LineMatch},
    source::MAX_LINE,
    timestamp::TimeParser,
};

/// What `fail2xdp test` runs.
pub struct TestOptions {
    pub logfile: std::path::PathBuf,
    /// A failregex in fail2ban's syntax, or a fail2ban filter spec
    /// (`postfix[mode=aggressive]`, a path), in place of `filter`.
    pub regex: Option<String>,
    /// A built-in filter name, or a filter file.
    pub filter: Option<String>,
    /// A fail2ban filter file.
    pub fail2ban_filter: Option<std::path::PathBuf>,
    /// fail2ban filter options, `KEY=VALUE`.
    pub options: Vec<String>,
    /// fail2ban filters: the first failregex that matches decides.
    pub first_match: bool,
    pub json: bool,
    pub verbose: bool,
    /// The clock for year inference and lines without a time; default now.
    pub now: Option<Timestamp>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    lines: u64,
    matched: u64,
    ignored: u64,
    missed: u64,
    skipped_utf8: u64,
    skipped_long: u64,
    skipped_nul: u64,
    /// Matched lines whose timestamp was not recognised.
    no_time: u64,
    per_regex: Vec<u64>,
    hosts: HashMap<IpAddr, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Summary,
    Verbose,
    Json,
}

pub fn run(a: TestOptions) -> anyhow::Result<ExitCode> {
    let now: Timestamp = a.now.unwrap_or_else(Timestamp::now);
    if let Some(f2b) = super::logtest_f2b::wanted(&a)? {
        return super::logtest_f2b::run(&a, f2b, now);
    }
    let spec = a.filter.as_deref().unwrap_or_default();
    let filter = load_filter(spec)?;
    let file =
        File::open(&a.logfile).with_context(|| format!("opening {}", a.logfile.display()))?;
    let mode = match (a.json, a.verbose) {
        (true, _) => Output::Json,
        (false, true) => Output::Verbose,
        (false, false) => Output::Summary,
    };
    // A bar on a terminal, unless matched lines stream to the same screen.
    let quiet = mode == Output::Summary || !std::io::stdout().is_terminal();
    let reader = BufReader::with_capacity(1 << 20, super::progress::reader(file, quiet));
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());

    let cpu_before = cpu_time();
    let started = Instant::now();
    let c = scan(&filter, reader, now, TimeZone::system(), mode, &mut out)
        .with_context(|| format!("reading {}", a.logfile.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64();
    out.flush()?;
    drop(out);

    let per_sec = |secs: f64| {
        if secs > 0.0 {
            (c.lines as f64 / secs).round()
        } else {
            0.0
        }
    };
    if mode == Output::Json {
        let hosts: serde_json::Map<String, serde_json::Value> = sorted_hosts(&c.hosts)
            .into_iter()
            .map(|(h, n)| (h.to_string(), json!(n)))
            .collect();
        let summary = json!({
            "summary": {
                "filter": filter.name(),
                "lines": c.lines, "matched": c.matched, "ignored": c.ignored, "missed": c.missed,
                "skipped": { "invalid_utf8": c.skipped_utf8, "too_long": c.skipped_long, "nul": c.skipped_nul },
                "without_time": c.no_time,
                "per_regex": c.per_regex,
                "hosts": hosts,
                "seconds": wall, "cpu_seconds": cpu,
                "lines_per_second": per_sec(wall), "lines_per_cpu_second": per_sec(cpu),
            }
        });
        eprintln!("{summary}");
    } else {
        print_summary(&filter, &a.logfile, &c);
        println!();
        println!(
            "Time: {wall:.3} s wall, {cpu:.3} s CPU; {:.0} lines/s ({:.0} lines per CPU second)",
            per_sec(wall),
            per_sec(cpu)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load_filter(spec: &str) -> anyhow::Result<Filter> {
    if let Some(f) = Filter::builtin(spec) {
        return Ok(f);
    }
    let path = Path::new(spec);
    if path.exists() {
        return Filter::from_toml_file(path).with_context(|| format!("loading filter {spec}"));
    }
    bail!(
        "--filter {spec:?}: neither a built-in filter ({}) nor a file",
        Filter::builtin_names().join(", ")
    )
}

/// Runs `filter` over every line of `reader`, writing failures in `mode`.
/// Lines are split on `\n` only and lose a trailing `\r`; overlong, NUL
/// and non-UTF-8 lines are counted and skipped like the sources do.
fn scan(
    filter: &Filter,
    mut reader: impl BufRead,
    now: Timestamp,
    tz: TimeZone,
    mode: Output,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let mut times = TimeParser::with_time_zone(tz.clone());
    let mut c = Counts {
        per_regex: vec![0; filter.failregex_sources().len()],
        ..Counts::default()
    };
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        c.lines += 1;
        let mut raw = &buf[..];
        if let Some(r) = raw.strip_suffix(b"\n") {
            raw = r;
        }
        if let Some(r) = raw.strip_suffix(b"\r") {
            raw = r;
        }
        if raw.len() > MAX_LINE {
            c.skipped_long += 1;
            continue;
        }
        if memchr::memchr(0, raw).is_some() {
            c.skipped_nul += 1;
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            c.skipped_utf8 += 1;
            continue;
        };
        let (time, result) = match times.parse(line, now) {
            Some((ts, off)) => (Some(ts), filter.check_message(&line[off..])),
            None => (None, filter.check(line)),
        };
        match result {
            LineMatch::Failure(hit) => {
                c.matched += 1;
                if time.is_none() {
                    c.no_time += 1;
                }
                if let Some(n) = c.per_regex.get_mut(hit.regex_index) {
                    *n += 1;
                }
                *c.hosts.entry(hit.host).or_default() += 1;
                match mode {
                    Output::Json => {
                        let caps: serde_json::Map<String, serde_json::Value> = hit
                            .captures
                            .into_iter()
                            .map(|(k, v)| (k, v.into()))
                            .collect();
                        let obj = json!({
                            "line": c.lines,
                            "host": hit.host.to_string(),
                            "time": time.map(|t| local_time(t, &tz)),
                            "captures": caps,
                        });
                        writeln!(out, "{obj}")?;
                    }
                    Output::Verbose => {
                        // A log line is attacker-chosen text: no raw escapes to the terminal.
                        writeln!(
                            out,
                            "{:>8} {:<39} | {}",
                            c.lines,
                            hit.host.to_string(),
                            fail2xdp::state::printable(line)
                        )?;
                    }
                    Output::Summary => {}
                }
            }
            LineMatch::Ignored => c.ignored += 1,
            LineMatch::Missed => c.missed += 1,
        }
    }
    Ok(c)
}

/// Local wall time `YYYY-MM-DDTHH:MM:SS[.ffffff]`, as fail2ban-regex shows it.
fn local_time(ts: Timestamp, tz: &TimeZone) -> String {
    let dt = ts.to_zoned(tz.clone()).datetime();
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let micros = dt.subsec_nanosecond() / 1000;
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    s
}

/// Most failures first, then by address.
fn sorted_hosts(hosts: &HashMap<IpAddr, u64>) -> Vec<(IpAddr, u64)> {
    let mut v: Vec<_> = hosts.iter().map(|(h, n)| (*h, *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// User and system CPU time of this process: wall time on a busy machine
/// says little about the cost per line.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct; RUSAGE_SELF is always valid.
    let ru = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn print_summary(filter: &Filter, logfile: &Path, c: &Counts) {
    println!();
    println!("Log file: {}", logfile.display());
    println!("Filter:   {} ({})", filter.name(), filter.description());
    println!();
    println!("Failregex: {} total", c.matched);
    for (i, (src, n)) in filter
        .failregex_sources()
        .iter()
        .zip(&c.per_regex)
        .enumerate()
    {
        println!("  #{i:<2} {n:>10}  {src}");
    }
    println!();
    println!(
        "Lines: {} lines, {} matched, {} ignored, {} missed, {} skipped ({} invalid UTF-8, {} too long, {} with NUL)",
        c.lines,
        c.matched,
        c.ignored,
        c.missed,
        c.skipped_utf8 + c.skipped_long + c.skipped_nul,
        c.skipped_utf8,
        c.skipped_long,
        c.skipped_nul
    );
    if c.no_time > 0 {
        println!(
            "       {} matched lines had no recognised timestamp",
            c.no_time
        );
    }
    let top = sorted_hosts(&c.hosts);
    println!();
    println!("Hosts: {} distinct", top.len());
    for (h, n) in top.iter().take(20) {
        println!("  {n:>10}  {h}");
    }
    if top.len() > 20 {
        println!("  ... {} more", top.len() - 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zurich() -> TimeZone {
        TimeZone::get("Europe/Zurich").unwrap()
    }

    #[test]
    fn json_lines_have_check_py_shape_and_counts_add_up() {
        let mut log = Vec::new();
        log.extend_from_slice(b"Aug 14 10:00:01 mx postfix/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n");
        log.extend_from_slice(
            b"Aug 14 10:00:02 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]\r\n",
        );
        log.extend_from_slice(b"Aug 14 10:00:03 mx postfix/smtpd[1]: warning: unknown[192.0.2.2]: SASL LOGIN authentication failed: Connection lost to authentication server\n");
        log.extend_from_slice(b"Aug 14 10:00:04 mx \xff\xfe invalid\n");
        log.extend_from_slice(b"Aug 14 10:00:05 mx \0 nul\n");
        log.extend_from_slice(&vec![b'a'; MAX_LINE + 1]);
        log.push(b'\n');
        // No trailing newline on the last line: it still counts.
        log.extend_from_slice(b"Dec 25 02:35:54 mx postfix/smtpd[1]: warning: unknown[2001:DB8::7]: SASL PLAIN authentication failed: x, sasl_username=bob");

        let f = Filter::builtin("postfix-sasl").unwrap();
        let now: Timestamp = "2005-08-14T10:00:00Z".parse().unwrap();
        let mut out = Vec::new();
        let c = scan(&f, &log[..], now, zurich(), Output::Json, &mut out).unwrap();
        assert_eq!(
            (
                c.lines,
                c.matched,
                c.ignored,
                c.missed,
                c.skipped_utf8,
                c.skipped_nul,
                c.skipped_long
            ),
            (7, 2, 1, 1, 1, 1, 1)
        );
        let objs: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0]["line"], 1);
        assert_eq!(objs[0]["host"], "192.0.2.1");
        assert_eq!(objs[0]["time"], "2005-08-14T10:00:01");
        assert_eq!(objs[0]["captures"]["mech"], "LOGIN");
        assert_eq!(objs[1]["line"], 7);
        assert_eq!(objs[1]["host"], "2001:db8::7");
        assert_eq!(objs[1]["time"], "2004-12-25T02:35:54");
        assert_eq!(objs[1]["captures"]["user"], "bob");
    }

    /// `test -v` of a built-in filter over `log`: the counts and what it printed.
    fn verbose(filter: &str, log: &[u8]) -> (Counts, String) {
        let f = Filter::builtin(filter).unwrap();
        let mut out = Vec::new();
        let c = scan(
            &f,
            log,
            Timestamp::now(),
            zurich(),
            Output::Verbose,
            &mut out,
        )
        .unwrap();
        (c, String::from_utf8(out).unwrap())
    }

    #[test]
    fn verbose_prints_matched_lines_only() {
        let log = b"Aug 14 10:00:01 mx postfix/smtpd[1]: disconnect from unknown[192.0.2.3] ehlo=1 auth=0/1 commands=1/2\nAug 14 10:00:02 mx postfix/smtpd[1]: connect from unknown[192.0.2.3]\n";
        let (c, text) = verbose("postfix-auth-flood", log);
        assert_eq!(c.matched, 1);
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("192.0.2.3") && text.contains("auth=0/1"));
        assert_eq!(c.hosts.get(&"192.0.2.3".parse().unwrap()), Some(&1));
    }

    /// A user name with an escape sequence in it must not reach the
    /// terminal raw (it once did: `test -v` printed the line as it was).
    #[test]
    fn verbose_escapes_control_characters() {
        let log = b"Aug 14 10:00:01 mx postfix/smtpd[1]: warning: unknown[192.0.2.4]: SASL LOGIN authentication failed: authentication failure, sasl_username=\x1b[2J\x07evil\n";
        let (c, text) = verbose("postfix-sasl", log);
        assert_eq!(c.matched, 1, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("\\u{1b}[2J\\u{7}evil"), "{text}");
    }

    #[test]
    fn local_time_shows_microseconds_only_when_present() {
        let tz = zurich();
        let t: Timestamp = "2026-11-22T04:27:23Z".parse().unwrap();
        assert_eq!(local_time(t, &tz), "2026-11-22T05:27:23");
        let t: Timestamp = "2026-11-22T04:27:23.123456789Z".parse().unwrap();
        assert_eq!(local_time(t, &tz), "2026-11-22T05:27:23.123456");
    }
}
