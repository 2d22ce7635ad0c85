//! Helpers shared by the source integration tests.
#![allow(dead_code, reason = "each test binary uses some of the helpers")]

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fail2xdp::source::{
    self, LogLine, Position, PositionError, Positions, SourceError, SourceHandle, SourceOptions,
    SourceSpec,
};
use tokio::sync::mpsc;

/// Starts a source (the one way there is: chunks handed over on the reader's thread) with
/// each chunk taken apart into lines on a channel of `cap` lines. The chunk is done with
/// (dropped) before its lines are sent, so a test that saw a line sees its position too.
pub async fn start(
    spec: SourceSpec,
    opts: SourceOptions,
    cap: usize,
) -> Result<(SourceHandle, mpsc::Receiver<LogLine>), SourceError> {
    let (tx, rx) = mpsc::channel(cap);
    let deliver = Box::new(move |c: source::Chunk| {
        let lines: Vec<LogLine> = c
            .lines()
            .map(|(text, time)| LogLine {
                source: c.source().clone(),
                text: text.to_string(),
                time,
            })
            .collect();
        drop(c);
        lines.into_iter().all(|l| tx.blocking_send(l).is_ok())
    });
    Ok((source::spawn(spec, opts, deliver).await?, rx))
}

/// Positions kept in memory, as the agent keeps them in its state store.
#[derive(Debug, Default)]
pub struct MemPositions {
    pub saved: Mutex<Option<Position>>,
    pub saves: AtomicUsize,
}

impl MemPositions {
    pub fn get(&self) -> Option<Position> {
        self.saved.lock().expect("lock").clone()
    }

    pub fn saves(&self) -> usize {
        self.saves.load(Ordering::Relaxed)
    }
}

impl Positions for MemPositions {
    fn load(&self) -> Result<Option<Position>, PositionError> {
        Ok(self.get())
    }

    fn save(&self, p: &Position) -> Result<(), PositionError> {
        *self.saved.lock().expect("lock") = Some(p.clone());
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Options with a short poll interval so missed-event fallbacks also finish quickly.
pub fn opts() -> SourceOptions {
    SourceOptions {
        poll_interval: Duration::from_millis(100),
        detached_grace: Duration::from_millis(500),
        ..SourceOptions::default()
    }
}

/// A Postfix line as postfix/smtpd writes it through syslog, numbered so order is checkable.
pub fn postfix(i: usize) -> String {
    format!(
        "Nov 22 05:40:{:02} mx postfix/smtpd[{}]: warning: unknown[203.0.113.{}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6 seq={i}",
        i % 60,
        1000 + i % 97,
        i % 250 + 1
    )
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

pub fn lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| postfix(i) + "\n").collect()
}

/// Receive exactly `n` lines, failing after `secs` seconds.
pub async fn take(rx: &mut mpsc::Receiver<LogLine>, n: usize, secs: u64) -> Vec<LogLine> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) => got.push(l),
            Ok(None) => panic!("source closed after {} of {n} lines", got.len()),
            Err(_) => panic!(
                "timeout after {} of {n} lines; last: {:?}",
                got.len(),
                got.last().map(|l| &l.text)
            ),
        }
    }
    got
}

/// Fail if any line arrives within `ms` milliseconds.
pub async fn quiet(rx: &mut mpsc::Receiver<LogLine>, ms: u64) {
    if let Ok(Some(l)) = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await {
        panic!("unexpected extra line from {}: {:?}", l.source, l.text);
    }
}

pub fn texts(v: &[LogLine]) -> Vec<String> {
    v.iter().map(|l| l.text.clone()).collect()
}

pub fn expect(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(postfix).collect()
}
