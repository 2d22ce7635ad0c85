//! Store writes off the ban path: every store write is durable (an fsync),
//! so the ban is written to the maps first and its record follows from this
//! thread, which also merges a burst of bans into one transaction.
use std::{
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::SystemTime,
};

use ipnet::IpNet;

use crate::state::{BanRecord, Store};

enum Op {
    Record(BanRecord),
    Remove(IpNet),
    Purge(SystemTime),
    /// Answered once everything sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

pub struct StateWriter {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

/// Most records merged into one transaction.
const MAX_BURST: usize = 4096;

impl StateWriter {
    pub fn spawn(store: Arc<Store>) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || run(&store, &rx))
            .map_err(|e| log::error!("cannot start the state writer: {e}"))
            .ok();
        StateWriter {
            tx: Some(tx),
            thread,
        }
    }

    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx
            && tx.send(op).is_err()
        {
            log::error!("state writer is gone; ban metadata is not being saved");
        }
    }

    pub fn record(&self, rec: BanRecord) {
        self.send(Op::Record(rec));
    }

    pub fn remove(&self, net: IpNet) {
        self.send(Op::Remove(net));
    }

    pub fn purge(&self, before: SystemTime) {
        self.send(Op::Purge(before));
    }

    /// Waits until every write sent so far is durable.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Op::Flush(tx));
        let _ = rx.recv();
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

fn run(store: &Store, rx: &mpsc::Receiver<Op>) {
    let mut burst: Vec<BanRecord> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Record(r) => burst.push(r),
                Op::Remove(net) => {
                    write(store, &mut burst);
                    if let Err(e) = store.remove(&net) {
                        log::error!("state store: removing {net}: {e}");
                    }
                }
                Op::Purge(before) => {
                    write(store, &mut burst);
                    if let Err(e) = store.purge_expired(before) {
                        log::warn!("state store: purging: {e}");
                    }
                }
                Op::Flush(done) => {
                    write(store, &mut burst);
                    let _ = done.send(());
                }
            }
            if burst.len() >= MAX_BURST {
                write(store, &mut burst);
            }
            next = rx.try_recv().ok();
        }
        // Nothing more queued: make the burst durable now.
        write(store, &mut burst);
    }
}

fn write(store: &Store, burst: &mut Vec<BanRecord>) {
    if burst.is_empty() {
        return;
    }
    if let Err(e) = store.record_bans(burst) {
        log::error!("state store: saving {} ban record(s): {e}", burst.len());
    }
    burst.clear();
}
