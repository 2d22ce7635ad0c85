//! Store writes off the ban path: every store write is durable (an fsync),
//! so the ban is written to the maps first and its record follows from this
//! thread, which also merges a burst of bans into one transaction. A write
//! that fails is logged and kept in [`Health`], which `status` shows: bans
//! stay enforced, but they would not survive a reboot.
use std::{
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::SystemTime,
};

use ipnet::IpNet;

use super::{BanRecord, Store};
use crate::ban::Origin;

enum Op {
    Record(BanRecord),
    Remove(IpNet, Option<Origin>),
    Purge(SystemTime),
    PruneHistory(SystemTime),
    /// Answered once everything sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

/// The store's last write problem, if any, and how many writes failed;
/// whether it could be opened at all, and whether it had to be replaced.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    pub failed_writes: u64,
    pub last_error: Option<String>,
    /// The store could not be opened (why): nothing is recorded.
    #[serde(default)]
    pub unavailable: Option<String>,
    /// It was damaged at start and moved aside (where, and why).
    #[serde(default)]
    pub recovered: Option<String>,
}

pub struct StateWriter {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    health: Arc<Mutex<Health>>,
}

/// Most records merged into one transaction.
const MAX_BURST: usize = 4096;

impl StateWriter {
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let health = Arc::new(Mutex::new(Health::default()));
        let h = health.clone();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || run(&store, &rx, &h))
            .map_err(|e| log::error!("cannot start the state writer: {e}"))
            .ok();
        StateWriter {
            tx: Some(tx),
            thread,
            health,
        }
    }

    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx
            && tx.send(op).is_err()
        {
            note(
                &self.health,
                "the state writer is gone; bans are not being saved".into(),
            );
        }
    }

    pub fn record(&self, rec: BanRecord) {
        self.send(Op::Record(rec));
    }

    pub fn remove(&self, net: IpNet, origin: Option<Origin>) {
        self.send(Op::Remove(net, origin));
    }

    pub fn purge(&self, before: SystemTime) {
        self.send(Op::Purge(before));
    }

    pub fn prune_history(&self, before: SystemTime) {
        self.send(Op::PruneHistory(before));
    }

    /// Waits until every write sent so far is durable (or failed: see
    /// [`health`](Self::health)).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Op::Flush(tx));
        let _ = rx.recv();
    }

    pub fn health(&self) -> Health {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn note(health: &Mutex<Health>, msg: String) {
    log::error!("state store: {msg}");
    if let Ok(mut h) = health.lock() {
        h.failed_writes += 1;
        h.last_error = Some(msg);
    }
}

fn run(store: &Store, rx: &mpsc::Receiver<Op>, health: &Mutex<Health>) {
    let mut burst: Vec<BanRecord> = Vec::new();
    let fail = |what: String, e: &(dyn std::error::Error + 'static)| {
        note(health, format!("{what}: {}", crate::error_chain(e)));
    };
    let write = |burst: &mut Vec<BanRecord>| {
        if burst.is_empty() {
            return;
        }
        if let Err(e) = store.record_bans(burst) {
            fail(format!("saving {} ban record(s)", burst.len()), &e);
        } else if let Ok(mut h) = health.lock() {
            // A later write that works clears the alarm; the count stays.
            h.last_error = None;
        }
        burst.clear();
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Record(r) => burst.push(r),
                Op::Remove(net, origin) => {
                    write(&mut burst);
                    if let Err(e) = store.remove(&net, origin.as_ref()) {
                        fail(format!("removing {net}"), &e);
                    }
                }
                Op::Purge(before) => {
                    write(&mut burst);
                    if let Err(e) = store.purge_expired(before) {
                        fail("purging ended bans".into(), &e);
                    }
                    if let Err(e) = store.purge_expired_imports(before) {
                        fail("purging ended imports".into(), &e);
                    }
                }
                Op::PruneHistory(before) => {
                    write(&mut burst);
                    match store.prune_history(before) {
                        Ok(n) if n > 0 => {
                            log::debug!("state store: forgot the history of {n} network(s)")
                        }
                        Ok(_) => {}
                        Err(e) => fail("pruning the ban history".into(), &e),
                    }
                }
                Op::Flush(done) => {
                    write(&mut burst);
                    let _ = done.send(());
                }
            }
            if burst.len() >= MAX_BURST {
                write(&mut burst);
            }
            next = rx.try_recv().ok();
        }
        // Nothing more queued: make the burst durable now.
        write(&mut burst);
    }
}
