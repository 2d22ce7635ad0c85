//! Following log files: globs, rename rotation, copytruncate, partial lines.
//!
//! Not linemux: it reads with `BufReader::lines()`, which buffers a line of any length
//! whole and turns invalid UTF-8 into a stream error, it has no globs and no copytruncate
//! handling. This tailer uses inotify (the `notify` crate) only as a wake-up and re-checks
//! every file with `fstat` each round plus on a timer, so a missed event (network file
//! systems, a directory created later) only delays lines, never loses them.
//!
//! Files are tracked by (device, inode), not by name:
//! - rename rotation: the old inode keeps its descriptor and is drained to EOF before the
//!   file now carrying the name; it is closed once it stopped growing for `detached_grace`
//!   (writers keep appending to it until they reopen their log).
//! - copytruncate: a file shorter than our offset was truncated and is re-read from 0.
//!   When the glob also matches the copy (`mail.log*`), the copy starts with the same bytes
//!   as the file we followed (its fingerprint): it is held unread until the original is seen
//!   truncated, then read from where the original had got to, so the lines written just
//!   before the truncation are neither lost nor read twice. A copy whose original is never
//!   truncated (a backup made with cp) is skipped to its end.
//! - files that appear after the start are read from their beginning (once their first
//!   bytes show they are not a copy still being written).
//!
//! Reads use `pread` into a 256 KiB buffer (a chunk that stays in a core's L2 cache while
//! the match stage and the jails go over it), lines are split with memchr and sent in batches.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::glob::Glob;
use super::lines::{Piece, Splitter, check};
use super::{Counters, Outbox, Shared, Sink, SourceError, SourceOptions};

const READ_BUF: usize = 256 << 10;
/// Bytes from the start of a file that identify it when a copy of it shows up.
const FP_LEN: usize = 128;
/// Shortest fingerprint trusted to recognise a copy.
const FP_MIN: usize = 24;
/// How long the fingerprint of a truncated file is remembered, waiting for its copy, and
/// how long a copy waits for its original to be truncated.
const RETIRED_KEEP: Duration = Duration::from_secs(120);
/// How long a new file whose first bytes could still become a copy's is left unread.
const UNDECIDED_MAX: Duration = Duration::from_secs(2);
/// Compressed rotations are never text; following them would only count garbage.
const COMPRESSED: &[&str] = &[".gz", ".xz", ".bz2", ".zst", ".lz4", ".lzma", ".zip", ".Z"];

pub(super) fn start(
    globs: Vec<String>,
    from_start: bool,
    opts: SourceOptions,
    sink: Sink,
    shared: Arc<Shared>,
) -> Result<(String, std::thread::JoinHandle<()>), SourceError> {
    if globs.is_empty() {
        return Err(SourceError::NoGlobs);
    }
    let globs = globs
        .iter()
        .map(|g| Glob::new(g))
        .collect::<Result<Vec<_>, _>>()?;
    let name = format!(
        "files:{}",
        globs.iter().map(Glob::text).collect::<Vec<_>>().join(",")
    );
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
    if let Ok(mut w) = shared.waker.lock() {
        *w = Some(wake_tx.clone());
    }
    let rescan = Arc::new(AtomicBool::new(false));
    let mut t = Tailer {
        watch: Watch::new(wake_tx, rescan.clone()),
        rescan,
        globs,
        opts,
        shared,
        out: Outbox::new(sink),
        files: Vec::new(),
        retired: Vec::new(),
        buf: vec![0; READ_BUF],
        seq: 0,
        unreadable: HashSet::new(),
    };
    t.watch.ensure(&t.globs);
    t.scan(Some(from_start));
    if t.files.is_empty() {
        log::warn!("{name}: no readable file matches yet; waiting for one to appear");
    }
    let thread = std::thread::Builder::new()
        .name("source-files".into())
        .spawn(move || t.run(wake_rx))
        .map_err(SourceError::Thread)?;
    Ok((name, thread))
}

/// inotify watches on the directories globs can match in; events only wake the reader.
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: HashSet<PathBuf>,
}

impl Watch {
    fn new(wake: SyncSender<()>, rescan: Arc<AtomicBool>) -> Self {
        let wake = Mutex::new(wake);
        let handler = move |res: notify::Result<notify::Event>| {
            use notify::EventKind;
            if let Ok(ev) = &res {
                match ev.kind {
                    EventKind::Access(_) => return,
                    EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(notify::event::ModifyKind::Name(_)) => {
                        rescan.store(true, Ordering::Relaxed);
                    }
                    _ => {}
                }
            } else {
                // Overflow or error: names may have changed unseen.
                rescan.store(true, Ordering::Relaxed);
            }
            if let Ok(w) = wake.lock() {
                let _ = w.try_send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!("inotify unavailable, polling log files only: {e}");
                None
            }
        };
        Self {
            watcher,
            dirs: HashSet::new(),
        }
    }

    /// Watch every glob directory not watched yet (they may appear after the start).
    fn ensure(&mut self, globs: &[Glob]) {
        use notify::Watcher;
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for g in globs {
            let dir = g.watch_dir();
            if self.dirs.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir);
                }
                Err(e) => log::debug!("cannot watch {}: {e}", dir.display()),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    /// Appeared after the start; not read until we know whether it is a copy of a file we
    /// follow (see the module comment).
    Undecided {
        since: Instant,
    },
}

struct Tracked {
    file: File,
    id: (u64, u64),
    source: Arc<str>,
    offset: u64,
    split: Splitter,
    phase: Phase,
    /// Currently matched by a glob under some name.
    attached: bool,
    last_growth: Instant,
    mtime_ns: i128,
    len: u64,
    /// Discovery order, to break mtime ties (older first).
    seq: u64,
    fp: Vec<u8>,
}

struct Tailer {
    watch: Watch,
    rescan: Arc<AtomicBool>,
    globs: Vec<Glob>,
    opts: SourceOptions,
    shared: Arc<Shared>,
    out: Outbox,
    files: Vec<Tracked>,
    /// (fingerprint, offset, when) of files found truncated, for their copies.
    retired: Vec<(Vec<u8>, u64, Instant)>,
    buf: Vec<u8>,
    seq: u64,
    /// Paths that could not be opened, so each is reported once, not every poll.
    unreadable: HashSet<PathBuf>,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

fn fingerprint(f: &File, len: u64) -> Vec<u8> {
    let n = len.min(FP_LEN as u64) as usize;
    let mut fp = vec![0; n];
    match f.read_exact_at(&mut fp, 0) {
        Ok(()) => fp,
        Err(_) => Vec::new(),
    }
}

/// `fp` (a file's first bytes) is a copy of the file identified by `orig`.
fn is_copy(fp: &[u8], orig: &[u8]) -> bool {
    orig.len() >= FP_MIN && fp.starts_with(orig)
}

/// `fp` could still turn into a copy of `orig` as more bytes are written.
fn may_become_copy(fp: &[u8], orig: &[u8]) -> bool {
    orig.len() >= FP_MIN && fp.len() < orig.len() && orig.starts_with(fp)
}

impl Tailer {
    fn run(mut self, wake: Receiver<()>) {
        let mut last_scan = Instant::now();
        while !self.shared.stopped() && !self.out.closed {
            if self.rescan.swap(false, Ordering::Relaxed)
                || last_scan.elapsed() >= self.opts.poll_interval
            {
                self.watch.ensure(&self.globs);
                self.scan(None);
                last_scan = Instant::now();
            }
            self.read_round();
            if self.shared.stopped() || self.out.closed {
                break;
            }
            match wake.recv_timeout(self.opts.poll_interval) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(self.opts.poll_interval),
            }
        }
        self.out.flush(&self.shared.stats);
    }

    /// Match the globs against the file system. `initial` is `Some(from_start)` for the scan
    /// done before `spawn` returns.
    fn scan(&mut self, initial: Option<bool>) {
        let mut paths: Vec<PathBuf> = self.globs.iter().flat_map(Glob::expand).collect();
        paths.retain(|p| {
            let s = p.to_string_lossy();
            !COMPRESSED.iter().any(|ext| s.ends_with(ext))
        });
        paths.sort();
        paths.dedup();
        for t in &mut self.files {
            t.attached = false;
        }
        let mut fresh = Vec::new();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = file_id(&meta);
            if let Some(t) = self.files.iter_mut().find(|t| t.id == id) {
                t.attached = true;
                if *t.source != *path.to_string_lossy() {
                    t.source = Arc::from(path.to_string_lossy().as_ref());
                }
                continue;
            }
            if fresh.iter().any(|t: &Tracked| t.id == id) {
                continue;
            }
            match self.open(&path, initial) {
                Ok(Some(t)) => {
                    self.unreadable.remove(&path);
                    fresh.push(t);
                }
                Ok(None) => {}
                Err(e) => {
                    if self.unreadable.insert(path.clone()) {
                        log::warn!("cannot open log file {}: {e}", path.display());
                    }
                }
            }
        }
        self.files.extend(fresh);
    }

    fn open(&mut self, path: &Path, initial: Option<bool>) -> std::io::Result<Option<Tracked>> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let id = file_id(&meta);
        if self.files.iter().any(|t| t.id == id) || !meta.is_file() {
            return Ok(None);
        }
        let len = meta.len();
        let mut split = Splitter::default();
        let (offset, phase) = match initial {
            Some(false) => {
                let mut last = [0u8];
                if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
                    split.start_mid_line();
                }
                (len, Phase::Reading)
            }
            Some(true) => (0, Phase::Reading),
            None => (
                0,
                Phase::Undecided {
                    since: Instant::now(),
                },
            ),
        };
        self.seq += 1;
        Counters::add(&self.shared.stats.files_opened, 1);
        log::debug!("following {} ({phase:?} at {offset})", path.display());
        Ok(Some(Tracked {
            fp: fingerprint(&file, len),
            file,
            id,
            source: Arc::from(path.to_string_lossy().as_ref()),
            offset,
            split,
            phase,
            attached: true,
            last_growth: Instant::now(),
            mtime_ns: mtime_ns(&meta),
            len,
            seq: self.seq,
        }))
    }

    /// Decide where an undecided file starts, or leave it undecided for now.
    fn resolve(&mut self, i: usize) {
        let Phase::Undecided { since } = self.files[i].phase else {
            return;
        };
        let (fp, len) = {
            let t = &self.files[i];
            (fingerprint(&t.file, t.len), t.len)
        };
        self.retired.retain(|r| r.2.elapsed() < RETIRED_KEEP);
        let start = if let Some(k) = self.retired.iter().position(|r| is_copy(&fp, &r.0)) {
            // The copy of a file already seen truncated: the rest of what it held.
            let (_, off, _) = self.retired.remove(k);
            Some(off.min(len))
        } else if self
            .files
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.phase == Phase::Reading && is_copy(&fp, &o.fp))
        {
            // A copy of a live file: wait for the truncation; a mere backup is skipped.
            (since.elapsed() >= RETIRED_KEEP).then_some(len)
        } else if len == 0
            || self
                .files
                .iter()
                .any(|o| o.phase == Phase::Reading && may_become_copy(&fp, &o.fp))
            || self.retired.iter().any(|r| may_become_copy(&fp, &r.0))
        {
            (since.elapsed() >= UNDECIDED_MAX).then_some(0)
        } else {
            Some(0)
        };
        if let Some(off) = start {
            let t = &mut self.files[i];
            log::debug!("reading {} from offset {off}", t.source);
            t.offset = off;
            t.phase = Phase::Reading;
            t.fp = fp;
        }
    }

    /// Read every file to EOF: rotated-away files first, then by age, so lines leave in the
    /// order they were written across a rotation.
    fn read_round(&mut self) {
        let stats = &self.shared.stats;
        // Truncations first, so a copy made just before one can be resolved this round.
        for t in &mut self.files {
            let Ok(m) = t.file.metadata() else { continue };
            t.mtime_ns = mtime_ns(&m);
            t.len = m.len();
            // Shorter than what we read: truncated. Not shorter but starting with other
            // bytes: truncated and rewritten past our offset before we looked.
            let rewritten = || {
                t.fp.len() >= FP_MIN && t.len >= t.fp.len() as u64 && {
                    let now = fingerprint(&t.file, t.fp.len() as u64);
                    now.len() == t.fp.len() && now != t.fp
                }
            };
            if t.phase == Phase::Reading && (t.len < t.offset || rewritten()) {
                log::info!("{} was truncated, reading it from the start", t.source);
                Counters::add(&stats.truncations, 1);
                self.retired
                    .push((std::mem::take(&mut t.fp), t.offset, Instant::now()));
                t.offset = 0;
                t.split.reset();
            }
        }
        for i in 0..self.files.len() {
            self.resolve(i);
        }
        let mut order: Vec<(bool, i128, u64, usize)> = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, t)| t.phase == Phase::Reading)
            .map(|(i, t)| (t.attached, t.mtime_ns, t.seq, i))
            .collect();
        order.sort();
        let mut close = Vec::new();
        for &(_, _, _, i) in &order {
            if self.shared.stopped() || self.out.closed {
                return;
            }
            let done = self.read_file(i);
            let t = &self.files[i];
            if done && !t.attached && t.last_growth.elapsed() >= self.opts.detached_grace {
                close.push(i);
            }
        }
        // Undecided files whose name is gone are dropped as well.
        for (i, t) in self.files.iter().enumerate() {
            if let Phase::Undecided { since } = t.phase
                && !t.attached
                && since.elapsed() >= self.opts.detached_grace
            {
                close.push(i);
            }
        }
        close.sort_unstable_by(|a, b| b.cmp(a));
        close.dedup();
        for i in close {
            let t = self.files.remove(i);
            log::debug!("closed rotated log file {}", t.source);
            Counters::add(&self.shared.stats.rotations, 1);
        }
    }

    /// Read file `i` from its offset to EOF. Returns true when it reached EOF.
    fn read_file(&mut self, i: usize) -> bool {
        let max = self.opts.max_line;
        let stats = &self.shared.stats;
        let t = &mut self.files[i];
        loop {
            if self.shared.stopped() || self.out.closed {
                return false;
            }
            let n = match t.file.read_at(&mut self.buf, t.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading {}: {e}", t.source);
                    break;
                }
            };
            t.offset += n as u64;
            t.last_growth = Instant::now();
            let out = &mut self.out;
            let source = &t.source;
            t.split.feed_blocks(&self.buf[..n], max, |p| match p {
                Piece::Line(l) => match check(l, max) {
                    Ok(Some(text)) => out.push_str(source, text, stats),
                    Ok(None) => {}
                    Err(r) => r.count(stats),
                },
                Piece::Block(text, lines) => out.push_block(source, text, lines, stats),
                Piece::TooLong => super::lines::Reject::TooLong.count(stats),
            });
            self.out.flush(stats);
        }
        if t.fp.len() < FP_LEN {
            t.fp = fingerprint(&t.file, t.offset.max(t.len));
        }
        true
    }
}
