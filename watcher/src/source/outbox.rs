//! Delivery from a reader thread in [`Chunk`]s: a batch of lines is one text
//! buffer (no allocation per line, and the buffers are reused).

use std::sync::{Arc, Mutex};

use super::Counters;
use super::position::Ack;

/// Text gathered before a chunk is sent; a read buffer's worth.
const CHUNK_BYTES: usize = 256 << 10;
/// Spare chunk buffers kept for reuse (the channel holds a few chunks, the
/// consumer one more).
const POOL_MAX: usize = 8;

/// Lines of one source in one buffer, in order: each line (checked like any
/// other: bounded, no trailing `\r`, not empty, UTF-8 and NUL-free after
/// repairs) followed by `\n`. Dropping it hands the buffer back to its reader
/// and tells the reader the lines are done with (their position may be saved).
/// A chunk may hold no line at all: it then only carries a position.
pub struct Chunk {
    source: Arc<str>,
    text: String,
    lines: usize,
    /// Journal entries: the time of line i at i (lines past the end have
    /// none). Empty for files.
    times: Vec<Option<jiff::Timestamp>>,
    /// The modification time of the file the lines were read from, as it
    /// was when they were read (`None` for the journal).
    modified: Option<jiff::Timestamp>,
    pool: Arc<Pool>,
    /// The position reached at the end of this chunk.
    ack: Option<Ack>,
}

impl Chunk {
    /// The file path, or `journal` / `journal:<file>`.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// All lines, each ending with `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The modification time of the file the lines came from (a replayed
    /// file's lines are dated from it).
    pub fn modified(&self) -> Option<jiff::Timestamp> {
        self.modified
    }

    /// Whether some line carries its own time (journal entries).
    pub fn has_times(&self) -> bool {
        !self.times.is_empty()
    }

    /// The lines with their times (`None` for files: the text has the stamp).
    pub fn lines(&self) -> impl Iterator<Item = (&str, Option<jiff::Timestamp>)> {
        self.text
            .split_terminator('\n')
            .enumerate()
            .map(|(i, l)| (l, self.times.get(i).copied().flatten()))
    }

    /// A chunk of file lines, for tests of its consumers.
    #[cfg(test)]
    pub(crate) fn from_text(source: &str, text: &str) -> Chunk {
        let text = if text.ends_with('\n') || text.is_empty() {
            text.to_string()
        } else {
            format!("{text}\n")
        };
        Chunk {
            source: Arc::from(source),
            lines: text.lines().count(),
            text,
            times: Vec::new(),
            modified: None,
            pool: Arc::new(Pool::default()),
            ack: None,
        }
    }
}

#[cfg(test)]
impl Chunk {
    /// A chunk of `lines` lines in `text` (each ending with `\n`), for
    /// measurements that reuse the buffer: [`into_text`](Self::into_text).
    pub(crate) fn from_string(source: Arc<str>, text: String, lines: usize) -> Chunk {
        Chunk {
            source,
            text,
            lines,
            times: Vec::new(),
            modified: None,
            pool: Arc::new(Pool::default()),
            ack: None,
        }
    }

    /// The chunk as read from a file last modified at `t`.
    pub(crate) fn with_modified(mut self, t: jiff::Timestamp) -> Chunk {
        self.modified = Some(t);
        self
    }

    pub(crate) fn into_text(mut self) -> String {
        std::mem::take(&mut self.text)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("source", &self.source)
            .field("lines", &self.lines)
            .field("bytes", &self.text.len())
            .finish()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.text));
        if let Some(ack) = self.ack.take() {
            ack.done();
        }
    }
}

#[derive(Default)]
pub(super) struct Pool(Mutex<Vec<String>>);

impl Pool {
    fn get(&self) -> String {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| String::with_capacity(CHUNK_BYTES + 64 * 1024))
    }

    fn put(&self, mut s: String) {
        // A chunk grown by one huge block is not kept at that size.
        if s.capacity() == 0 || s.capacity() > 4 * CHUNK_BYTES {
            return;
        }
        s.clear();
        if let Ok(mut v) = self.0.lock()
            && v.len() < POOL_MAX
        {
            v.push(s);
        }
    }
}

/// Takes each chunk on the reader's thread (and may block there, which is
/// back pressure); `false` when nothing takes chunks any more.
pub type Deliver = Box<dyn FnMut(Chunk) -> bool + Send>;

fn new_chunk(pool: &Arc<Pool>, source: &Arc<str>) -> Chunk {
    Chunk {
        source: source.clone(),
        text: pool.get(),
        lines: 0,
        times: Vec::new(),
        modified: None,
        pool: pool.clone(),
        ack: None,
    }
}

/// Lines gathered by a reader before they are handed to `deliver`.
pub(super) struct Outbox {
    deliver: Deliver,
    chunk: Option<Chunk>,
    pool: Arc<Pool>,
    /// The modification time of the file lines are pushed from now.
    modified: Option<jiff::Timestamp>,
    pub(super) closed: bool,
}

impl Outbox {
    pub(super) fn new(deliver: Deliver) -> Self {
        Self {
            deliver,
            chunk: None,
            pool: Arc::new(Pool::default()),
            modified: None,
            closed: false,
        }
    }

    /// The chunk to append to: one of `source` with room for `bytes` more.
    fn chunk_for(&mut self, source: &Arc<str>, bytes: usize, stats: &Counters) -> &mut Chunk {
        let fits = self.chunk.as_ref().is_some_and(|c| {
            (Arc::ptr_eq(&c.source, source) || *c.source == **source)
                && (c.lines == 0 || c.text.len() + bytes <= CHUNK_BYTES)
        });
        if !fits {
            self.flush(stats);
        }
        self.chunk
            .get_or_insert_with(|| new_chunk(&self.pool, source))
    }

    /// One journal entry, with its own time.
    pub(super) fn push_entry(
        &mut self,
        source: &Arc<str>,
        text: &str,
        time: Option<jiff::Timestamp>,
        stats: &Counters,
    ) {
        let c = self.chunk_for(source, text.len() + 1, stats);
        if time.is_some() {
            c.times.resize(c.lines, None);
            c.times.push(time);
        }
        c.text.push_str(text);
        c.text.push('\n');
        c.lines += 1;
        self.flush_if_full(stats);
    }

    /// The file lines are pushed from next was last modified at `t`.
    pub(super) fn set_modified(&mut self, t: Option<jiff::Timestamp>) {
        self.modified = t;
    }

    /// One checked line of a file.
    pub(super) fn push_str(&mut self, source: &Arc<str>, text: &str, stats: &Counters) {
        let modified = self.modified;
        let c = self.chunk_for(source, text.len() + 1, stats);
        c.modified = modified;
        c.text.push_str(text);
        c.text.push('\n');
        c.lines += 1;
        self.flush_if_full(stats);
    }

    /// `lines` checked lines of a file, each ending with `\n`.
    pub(super) fn push_block(
        &mut self,
        source: &Arc<str>,
        block: &str,
        lines: usize,
        stats: &Counters,
    ) {
        let modified = self.modified;
        let c = self.chunk_for(source, block.len(), stats);
        c.modified = modified;
        c.text.push_str(block);
        c.lines += lines;
        self.flush_if_full(stats);
    }

    fn flush_if_full(&mut self, stats: &Counters) {
        if self
            .chunk
            .as_ref()
            .is_some_and(|c| c.text.len() >= CHUNK_BYTES)
        {
            self.flush(stats);
        }
    }

    /// Hands over what was collected; may block (back pressure). Marks the outbox
    /// closed once nothing takes chunks any more.
    pub(super) fn flush(&mut self, stats: &Counters) {
        let Some(mut c) = self.chunk.take() else {
            return;
        };
        let n = c.lines as u64;
        if self.closed {
            // Not delivered, so not done with: the position stays.
            c.ack = None;
            return;
        }
        if n == 0 && c.ack.is_none() {
            return;
        }
        if !(self.deliver)(c) {
            self.closed = true;
            return;
        }
        Counters::add(&stats.lines, n);
    }

    /// Like [`flush`](Self::flush), with `ack` riding on the last chunk: the position
    /// it names is reached once the consumer is done with everything delivered so far.
    /// With no line to deliver, an empty chunk carries it, so it still waits its turn.
    pub(super) fn flush_with(&mut self, ack: Ack, source: &Arc<str>, stats: &Counters) {
        self.chunk
            .get_or_insert_with(|| new_chunk(&self.pool, source))
            .ack = Some(ack);
        self.flush(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::sync::mpsc;

    fn chunked() -> (Outbox, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Outbox::new(Box::new(move |c| tx.blocking_send(c).is_ok())),
            rx,
        )
    }

    #[test]
    fn chunks_keep_order_source_and_times() {
        let stats = Counters::default();
        let (mut o, mut rx) = chunked();
        let a: Arc<str> = Arc::from("a.log");
        let b: Arc<str> = Arc::from("b.log");
        o.push_str(&a, "one", &stats);
        o.push_block(&a, "two\nthree\n", 2, &stats);
        o.push_str(&b, "four", &stats);
        let t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        o.push_entry(&b, "five", Some(t), &stats);
        o.flush(&stats);
        let c1 = rx.try_recv().unwrap();
        assert_eq!(&**c1.source(), "a.log");
        assert_eq!(c1.text(), "one\ntwo\nthree\n");
        assert_eq!(c1.len(), 3);
        assert!(!c1.has_times());
        let c2 = rx.try_recv().unwrap();
        let got: Vec<_> = c2.lines().collect();
        assert_eq!(got, [("four", None), ("five", Some(t))]);
        assert_eq!(stats.snapshot().lines, 5);
    }

    #[test]
    fn buffers_are_reused() {
        let stats = Counters::default();
        let (mut o, mut rx) = chunked();
        let a: Arc<str> = Arc::from("a.log");
        o.push_str(&a, "x", &stats);
        o.flush(&stats);
        let c = rx.try_recv().unwrap();
        let ptr = c.text().as_ptr();
        drop(c);
        o.push_str(&a, "y", &stats);
        o.flush(&stats);
        assert_eq!(rx.try_recv().unwrap().text().as_ptr(), ptr);
    }

    #[test]
    fn full_chunks_are_sent_as_they_fill() {
        let stats = Counters::default();
        let (mut o, mut rx) = chunked();
        let a: Arc<str> = Arc::from("a.log");
        let line = "z".repeat(1000);
        for _ in 0..3000 {
            o.push_str(&a, &line, &stats);
        }
        o.flush(&stats);
        let mut lines = 0;
        while let Ok(c) = rx.try_recv() {
            assert!(c.text().len() <= CHUNK_BYTES + 1001);
            lines += c.len();
        }
        assert_eq!(lines, 3000);
    }
}
