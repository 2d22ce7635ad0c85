//! What `fail2xdp explain` shows: the bans covering an address and their
//! evidence. One type for the agent (which answers over the control socket)
//! and the CLI (which reads the store itself when no agent runs).
use std::{
    fmt,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{BanRecord, StateError, Store};
use crate::enforcer::{BanInfo, Enforcer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// What was asked about (host bits cleared).
    pub target: IpNet,
    /// Stored bans whose net covers the target, longest prefix first (the
    /// first one is what the XDP program matches).
    pub bans: Vec<ExplainedBan>,
    /// Bans of exactly this host/net, across jails, expired ones included.
    #[serde(default)]
    pub times_banned: u32,
    /// RFC 3339, UTC.
    #[serde(default)]
    pub last_banned: Option<String>,
    /// Failures the running agent counts towards a ban right now (only the
    /// agent knows; empty when answered from disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracking: Vec<Tracking>,
}

/// One jail's pending failures for the target, as the agent reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    #[serde(default)]
    pub jail: String,
    #[serde(default)]
    pub net: String,
    /// Failures within the jail's find time.
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub maxretry: u64,
    /// Failures seen in total.
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainedBan {
    pub net: IpNet,
    pub jail: String,
    pub reason: String,
    pub evidence: Vec<String>,
    pub failures: u32,
    pub times_banned: u32,
    /// Times are RFC 3339, UTC.
    pub first_seen: String,
    pub last_seen: String,
    pub banned_at: String,
    /// None = permanent.
    pub expires_at: Option<String>,
    /// Seconds left when the explanation was made; None = permanent.
    pub remaining_secs: Option<u64>,
    pub expired: bool,
    /// Empty = all ports and protocols.
    pub ports: Vec<u16>,
    /// Packets dropped since the ban was written to the map; None when the
    /// map could not be read (or holds no entry for this net).
    pub drops: Option<u64>,
    /// The state store has a record of this ban (false: found only in the maps).
    #[serde(default = "yes")]
    pub recorded: bool,
    /// The pinned maps hold this ban; None when they were not read.
    #[serde(default)]
    pub in_maps: Option<bool>,
}

fn yes() -> bool {
    true
}

impl ExplainedBan {
    pub fn from_record(r: &BanRecord, now: SystemTime) -> Self {
        ExplainedBan {
            net: r.net,
            jail: r.jail.clone(),
            reason: r.reason.clone(),
            evidence: r.evidence.clone(),
            failures: r.failures,
            times_banned: r.times_banned,
            first_seen: rfc3339(r.first_seen),
            last_seen: rfc3339(r.last_seen),
            banned_at: rfc3339(r.banned_at),
            expires_at: r.expires_at.map(rfc3339),
            remaining_secs: r
                .expires_at
                .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO).as_secs()),
            expired: r.is_expired(now),
            ports: r.ports.clone(),
            drops: None,
            recorded: true,
            in_maps: None,
        }
    }

    fn from_map(b: &BanInfo) -> Self {
        let unknown = || "unknown (no record in the state store)".to_owned();
        ExplainedBan {
            net: b.net.trunc(),
            jail: b.jail.clone(),
            reason: unknown(),
            evidence: Vec::new(),
            failures: 0,
            times_banned: 0,
            first_seen: "?".into(),
            last_seen: "?".into(),
            banned_at: rfc3339(b.created),
            expires_at: b
                .remaining
                .and_then(|r| SystemTime::now().checked_add(r))
                .map(rfc3339),
            remaining_secs: b.remaining.map(|r| r.as_secs()),
            expired: b.expired,
            ports: b.ports.0.clone(),
            drops: Some(b.drops),
            recorded: false,
            in_maps: Some(true),
        }
    }
}

impl Explanation {
    /// Reads what the store knows about `target`. For a single address every
    /// covering ban is listed; for a prefix, bans of that prefix or broader.
    /// Drops are left None: the caller fills them from the maps it can read.
    pub fn from_store(store: &Store, target: &IpNet) -> Result<Self, StateError> {
        let target = target.trunc();
        let now = SystemTime::now();
        let bans = store
            .covering(target.network())?
            .iter()
            .filter(|r| r.net.prefix_len() <= target.prefix_len())
            .map(|r| ExplainedBan::from_record(r, now))
            .collect::<Vec<_>>();
        let history = store.ban_history(target)?;
        let recorded = bans
            .iter()
            .filter(|b| b.net == target)
            .map(|b| b.times_banned)
            .max()
            .unwrap_or(0);
        Ok(Explanation {
            target,
            bans,
            times_banned: recorded.max(u32::try_from(history.len()).unwrap_or(u32::MAX)),
            last_banned: history.last().copied().map(rfc3339),
            tracking: Vec::new(),
        })
    }

    /// Adds what the pinned maps say: drops and the kernel's view of expiry
    /// for recorded bans, and bans present only in the maps (e.g. written
    /// while the store was unavailable). Probes every prefix length covering
    /// the target, as the XDP program would.
    pub fn merge_maps(&mut self, mut lookup: impl FnMut(&IpNet) -> Option<BanInfo>) {
        let t = self.target;
        for len in (0..=t.prefix_len()).rev() {
            let Ok(net) = IpNet::new(t.network(), len).map(|n| n.trunc()) else {
                continue;
            };
            let found = lookup(&net);
            match (self.bans.iter_mut().find(|b| b.net == net), found) {
                (Some(b), Some(k)) => {
                    b.drops = Some(k.drops);
                    // The kernel's boot-time clock decides expiry; trust it.
                    b.expired = k.expired;
                    b.remaining_secs = k.remaining.map(|r| r.as_secs());
                    b.in_maps = Some(true);
                }
                (Some(b), None) => b.in_maps = Some(false),
                (None, Some(k)) => self.bans.push(ExplainedBan::from_map(&k)),
                (None, None) => {}
            }
        }
        self.bans
            .sort_by_key(|b| std::cmp::Reverse(b.net.prefix_len()));
    }

    /// Fills only `drops` of recorded bans from `lookup`. Prefer
    /// [`merge_enforcer`](Self::merge_enforcer), which also shows bans found
    /// only in the maps and the kernel's view of expiry.
    pub fn fill_drops(&mut self, mut lookup: impl FnMut(&IpNet) -> Option<u64>) {
        for b in &mut self.bans {
            b.drops = lookup(&b.net);
        }
    }

    /// [`merge_maps`](Self::merge_maps) from an enforcer's handles; a failing
    /// map read leaves that ban's drops unknown.
    pub fn merge_enforcer(&mut self, enforcer: &Enforcer) {
        self.merge_maps(|n| match enforcer.get(n) {
            Ok(b) => b,
            Err(e) => {
                log::debug!("reading the ban of {n} from the maps: {e}");
                None
            }
        });
    }

    /// Some ban covering the target is in force (and in the maps, when they were read).
    pub fn is_banned(&self) -> bool {
        self.bans
            .iter()
            .any(|b| !b.expired && b.in_maps != Some(false))
    }

    /// The target as an address when it is a single host.
    pub fn host(&self) -> Option<IpAddr> {
        (self.target.prefix_len() == self.target.max_prefix_len()).then(|| self.target.addr())
    }
}

/// Log lines come from attackers (user names, HELO strings): never let them
/// drive the operator's terminal with escape sequences.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.round(jiff::Unit::Second).unwrap_or(ts).to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.host() {
            Some(a) => a.to_string(),
            None => self.target.to_string(),
        };
        if self.bans.is_empty() {
            write!(f, "{what} is not banned")?;
        } else if self.is_banned() {
            write!(f, "{what} is banned")?;
        } else if self.bans.iter().any(|b| !b.expired) {
            write!(
                f,
                "{what} has a ban on record that is not in the maps (not enforced)"
            )?;
        } else {
            write!(f, "{what} was banned (expired, not yet cleaned up)")?;
        }
        match (&self.last_banned, self.times_banned) {
            (_, 0) => writeln!(f, "; no ban on record")?,
            (Some(last), n) => writeln!(f, "; banned {n} time(s), last at {last}")?,
            (None, n) => writeln!(f, "; banned {n} time(s)")?,
        }
        for t in &self.tracking {
            writeln!(
                f,
                "  counting:   {} of {} failures in jail {} ({} seen in total){}",
                t.failures,
                t.maxretry,
                printable(&t.jail),
                t.total,
                if t.net.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", t.net)
                }
            )?;
            for l in &t.evidence {
                writeln!(f, "    {}", printable(l))?;
            }
        }
        for b in &self.bans {
            writeln!(f)?;
            writeln!(f, "  ban:        {} (jail {})", b.net, printable(&b.jail))?;
            writeln!(f, "  reason:     {}", printable(&b.reason))?;
            writeln!(f, "  banned at:  {}", b.banned_at)?;
            match (&b.expires_at, b.remaining_secs) {
                (None, _) => writeln!(f, "  until:      permanent")?,
                (Some(e), _) if b.expired => writeln!(f, "  until:      {e} (expired)")?,
                (Some(e), Some(s)) => writeln!(
                    f,
                    "  until:      {e} ({} left)",
                    humantime::format_duration(Duration::from_secs(s))
                )?,
                (Some(e), None) => writeln!(f, "  until:      {e}")?,
            }
            if b.ports.is_empty() {
                writeln!(f, "  ports:      all")?;
            } else {
                let p: Vec<String> = b.ports.iter().map(u16::to_string).collect();
                writeln!(f, "  ports:      {}", p.join(","))?;
            }
            writeln!(
                f,
                "  failures:   {} between {} and {}",
                b.failures, b.first_seen, b.last_seen
            )?;
            writeln!(f, "  banned:     {} time(s) by then", b.times_banned)?;
            match (b.drops, b.in_maps) {
                (Some(d), _) => writeln!(f, "  drops:      {d} packet(s) since the ban")?,
                (None, Some(false)) => {
                    writeln!(f, "  drops:      none: not in the maps (not enforced)")?
                }
                (None, _) => writeln!(f, "  drops:      unknown (maps not readable)")?,
            }
            if b.evidence.is_empty() {
                writeln!(f, "  evidence:   none recorded")?;
            } else {
                writeln!(f, "  evidence:")?;
                for l in &b.evidence {
                    writeln!(f, "    {}", printable(l))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_in_evidence_are_defused() {
        let now = SystemTime::now();
        let mut r = BanRecord::manual(
            "192.0.2.1/32".parse().unwrap(),
            "postfix",
            Some("x\u{1b}]0;owned\u{7}"),
            None,
            vec![],
        );
        r.evidence = vec!["user=<\u{1b}[2J\u{1b}[31mroot>".into()];
        let e = Explanation {
            target: r.net,
            bans: vec![ExplainedBan::from_record(&r, now)],
            times_banned: 1,
            last_banned: None,
            tracking: Vec::new(),
        };
        let text = e.to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b}[2J"), "{text}");
    }
}
