//! The allowlist maps: any prefix length, probed before any ban. Entries
//! from the configuration carry `FROM_CONFIG` in `AllowValue::reserved`, so
//! a reload can replace them without touching `allow add` entries.
use std::collections::HashSet;

use fail2xdp_common::{AllowValue, PfxKeyV4, PfxKeyV6};

use super::{
    Enforcer, EnforcerError,
    bans::{net_order, net_v4, net_v6},
    prefix::Which,
};
use crate::addr::IpNet;

/// `AllowValue::reserved` of an entry owned by the configuration.
pub const FROM_CONFIG: u32 = 1;

/// One allowlist entry and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AllowEntry {
    pub net: IpNet,
    /// From the configuration (replaced on reload), else `allow add`.
    pub configured: bool,
}

impl Enforcer {
    /// Adds `net` (as a manual entry); its length is probed before the entry
    /// exists, so the entry is live the moment it lands.
    pub fn allow_add(&mut self, net: &IpNet) -> Result<(), EnforcerError> {
        let _l = self.lock()?;
        self.allow_put(net, AllowValue::default())
    }

    /// Caller holds the lock.
    fn allow_put(&self, net: &IpNet, v: AllowValue) -> Result<(), EnforcerError> {
        let mut cfg = self.read_config()?;
        match net.trunc() {
            IpNet::V4(n) => {
                let k = PfxKeyV4 {
                    len: n.prefix_len().into(),
                    addr: n.addr().octets(),
                };
                self.add_len(&mut cfg, Which::AllowV4, k.len)?;
                self.t_a4().insert_many(&[(k, v)])?;
            }
            IpNet::V6(n) => {
                let k = PfxKeyV6 {
                    len: n.prefix_len().into(),
                    addr: n.addr().octets(),
                };
                self.add_len(&mut cfg, Which::AllowV6, k.len)?;
                self.t_a6().insert_many(&[(k, v)])?;
            }
        }
        Ok(())
    }

    /// Removes exactly `net`; false if it was not listed.
    pub fn allow_del(&mut self, net: &IpNet) -> Result<bool, EnforcerError> {
        let _l = self.lock()?;
        self.allow_remove(&[*net])
    }

    /// Caller holds the lock.
    fn allow_remove(&self, nets: &[IpNet]) -> Result<bool, EnforcerError> {
        let mut k4 = Vec::new();
        let mut k6 = Vec::new();
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => k4.push(PfxKeyV4 {
                    len: n.prefix_len().into(),
                    addr: n.addr().octets(),
                }),
                IpNet::V6(n) => k6.push(PfxKeyV6 {
                    len: n.prefix_len().into(),
                    addr: n.addr().octets(),
                }),
            }
        }
        let mut any = false;
        if !k4.is_empty() {
            any |= self.delete_pfx(&self.t_a4(), Which::AllowV4, &k4, |k| k.len)?;
        }
        if !k6.is_empty() {
            any |= self.delete_pfx(&self.t_a6(), Which::AllowV6, &k6, |k| k.len)?;
        }
        Ok(any)
    }

    /// Makes the configuration's entries exactly `nets` (the agent calls this
    /// at start and on reload) so the data plane passes them too; manual
    /// entries stay. Returns (added, removed).
    pub fn allow_sync_configured(
        &mut self,
        nets: &[IpNet],
    ) -> Result<(usize, usize), EnforcerError> {
        let _l = self.lock()?;
        let have = self.allow_entries()?;
        let present: HashSet<IpNet> = have.iter().map(|e| e.net).collect();
        let want: HashSet<IpNet> = nets.iter().map(|n| n.trunc()).collect();
        let mut added = 0;
        for n in &want {
            if !present.contains(n) {
                self.allow_put(
                    n,
                    AllowValue {
                        reserved: FROM_CONFIG,
                    },
                )?;
                added += 1;
            }
        }
        let stale: Vec<IpNet> = have
            .iter()
            .filter(|e| e.configured && !want.contains(&e.net))
            .map(|e| e.net)
            .collect();
        if !stale.is_empty() {
            self.allow_remove(&stale)?;
        }
        Ok((added, stale.len()))
    }

    /// Every allowlist entry with its origin, sorted.
    pub fn allow_entries(&self) -> Result<Vec<AllowEntry>, EnforcerError> {
        let conf = |v: &AllowValue| v.reserved & FROM_CONFIG != 0;
        let mut out: Vec<AllowEntry> = self
            .t_a4()
            .entries()?
            .into_iter()
            .map(|(k, v)| AllowEntry {
                net: net_v4(k.len, k.addr),
                configured: conf(&v),
            })
            .chain(self.t_a6().entries()?.into_iter().map(|(k, v)| AllowEntry {
                net: net_v6(k.len, k.addr),
                configured: conf(&v),
            }))
            .collect();
        out.sort_by_key(|e| net_order(&e.net));
        Ok(out)
    }

    pub fn allow_list(&self) -> Result<Vec<IpNet>, EnforcerError> {
        Ok(self.allow_entries()?.into_iter().map(|e| e.net).collect())
    }
}
