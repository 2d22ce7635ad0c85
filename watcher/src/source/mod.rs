//! Log sources: tailed files (globs, rotation, copytruncate) and the systemd journal.
//!
//! # API
//! ```text
//! pub enum SourceSpec { Files { globs: Vec<String>, from_start: bool },
//!                       Journal { matches: Vec<String>, file: Option<PathBuf> } }
//! pub struct SourceOptions { max_line, poll_interval, detached_grace, positions, resume,
//!                            journal_from_start, journalctl }   // Default::default() is sane
//! pub type Deliver = Box<dyn FnMut(Chunk) -> bool + Send>;
//!
//! // Chunks (one reused text buffer per batch of lines, no allocation per line), each
//! // handed to `deliver` on the reader's thread (the agent runs its match stage there):
//! pub async fn spawn(spec, opts, deliver: Deliver) -> Result<SourceHandle, SourceError>;
//!
//! impl SourceHandle {
//!     pub fn name(&self) -> &str;            // "files:<globs>" or "journal[:<file>]"
//!     pub fn stats(&self) -> SourceStats;    // cheap snapshot of atomic counters
//!     pub fn stop(&self);                    // asks the reader to stop (also on Drop)
//!     pub async fn join(self);               // stop and wait for the reader thread
//! }
//! ```
//!
//! When `spawn` returns, the starting position is fixed: for files every matching file has
//! been opened and positioned (where the saved [`Position`] says, else the end, or the start
//! with `from_start`); for the journal the saved cursor or the cursor of its last entry is
//! known. A line or entry written after that is delivered. Each source runs on its own OS
//! thread (blocking file reads and a `journalctl` child); `deliver` may block, which is back
//! pressure instead of growing memory. The reader stops when `stop` is called, the handle
//! is dropped, or `deliver` returns false.
//!
//! Positions ([`SourceOptions::positions`]) are those of the lines the consumer is done
//! with: a chunk counts as done when it is dropped (before a stop was asked for), so a
//! restart neither skips lines that were read but not yet counted nor repeats more than
//! the last half second or so of counted ones.
//!
//! Bad input never stops a source: empty lines are ignored; lines longer than
//! `max_line` (default [`MAX_LINE`]) are skipped and counted, and discarded as they
//! stream in, never buffered whole. A line with bytes that are not UTF-8, or with NUL
//! bytes, is delivered with those bytes replaced (see [`decode_line`]) and counted: an
//! attacker who picks such a user name must not make the failure vanish.

mod file;
mod glob;
mod journal;
mod lines;
#[cfg(test)]
pub(crate) use lines::{Piece, Splitter};
mod outbox;
mod position;

pub use lines::{Repairs, TooLong, decode_line};
pub use outbox::{Chunk, Deliver};
pub use position::{FilePosition, Position, PositionError, Positions};

use outbox::Outbox;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The files `globs` match now (what a replay of them reads: its progress
/// bar's length); a bad glob matches nothing.
pub fn matching_files(globs: &[String]) -> Vec<PathBuf> {
    globs
        .iter()
        .filter_map(|g| glob::Glob::new(g).ok())
        .flat_map(|g| g.expand())
        .collect()
}

/// Default longest accepted line in bytes (without its newline).
pub const MAX_LINE: usize = 16 * 1024;

/// One log line, without its trailing newline (the engine's line-by-line reference takes
/// these; sources deliver [`Chunk`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The file path the line was read from, or `journal` / `journal:<file>`.
    pub source: Arc<str>,
    pub text: String,
    /// The journal's realtime timestamp; `None` for files (the filter parses the text).
    pub time: Option<jiff::Timestamp>,
}

/// Counters of one source since it was spawned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Lines delivered.
    pub lines: u64,
    /// Lines delivered with bytes that were not UTF-8 replaced by U+FFFD.
    pub replaced_invalid_utf8: u64,
    /// Lines delivered with NUL bytes replaced (or, at a line's start, dropped).
    pub replaced_nul: u64,
    /// Lines longer than `max_line`, skipped.
    pub skipped_too_long: u64,
    /// Journal output that was not an entry (not JSON), skipped.
    pub skipped_unreadable: u64,
    /// Files (or journalctl children) opened, including the initial ones.
    pub files_opened: u64,
    /// Rotated-away files drained and closed.
    pub rotations: u64,
    /// Files found shorter than the read offset (copytruncate) and re-read from 0.
    pub truncations: u64,
}

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Files matching any of the globs (`*`, `?`, `[...]` in any path component), now and
    /// later. Without a saved position, starts at the end of the files existing at spawn
    /// time unless `from_start`; files that appear later are always read from their start.
    Files {
        globs: Vec<String>,
        from_start: bool,
    },
    /// Entries of the systemd journal matching all of `matches` (journalctl match syntax,
    /// e.g. `SYSLOG_IDENTIFIER=postfix/smtpd`, `_SYSTEMD_UNIT=dovecot.service`; `+` for OR).
    /// `file`: a journal file or a directory of journal files instead of the system journal.
    Journal {
        matches: Vec<String>,
        file: Option<PathBuf>,
    },
}

/// Tuning knobs; `SourceOptions::default()` is what the agent uses.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Longest accepted line in bytes; longer ones are skipped and counted.
    pub max_line: usize,
    /// How often files are re-checked when no inotify event arrives (network file systems,
    /// missed events, globs whose directory does not exist yet).
    pub poll_interval: Duration,
    /// How long a rotated-away (renamed or deleted) file is still followed after it last
    /// grew, for writers that keep the old file open until they are told to reopen.
    pub detached_grace: Duration,
    /// Where the source's position is kept across restarts: loaded when it starts (unless
    /// `resume` is false), saved about twice a second while it changes and when it stops.
    pub positions: Option<Arc<dyn Positions>>,
    /// Start from the saved position, when there is one. False: start as on a first start
    /// (the position is still saved).
    pub resume: bool,
    /// Journal: without a saved cursor, start at the oldest entry instead of the end.
    pub journal_from_start: bool,
    /// The journalctl binary.
    pub journalctl: PathBuf,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            max_line: MAX_LINE,
            poll_interval: Duration::from_millis(500),
            detached_grace: Duration::from_secs(10),
            positions: None,
            resume: true,
            journal_from_start: false,
            journalctl: PathBuf::from("journalctl"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid glob {glob:?}: {reason}")]
    BadGlob { glob: String, reason: String },
    #[error("no files given for a file source")]
    NoGlobs,
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal file or directory {0} does not exist")]
    NoJournal(PathBuf),
    #[error("invalid journal match {0:?} (expected FIELD=value or +)")]
    BadMatch(String),
    #[error("cannot start {cmd}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the reader thread")]
    Thread(#[source] std::io::Error),
}

/// Start reading `spec`. Each chunk of lines is handed to `deliver` on the reader's
/// thread, in order; the reader stops once `deliver` returns false.
pub async fn spawn(
    spec: SourceSpec,
    opts: SourceOptions,
    deliver: Deliver,
) -> Result<SourceHandle, SourceError> {
    let shared = Arc::new(Shared::default());
    let out = Outbox::new(deliver);
    let (name, thread) = match spec {
        SourceSpec::Files { globs, from_start } => {
            file::start(globs, from_start, opts, out, shared.clone())?
        }
        SourceSpec::Journal { matches, file } => {
            journal::start(matches, file, opts, out, shared.clone())?
        }
    };
    Ok(SourceHandle {
        name,
        shared,
        thread: Some(thread),
    })
}

/// The file reader's way from bytes to chunks, without a file: each of
/// `reads` is split, checked and repaired as one read(2) of a tailed file
/// is, and what it completed handed to `deliver`; an unfinished last line
/// stays unread, as it would until its newline arrives. For the fuzz
/// targets (fuzz/) and tests: arbitrary bytes take the reader's own path.
#[cfg(any(test, feature = "fuzzing"))]
pub fn chunks_of_reads<'a>(
    source: &str,
    reads: impl IntoIterator<Item = &'a [u8]>,
    max_line: usize,
    deliver: Deliver,
) -> SourceStats {
    let stats = Counters::default();
    let source: Arc<str> = Arc::from(source);
    let mut out = Outbox::new(deliver);
    let mut split = lines::Splitter::default();
    for read in reads {
        lines::feed_read(&mut split, read, max_line, &source, &mut out, &stats);
        out.flush(&stats);
    }
    stats.snapshot()
}

/// A running source. Dropping it stops the reader (without waiting for it).
pub struct SourceHandle {
    name: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SourceHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> SourceStats {
        self.shared.stats.snapshot()
    }

    /// Ask the reader to stop; lines already read may still be delivered.
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Stop and wait until the reader thread has exited and saved its position. A
    /// `deliver` blocked on a full channel must be released (its receiver drained or
    /// dropped), or the reader cannot notice the request.
    pub async fn join(mut self) {
        self.shared.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.shared.request_stop();
    }
}

impl std::fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceHandle")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// State shared by a handle and its reader thread.
#[derive(Default)]
struct Shared {
    stats: Counters,
    stop: AtomicBool,
    /// Wakes the reader early (stop request, inotify event, a chunk done with).
    waker: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    /// journalctl child to signal on stop; the reader clears it before reaping the child,
    /// under this lock, so a recycled pid is never signalled.
    child_pid: std::sync::Mutex<Option<u32>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn wake(&self) {
        if let Ok(w) = self.waker.lock()
            && let Some(w) = w.as_ref()
        {
            let _ = w.try_send(());
        }
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake();
        if let Ok(pid) = self.child_pid.lock()
            && let Some(pid) = *pid
        {
            // SAFETY: kill(2) on the process group of our own child (journalctl runs in its
            // own group), which is not reaped while the lock is held.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGTERM);
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    lines: AtomicU64,
    invalid_utf8: AtomicU64,
    nul: AtomicU64,
    too_long: AtomicU64,
    unreadable: AtomicU64,
    files_opened: AtomicU64,
    rotations: AtomicU64,
    truncations: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SourceStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SourceStats {
            lines: g(&self.lines),
            replaced_invalid_utf8: g(&self.invalid_utf8),
            replaced_nul: g(&self.nul),
            skipped_too_long: g(&self.too_long),
            skipped_unreadable: g(&self.unreadable),
            files_opened: g(&self.files_opened),
            rotations: g(&self.rotations),
            truncations: g(&self.truncations),
        }
    }

    fn add(a: &AtomicU64, n: u64) {
        if n > 0 {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }
}
