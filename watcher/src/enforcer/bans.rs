//! Ban writes: the one place bans enter or leave the maps. Exact /32 and
//! /128 go to the BANS_V4/BANS_V6 tables, other prefixes to the PFX_* tables
//! keyed by (len, masked address) (table/ does the slot work), with the
//! Config length tables updated before an entry of a new length appears and
//! after the last entry of a length is gone from view.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fail2xdp_common::{
    BanMeta, Config, JAIL_MANUAL, JAIL_NAME_LEN, JailName, LAYOUT_VERSION, MAX_BAN_PORTS, PfxKeyV4,
    PfxKeyV6, expiry_ports, map, mask_v4,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    BanInfo, BanOutcome, BanRequest, BanState, Enforcer, EnforcerError, LookupCost, MapFill,
    WriteMode, clock, io_err,
    lock::DirLock,
    maps::MapId,
    ports::{self, PortSets},
    prefix::{self, Step, Which},
    sys,
    table::{A4, A6, BanKind, Kind, P4, P6, Table, V4, V6},
};
use crate::addr::{AddrError, IpNet, PortSet};

/// Where a network lives in the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    V4([u8; 4]),
    V6([u8; 16]),
    P4(PfxKeyV4),
    P6(PfxKeyV6),
}

pub(super) fn key_of(net: &IpNet) -> Key {
    match net.trunc() {
        IpNet::V4(n) if n.prefix_len() == 32 => Key::V4(n.addr().octets()),
        IpNet::V6(n) if n.prefix_len() == 128 => Key::V6(n.addr().octets()),
        IpNet::V4(n) => Key::P4(PfxKeyV4 {
            len: n.prefix_len().into(),
            addr: n.addr().octets(),
        }),
        IpNet::V6(n) => Key::P6(PfxKeyV6 {
            len: n.prefix_len().into(),
            addr: n.addr().octets(),
        }),
    }
}

pub(super) fn net_v4(len: u32, addr: [u8; 4]) -> IpNet {
    let len = len.min(32) as u8;
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap_or_default())
}

pub(super) fn net_v6(len: u32, addr: [u8; 16]) -> IpNet {
    let len = len.min(128) as u8;
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap_or_default())
}

/// A label as the JAILS map keeps it; refused, never cut, when too long.
fn jail_name(name: &str) -> Result<JailName, EnforcerError> {
    if name.len() > JAIL_NAME_LEN {
        return Err(EnforcerError::LabelTooLong(name.to_string()));
    }
    let mut out = [0u8; JAIL_NAME_LEN];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(JailName { name: out })
}

fn jail_str(j: &JailName) -> String {
    let end = j.name.iter().position(|&b| b == 0).unwrap_or(JAIL_NAME_LEN);
    String::from_utf8_lossy(&j.name[..end]).into_owned()
}

/// Sort order of listings: IPv4 before IPv6, then by address, then shorter
/// prefix first.
pub(super) fn net_order(n: &IpNet) -> (u8, u128, u8) {
    match n {
        IpNet::V4(v) => (4, u32::from(v.addr()).into(), v.prefix_len()),
        IpNet::V6(v) => (6, u128::from(v.addr()), v.prefix_len()),
    }
}

/// Whether expiry `a` lasts at least as long as `b` (`None` = never ends).
fn lasts_as_long(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

/// The labels (jail names) by id, and the means to register new ones.
struct Labels {
    by_name: HashMap<String, u32>,
    by_id: HashMap<u32, String>,
}

impl Labels {
    fn name(&self, id: u32) -> String {
        self.by_id
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }
}

/// A ban as one request wants it written.
struct Wanted {
    expiry: Option<u64>,
    ports: PortSet,
    label: u32,
}

impl Enforcer {
    pub(super) fn lock(&self) -> Result<DirLock<'_>, EnforcerError> {
        DirLock::exclusive(&self.dir).map_err(io_err(format!("locking {}", self.pin_dir.display())))
    }

    pub(super) fn lock_shared(&self) -> Result<DirLock<'_>, EnforcerError> {
        DirLock::shared(&self.dir).map_err(io_err(format!("locking {}", self.pin_dir.display())))
    }

    pub(super) fn read_config(&self) -> Result<Config, EnforcerError> {
        self.maps.config()
    }

    pub(super) fn table<K: Kind>(&self, cfg: &Config) -> Result<Table<'_, K>, EnforcerError> {
        Table::open(&self.maps, cfg)
    }

    /// [`Self::reserve`] for those of `keys` the table does not hold yet
    /// (re-banning keys it holds makes it no larger).
    fn reserve_for<K: Kind>(
        &self,
        cfg: &mut Config,
        keys: &[(usize, K::Key)],
    ) -> Result<(), EnforcerError> {
        let more = {
            let t = self.table::<K>(cfg)?;
            keys.iter().filter(|(_, k)| t.get(k).is_none()).count()
        };
        self.reserve::<K>(cfg, more)
    }

    /// Grows table K, if it must, to take `more` keys at its designed load,
    /// publishing its new shape in `cfg` (what CONFIG holds now; the caller
    /// holds the lock). Open the table after this.
    pub(super) fn reserve<K: Kind>(
        &self,
        cfg: &mut Config,
        more: usize,
    ) -> Result<(), EnforcerError> {
        if more == 0 {
            return Ok(());
        }
        let mut t = self.table::<K>(cfg)?;
        let from = t.shape().buckets;
        if t.reserve(more, |g| {
            cfg.tables[K::TBL] = g;
            self.maps.set_config(cfg)
        })? {
            log::debug!(
                "{}: grew from {from} to {} buckets",
                K::BUCKETS.name(),
                t.shape().buckets
            );
        }
        Ok(())
    }

    /// Writes each step as its own map update (see prefix.rs for why).
    pub(super) fn write_steps(
        &self,
        cfg: &mut Config,
        w: Which,
        steps: &[Step],
    ) -> Result<(), EnforcerError> {
        for &s in steps {
            prefix::apply(cfg, w, s);
            self.maps.set_config(cfg)?;
        }
        Ok(())
    }

    pub(super) fn add_len(
        &self,
        cfg: &mut Config,
        w: Which,
        len: u32,
    ) -> Result<(), EnforcerError> {
        let steps = prefix::table(cfg, w)
            .plan_add(len)
            .ok_or(EnforcerError::SlotTable(w))?;
        self.write_steps(cfg, w, &steps)
    }

    pub(super) fn remove_len(
        &self,
        cfg: &mut Config,
        w: Which,
        len: u32,
    ) -> Result<(), EnforcerError> {
        let steps = prefix::table(cfg, w).plan_remove(len);
        self.write_steps(cfg, w, &steps)
    }

    /// Lengths with at least one entry in a prefix-keyed table.
    fn lens_in_use(&self, cfg: &Config, w: Which) -> Result<BTreeSet<u32>, EnforcerError> {
        let mut lens = BTreeSet::new();
        // An empty table holds no lengths, and opening it would map its
        // arrays: the kernel maps every page of an array map at mmap time,
        // 28 MiB of RSS for these four at the default capacities, on every
        // start with no prefix ban or allowlist entry (and a dry run keeps
        // no enforcer after its start).
        let tbl = match w {
            Which::PfxV4 => P4::TBL,
            Which::PfxV6 => P6::TBL,
            Which::AllowV4 => A4::TBL,
            Which::AllowV6 => A6::TBL,
        };
        if cfg.tables[tbl].count == 0 {
            return Ok(lens);
        }
        match w {
            Which::PfxV4 => self.table::<P4>(cfg)?.for_each(|k, _, _| {
                lens.insert(k.len);
            }),
            Which::PfxV6 => self.table::<P6>(cfg)?.for_each(|k, _, _| {
                lens.insert(k.len);
            }),
            Which::AllowV4 => self.table::<A4>(cfg)?.for_each(|k, _, _| {
                lens.insert(k.len);
            }),
            Which::AllowV6 => self.table::<A6>(cfg)?.for_each(|k, _, _| {
                lens.insert(k.len);
            }),
        }
        Ok(lens)
    }

    /// Waits until no XDP program run that started before now is still
    /// going, so entries freed by this operation can be given to other keys.
    pub(super) fn grace(freed: usize) {
        if freed > 0 {
            sys::rcu_grace_period();
        }
    }

    /// Sets up fresh maps, and brings Config in line with the maps after a
    /// crash mid-update; names the manual label.
    pub(super) fn repair(&self) -> Result<(), EnforcerError> {
        let _l = self.lock()?;
        let mut cfg = self.read_config()?;
        match cfg.version {
            0 => cfg.version = LAYOUT_VERSION,
            LAYOUT_VERSION => {}
            v => {
                return Err(EnforcerError::MapMismatch {
                    map: map::CONFIG,
                    detail: format!("layout version {v}, this agent writes {LAYOUT_VERSION}"),
                });
            }
        }
        for ok in [
            Table::<V4>::repair(&self.maps, &mut cfg)?,
            Table::<V6>::repair(&self.maps, &mut cfg)?,
            Table::<P4>::repair(&self.maps, &mut cfg)?,
            Table::<P6>::repair(&self.maps, &mut cfg)?,
            Table::<A4>::repair(&self.maps, &mut cfg)?,
            Table::<A6>::repair(&self.maps, &mut cfg)?,
        ] {
            if !ok {
                return Err(EnforcerError::MapMismatch {
                    map: map::CONFIG,
                    detail: "table geometry does not match the pinned arrays".into(),
                });
            }
        }
        let zero_n =
            cfg.allow_v4_n == 0 && cfg.allow_v6_n == 0 && cfg.pfx_v4_n == 0 && cfg.pfx_v6_n == 0;
        if zero_n {
            // Nothing is probed while every n is 0, so the length tables
            // (zeros in fresh maps, not LEN_UNUSED) reset in the same write.
            cfg = Config {
                version: cfg.version,
                tables: cfg.tables,
                ..Config::EMPTY
            };
        }
        self.maps.set_config(&cfg)?;
        for w in [Which::PfxV4, Which::PfxV6, Which::AllowV4, Which::AllowV6] {
            let want = self.lens_in_use(&cfg, w)?;
            let steps = prefix::table(&cfg, w)
                .plan_sync(&want)
                .ok_or(EnforcerError::SlotTable(w))?;
            if !steps.is_empty() {
                log::info!(
                    "repairing the {w:?} prefix-length table ({} steps)",
                    steps.len()
                );
            }
            self.write_steps(&mut cfg, w, &steps)?;
        }
        sys::update(
            self.maps.fd(MapId::Jails)?,
            &JAIL_MANUAL,
            &jail_name("manual")?,
            sys::BPF_ANY,
        )
        .map_err(io_err("writing JAILS"))?;
        // Repairs may have freed entries another process could reuse next.
        sys::rcu_grace_period();
        Ok(())
    }

    fn labels(&self) -> Result<Labels, EnforcerError> {
        let all = sys::dump::<u32, JailName>(self.maps.fd(MapId::Jails)?)
            .map_err(io_err("reading JAILS"))?;
        let mut l = Labels {
            by_name: HashMap::new(),
            by_id: HashMap::new(),
        };
        for (id, n) in all {
            let name = jail_str(&n);
            l.by_name.insert(name.clone(), id);
            l.by_id.insert(id, name);
        }
        Ok(l)
    }

    pub(super) fn jail_names(&self) -> Result<HashMap<u32, String>, EnforcerError> {
        Ok(self.labels()?.by_id)
    }

    /// The id of label `name`, registering it on first use.
    fn label_id(&self, l: &mut Labels, name: &str) -> Result<u32, EnforcerError> {
        let jn = jail_name(name)?;
        if name == "manual" {
            return Ok(JAIL_MANUAL);
        }
        if let Some(&id) = l.by_name.get(name) {
            return Ok(id);
        }
        if l.by_name.len() as u32 >= self.maps.max_entries(MapId::Jails) {
            return Err(EnforcerError::JailsFull(name.to_string()));
        }
        let id = l.by_id.keys().copied().max().unwrap_or(JAIL_MANUAL) + 1;
        sys::update(self.maps.fd(MapId::Jails)?, &id, &jn, sys::BPF_ANY)
            .map_err(io_err("writing JAILS"))?;
        l.by_name.insert(name.to_string(), id);
        l.by_id.insert(id, name.to_string());
        Ok(id)
    }

    pub fn ban(&mut self, req: &BanRequest) -> Result<BanOutcome, EnforcerError> {
        let mut out = self.ban_batch(std::slice::from_ref(req))?;
        out.pop()
            .ok_or_else(|| io_err("banning")(std::io::Error::other("no outcome")))
    }

    /// Writes many bans under one lock; returns, per request, the ban in
    /// force before (if any, unexpired) and now. A request in `Merge` mode
    /// over an unexpired ban keeps the later expiry and the wider port
    /// scope, and the label of whichever ban lasts longer (the new one on a
    /// tie); `Replace` writes the request as given. Either way the drop
    /// counter of the network stays. Requests are checked before anything
    /// is written; on an error (a table full), the bans before it stay.
    pub fn ban_batch(&mut self, reqs: &[BanRequest]) -> Result<Vec<BanOutcome>, EnforcerError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        for r in reqs {
            if r.ports.0.len() > MAX_BAN_PORTS {
                return Err(AddrError::TooManyPorts(r.ports.0.len()).into());
            }
            jail_name(&r.jail)?;
        }
        let _l = self.lock()?;
        let now = clock::boottime_ns();
        let created_ns = clock::realtime_ns();
        let mut labels = self.labels()?;
        let mut cfg = self.read_config()?;
        let (mut e4, mut e6, mut p4, mut p6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut wanted = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            wanted.push(Wanted {
                expiry: clock::expiry(now, r.ttl),
                ports: r.ports.clone(),
                label: self.label_id(&mut labels, &r.jail)?,
            });
            match key_of(&r.net) {
                Key::V4(k) => e4.push((i, k)),
                Key::V6(k) => e6.push((i, k)),
                Key::P4(k) => p4.push((i, k)),
                Key::P6(k) => p6.push((i, k)),
            }
        }
        for (w, lens) in [
            (
                Which::PfxV4,
                p4.iter().map(|(_, k)| k.len).collect::<BTreeSet<_>>(),
            ),
            (Which::PfxV6, p6.iter().map(|(_, k)| k.len).collect()),
        ] {
            // Longest first keeps the shifting in plan_add short.
            for len in lens.into_iter().rev() {
                self.add_len(&mut cfg, w, len)?;
            }
        }
        self.reserve_for::<V4>(&mut cfg, &e4)?;
        self.reserve_for::<V6>(&mut cfg, &e6)?;
        self.reserve_for::<P4>(&mut cfg, &p4)?;
        self.reserve_for::<P6>(&mut cfg, &p6)?;
        let mut t4 = self.table::<V4>(&cfg)?;
        let mut t6 = self.table::<V6>(&cfg)?;
        let mut tp4 = self.table::<P4>(&cfg)?;
        let mut tp6 = self.table::<P6>(&cfg)?;
        // The XDP program skips a table whose count is 0: raise it before
        // the first entry lands (the exact counts are written at the end).
        let mut raised = cfg;
        for (tbl, n) in [
            (V4::TBL, e4.len()),
            (V6::TBL, e6.len()),
            (P4::TBL, p4.len()),
            (P6::TBL, p6.len()),
        ] {
            if n > 0 && raised.tables[tbl].count == 0 {
                raised.tables[tbl].count = 1;
            }
        }
        if raised != cfg {
            self.maps.set_config(&raised)?;
        }
        let mut ps = PortSets::read(self.maps.mem(MapId::Ports)?);
        // Filled in request order below (placeholders hold no heap memory).
        let blank = BanOutcome {
            before: None,
            now: BanState {
                remaining: None,
                ports: PortSet::all(),
                label: String::new(),
            },
        };
        let mut out = vec![blank; reqs.len()];
        let mut w = Writer {
            e: self,
            labels: &labels,
            reqs,
            wanted: &wanted,
            now,
            created_ns,
        };
        let result = (|| {
            w.write(&mut t4, &mut ps, &e4, &mut out)?;
            w.write(&mut t6, &mut ps, &e6, &mut out)?;
            w.write(&mut tp4, &mut ps, &p4, &mut out)?;
            w.write(&mut tp6, &mut ps, &p6, &mut out)
        })();
        cfg.tables[V4::TBL] = t4.geom;
        cfg.tables[V6::TBL] = t6.geom;
        cfg.tables[P4::TBL] = tp4.geom;
        cfg.tables[P6::TBL] = tp6.geom;
        self.maps.set_config(&cfg)?;
        result?;
        Ok(out)
    }

    /// Removes the ban on exactly `net`; false if there was none.
    pub fn unban(&mut self, net: &IpNet) -> Result<bool, EnforcerError> {
        let _l = self.lock()?;
        let mut cfg = self.read_config()?;
        let (any, freed) = match key_of(net) {
            Key::V4(k) => self.delete::<V4>(&mut cfg, &[k])?,
            Key::V6(k) => self.delete::<V6>(&mut cfg, &[k])?,
            Key::P4(k) => self.delete_pfx::<P4>(&mut cfg, Which::PfxV4, &[k], |k| k.len)?,
            Key::P6(k) => self.delete_pfx::<P6>(&mut cfg, Which::PfxV6, &[k], |k| k.len)?,
        };
        Self::grace(freed);
        Ok(any)
    }

    /// Removes `keys` from an exact table; returns (any removed, entries freed).
    /// Caller holds the lock and writes nothing to `cfg` meanwhile.
    pub(super) fn delete<K: Kind>(
        &self,
        cfg: &mut Config,
        keys: &[K::Key],
    ) -> Result<(bool, usize), EnforcerError> {
        let mut t = self.table::<K>(cfg)?;
        let mut any = false;
        for k in keys {
            any |= t.remove(k).is_some();
        }
        // The count goes down after the entries are gone from view.
        cfg.tables[K::TBL] = t.geom;
        self.maps.set_config(cfg)?;
        let from = t.shape().buckets;
        if t.compact(|g| {
            cfg.tables[K::TBL] = g;
            self.maps.set_config(cfg)
        })? {
            log::debug!(
                "{}: shrank from {from} to {} buckets",
                K::BUCKETS.name(),
                t.shape().buckets
            );
        }
        Ok((any, t.freed))
    }

    /// `delete` for the prefix-keyed tables: a length no entry uses any
    /// more stops being probed first. Caller holds the lock.
    pub(super) fn delete_pfx<K: Kind>(
        &self,
        cfg: &mut Config,
        w: Which,
        keys: &[K::Key],
        len_of: impl Fn(&K::Key) -> u32,
    ) -> Result<(bool, usize), EnforcerError> {
        let doomed: HashSet<&K::Key> = keys.iter().collect();
        let mut remaining = BTreeSet::new();
        self.table::<K>(cfg)?.for_each(|k, _, _| {
            if !doomed.contains(&k) {
                remaining.insert(len_of(&k));
            }
        });
        let emptied: BTreeSet<u32> = keys
            .iter()
            .map(&len_of)
            .filter(|l| !remaining.contains(l))
            .collect();
        for len in emptied {
            self.remove_len(cfg, w, len)?;
        }
        self.delete::<K>(cfg, keys)
    }

    fn info<K: BanKind>(
        &self,
        net: IpNet,
        id: u32,
        e: &K::Entry,
        labels: &HashMap<u32, String>,
        ps: &PortSets<'_>,
        now: u64,
    ) -> Result<BanInfo, EnforcerError> {
        let meta: BanMeta = self.maps.mem(K::META)?.read(id);
        let w = K::expiry_ports(e);
        let expiry = clock::expiry_of(w);
        Ok(BanInfo {
            net,
            jail: labels
                .get(&meta.jail_id)
                .cloned()
                .unwrap_or_else(|| format!("#{}", meta.jail_id)),
            remaining: clock::remaining(expiry, now),
            expired: clock::ended(expiry, now),
            created: clock::wall(meta.created_ns),
            ports: ps.ports((w & 0xffff) as u16),
            drops: K::drops(e),
        })
    }

    /// The ban on exactly `net` (not a covering prefix).
    pub fn get(&self, net: &IpNet) -> Result<Option<BanInfo>, EnforcerError> {
        let _l = self.lock_shared()?;
        let cfg = self.read_config()?;
        let labels = self.jail_names()?;
        let ps = PortSets::read(self.maps.mem(MapId::Ports)?);
        let now = clock::boottime_ns();
        let net = net.trunc();
        match key_of(&net) {
            Key::V4(k) => self.get_one::<V4>(&cfg, &k, net, &labels, &ps, now),
            Key::V6(k) => self.get_one::<V6>(&cfg, &k, net, &labels, &ps, now),
            Key::P4(k) => self.get_one::<P4>(&cfg, &k, net, &labels, &ps, now),
            Key::P6(k) => self.get_one::<P6>(&cfg, &k, net, &labels, &ps, now),
        }
    }

    fn get_one<K: BanKind>(
        &self,
        cfg: &Config,
        k: &K::Key,
        net: IpNet,
        labels: &HashMap<u32, String>,
        ps: &PortSets<'_>,
        now: u64,
    ) -> Result<Option<BanInfo>, EnforcerError> {
        match self.table::<K>(cfg)?.get(k) {
            Some((id, e)) => Ok(Some(self.info::<K>(net, id, &e, labels, ps, now)?)),
            None => Ok(None),
        }
    }

    /// Every ban whose network contains `addr` (its exact ban and each
    /// prefix ban over it), longest prefix first; expired ones flagged.
    pub fn covering(&self, addr: IpAddr) -> Result<Vec<BanInfo>, EnforcerError> {
        let _l = self.lock_shared()?;
        let cfg = self.read_config()?;
        let labels = self.jail_names()?;
        let ps = PortSets::read(self.maps.mem(MapId::Ports)?);
        let now = clock::boottime_ns();
        let mut out = Vec::new();
        match addr {
            IpAddr::V4(a) => {
                let net = net_v4(32, a.octets());
                out.extend(self.get_one::<V4>(&cfg, &a.octets(), net, &labels, &ps, now)?);
                let lens = prefix::table(&cfg, Which::PfxV4).in_use();
                for len in lens.into_iter().rev() {
                    let m = u32::from_be_bytes(mask_v4(len));
                    let k = PfxKeyV4 {
                        len,
                        addr: (u32::from(a) & m).to_be_bytes(),
                    };
                    let net = net_v4(len, k.addr);
                    out.extend(self.get_one::<P4>(&cfg, &k, net, &labels, &ps, now)?);
                }
            }
            IpAddr::V6(a) => {
                let net = net_v6(128, a.octets());
                out.extend(self.get_one::<V6>(&cfg, &a.octets(), net, &labels, &ps, now)?);
                let lens = prefix::table(&cfg, Which::PfxV6).in_use();
                for len in lens.into_iter().rev() {
                    let n = net_v6(len, a.octets()).trunc();
                    let IpNet::V6(v) = n else { continue };
                    let k = PfxKeyV6 {
                        len,
                        addr: v.addr().octets(),
                    };
                    out.extend(self.get_one::<P6>(&cfg, &k, n, &labels, &ps, now)?);
                }
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.net.prefix_len()));
        Ok(out)
    }

    /// Every ban, expired ones included (the kernel ignores those), sorted.
    pub fn list(&self) -> Result<Vec<BanInfo>, EnforcerError> {
        let _l = self.lock_shared()?;
        let cfg = self.read_config()?;
        let labels = self.jail_names()?;
        let ps = PortSets::read(self.maps.mem(MapId::Ports)?);
        let now = clock::boottime_ns();
        let mut out = Vec::new();
        self.list_into::<V4>(&cfg, &mut out, &labels, &ps, now, |k| net_v4(32, *k))?;
        self.list_into::<V6>(&cfg, &mut out, &labels, &ps, now, |k| net_v6(128, *k))?;
        self.list_into::<P4>(&cfg, &mut out, &labels, &ps, now, |k| net_v4(k.len, k.addr))?;
        self.list_into::<P6>(&cfg, &mut out, &labels, &ps, now, |k| net_v6(k.len, k.addr))?;
        out.sort_by_key(|b| net_order(&b.net));
        Ok(out)
    }

    fn list_into<K: BanKind>(
        &self,
        cfg: &Config,
        out: &mut Vec<BanInfo>,
        labels: &HashMap<u32, String>,
        ps: &PortSets<'_>,
        now: u64,
        net: impl Fn(&K::Key) -> IpNet,
    ) -> Result<(), EnforcerError> {
        let mut err = None;
        self.table::<K>(cfg)?.for_each(|k, id, e| {
            match self.info::<K>(net(&k), id, &e, labels, ps, now) {
                Ok(b) => out.push(b),
                Err(e) => err = Some(e),
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Deletes bans whose time ran out; returns how many.
    pub fn purge_expired(&mut self) -> Result<usize, EnforcerError> {
        let _l = self.lock()?;
        let now = clock::boottime_ns();
        let mut cfg = self.read_config()?;
        let k4 = self.ended::<V4>(&cfg, now)?;
        let k6 = self.ended::<V6>(&cfg, now)?;
        let kp4 = self.ended::<P4>(&cfg, now)?;
        let kp6 = self.ended::<P6>(&cfg, now)?;
        let n = k4.len() + k6.len() + kp4.len() + kp6.len();
        let mut freed = 0;
        if !k4.is_empty() {
            freed += self.delete::<V4>(&mut cfg, &k4)?.1;
        }
        if !k6.is_empty() {
            freed += self.delete::<V6>(&mut cfg, &k6)?.1;
        }
        if !kp4.is_empty() {
            freed += self
                .delete_pfx::<P4>(&mut cfg, Which::PfxV4, &kp4, |k| k.len)?
                .1;
        }
        if !kp6.is_empty() {
            freed += self
                .delete_pfx::<P6>(&mut cfg, Which::PfxV6, &kp6, |k| k.len)?
                .1;
        }
        Self::grace(freed);
        Ok(n)
    }

    fn ended<K: BanKind>(&self, cfg: &Config, now: u64) -> Result<Vec<K::Key>, EnforcerError> {
        let mut keys = Vec::new();
        self.table::<K>(cfg)?.for_each(|k, _, e| {
            if clock::ended(clock::expiry_of(K::expiry_ports(&e)), now) {
                keys.push(k);
            }
        });
        Ok(keys)
    }

    /// For each source, what its lookup in the exact table reads (for
    /// benchmarks and diagnostics; the table is read as the XDP program
    /// reads it).
    pub fn lookup_costs(&self, addrs: &[IpAddr]) -> Result<Vec<LookupCost>, EnforcerError> {
        let _l = self.lock_shared()?;
        let cfg = self.read_config()?;
        let t4 = self.table::<V4>(&cfg)?;
        let t6 = self.table::<V6>(&cfg)?;
        Ok(addrs
            .iter()
            .map(|a| {
                let (banned, buckets) = match a {
                    IpAddr::V4(a) => t4.reader_lines(&a.octets()),
                    IpAddr::V6(a) => t6.reader_lines(&a.octets()),
                };
                LookupCost { banned, buckets }
            })
            .collect())
    }

    /// Entries/capacity of every table and of JAILS, for `status`.
    pub fn map_fill(&self) -> Result<Vec<MapFill>, EnforcerError> {
        let cfg = self.read_config()?;
        let table = |id: MapId, tbl: usize| MapFill {
            map: id.name().to_string(),
            entries: cfg.tables[tbl].count as usize,
            capacity: cfg.tables[tbl].entries,
        };
        let jails = MapFill {
            map: map::JAILS.to_string(),
            entries: sys::count::<u32, JailName>(self.maps.fd(MapId::Jails)?)
                .map_err(io_err("counting JAILS"))?,
            capacity: self.maps.max_entries(MapId::Jails),
        };
        Ok(vec![
            table(MapId::BansV4, V4::TBL),
            table(MapId::BansV6, V6::TBL),
            table(MapId::PfxV4, P4::TBL),
            table(MapId::PfxV6, P6::TBL),
            table(MapId::AllowV4, A4::TBL),
            table(MapId::AllowV6, A6::TBL),
            jails,
        ])
    }
}

/// The state one `ban_batch` writes with.
struct Writer<'e, 'r> {
    e: &'e Enforcer,
    labels: &'r Labels,
    reqs: &'r [BanRequest],
    wanted: &'r [Wanted],
    now: u64,
    created_ns: u64,
}

impl Writer<'_, '_> {
    fn state(&self, expiry: Option<u64>, ports: PortSet, label: u32) -> BanState {
        BanState {
            remaining: clock::remaining(expiry, self.now),
            ports,
            label: self.labels.name(label),
        }
    }

    /// The id of `ports`, freeing unused port sets when every id is taken.
    fn port_id<K: BanKind>(
        &self,
        t: &Table<'_, K>,
        ps: &mut PortSets<'_>,
        ports: &PortSet,
    ) -> Result<u16, EnforcerError> {
        if let Some(id) = ps.id(ports) {
            return Ok(id);
        }
        let cfg = self.e.read_config()?;
        let mut in_use = HashSet::new();
        sets_of(&self.e.table::<V4>(&cfg)?, &mut in_use);
        sets_of(&self.e.table::<V6>(&cfg)?, &mut in_use);
        sets_of(&self.e.table::<P4>(&cfg)?, &mut in_use);
        sets_of(&self.e.table::<P6>(&cfg)?, &mut in_use);
        // This operation's table is ahead of CONFIG: scan it as it is.
        sets_of(t, &mut in_use);
        ps.collect(&in_use);
        ps.id(ports).ok_or_else(|| ps.full())
    }

    fn write<K: BanKind>(
        &mut self,
        t: &mut Table<'_, K>,
        ps: &mut PortSets<'_>,
        items: &[(usize, K::Key)],
        out: &mut [BanOutcome],
    ) -> Result<(), EnforcerError> {
        let meta = self.e.maps.mem(K::META)?;
        // Buckets are all over a large table: have the ones a few requests
        // ahead on their way while this one is written.
        const AHEAD: usize = 16;
        for (j, (i, key)) in items.iter().enumerate() {
            if let Some((_, k)) = items.get(j + AHEAD) {
                t.prefetch(k);
            }
            let (r, w) = (&self.reqs[*i], &self.wanted[*i]);
            let old = t.get(key).map(|(id, e)| {
                let m: BanMeta = meta.read(id);
                let x = K::expiry_ports(&e);
                (id, m, clock::expiry_of(x), ps.ports((x & 0xffff) as u16))
            });
            let alive = old
                .as_ref()
                .filter(|(_, _, exp, _)| !clock::ended(*exp, self.now));
            let before = alive.map(|(_, m, exp, ports)| self.state(*exp, ports.clone(), m.jail_id));
            // What goes in: the request, or the merge of both bans.
            let (expiry, ports, label, created) = match (r.mode, alive) {
                (WriteMode::Merge, Some((_, m, exp, ports))) => {
                    let ports = ports::union(ports, &w.ports);
                    if lasts_as_long(w.expiry, *exp) {
                        (w.expiry, ports, w.label, self.created_ns)
                    } else {
                        (*exp, ports, m.jail_id, m.created_ns)
                    }
                }
                _ => (w.expiry, w.ports.clone(), w.label, self.created_ns),
            };
            let set = self.port_id(t, ps, &ports)?;
            let word = expiry_ports(expiry, set);
            let id = match old {
                // One store: the drop counter beside it keeps counting.
                Some((id, ..)) => {
                    t.set_entry_word(id, K::EXPIRY_WORD, word);
                    id
                }
                None => t.insert(key, &K::entry(key, word))?,
            };
            meta.write(
                id,
                &BanMeta {
                    created_ns: created,
                    jail_id: label,
                    _pad: 0,
                },
                1,
            );
            out[*i] = BanOutcome {
                before,
                now: self.state(expiry, ports, label),
            };
        }
        Ok(())
    }
}

/// Adds the port set ids `t`'s entries name to `ids`.
fn sets_of<K: BanKind>(t: &Table<'_, K>, ids: &mut HashSet<u16>) {
    t.for_each(|_, _, e| {
        ids.insert((K::expiry_ports(&e) & 0xffff) as u16);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let n: IpNet = "192.0.2.7/32".parse().unwrap();
        assert_eq!(key_of(&n), Key::V4([192, 0, 2, 7]));
        let p: IpNet = "198.51.100.0/24".parse().unwrap();
        assert_eq!(
            key_of(&p),
            Key::P4(PfxKeyV4 {
                len: 24,
                addr: [198, 51, 100, 0]
            })
        );
        assert_eq!(net_v4(24, [198, 51, 100, 0]), p);
        let h: IpNet = "2001:db8::1/64".parse().unwrap();
        let Key::P6(k) = key_of(&h) else {
            panic!("not a v6 prefix")
        };
        assert_eq!(
            net_v6(k.len, k.addr),
            "2001:db8::/64".parse::<IpNet>().unwrap()
        );
        let x: IpNet = "2001:db8::1/128".parse().unwrap();
        assert!(matches!(key_of(&x), Key::V6(_)));
    }

    #[test]
    fn labels_are_refused_not_cut() {
        for ok in ["manual", "sasl", "file:blocklist.txt", "crowdsec/CAPI"] {
            assert_eq!(jail_str(&jail_name(ok).unwrap()), ok);
        }
        let exact = "x".repeat(32);
        assert_eq!(jail_str(&jail_name(&exact).unwrap()), exact);
        assert!(matches!(
            jail_name(&"é".repeat(17)),
            Err(EnforcerError::LabelTooLong(_))
        ));
    }

    #[test]
    fn expiry_order() {
        assert!(lasts_as_long(None, None));
        assert!(lasts_as_long(None, Some(5)));
        assert!(!lasts_as_long(Some(5), None));
        assert!(lasts_as_long(Some(5), Some(5)));
        assert!(!lasts_as_long(Some(4), Some(5)));
    }

    #[test]
    fn listing_order() {
        let mut v: Vec<IpNet> = [
            "2001:db8::/64",
            "198.51.100.0/24",
            "192.0.2.9/32",
            "192.0.2.0/24",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        v.sort_by_key(net_order);
        let s: Vec<String> = v.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            s,
            [
                "192.0.2.0/24",
                "192.0.2.9/32",
                "198.51.100.0/24",
                "2001:db8::/64"
            ]
        );
    }
}
