//! The redb-backed store of ban metadata and per-host ban history.
use std::{
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::record::{
    BanRecord, DecodeError, expiry_ns, from_unix_ns, key_net, net_key, stored_expiry, to_unix_ns,
};

/// net key -> encoded [`BanRecord`]: the bans in force (or not yet purged).
const BANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bans");
/// host key -> little-endian u64 unix-ns ban times, oldest first. Outlives the
/// bans themselves so a recidive-style jail can count past bans.
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
/// big-endian expiry unix ns ++ net key -> empty: bans in order of expiry, so
/// cleanup reads only what expired instead of every record.
const EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("expiry");

fn expiry_key(exp_ns: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&exp_ns.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Ban times remembered per host; older ones fall off.
pub const MAX_HISTORY_PER_HOST: usize = 64;

pub const DB_FILE: &str = "bans.redb";

/// redb's quick-repair saves the allocator state on every commit so reopening
/// after a crash skips the full repair. Measured on this class of machine:
/// ~2x the cost per commit (13 ms vs 6 ms under load) for a repair that takes
/// ~0.5 s per 100,000 bans without it. Bans come in bursts the agent batches,
/// crashes are rare, and half a second per 100k is "seconds": leave it off.
const QUICK_REPAIR: bool = false;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// redb allows one process at a time; the running agent holds the store.
    #[error("state store {path} is in use by another process (is the agent running?)")]
    Locked { path: PathBuf },
    #[error("state store {path}: {source}")]
    Db {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("state store {path}: record {key}: {source}")]
    Decode {
        path: PathBuf,
        key: String,
        source: DecodeError,
    },
    #[error("state store {path}: encoding record for {net}: {source}")]
    Encode {
        path: PathBuf,
        net: IpNet,
        source: serde_json::Error,
    },
}

/// Crash-safe ban metadata. Every write is durable when the call returns.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

// The transaction closures speak redb's own (large) error type; it is boxed
// once it leaves this module.
#[allow(clippy::result_large_err)]
impl Store {
    /// Opens (creating if needed, directory mode 0700) the store under `dir`.
    /// After a crash redb recovers to the last committed transaction.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let dir_err = |source| StateError::Dir {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
            // The mode given to mkdir is filtered by the umask; make it exact.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }
        let path = dir.join(DB_FILE);
        let db = match Database::builder().create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StateError::Locked { path });
            }
            Err(e) => {
                return Err(StateError::Db {
                    path,
                    source: Box::new(e.into()),
                });
            }
        };
        let store = Store { db, path };
        // Create the tables once so readers never meet a missing table.
        store.write(|tx| {
            tx.open_table(BANS)?;
            tx.open_table(HISTORY)?;
            tx.open_table(EXPIRY)?;
            Ok(())
        })?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores (or replaces) the record of `rec.net` and adds `rec.banned_at`
    /// to the host's ban history (once: recording the same ban again is a no-op
    /// for the history). Durable on return.
    pub fn record_ban(&self, rec: &BanRecord) -> Result<(), StateError> {
        self.record_bans(std::slice::from_ref(rec))
    }

    /// Like [`record_ban`](Self::record_ban) for many records in one
    /// transaction: one fsync for the whole burst.
    pub fn record_bans(&self, recs: &[BanRecord]) -> Result<(), StateError> {
        let encoded = recs
            .iter()
            .map(|r| {
                r.encode().map_err(|source| StateError::Encode {
                    path: self.path.clone(),
                    net: r.net,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write(|tx| {
            let mut bans = tx.open_table(BANS)?;
            let mut hist = tx.open_table(HISTORY)?;
            let mut exp = tx.open_table(EXPIRY)?;
            for (r, bytes) in recs.iter().zip(&encoded) {
                let key = net_key(&r.net);
                let old = bans
                    .insert(key.as_slice(), bytes.as_slice())?
                    .and_then(|v| stored_expiry(v.value()));
                if let Some(e) = old {
                    exp.remove(expiry_key(e, &key).as_slice())?;
                }
                if let Some(e) = r.expires_at.map(|t| expiry_ns(Some(t))) {
                    exp.insert(expiry_key(e, &key).as_slice(), [].as_slice())?;
                }
                let mut times = match hist.get(key.as_slice())? {
                    Some(v) => decode_times(v.value()),
                    None => Vec::new(),
                };
                let at = to_unix_ns(r.banned_at);
                if !times.contains(&at) {
                    times.push(at);
                    times.sort_unstable();
                    let drop = times.len().saturating_sub(MAX_HISTORY_PER_HOST);
                    times.drain(..drop);
                    hist.insert(key.as_slice(), encode_times(&times).as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Removes the record of `net`; the ban history stays. Returns the removed record.
    pub fn remove(&self, net: &IpNet) -> Result<Option<BanRecord>, StateError> {
        let key = net_key(net);
        let raw = self.write(|tx| {
            let mut bans = tx.open_table(BANS)?;
            let old = bans.remove(key.as_slice())?.map(|v| v.value().to_vec());
            if let Some(e) = old.as_deref().and_then(stored_expiry) {
                tx.open_table(EXPIRY)?
                    .remove(expiry_key(e, &key).as_slice())?;
            }
            Ok(old)
        })?;
        raw.map(|b| self.decode(&key, &b)).transpose()
    }

    pub fn get(&self, net: &IpNet) -> Result<Option<BanRecord>, StateError> {
        let key = net_key(net);
        let raw = self.read(|tx| {
            let bans = tx.open_table(BANS)?;
            Ok(bans.get(key.as_slice())?.map(|v| v.value().to_vec()))
        })?;
        raw.map(|b| self.decode(&key, &b)).transpose()
    }

    /// Every stored ban whose net contains `addr`, longest prefix first: what
    /// the XDP program would match for a packet from `addr` (one lookup per length).
    pub fn covering(&self, addr: IpAddr) -> Result<Vec<BanRecord>, StateError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let raws = self.read(|tx| {
            let bans = tx.open_table(BANS)?;
            let mut out = Vec::new();
            for len in (0..=max).rev() {
                let Ok(net) = IpNet::new(addr, len) else {
                    continue;
                };
                let key = net_key(&net);
                if let Some(v) = bans.get(key.as_slice())? {
                    out.push((key, v.value().to_vec()));
                }
            }
            Ok(out)
        })?;
        raws.iter().map(|(k, b)| self.decode(k, b)).collect()
    }

    /// Calls `f` for every stored record inside one read transaction, without
    /// collecting them first. Undecodable records are skipped with a warning
    /// (one bad record must not stop the agent from restoring the others);
    /// returns (records passed to f, records skipped).
    pub fn for_each(&self, mut f: impl FnMut(BanRecord)) -> Result<(usize, usize), StateError> {
        self.read(|tx| {
            let bans = tx.open_table(BANS)?;
            let (mut ok, mut bad) = (0, 0);
            for entry in bans.iter()? {
                let (k, v) = entry?;
                match BanRecord::decode(v.value()) {
                    Ok(r) => {
                        ok += 1;
                        f(r);
                    }
                    Err(e) => {
                        bad += 1;
                        log::warn!(
                            "state store {}: skipping record {}: {e}",
                            self.path.display(),
                            hex(k.value())
                        );
                    }
                }
            }
            Ok((ok, bad))
        })
    }

    /// All stored records (see [`for_each`](Self::for_each) for skipped ones).
    pub fn all(&self) -> Result<Vec<BanRecord>, StateError> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()?).unwrap_or(0));
        self.for_each(|r| out.push(r))?;
        Ok(out)
    }

    pub fn len(&self) -> Result<u64, StateError> {
        self.read(|tx| Ok(tx.open_table(BANS)?.len()?))
    }

    pub fn is_empty(&self) -> Result<bool, StateError> {
        Ok(self.len()? == 0)
    }

    /// Nets whose ban ended at or before `now` (permanent bans never do),
    /// soonest expired first. Reads only the expiry index.
    pub fn expired_before(&self, now: SystemTime) -> Result<Vec<IpNet>, StateError> {
        let end = expiry_key(to_unix_ns(now).saturating_add(1), &[]);
        self.read(|tx| {
            let exp = tx.open_table(EXPIRY)?;
            let mut out = Vec::new();
            for e in exp.range(..end.as_slice())? {
                let (k, _) = e?;
                out.extend(k.value().get(8..).and_then(key_net));
            }
            Ok(out)
        })
    }

    /// Removes the records of bans that ended at or before `now`, in one
    /// transaction, and returns them. History is kept. Reads only the expiry
    /// index and the expired records, however many bans are stored.
    pub fn purge_expired(&self, now: SystemTime) -> Result<Vec<BanRecord>, StateError> {
        let end = expiry_key(to_unix_ns(now).saturating_add(1), &[]);
        let raws = self.write(|tx| {
            let mut exp = tx.open_table(EXPIRY)?;
            let mut bans = tx.open_table(BANS)?;
            let mut keys = Vec::new();
            for e in exp.range(..end.as_slice())? {
                keys.push(e?.0.value().to_vec());
            }
            let mut raws = Vec::with_capacity(keys.len());
            for k in keys {
                exp.remove(k.as_slice())?;
                let net = k.get(8..).unwrap_or_default();
                if let Some(v) = bans.remove(net)? {
                    raws.push((net.to_vec(), v.value().to_vec()));
                }
            }
            Ok(raws)
        })?;
        let mut gone = Vec::with_capacity(raws.len());
        for (k, v) in raws {
            match self.decode(&k, &v) {
                Ok(r) => gone.push(r),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(gone)
    }

    /// Times `host` (an address, or the net of a prefix ban) has been banned,
    /// across jails and including bans that have expired (up to
    /// [`MAX_HISTORY_PER_HOST`]). A store read error counts as 0 and is logged:
    /// a failing store must not stop a ban.
    pub fn ban_count(&self, host: impl Into<IpNet>) -> u32 {
        self.ban_count_since(host, SystemTime::UNIX_EPOCH)
    }

    /// Like [`ban_count`](Self::ban_count), counting only bans at or after `since`.
    pub fn ban_count_since(&self, host: impl Into<IpNet>, since: SystemTime) -> u32 {
        let host = host.into();
        match self.ban_history(host) {
            Ok(times) => {
                let n = times.iter().filter(|t| **t >= since).count();
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            Err(e) => {
                log::warn!("ban history of {host}: {e}");
                0
            }
        }
    }

    /// When `host` was banned, oldest first.
    pub fn ban_history(&self, host: impl Into<IpNet>) -> Result<Vec<SystemTime>, StateError> {
        let key = net_key(&host.into());
        self.read(|tx| {
            let hist = tx.open_table(HISTORY)?;
            let times = match hist.get(key.as_slice())? {
                Some(v) => decode_times(v.value()),
                None => Vec::new(),
            };
            Ok(times.into_iter().map(from_unix_ns).collect())
        })
    }

    /// Forgets hosts whose last ban is older than `before` (keeps the history
    /// table bounded by time as well as per host). Returns how many were forgotten.
    pub fn prune_history(&self, before: SystemTime) -> Result<usize, StateError> {
        let cutoff = to_unix_ns(before);
        self.write(|tx| {
            let mut hist = tx.open_table(HISTORY)?;
            let mut n = 0;
            hist.retain(|_, v| {
                let keep = decode_times(v).last().is_some_and(|t| *t >= cutoff);
                n += usize::from(!keep);
                keep
            })?;
            Ok(n)
        })
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<BanRecord, StateError> {
        BanRecord::decode(bytes).map_err(|source| StateError::Decode {
            path: self.path.clone(),
            key: hex(key),
            source,
        })
    }

    /// Runs `f` in a write transaction committed with immediate durability:
    /// when this returns Ok the data survives kill -9 and power loss (as far
    /// as fsync holds).
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let run = || -> Result<T, redb::Error> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            tx.set_quick_repair(QUICK_REPAIR);
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(|source| StateError::Db {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }

    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let run = || -> Result<T, redb::Error> { f(&self.db.begin_read()?) };
        run().map_err(|source| StateError::Db {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }
}

fn decode_times(v: &[u8]) -> Vec<u64> {
    v.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn encode_times(times: &[u64]) -> Vec<u8> {
    times.iter().flat_map(|t| t.to_le_bytes()).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Records a ban typed on the command line when no agent runs (the agent
/// holds the store while it runs; then the CLI goes through the control
/// socket). `times_banned` counts this ban. Returns what was stored.
pub fn record_manual(
    state_dir: &Path,
    net: IpNet,
    jail: &str,
    reason: Option<&str>,
    ttl: Option<Duration>,
    ports: Vec<u16>,
) -> Result<BanRecord, StateError> {
    let store = Store::open(state_dir)?;
    let mut rec = BanRecord::manual(net, jail, reason, ttl, ports);
    rec.times_banned = store.ban_count(rec.net).saturating_add(1);
    store.record_ban(&rec)?;
    Ok(rec)
}

/// [`record_manual`] for many bans (`fail2xdp ban --file`): one open, one
/// transaction, one fsync. Build the records with [`BanRecord::manual`];
/// `times_banned` is filled in here. Returns how many were recorded.
pub fn record_manual_many(state_dir: &Path, mut recs: Vec<BanRecord>) -> Result<usize, StateError> {
    let store = Store::open(state_dir)?;
    for r in &mut recs {
        r.times_banned = store.ban_count(r.net).saturating_add(1);
    }
    store.record_bans(&recs)?;
    Ok(recs.len())
}

/// Forgets the record of `net` when no agent runs (see [`record_manual`]).
/// Returns whether there was one.
pub fn remove_manual(state_dir: &Path, net: &IpNet) -> Result<bool, StateError> {
    Ok(Store::open(state_dir)?.remove(net)?.is_some())
}
