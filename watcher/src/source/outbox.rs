//! Delivery from a reader thread: per line, in batches of [`LogLine`]s, or in
//! [`Chunk`]s, where a batch is one text buffer (no allocation per line, and
//! the buffers are reused).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Counters, LogLine};

/// Text gathered before a chunk is sent; a read buffer's worth.
const CHUNK_BYTES: usize = 256 << 10;
/// Largest batch of `LogLine`s sent in one message, so a huge replay still streams.
const BATCH: usize = 4096;
/// Spare chunk buffers kept for reuse (the channel holds a few chunks, the
/// consumer one more).
const POOL_MAX: usize = 8;

/// Lines of one source in one buffer, in order: each line (checked like any
/// other: UTF-8, no NUL, bounded, no trailing `\r`, not empty) followed by
/// `\n`. Dropping it hands the buffer back to its reader.
pub struct Chunk {
    source: Arc<str>,
    text: String,
    lines: usize,
    /// Journal entries: the time of line i at i (lines past the end have
    /// none). Empty for files.
    times: Vec<Option<jiff::Timestamp>>,
    pool: Arc<Pool>,
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
            pool: Arc::new(Pool::default()),
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
            pool: Arc::new(Pool::default()),
        }
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

/// Where a reader thread delivers lines.
pub(super) enum Sink {
    Line(mpsc::Sender<LogLine>),
    Batch(mpsc::Sender<Vec<LogLine>>),
    Chunk(Deliver),
}

/// Lines gathered by a reader before they are handed to the channel.
pub(super) struct Outbox {
    sink: Sink,
    buf: Vec<LogLine>,
    chunk: Option<Chunk>,
    pool: Arc<Pool>,
    pub(super) closed: bool,
}

impl Outbox {
    pub(super) fn new(sink: Sink) -> Self {
        Self {
            sink,
            buf: Vec::new(),
            chunk: None,
            pool: Arc::new(Pool::default()),
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
        self.chunk.get_or_insert_with(|| Chunk {
            source: source.clone(),
            text: self.pool.get(),
            lines: 0,
            times: Vec::new(),
            pool: self.pool.clone(),
        })
    }

    pub(super) fn push(&mut self, line: LogLine, stats: &Counters) {
        if !matches!(self.sink, Sink::Chunk(_)) {
            self.buf.push(line);
            if self.buf.len() >= BATCH {
                self.flush(stats);
            }
            return;
        }
        let c = self.chunk_for(&line.source, line.text.len() + 1, stats);
        if line.time.is_some() {
            c.times.resize(c.lines, None);
            c.times.push(line.time);
        }
        c.text.push_str(&line.text);
        c.text.push('\n');
        c.lines += 1;
        self.flush_if_full(stats);
    }

    /// One checked line of a file.
    pub(super) fn push_str(&mut self, source: &Arc<str>, text: &str, stats: &Counters) {
        if !matches!(self.sink, Sink::Chunk(_)) {
            return self.push(
                LogLine {
                    source: source.clone(),
                    text: text.to_string(),
                    time: None,
                },
                stats,
            );
        }
        let c = self.chunk_for(source, text.len() + 1, stats);
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
        if !matches!(self.sink, Sink::Chunk(_)) {
            for l in block.split_terminator('\n') {
                self.push_str(source, l, stats);
            }
            return;
        }
        let c = self.chunk_for(source, block.len(), stats);
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

    /// Send everything collected; blocks while the channel is full. Marks the outbox
    /// closed when the receiver is gone.
    pub(super) fn flush(&mut self, stats: &Counters) {
        if let Some(c) = self.chunk.take() {
            let n = c.lines as u64;
            if n == 0 || self.closed {
                return;
            }
            if let Sink::Chunk(deliver) = &mut self.sink {
                if !deliver(c) {
                    self.closed = true;
                    return;
                }
                Counters::add(&stats.lines, n);
            }
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        if self.closed {
            self.buf.clear();
            return;
        }
        let n = self.buf.len() as u64;
        match &self.sink {
            Sink::Batch(tx) => {
                let batch = std::mem::take(&mut self.buf);
                if tx.blocking_send(batch).is_err() {
                    self.closed = true;
                    return;
                }
            }
            Sink::Line(tx) => {
                let mut closed = false;
                for line in self.buf.drain(..) {
                    if !closed && tx.blocking_send(line).is_err() {
                        closed = true;
                    }
                }
                if closed {
                    self.closed = true;
                    return;
                }
            }
            Sink::Chunk(_) => {}
        }
        Counters::add(&stats.lines, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked() -> (Outbox, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Outbox::new(Sink::Chunk(Box::new(move |c| tx.blocking_send(c).is_ok()))),
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
        o.push(
            LogLine {
                source: b.clone(),
                text: "five".into(),
                time: Some(t),
            },
            &stats,
        );
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
