//! Helpers shared by the source integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use fail2xdp::source::{LogLine, SourceOptions};
use tokio::sync::mpsc;

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
