//! What must never be banned, checked once for every ban whatever its
//! origin: loopback and the unspecified address, the host's own addresses,
//! every allowlist entry (the configuration's, `fail2xdp allow add`'s, a
//! jail's own), and prefixes broader than the configured limit.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::addr::{host_net, overlaps};

/// The broadest prefix a ban may have without `--force`, per family. Jails
/// ban at their `ipv4_prefix`/`ipv6_prefix`, which configuration loading
/// checks against the same limits, so a jail that loads can ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixLimits {
    pub v4: u8,
    pub v6: u8,
}

impl Default for PrefixLimits {
    fn default() -> Self {
        PrefixLimits { v4: 16, v6: 32 }
    }
}

impl PrefixLimits {
    pub fn for_family(&self, net: &IpNet) -> u8 {
        match net {
            IpNet::V4(_) => self.v4,
            IpNet::V6(_) => self.v6,
        }
    }
}

/// Why an address is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protected {
    /// The configuration's `allowlist`.
    Configured,
    /// `fail2xdp allow add` (an entry in the data plane's allowlist).
    AllowAdd,
    /// An address of this host.
    OwnAddress,
    /// The allowlist of the jail asking.
    Jail,
}

impl std::fmt::Display for Protected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protected::Configured => "the configured allowlist",
            Protected::AllowAdd => "the allowlist (allow add)",
            Protected::OwnAddress => "this host's addresses",
            Protected::Jail => "the jail's allowlist",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("refusing to ban {0}: it is or contains a loopback address")]
    Loopback(IpNet),
    #[error("refusing to ban {0}: it is or contains the unspecified address")]
    Unspecified(IpNet),
    #[error("refusing to ban {net}: it overlaps {allowed}, which is in {why}")]
    Protected {
        net: IpNet,
        allowed: IpNet,
        why: Protected,
    },
    #[error("refusing to ban {net}: broader than /{limit}; use --force if you mean it")]
    TooBroad { net: IpNet, limit: u8 },
}

impl Refusal {
    /// A short kind for counters and rate-limited logging.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Loopback(_) => "loopback",
            Refusal::Unspecified(_) => "unspecified",
            Refusal::Protected {
                why: Protected::OwnAddress,
                ..
            } => "own_address",
            Refusal::Protected { .. } => "allowlisted",
            Refusal::TooBroad { .. } => "too_broad",
        }
    }
}

/// The guard itself: protected networks and the prefix limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    limits: PrefixLimits,
    protected: Vec<(IpNet, Protected)>,
}

fn loopback() -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).unwrap_or_default()),
        IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).unwrap_or_default()),
    ]
}

/// Leading bits two addresses of one family share.
fn common_bits(a: IpAddr, b: IpAddr) -> u8 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
        _ => 0,
    }
}

impl Guard {
    /// `configured`: the configuration's allowlist; `allow_added`: the data
    /// plane's allowlist entries made with `allow add`; `own`: this host's
    /// addresses.
    pub fn new(
        limits: PrefixLimits,
        configured: &[IpNet],
        allow_added: &[IpNet],
        own: &[IpAddr],
    ) -> Self {
        let mut protected: Vec<(IpNet, Protected)> = Vec::new();
        let mut add = |n: IpNet, why| {
            let n = crate::addr::unmap(n).trunc();
            if !protected.iter().any(|(p, _)| *p == n) {
                protected.push((n, why));
            }
        };
        for n in configured {
            add(*n, Protected::Configured);
        }
        for n in allow_added {
            add(*n, Protected::AllowAdd);
        }
        for a in own {
            // Loopback is refused on its own; link-local and the rest are the host's.
            add(host_net(*a), Protected::OwnAddress);
        }
        Guard { limits, protected }
    }

    pub fn limits(&self) -> PrefixLimits {
        self.limits
    }

    /// May `net` be banned? `extra`: the asking jail's own allowlist.
    /// `force` lifts only the prefix limit, never a protection.
    pub fn check(&self, net: &IpNet, force: bool, extra: &[IpNet]) -> Result<(), Refusal> {
        let net = crate::addr::unmap(*net).trunc();
        if loopback().iter().any(|l| overlaps(l, &net)) {
            return Err(Refusal::Loopback(net));
        }
        let unspecified = match net {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        if net.contains(&unspecified) {
            return Err(Refusal::Unspecified(net));
        }
        if let Some((allowed, why)) = self.overlap(&net, extra) {
            return Err(Refusal::Protected { net, allowed, why });
        }
        let limit = self.limits.for_family(&net);
        if net.prefix_len() < limit && !force {
            return Err(Refusal::TooBroad { net, limit });
        }
        Ok(())
    }

    fn overlap(&self, net: &IpNet, extra: &[IpNet]) -> Option<(IpNet, Protected)> {
        self.protected
            .iter()
            .copied()
            .chain(
                extra
                    .iter()
                    .map(|n| (crate::addr::unmap(*n).trunc(), Protected::Jail)),
            )
            .find(|(p, _)| overlaps(p, net))
    }

    /// For a jail's ban of `net` (a prefix the jail groups `host` into): the
    /// broadest network that holds `host`, is no broader than `net`, and
    /// covers no protected address. A neighbour in the server's own /64 is
    /// then banned at a narrower prefix (its /128 at worst) instead of not at
    /// all. Fails as [`check`](Self::check) does when even that is refused.
    pub fn narrow(&self, net: &IpNet, host: IpAddr, extra: &[IpNet]) -> Result<IpNet, Refusal> {
        let net = crate::addr::unmap(*net).trunc();
        let host = host_net(host).addr();
        match self.check(&net, false, extra) {
            Err(Refusal::Protected { .. }) if net.contains(&host) => {}
            other => return other.map(|()| net),
        }
        let mut len = net.prefix_len();
        for (p, _) in self.protected.iter().copied().chain(
            extra
                .iter()
                .map(|n| (crate::addr::unmap(*n).trunc(), Protected::Jail)),
        ) {
            // Only protected networks inside `net` can be cut away from it;
            // one that holds the host (or all of `net`) cannot.
            if net.contains(&p) && !p.contains(&host) {
                let c = common_bits(host, p.network()).min(p.prefix_len());
                len = len.max(c + 1);
            }
        }
        let narrowed = IpNet::new(host, len)
            .map_err(|_| Refusal::Unspecified(net))?
            .trunc();
        self.check(&narrowed, false, extra).map(|()| narrowed)
    }

    /// The protected networks, for `status`.
    pub fn protected(&self) -> &[(IpNet, Protected)] {
        &self.protected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn guard() -> Guard {
        Guard::new(
            PrefixLimits::default(),
            &[n("198.51.100.0/24")],
            &[n("2001:db8:a::1/128")],
            &[
                "2001:db8:f::1".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn refuses_what_must_never_be_banned() {
        let g = guard();
        assert!(g.check(&n("203.0.113.1/32"), false, &[]).is_ok());
        assert!(g.check(&n("203.0.113.0/24"), false, &[]).is_ok());
        for (net, kind) in [
            ("127.0.0.1/32", "loopback"),
            ("127.5.0.0/16", "loopback"),
            ("::1/128", "loopback"),
            ("::ffff:127.0.0.1/128", "loopback"),
            ("0.0.0.0/32", "unspecified"),
            ("0.0.0.0/0", "loopback"),
            ("::/128", "unspecified"),
            ("198.51.100.7/32", "allowlisted"),
            ("2001:db8:a::/48", "allowlisted"),
            ("192.0.2.1/32", "own_address"),
            ("192.0.2.0/24", "own_address"),
        ] {
            let r = g.check(&n(net), true, &[]).unwrap_err();
            assert_eq!(r.kind(), kind, "{net}: {r}");
        }
        assert!(matches!(
            g.check(&n("203.0.0.0/15"), false, &[]),
            Err(Refusal::TooBroad { limit: 16, .. })
        ));
        assert!(g.check(&n("203.0.0.0/15"), true, &[]).is_ok());
        assert!(matches!(
            g.check(&n("2001:e00::/24"), false, &[]),
            Err(Refusal::TooBroad { limit: 32, .. })
        ));
        // A jail's own allowlist.
        assert!(matches!(
            g.check(&n("203.0.113.9/32"), false, &[n("203.0.113.0/28")]),
            Err(Refusal::Protected {
                why: Protected::Jail,
                ..
            })
        ));
    }

    #[test]
    fn a_neighbour_in_the_hosts_own_64_is_banned_narrower() {
        let g = guard();
        // The host is 2001:db8:f::1; an attacker at 2001:db8:f::8000:5 in its /64.
        let got = g
            .narrow(
                &n("2001:db8:f::/64"),
                "2001:db8:f::8000:5".parse().unwrap(),
                &[],
            )
            .unwrap();
        assert!(got.contains(&"2001:db8:f::8000:5".parse::<IpAddr>().unwrap()));
        assert!(!got.contains(&"2001:db8:f::1".parse::<IpAddr>().unwrap()));
        assert_eq!(got, n("2001:db8:f::8000:0/97"));
        // Right next to the host: its /128 at worst... here ::0 and ::1 differ in the last bit.
        assert_eq!(
            g.narrow(&n("2001:db8:f::/64"), "2001:db8:f::".parse().unwrap(), &[])
                .unwrap(),
            n("2001:db8:f::/128")
        );
        // The host's own address is still refused.
        assert!(
            g.narrow(&n("2001:db8:f::/64"), "2001:db8:f::1".parse().unwrap(), &[])
                .is_err()
        );
        // Nothing protected inside: unchanged.
        assert_eq!(
            g.narrow(&n("2001:db8:9::/64"), "2001:db8:9::5".parse().unwrap(), &[])
                .unwrap(),
            n("2001:db8:9::/64")
        );
        // A /24 grouping next to an allowlisted /24 is not narrowed into it.
        assert!(
            g.narrow(&n("198.51.0.0/16"), "198.51.100.3".parse().unwrap(), &[])
                .is_err()
        );
        assert_eq!(
            g.narrow(&n("198.51.0.0/16"), "198.51.7.3".parse().unwrap(), &[])
                .unwrap(),
            n("198.51.0.0/18")
        );
    }
}
