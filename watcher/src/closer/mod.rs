//! Closing a banned source's open connections. The data plane drops a
//! banned source's packets from the moment of the ban, its FIN and RST
//! included, so a connection it opened just before keeps its server
//! process (an smtpd, a Dovecot login) until that server's own timeout
//! (Postfix: 300 s). With `close_connections` (the default) every ban
//! aborts the TCP connections it covers, as `ss -K` would, so the server
//! gets its process back at once.
//!
//! Aborting sockets needs CAP_NET_ADMIN, which the agent drops after
//! attaching. A helper process (`fail2xdp closer-helper`, the same binary)
//! is started before the drop and keeps CAP_NET_ADMIN and nothing else;
//! it only reads networks from a pipe and aborts connections of those. The
//! agent's own threads that feed it start after the drop, so they hold no
//! capability.
//!
//! Bans reach it as the ban service's events ([`Closing`] is a
//! subscriber): after the map write, off the ban path (a burst of bans is
//! one socket dump). Closing is an extra; the ban is in force either way.
//! When it cannot be done (the helper could not start or died, the kernel
//! lacks sock_diag destroy) `status` and the log say so.
mod diag;
pub mod helper;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
};

use serde::{Deserialize, Serialize};

pub use diag::Target;

use crate::ban::{BanEvent, Subscriber};

/// The hidden subcommand the helper runs as.
pub const HELPER_COMMAND: &str = "closer-helper";

/// What `status` says about closing connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosingStatus {
    /// Connections of banned sources closed since the agent started.
    pub closed: u64,
    /// Why connections are not being closed now (None: they are).
    pub problem: Option<String>,
}

/// The helper started, its threads not yet (see the module documentation).
pub struct Closer {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Closer {
    /// Starts the helper. Call it while the agent still has CAP_NET_ADMIN.
    pub fn spawn() -> std::io::Result<Closer> {
        let mut child = Command::new("/proc/self/exe")
            .arg(HELPER_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("the helper's pipes are missing"));
        };
        Ok(Closer {
            child,
            stdin,
            stdout,
        })
    }

    /// Starts the threads that feed the helper and read its answers. Call
    /// it after capabilities are dropped: threads inherit the caller's.
    pub fn start(self) -> Arc<Closing> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel::<Target>();
        let Closer {
            child,
            stdin,
            stdout,
        } = self;
        let s = shared.clone();
        let fed = std::thread::Builder::new()
            .name("closer-feed".into())
            .spawn(move || feed(rx, stdin, &s));
        let s = shared.clone();
        let read = std::thread::Builder::new()
            .name("closer-read".into())
            .spawn(move || read_answers(stdout, child, &s));
        if let Err(e) = fed.and(read) {
            shared.set_problem(format!("its threads could not start: {e}"));
        }
        Arc::new(Closing {
            shared,
            tx: Mutex::new(Some(tx)),
        })
    }
}

#[derive(Default)]
struct Shared {
    closed: AtomicU64,
    problem: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl Shared {
    fn set_problem(&self, why: String) {
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_deref() != Some(why.as_str()) {
            log::warn!("open connections of banned sources are not closed: {why}");
        }
        *p = Some(why);
    }

    fn clear_problem(&self) {
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if p.take().is_some() {
            log::info!("open connections of banned sources are closed again");
        }
    }
}

/// Bans in, lines to the helper out; a burst goes in one write.
fn feed(rx: mpsc::Receiver<Target>, mut stdin: ChildStdin, s: &Shared) {
    while let Ok(first) = rx.recv() {
        let mut text = helper::encode(&first);
        while let Ok(t) = rx.try_recv() {
            text.push_str(&helper::encode(&t));
        }
        if let Err(e) = stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
        {
            if !s.stopping.load(Ordering::Relaxed) {
                s.set_problem(format!("writing to the helper: {e}"));
            }
            return;
        }
    }
    // The channel closed: the agent is stopping; dropping stdin ends the helper.
}

fn read_answers(stdout: ChildStdout, mut child: Child, s: &Shared) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("closed ") {
            let Some((n, net)) = rest.split_once(' ') else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            s.closed.fetch_add(n, Ordering::Relaxed);
            log::info!("closed {n} open connection(s) of banned {net}");
        } else if let Some(why) = line.strip_prefix("error ") {
            s.set_problem(why.to_string());
        } else if line == "done" {
            s.clear_problem();
        }
    }
    let status = child.wait();
    if !s.stopping.load(Ordering::Relaxed) {
        s.set_problem(match status {
            Ok(st) => format!("the helper process ended ({st})"),
            Err(e) => format!("the helper process ended: {e}"),
        });
    }
}

/// The running closer: subscribed to the ban service.
pub struct Closing {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Target>>>,
}

impl Closing {
    /// A closer that never started, and why (shown in `status`).
    pub fn unavailable(why: String) -> Arc<Closing> {
        let shared = Arc::new(Shared::default());
        shared.set_problem(why);
        Arc::new(Closing {
            shared,
            tx: Mutex::new(None),
        })
    }

    pub fn status(&self) -> ClosingStatus {
        ClosingStatus {
            closed: self.shared.closed.load(Ordering::Relaxed),
            problem: self
                .shared
                .problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Ends the helper (its stdin closes); what it was given it finishes.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Subscriber for Closing {
    fn event(&self, e: &BanEvent) {
        let targets: Vec<Target> = match e {
            BanEvent::Banned(b) if !b.dry_run => vec![Target {
                net: b.net,
                ports: b.ports.clone(),
            }],
            // A blocklist (`ban --file`): a burst the helper takes in one dump.
            BanEvent::Imported { nets, ports, .. } => nets
                .iter()
                .map(|&net| Target {
                    net,
                    ports: ports.clone(),
                })
                .collect(),
            _ => return,
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            for t in targets {
                // The feeder gone: its problem is already in the status.
                let _ = tx.send(t);
            }
        }
    }
}
