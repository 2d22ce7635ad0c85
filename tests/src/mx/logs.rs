//! Reading what the lab's daemons write: Postfix's maillog (which lines a
//! client caused), the mailbox, the agent's and fail2ban's logs; and a
//! [`Tail`] that notes when each line appeared, for the benchmark's timings
//! (Postfix's stamps have whole seconds only).

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// The lines of `path` now (none if it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until at least `n` lines of `path` satisfy `pred`; returns them.
pub fn wait_lines(
    path: &Path,
    n: usize,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
    what: &str,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let found: Vec<String> = lines(path).into_iter().filter(|l| pred(l)).collect();
        if found.len() >= n {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!(
                "{} has {} of the {n} lines expected ({what}) after {timeout:?}; its end:\n{}",
                path.display(),
                found.len(),
                lines(path)
                    .iter()
                    .rev()
                    .take(30)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How smtpd names a client whose name it did not look up.
pub fn client(addr: IpAddr) -> String {
    format!("unknown[{addr}]")
}

/// Which kind of Postfix line a client caused (matched the way smtpd writes
/// them, with the client in its fixed place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// smtpd accepted a connection: `connect from C`.
    Connect,
    /// `warning: C: SASL <MECH> authentication failed: ...`.
    SaslFailed,
    /// `lost connection after AUTH from C`.
    LostAfterAuth,
    /// `disconnect from C ...` (the session's last line).
    Disconnect,
    /// `NOQUEUE: reject: RCPT from C: 554 ...` (relaying refused).
    RelayRejected,
}

impl Event {
    /// Is `line` this event, caused by `addr`?
    pub fn is(self, line: &str, addr: IpAddr) -> bool {
        if !line.contains("/smtpd[") {
            return false;
        }
        let c = client(addr);
        let Some((_, msg)) = line.split_once("]: ") else {
            return false;
        };
        match self {
            Event::Connect => msg == format!("connect from {c}"),
            Event::SaslFailed => {
                msg.starts_with(&format!("warning: {c}: SASL "))
                    && msg.contains(" authentication failed")
            }
            Event::LostAfterAuth => msg == format!("lost connection after AUTH from {c}"),
            Event::Disconnect => msg.starts_with(&format!("disconnect from {c} ")),
            Event::RelayRejected => {
                msg.starts_with(&format!("NOQUEUE: reject: RCPT from {c}: 554 "))
            }
        }
    }
}

/// How many lines of `path` are `ev` from `addr`.
pub fn count(path: &Path, ev: Event, addr: IpAddr) -> usize {
    lines(path).iter().filter(|l| ev.is(l, addr)).count()
}

/// Follows a file from its start, noting when each line appeared (polled
/// every `poll`), until dropped.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tail {
    pub fn start(path: &Path, poll: Duration) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, p) = (Arc::clone(&seen), Arc::clone(&stop), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("tail".into())
            .spawn(move || follow(&p, poll, &s, &st))
            .context("spawning a log tail")?;
        Ok(Self {
            path: path.to_path_buf(),
            seen,
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line so far with the moment it was first read.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn follow(path: &Path, poll: Duration, seen: &Mutex<Vec<(Instant, String)>>, stop: &AtomicBool) {
    let mut file: Option<File> = None;
    let mut pos = 0u64;
    let mut partial = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        if file.is_none() {
            file = File::open(path).ok();
        }
        let mut got = false;
        if let Some(f) = file.as_mut()
            && f.seek(SeekFrom::Start(pos)).is_ok()
        {
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got = true;
                pos += n as u64;
                partial.extend_from_slice(&buf[..n]);
            }
        }
        if got {
            let now = Instant::now();
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                s.push((now, String::from_utf8_lossy(&line[..i]).into_owned()));
            }
        } else {
            std::thread::sleep(poll);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_recognised_in_smtpd_lines_only() {
        let a: IpAddr = "203.0.113.11".parse().unwrap();
        let v6: IpAddr = "2001:db8:a:1::15".parse().unwrap();
        let p = "Dec 01 21:39:33 lab1 postfix-lab1/smtpd[22547]: ";
        let s = "Dec 01 21:39:33 lab1 postfix-lab1/submission/smtpd[22547]: ";
        assert!(Event::Connect.is(&format!("{p}connect from unknown[203.0.113.11]"), a));
        assert!(!Event::Connect.is(&format!("{p}connect from unknown[203.0.113.111]"), a));
        assert!(!Event::Connect.is(
            &format!("{p}disconnect from unknown[203.0.113.11] ehlo=1"),
            a
        ));
        assert!(Event::SaslFailed.is(
            &format!(
                "{s}warning: unknown[2001:db8:a:1::15]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice@lab.test"
            ),
            v6
        ));
        assert!(Event::LostAfterAuth.is(
            &format!("{p}lost connection after AUTH from unknown[203.0.113.11]"),
            a
        ));
        assert!(Event::Disconnect.is(
            &format!("{p}disconnect from unknown[203.0.113.11] ehlo=1 auth=0/1 commands=1/2"),
            a
        ));
        assert!(Event::RelayRejected.is(
            &format!("{p}NOQUEUE: reject: RCPT from unknown[203.0.113.11]: 554 5.7.1 <v@example.net>: Relay access denied; from=<a@b> to=<v@example.net> proto=ESMTP helo=<x>"),
            a
        ));
        assert!(!Event::Connect.is(
            "Dec 01 21:39:33 lab1 postfix-lab1/qmgr[1]: connect from unknown[203.0.113.11]",
            a
        ));
    }
}
