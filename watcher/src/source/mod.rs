//! Log sources: tailed files (globs, rotation, copytruncate) and the systemd journal.
//!
//! # API
//! ```text
//! pub struct LogLine { pub source: Arc<str>, pub text: String, pub time: Option<jiff::Timestamp> }
//! pub struct SourceStats { pub lines, skipped_invalid_utf8, skipped_too_long, skipped_nul,
//!                          files_opened, rotations, truncations: u64 }
//! pub enum SourceSpec { Files { globs: Vec<String>, from_start: bool },
//!                       Journal { matches: Vec<String>, file: Option<PathBuf> } }
//! pub struct SourceOptions { max_line, poll_interval, detached_grace, journal_cursor_file,
//!                            journal_from_start, journalctl }   // Default::default() is sane
//!
//! // One line per channel message (the interface in the brief):
//! pub async fn spawn(spec, tx: mpsc::Sender<LogLine>) -> Result<SourceHandle, SourceError>;
//! // Batches (one channel operation per read chunk, not per line):
//! pub async fn spawn_batched(spec, opts, tx: mpsc::Sender<Vec<LogLine>>) -> Result<SourceHandle, SourceError>;
//! // Chunks (what the agent uses: one reused text buffer per batch, no allocation per line):
//! pub async fn spawn_chunked(spec, opts, tx: mpsc::Sender<Chunk>) -> Result<SourceHandle, SourceError>;
//! // Chunks handed to a function on the reader's thread (the agent's match stage):
//! pub async fn spawn_chunked_with(spec, opts, deliver: Deliver) -> Result<SourceHandle, SourceError>;
//! pub async fn spawn_with(spec, opts, tx: mpsc::Sender<LogLine>) -> Result<SourceHandle, SourceError>;
//!
//! impl SourceHandle {
//!     pub fn name(&self) -> &str;            // "files:<globs>" or "journal[:<file>]"
//!     pub fn stats(&self) -> SourceStats;    // cheap snapshot of atomic counters
//!     pub fn stop(&self);                    // asks the reader to stop (also on Drop)
//!     pub async fn join(self);               // stop and wait for the reader thread
//! }
//! ```
//!
//! Replaying the 1M-line bench log (tests/source_throughput.rs), reader and consumer: one
//! line per message about 2.3 M lines per CPU-second, `spawn_batched` 4.4 M, and
//! `spawn_chunked` 21 M (the complete lines of a read are checked at once and copied as
//! one block), so the agent uses chunks.
//!
//! When `spawn*` returns, the starting position is fixed: for files every matching file has
//! been opened and positioned (end, or start with `from_start`); for the journal the cursor
//! of its last entry is known (or the saved cursor is used). A line or entry written after
//! that is delivered. Each source runs on its own OS thread (blocking file reads and a
//! `journalctl` child) and sends with `blocking_send`, so a slow consumer applies back
//! pressure instead of growing memory. The reader stops when `stop` is called, the handle is
//! dropped, or the receiver is dropped.
//!
//! Bad input never stops a source: empty lines are ignored; lines longer than
//! `max_line` (default [`MAX_LINE`]), lines containing NUL and lines that are not UTF-8 are
//! skipped and counted in [`SourceStats`]. An over-long line is discarded as it streams in,
//! never buffered whole.

mod file;
mod glob;
mod journal;
mod lines;
#[cfg(test)]
pub(crate) use lines::{Piece, Splitter};
mod outbox;

pub use outbox::{Chunk, Deliver};
use outbox::{Outbox, Sink};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// Default longest accepted line in bytes (without its newline).
pub const MAX_LINE: usize = 16 * 1024;

/// One log line as read from a source, without its trailing newline.
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
    /// Lines delivered to the channel.
    pub lines: u64,
    pub skipped_invalid_utf8: u64,
    pub skipped_too_long: u64,
    pub skipped_nul: u64,
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
    /// later. Starts at the end of the files existing at spawn time unless `from_start`;
    /// files that appear later are always read from their start.
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
    /// Journal: where the cursor of the last delivered entry is kept, so a restart
    /// continues after it instead of re-reading or skipping entries.
    pub journal_cursor_file: Option<PathBuf>,
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
            journal_cursor_file: None,
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
    #[error("cannot read cursor file {path}")]
    Cursor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Start reading `spec` with default options, one line per channel message.
pub async fn spawn(
    spec: SourceSpec,
    tx: mpsc::Sender<LogLine>,
) -> Result<SourceHandle, SourceError> {
    spawn_with(spec, SourceOptions::default(), tx).await
}

/// Like [`spawn`] with explicit options.
pub async fn spawn_with(
    spec: SourceSpec,
    opts: SourceOptions,
    tx: mpsc::Sender<LogLine>,
) -> Result<SourceHandle, SourceError> {
    start(spec, opts, Sink::Line(tx))
}

/// Like [`spawn_with`], but lines come in batches (in order, never empty), which costs one
/// channel operation per read chunk instead of one per line.
pub async fn spawn_batched(
    spec: SourceSpec,
    opts: SourceOptions,
    tx: mpsc::Sender<Vec<LogLine>>,
) -> Result<SourceHandle, SourceError> {
    start(spec, opts, Sink::Batch(tx))
}

/// Like [`spawn_batched`], but a batch is one text buffer holding its lines
/// (see [`Chunk`]): no allocation per line, and the buffers are reused.
pub async fn spawn_chunked(
    spec: SourceSpec,
    opts: SourceOptions,
    tx: mpsc::Sender<Chunk>,
) -> Result<SourceHandle, SourceError> {
    spawn_chunked_with(spec, opts, Box::new(move |c| tx.blocking_send(c).is_ok())).await
}

/// Like [`spawn_chunked`], with each chunk handed to `deliver` on the
/// reader's thread: a next step that runs there works on the chunk while it
/// is still in that core's cache.
pub async fn spawn_chunked_with(
    spec: SourceSpec,
    opts: SourceOptions,
    deliver: Deliver,
) -> Result<SourceHandle, SourceError> {
    start(spec, opts, Sink::Chunk(deliver))
}

fn start(spec: SourceSpec, opts: SourceOptions, sink: Sink) -> Result<SourceHandle, SourceError> {
    let shared = Arc::new(Shared::default());
    let (name, thread) = match spec {
        SourceSpec::Files { globs, from_start } => {
            file::start(globs, from_start, opts, sink, shared.clone())?
        }
        SourceSpec::Journal { matches, file } => {
            journal::start(matches, file, opts, sink, shared.clone())?
        }
    };
    Ok(SourceHandle {
        name,
        shared,
        thread: Some(thread),
    })
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

    /// Ask the reader to stop; lines already read may still be sent.
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// Stop and wait until the reader thread has exited (and, for the journal, the cursor
    /// is saved). The receiver must keep draining or be dropped, or a reader blocked on a
    /// full channel cannot notice the request.
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
    /// Wakes the reader early (stop request, inotify event).
    waker: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    /// journalctl child to signal on stop; the reader clears it before reaping the child,
    /// under this lock, so a recycled pid is never signalled.
    child_pid: std::sync::Mutex<Option<u32>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(w) = self.waker.lock()
            && let Some(w) = w.as_ref()
        {
            let _ = w.try_send(());
        }
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
    too_long: AtomicU64,
    nul: AtomicU64,
    files_opened: AtomicU64,
    rotations: AtomicU64,
    truncations: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SourceStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SourceStats {
            lines: g(&self.lines),
            skipped_invalid_utf8: g(&self.invalid_utf8),
            skipped_too_long: g(&self.too_long),
            skipped_nul: g(&self.nul),
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
