//! No failure goes uncounted (issue 15): a real agent on the receiving veth of a
//! namespace pair, a real log file appended by the test, real packets from the
//! addresses in the log. Each test fails where a failure used to vanish:
//! - lines written while the agent was down (`kill -9`, also across a rotation) were
//!   never read, because it restarted at the end of the files;
//! - a line with bytes that are not UTF-8 or a NUL (the attacker picks the SASL user
//!   name) was dropped whole;
//! - a spray of single failures from other addresses evicted an offender's count.
//!
//! Run as root: `cargo test -p fail2xdp-tests --test no_failure_missed` (after
//! `cargo build -p fail2xdp`). Attackers are 203.0.113.0/24, innocent and legitimate
//! clients 198.51.100.0/24, sprays 2001:db8::/32 (log lines only, no packets).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use fail2xdp_tests::watch::{self, N, Watch, append_to, pid, sasl_fail_as, wait_for};

const SMTP: u16 = 25;
/// Longer than positions take to be saved (at most every 500 ms while they change).
const SAVED: Duration = Duration::from_millis(1500);

/// An agent running a `sasl` jail over a log file in a temp dir: `top` goes
/// before the `[jails.sasl]` table, `jail` into it, `args` to `run`.
fn start(top: &str, jail: &str, args: &[&str]) -> Result<Watch> {
    let dir = tempfile::Builder::new().prefix("f2x-nomiss-").tempdir()?;
    let log = dir.path().join("mail.log");
    fs::write(&log, "")?;
    let source = format!("files = [\"{}\"]", log.display());
    start_in(dir, log, &source, top, jail, args)
}

/// The `sasl` jail reads `source` (a `files = ` or `journal = ` line).
fn start_in(
    dir: tempfile::TempDir,
    log: PathBuf,
    source: &str,
    top: &str,
    jail: &str,
    args: &[&str],
) -> Result<Watch> {
    let config = format!(
        "{top}\n[jails.sasl]\nfilter = \"postfix-sasl\"\n{source}\nfindtime = \"10m\"\n\
         bantime = \"1h\"\nports = \"all\"\n{jail}\n"
    );
    Watch::start_in(dir, log, &config, args)
}

fn sasl_fail(ip: &str) -> Vec<u8> {
    sasl_fail_as(ip, b"admin", Duration::ZERO)
}

fn connect(ip: &str) -> Vec<u8> {
    watch::connect(ip).into_bytes()
}

#[test]
fn failures_written_while_the_agent_was_killed_still_ban() -> Result<()> {
    let mut w = start("", "maxretry = 3", &[])?;
    let attacker = "203.0.113.60";
    let legit = "198.51.100.60";
    // Counted before the crash: must not be counted again after it.
    w.feed(&[connect(legit), sasl_fail(legit), connect(legit)])?;
    std::thread::sleep(SAVED);
    w.kill9()?;

    // The agent is down for twenty minutes, as far as the log can tell.
    let ago = Duration::from_secs(20 * 60);
    let down: Vec<Vec<u8>> = (0..3)
        .map(|_| sasl_fail_as(attacker, b"admin", ago))
        .collect();
    w.append(&down)?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        N,
        "dropped before the restart"
    );

    w.restart()?;
    let left = w
        .wait_banned("203.0.113.60/32")?
        .context("the ban is not permanent")?;
    // Counted at their own time: the ban started twenty minutes ago.
    assert!(
        (2300..=2500).contains(&left),
        "{left} s left of a 1 h ban that started 20 min ago"
    );
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        0,
        "the attacker still gets through"
    );
    assert_eq!(
        w.delivered(legit, SMTP)?,
        N,
        "the legitimate client was dropped"
    );
    // The new run read exactly what it had not read: 3 failures, not 4.
    let j = w.jail()?;
    assert_eq!(
        (j["failures"].as_u64(), j["lines"].as_u64()),
        (Some(3), Some(3)),
        "{j}"
    );
    assert!(w.ban_of("198.51.100.60/32")?.is_none());
    Ok(())
}

/// `run --from-end` keeps the old behaviour for those who want it: what was written
/// while the agent was down is not read.
#[test]
fn from_end_skips_what_was_written_while_the_agent_was_down() -> Result<()> {
    let mut w = start("", "maxretry = 3", &["--from-end"])?;
    w.feed(&[connect("198.51.100.66")])?;
    std::thread::sleep(SAVED);
    w.kill9()?;
    let attacker = "203.0.113.66";
    w.append(&[
        sasl_fail(attacker),
        sasl_fail(attacker),
        sasl_fail(attacker),
    ])?;
    w.restart()?;
    w.feed(&[connect("198.51.100.66")])?;
    assert_eq!((w.counter("lines")?, w.counter("failures")?), (1, 0));
    assert!(w.ban_of("203.0.113.66/32")?.is_none());
    // It cannot be combined with --replay, which reads from the start.
    let out = w
        .lab
        .agent
        .cli_output(&["run", "--iface", "lo", "--from-end", "--replay"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--from-end") && err.contains("--replay"),
        "{err}"
    );
    Ok(())
}

#[test]
fn failures_written_across_a_rotation_while_the_agent_was_killed_still_ban() -> Result<()> {
    let mut w = start("", "maxretry = 3", &[])?;
    let attacker = "203.0.113.61";
    w.feed(&[connect("198.51.100.61")])?;
    std::thread::sleep(SAVED);
    w.kill9()?;

    // While down: two failures, logrotate renames the file, the third goes to the new one.
    w.append(&[sasl_fail(attacker), sasl_fail(attacker)])?;
    fs::rename(&w.log, w.log.with_extension("log.1"))?;
    append_to(&w.log, &[sasl_fail(attacker)])?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        N,
        "dropped before the restart"
    );

    w.restart()?;
    w.wait_banned("203.0.113.61/32")?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        0,
        "the attacker still gets through"
    );
    assert_eq!(w.counter("failures")?, 3);

    // And the agent follows the new file from here on.
    let next = "203.0.113.62";
    w.append(&[sasl_fail(next), sasl_fail(next), sasl_fail(next)])?;
    w.wait_banned("203.0.113.62/32")?;
    assert_eq!(w.delivered(next, SMTP)?, 0);
    Ok(())
}

#[test]
fn a_user_name_with_undecodable_bytes_still_counts_and_frames_nobody() -> Result<()> {
    let w = start("", "maxretry = 3", &[])?;
    let attacker = "203.0.113.63";
    let innocent = "198.51.100.63";
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        N,
        "dropped before any failure"
    );
    // Each user name tries to make the line unreadable and to name the innocent host.
    let users: [&[u8]; 3] = [
        b"\xff\xfeadmin",
        b"root\0]: unknown[198.51.100.63]: SASL LOGIN authentication failed: x",
        b"\xc1\x9d: unknown[198.51.100.63]\xc0\x8a\0",
    ];
    let lines: Vec<Vec<u8>> = users
        .iter()
        .map(|u| sasl_fail_as(attacker, u, Duration::ZERO))
        .collect();
    w.feed(&lines)?;
    w.wait_banned("203.0.113.63/32")?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        0,
        "the attacker still gets through"
    );
    assert_eq!(
        w.delivered(innocent, SMTP)?,
        N,
        "the innocent host was dropped"
    );
    assert!(
        w.ban_of("198.51.100.63/32")?.is_none(),
        "the innocent host was banned"
    );
    assert_eq!(w.counter("failures")?, 3);
    // The repairs are counted in status.
    let s = w.agent_status()?;
    let src = &s["sources"][0];
    assert_eq!(src["replaced_invalid_utf8"], 2, "{src}");
    assert_eq!(src["replaced_nul"], 2, "{src}");
    assert_eq!(src["lines"], 3, "{src}");
    Ok(())
}

#[test]
fn a_spray_of_single_failures_does_not_save_an_offender() -> Result<()> {
    let w = start("max_hosts = 50000", "maxretry = 3", &[])?;
    let attacker = "203.0.113.64";
    w.feed(&[sasl_fail(attacker), sasl_fail(attacker)])?;
    // 50,000 other sources, one failure each: as many as the table holds.
    let spray: Vec<Vec<u8>> = (0..50_000u32)
        .map(|i| sasl_fail(&format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)))
        .collect();
    w.feed(&spray)?;
    assert!(w.counter("evictions")? >= 1, "the spray evicted nothing");
    assert_eq!(w.delivered(attacker, SMTP)?, N, "dropped before maxretry");
    w.append(&[sasl_fail(attacker)])?;
    w.wait_banned("203.0.113.64/32")?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        0,
        "the attacker still gets through"
    );
    assert_eq!(w.counter("total_bans")?, 1);
    Ok(())
}

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Appends entries (postfix/smtpd, stamped now) to a journal file, as journald would:
/// systemd-journal-remote writes real journal files.
fn journal_append(file: &Path, messages: &[String]) -> Result<()> {
    let mut export = String::new();
    for m in messages {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             SYSLOG_IDENTIFIER=postfix/smtpd\n_PID={}\nMESSAGE={m}\n\n",
            now.as_micros(),
            now.as_micros(),
            pid()
        ));
    }
    let mut child = std::process::Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {JOURNAL_REMOTE}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(export.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        bail!("systemd-journal-remote failed: {st}");
    }
    Ok(())
}

/// The journal cursor lives in the state store now (it had a file of its own): a
/// `kill -9` still loses no entry.
#[test]
fn journal_entries_written_while_the_agent_was_killed_still_ban() -> Result<()> {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: apt-get install systemd-journal-remote"
    );
    let dir = tempfile::Builder::new().prefix("f2x-nomiss-").tempdir()?;
    let journal = dir.path().join("remote.journal");
    let msg = |ip: &str| {
        format!("warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure")
    };
    // The file must exist before the agent follows it.
    journal_append(
        &journal,
        &["connect from mail.example.org[198.51.100.65]".into()],
    )?;
    let source = format!(
        "journal = [\"SYSLOG_IDENTIFIER=postfix/smtpd\"]\njournal_file = \"{}\"",
        journal.display()
    );
    let mut w = start_in(dir, journal.clone(), &source, "", "maxretry = 3", &[])?;
    let before = w.counter("lines")?;
    journal_append(
        &journal,
        &["disconnect from mail.example.org[198.51.100.65]".into()],
    )?;
    wait_for("the entry to be read", Duration::from_secs(10), || {
        Ok(w.counter("lines")? > before)
    })
    .map_err(|e| w.with_log(e))?;
    std::thread::sleep(SAVED);
    w.kill9()?;

    let attacker = "203.0.113.65";
    journal_append(&journal, &[msg(attacker), msg(attacker), msg(attacker)])?;
    w.restart()?;
    w.wait_banned("203.0.113.65/32")?;
    assert_eq!(
        w.delivered(attacker, SMTP)?,
        0,
        "the attacker still gets through"
    );
    // Only the entries written while down were read.
    assert_eq!(w.counter("lines")?, 3);
    Ok(())
}

/// A stamp without a year, `ahead` of now (negative: before now), as the
/// mail server writes it.
fn stamp_ahead(ahead: jiff::SignedDuration) -> String {
    (jiff::Timestamp::now() + ahead)
        .to_zoned(jiff::tz::TimeZone::system())
        .strftime("%b %e %H:%M:%S")
        .to_string()
}

/// The year followed the previous line: a line stamped ten days ahead
/// (last year's, then) followed by lines stamped now dated those to last
/// year too, so fresh failures counted as stale and banned nobody. Each
/// line's year is now the one nearest the clock.
#[test]
fn fresh_failures_after_a_line_of_last_year_still_ban() -> Result<()> {
    let w = start("", "maxretry = 3", &[])?;
    let (old, fresh) = ("203.0.113.90", "203.0.113.91");
    assert_eq!(w.delivered(fresh, SMTP)?, N);
    let msg = |ip: &str| {
        format!(
            " mail postfix/smtpd[{}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure\n",
            pid()
        )
    };
    let mut lines = vec![format!(
        "{}{}",
        stamp_ahead(jiff::SignedDuration::from_hours(24 * 10)),
        msg(old)
    )];
    for _ in 0..3 {
        lines.push(format!(
            "{}{}",
            stamp_ahead(jiff::SignedDuration::ZERO),
            msg(fresh)
        ));
    }
    w.append(&lines)?;
    w.wait_banned(&format!("{fresh}/32"))?;
    assert_eq!(w.delivered(fresh, SMTP)?, 0, "the fresh offender passes");
    assert!(
        w.ban_of(&format!("{old}/32"))?.is_none(),
        "last year's line banned"
    );
    Ok(())
}

/// An IPv6 offender in the host's own /64 (the receiver is 2001:db8::2)
/// was never banned: its jail's /64 ban would cover the host, so it was
/// refused at every failure. It is banned at the longest prefix that spares
/// the host's addresses, and `explain` says it was narrowed and from what.
#[test]
fn a_neighbour_in_the_hosts_own_64_is_banned_narrower() -> Result<()> {
    let w = start("", "maxretry = 3", &[])?;
    let (attacker, same_slice, other) = ("2001:db8::77", "2001:db8::78", "2001:db8::5");
    // Probe the clean sources first: a ban of an on-link source also drops
    // its neighbour discovery.
    assert_eq!(w.delivered(other, SMTP)?, N);
    assert_eq!(w.delivered(attacker, SMTP)?, N);
    w.append(&[
        sasl_fail(attacker),
        sasl_fail(attacker),
        sasl_fail(attacker),
    ])?;
    // ::77 and the host's ::2 first differ in the seventh bit from the end.
    w.wait_banned("2001:db8::40/122")?;
    assert_eq!(w.delivered(attacker, SMTP)?, 0, "the neighbour passes");
    assert_eq!(w.delivered(same_slice, SMTP)?, 0, "its /122 passes");
    assert_eq!(w.delivered(other, SMTP)?, N, "the rest of the /64 dropped");
    let ex: serde_json::Value =
        serde_json::from_str(&w.lab.agent.cli(&["explain", attacker, "--json"])?)?;
    assert_eq!(
        ex["bans"][0]["narrowed_from"].as_str(),
        Some("2001:db8::/64"),
        "{ex}"
    );
    Ok(())
}
