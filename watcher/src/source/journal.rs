//! The systemd journal, read through a `journalctl -o json --follow` child.
//!
//! A child process rather than libsystemd bindings: no C library to link, and journalctl
//! reads journal files of any systemd version, a live system journal as well as files or
//! directories given with `--file`/`--directory` (how the tests, with no journald, work).
//!
//! Position: a restarted child continues with `--after-cursor` from the last entry read;
//! a restarted agent from the saved [`Position`] (the cursor of the last entry the
//! consumer was done with). Without a cursor the follower starts after the entry that was
//! last when `spawn` ran (found with a synchronous `-n 1`), so an entry written right after
//! `spawn` returns is not lost to journalctl's start-up.
//!
//! Each entry becomes `SYSLOG_IDENTIFIER[PID]: MESSAGE` (as in syslog files, so the same
//! filters apply) with `__REALTIME_TIMESTAMP` as its time. Control characters in a message
//! are escaped like rsyslog does (`#012` for a newline, `#000` for NUL): a message must
//! not be able to smuggle a second, forged line into the filter. A message that is not
//! UTF-8 has those bytes replaced by U+FFFD, and still counts.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::lines::{Piece, Splitter, TooLong};
use super::position::{Ack, Mark, Position, Resume, Saver};
use super::{Counters, Outbox, Shared, SourceError, SourceOptions};

/// How often a reader waiting for journalctl output checks for a stop request.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// Pause before restarting a journalctl that exited on its own.
const RESTART_DELAY: Duration = Duration::from_secs(1);

pub(super) fn start(
    matches: Vec<String>,
    file: Option<PathBuf>,
    opts: SourceOptions,
    out: Outbox,
    shared: Arc<Shared>,
) -> Result<(String, std::thread::JoinHandle<()>), SourceError> {
    for m in &matches {
        if !valid_match(m) {
            return Err(SourceError::BadMatch(m.clone()));
        }
    }
    // journalctl needs an absolute path to follow a file (v252: "Failed to get journal fd").
    let location = match &file {
        None => None,
        Some(p) => Some(std::fs::canonicalize(p).map_err(|_| SourceError::NoJournal(p.clone()))?),
    };
    let name = match &location {
        None => "journal".to_string(),
        Some(p) => format!("journal:{}", p.display()),
    };
    let mut saver = Saver::new(opts.positions.clone());
    let saved = if opts.resume { saver.load(&name) } else { None };
    let cursor = match saved {
        Some(Position::Journal { cursor }) => Some(cursor),
        Some(Position::Files(_)) => {
            log::warn!("{name}: the saved position is one of files; ignoring it");
            None
        }
        None => None,
    };
    let mut r = Reader {
        source: Arc::from(name.as_str()),
        location,
        matches,
        out,
        split: Splitter::default(),
        cursor: None,
        acked: None,
        mark: Mark::new(shared.clone(), Resume::Cursor(None)),
        shared,
        saver,
        opts,
    };
    let first = match cursor {
        Some(c) => Start::After(c),
        None if r.opts.journal_from_start => Start::Oldest,
        None => match r.last_cursor()? {
            Some(c) => Start::After(c),
            None => Start::Oldest,
        },
    };
    if let Start::After(c) = &first {
        // When it came from the journal's end it is saved at the first save, so a stop
        // before any new entry still resumes from here rather than from a later end.
        r.cursor = Some(c.clone());
        r.acked = Some(c.clone());
        r.mark.set(Resume::Cursor(Some(c.clone())));
    }
    let child = r.spawn_child(&first)?;
    let thread = std::thread::Builder::new()
        .name("source-journal".into())
        .spawn(move || r.run(child))
        .map_err(SourceError::Thread)?;
    Ok((name, thread))
}

fn kill_group(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the process group led by our own, not yet reaped, child.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

/// Wait until `r` has data or EOF, at most `timeout`.
fn readable(r: &impl std::os::fd::AsRawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    // Errors (EINTR) count as readable: read() reports or retries them.
    n != 0
}

/// `FIELD=value` with a journal field name, or `+` (OR between groups).
fn valid_match(m: &str) -> bool {
    if m == "+" {
        return true;
    }
    let Some((field, _)) = m.split_once('=') else {
        return false;
    };
    !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !field.as_bytes()[0].is_ascii_digit()
}

#[derive(PartialEq, Eq)]
enum StartKind {
    Cursor,
    Other,
}

enum Start {
    Oldest,
    After(String),
    /// The saved cursor no longer exists (journal vacuumed): resume at its time.
    Since(u64),
}

/// The realtime (µs) a cursor points at, from its `t=` field.
fn cursor_time(cursor: &str) -> Option<u64> {
    cursor
        .split(';')
        .find_map(|kv| kv.strip_prefix("t="))
        .and_then(|t| u64::from_str_radix(t, 16).ok())
}

struct Reader {
    source: Arc<str>,
    location: Option<PathBuf>,
    matches: Vec<String>,
    opts: SourceOptions,
    out: Outbox,
    shared: Arc<Shared>,
    split: Splitter,
    /// Cursor of the last entry read (where a restarted journalctl continues).
    cursor: Option<String>,
    /// `cursor` as last sent along with the lines.
    acked: Option<String>,
    /// The cursor the consumer is done with (what is saved).
    mark: Arc<Mark>,
    saver: Saver,
}

impl Reader {
    fn base_command(&self) -> Command {
        let mut cmd = Command::new(&self.opts.journalctl);
        match &self.location {
            Some(p) if p.is_dir() => {
                cmd.arg("--directory").arg(p);
            }
            Some(p) => {
                cmd.arg("--file").arg(p);
            }
            None => {}
        }
        cmd.args(["--output=json", "--all", "--no-pager", "--quiet"])
            .env("SYSTEMD_COLORS", "0")
            .env_remove("SYSTEMD_PAGER")
            .stdin(Stdio::null());
        cmd
    }

    fn describe(&self) -> String {
        self.opts.journalctl.display().to_string()
    }

    /// Cursor of the newest entry now in the journal (any entry: matches only narrow what
    /// comes after it).
    fn last_cursor(&self) -> Result<Option<String>, SourceError> {
        let out = self
            .base_command()
            .args(["--lines=1"])
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| SourceError::Spawn {
                cmd: self.describe(),
                source,
            })?;
        if !out.status.success() {
            return Err(SourceError::Spawn {
                cmd: self.describe(),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ),
            });
        }
        let last = out.stdout.split(|&b| b == b'\n').rfind(|l| !l.is_empty());
        Ok(last.and_then(|l| {
            serde_json::from_slice::<Entry<'_>>(l)
                .ok()
                .and_then(|e| e.cursor.map(Cow::into_owned))
        }))
    }

    fn spawn_child(&self, start: &Start) -> Result<Child, SourceError> {
        let mut cmd = self.base_command();
        cmd.arg("--follow")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match start {
            Start::Oldest => {
                cmd.arg("--no-tail");
            }
            Start::After(c) => {
                cmd.arg("--no-tail").arg(format!("--after-cursor={c}"));
            }
            Start::Since(us) => {
                cmd.arg("--no-tail")
                    .arg(format!("--since=@{}", us / 1_000_000));
            }
        }
        cmd.args(&self.matches);
        // Its own process group, so a stop reaches a wrapper's children too, and a Ctrl-C
        // meant for the agent does not kill the reader before the agent stops it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|source| SourceError::Spawn {
            cmd: self.describe(),
            source,
        })?;
        if let Ok(mut pid) = self.shared.child_pid.lock() {
            *pid = Some(child.id());
        }
        // A stop requested while the child was being started found no pid to signal.
        if self.shared.stopped() {
            kill_group(child.id(), libc::SIGTERM);
        }
        if let Some(err) = child.stderr.take() {
            let _ = std::thread::Builder::new()
                .name("journalctl-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        log::warn!("journalctl: {line}");
                    }
                });
        }
        Counters::add(&self.shared.stats.files_opened, 1);
        Ok(child)
    }

    fn run(mut self, mut child: Child) {
        let mut start_used = StartKind::Other;
        let mut failures = 0u32;
        loop {
            let got_output = self.pump(&mut child);
            if let Ok(mut pid) = self.shared.child_pid.lock() {
                *pid = None;
                // Not reaped yet, so the group id is still ours.
                kill_group(child.id(), libc::SIGKILL);
            }
            let status = child.wait();
            self.out.flush(&self.shared.stats);
            if self.shared.stopped() || self.out.closed {
                self.save(true);
                return;
            }
            self.save(false);
            log::warn!("journalctl exited ({status:?}), restarting");
            let ok = status.as_ref().is_ok_and(|s| s.success());
            failures = if got_output || ok { 0 } else { failures + 1 };
            let start = match &self.cursor {
                // Failing twice in a row, silently, from a cursor: the cursor is probably
                // gone (journal vacuumed). Go by its time rather than stall.
                Some(c) if failures >= 2 && start_used == StartKind::Cursor => {
                    match cursor_time(c) {
                        Some(t) => Start::Since(t),
                        None => Start::Oldest,
                    }
                }
                Some(c) => Start::After(c.clone()),
                None => Start::Oldest,
            };
            start_used = match start {
                Start::After(_) => StartKind::Cursor,
                _ => StartKind::Other,
            };
            self.split.reset();
            child = loop {
                std::thread::sleep(RESTART_DELAY);
                if self.shared.stopped() {
                    self.save(true);
                    return;
                }
                match self.spawn_child(&start) {
                    Ok(c) => break c,
                    Err(e) => log::warn!("cannot restart journalctl: {e}"),
                }
            };
        }
    }

    /// Read the child's output until it ends. True if it printed anything.
    fn pump(&mut self, child: &mut Child) -> bool {
        let Some(mut stdout) = child.stdout.take() else {
            return false;
        };
        let mut any = false;
        let mut buf = vec![0u8; 256 * 1024];
        // JSON escapes a byte into up to 6 characters, and an entry carries other fields.
        let max_json = self.opts.max_line * 6 + 64 * 1024;
        loop {
            // Wait with a timeout: a stop must not depend on the child closing its output
            // (a wrapper's grandchild can keep the pipe open).
            if !readable(&stdout, STOP_CHECK) {
                if self.shared.stopped() {
                    break;
                }
                // Entries delivered earlier may have been done with since.
                self.save(false);
                continue;
            }
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            any = true;
            let Reader {
                split,
                out,
                shared,
                source,
                cursor,
                opts,
                ..
            } = self;
            split.feed(&buf[..n], max_json, |p| match p {
                Piece::Line(l) => {
                    handle_entry(l, opts.max_line, source, out, &shared.stats, cursor)
                }
                Piece::TooLong => TooLong.count(&shared.stats),
                // feed() yields lines one by one.
                Piece::Block(..) => {}
            });
            // The last chunk of the read carries the cursor of its last entry.
            if self.cursor != self.acked {
                self.acked = self.cursor.clone();
                let ack = Ack {
                    mark: self.mark.clone(),
                    at: Resume::Cursor(self.cursor.clone()),
                };
                self.out.flush_with(ack, &self.source, &self.shared.stats);
            } else {
                self.out.flush(&self.shared.stats);
            }
            self.save(false);
            if self.out.closed {
                break;
            }
        }
        any
    }

    /// Saves the cursor the consumer is done with, if it changed and a save is due (or
    /// `force`).
    fn save(&mut self, force: bool) {
        let mark = &self.mark;
        self.saver
            .maybe_save(&self.source, force, || match mark.get() {
                Resume::Cursor(Some(cursor)) => Some(Position::Journal { cursor }),
                _ => None,
            });
    }
}

/// A journal field value as journalctl's JSON prints it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value<'a> {
    #[serde(borrow)]
    Str(Cow<'a, str>),
    Bytes(Vec<u8>),
    /// Several values for the field, or null (not shown).
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(rename = "MESSAGE", borrow)]
    message: Option<Value<'a>>,
    #[serde(rename = "SYSLOG_IDENTIFIER", borrow)]
    ident: Option<Value<'a>>,
    #[serde(rename = "_COMM", borrow)]
    comm: Option<Value<'a>>,
    #[serde(rename = "SYSLOG_PID", borrow)]
    syslog_pid: Option<Value<'a>>,
    #[serde(rename = "_PID", borrow)]
    pid: Option<Value<'a>>,
    #[serde(rename = "__REALTIME_TIMESTAMP", borrow)]
    realtime: Option<Cow<'a, str>>,
    #[serde(rename = "__CURSOR", borrow)]
    cursor: Option<Cow<'a, str>>,
}

fn text_of<'v>(v: &'v Option<Value<'_>>) -> Option<&'v str> {
    match v {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

/// Escape control characters (except tab) as `#ooo`, as rsyslog writes them to files.
fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if (c < ' ' && c != '\t') || c == '\x7f' {
            o.push_str(&format!("#{:03o}", c as u32));
        } else {
            o.push(c);
        }
    }
    Cow::Owned(o)
}

/// Turn one JSON entry into a line (or count why not).
fn handle_entry(
    json: &[u8],
    max: usize,
    source: &Arc<str>,
    out: &mut Outbox,
    stats: &Counters,
    cursor: &mut Option<String>,
) {
    let Ok(e) = serde_json::from_slice::<Entry<'_>>(json) else {
        // Not an entry as journalctl prints them (it prints bytes that are not UTF-8 as
        // an array of numbers, so this is broken output).
        Counters::add(&stats.unreadable, 1);
        return;
    };
    if let Some(c) = &e.cursor {
        *cursor = Some(c.to_string());
    }
    // The limit is on the message's own bytes, before any replacement.
    let msg: Cow<'_, str> = match &e.message {
        Some(Value::Str(s)) if s.len() > max => return TooLong.count(stats),
        Some(Value::Str(s)) => Cow::Borrowed(s),
        Some(Value::Bytes(b)) if b.len() > max => return TooLong.count(stats),
        Some(Value::Bytes(b)) => {
            let s = String::from_utf8_lossy(b);
            if matches!(s, Cow::Owned(_)) {
                Counters::add(&stats.invalid_utf8, 1);
            }
            s
        }
        // No message, several messages, or one journalctl would not print.
        _ => return,
    };
    if msg.is_empty() {
        return;
    }
    if msg.contains('\0') {
        Counters::add(&stats.nul, 1);
    }
    let msg = escape_controls(&msg);
    let ident = text_of(&e.ident).or_else(|| text_of(&e.comm));
    let pid = text_of(&e.syslog_pid).or_else(|| text_of(&e.pid));
    let text = match (ident, pid) {
        (Some(i), Some(p)) => format!("{}[{}]: {msg}", escape_controls(i), escape_controls(p)),
        (Some(i), None) => format!("{}: {msg}", escape_controls(i)),
        _ => msg.into_owned(),
    };
    let time = e
        .realtime
        .as_deref()
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|us| jiff::Timestamp::from_microsecond(us).ok());
    out.push_entry(source, &text, time, stats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_validated() {
        assert!(valid_match("SYSLOG_IDENTIFIER=postfix/smtpd"));
        assert!(valid_match("_SYSTEMD_UNIT=dovecot.service"));
        assert!(valid_match("+"));
        assert!(!valid_match("--since=yesterday"));
        assert!(!valid_match("syslog_identifier=x"));
        assert!(!valid_match("NOEQUALS"));
    }

    #[test]
    fn cursor_time_is_read() {
        let c = "s=5d;i=1;b=01;m=3e8;t=660d6e6b6df77;x=95";
        assert_eq!(cursor_time(c), Some(0x660d6e6b6df77));
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("a\nb\tc"), "a#012b\tc");
        assert_eq!(escape_controls("a\0b"), "a#000b");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
