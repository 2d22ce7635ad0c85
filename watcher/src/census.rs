//! The bans in the maps counted by origin and family, and what each one
//! dropped since the last look: what metrics and `fail2xdp top` show beside
//! the typed status (status.rs). Read from the maps the same way whether the
//! agent or the CLI looks.
//!
//! The XDP program counts drops per ban; a ban's counter goes when the ban
//! goes. A [`DropLedger`] keeps running totals per origin and family that
//! only grow (what a Prometheus counter must do), from the increase of each
//! ban's counter between two looks.
use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::enforcer::BanInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Bans of one origin (the label in the maps: a jail's name, `manual`,
/// `file:NAME`, `crowdsec:...`) and family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Bans in force (not run out).
    pub active: u64,
    /// Packets dropped, a running total (see [`DropLedger`]).
    pub dropped: u64,
}

/// One ban's drops between two looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub net: IpNet,
    pub origin: String,
    /// Packets dropped since the previous look.
    pub delta: u64,
    /// Packets dropped since the ban was written.
    pub drops: u64,
    /// Seconds left; None: permanent.
    pub remaining_secs: Option<u64>,
}

/// Running totals of drops per origin and family, fed with listings of the maps.
#[derive(Debug, Default)]
pub struct DropLedger {
    /// Each ban's counter at the last look.
    last: HashMap<IpNet, u64>,
    totals: BTreeMap<(String, Family), u64>,
}

impl DropLedger {
    /// Books one listing of the maps; the increase of each ban's counter
    /// since the last look, as [`Rate`]s (every ban, busiest first). At
    /// the first look each counter counts whole (a Prometheus counter may
    /// start anywhere); a ban written again since (its counter is lower
    /// than last time) counts from zero.
    pub fn update(&mut self, bans: &[BanInfo]) -> Vec<Rate> {
        let mut next = HashMap::with_capacity(bans.len());
        let mut rates = Vec::with_capacity(bans.len());
        for b in bans {
            let prev = self.last.get(&b.net).copied().unwrap_or(0);
            let delta = if b.drops >= prev {
                b.drops - prev
            } else {
                b.drops
            };
            next.insert(b.net, b.drops);
            let t = self
                .totals
                .entry((b.jail.clone(), Family::of(&b.net)))
                .or_default();
            *t = t.saturating_add(delta);
            rates.push(Rate {
                net: b.net,
                origin: b.jail.clone(),
                delta,
                drops: b.drops,
                remaining_secs: b.remaining.map(|d| d.as_secs()),
            });
        }
        self.last = next;
        rates.sort_by(|a, b| b.delta.cmp(&a.delta).then(b.drops.cmp(&a.drops)));
        rates
    }

    /// Per origin and family: bans in force now and drops so far.
    pub fn groups(&self, bans: &[BanInfo]) -> BTreeMap<(String, Family), Group> {
        let mut out: BTreeMap<(String, Family), Group> = self
            .totals
            .iter()
            .map(|(k, &dropped)| (k.clone(), Group { active: 0, dropped }))
            .collect();
        for b in bans.iter().filter(|b| !b.expired) {
            out.entry((b.jail.clone(), Family::of(&b.net)))
                .or_default()
                .active += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::addr::PortSet;

    fn ban(net: &str, jail: &str, drops: u64) -> BanInfo {
        BanInfo {
            net: net.parse().unwrap(),
            jail: jail.into(),
            remaining: Some(Duration::from_secs(60)),
            expired: false,
            created: SystemTime::now(),
            ports: PortSet::all(),
            drops,
        }
    }

    #[test]
    fn totals_only_grow() {
        let mut l = DropLedger::default();
        let r = l.update(&[
            ban("192.0.2.1/32", "sasl", 5),
            ban("2001:db8::1/128", "sasl", 1),
        ]);
        assert_eq!(r[0].delta, 5);
        let r = l.update(&[
            ban("192.0.2.1/32", "sasl", 9),
            ban("2001:db8::1/128", "sasl", 1),
            ban("192.0.2.2/32", "manual", 2),
        ]);
        assert_eq!(
            (r[0].net.to_string().as_str(), r[0].delta),
            ("192.0.2.1/32", 4)
        );
        // The ban of .1 goes (its drops stay counted); written again, it counts from zero.
        l.update(&[ban("192.0.2.2/32", "manual", 2)]);
        let r = l.update(&[ban("192.0.2.1/32", "sasl", 3)]);
        assert_eq!(r[0].delta, 3);
        let g = l.groups(&[ban("192.0.2.1/32", "sasl", 3)]);
        assert_eq!(
            g[&("sasl".to_string(), Family::Ipv4)],
            Group {
                active: 1,
                dropped: 12
            }
        );
        assert_eq!(g[&("sasl".to_string(), Family::Ipv6)].dropped, 1);
        assert_eq!(
            g[&("manual".to_string(), Family::Ipv4)],
            Group {
                active: 0,
                dropped: 2
            }
        );
    }
}
