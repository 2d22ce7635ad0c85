//! The ban service itself (see the module documentation of `ban`).
use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    BanEvent, Banned, Guard, Origin, PrefixLimits, Subscriber,
    order::{
        Applied, ImportReport, ImportSpec, Order, Outcome, RestoreReport, UnbanAllReport,
        UnbanOutcome,
    },
};
use crate::{
    addr::{self, PortSet},
    enforcer::{BanInfo, BanRequest, Enforcer, EnforcerError, WriteMode},
    state::{BanRecord, Health, ImportHeader, StateError, StateWriter, Store},
};

/// What the configuration says about banning, for the guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub limits: PrefixLimits,
    /// The configuration's allowlist (also written to the data plane).
    pub allowlist: Vec<IpNet>,
    /// Each jail's own allowlist: networks only that jail never bans.
    pub jail_allow: BTreeMap<String, Vec<IpNet>>,
}

/// How claims reach the store: from a background thread that batches them
/// (the agent: a burst of bans waits for no fsync), or before each call
/// returns (the CLI with no agent running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    Background,
    Sync,
}

#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error("the data plane")]
    Enforcer(#[from] EnforcerError),
    #[error("the state store")]
    State(#[from] StateError),
    #[error("this agent runs with --dry-run: it writes no bans")]
    DryRun,
}

/// Counters of what the service did since it started, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub banned: u64,
    pub stale: u64,
    pub failed: u64,
    pub unbanned: u64,
    /// Refusals by kind (loopback, allowlisted, own_address, too_broad, ...).
    pub refused: BTreeMap<String, u64>,
    /// Bans by origin label.
    pub by_origin: BTreeMap<String, u64>,
}

/// A jail's own ban, as restored from the store: the jail does not count
/// the failures of a network it banned while the ban lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailBan {
    pub jail: String,
    pub net: IpNet,
    pub expires_at: Option<SystemTime>,
}

/// Bans larger than this are merged against one listing of the maps
/// instead of a lookup per network.
const LIST_FOR_BATCH: usize = 64;
/// Map writes per enforcer call when restoring or importing, so a
/// million-entry list does not hold a million requests at once.
const WRITE_BATCH: usize = 65_536;

struct Inner {
    enforcer: Option<Enforcer>,
    policy: Policy,
    guard: Guard,
    /// Previous bans per network (all origins), read from the store once.
    counts: HashMap<IpNet, u32>,
}

pub struct BanService {
    inner: Mutex<Inner>,
    store: Option<Arc<Store>>,
    writer: Option<StateWriter>,
    subscribers: Vec<Arc<dyn Subscriber>>,
    dry_run: bool,
    stats: Mutex<ServiceStats>,
    /// Store problems of the synchronous mode (the writer keeps its own),
    /// and what happened when it was opened.
    sync_health: Mutex<Health>,
}

/// The ban in force for a network once a new claim is merged in.
struct Merged {
    ttl: Option<Duration>,
    ports: PortSet,
    label: String,
    kept_longer: bool,
}

/// Later expiry and wider port scope of what is in force and what is asked.
/// The service merges (it alone writes, and it records what it merged), so
/// it writes its results with [`WriteMode::Replace`].
fn merge(current: Option<&BanInfo>, ttl: Option<Duration>, ports: &PortSet, label: &str) -> Merged {
    let own = Merged {
        ttl,
        ports: ports.clone(),
        label: label.to_owned(),
        kept_longer: false,
    };
    let Some(cur) = current.filter(|c| !c.expired) else {
        return own;
    };
    let later = match (cur.remaining, ttl) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    };
    let cur_later = match (cur.remaining, ttl) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        _ => false,
    };
    let ports = if cur.ports.is_all() || ports.is_all() {
        PortSet::all()
    } else {
        let mut v = cur.ports.0.clone();
        v.extend_from_slice(&ports.0);
        PortSet::from_ports(v).unwrap_or_else(|_| PortSet::all())
    };
    Merged {
        kept_longer: cur_later || ports != own.ports,
        ttl: later,
        ports,
        label: if cur_later {
            cur.jail.clone()
        } else {
            own.label
        },
    }
}

/// When a ban of `len` starting at `start` ends, saturating (a start the
/// clock cannot add to is a log line's nonsense, not a reason to panic).
fn end_of(start: SystemTime, len: Duration) -> SystemTime {
    start
        .checked_add(len)
        .or_else(|| start.checked_add(super::LONGEST_BAN))
        .unwrap_or(start)
}

fn remaining(expires: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    // A ban that has begun is at least a second long in the maps.
    expires.map(|e| {
        e.duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    })
}

impl BanService {
    /// `enforcer` None: a dry run (decisions are made and reported, nothing
    /// is written). `store` None: nothing is recorded.
    pub fn new(
        enforcer: Option<Enforcer>,
        store: Option<Arc<Store>>,
        persist: Persist,
        policy: Policy,
        subscribers: Vec<Arc<dyn Subscriber>>,
    ) -> Self {
        let dry_run = enforcer.is_none();
        let writer = match persist {
            Persist::Background => store.clone().map(StateWriter::spawn),
            Persist::Sync => None,
        };
        let svc = BanService {
            inner: Mutex::new(Inner {
                enforcer,
                guard: Guard::default(),
                policy: Policy::default(),
                counts: HashMap::new(),
            }),
            store,
            writer,
            subscribers,
            dry_run,
            stats: Mutex::new(ServiceStats::default()),
            sync_health: Mutex::new(Health::default()),
        };
        svc.set_policy(policy);
        svc
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters, not invariants,
        // half updated: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, events: &[BanEvent]) {
        for e in events {
            for s in &self.subscribers {
                s.event(e);
            }
        }
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Applies a new configuration's policy: the configured allowlist goes
    /// to the data plane too (so the XDP program passes it even past a
    /// covering ban), and the guard is rebuilt.
    pub fn set_policy(&self, policy: Policy) {
        let mut inner = self.lock();
        if let Some(enf) = inner.enforcer.as_mut()
            && let Err(e) = enf.allow_sync_configured(&policy.allowlist)
        {
            log::error!(
                "writing the configured allowlist to the data plane: {}",
                crate::error_chain(&e)
            );
        }
        inner.policy = policy;
        Self::rebuild_guard(&mut inner);
    }

    /// Re-reads what the guard protects that can change under it: this
    /// host's addresses and `allow add` entries made outside the agent.
    pub fn refresh_guard(&self) {
        Self::rebuild_guard(&mut self.lock());
    }

    fn rebuild_guard(inner: &mut Inner) {
        let added: Vec<IpNet> = match inner.enforcer.as_ref().map(Enforcer::allow_entries) {
            Some(Ok(entries)) => entries
                .into_iter()
                .filter(|e| !e.configured)
                .map(|e| e.net)
                .collect(),
            Some(Err(e)) => {
                log::warn!(
                    "reading the data plane's allowlist: {}",
                    crate::error_chain(&e)
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        inner.guard = Guard::new(
            inner.policy.limits,
            &inner.policy.allowlist,
            &added,
            &addr::local_addrs(),
        );
    }

    pub fn guard(&self) -> Guard {
        self.lock().guard.clone()
    }

    fn previous(&self, inner: &mut Inner, net: IpNet) -> u32 {
        match inner.counts.entry(net) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => *v.insert(self.store.as_ref().map_or(0, |s| s.ban_count(net))),
        }
    }

    /// Bans what `orders` ask, in order; one outcome per order.
    pub fn ban(&self, orders: Vec<Order>) -> Vec<Outcome> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let listing: Option<HashMap<IpNet, BanInfo>> = match inner.enforcer.as_ref() {
            Some(enf) if orders.len() > LIST_FOR_BATCH => enf
                .list()
                .ok()
                .map(|v| v.into_iter().map(|b| (b.net, b)).collect()),
            _ => None,
        };
        let mut outcomes = Vec::with_capacity(orders.len());
        let mut events = Vec::new();
        let mut reqs: Vec<BanRequest> = Vec::new();
        let mut done: Vec<(usize, BanRecord, Applied, Option<std::time::Instant>)> = Vec::new();
        let mut replaced: Vec<IpNet> = Vec::new();
        let mut st = ServiceStats::default();
        for o in orders {
            let extra: Vec<IpNet> = o
                .origin
                .jail()
                .and_then(|j| inner.policy.jail_allow.get(j.as_str()).cloned())
                .unwrap_or_default();
            let checked = match o.host {
                Some(h) => inner.guard.narrow(&o.net, h, &extra),
                None => inner
                    .guard
                    .check(&o.net, o.force, &extra)
                    .map(|()| addr::unmap(o.net).trunc()),
            };
            let net = match checked {
                Ok(n) => n,
                Err(r) => {
                    *st.refused.entry(r.kind().to_owned()).or_default() += 1;
                    events.push(BanEvent::Refused {
                        origin: o.origin.clone(),
                        refusal: r.clone(),
                    });
                    outcomes.push(Outcome::Refused(r));
                    continue;
                }
            };
            let narrowed_from =
                (net != addr::unmap(o.net).trunc()).then(|| addr::unmap(o.net).trunc());
            let previous = self.previous(&mut inner, net);
            let length = o.length.resolve(previous);
            let expires_at = length.map(|l| end_of(o.start, l));
            if expires_at.is_some_and(|e| e <= now) {
                st.stale += 1;
                outcomes.push(Outcome::Stale);
                continue;
            }
            let ttl = remaining(expires_at, now);
            let label = o.origin.map_label();
            let current = match (&listing, inner.enforcer.as_ref()) {
                (Some(l), _) => l.get(&net).cloned(),
                (None, Some(enf)) if !o.replace => enf.get(&net).ok().flatten(),
                _ => None,
            };
            let m = if o.replace {
                merge(None, ttl, &o.ports, &label)
            } else {
                merge(current.as_ref(), ttl, &o.ports, &label)
            };
            if o.replace {
                replaced.push(net);
            }
            reqs.push(BanRequest {
                net,
                mode: WriteMode::Replace,
                ttl: m.ttl,
                ports: m.ports.clone(),
                jail: m.label.clone(),
            });
            let rec = BanRecord {
                net,
                origin: o.origin.clone(),
                reason: o.reason,
                evidence: o.evidence,
                first_seen: o.first_seen,
                last_seen: o.last_seen,
                failures: o.failures,
                times_banned: previous.saturating_add(1),
                banned_at: o.start,
                expires_at,
                ports: o.ports.0.clone(),
                narrowed_from,
                decision: o.decision,
            };
            let applied = Applied {
                net,
                narrowed_from,
                length,
                expires_at,
                ports: o.ports,
                times_banned: previous.saturating_add(1),
                kept_longer: m.kept_longer,
                dry_run: self.dry_run,
            };
            done.push((outcomes.len(), rec, applied, o.arrived));
            outcomes.push(Outcome::Stale); // replaced below
        }
        // The maps first (what protects), then the records (what explains).
        let written = match inner.enforcer.as_mut() {
            Some(enf) if !reqs.is_empty() => enf.ban_batch(&reqs).map(drop),
            _ => Ok(()),
        };
        let wrote_at = std::time::Instant::now();
        if let Err(e) = written {
            let msg = crate::error_chain(&e);
            for (i, rec, _, _) in &done {
                st.failed += 1;
                events.push(BanEvent::Failed {
                    net: rec.net,
                    origin: rec.origin.clone(),
                    error: msg.clone(),
                });
                outcomes[*i] = Outcome::Failed(msg.clone());
            }
        } else {
            let mut recs = Vec::with_capacity(done.len());
            for (i, rec, applied, arrived) in done {
                st.banned += 1;
                *st.by_origin.entry(rec.origin.to_string()).or_default() += 1;
                inner.counts.insert(rec.net, applied.times_banned);
                events.push(BanEvent::Banned(Banned {
                    net: rec.net,
                    origin: rec.origin.clone(),
                    reason: rec.reason.clone(),
                    length: applied.length,
                    expires_at: applied.expires_at,
                    ports: applied.ports.clone(),
                    failures: rec.failures,
                    times_banned: applied.times_banned,
                    narrowed_from: applied.narrowed_from,
                    kept_longer: applied.kept_longer,
                    dry_run: applied.dry_run,
                    evidence: rec.evidence.clone().into(),
                    first_seen: rec.first_seen,
                    last_seen: rec.last_seen,
                    latency: arrived
                        .filter(|_| !applied.dry_run)
                        .map(|a| wrote_at.saturating_duration_since(a)),
                }));
                outcomes[i] = Outcome::Banned(applied);
                recs.push(rec);
            }
            if !self.dry_run {
                // `--replace`: the other claims on those networks go.
                for net in &replaced {
                    self.remove_claims(net, None);
                    self.remove_from_imports(net);
                }
                self.record(recs);
            }
        }
        if inner.counts.len() > 100_000 {
            inner.counts.clear();
        }
        drop(inner);
        self.add_stats(&st);
        self.emit(&events);
        outcomes
    }

    fn add_stats(&self, st: &ServiceStats) {
        let Ok(mut s) = self.stats.lock() else { return };
        s.banned += st.banned;
        s.stale += st.stale;
        s.failed += st.failed;
        s.unbanned += st.unbanned;
        for (k, v) in &st.refused {
            *s.refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &st.by_origin {
            *s.by_origin.entry(k.clone()).or_default() += v;
        }
    }

    fn sync_problem(&self, what: &str, e: &StateError) {
        let msg = format!("{what}: {}", crate::error_chain(e));
        log::error!("state store: {msg}");
        if let Ok(mut h) = self.sync_health.lock() {
            h.failed_writes += 1;
            h.last_error = Some(msg);
        }
    }

    fn record(&self, recs: Vec<BanRecord>) {
        if recs.is_empty() {
            return;
        }
        match (&self.writer, &self.store) {
            (Some(w), _) => {
                for r in recs {
                    w.record(r);
                }
            }
            (None, Some(s)) => {
                if let Err(e) = s.record_bans(&recs) {
                    self.sync_problem(&format!("saving {} ban record(s)", recs.len()), &e);
                }
            }
            (None, None) => {}
        }
    }

    /// Removes claims from the store, after every record sent before.
    fn remove_claims(&self, net: &IpNet, origin: Option<&Origin>) -> Vec<BanRecord> {
        if let Some(w) = &self.writer {
            w.flush();
        }
        let Some(s) = &self.store else {
            return Vec::new();
        };
        s.remove(net, origin).unwrap_or_else(|e| {
            self.sync_problem(&format!("removing {net}"), &e);
            Vec::new()
        })
    }

    fn remove_from_imports(&self, net: &IpNet) -> Vec<ImportHeader> {
        let Some(s) = &self.store else {
            return Vec::new();
        };
        s.remove_from_imports(net).unwrap_or_else(|e| {
            self.sync_problem(&format!("removing {net} from imports"), &e);
            Vec::new()
        })
    }

    /// Waits until every claim recorded so far is durable, those of a ban
    /// being written right now included: its maps are written before its
    /// records are sent, under the lock, so an `explain` that flushed in
    /// between found a ban in the maps with no record.
    pub fn flush(&self) {
        drop(self.lock());
        self.flush_writer();
    }

    /// [`Self::flush`] for a caller that holds the lock.
    fn flush_writer(&self) {
        if let Some(w) = &self.writer {
            w.flush();
        }
    }

    /// The store's health: failed writes and the last problem.
    pub fn health(&self) -> Health {
        let mut h = self
            .writer
            .as_ref()
            .map(StateWriter::health)
            .unwrap_or_default();
        if let Ok(s) = self.sync_health.lock() {
            h.failed_writes += s.failed_writes;
            if h.last_error.is_none() {
                h.last_error = s.last_error.clone();
            }
            h.unavailable = s.unavailable.clone();
            h.recovered = s.recovered.clone();
        }
        h
    }

    /// Notes that the store could not be opened (the service runs without
    /// one) or was replaced at start, for `status`.
    pub fn note_store_trouble(&self, unavailable: Option<String>, recovered: Option<String>) {
        if let Ok(mut h) = self.sync_health.lock() {
            h.unavailable = unavailable;
            h.recovered = recovered;
        }
    }

    /// After the store was replaced (the old one damaged), records what the
    /// maps enforce, so those bans survive the next reboot: one compact
    /// import per label, port set and minute of expiry (rounded up: a ban
    /// never shrinks). Returns how many bans were recorded.
    pub fn adopt_maps(&self) -> Result<usize, BanError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let inner = self.lock();
        let Some(enf) = inner.enforcer.as_ref() else {
            return Ok(0);
        };
        let now = SystemTime::now();
        let mut groups: HashMap<(String, Vec<u16>, Option<u64>), Vec<IpNet>> = HashMap::new();
        for b in enf.list()? {
            if b.expired {
                continue;
            }
            let minute = b.remaining.map(|r| r.as_secs().div_ceil(60));
            groups
                .entry((b.jail.clone(), b.ports.0.clone(), minute))
                .or_default()
                .push(b.net);
        }
        let mut n = 0;
        for ((label, ports, minute), nets) in groups {
            n += nets.len();
            store.add_import(
                ImportHeader {
                    id: 0,
                    origin: Origin::parse(&label).unwrap_or(Origin::Manual),
                    source: "the maps".into(),
                    reason: format!(
                        "recovered from the maps (label {label}) after the state store was damaged"
                    ),
                    banned_at: now,
                    expires_at: minute.map(|m| end_of(now, Duration::from_secs(m * 60))),
                    ports,
                    count: 0,
                },
                &nets,
            )?;
        }
        Ok(n)
    }

    pub fn stats(&self) -> ServiceStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Lifts the ban of exactly `net`: every origin's claim (`origin` None:
    /// an operator's explicit unban), or only `origin`'s, in which case the
    /// others' claims keep the network banned, merged again.
    pub fn unban(&self, net: IpNet, origin: Option<&Origin>) -> Result<UnbanOutcome, BanError> {
        let net = addr::unmap(net).trunc();
        let mut inner = self.lock();
        if self.dry_run {
            return Err(BanError::DryRun);
        }
        let removed = self.remove_claims(&net, origin);
        let imports = match origin {
            None => self.remove_from_imports(&net),
            Some(_) => Vec::new(),
        };
        let mut origins: Vec<Origin> = removed.iter().map(|r| r.origin.clone()).collect();
        origins.extend(imports.iter().map(|h| h.origin.clone()));
        origins.sort();
        origins.dedup();
        let enf = inner.enforcer.as_mut().ok_or(BanError::DryRun)?;
        let outcome = match origin {
            Some(_) => self.settle(enf, net, origins)?,
            None => {
                let in_maps = enf.unban(&net)?;
                if in_maps || !origins.is_empty() {
                    UnbanOutcome::Lifted { net, origins }
                } else {
                    UnbanOutcome::NotBanned {
                        net,
                        covered_by: covering_bans(enf, &net)?,
                    }
                }
            }
        };
        drop(inner);
        if let UnbanOutcome::Lifted { net, origins } = &outcome {
            self.add_stats(&ServiceStats {
                unbanned: 1,
                ..ServiceStats::default()
            });
            self.emit(&[BanEvent::Unbanned {
                net: *net,
                origins: origins.clone(),
            }]);
        }
        Ok(outcome)
    }

    /// After claims on `net` went: what the others still claim, merged
    /// into the maps, or the ban lifted when nothing is left.
    fn settle(
        &self,
        enf: &mut Enforcer,
        net: IpNet,
        origins: Vec<Origin>,
    ) -> Result<UnbanOutcome, BanError> {
        Ok(match self.claims_left(&net, SystemTime::now())? {
            None => {
                enf.unban(&net)?;
                UnbanOutcome::Lifted { net, origins }
            }
            Some((req, by)) => {
                enf.ban(&req)?;
                UnbanOutcome::StillBanned { net, by }
            }
        })
    }

    /// `unban --all`: lifts every ban (`origin` None), or every claim of
    /// one origin (`--jail J`), whose networks stay banned where another
    /// origin claims them too.
    pub fn unban_all(&self, origin: Option<&Origin>) -> Result<UnbanAllReport, BanError> {
        if self.dry_run {
            return Err(BanError::DryRun);
        }
        self.flush();
        let mut inner = self.lock();
        // Each network whose claims go, with the origins of those claims.
        let mut gone: BTreeMap<IpNet, Vec<Origin>> = BTreeMap::new();
        if let Some(s) = &self.store {
            let pick = |o: &Origin| origin.is_none_or(|w| w == o);
            let headers: Vec<ImportHeader> = s
                .imports()?
                .into_iter()
                .filter(|h| pick(&h.origin))
                .collect();
            if origin.is_some() {
                // Their networks may be claimed by others too: settled below.
                for h in &headers {
                    s.for_each_import_net(h.id, |n| {
                        gone.entry(n).or_default().push(h.origin.clone());
                    })?;
                }
            }
            if !headers.is_empty() {
                let ids: Vec<u64> = headers.iter().map(|h| h.id).collect();
                s.remove_imports(|h| ids.contains(&h.id))?;
            }
            s.for_each(|r| {
                if pick(&r.origin) {
                    gone.entry(r.net).or_default().push(r.origin);
                }
            })?;
            let nets: Vec<IpNet> = gone.keys().copied().collect();
            s.remove_many(&nets, origin)?;
        }
        let enf = inner.enforcer.as_mut().ok_or(BanError::DryRun)?;
        if origin.is_none() {
            for b in enf.list()? {
                gone.entry(b.net).or_default();
            }
        }
        let mut report = UnbanAllReport::default();
        let mut events = Vec::new();
        for (net, mut origins) in gone {
            origins.sort();
            origins.dedup();
            let outcome = match origin {
                None => {
                    enf.unban(&net)?;
                    UnbanOutcome::Lifted { net, origins }
                }
                Some(_) => self.settle(enf, net, origins)?,
            };
            match outcome {
                UnbanOutcome::Lifted { net, origins } => {
                    report.lifted += 1;
                    report.lifted_nets.push(net);
                    events.push(BanEvent::Unbanned { net, origins });
                }
                UnbanOutcome::StillBanned { net, .. } => {
                    report.still_banned += 1;
                    report.lifted_nets.push(net);
                }
                UnbanOutcome::NotBanned { .. } => {}
            }
        }
        drop(inner);
        self.add_stats(&ServiceStats {
            unbanned: report.lifted as u64,
            ..ServiceStats::default()
        });
        self.emit(&events);
        Ok(report)
    }

    /// Bans every network of a blocklist with `spec`'s length, ports and
    /// reason, recorded compactly as one import (any size).
    pub fn import(&self, spec: &ImportSpec, nets: &[IpNet]) -> Result<ImportReport, BanError> {
        let now = SystemTime::now();
        let length = spec.length_secs.map(Duration::from_secs);
        let expires_at = length.map(|l| end_of(now, l));
        let ttl = remaining(expires_at, now);
        let ports = PortSet::from_ports(spec.ports.clone()).unwrap_or_default();
        let label = spec.origin.map_label();
        let mut inner = self.lock();
        let mut report = ImportReport {
            dry_run: self.dry_run,
            ..ImportReport::default()
        };
        let mut ok: Vec<IpNet> = Vec::with_capacity(nets.len());
        let mut st = ServiceStats::default();
        for n in nets {
            match inner.guard.check(n, spec.force, &[]) {
                Ok(()) => ok.push(addr::unmap(*n).trunc()),
                Err(r) => {
                    *st.refused.entry(r.kind().to_owned()).or_default() += 1;
                    report.refused.push((*n, r.to_string()));
                }
            }
        }
        if let Some(enf) = inner.enforcer.as_mut() {
            let listing: HashMap<IpNet, BanInfo> = if ok.len() > LIST_FOR_BATCH {
                enf.list()?.into_iter().map(|b| (b.net, b)).collect()
            } else {
                let mut m = HashMap::new();
                for n in &ok {
                    if let Some(b) = enf.get(n)? {
                        m.insert(*n, b);
                    }
                }
                m
            };
            for part in ok.chunks(WRITE_BATCH) {
                let reqs: Vec<BanRequest> = part
                    .iter()
                    .map(|n| {
                        let m = merge(listing.get(n), ttl, &ports, &label);
                        report.kept_longer += usize::from(m.kept_longer);
                        BanRequest {
                            mode: WriteMode::Replace,
                            net: *n,
                            ttl: m.ttl,
                            ports: m.ports,
                            jail: m.label,
                        }
                    })
                    .collect();
                enf.ban_batch(&reqs)?;
            }
            if let Some(s) = &self.store {
                s.add_import(
                    ImportHeader {
                        id: 0,
                        origin: spec.origin.clone(),
                        source: spec.source.clone(),
                        reason: spec
                            .reason
                            .clone()
                            .unwrap_or_else(|| format!("blocklist {}", spec.source)),
                        banned_at: now,
                        expires_at,
                        ports: ports.0.clone(),
                        count: 0,
                    },
                    &ok,
                )?;
            }
        }
        report.banned = ok.len();
        st.banned = ok.len() as u64;
        st.by_origin
            .insert(spec.origin.to_string(), ok.len() as u64);
        let written: Arc<[IpNet]> = if inner.enforcer.is_some() {
            ok.into()
        } else {
            Arc::from([])
        };
        drop(inner);
        self.add_stats(&st);
        self.emit(&[BanEvent::Imported {
            origin: spec.origin.clone(),
            banned: report.banned,
            refused: report.refused.len(),
            length,
            nets: written,
            ports,
        }]);
        Ok(report)
    }

    /// Puts every stored ban that is still running back into the maps
    /// (after a reboot emptied them, or merged with what they hold after a
    /// restart), with its remaining time. Returns the jails' own bans, so
    /// they do not count the failures of a network they banned.
    pub fn restore(&self) -> Result<(RestoreReport, Vec<JailBan>), BanError> {
        let t0 = std::time::Instant::now();
        let mut report = RestoreReport::default();
        let mut jail_bans = Vec::new();
        let Some(store) = self.store.clone() else {
            return Ok((report, jail_bans));
        };
        let now = SystemTime::now();
        let mut inner = self.lock();
        let guard = inner.guard.clone();
        let listing: HashMap<IpNet, BanInfo> = match inner.enforcer.as_ref() {
            Some(enf) => enf
                .list()?
                .into_iter()
                .filter(|b| !b.expired)
                .map(|b| (b.net, b))
                .collect(),
            None => HashMap::new(),
        };
        // Per network: the merge of its claims, then of what the maps hold.
        let mut want: HashMap<IpNet, BanInfo> = HashMap::new();
        let offer = |net: IpNet,
                     exp: Option<SystemTime>,
                     ports: &[u16],
                     label: String,
                     want: &mut HashMap<IpNet, BanInfo>,
                     report: &mut RestoreReport| {
            if let Err(e) = guard.check(&net, true, &[]) {
                log::warn!("not restoring the ban of {net} ({label}): {e}");
                report.skipped += 1;
                return;
            }
            let prev = want.get(&net).or_else(|| listing.get(&net));
            let m = merge(prev, remaining(exp, now), &PortSet(ports.to_vec()), &label);
            want.insert(
                net,
                BanInfo {
                    net,
                    jail: m.label,
                    remaining: m.ttl,
                    expired: false,
                    created: now,
                    ports: m.ports,
                    drops: 0,
                },
            );
        };
        store.for_each(|r| {
            if r.is_expired(now) {
                return;
            }
            if let Origin::Jail(j) = &r.origin {
                jail_bans.push(JailBan {
                    jail: j.to_string(),
                    net: r.net,
                    expires_at: r.expires_at,
                });
            }
            offer(
                r.net,
                r.expires_at,
                &r.ports,
                r.origin.map_label(),
                &mut want,
                &mut report,
            );
        })?;
        let imports: Vec<ImportHeader> = store
            .imports()?
            .into_iter()
            .filter(|h| !h.is_expired(now))
            .collect();
        // One import's networks are distinct: those no claim or map entry
        // shares go to the maps as they are read, a batch at a time, with no
        // per-network bookkeeping (a million-line blocklist is the common
        // case). Several imports may share networks: then every network is
        // merged first.
        let stream = imports.len() == 1;
        let mut direct: Vec<BanRequest> = Vec::new();
        let mut written = 0usize;
        let mut failed: Option<EnforcerError> = None;
        for h in &imports {
            let label = h.origin.map_label();
            let ttl = remaining(h.expires_at, now);
            let ports = PortSet(h.ports.clone());
            store.for_each_import_net(h.id, |n| {
                if !stream || want.contains_key(&n) || listing.contains_key(&n) {
                    offer(
                        n,
                        h.expires_at,
                        &h.ports,
                        label.clone(),
                        &mut want,
                        &mut report,
                    );
                    return;
                }
                if let Err(e) = guard.check(&n, true, &[]) {
                    log::warn!("not restoring the ban of {n} ({label}): {e}");
                    report.skipped += 1;
                    return;
                }
                direct.push(BanRequest {
                    mode: WriteMode::Replace,
                    net: n,
                    ttl,
                    ports: ports.clone(),
                    jail: label.clone(),
                });
                if direct.len() >= WRITE_BATCH && failed.is_none() {
                    if let Some(enf) = inner.enforcer.as_mut() {
                        match enf.ban_batch(&direct) {
                            Ok(_) => written += direct.len(),
                            Err(e) => failed = Some(e),
                        }
                    }
                    direct.clear();
                }
            })?;
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        // What the maps already hold as merged is not written again.
        let merged = want.into_values().filter(|w| {
            let same = listing.get(&w.net).is_some_and(|cur| {
                cur.ports == w.ports
                    && match (cur.remaining, w.remaining) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a + Duration::from_secs(2) >= b,
                        _ => false,
                    }
            });
            report.present += usize::from(same);
            !same
        });
        direct.extend(merged.map(|w| BanRequest {
            mode: WriteMode::Replace,
            net: w.net,
            ttl: w.remaining,
            ports: w.ports,
            jail: w.jail,
        }));
        if let Some(enf) = inner.enforcer.as_mut() {
            for part in direct.chunks(WRITE_BATCH) {
                enf.ban_batch(part)?;
            }
            report.restored = written + direct.len();
        }
        drop(inner);
        self.emit(&[BanEvent::Restored {
            restored: report.restored,
            present: report.present,
            skipped: report.skipped,
            took: t0.elapsed(),
        }]);
        Ok((report, jail_bans))
    }

    /// Periodic cleanup: bans that ran out leave the maps and the store,
    /// ban history older than `history_before` is forgotten, and the guard
    /// re-reads what can change under it.
    pub fn purge(&self, history_before: Option<SystemTime>) {
        let now = SystemTime::now();
        {
            let mut inner = self.lock();
            if let Some(enf) = inner.enforcer.as_mut()
                && let Err(e) = enf.purge_expired()
            {
                log::warn!(
                    "purging ended bans from the maps: {}",
                    crate::error_chain(&e)
                );
            }
            Self::rebuild_guard(&mut inner);
            if inner.counts.len() > 100_000 {
                inner.counts.clear();
            }
        }
        match (&self.writer, &self.store) {
            (Some(w), _) => {
                // Records of ended bans stay a day for `explain`.
                w.purge(now - Duration::from_secs(86_400));
                if let Some(b) = history_before {
                    w.prune_history(b);
                }
            }
            (None, Some(s)) => {
                let day = now - Duration::from_secs(86_400);
                if let Err(e) = s
                    .purge_expired(day)
                    .and_then(|_| s.purge_expired_imports(day))
                {
                    self.sync_problem("purging ended bans", &e);
                }
                if let Some(b) = history_before
                    && let Err(e) = s.prune_history(b)
                {
                    self.sync_problem("pruning the ban history", &e);
                }
            }
            (None, None) => {}
        }
    }

    pub fn allow_add(&self, net: &IpNet) -> Result<(), BanError> {
        let mut inner = self.lock();
        inner
            .enforcer
            .as_mut()
            .ok_or(BanError::DryRun)?
            .allow_add(net)?;
        Self::rebuild_guard(&mut inner);
        Ok(())
    }

    pub fn allow_del(&self, net: &IpNet) -> Result<bool, BanError> {
        let mut inner = self.lock();
        let had = inner
            .enforcer
            .as_mut()
            .ok_or(BanError::DryRun)?
            .allow_del(net)?;
        Self::rebuild_guard(&mut inner);
        Ok(had)
    }

    /// Stops the background writer after it wrote everything queued.
    pub fn shutdown(&self) {
        self.flush();
    }
}

/// Batches of claims, for an origin that sets many at once (a CrowdSec
/// stream): one store transaction and one map batch for all of them.
impl BanService {
    /// What the store's claims on `net` ask, merged (the others' claims
    /// once one origin's went), and whose they are; None when none is left.
    fn claims_left(
        &self,
        net: &IpNet,
        now: SystemTime,
    ) -> Result<Option<(BanRequest, Vec<Origin>)>, BanError> {
        let mut left: Vec<(Option<SystemTime>, Vec<u16>, Origin)> = Vec::new();
        if let Some(s) = &self.store {
            for r in s.claims(net)? {
                if !r.is_expired(now) {
                    left.push((r.expires_at, r.ports, r.origin));
                }
            }
            for h in s.imports_holding(net)? {
                if !h.is_expired(now) {
                    left.push((h.expires_at, h.ports, h.origin));
                }
            }
        }
        let mut cur: Option<BanInfo> = None;
        for (exp, ports, o) in &left {
            let m = merge(
                cur.as_ref(),
                remaining(*exp, now),
                &PortSet(ports.clone()),
                &o.map_label(),
            );
            cur = Some(BanInfo {
                net: *net,
                jail: m.label,
                remaining: m.ttl,
                expired: false,
                created: now,
                ports: m.ports,
                drops: 0,
            });
        }
        Ok(cur.map(|c| {
            (
                BanRequest {
                    mode: WriteMode::Replace,
                    net: *net,
                    ttl: c.remaining,
                    ports: c.ports,
                    jail: c.jail,
                },
                left.into_iter().map(|(_, _, o)| o).collect(),
            )
        }))
    }

    /// Writes to the maps, for each of `nets`, exactly the merge of the
    /// claims the store holds on it (shortening what a merge kept longer,
    /// once an origin's claim was replaced by a shorter one), and lifts
    /// those with no claim left. Returns the networks lifted.
    fn rewrite(&self, inner: &mut Inner, nets: &[IpNet]) -> Result<Vec<IpNet>, BanError> {
        let now = SystemTime::now();
        let mut reqs = Vec::new();
        let mut lifted = Vec::new();
        for net in nets {
            match self.claims_left(net, now)? {
                Some((req, _)) => reqs.push(req),
                None => lifted.push(*net),
            }
        }
        let enf = inner.enforcer.as_mut().ok_or(BanError::DryRun)?;
        for part in reqs.chunks(WRITE_BATCH) {
            enf.ban_batch(part)?;
        }
        for net in &lifted {
            enf.unban(net)?;
        }
        Ok(lifted)
    }

    /// Lifts these (network, origin) claims in one batch (a blocklist's
    /// decisions deleted): each network keeps the merge of the other
    /// origins' claims, and goes from the maps when none is left. Returns
    /// how many networks were lifted from the maps.
    pub fn lift_claims(&self, claims: &[(IpNet, Origin)]) -> Result<usize, BanError> {
        if self.dry_run {
            return Err(BanError::DryRun);
        }
        let claims: Vec<(IpNet, Origin)> = claims
            .iter()
            .map(|(n, o)| (addr::unmap(*n).trunc(), o.clone()))
            .collect();
        let mut inner = self.lock();
        self.flush_writer();
        let removed = match &self.store {
            Some(s) => s.remove_claims(&claims)?,
            None => Vec::new(),
        };
        let mut nets: Vec<IpNet> = claims.iter().map(|(n, _)| *n).collect();
        nets.sort_unstable();
        nets.dedup();
        let lifted = self.rewrite(&mut inner, &nets)?;
        drop(inner);
        let mut by_net: HashMap<IpNet, Vec<Origin>> = HashMap::new();
        for r in removed {
            by_net.entry(r.net).or_default().push(r.origin);
        }
        let events: Vec<BanEvent> = lifted
            .iter()
            .map(|n| BanEvent::Unbanned {
                net: *n,
                origins: by_net.remove(n).unwrap_or_default(),
            })
            .collect();
        self.add_stats(&ServiceStats {
            unbanned: lifted.len() as u64,
            ..ServiceStats::default()
        });
        self.emit(&events);
        Ok(lifted.len())
    }

    /// After [`ban`](Self::ban) recorded shorter claims that the maps kept
    /// longer (merged): makes the maps of `nets` the merge of their claims
    /// as now recorded, with no moment without the ban.
    pub fn reassert(&self, nets: &[IpNet]) -> Result<(), BanError> {
        if self.dry_run {
            return Err(BanError::DryRun);
        }
        let mut inner = self.lock();
        self.flush_writer();
        let nets: Vec<IpNet> = nets.iter().map(|n| addr::unmap(*n).trunc()).collect();
        self.rewrite(&mut inner, &nets).map(drop)
    }
}

/// Bans in the maps broader than `net` that cover it: what still drops a
/// network whose own ban is not there.
fn covering_bans(enf: &Enforcer, net: &IpNet) -> Result<Vec<(IpNet, String)>, EnforcerError> {
    let mut out = Vec::new();
    for len in (0..net.prefix_len()).rev() {
        let Ok(p) = IpNet::new(net.network(), len).map(|p| p.trunc()) else {
            continue;
        };
        if let Some(b) = enf.get(&p)?
            && !b.expired
        {
            out.push((p, b.jail));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ttl: Option<u64>, ports: &[u16], label: &str) -> BanInfo {
        BanInfo {
            net: "192.0.2.9/32".parse().unwrap(),
            jail: label.into(),
            remaining: ttl.map(Duration::from_secs),
            expired: false,
            created: SystemTime::now(),
            ports: PortSet(ports.to_vec()),
            drops: 0,
        }
    }

    /// The ban history grew for ever: `Store::prune_history` was reached
    /// from tests only. The service's periodic purge prunes it by age.
    #[test]
    fn purge_prunes_the_ban_history_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let now = SystemTime::now();
        let mut old = BanRecord::manual(
            "203.0.113.1/32".parse().unwrap(),
            Origin::Manual,
            None,
            None,
            vec![],
        );
        old.banned_at = now - Duration::from_secs(200 * 86_400);
        let mut recent = BanRecord::manual(
            "203.0.113.2/32".parse().unwrap(),
            Origin::Manual,
            None,
            None,
            vec![],
        );
        recent.banned_at = now - Duration::from_secs(86_400);
        store.record_bans(&[old.clone(), recent.clone()]).unwrap();
        let svc = BanService::new(
            None,
            Some(store.clone()),
            Persist::Sync,
            Policy::default(),
            Vec::new(),
        );
        svc.purge(now.checked_sub(crate::config::DEFAULT_HISTORY));
        assert_eq!(
            store.ban_count(old.net),
            0,
            "history older than 90 days kept"
        );
        assert_eq!(store.ban_count(recent.net), 1);
    }

    #[test]
    fn merging_never_shrinks() {
        let secs = |s| Some(Duration::from_secs(s));
        // A jail ban after a longer manual one: the longer stays, labelled as it was.
        let m = merge(
            Some(&info(None, &[], "manual")),
            secs(600),
            &PortSet(vec![25]),
            "sasl",
        );
        assert_eq!(
            (m.ttl, m.ports.is_all(), m.label.as_str(), m.kept_longer),
            (None, true, "manual", true)
        );
        // A longer one after a shorter: the new one wins.
        let m = merge(
            Some(&info(Some(60), &[25], "sasl")),
            secs(3600),
            &PortSet(vec![25]),
            "manual",
        );
        assert_eq!(
            (m.ttl, m.label.as_str(), m.kept_longer),
            (secs(3600), "manual", false)
        );
        // Ports are joined; too many for one ban means all ports.
        let m = merge(
            Some(&info(Some(60), &[25, 587], "a")),
            secs(30),
            &PortSet(vec![465]),
            "b",
        );
        assert_eq!(
            (m.ttl, m.ports.0.as_slice(), m.label.as_str()),
            (secs(60), &[25u16, 465, 587][..], "a")
        );
        let many: Vec<u16> = (1..=8).collect();
        let m = merge(
            Some(&info(Some(60), &many, "a")),
            secs(30),
            &PortSet(vec![99]),
            "b",
        );
        assert!(m.ports.is_all());
        // An expired entry is not in force.
        let mut old = info(None, &[], "manual");
        old.expired = true;
        let m = merge(Some(&old), secs(5), &PortSet(vec![25]), "sasl");
        assert_eq!(
            (m.ttl, m.label.as_str(), m.kept_longer),
            (secs(5), "sasl", false)
        );
    }
}
