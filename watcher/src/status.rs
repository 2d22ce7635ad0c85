//! One typed status of an instance: what `fail2xdp status` prints, what
//! `status --json` (and later metrics) emit. The data-plane part is read the
//! same way whether the CLI asks directly or the agent answers; the agent
//! adds what only it knows (jails, sources, its store's health).
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    ban::ServiceStats,
    enforcer::{self, AttachedMode, Enforcer, EnforcerError, LinkStatus, MapFill},
    instance::Instance,
    state::Health,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub instance: Instance,
    pub protection: Protection,
    pub data_plane: DataPlane,
    /// None: no agent runs for this instance.
    pub agent: Option<AgentStatus>,
}

/// Is the instance protecting, and if not fully, why: never fail open
/// silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    pub state: ProtectionState,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionState {
    /// The program is attached, the agent runs and records every ban.
    Enforcing,
    /// Bans are enforced, but something is missing (see the problems).
    Degraded,
    /// Nothing drops packets.
    Off,
}

impl std::fmt::Display for ProtectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtectionState::Enforcing => "enforcing",
            ProtectionState::Degraded => "DEGRADED",
            ProtectionState::Off => "OFF",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPlane {
    pub pinned: bool,
    pub interfaces: Vec<LinkStatus>,
    pub counters: Option<Counters>,
    pub maps: Vec<MapFill>,
    /// Why the maps could not be read.
    pub error: Option<String>,
}

/// The XDP program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub pass_pkts: u64,
    pub pass_bytes: u64,
    pub drop_pkts: u64,
    pub drop_bytes: u64,
    pub drop_exact_v4: u64,
    pub drop_exact_v6: u64,
    pub drop_prefix_v4: u64,
    pub drop_prefix_v6: u64,
    pub pass_allowlisted: u64,
    pub pass_unparsed: u64,
    pub pass_expired: u64,
    pub pass_other_port: u64,
}

impl From<fail2xdp_common::Stats> for Counters {
    fn from(s: fail2xdp_common::Stats) -> Self {
        Counters {
            pass_pkts: s.pass_pkts,
            pass_bytes: s.pass_bytes,
            drop_pkts: s.drop_pkts,
            drop_bytes: s.drop_bytes,
            drop_exact_v4: s.drop_exact_v4,
            drop_exact_v6: s.drop_exact_v6,
            drop_prefix_v4: s.drop_prefix_v4,
            drop_prefix_v6: s.drop_prefix_v6,
            pass_allowlisted: s.pass_allowlisted,
            pass_unparsed: s.pass_unparsed,
            pass_expired: s.pass_expired,
            pass_other_port: s.pass_other_port,
        }
    }
}

/// What the running agent reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    /// The configuration file, or `<built-in>`.
    pub config: String,
    pub dry_run: bool,
    /// Interfaces it was asked to attach to.
    pub ifaces: Vec<String>,
    pub jails: Vec<JailStatus>,
    pub sources: Vec<SourceStatus>,
    pub bans: ServiceStats,
    pub store: Health,
    /// The `[crowdsec]` bouncer and decision source, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdSecStatus>,
    /// The capabilities the agent runs with (`cap_bpf`, ...; see
    /// privs.rs): empty when it has none (not root).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `[control] readonly_group`: who may send read-only requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_group: Option<String>,
    /// Closing banned sources' open connections (`close_connections`);
    /// None when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<crate::closer::ClosingStatus>,
}

/// The CrowdSec part: is the Local API answering, what its decisions did,
/// and how many jail bans wait to be shared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdSecStatus {
    pub url: String,
    /// Pulls decisions (a bouncer key is configured).
    pub pulling: bool,
    /// Pushes jail bans (a machine login is configured).
    pub pushing: bool,
    /// The last pull was answered (and understood).
    pub connected: bool,
    pub poll_ms: u64,
    /// RFC 3339: the last answered pull, and the last full one.
    pub last_sync: Option<String>,
    pub last_full_sync: Option<String>,
    /// Seconds since the last answered pull.
    #[serde(default)]
    pub last_sync_secs_ago: Option<u64>,
    pub last_error: Option<String>,
    /// RFC 3339: when the pulls started failing.
    pub failing_since: Option<String>,
    /// Ban decisions the LAPI lists now (those the guard refused included).
    pub decisions_active: u64,
    /// Decisions whose ban was written (a claim set, extended or shortened).
    pub decisions_applied: u64,
    /// Ban decisions the guard refused.
    pub decisions_refused: u64,
    /// Decisions that are not bans of addresses, by reason (`type captcha`,
    /// `scope country`, `simulated`, `expired`).
    pub decisions_ignored: std::collections::BTreeMap<String, u64>,
    /// Entries that are no decision (bad value or duration).
    pub decisions_invalid: u64,
    pub bans_lifted: u64,
    /// Jail bans queued on disk, not yet accepted by the LAPI.
    pub push_queue: u64,
    pub pushed: u64,
    /// Queued bans that ended before they could be sent.
    pub push_expired: u64,
    /// Queued bans dropped because the queue was full.
    pub push_dropped: u64,
    pub push_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailStatus {
    pub name: String,
    pub filters: Vec<String>,
    pub sources: Vec<String>,
    pub lines: u64,
    pub failures: u64,
    pub ignored: u64,
    pub current_bans: usize,
    pub total_bans: u64,
    pub tracked_hosts: usize,
    pub evictions: u64,
    pub refused: u64,
    pub stale: u64,
    pub errors: u64,
    /// Lines on which a regex of one of its fail2ban filters hit the
    /// backtracking limit and counted as no match (a filter shared by
    /// jails counts in each).
    #[serde(default)]
    pub backtrack_limit_lines: u64,
    pub maxretry: u32,
    pub findtime_secs: u64,
    pub bantime_secs: Option<u64>,
    pub ports: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub name: String,
    pub lines: u64,
    /// Lines the jails counted, and those of them some filter recognised
    /// (a failure, or an ignoreregex's match).
    #[serde(default)]
    pub counted: u64,
    #[serde(default)]
    pub matched: u64,
    /// Lines delivered with invalid UTF-8 or NUL bytes replaced.
    pub replaced_invalid_utf8: u64,
    pub replaced_nul: u64,
    pub skipped_too_long: u64,
    pub skipped_unreadable: u64,
    pub files_opened: u64,
    pub rotations: u64,
    pub truncations: u64,
}

impl CrowdSecStatus {
    /// What keeps the fleet's bans from being complete here: bans in
    /// force stay enforced either way.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.pulling && !self.connected {
            out.push(match (&self.last_error, &self.failing_since) {
                (Some(e), Some(t)) => format!(
                    "the CrowdSec Local API {} fails since {t} ({e}): bans in force stay enforced, new decisions are not received",
                    self.url
                ),
                (Some(e), None) => format!(
                    "the CrowdSec Local API {} fails ({e}): bans in force stay enforced, new decisions are not received",
                    self.url
                ),
                _ => format!(
                    "CrowdSec decisions from {} are not synced yet",
                    self.url
                ),
            });
        }
        // Connected, but the pulls stopped being answered (a LAPI that
        // accepts and then hangs): said before the request times out.
        let late = self.poll_ms / 1000 * 3 + 90;
        if self.pulling
            && self.connected
            && let Some(age) = self.last_sync_secs_ago
            && age > late
        {
            out.push(format!(
                "no CrowdSec decisions received from {} for {age} s: bans in force stay enforced",
                self.url
            ));
        }
        if self.pushing
            && let Some(e) = &self.push_error
        {
            out.push(format!(
                "{} jail ban(s) wait on disk to be pushed to the CrowdSec Local API ({e})",
                self.push_queue
            ));
        }
        if self.push_dropped > 0 {
            out.push(format!(
                "{} jail ban(s) were dropped unshared: the CrowdSec push queue was full",
                self.push_dropped
            ));
        }
        out
    }
}

impl DataPlane {
    /// Reads the pinned maps and links of `pin_dir`.
    pub fn read(pin_dir: &Path) -> DataPlane {
        let interfaces = enforcer::links(pin_dir).unwrap_or_else(|e| {
            log::warn!("reading the pinned links: {}", crate::error_chain(&e));
            Vec::new()
        });
        let mut dp = DataPlane {
            pinned: false,
            interfaces,
            counters: None,
            maps: Vec::new(),
            error: None,
        };
        match Enforcer::open(pin_dir) {
            Ok(enf) => {
                dp.pinned = true;
                match enf.stats().and_then(|s| Ok((s, enf.map_fill()?))) {
                    Ok((s, fill)) => {
                        dp.counters = Some(s.into());
                        dp.maps = fill;
                    }
                    Err(e) => dp.error = Some(crate::error_chain(&e)),
                }
            }
            Err(EnforcerError::NotPinned(_)) => {}
            Err(e) => dp.error = Some(crate::error_chain(&e)),
        }
        dp
    }

    /// An interface carries the program (here, or in another namespace).
    pub fn attached(&self) -> bool {
        self.interfaces
            .iter()
            .any(|l| l.ifindex != 0 && l.mode != AttachedMode::None)
    }
}

impl Status {
    /// The status of `inst`, with the agent's own part when it runs.
    pub fn gather(inst: &Instance, agent: Option<AgentStatus>) -> Status {
        let data_plane = DataPlane::read(&inst.pin_dir);
        let protection = Protection::judge(&data_plane, agent.as_ref());
        Status {
            instance: inst.clone(),
            protection,
            data_plane,
            agent,
        }
    }

    /// One jail's status, if the agent runs it.
    pub fn jail(&self, name: &str) -> Option<&JailStatus> {
        self.agent.as_ref()?.jails.iter().find(|j| j.name == name)
    }
}

impl Protection {
    fn judge(dp: &DataPlane, agent: Option<&AgentStatus>) -> Protection {
        let mut off = Vec::new();
        let mut degraded = Vec::new();
        if let Some(e) = &dp.error {
            off.push(format!("the pinned maps cannot be read: {e}"));
        } else if !dp.pinned {
            off.push("nothing is pinned: no XDP program or maps exist for this instance".into());
        }
        if !dp.attached() {
            off.push(
                "the XDP program is not attached to any interface: nothing drops packets".into(),
            );
        }
        for l in &dp.interfaces {
            if l.ifindex == 0 {
                degraded.push(format!(
                    "interface {} is gone; its link is defunct",
                    l.iface
                ));
            }
        }
        match agent {
            None => degraded.push(
                "no agent runs: bans in force stay enforced, but no log is read and nothing new is banned".into(),
            ),
            Some(a) => {
                if a.dry_run {
                    degraded.push("the agent runs with --dry-run: it decides bans but writes none".into());
                }
                if let Some(e) = &a.store.last_error {
                    degraded.push(format!(
                        "the state store fails ({e}): bans are enforced but would not survive a reboot"
                    ));
                }
                if let Some(e) = &a.store.unavailable {
                    degraded.push(format!(
                        "the state store cannot be opened ({e}): bans are enforced but not recorded, and would not survive a reboot"
                    ));
                }
                if let Some(r) = &a.store.recovered {
                    degraded.push(format!(
                        "the state store was damaged at start: {r}; a new one records the bans the maps hold, their history and evidence are gone"
                    ));
                }
                for i in &a.ifaces {
                    if !dp.interfaces.iter().any(|l| &l.iface == i && l.ifindex != 0) {
                        degraded.push(format!("interface {i} has no program attached"));
                    }
                }
                if let Some(c) = &a.crowdsec {
                    degraded.extend(c.problems());
                }
            }
        }
        let state = if !off.is_empty() {
            ProtectionState::Off
        } else if !degraded.is_empty() {
            ProtectionState::Degraded
        } else {
            ProtectionState::Enforcing
        };
        off.extend(degraded);
        Protection {
            state,
            problems: off,
        }
    }
}

/// One ban as `fail2xdp list` shows it: what the maps enforce, with the
/// origins the store knows for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedBan {
    pub net: ipnet::IpNet,
    /// The origin of the ban in force: the store's claim that lasts longest,
    /// else the label in the maps (`file:NAME` for an import).
    pub origin: String,
    /// Every origin with a claim on this network.
    pub origins: Vec<String>,
    /// The label in the maps (what `bpftool` shows).
    pub jail: String,
    pub permanent: bool,
    pub remaining_secs: Option<u64>,
    pub expired: bool,
    /// RFC 3339.
    pub created: String,
    /// Empty = all ports.
    pub ports: Vec<u16>,
    pub drops: u64,
    pub reason: Option<String>,
    /// The CrowdSec decision of the origin in force, when it is CrowdSec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::state::DecisionRef>,
}

/// Every ban in the maps, sorted, with the store's origins and reasons.
pub fn listing(
    store: Option<&crate::state::Store>,
    enf: &Enforcer,
) -> Result<Vec<ListedBan>, crate::ban::BanError> {
    use std::collections::HashMap;
    let bans = enf.list()?;
    let mut claims: HashMap<ipnet::IpNet, Vec<crate::state::BanRecord>> = HashMap::new();
    if let Some(s) = store {
        s.for_each(|r| claims.entry(r.net).or_default().push(r))?;
    }
    Ok(bans
        .into_iter()
        .map(|b| {
            let mut cs = claims.remove(&b.net).unwrap_or_default();
            // Longest first: permanent, then the latest expiry.
            cs.sort_by_key(|r| {
                std::cmp::Reverse(r.expires_at.map_or(u64::MAX, |e| {
                    e.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                }))
            });
            let origins: Vec<String> = cs.iter().map(|r| r.origin.to_string()).collect();
            ListedBan {
                net: b.net,
                origin: origins.first().cloned().unwrap_or_else(|| b.jail.clone()),
                origins,
                jail: b.jail.clone(),
                permanent: b.remaining.is_none(),
                remaining_secs: b.remaining.map(|d| d.as_secs()),
                expired: b.expired,
                created: jiff::Timestamp::try_from(b.created)
                    .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                    .unwrap_or_default(),
                ports: b.ports.0,
                drops: b.drops,
                reason: cs.first().map(|r| r.reason.clone()),
                decision: cs.first().and_then(|r| r.decision.clone()),
            }
        })
        .collect())
}
