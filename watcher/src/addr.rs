//! Addresses and prefixes, destination port sets and ban lengths as the
//! operator writes them, parsed once; the host's own addresses. What may be
//! banned is the ban service's guard (`ban::Guard`).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

pub use ipnet::IpNet;
use ipnet::Ipv4Net;

use fail2xdp_common::MAX_BAN_PORTS;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("`{0}` is not an IP address or CIDR prefix")]
    BadAddress(String),
    #[error("`{0}`: prefix length out of range")]
    BadPrefixLen(String),
    #[error(
        "`{0}` is not a port number or known service name (smtp, submission, smtps, imap, imaps, pop3, pop3s, sieve, http, https, ssh)"
    )]
    BadPort(String),
    #[error("too many ports ({0}): a ban can be scoped to at most {MAX_BAN_PORTS}")]
    TooManyPorts(usize),
    #[error("`{0}` is not a ban length (e.g. 10m, 12h, 1d, 1w, 3600 or permanent)")]
    BadDuration(String),
    #[error("`{0}` is longer than 100 years; use `permanent` for a ban that never ends")]
    TooLong(String),
}

/// Parses an address or CIDR prefix; a bare address is a /32 or /128 and host
/// bits of a prefix are cleared. IPv4-mapped IPv6 (`::ffff:192.0.2.1`, as
/// dual-stack daemons log IPv4 clients) becomes IPv4, because that is what the
/// packets carry.
pub fn parse_net(s: &str) -> Result<IpNet, AddrError> {
    let t = s.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    let bad = || AddrError::BadAddress(s.trim().to_string());
    let net = match t.split_once('/') {
        None => IpNet::from(t.parse::<IpAddr>().map_err(|_| bad())?),
        Some((a, l)) => {
            let addr: IpAddr = a.parse().map_err(|_| bad())?;
            // Accept only plain decimal lengths: "+24" or " 24" are typos, not prefixes.
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u8 = l.parse().map_err(|_| bad())?;
            IpNet::new(addr, len).map_err(|_| AddrError::BadPrefixLen(s.trim().to_string()))?
        }
    };
    Ok(unmap(net).trunc())
}

/// `::ffff:a.b.c.d/len` (len >= 96) -> `a.b.c.d/(len-96)`: the IPv4 network
/// the packets carry (dual-stack daemons log IPv4 clients that way).
pub fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && let Some(v4) = n.addr().to_ipv4_mapped()
        && n.prefix_len() >= 96
        && let Ok(m) = Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(m);
    }
    net
}

/// The address of a bare IP as the /32 or /128 network the maps key on.
pub fn host_net(ip: IpAddr) -> IpNet {
    unmap(IpNet::from(ip))
}

/// Destination ports a ban applies to (TCP and UDP), sorted and unique;
/// empty means every port and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSet(pub Vec<u16>);

const SERVICES: &[(&str, u16)] = &[
    ("smtp", 25),
    ("submission", 587),
    ("submissions", 465),
    ("smtps", 465),
    ("imap", 143),
    ("imaps", 993),
    ("pop3", 110),
    ("pop3s", 995),
    ("sieve", 4190),
    ("managesieve", 4190),
    ("http", 80),
    ("https", 443),
    ("ssh", 22),
];

impl PortSet {
    pub fn all() -> Self {
        PortSet(Vec::new())
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// "all" or a comma/space separated list of numbers and service names.
    pub fn parse(s: &str) -> Result<Self, AddrError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") || t == "*" {
            return Ok(Self::all());
        }
        let mut v = Vec::new();
        for item in t.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty()) {
            let port = match item.parse::<u16>() {
                Ok(0) => return Err(AddrError::BadPort(item.to_string())),
                Ok(p) => p,
                Err(_) => SERVICES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(item))
                    .map(|&(_, p)| p)
                    .ok_or_else(|| AddrError::BadPort(item.to_string()))?,
            };
            v.push(port);
        }
        if v.is_empty() {
            return Err(AddrError::BadPort(t.to_string()));
        }
        Self::from_ports(v)
    }

    /// Sorts, removes duplicates and enforces the map's port limit.
    pub fn from_ports(mut v: Vec<u16>) -> Result<Self, AddrError> {
        v.sort_unstable();
        v.dedup();
        if v.contains(&0) {
            return Err(AddrError::BadPort("0".into()));
        }
        if v.len() > MAX_BAN_PORTS {
            return Err(AddrError::TooManyPorts(v.len()));
        }
        Ok(PortSet(v))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("all");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// "10m", "12h", "1d", "1w", "1h 30m", or bare seconds -> `Some`;
/// "permanent" (also "forever", "never", "-1" as in fail2ban) -> `None`.
pub fn parse_ban_length(s: &str) -> Result<Option<Duration>, AddrError> {
    let t = s.trim();
    let bad = || AddrError::BadDuration(t.to_string());
    if ["permanent", "forever", "never", "-1"]
        .iter()
        .any(|p| t.eq_ignore_ascii_case(p))
    {
        return Ok(None);
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
        Duration::from_secs(t.parse().map_err(|_| bad())?)
    } else {
        humantime::parse_duration(t).map_err(|_| bad())?
    };
    if d.is_zero() {
        return Err(bad());
    }
    crate::ban::check_length(Some(d)).map_err(|_| AddrError::TooLong(t.to_string()))
}

/// Formats a remaining ban time compactly: "59m12s", "2d3h".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{days}d{h:02}h"),
    }
}

/// Same family and one contains the other.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
            a.contains(b) || b.contains(a)
        }
        _ => false,
    }
}

/// Addresses configured on this host's interfaces (current network namespace).
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only read
    // sockaddrs whose family tells their layout.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match (*sa).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parse_net_forms() {
        assert_eq!(parse_net("192.0.2.1").unwrap(), n("192.0.2.1/32"));
        assert_eq!(parse_net(" 192.0.2.77/24 ").unwrap(), n("192.0.2.0/24"));
        assert_eq!(parse_net("2001:db8::1").unwrap(), n("2001:db8::1/128"));
        assert_eq!(
            parse_net("2001:db8:1:2:3::/48").unwrap(),
            n("2001:db8:1::/48")
        );
        assert_eq!(parse_net("[2001:db8::5]").unwrap(), n("2001:db8::5/128"));
        assert_eq!(parse_net("::ffff:192.0.2.9").unwrap(), n("192.0.2.9/32"));
        assert_eq!(
            parse_net("::ffff:198.51.100.0/120").unwrap(),
            n("198.51.100.0/24")
        );
    }

    #[test]
    fn parse_net_rejects() {
        for bad in [
            "",
            "192.0.2",
            "192.0.2.1/33",
            "2001:db8::/129",
            "192.0.2.1/",
            "192.0.2.1/+8",
            "unknown[203.0.113.9]",
            "fe80::1%eth0",
            "192.0.2.1/24/1",
            "host.example",
        ] {
            assert!(parse_net(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(
            parse_net("192.0.2.1/40"),
            Err(AddrError::BadPrefixLen(_))
        ));
    }

    #[test]
    fn ports() {
        assert_eq!(PortSet::parse("all").unwrap(), PortSet::all());
        assert_eq!(
            PortSet::parse("smtp,submission,465,imaps").unwrap().0,
            vec![25, 465, 587, 993]
        );
        assert_eq!(
            PortSet::parse("smtps, submissions,465").unwrap().0,
            vec![465]
        );
        assert_eq!(PortSet::parse("SSH").unwrap().0, vec![22]);
        assert!(matches!(
            PortSet::parse("smtp,gopher"),
            Err(AddrError::BadPort(_))
        ));
        assert!(PortSet::parse("0").is_err());
        assert!(PortSet::parse("65536").is_err());
        assert!(PortSet::parse(",").is_err());
        assert_eq!(PortSet::parse("1,2,3,4,5,6,7,8").unwrap().0.len(), 8);
        assert_eq!(
            PortSet::parse("1,2,3,4,5,6,7,8,9"),
            Err(AddrError::TooManyPorts(9))
        );
        assert_eq!(PortSet::parse("25,465").unwrap().to_string(), "25,465");
        assert_eq!(PortSet::all().to_string(), "all");
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_ban_length("10m").unwrap(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_ban_length("12h").unwrap(),
            Some(Duration::from_secs(43200))
        );
        assert_eq!(
            parse_ban_length("1w").unwrap(),
            Some(Duration::from_secs(604800))
        );
        assert_eq!(
            parse_ban_length("1h 30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_ban_length("3600").unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_ban_length("permanent").unwrap(), None);
        assert_eq!(parse_ban_length("-1").unwrap(), None);
        for bad in ["", "0", "0s", "soon", "-5m", "1x"] {
            assert!(parse_ban_length(bad).is_err(), "{bad} accepted");
        }
        // Longer than any ban may be (it panicked the agent once).
        for absurd in ["18446744073709551615", "200years", "36500000d"] {
            assert!(
                matches!(parse_ban_length(absurd), Err(AddrError::TooLong(_))),
                "{absurd}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(3552)), "59m12s");
        assert_eq!(
            format_duration(Duration::from_secs(2 * 86400 + 3 * 3600)),
            "2d03h"
        );
    }

    #[test]
    fn local_addrs_has_loopback() {
        assert!(local_addrs().iter().any(|a| a.is_loopback()));
    }
}
