//! One ban claim's metadata and its on-disk encoding. A network may carry
//! several claims, one per origin (a jail's and a CrowdSec decision's): the
//! maps enforce their merge, and lifting one leaves the others.
use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ban::Origin;

/// Evidence kept per ban: enough to explain it, bounded so a noisy host cannot
/// grow the store without limit.
pub const MAX_EVIDENCE_LINES: usize = 10;
/// Longer evidence lines are cut (at a char boundary); sources already bound lines,
/// this only protects the store from callers that do not.
pub const MAX_EVIDENCE_LINE_BYTES: usize = 2048;
pub const MAX_REASON_BYTES: usize = 1024;

/// One origin's ban of one network. The kernel map holds what is enforced
/// (the merge of a network's claims); this holds why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    pub net: IpNet,
    pub origin: Origin,
    pub reason: String,
    /// The matched log lines that led to the ban, oldest first, at most
    /// [`MAX_EVIDENCE_LINES`].
    pub evidence: Vec<String>,
    #[serde(with = "unix_ns")]
    pub first_seen: SystemTime,
    #[serde(with = "unix_ns")]
    pub last_seen: SystemTime,
    pub failures: u32,
    /// How many times this network has been banned, this ban included.
    pub times_banned: u32,
    #[serde(with = "unix_ns")]
    pub banned_at: SystemTime,
    /// None = permanent.
    #[serde(with = "unix_ns_opt")]
    pub expires_at: Option<SystemTime>,
    /// Destination ports; empty = all ports and protocols.
    pub ports: Vec<u16>,
    /// The jail's prefix when this ban was narrowed to spare a protected
    /// address (the host's own, an allowlisted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrowed_from: Option<IpNet>,
    /// The CrowdSec decision this claim enforces (origin `crowdsec/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRef>,
}

/// A CrowdSec decision, as `list` and `explain` name it: its id in the
/// Local API and its scenario (the decision's origin is the claim's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRef {
    pub id: i64,
    pub scenario: String,
}

/// The first format stored one record per network with a `jail` name.
#[derive(Deserialize)]
struct RecordV1 {
    net: IpNet,
    jail: String,
    reason: String,
    evidence: Vec<String>,
    #[serde(with = "unix_ns")]
    first_seen: SystemTime,
    #[serde(with = "unix_ns")]
    last_seen: SystemTime,
    failures: u32,
    times_banned: u32,
    #[serde(with = "unix_ns")]
    banned_at: SystemTime,
    #[serde(with = "unix_ns_opt")]
    expires_at: Option<SystemTime>,
    ports: Vec<u16>,
}

impl BanRecord {
    /// A record with no evidence, for a ban typed by an operator.
    pub fn manual(
        net: IpNet,
        origin: Origin,
        reason: Option<&str>,
        ttl: Option<Duration>,
        ports: Vec<u16>,
    ) -> Self {
        let now = SystemTime::now();
        BanRecord {
            net: net.trunc(),
            origin,
            reason: reason.unwrap_or("manual ban").to_owned(),
            evidence: Vec::new(),
            first_seen: now,
            last_seen: now,
            failures: 0,
            times_banned: 1,
            banned_at: now,
            expires_at: ttl.and_then(|t| now.checked_add(t)),
            ports,
            narrowed_from: None,
            decision: None,
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
        out.push(FORMAT_V2);
        out.extend_from_slice(&expiry_ns(self.expires_at).to_be_bytes());
        serde_json::to_writer(&mut out, &*self.bounded())?;
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&FORMAT_V2, rest)) if rest.len() >= 8 => Ok(serde_json::from_slice(&rest[8..])?),
            Some((&FORMAT_V1, rest)) if rest.len() >= 8 => {
                let r: RecordV1 = serde_json::from_slice(&rest[8..])?;
                Ok(BanRecord {
                    net: r.net,
                    // A name that is not a valid origin any more is kept as
                    // a manual ban, its old name in the reason.
                    origin: Origin::parse(&r.jail).unwrap_or(Origin::Manual),
                    reason: if Origin::parse(&r.jail).is_ok() {
                        r.reason
                    } else {
                        format!("{} (jail {})", r.reason, r.jail.escape_default())
                    },
                    evidence: r.evidence,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                    failures: r.failures,
                    times_banned: r.times_banned,
                    banned_at: r.banned_at,
                    expires_at: r.expires_at,
                    ports: r.ports,
                    narrowed_from: None,
                    decision: None,
                })
            }
            Some((&(FORMAT_V1 | FORMAT_V2), _)) => Err(DecodeError::Empty),
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
const FORMAT_V2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("unknown record format {0}")]
    Version(u8),
    #[error("bad record")]
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
/// 192.0.2.0/32 distinct bans, as they are in the kernel maps. 6 bytes for
/// IPv4, 18 for IPv6.
pub(crate) fn net_key(net: &IpNet) -> Vec<u8> {
    let net = crate::addr::unmap(net.trunc());
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
#[cfg(test)]
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

/// Length of the net key a claim key starts with (from its family byte).
pub(crate) fn net_key_len(k: &[u8]) -> Option<usize> {
    match k.first() {
        Some(4) => Some(6),
        Some(6) => Some(18),
        _ => None,
    }
}

/// Key of one origin's claim on a net: the net key, a 0 byte, the origin's
/// label. All claims of a net are one range of keys.
pub(crate) fn claim_key(net: &IpNet, origin: &Origin) -> Vec<u8> {
    let mut k = net_key(net);
    k.push(0);
    k.extend_from_slice(origin.to_string().as_bytes());
    k
}

/// The range holding every claim on `net`: [start, end).
pub(crate) fn claims_range(net: &IpNet) -> (Vec<u8>, Vec<u8>) {
    let mut start = net_key(net);
    let mut end = start.clone();
    start.push(0);
    end.push(1);
    (start, end)
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

pub(crate) mod unix_ns {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::to_unix_ns(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(super::from_unix_ns)
    }
}

pub(crate) mod unix_ns_opt {
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
    use crate::ban::JailName;

    fn rec() -> BanRecord {
        let mut r = BanRecord::manual(
            "192.0.2.7/32".parse().unwrap(),
            Origin::Jail(JailName::new("postfix").unwrap()),
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
    fn first_format_records_still_read() {
        let v1 = br#"{"net":"192.0.2.7/32","jail":"postfix","reason":"r","evidence":[],"first_seen":1,"last_seen":2,"failures":3,"times_banned":1,"banned_at":4,"expires_at":null,"ports":[25]}"#;
        let mut bytes = vec![FORMAT_V1];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(v1);
        let r = BanRecord::decode(&bytes).unwrap();
        assert_eq!(r.origin, Origin::Jail(JailName::new("postfix").unwrap()));
        assert_eq!((r.failures, r.ports.as_slice()), (3, &[25u16][..]));
        // A name no longer valid becomes a manual ban that keeps it in the reason.
        let odd = String::from_utf8_lossy(v1).replace("\"postfix\"", "\"my jail\"");
        let mut bytes = vec![FORMAT_V1];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(odd.as_bytes());
        let r = BanRecord::decode(&bytes).unwrap();
        assert_eq!(r.origin, Origin::Manual);
        assert!(r.reason.contains("my jail"), "{}", r.reason);
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
            let c = claim_key(&n, &Origin::Manual);
            let (lo, hi) = claims_range(&n);
            assert!(lo <= c && c < hi);
            assert_eq!(net_key_len(&c), Some(net_key(&n).len()));
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
