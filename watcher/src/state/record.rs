//! One ban's metadata and its on-disk encoding.
use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Evidence kept per ban: enough to explain it, bounded so a noisy host cannot
/// grow the store without limit.
pub const MAX_EVIDENCE_LINES: usize = 10;
/// Longer evidence lines are cut (at a char boundary); sources already bound lines,
/// this only protects the store from callers that do not.
pub const MAX_EVIDENCE_LINE_BYTES: usize = 2048;
pub const MAX_REASON_BYTES: usize = 1024;

/// Metadata of one ban. The kernel map holds what is enforced; this holds why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    pub net: IpNet,
    pub jail: String,
    pub reason: String,
    /// The matched log lines that led to the ban, oldest first, at most
    /// [`MAX_EVIDENCE_LINES`].
    pub evidence: Vec<String>,
    #[serde(with = "unix_ns")]
    pub first_seen: SystemTime,
    #[serde(with = "unix_ns")]
    pub last_seen: SystemTime,
    pub failures: u32,
    /// How many times this host has been banned, this ban included.
    pub times_banned: u32,
    #[serde(with = "unix_ns")]
    pub banned_at: SystemTime,
    /// None = permanent.
    #[serde(with = "unix_ns_opt")]
    pub expires_at: Option<SystemTime>,
    /// Destination ports; empty = all ports and protocols.
    pub ports: Vec<u16>,
}

impl BanRecord {
    /// A record with no evidence, for a ban typed by an operator.
    pub fn manual(
        net: IpNet,
        jail: &str,
        reason: Option<&str>,
        ttl: Option<Duration>,
        ports: Vec<u16>,
    ) -> Self {
        let now = SystemTime::now();
        BanRecord {
            net: net.trunc(),
            jail: jail.to_owned(),
            reason: reason.unwrap_or("manual ban").to_owned(),
            evidence: Vec::new(),
            first_seen: now,
            last_seen: now,
            failures: 0,
            times_banned: 1,
            banned_at: now,
            expires_at: ttl.and_then(|t| now.checked_add(t)),
            ports,
        }
    }

    /// True once the ban has run out (a permanent ban never does).
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Keeps the last [`MAX_EVIDENCE_LINES`] lines and cuts over-long ones
    /// and the reason, so what is stored is bounded whatever the caller passed.
    pub(crate) fn bounded(&self) -> std::borrow::Cow<'_, BanRecord> {
        let within = self.evidence.len() <= MAX_EVIDENCE_LINES
            && self
                .evidence
                .iter()
                .all(|l| l.len() <= MAX_EVIDENCE_LINE_BYTES)
            && self.reason.len() <= MAX_REASON_BYTES
            && self.net == self.net.trunc();
        if within {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut r = self.clone();
        r.net = r.net.trunc();
        let skip = r.evidence.len().saturating_sub(MAX_EVIDENCE_LINES);
        r.evidence = r
            .evidence
            .into_iter()
            .skip(skip)
            .map(|l| cut(l, MAX_EVIDENCE_LINE_BYTES))
            .collect();
        r.reason = cut(r.reason, MAX_REASON_BYTES);
        std::borrow::Cow::Owned(r)
    }

    /// Stored form: format byte, expiry (big-endian unix ns, u64::MAX =
    /// permanent) so the expiry index can be kept without parsing JSON, then
    /// the record as JSON.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(512);
        out.push(FORMAT_V1);
        out.extend_from_slice(&expiry_ns(self.expires_at).to_be_bytes());
        serde_json::to_writer(&mut out, &*self.bounded())?;
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&FORMAT_V1, rest)) if rest.len() >= 8 => Ok(serde_json::from_slice(&rest[8..])?),
            Some((&FORMAT_V1, _)) => Err(DecodeError::Empty),
            Some((&v, _)) => Err(DecodeError::Version(v)),
            None => Err(DecodeError::Empty),
        }
    }
}

/// The expiry header of a stored value; None = permanent or unreadable.
pub(crate) fn stored_expiry(bytes: &[u8]) -> Option<u64> {
    let h: [u8; 8] = bytes.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(h)).filter(|e| *e != u64::MAX)
}

pub(crate) fn expiry_ns(t: Option<SystemTime>) -> u64 {
    t.map_or(u64::MAX, |t| to_unix_ns(t).min(u64::MAX - 1))
}

/// First byte of every stored value, so a later format can coexist with old
/// records instead of misreading them.
const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("unknown record format {0}")]
    Version(u8),
    #[error("bad record: {0}")]
    Json(#[from] serde_json::Error),
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Table key of a net: family, prefix length, then the (masked) address bytes.
/// Family first keeps v4 and v6 apart; the length makes 192.0.2.0/24 and
/// 192.0.2.0/32 distinct bans, as they are in the kernel maps.
pub(crate) fn net_key(net: &IpNet) -> Vec<u8> {
    let net = unmap_v4(net.trunc());
    let mut k = Vec::with_capacity(18);
    match net.addr() {
        IpAddr::V4(a) => {
            k.push(4);
            k.push(net.prefix_len());
            k.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            k.push(6);
            k.push(net.prefix_len());
            k.extend_from_slice(&a.octets());
        }
    }
    k
}

/// Inverse of [`net_key`].
pub(crate) fn key_net(k: &[u8]) -> Option<IpNet> {
    match k {
        [4, len, a @ ..] if a.len() == 4 => {
            let o: [u8; 4] = a.try_into().ok()?;
            IpNet::new(IpAddr::from(o), *len).ok()
        }
        [6, len, a @ ..] if a.len() == 16 => {
            let o: [u8; 16] = a.try_into().ok()?;
            IpNet::new(IpAddr::from(o), *len).ok()
        }
        _ => None,
    }
}

/// `::ffff:a.b.c.d/len` is the IPv4 net the packets carry (dual-stack daemons
/// log IPv4 clients that way); key it as IPv4 so both spellings meet.
fn unmap_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && let Some(v4) = n.addr().to_ipv4_mapped()
        && n.prefix_len() >= 96
        && let Ok(m) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(m);
    }
    net
}

pub(crate) fn to_unix_ns(t: SystemTime) -> u64 {
    // Times before 1970 do not occur in logs we act on; clamp rather than fail.
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

mod unix_ns {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_unix_ns(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(super::from_unix_ns)
    }
}

mod unix_ns_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&super::to_unix_ns(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(super::from_unix_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> BanRecord {
        let mut r = BanRecord::manual(
            "192.0.2.7/32".parse().unwrap(),
            "postfix",
            Some("sasl"),
            Some(Duration::from_secs(600)),
            vec![25, 587],
        );
        r.evidence = vec!["line".into()];
        r
    }

    #[test]
    fn roundtrip_keeps_every_field() {
        let r = rec();
        let back = BanRecord::decode(&r.encode().unwrap()).unwrap();
        // Stored with ns precision, so SystemTime survives exactly.
        assert_eq!(back, r);
    }

    #[test]
    fn evidence_and_lines_are_bounded() {
        let mut r = rec();
        r.evidence = (0..25)
            .map(|i| format!("{i} {}", "é".repeat(3000)))
            .collect();
        let back = BanRecord::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back.evidence.len(), MAX_EVIDENCE_LINES);
        assert!(
            back.evidence[0].starts_with("15 "),
            "keeps the newest lines"
        );
        assert!(
            back.evidence
                .iter()
                .all(|l| l.len() <= MAX_EVIDENCE_LINE_BYTES)
        );
    }

    #[test]
    fn unknown_format_is_an_error_not_garbage() {
        assert!(matches!(
            BanRecord::decode(&[9, b'{', b'}']),
            Err(DecodeError::Version(9))
        ));
        assert!(matches!(BanRecord::decode(&[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn keys_roundtrip_and_expiry_header_is_readable() {
        for n in [
            "192.0.2.0/24",
            "192.0.2.9/32",
            "2001:db8::/48",
            "2001:db8::1/128",
        ] {
            let n: IpNet = n.parse().unwrap();
            assert_eq!(key_net(&net_key(&n)), Some(n));
        }
        assert_eq!(key_net(&[4, 32, 1]), None);
        let r = rec();
        let bytes = r.encode().unwrap();
        assert_eq!(stored_expiry(&bytes), r.expires_at.map(to_unix_ns));
        let mut p = r.clone();
        p.expires_at = None;
        assert_eq!(stored_expiry(&p.encode().unwrap()), None);
    }

    #[test]
    fn keys_separate_family_and_length() {
        let a = net_key(&"192.0.2.0/24".parse().unwrap());
        let b = net_key(&"192.0.2.0/32".parse().unwrap());
        let c = net_key(&"192.0.2.9/24".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, c, "host bits are cleared");
        assert_eq!(net_key(&"2001:db8::/32".parse().unwrap())[0], 6);
        assert_eq!(
            net_key(&"::ffff:192.0.2.9/128".parse().unwrap()),
            net_key(&"192.0.2.9/32".parse().unwrap())
        );
    }
}
