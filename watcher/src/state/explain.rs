//! What `fail2xdp explain` shows: the bans covering an address (every
//! origin's claim, and the blocklists holding it), what the maps enforce,
//! and the evidence. Built by one function, [`Explanation::gather`], for
//! the agent (which adds the failures it is still counting) and for the CLI
//! when no agent runs.
use std::{
    fmt,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{BanRecord, DecisionRef, ImportHeader, StateError, Store};
use crate::enforcer::{BanInfo, Enforcer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// What was asked about (host bits cleared).
    pub target: IpNet,
    /// Bans whose net covers the target, longest prefix first (the first
    /// one is what the XDP program matches); one entry per origin's claim.
    pub bans: Vec<ExplainedBan>,
    /// Bans of exactly this host/net, across origins, expired ones included.
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
    /// Who asked: a jail name, `manual`, `file:NAME`, `crowdsec/ORIGIN`.
    pub origin: String,
    /// The jail, when a jail made the ban.
    #[serde(default)]
    pub jail: Option<String>,
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
    /// Seconds this claim has left; None = permanent.
    pub remaining_secs: Option<u64>,
    pub expired: bool,
    /// Empty = all ports and protocols.
    pub ports: Vec<u16>,
    /// The jail's prefix, when this ban was narrowed to spare a protected
    /// address (the host's own, an allowlisted one).
    #[serde(default)]
    pub narrowed_from: Option<IpNet>,
    /// Packets dropped since the ban of this network was written to the
    /// map; None when the maps were not read or hold no entry for it.
    pub drops: Option<u64>,
    /// The state store has this claim (false: found only in the maps).
    #[serde(default = "yes")]
    pub recorded: bool,
    /// The pinned maps hold a ban of this network; None when not read.
    #[serde(default)]
    pub in_maps: Option<bool>,
    /// What the maps enforce for the network (the merge of its claims):
    /// seconds left, None = permanent or not read.
    #[serde(default)]
    pub enforced_remaining_secs: Option<u64>,
    /// The CrowdSec decision behind a `crowdsec/...` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRef>,
}

fn yes() -> bool {
    true
}

impl ExplainedBan {
    pub fn from_record(r: &BanRecord, now: SystemTime) -> Self {
        ExplainedBan {
            net: r.net,
            origin: r.origin.to_string(),
            jail: r.origin.jail().map(ToString::to_string),
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
            narrowed_from: r.narrowed_from,
            drops: None,
            recorded: true,
            in_maps: None,
            enforced_remaining_secs: None,
            decision: r.decision.clone(),
        }
    }

    fn from_import(net: IpNet, h: &ImportHeader, now: SystemTime) -> Self {
        ExplainedBan {
            net,
            origin: h.origin.to_string(),
            jail: None,
            reason: format!("{} (import #{} of {})", h.reason, h.id, h.source),
            evidence: Vec::new(),
            failures: 0,
            times_banned: 0,
            first_seen: rfc3339(h.banned_at),
            last_seen: rfc3339(h.banned_at),
            banned_at: rfc3339(h.banned_at),
            expires_at: h.expires_at.map(rfc3339),
            remaining_secs: h
                .expires_at
                .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO).as_secs()),
            expired: h.is_expired(now),
            ports: h.ports.clone(),
            narrowed_from: None,
            drops: None,
            recorded: true,
            in_maps: None,
            enforced_remaining_secs: None,
            decision: None,
        }
    }

    fn from_map(b: &BanInfo) -> Self {
        let unknown = || "unknown (no record in the state store)".to_owned();
        ExplainedBan {
            net: b.net.trunc(),
            origin: b.jail.clone(),
            jail: None,
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
            narrowed_from: None,
            drops: Some(b.drops),
            recorded: false,
            in_maps: Some(true),
            enforced_remaining_secs: b.remaining.map(|r| r.as_secs()),
            decision: None,
        }
    }
}

impl Explanation {
    /// Everything known about `target`: the store's claims and imports (if
    /// a store is given), and what the maps hold (if an enforcer is given),
    /// probing every prefix length that covers the target, as the XDP
    /// program does. For a prefix target, bans of that prefix or broader.
    pub fn gather(
        store: Option<&Store>,
        enforcer: Option<&Enforcer>,
        target: &IpNet,
    ) -> Result<Self, StateError> {
        let target = crate::addr::unmap(*target).trunc();
        let now = SystemTime::now();
        let mut bans = Vec::new();
        let (mut times_banned, mut last_banned) = (0, None);
        if let Some(store) = store {
            for r in store.covering(target.network())? {
                if r.net.prefix_len() <= target.prefix_len() {
                    bans.push(ExplainedBan::from_record(&r, now));
                }
            }
            for len in (0..=target.prefix_len()).rev() {
                let Ok(net) = IpNet::new(target.network(), len).map(|n| n.trunc()) else {
                    continue;
                };
                for h in store.imports_holding(&net)? {
                    bans.push(ExplainedBan::from_import(net, &h, now));
                }
            }
            let history = store.ban_history(target)?;
            let recorded = bans
                .iter()
                .filter(|b| b.net == target)
                .map(|b| b.times_banned)
                .max()
                .unwrap_or(0);
            times_banned = recorded.max(u32::try_from(history.len()).unwrap_or(u32::MAX));
            last_banned = history.last().copied().map(rfc3339);
        }
        let mut e = Explanation {
            target,
            bans,
            times_banned,
            last_banned,
            tracking: Vec::new(),
        };
        if let Some(enf) = enforcer {
            e.merge_maps(|n| match enf.get(n) {
                Ok(b) => b,
                Err(err) => {
                    log::debug!(
                        "reading the ban of {n} from the maps: {}",
                        crate::error_chain(&err)
                    );
                    None
                }
            });
        }
        Ok(e)
    }

    /// Adds what the maps say: drops and the kernel's view of expiry for
    /// recorded bans, and bans present only in the maps (e.g. written by an
    /// older version, or while the store failed).
    pub fn merge_maps(&mut self, mut lookup: impl FnMut(&IpNet) -> Option<BanInfo>) {
        let t = self.target;
        for len in (0..=t.prefix_len()).rev() {
            let Ok(net) = IpNet::new(t.network(), len).map(|n| n.trunc()) else {
                continue;
            };
            let found = lookup(&net);
            let mut any = false;
            for b in self.bans.iter_mut().filter(|b| b.net == net) {
                any = true;
                match &found {
                    Some(k) => {
                        b.drops = Some(k.drops);
                        b.in_maps = Some(!k.expired);
                        b.enforced_remaining_secs = k.remaining.map(|r| r.as_secs());
                    }
                    None => b.in_maps = Some(false),
                }
            }
            if let (false, Some(k)) = (any, found) {
                self.bans.push(ExplainedBan::from_map(&k));
            }
        }
        self.bans
            .sort_by_key(|b| std::cmp::Reverse(b.net.prefix_len()));
    }

    /// Some ban covering the target is in force (and in the maps, when they were read).
    pub fn is_banned(&self) -> bool {
        self.enforcing().is_some()
    }

    /// The ban that drops the target's packets: the longest covering prefix
    /// in force.
    pub fn enforcing(&self) -> Option<&ExplainedBan> {
        self.bans
            .iter()
            .find(|b| !b.expired && b.in_maps != Some(false))
    }

    /// The target as an address when it is a single host.
    pub fn host(&self) -> Option<IpAddr> {
        (self.target.prefix_len() == self.target.max_prefix_len()).then(|| self.target.addr())
    }
}

/// Log lines come from attackers (user names, HELO strings): never let them
/// drive the operator's terminal with escape sequences.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
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
        match self.enforcing() {
            Some(b) if b.net == self.target => write!(f, "{what} is banned")?,
            Some(b) => write!(f, "{what} is banned as part of {}", b.net)?,
            None if self.bans.iter().any(|b| !b.expired) => write!(
                f,
                "{what} has a ban on record that is not in the maps (not enforced)"
            )?,
            None if self.bans.is_empty() => write!(f, "{what} is not banned")?,
            None => write!(f, "{what} was banned (expired, not yet cleaned up)")?,
        }
        match (&self.last_banned, self.times_banned) {
            (_, 0) => writeln!(f)?,
            (Some(last), n) => writeln!(f, "; {what} banned {n} time(s), last at {last}")?,
            (None, n) => writeln!(f, "; {what} banned {n} time(s)")?,
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
            writeln!(
                f,
                "  ban:        {} (origin {})",
                b.net,
                printable(&b.origin)
            )?;
            if let Some(n) = b.narrowed_from {
                writeln!(
                    f,
                    "  narrowed:   from the jail's {n}, which holds a protected address (this host's, or an allowlisted one)"
                )?;
            }
            writeln!(f, "  reason:     {}", printable(&b.reason))?;
            if let Some(d) = &b.decision {
                writeln!(
                    f,
                    "  decision:   CrowdSec decision #{} (scenario {})",
                    d.id,
                    printable(&d.scenario)
                )?;
            }
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
            if b.recorded && b.failures > 0 {
                writeln!(
                    f,
                    "  failures:   {} between {} and {}",
                    b.failures, b.first_seen, b.last_seen
                )?;
            }
            if b.times_banned > 0 {
                writeln!(f, "  banned:     {} time(s) by then", b.times_banned)?;
            }
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
            crate::ban::Origin::Jail(crate::ban::JailName::new("postfix").unwrap()),
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
