//! Ban writes: the one place bans enter or leave the maps. Exact /32 and
//! /128 go to the BANS_V4/BANS_V6 tables, other prefixes to the PFX_* tables
//! keyed by (len, masked address) (table.rs does the slot work), with the
//! Config slot tables updated before an entry of a new length appears and
//! after the last entry of a length is gone from view.
use std::{
    collections::{BTreeSet, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, BorrowedFd},
};

use aya::{Pod, maps::MapData};
use fail2xdp_common::{
    BanValue, Config, EXPIRES_NEVER, JAIL_MANUAL, JAIL_NAME_LEN, JailName, MAX_BAN_PORTS, PfxKeyV4,
    PfxKeyV6, SlotA4, SlotA6, SlotP4, SlotP6, SlotV4, SlotV6, TBL_ALLOW_V4, TBL_ALLOW_V6,
    TBL_BANS_V4, TBL_BANS_V6, TBL_PFX_V4, TBL_PFX_V6, map,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    BanInfo, BanRequest, Enforcer, EnforcerError, MapFill, clock, io_err,
    lock::DirLock,
    prefix::{self, Step, Which},
    sys,
    table::{BanTable, Slot, capacity_of},
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

fn jail_name(name: &str) -> JailName {
    let mut out = [0u8; JAIL_NAME_LEN];
    let mut end = name.len().min(JAIL_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    JailName { name: out }
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

fn fd(md: &MapData) -> BorrowedFd<'_> {
    md.fd().as_fd()
}

fn map_io(name: &str, what: &str) -> impl FnOnce(std::io::Error) -> EnforcerError {
    io_err(format!("{what} {name}"))
}

impl Enforcer {
    fn table<'a, S: Slot>(
        &'a self,
        arr: &'a MapData,
        ovf: &'a MapData,
        tbl: usize,
        i: usize,
    ) -> BanTable<'a, S> {
        BanTable::new(
            fd(arr),
            fd(ovf),
            fd(&self.maps.config),
            tbl,
            map::ALL[i],
            self.maps.capacity[i],
        )
    }

    pub(super) fn t_v4(&self) -> BanTable<'_, SlotV4> {
        self.table(&self.maps.bans_v4, &self.maps.bans_v4_ovf, TBL_BANS_V4, 0)
    }

    pub(super) fn t_v6(&self) -> BanTable<'_, SlotV6> {
        self.table(&self.maps.bans_v6, &self.maps.bans_v6_ovf, TBL_BANS_V6, 1)
    }

    pub(super) fn t_p4(&self) -> BanTable<'_, SlotP4> {
        self.table(&self.maps.pfx_v4, &self.maps.pfx_v4_ovf, TBL_PFX_V4, 2)
    }

    pub(super) fn t_p6(&self) -> BanTable<'_, SlotP6> {
        self.table(&self.maps.pfx_v6, &self.maps.pfx_v6_ovf, TBL_PFX_V6, 3)
    }

    pub(super) fn t_a4(&self) -> BanTable<'_, SlotA4> {
        self.table(
            &self.maps.allow_v4,
            &self.maps.allow_v4_ovf,
            TBL_ALLOW_V4,
            4,
        )
    }

    pub(super) fn t_a6(&self) -> BanTable<'_, SlotA6> {
        self.table(
            &self.maps.allow_v6,
            &self.maps.allow_v6_ovf,
            TBL_ALLOW_V6,
            5,
        )
    }

    pub(super) fn lock(&self) -> Result<DirLock<'_>, EnforcerError> {
        DirLock::exclusive(&self.dir).map_err(io_err(format!("locking {}", self.pin_dir.display())))
    }

    pub(super) fn read_config(&self) -> Result<Config, EnforcerError> {
        Ok(sys::lookup::<u32, Config>(fd(&self.maps.config), &0)
            .map_err(map_io(map::CONFIG, "reading"))?
            .unwrap_or(Config::EMPTY))
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
            sys::update(fd(&self.maps.config), &0u32, &*cfg, sys::BPF_ANY)
                .map_err(map_io(map::CONFIG, "writing"))?;
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

    /// Lengths with at least one entry in a prefix-keyed map.
    fn lens_in_use(&self, w: Which) -> Result<BTreeSet<u32>, EnforcerError> {
        Ok(match w {
            Which::PfxV4 => self.t_p4().entries()?.iter().map(|(k, _)| k.len).collect(),
            Which::PfxV6 => self.t_p6().entries()?.iter().map(|(k, _)| k.len).collect(),
            Which::AllowV4 => self.t_a4().entries()?.iter().map(|(k, _)| k.len).collect(),
            Which::AllowV6 => self.t_a6().entries()?.iter().map(|(k, _)| k.len).collect(),
        })
    }

    /// Brings Config in line with the maps (after a crash mid-update, or on
    /// fresh zero-filled maps) and names the manual jail.
    pub(super) fn repair(&self) -> Result<(), EnforcerError> {
        let _l = self.lock()?;
        for ok in [
            self.t_v4().repair()?,
            self.t_v6().repair()?,
            self.t_p4().repair()?,
            self.t_p6().repair()?,
            self.t_a4().repair()?,
            self.t_a6().repair()?,
        ] {
            if !ok {
                return Err(EnforcerError::MapMismatch {
                    map: map::CONFIG,
                    detail: "table geometry does not match the pinned ban arrays".into(),
                });
            }
        }
        let mut cfg = self.read_config()?;
        let zero_n =
            cfg.allow_v4_n == 0 && cfg.allow_v6_n == 0 && cfg.pfx_v4_n == 0 && cfg.pfx_v6_n == 0;
        // The ban tables' geometry (set just above) is not slot-table state.
        let empty = Config {
            tables: cfg.tables,
            ..Config::EMPTY
        };
        if zero_n && cfg != empty {
            // Nothing is probed while every n is 0, so one write is safe.
            cfg = empty;
            sys::update(fd(&self.maps.config), &0u32, &cfg, sys::BPF_ANY)
                .map_err(map_io(map::CONFIG, "writing"))?;
        }
        for w in [Which::PfxV4, Which::PfxV6, Which::AllowV4, Which::AllowV6] {
            let want = self.lens_in_use(w)?;
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
            fd(&self.maps.jails),
            &JAIL_MANUAL,
            &jail_name("manual"),
            sys::BPF_ANY,
        )
        .map_err(map_io(map::JAILS, "writing"))?;
        Ok(())
    }

    fn jail_table(&self) -> Result<HashMap<String, u32>, EnforcerError> {
        Ok(dump::<u32, JailName>(&self.maps.jails, map::JAILS)?
            .into_iter()
            .map(|(id, n)| (jail_str(&n), id))
            .collect())
    }

    pub(super) fn jail_names(&self) -> Result<HashMap<u32, String>, EnforcerError> {
        Ok(self
            .jail_table()?
            .into_iter()
            .map(|(n, id)| (id, n))
            .collect())
    }

    /// The id of jail `name`, registering it on first use.
    fn jail_id(&self, table: &mut HashMap<String, u32>, name: &str) -> Result<u32, EnforcerError> {
        let key = jail_str(&jail_name(name));
        if key == "manual" {
            return Ok(JAIL_MANUAL);
        }
        if let Some(&id) = table.get(&key) {
            return Ok(id);
        }
        if table.len() as u32 >= self.maps.capacity[8] {
            return Err(EnforcerError::JailsFull(name.to_string()));
        }
        let id = table.values().copied().max().unwrap_or(JAIL_MANUAL) + 1;
        sys::update(fd(&self.maps.jails), &id, &jail_name(name), sys::BPF_ANY)
            .map_err(map_io(map::JAILS, "writing"))?;
        table.insert(key, id);
        Ok(id)
    }

    pub fn ban(&mut self, req: &BanRequest) -> Result<(), EnforcerError> {
        self.ban_batch(std::slice::from_ref(req)).map(drop)
    }

    /// Writes many bans with batch map updates; returns how many were written.
    /// Re-banning a key keeps its drop counter.
    pub fn ban_batch(&mut self, reqs: &[BanRequest]) -> Result<usize, EnforcerError> {
        if reqs.is_empty() {
            return Ok(0);
        }
        let _l = self.lock()?;
        let now = clock::boottime_ns();
        let created_ns = clock::realtime_ns();
        let mut jails = self.jail_table()?;
        let (mut e4, mut e6, mut p4, mut p6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in reqs {
            if r.ports.0.len() > MAX_BAN_PORTS {
                return Err(AddrError::TooManyPorts(r.ports.0.len()).into());
            }
            let mut ports = [0u16; MAX_BAN_PORTS];
            ports[..r.ports.0.len()].copy_from_slice(&r.ports.0);
            let v = BanValue {
                expires_ns: clock::expiry(now, r.ttl),
                created_ns,
                drops: 0,
                jail_id: self.jail_id(&mut jails, &r.jail)?,
                nports: r.ports.0.len() as u32,
                ports,
            };
            match key_of(&r.net) {
                Key::V4(k) => e4.push((k, v)),
                Key::V6(k) => e6.push((k, v)),
                Key::P4(k) => p4.push((k, v)),
                Key::P6(k) => p6.push((k, v)),
            }
        }
        let mut cfg = self.read_config()?;
        for (w, lens) in [
            (
                Which::PfxV4,
                p4.iter().map(|(k, _)| k.len).collect::<BTreeSet<_>>(),
            ),
            (Which::PfxV6, p6.iter().map(|(k, _)| k.len).collect()),
        ] {
            // Longest first keeps the shifting in plan_add short.
            for len in lens.into_iter().rev() {
                self.add_len(&mut cfg, w, len)?;
            }
        }
        let mut n = 0;
        n += self.t_v4().insert_many(&e4)?;
        n += self.t_v6().insert_many(&e6)?;
        n += self.t_p4().insert_many(&p4)?;
        n += self.t_p6().insert_many(&p6)?;
        Ok(n)
    }

    /// Removes the ban on exactly `net`; false if there was none.
    pub fn unban(&mut self, net: &IpNet) -> Result<bool, EnforcerError> {
        let _l = self.lock()?;
        match key_of(net) {
            Key::V4(k) => Ok(self.t_v4().remove(&k)?),
            Key::V6(k) => Ok(self.t_v6().remove(&k)?),
            Key::P4(k) => self.delete_pfx(&self.t_p4(), Which::PfxV4, &[k], |k| k.len),
            Key::P6(k) => self.delete_pfx(&self.t_p6(), Which::PfxV6, &[k], |k| k.len),
        }
    }

    /// `delete_prefixed` for the prefix ban tables. Caller holds the lock.
    pub(super) fn delete_pfx<S: Slot>(
        &self,
        t: &BanTable<'_, S>,
        w: Which,
        keys: &[S::Key],
        len_of: impl Fn(&S::Key) -> u32,
    ) -> Result<bool, EnforcerError> {
        let doomed: std::collections::HashSet<&S::Key> = keys.iter().collect();
        let remaining: BTreeSet<u32> = t
            .entries()?
            .iter()
            .filter(|(k, _)| !doomed.contains(k))
            .map(|(k, _)| len_of(k))
            .collect();
        let mut cfg = self.read_config()?;
        let emptied: BTreeSet<u32> = keys
            .iter()
            .map(&len_of)
            .filter(|l| !remaining.contains(l))
            .collect();
        for len in emptied {
            self.remove_len(&mut cfg, w, len)?;
        }
        let mut any = false;
        for k in keys {
            any |= t.remove(k)?;
        }
        Ok(any)
    }

    fn info(&self, net: IpNet, v: &BanValue, jails: &HashMap<u32, String>, now: u64) -> BanInfo {
        let n = (v.nports as usize).min(MAX_BAN_PORTS);
        BanInfo {
            net,
            jail: jails
                .get(&v.jail_id)
                .cloned()
                .unwrap_or_else(|| format!("#{}", v.jail_id)),
            remaining: clock::remaining(v.expires_ns, now),
            expired: v.expires_ns != EXPIRES_NEVER && v.expires_ns <= now,
            created: clock::system_time(v.created_ns),
            ports: PortSet(v.ports[..n].to_vec()),
            drops: v.drops,
        }
    }

    /// The ban on exactly `net` (not a covering prefix).
    pub fn get(&self, net: &IpNet) -> Result<Option<BanInfo>, EnforcerError> {
        let v = match key_of(net) {
            Key::V4(k) => self.t_v4().get(&k)?,
            Key::V6(k) => self.t_v6().get(&k)?,
            Key::P4(k) => self.t_p4().get(&k)?,
            Key::P6(k) => self.t_p6().get(&k)?,
        };
        let jails = self.jail_names()?;
        Ok(v.map(|v| self.info(net.trunc(), &v, &jails, clock::boottime_ns())))
    }

    /// Every ban, expired ones included (the kernel ignores those), sorted.
    pub fn list(&self) -> Result<Vec<BanInfo>, EnforcerError> {
        let jails = self.jail_names()?;
        let now = clock::boottime_ns();
        let mut out = Vec::new();
        for (k, v) in self.t_v4().entries()? {
            out.push(self.info(net_v4(32, k), &v, &jails, now));
        }
        for (k, v) in self.t_v6().entries()? {
            out.push(self.info(net_v6(128, k), &v, &jails, now));
        }
        for (k, v) in self.t_p4().entries()? {
            out.push(self.info(net_v4(k.len, k.addr), &v, &jails, now));
        }
        for (k, v) in self.t_p6().entries()? {
            out.push(self.info(net_v6(k.len, k.addr), &v, &jails, now));
        }
        out.sort_by_key(|b| net_order(&b.net));
        Ok(out)
    }

    /// Deletes bans whose time ran out; returns how many.
    pub fn purge_expired(&mut self) -> Result<usize, EnforcerError> {
        let _l = self.lock()?;
        let now = clock::boottime_ns();
        let expired = |v: &BanValue| v.expires_ns != EXPIRES_NEVER && v.expires_ns <= now;
        let mut n = 0;
        for (k, v) in self.t_v4().entries()? {
            if expired(&v) && self.t_v4().remove(&k)? {
                n += 1;
            }
        }
        for (k, v) in self.t_v6().entries()? {
            if expired(&v) && self.t_v6().remove(&k)? {
                n += 1;
            }
        }
        let k4: Vec<PfxKeyV4> = self
            .t_p4()
            .entries()?
            .into_iter()
            .filter(|(_, v)| expired(v))
            .map(|(k, _)| k)
            .collect();
        if !k4.is_empty() {
            self.delete_pfx(&self.t_p4(), Which::PfxV4, &k4, |k| k.len)?;
            n += k4.len();
        }
        let k6: Vec<PfxKeyV6> = self
            .t_p6()
            .entries()?
            .into_iter()
            .filter(|(_, v)| expired(v))
            .map(|(k, _)| k)
            .collect();
        if !k6.is_empty() {
            self.delete_pfx(&self.t_p6(), Which::PfxV6, &k6, |k| k.len)?;
            n += k6.len();
        }
        Ok(n)
    }

    /// Entries/capacity of every table and of JAILS, for `status`.
    pub fn map_fill(&self) -> Result<Vec<MapFill>, EnforcerError> {
        let m = &self.maps;
        let jails = MapFill {
            map: map::JAILS.to_string(),
            entries: sys::count::<u32, JailName>(fd(&m.jails))
                .map_err(map_io(map::JAILS, "counting"))?,
            capacity: m.capacity[8],
        };
        // The ban tables keep their count in CONFIG (table plus overflow);
        // their capacity is half their slots.
        let cfg = self.read_config()?;
        let table = |i: usize, tbl: usize| MapFill {
            map: map::ALL[i].to_string(),
            entries: (cfg.tables[tbl].count + cfg.tables[tbl].ovf) as usize,
            capacity: capacity_of(m.capacity[i]),
        };
        Ok(vec![
            table(0, TBL_BANS_V4),
            table(1, TBL_BANS_V6),
            table(2, TBL_PFX_V4),
            table(3, TBL_PFX_V6),
            table(4, TBL_ALLOW_V4),
            table(5, TBL_ALLOW_V6),
            jails,
        ])
    }
}

pub(super) fn dump<K: Pod, V: Pod>(md: &MapData, name: &str) -> Result<Vec<(K, V)>, EnforcerError> {
    sys::dump::<K, V>(fd(md)).map_err(map_io(name, "reading"))
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
    fn jail_names_truncate_on_char_boundary() {
        assert_eq!(jail_str(&jail_name("postfix-sasl")), "postfix-sasl");
        let long = "é".repeat(20); // 40 bytes
        let j = jail_str(&jail_name(&long));
        assert_eq!(j, "é".repeat(16));
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
