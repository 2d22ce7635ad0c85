//! The push queue on disk: jail bans waiting to be sent as alerts, one
//! JSON line each, appended and synced before a push is tried, so neither a
//! LAPI outage nor an agent restart loses one. Bounded: past
//! [`MAX_QUEUED`] the oldest (the likeliest to have ended anyway) go, and
//! are counted. Delivery is at least once: a push acknowledged just before
//! a crash may be sent again after it (LAPI then holds two decisions for
//! the address; bouncers keep the longest).
use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    ban::Banned,
    state::{MAX_EVIDENCE_LINE_BYTES, MAX_EVIDENCE_LINES},
};

/// Alerts kept at most while the LAPI cannot take them.
pub const MAX_QUEUED: usize = 100_000;
/// Name of the queue file in the state directory.
pub const FILE: &str = "crowdsec-push.jsonl";

/// A jail ban to share, as the ban service reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub net: IpNet,
    pub jail: String,
    pub reason: String,
    pub evidence: Vec<String>,
    pub failures: u32,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub banned_at: u64,
    /// None: permanent.
    pub expires_at: Option<u64>,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pending {
    /// A jail's ban; None for any other origin (CrowdSec's own bans are
    /// never sent back) and for a dry run.
    pub fn from_ban(b: &Banned) -> Option<Self> {
        let jail = b.origin.jail()?;
        if b.dry_run {
            return None;
        }
        let skip = b.evidence.len().saturating_sub(MAX_EVIDENCE_LINES);
        Some(Pending {
            net: b.net,
            jail: jail.to_string(),
            reason: b.reason.clone(),
            evidence: b
                .evidence
                .iter()
                .skip(skip)
                .map(|l| {
                    let mut end = l.len().min(MAX_EVIDENCE_LINE_BYTES);
                    while !l.is_char_boundary(end) {
                        end -= 1;
                    }
                    l[..end].to_owned()
                })
                .collect(),
            failures: b.failures,
            first_seen: unix(b.first_seen),
            last_seen: unix(b.last_seen),
            banned_at: unix(SystemTime::now()),
            expires_at: b.expires_at.map(unix),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("push queue {}", .path.display())]
pub struct SpoolError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

pub struct Spool {
    path: PathBuf,
    items: VecDeque<Pending>,
    file: File,
    /// Lines in the file, and how many of the first ones were sent: the
    /// file is rewritten once half of it was (amortised), emptied when all.
    lines: usize,
    sent_in_file: usize,
    pub dropped: u64,
}

impl Spool {
    /// Opens the queue, keeping what an earlier run left in it.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let err = |source| SpoolError {
            path: path.to_owned(),
            source,
        };
        let mut items = VecDeque::new();
        let mut bad = 0usize;
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(err)?;
                    match serde_json::from_str::<Pending>(&line) {
                        Ok(p) => items.push_back(p),
                        // A line cut by a crash mid-write.
                        Err(_) => bad += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        if bad > 0 {
            log::warn!(
                "crowdsec: {} unreadable line(s) in {} skipped",
                bad,
                path.display()
            );
        }
        let mut s = Spool {
            path: path.to_owned(),
            file: OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?,
            lines: items.len() + bad,
            sent_in_file: 0,
            items,
            dropped: 0,
        };
        s.trim();
        if bad > 0 || s.dropped > 0 {
            s.rewrite()?;
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn err(&self, source: std::io::Error) -> SpoolError {
        SpoolError {
            path: self.path.clone(),
            source,
        }
    }

    fn trim(&mut self) {
        while self.items.len() > MAX_QUEUED {
            self.items.pop_front();
            self.sent_in_file += 1;
            self.dropped += 1;
        }
    }

    /// Appends and syncs: durable on return.
    pub fn push(&mut self, new: Vec<Pending>) -> Result<(), SpoolError> {
        if new.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(new.len() * 256);
        for p in &new {
            // Serialising plain strings and numbers cannot fail.
            if serde_json::to_writer(&mut buf, p).is_ok() {
                buf.push(b'\n');
            }
        }
        self.file.write_all(&buf).map_err(|e| self.err(e))?;
        self.file.sync_data().map_err(|e| self.err(e))?;
        self.lines += new.len();
        let before = self.dropped;
        self.items.extend(new);
        self.trim();
        if self.dropped > before {
            log::error!(
                "crowdsec: the push queue is full ({MAX_QUEUED}); {} oldest ban(s) dropped unsent",
                self.dropped - before
            );
        }
        Ok(())
    }

    /// The oldest `n` waiting.
    pub fn front(&self, n: usize) -> Vec<Pending> {
        self.items.iter().take(n).cloned().collect()
    }

    /// The oldest `n` were delivered (or given up).
    pub fn done(&mut self, n: usize) -> Result<(), SpoolError> {
        let n = n.min(self.items.len());
        self.items.drain(..n);
        self.sent_in_file += n;
        if self.items.is_empty() {
            self.file.set_len(0).map_err(|e| self.err(e))?;
            self.file.sync_data().map_err(|e| self.err(e))?;
            self.lines = 0;
            self.sent_in_file = 0;
        } else if self.sent_in_file * 2 >= self.lines {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Writes what waits to a new file and renames it over the old one.
    fn rewrite(&mut self) -> Result<(), SpoolError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut buf = Vec::with_capacity(self.items.len() * 256);
        for p in &self.items {
            if serde_json::to_writer(&mut buf, p).is_ok() {
                buf.push(b'\n');
            }
        }
        let mut f = File::create(&tmp).map_err(|e| self.err(e))?;
        f.write_all(&buf).map_err(|e| self.err(e))?;
        f.sync_data().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        self.lines = self.items.len();
        self.sent_in_file = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(i: u32) -> Pending {
        Pending {
            net: format!("198.51.100.{}/32", i % 250).parse().unwrap(),
            jail: "sasl".into(),
            reason: "r".into(),
            evidence: vec![format!("line {i}")],
            failures: i,
            first_seen: 1,
            last_seen: 2,
            banned_at: 3,
            expires_at: Some(4),
        }
    }

    #[test]
    fn what_was_queued_survives_a_restart_and_what_was_sent_does_not_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut s = Spool::open(&path).unwrap();
        s.push((0..10).map(p).collect()).unwrap();
        s.done(3).unwrap();
        drop(s);
        let mut s = Spool::open(&path).unwrap();
        // Three were sent; the file was not rewritten yet, so at least the
        // seven unsent are back (at least once).
        assert!(s.len() >= 7);
        assert_eq!(s.front(100).last(), Some(&p(9)));
        let n = s.len();
        s.done(n - 1).unwrap();
        drop(s);
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.front(10), vec![p(9)], "rewritten once half was sent");
        let mut s = s;
        s.done(1).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_line_cut_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut s = Spool::open(&path).unwrap();
        s.push(vec![p(1), p(2)]).unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"net\":\"198.51").unwrap();
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.front(10), vec![p(1), p(2)]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join(FILE)).unwrap();
        s.push((0..(MAX_QUEUED as u32 + 5)).map(p).collect())
            .unwrap();
        assert_eq!(s.len(), MAX_QUEUED);
        assert_eq!(s.dropped, 5);
        assert_eq!(s.front(1), vec![p(5)], "the oldest go");
    }
}
