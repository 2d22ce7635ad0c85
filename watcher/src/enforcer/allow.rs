//! The allowlist tables: any prefix length, probed before any ban. Entries
//! from the configuration carry `ALLOW_FROM_CONFIG` in their flags, so a
//! reload can replace them without touching `allow add` entries.
use std::collections::HashSet;

use fail2xdp_common::{ALLOW_FROM_CONFIG, Config, PfxKeyV4, PfxKeyV6};

use super::{
    Enforcer, EnforcerError,
    bans::{net_order, net_v4, net_v6},
    prefix::Which,
    table::{A4, A6, AllowKind},
};
use crate::addr::IpNet;

/// Flag of an entry owned by the configuration.
pub const FROM_CONFIG: u32 = ALLOW_FROM_CONFIG;

/// One allowlist entry and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AllowEntry {
    pub net: IpNet,
    /// From the configuration (replaced on reload), else `allow add`.
    pub configured: bool,
}

enum AllowKey {
    V4(PfxKeyV4),
    V6(PfxKeyV6),
}

fn allow_key(net: &IpNet) -> AllowKey {
    match net.trunc() {
        IpNet::V4(n) => AllowKey::V4(PfxKeyV4 {
            len: n.prefix_len().into(),
            addr: n.addr().octets(),
        }),
        IpNet::V6(n) => AllowKey::V6(PfxKeyV6 {
            len: n.prefix_len().into(),
            addr: n.addr().octets(),
        }),
    }
}

impl Enforcer {
    /// Adds `net` (as a manual entry); its length is probed before the entry
    /// exists, so the entry is live the moment it lands.
    pub fn allow_add(&mut self, net: &IpNet) -> Result<(), EnforcerError> {
        let _l = self.lock()?;
        let mut cfg = self.read_config()?;
        self.allow_put(&mut cfg, net, 0)
    }

    /// Caller holds the lock.
    fn allow_put(&self, cfg: &mut Config, net: &IpNet, flags: u32) -> Result<(), EnforcerError> {
        match allow_key(net) {
            AllowKey::V4(k) => self.allow_put_in::<A4>(cfg, Which::AllowV4, &k, k.len, flags),
            AllowKey::V6(k) => self.allow_put_in::<A6>(cfg, Which::AllowV6, &k, k.len, flags),
        }
    }

    fn allow_put_in<K: AllowKind>(
        &self,
        cfg: &mut Config,
        w: Which,
        key: &K::Key,
        len: u32,
        flags: u32,
    ) -> Result<(), EnforcerError> {
        self.add_len(cfg, w, len)?;
        self.reserve::<K>(cfg, 1)?;
        let mut t = self.table::<K>(cfg)?;
        if let Some((id, e)) = t.get(key) {
            // Already listed: a configured entry stays configured.
            let merged = K::entry(key, K::flags(&e) | flags);
            t.set_entry_word(id, K::MARK_WORD, word_of(&merged, K::MARK_WORD));
            return Ok(());
        }
        if t.geom.count == 0 {
            // The XDP program skips an empty table: count it first.
            let mut raised = *cfg;
            raised.tables[K::TBL].count = 1;
            self.maps.set_config(&raised)?;
        }
        t.insert(key, &K::entry(key, flags))?;
        cfg.tables[K::TBL] = t.geom;
        self.maps.set_config(cfg)
    }

    /// Removes exactly `net`; false if it was not listed.
    pub fn allow_del(&mut self, net: &IpNet) -> Result<bool, EnforcerError> {
        let _l = self.lock()?;
        let mut cfg = self.read_config()?;
        let (any, freed) = self.allow_remove(&mut cfg, &[*net])?;
        Self::grace(freed);
        Ok(any)
    }

    /// Caller holds the lock. Returns (any removed, entries freed).
    fn allow_remove(
        &self,
        cfg: &mut Config,
        nets: &[IpNet],
    ) -> Result<(bool, usize), EnforcerError> {
        let mut k4 = Vec::new();
        let mut k6 = Vec::new();
        for net in nets {
            match allow_key(net) {
                AllowKey::V4(k) => k4.push(k),
                AllowKey::V6(k) => k6.push(k),
            }
        }
        let (mut any, mut freed) = (false, 0);
        if !k4.is_empty() {
            let (a, f) = self.delete_pfx::<A4>(cfg, Which::AllowV4, &k4, |k| k.len)?;
            any |= a;
            freed += f;
        }
        if !k6.is_empty() {
            let (a, f) = self.delete_pfx::<A6>(cfg, Which::AllowV6, &k6, |k| k.len)?;
            any |= a;
            freed += f;
        }
        Ok((any, freed))
    }

    /// Makes the configuration's entries exactly `nets` (the agent calls this
    /// at start and on reload) so the data plane passes them too; manual
    /// entries stay. Returns (added, removed).
    pub fn allow_sync_configured(
        &mut self,
        nets: &[IpNet],
    ) -> Result<(usize, usize), EnforcerError> {
        let _l = self.lock()?;
        let mut cfg = self.read_config()?;
        let have = self.allow_entries_locked(&cfg)?;
        let present: HashSet<IpNet> = have.iter().map(|e| e.net).collect();
        let want: HashSet<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        let mut added = 0;
        for n in &want {
            if !present.contains(n) {
                self.allow_put(&mut cfg, n, FROM_CONFIG)?;
                added += 1;
            }
        }
        let stale: Vec<IpNet> = have
            .iter()
            .filter(|e| e.configured && !want.contains(&e.net))
            .map(|e| e.net)
            .collect();
        if !stale.is_empty() {
            let (_, freed) = self.allow_remove(&mut cfg, &stale)?;
            Self::grace(freed);
        }
        Ok((added, stale.len()))
    }

    fn allow_entries_locked(&self, cfg: &Config) -> Result<Vec<AllowEntry>, EnforcerError> {
        let conf = |flags: u32| flags & FROM_CONFIG != 0;
        let mut out = Vec::new();
        self.table::<A4>(cfg)?.for_each(|k, _, e| {
            out.push(AllowEntry {
                net: net_v4(k.len, k.addr),
                configured: conf(A4::flags(&e)),
            });
        });
        self.table::<A6>(cfg)?.for_each(|k, _, e| {
            out.push(AllowEntry {
                net: net_v6(k.len, k.addr),
                configured: conf(A6::flags(&e)),
            });
        });
        out.sort_by_key(|e| net_order(&e.net));
        Ok(out)
    }

    /// Every allowlist entry with its origin, sorted.
    pub fn allow_entries(&self) -> Result<Vec<AllowEntry>, EnforcerError> {
        let _l = self.lock_shared()?;
        let cfg = self.read_config()?;
        self.allow_entries_locked(&cfg)
    }

    pub fn allow_list(&self) -> Result<Vec<IpNet>, EnforcerError> {
        Ok(self.allow_entries()?.into_iter().map(|e| e.net).collect())
    }
}

/// Word `w` of an entry, as the map holds it.
fn word_of<T: aya::Pod>(e: &T, w: usize) -> u64 {
    let mut b = [0u8; 8];
    let start = w * 8;
    if start >= size_of::<T>() {
        return 0;
    }
    let n = (size_of::<T>() - start).min(8);
    // SAFETY: T is Pod, so its bytes may be read; `start + n` stays within
    // the value and `n` within `b`.
    unsafe {
        std::ptr::copy_nonoverlapping((e as *const T).cast::<u8>().add(start), b.as_mut_ptr(), n)
    };
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fail2xdp_common::AllowEntryV6;

    use crate::enforcer::table::Kind;

    #[test]
    fn mark_word_holds_the_flags() {
        let e = A6::entry(
            &PfxKeyV6 {
                len: 64,
                addr: [7; 16],
            },
            FROM_CONFIG,
        );
        let w = word_of::<AllowEntryV6>(&e, A6::MARK_WORD);
        assert_eq!((w >> 32) as u32, e.flags);
        let e4 = A4::entry(
            &PfxKeyV4 {
                len: 32,
                addr: [1; 4],
            },
            0,
        );
        assert_eq!(word_of(&e4, A4::MARK_WORD) as u32, e4.flags);
    }
}
