//! `fail2xdp test` with a fail2ban filter (`--fail2ban-filter FILE`,
//! `--option KEY=VALUE`) or a bare failregex, as fail2ban-regex runs them:
//! every failregex tried on each line, multi-line failures joined per
//! connection, one JSON object per failure with `--json`.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context, bail};
use jiff::{Timestamp, tz::TimeZone};
use serde_json::json;

use fail2xdp::{
    fail2ban::{filterconf::FilterReader, ini::Vars, tags},
    filter::f2b::{Correlator, F2bFilter, IdKind},
    source::MAX_LINE,
};

use super::logtest::TestOptions;

/// fail2ban's configuration directory, where `NAME[...]` filters are found.
const FAIL2BAN_DIR: &str = "/etc/fail2ban";

/// What the test runs when it is a fail2ban filter or a bare regex.
pub enum Wanted {
    Filter {
        path: PathBuf,
        options: Vec<(String, String)>,
    },
    Regex(String),
}

/// `None`: the native filter path (`--filter`).
pub fn wanted(a: &TestOptions) -> anyhow::Result<Option<Wanted>> {
    let mut options = Vec::new();
    for o in &a.options {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--option {o:?}: expected KEY=VALUE");
        };
        options.push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(p) = &a.fail2ban_filter {
        return Ok(Some(Wanted::Filter {
            path: p.clone(),
            options,
        }));
    }
    let Some(r) = &a.regex else {
        if !options.is_empty() {
            bail!("--option applies to a fail2ban filter (--fail2ban-filter or NAME[...])");
        }
        return Ok(None);
    };
    // A filter named the way fail2ban-regex takes one, if it is there.
    if let Some((path, mut opts)) = filter_spec(r) {
        opts.extend(options);
        return Ok(Some(Wanted::Filter {
            path,
            options: opts,
        }));
    }
    if !options.is_empty() {
        bail!("--option applies to a fail2ban filter, not to a bare regex");
    }
    Ok(Some(Wanted::Regex(r.clone())))
}

/// `name[opts]` or a path, resolved as fail2ban-regex does.
fn filter_spec(s: &str) -> Option<(PathBuf, Vec<(String, String)>)> {
    let name_end = s.find('[').unwrap_or(s.len());
    let name = &s[..name_end];
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "/_-.".contains(c))
        && (name_end == s.len() || s.ends_with(']'));
    if !plain {
        return None;
    }
    let (name, opts) = tags::extract_options(s).ok()?;
    let tail = &name[name.len().saturating_sub(6)..];
    let tries: Vec<String> = if tail.contains('.') {
        vec![name.clone()]
    } else {
        vec![
            name.clone(),
            format!("{name}.conf"),
            format!("{name}.local"),
        ]
    };
    tries.into_iter().find_map(|t| {
        let p = if t.contains('/') {
            PathBuf::from(&t)
        } else {
            Path::new(FAIL2BAN_DIR).join("filter.d").join(&t)
        };
        p.is_file().then_some((p, opts.clone()))
    })
}

fn compile(w: &Wanted) -> anyhow::Result<(F2bFilter, String)> {
    match w {
        Wanted::Filter { path, options } => {
            let spec = FilterReader::open_file(path, options.clone())
                .and_then(|r| r.resolve(&Vars::new(), "auto"))
                .with_context(|| format!("reading fail2ban filter {}", path.display()))?;
            for warning in &spec.warnings {
                eprintln!("{}: {warning}", path.display());
            }
            let f = F2bFilter::compile(&spec, None)
                .with_context(|| format!("fail2ban filter {}", path.display()))?;
            Ok((f, spec.name))
        }
        Wanted::Regex(r) => Ok((
            F2bFilter::bare(r).context("the regex given")?,
            "regex".to_string(),
        )),
    }
}

pub fn run(a: &TestOptions, w: Wanted, now: Timestamp) -> anyhow::Result<ExitCode> {
    let (filter, name) = compile(&w)?;
    let file =
        File::open(&a.logfile).with_context(|| format!("opening {}", a.logfile.display()))?;
    // A bar on a terminal, unless matched lines stream to the same screen.
    let quiet = !(a.json || a.verbose) || !std::io::IsTerminal::is_terminal(&std::io::stdout());
    let reader = BufReader::with_capacity(1 << 20, super::progress::reader(file, quiet));
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let started = Instant::now();
    let c = scan(
        &filter,
        reader,
        now,
        &TimeZone::system(),
        !a.first_match,
        a.json,
        a.verbose,
        &mut out,
    )
    .with_context(|| format!("reading {}", a.logfile.display()))?;
    out.flush()?;
    drop(out);
    let wall = started.elapsed().as_secs_f64();
    let summary = json!({
        "summary": {
            "filter": name,
            "lines": c.lines, "matched": c.matched, "ignored": c.ignored, "missed": c.missed,
            "not_addresses": c.not_addresses,
            "backtrack_limit_lines": filter.limit_hits(),
            "skipped": { "too_long": c.too_long },
            "per_regex": c.per_regex,
            "seconds": wall,
            "lines_per_second": if wall > 0.0 { (c.lines as f64 / wall).round() } else { 0.0 },
        }
    });
    if a.json {
        eprintln!("{summary}");
    } else {
        println!();
        println!("Log file: {}", a.logfile.display());
        println!("Filter:   {name} (fail2ban)");
        println!();
        println!("Failregex: {} total", c.matched);
        for (i, (src, n)) in filter.failregex_python.iter().zip(&c.per_regex).enumerate() {
            println!("  #{i:<2} {n:>10}  {src}");
        }
        println!();
        println!(
            "Lines: {} lines, {} matched, {} ignored, {} missed, {} too long",
            c.lines, c.matched, c.ignored, c.missed, c.too_long
        );
        if c.not_addresses > 0 {
            println!(
                "       {} failures name a host or id that is not an address (reported, never banned)",
                c.not_addresses
            );
        }
        if filter.limit_hits() > 0 {
            println!(
                "       {} lines hit the backtracking limit (counted as no match)",
                filter.limit_hits()
            );
        }
        println!();
        println!(
            "Time: {wall:.3} s; {:.0} lines/s",
            if wall > 0.0 {
                c.lines as f64 / wall
            } else {
                0.0
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Default)]
struct Counts {
    lines: u64,
    matched: u64,
    ignored: u64,
    missed: u64,
    too_long: u64,
    not_addresses: u64,
    per_regex: Vec<u64>,
}

/// Lines are read as bytes, split on `\n`, a trailing `\r` dropped and
/// invalid UTF-8 replaced (fail2ban decodes the same way).
#[expect(
    clippy::too_many_arguments,
    reason = "the options of one scan, passed once"
)]
fn scan(
    filter: &F2bFilter,
    mut reader: impl BufRead,
    now: Timestamp,
    tz: &TimeZone,
    check_all: bool,
    json: bool,
    verbose: bool,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let mut c = Counts {
        per_regex: vec![0; filter.failregex_count()],
        ..Counts::default()
    };
    let mut corr = Correlator::new(filter, check_all).without_aging();
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
            c.too_long += 1;
            continue;
        }
        let line = String::from_utf8_lossy(raw);
        let o = corr.feed(&line, c.lines, now, tz);
        let found: Vec<_> = o
            .failures
            .into_iter()
            .filter(|f| f.fail.get("nofail").is_none_or(str::is_empty))
            .collect();
        if found.is_empty() {
            if o.ignored {
                c.ignored += 1;
            } else {
                c.missed += 1;
            }
            continue;
        }
        c.matched += 1;
        for f in found {
            if let Some(n) = c.per_regex.get_mut(f.regex) {
                *n += 1;
            }
            if matches!(f.kind, IdKind::Dns | IdKind::Fid)
                || fail2xdp::filter::parse_host(f.id.as_bytes()).is_none()
            {
                c.not_addresses += 1;
            }
            if json {
                // Groups with a value; an address group of the pattern that
                // took no part reads `None`, as fail2ban-regex prints it.
                let mut caps: BTreeMap<String, serde_json::Value> = f
                    .fail
                    .groups()
                    .filter_map(|(k, v)| match v {
                        Some(v) => Some((k.to_string(), v.into())),
                        None if matches!(k, "ip4" | "ip6" | "dns") => {
                            Some((k.to_string(), "None".into()))
                        }
                        None => None,
                    })
                    .collect();
                if let Some(u) = &f.fail.users {
                    caps.insert("users".into(), u.iter().cloned().collect::<Vec<_>>().into());
                }
                if !caps.contains_key("attempts") {
                    let n = f.fail.matches.as_ref().map_or(1, Vec::len);
                    caps.insert("attempts".into(), n.into());
                }
                let time = f.time.or(Some(now)).map(|t| local_time(t, tz));
                let obj = json!({
                    "line": c.lines,
                    "host": f.id,
                    "time": time,
                    "captures": caps,
                });
                writeln!(out, "{obj}")?;
            } else if verbose {
                // As `explain` does: control characters escaped, never sent raw.
                writeln!(
                    out,
                    "{:>8} {:<39} | {}",
                    c.lines,
                    f.id,
                    fail2xdp::state::printable(&line)
                )?;
            }
        }
    }
    Ok(c)
}

/// Local wall time to the second (fail2ban keeps no fractions).
fn local_time(ts: Timestamp, tz: &TimeZone) -> String {
    let dt = ts.to_zoned(tz.clone()).datetime();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}
