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
//! Resuming from a saved [`Position`]: a file still carrying a saved (device, inode) and
//! starting with the saved first bytes continues at its saved offset; one that was
//! truncated or replaced meanwhile is read from 0 (and a copy of it made by copytruncate
//! from the saved offset, as above); a saved file no glob matches any more (renamed by a
//! rotation while the agent was down) is looked for beside its old name by inode and read
//! to its end first, as a rotated-away file; any other matching file appeared while the
//! agent was down and is read from its beginning.
//!
//! Reads use `pread` into a 256 KiB buffer (a chunk that stays in a core's L2 cache while
//! the match stage and the jails go over it), lines are split with memchr and sent in batches.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::glob::Glob;
use super::lines::{Splitter, feed_read};
use super::position::{Ack, FilePosition, Mark, Position, Resume, Saver};
use super::{Counters, Outbox, Shared, SourceError, SourceOptions};

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

/// Where the files existing at the start are read from.
enum Initial {
    End,
    Beginning,
    /// The saved positions; files not among them appeared since.
    Resume(Vec<FilePosition>),
}

pub(super) fn start(
    globs: Vec<String>,
    from_start: bool,
    opts: SourceOptions,
    out: Outbox,
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
    let mut saver = Saver::new(opts.positions.clone());
    let saved = if opts.resume { saver.load(&name) } else { None };
    let initial = match saved {
        Some(Position::Files(files)) => Initial::Resume(files),
        Some(Position::Journal { .. }) => {
            log::warn!("{name}: the saved position is a journal cursor; ignoring it");
            Initial::End
        }
        None if from_start => Initial::Beginning,
        None => Initial::End,
    };
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
        out,
        files: Vec::new(),
        retired: Vec::new(),
        buf: vec![0; READ_BUF],
        seq: 0,
        unreadable: HashSet::new(),
        saver,
        name: name.clone(),
    };
    t.watch.ensure(&t.globs);
    t.scan(Some(&initial));
    if let Initial::Resume(saved) = &initial {
        t.find_moved(saved);
    }
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
    /// Read offset.
    offset: u64,
    /// Where the first line not read in full starts, and whether it is the line the
    /// reader started in the middle of (to be skipped): where a restart resumes.
    line_start: u64,
    mid_line: bool,
    /// `(line_start, mid_line)` as last sent along with the lines.
    acked: (u64, bool),
    /// Where the consumer is done with (what is saved).
    mark: Arc<Mark>,
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
    saver: Saver,
    name: String,
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

/// `f` (now `len` bytes long) is still the file `p` was saved from, with nothing cut
/// off before the saved offset.
fn continues(f: &File, len: u64, p: &FilePosition) -> bool {
    len >= p.offset
        && (p.fingerprint.is_empty() || fingerprint(f, p.fingerprint.len() as u64) == p.fingerprint)
}

fn is_compressed(path: &Path) -> bool {
    let s = path.to_string_lossy();
    COMPRESSED.iter().any(|ext| s.ends_with(ext))
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
            // A change not saved yet is saved when due, even if nothing else happens.
            let wait = if self.save(false) {
                self.saver.due_in().min(self.opts.poll_interval)
            } else {
                self.opts.poll_interval
            };
            match wake.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        }
        self.out.flush(&self.shared.stats);
        self.save(true);
    }

    /// Saves the positions of the files being read, if they changed and a save is due
    /// (or `force`). Returns whether a change is left unsaved.
    fn save(&mut self, force: bool) -> bool {
        if !self.saver.enabled() {
            return false;
        }
        let files = &self.files;
        self.saver.maybe_save(&self.name, force, || {
            let mut v = Vec::with_capacity(files.len());
            for t in files.iter().filter(|t| t.phase == Phase::Reading) {
                if let Resume::File {
                    offset,
                    mid_line,
                    fingerprint,
                } = t.mark.get()
                {
                    v.push(FilePosition {
                        path: PathBuf::from(&*t.source),
                        dev: t.id.0,
                        inode: t.id.1,
                        offset,
                        mid_line,
                        fingerprint: fingerprint.to_vec(),
                    });
                }
            }
            Some(Position::Files(v))
        })
    }

    /// Match the globs against the file system. `initial` is given for the scan done
    /// before `spawn` returns.
    fn scan(&mut self, initial: Option<&Initial>) {
        let mut paths: Vec<PathBuf> = self.globs.iter().flat_map(Glob::expand).collect();
        paths.retain(|p| !is_compressed(p));
        paths.sort();
        paths.dedup();
        if let Some(Initial::Resume(saved)) = initial {
            // Files followed before come first (in the order they were followed): they
            // are older than those that appeared since, which matters when the clock's
            // tick gave them the same mtime.
            let rank = |p: &PathBuf| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| saved.iter().position(|s| (s.dev, s.inode) == file_id(&m)))
                    .unwrap_or(usize::MAX)
            };
            paths.sort_by_cached_key(rank);
        }
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

    fn open(&mut self, path: &Path, initial: Option<&Initial>) -> std::io::Result<Option<Tracked>> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let id = file_id(&meta);
        if self.files.iter().any(|t| t.id == id) || !meta.is_file() {
            return Ok(None);
        }
        let len = meta.len();
        let mut split = Splitter::default();
        let undecided = Phase::Undecided {
            since: Instant::now(),
        };
        let (offset, mid_line, phase) = match initial {
            Some(Initial::End) => {
                let mut last = [0u8];
                let mid =
                    len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n';
                (len, mid, Phase::Reading)
            }
            Some(Initial::Beginning) => (0, false, Phase::Reading),
            Some(Initial::Resume(saved)) => match saved.iter().find(|p| (p.dev, p.inode) == id) {
                Some(p) if continues(&file, len, p) => (p.offset, p.mid_line, Phase::Reading),
                Some(p) => {
                    // Truncated (copytruncate) or replaced while we were not reading: its
                    // copy, if one shows up, holds the rest from the saved offset.
                    log::info!(
                        "{} changed since its position was saved, reading it from the start",
                        path.display()
                    );
                    Counters::add(&self.shared.stats.truncations, 1);
                    self.retired
                        .push((p.fingerprint.clone(), p.offset, Instant::now()));
                    (0, false, Phase::Reading)
                }
                // Appeared while we were not reading.
                None => (0, false, undecided),
            },
            None => (0, false, undecided),
        };
        if mid_line {
            split.start_mid_line();
        }
        self.seq += 1;
        Counters::add(&self.shared.stats.files_opened, 1);
        log::debug!("following {} ({phase:?} at {offset})", path.display());
        let fp = fingerprint(&file, len);
        Ok(Some(Tracked {
            mark: Mark::new(
                self.shared.clone(),
                Resume::File {
                    offset,
                    mid_line,
                    fingerprint: Arc::from(fp.as_slice()),
                },
            ),
            fp,
            file,
            id,
            source: Arc::from(path.to_string_lossy().as_ref()),
            offset,
            line_start: offset,
            mid_line,
            acked: (offset, mid_line),
            split,
            phase,
            attached: true,
            last_growth: Instant::now(),
            mtime_ns: mtime_ns(&meta),
            len,
            seq: self.seq,
        }))
    }

    /// Saved files no glob matched: renamed away by a rotation while we were not
    /// reading. Each is looked for by inode beside its old name and read to its end
    /// as a rotated-away file.
    fn find_moved(&mut self, saved: &[FilePosition]) {
        for p in saved {
            if self.files.iter().any(|t| t.id == (p.dev, p.inode)) {
                continue;
            }
            match self.open_moved(p) {
                Some(t) => {
                    log::info!(
                        "{} was rotated to {}: reading the rest of it from offset {}",
                        p.path.display(),
                        t.source,
                        p.offset
                    );
                    self.files.push(t);
                }
                None => log::warn!(
                    "{}: the file followed as {} (inode {}) is gone; lines written to it after the saved position cannot be read",
                    self.name,
                    p.path.display(),
                    p.inode
                ),
            }
        }
    }

    fn open_moved(&mut self, p: &FilePosition) -> Option<Tracked> {
        let path = std::fs::read_dir(p.path.parent()?)
            .ok()?
            .flatten()
            .find(|e| e.ino() == p.inode)?
            .path();
        if is_compressed(&path) {
            return None;
        }
        // Another file may have got the inode, or this one been cut short: not ours then.
        let f = File::open(&path).ok()?;
        let m = f.metadata().ok()?;
        if file_id(&m) != (p.dev, p.inode) || !m.is_file() || !continues(&f, m.len(), p) {
            return None;
        }
        let mut t = self
            .open(&path, Some(&Initial::Resume(vec![p.clone()])))
            .ok()??;
        t.attached = false;
        Some(t)
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
            // Nothing of it was delivered yet: the mark moves at once.
            t.mark.set(Resume::File {
                offset: off,
                mid_line: false,
                fingerprint: Arc::from(fp.as_slice()),
            });
            t.offset = off;
            t.line_start = off;
            t.mid_line = false;
            t.acked = (off, false);
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
                // The copy, if one shows up, holds the rest from the line we were in.
                self.retired
                    .push((std::mem::take(&mut t.fp), t.line_start, Instant::now()));
                t.offset = 0;
                t.line_start = 0;
                t.mid_line = false;
                t.split.reset();
                // Behind what was delivered before, so a restart never skips the new lines.
                t.acked = (0, false);
                let ack = Ack {
                    mark: t.mark.clone(),
                    at: Resume::File {
                        offset: 0,
                        mid_line: false,
                        fingerprint: Arc::from(&[][..]),
                    },
                };
                self.out.flush_with(ack, &t.source, stats);
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
        loop {
            if self.shared.stopped() || self.out.closed {
                return false;
            }
            let stats = &self.shared.stats;
            let t = &mut self.files[i];
            let n = match t.file.read_at(&mut self.buf, t.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reading {}: {e}", t.source);
                    break;
                }
            };
            let read = &self.buf[..n];
            t.offset += n as u64;
            t.last_growth = Instant::now();
            // Lines of a replayed file are dated from when it was written.
            self.out
                .set_modified(jiff::Timestamp::from_nanosecond(t.mtime_ns).ok());
            feed_read(&mut t.split, read, max, &t.source, &mut self.out, stats);
            if let Some(k) = memchr::memrchr(b'\n', read) {
                t.line_start = t.offset - (n - k - 1) as u64;
                t.mid_line = false;
            }
            if t.fp.len() < FP_LEN {
                t.fp = fingerprint(&t.file, t.offset.max(t.len));
            }
            // The last chunk of the read says where its lines end.
            if (t.line_start, t.mid_line) != t.acked {
                t.acked = (t.line_start, t.mid_line);
                let ack = Ack {
                    mark: t.mark.clone(),
                    at: Resume::File {
                        offset: t.line_start,
                        mid_line: t.mid_line,
                        fingerprint: Arc::from(t.fp.as_slice()),
                    },
                };
                self.out.flush_with(ack, &t.source, stats);
            } else {
                self.out.flush(stats);
            }
            self.save(false);
        }
        true
    }
}
