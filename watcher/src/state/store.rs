//! The redb-backed store: ban claims (one per network and origin), their
//! expiry index, per-network ban history, blocklist imports kept compactly
//! (imports.rs) and a few instance settings.
use std::{
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::SystemTime,
};

use ipnet::IpNet;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::record::{
    BanRecord, DecodeError, claim_key, claims_range, expiry_ns, from_unix_ns, net_key, net_key_len,
    stored_expiry, to_unix_ns,
};
use crate::ban::Origin;

/// claim key (net key, 0, origin label) -> encoded [`BanRecord`]: the bans
/// in force (or not yet purged). The first format keyed by the net alone;
/// such keys are migrated on open.
pub(super) const BANS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bans");
/// net key -> little-endian u64 unix-ns ban times, oldest first. Outlives the
/// bans themselves so repeat offenders are recognised; pruned by age.
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
/// big-endian expiry unix ns ++ claim key -> empty: claims in order of
/// expiry, so cleanup reads only what expired instead of every record.
const EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("expiry");
/// name -> JSON: instance settings the CLI needs when no agent runs.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn expiry_key(exp_ns: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&exp_ns.to_be_bytes());
    k.extend_from_slice(key);
    k
}

type Table<'tx> = redb::Table<'tx, &'static [u8], &'static [u8]>;

/// The keys of the claims on exactly `net`: `origin`'s, or every origin's.
fn claim_keys(
    bans: &Table<'_>,
    net: &IpNet,
    origin: Option<&Origin>,
) -> Result<Vec<Vec<u8>>, redb::StorageError> {
    if let Some(o) = origin {
        return Ok(vec![claim_key(net, o)]);
    }
    let (lo, hi) = claims_range(net);
    let mut keys = Vec::new();
    for e in bans.range(lo.as_slice()..hi.as_slice())? {
        keys.push(e?.0.value().to_vec());
    }
    Ok(keys)
}

/// Removes one claim and its expiry index entry; the claim's value, if it
/// was there.
fn remove_claim(
    bans: &mut Table<'_>,
    exp: &mut Table<'_>,
    k: &[u8],
) -> Result<Option<Vec<u8>>, redb::StorageError> {
    let Some(v) = bans.remove(k)?.map(|v| v.value().to_vec()) else {
        return Ok(None);
    };
    if let Some(e) = stored_expiry(&v) {
        exp.remove(expiry_key(e, k).as_slice())?;
    }
    Ok(Some(v))
}

/// Ban times remembered per network; older ones fall off.
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
    #[error("state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// redb allows one process at a time; the running agent holds the store.
    #[error("state store {path} is in use by another process (is the agent running?)")]
    Locked { path: PathBuf },
    #[error("state store {path}")]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("state store {path}: record {key}")]
    Decode {
        path: PathBuf,
        key: String,
        #[source]
        source: DecodeError,
    },
    #[error("state store {path}: encoding a record for {net}")]
    Encode {
        path: PathBuf,
        net: IpNet,
        #[source]
        source: serde_json::Error,
    },
}

/// Opens (or creates) the database file. redb asserts on some damaged files
/// (a truncated one trips `raw_file_len() >= layout().len()`) instead of
/// returning an error: that is caught and reported as corruption, so a bad
/// file never takes the agent down.
fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| Database::builder().create(path));
    std::panic::set_hook(quiet);
    r.unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the database file is inconsistent".into());
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
            what,
        )))
    })
}

/// A damaged store file moved aside by [`Store::open_recovering`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovered {
    pub moved_to: PathBuf,
    /// What opening it said.
    pub why: String,
}

/// Whether a failed open means the file itself is bad (and not that the
/// host keeps us from reading or writing it: permissions, a full or
/// read-only file system, which moving the file would not cure).
fn is_damage(e: &StateError) -> bool {
    use std::io::ErrorKind as K;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        let io = c
            .downcast_ref::<std::io::Error>()
            .or(match c.downcast_ref::<redb::Error>() {
                Some(redb::Error::Io(io)) => Some(io),
                _ => None,
            });
        if let Some(io) = io {
            return !matches!(
                io.kind(),
                K::PermissionDenied
                    | K::StorageFull
                    | K::ReadOnlyFilesystem
                    | K::QuotaExceeded
                    | K::OutOfMemory
            );
        }
        cur = c.source();
    }
    true
}

/// Crash-safe ban metadata. Every write is durable when the call returns.
pub struct Store {
    pub(super) db: Database,
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

#[expect(
    clippy::result_large_err,
    reason = "transaction closures speak redb's own large error type; it is boxed once it leaves this module"
)]
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
        let db = match open_db(&path) {
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
        // Create the tables once so readers never meet a missing table, and
        // bring records of the first format to one claim per origin.
        store.write(|tx| {
            tx.open_table(HISTORY)?;
            tx.open_table(META)?;
            super::imports::create_tables(tx)?;
            let mut bans = tx.open_table(BANS)?;
            let mut exp = tx.open_table(EXPIRY)?;
            let mut old = Vec::new();
            for e in bans.iter()? {
                let (k, v) = e?;
                if net_key_len(k.value()) == Some(k.value().len()) {
                    old.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            for (k, v) in old {
                bans.remove(k.as_slice())?;
                if let Some(e) = stored_expiry(&v) {
                    exp.remove(expiry_key(e, &k).as_slice())?;
                }
                let Ok(r) = BanRecord::decode(&v) else {
                    log::warn!("state store: dropping unreadable record {}", hex(&k));
                    continue;
                };
                let Ok(bytes) = r.encode() else { continue };
                let ck = claim_key(&r.net, &r.origin);
                bans.insert(ck.as_slice(), bytes.as_slice())?;
                if let Some(e) = r.expires_at.map(|t| expiry_ns(Some(t))) {
                    exp.insert(expiry_key(e, &ck).as_slice(), [].as_slice())?;
                }
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// [`open`](Self::open), and when the file is damaged (truncated,
    /// zeroed, garbage: anything but the host refusing to let us read or
    /// write it) moves it aside, never deleting it, and starts a new store.
    /// Returns what was moved where and why.
    pub fn open_recovering(dir: &Path) -> Result<(Self, Option<Recovered>), StateError> {
        let err = match Store::open(dir) {
            Ok(s) => return Ok((s, None)),
            Err(e @ StateError::Db { .. }) if is_damage(&e) => e,
            Err(e) => return Err(e),
        };
        let db = dir.join(DB_FILE);
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let moved_to = dir.join(format!("{DB_FILE}.damaged-{secs}"));
        std::fs::rename(&db, &moved_to).map_err(|source| StateError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let store = Store::open(dir)?;
        Ok((
            store,
            Some(Recovered {
                moved_to,
                why: crate::error_chain(&err),
            }),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores (or replaces) the claim of `rec.origin` on `rec.net` and adds
    /// `rec.banned_at` to the network's ban history (once: recording the
    /// same ban again is a no-op for the history). Durable on return.
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
                let key = claim_key(&r.net, &r.origin);
                let old = bans
                    .insert(key.as_slice(), bytes.as_slice())?
                    .and_then(|v| stored_expiry(v.value()));
                if let Some(e) = old {
                    exp.remove(expiry_key(e, &key).as_slice())?;
                }
                if let Some(e) = r.expires_at.map(|t| expiry_ns(Some(t))) {
                    exp.insert(expiry_key(e, &key).as_slice(), [].as_slice())?;
                }
                let nk = net_key(&r.net);
                let mut times = match hist.get(nk.as_slice())? {
                    Some(v) => decode_times(v.value()),
                    None => Vec::new(),
                };
                let at = to_unix_ns(r.banned_at);
                if !times.contains(&at) {
                    times.push(at);
                    times.sort_unstable();
                    let drop = times.len().saturating_sub(MAX_HISTORY_PER_HOST);
                    times.drain(..drop);
                    hist.insert(nk.as_slice(), encode_times(&times).as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Removes the claims on exactly `net`: every origin's, or only
    /// `origin`'s. The ban history stays. Returns the removed claims.
    pub fn remove(
        &self,
        net: &IpNet,
        origin: Option<&Origin>,
    ) -> Result<Vec<BanRecord>, StateError> {
        let raws = self.write(|tx| {
            let mut bans = tx.open_table(BANS)?;
            let mut exp = tx.open_table(EXPIRY)?;
            let mut out = Vec::new();
            for k in claim_keys(&bans, net, origin)? {
                if let Some(v) = remove_claim(&mut bans, &mut exp, &k)? {
                    out.push((k, v));
                }
            }
            Ok(out)
        })?;
        raws.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Removes the claims of these (network, origin) pairs in one
    /// transaction (one fsync for a whole blocklist); returns the claims
    /// that were there.
    pub fn remove_claims(&self, claims: &[(IpNet, Origin)]) -> Result<Vec<BanRecord>, StateError> {
        let raws = self.write(|tx| {
            let mut bans = tx.open_table(BANS)?;
            let mut exp = tx.open_table(EXPIRY)?;
            let mut out = Vec::new();
            for (net, origin) in claims {
                let k = claim_key(net, origin);
                if let Some(v) = remove_claim(&mut bans, &mut exp, &k)? {
                    out.push((k, v));
                }
            }
            Ok(out)
        })?;
        raws.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// [`remove`](Self::remove) for many networks, in one transaction
    /// (`unban --all`); returns how many claims went.
    pub fn remove_many(
        &self,
        nets: &[IpNet],
        origin: Option<&Origin>,
    ) -> Result<usize, StateError> {
        self.write(|tx| {
            let mut bans = tx.open_table(BANS)?;
            let mut exp = tx.open_table(EXPIRY)?;
            let mut n = 0;
            for net in nets {
                for k in claim_keys(&bans, net, origin)? {
                    n += usize::from(remove_claim(&mut bans, &mut exp, &k)?.is_some());
                }
            }
            Ok(n)
        })
    }

    /// The claims on exactly `net`, one per origin.
    pub fn claims(&self, net: &IpNet) -> Result<Vec<BanRecord>, StateError> {
        let (lo, hi) = claims_range(net);
        let raws = self.read(|tx| {
            let bans = tx.open_table(BANS)?;
            let mut out = Vec::new();
            for e in bans.range(lo.as_slice()..hi.as_slice())? {
                let (k, v) = e?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        raws.iter().map(|(k, v)| self.decode(k, v)).collect()
    }

    /// Every claim whose net contains `addr`, longest prefix first: what the
    /// XDP program would match for a packet from `addr` (one range per length).
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
                let (lo, hi) = claims_range(&net);
                for e in bans.range(lo.as_slice()..hi.as_slice())? {
                    let (k, v) = e?;
                    out.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            Ok(out)
        })?;
        raws.iter().map(|(k, b)| self.decode(k, b)).collect()
    }

    /// Calls `f` for every stored claim inside one read transaction, without
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

    /// All stored claims (see [`for_each`](Self::for_each) for skipped ones).
    pub fn all(&self) -> Result<Vec<BanRecord>, StateError> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()?).unwrap_or(0));
        self.for_each(|r| out.push(r))?;
        Ok(out)
    }

    /// Stored claims (imports not included).
    pub fn len(&self) -> Result<u64, StateError> {
        self.read(|tx| Ok(tx.open_table(BANS)?.len()?))
    }

    pub fn is_empty(&self) -> Result<bool, StateError> {
        Ok(self.len()? == 0)
    }

    /// Removes the claims that ended at or before `now`, in one transaction,
    /// and returns them. History is kept. Reads only the expiry index and
    /// the expired records, however many bans are stored.
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
                let claim = k.get(8..).unwrap_or_default();
                if let Some(v) = bans.remove(claim)? {
                    raws.push((claim.to_vec(), v.value().to_vec()));
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

    /// Times `net` has been banned, across origins and including bans that
    /// have expired (up to [`MAX_HISTORY_PER_HOST`]). A store read error
    /// counts as 0 and is logged: a failing store must not stop a ban.
    pub fn ban_count(&self, net: impl Into<IpNet>) -> u32 {
        let net = net.into();
        match self.ban_history(net) {
            Ok(times) => u32::try_from(times.len()).unwrap_or(u32::MAX),
            Err(e) => {
                log::warn!("ban history of {net}: {e}");
                0
            }
        }
    }

    /// When `net` was banned, oldest first.
    pub fn ban_history(&self, net: impl Into<IpNet>) -> Result<Vec<SystemTime>, StateError> {
        let key = net_key(&net.into());
        self.read(|tx| {
            let hist = tx.open_table(HISTORY)?;
            let times = match hist.get(key.as_slice())? {
                Some(v) => decode_times(v.value()),
                None => Vec::new(),
            };
            Ok(times.into_iter().map(from_unix_ns).collect())
        })
    }

    /// Forgets networks whose last ban is older than `before` (keeps the
    /// history table bounded by time as well as per network). Returns how
    /// many were forgotten.
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

    /// Networks with a ban history.
    pub fn history_len(&self) -> Result<u64, StateError> {
        self.read(|tx| Ok(tx.open_table(HISTORY)?.len()?))
    }

    /// An instance setting saved by the agent (see [`set_meta`](Self::set_meta)).
    pub fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let raw = self.read(|tx| {
            let t = tx.open_table(META)?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        })?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub fn set_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StateError::Encode {
            path: self.path.clone(),
            net: IpNet::default(),
            source,
        })?;
        self.write(|tx| {
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
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

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
