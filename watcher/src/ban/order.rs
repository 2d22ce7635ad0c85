//! What is asked of the ban service and what it answers.
use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Origin, Refusal};
use crate::{addr::PortSet, state::DecisionRef};

/// Longest ban length anyone may ask for (a finite ban beyond it is a typo;
/// "permanent" is the way to ask for ever). Also caps a repeat offender's
/// incremented ban.
pub const LONGEST_BAN: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ban length {} is longer than 100 years; use `permanent` for a ban that never ends", humantime::format_duration(*.0))]
pub struct LengthTooLong(pub Duration);

/// `Ok` when `d` is a ban length the service takes.
pub fn check_length(d: Option<Duration>) -> Result<Option<Duration>, LengthTooLong> {
    match d {
        Some(d) if d > LONGEST_BAN => Err(LengthTooLong(d)),
        d => Ok(d),
    }
}

/// How long a ban lasts: `base` (None = permanent), longer for a repeat
/// offender when `factor` is set: the n-th ban of a network lasts
/// `base * factor^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BanLength {
    pub base: Option<Duration>,
    pub factor: Option<f64>,
    pub max: Option<Duration>,
}

impl BanLength {
    pub fn fixed(d: Option<Duration>) -> Self {
        BanLength {
            base: d,
            factor: None,
            max: None,
        }
    }

    /// The length of a ban of a network banned `previous` times before.
    pub fn resolve(&self, previous: u32) -> Option<Duration> {
        let base = self.base?.min(LONGEST_BAN);
        let Some(factor) = self.factor else {
            return Some(base);
        };
        if previous == 0 || factor <= 1.0 {
            return Some(base);
        }
        let cap = self.max.unwrap_or(LONGEST_BAN).min(LONGEST_BAN);
        // powi saturates to +inf for huge exponents, which the cap then bounds.
        let secs = base.as_secs_f64() * factor.powi(previous.min(i32::MAX as u32) as i32);
        let len = if secs.is_finite() && secs < cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            cap
        };
        // An increment never shortens the configured bantime.
        Some(len.max(base))
    }
}

/// One ban asked of the service.
#[derive(Debug, Clone)]
pub struct Order {
    pub net: IpNet,
    /// The offending address inside `net` (a jail's grouped prefix): lets the
    /// guard narrow the ban to spare a protected neighbour instead of
    /// refusing it. None for bans asked by hand.
    pub host: Option<IpAddr>,
    pub origin: Origin,
    pub length: BanLength,
    /// When the ban starts: the log time of the line that crossed maxretry
    /// for a jail (replayed lines ban only for what is left), now otherwise.
    pub start: SystemTime,
    pub ports: PortSet,
    pub reason: String,
    pub evidence: Vec<String>,
    pub failures: u32,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Lifts the prefix limit (never a protection).
    pub force: bool,
    /// Replace what is in force for this network instead of merging with
    /// it: the way to shorten a ban.
    pub replace: bool,
    /// The CrowdSec decision a `crowdsec/...` ban enforces.
    pub decision: Option<DecisionRef>,
    /// When the line that crossed maxretry reached the match stage (a
    /// jail's ban): the ban's latency runs from here to its map write.
    pub arrived: Option<Instant>,
}

impl Order {
    /// A ban of `net` starting now, with nothing but a reason.
    pub fn now(
        net: IpNet,
        origin: Origin,
        length: Option<Duration>,
        ports: PortSet,
        reason: String,
    ) -> Self {
        let now = SystemTime::now();
        Order {
            net,
            host: None,
            origin,
            length: BanLength::fixed(length),
            start: now,
            ports,
            reason,
            evidence: Vec::new(),
            failures: 0,
            first_seen: now,
            last_seen: now,
            force: false,
            replace: false,
            decision: None,
            arrived: None,
        }
    }
}

/// What the service did with one order.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Banned(Applied),
    /// The ban would already have ended (old log lines).
    Stale,
    Refused(Refusal),
    /// The maps could not be written.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// What was banned (narrower than asked when the guard narrowed it).
    pub net: IpNet,
    pub narrowed_from: Option<IpNet>,
    /// This ban's own length and end (None = permanent).
    pub length: Option<Duration>,
    pub expires_at: Option<SystemTime>,
    pub ports: PortSet,
    pub times_banned: u32,
    /// A ban already in force lasts longer or covers more ports: the maps
    /// keep it (merged), this one is recorded beside it.
    pub kept_longer: bool,
    pub dry_run: bool,
}

/// `fail2xdp ban ADDR`, as the CLI sends it to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualBan {
    pub net: IpNet,
    /// Seconds; None = permanent.
    pub length_secs: Option<u64>,
    pub ports: Vec<u16>,
    pub origin: Origin,
    pub reason: Option<String>,
    pub force: bool,
    pub replace: bool,
}

/// What a ban in a jail's name takes from the jail (`ban --jail J`
/// without `--for` or `--ports`, `set J banip`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromJail {
    /// The jail's bantime, incremented for a repeat offender as the jail's
    /// own bans are.
    pub length: bool,
    /// The jail's ports.
    pub ports: bool,
}

impl FromJail {
    pub fn any(&self) -> bool {
        self.length || self.ports
    }
}

/// `fail2xdp ban --file`: what every network of the file gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSpec {
    pub origin: Origin,
    /// The path as given, `-` for stdin.
    pub source: String,
    pub length_secs: Option<u64>,
    pub ports: Vec<u16>,
    pub reason: Option<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub banned: usize,
    /// (network, why), in file order.
    pub refused: Vec<(IpNet, String)>,
    /// Networks whose ban in force already lasted longer.
    pub kept_longer: usize,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Bans written back into the maps.
    pub restored: usize,
    /// Bans that were already there (a restart without a reboot).
    pub present: usize,
    /// Stored bans the guard refuses now (an address allowlisted since).
    pub skipped: usize,
}

/// What `unban` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnbanOutcome {
    /// The ban of exactly this network is gone (`origins`: whose claims).
    Lifted { net: IpNet, origins: Vec<Origin> },
    /// One origin's claim went; others keep the network banned.
    StillBanned { net: IpNet, by: Vec<Origin> },
    /// No ban of exactly this network; `covered_by`: broader bans that
    /// still drop it (network, origin label).
    NotBanned {
        net: IpNet,
        covered_by: Vec<(IpNet, String)>,
    },
}

/// What `unban --all` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbanAllReport {
    /// Networks no longer banned.
    pub lifted: usize,
    /// Networks whose claims went but another origin keeps banned.
    pub still_banned: usize,
    /// Both kinds, for the jails to forget (not sent over the socket).
    #[serde(skip)]
    pub lifted_nets: Vec<IpNet>,
}

/// Longest reason kept with a manual ban (the store bounds it too).
const MAX_REASON: usize = 1024;

impl ManualBan {
    /// The order this asks for, checked as the CLI's edge checks it (the
    /// agent checks again: a request is not trusted).
    /// The order this asks for, with the jail's rules where it takes them.
    pub fn order_with(&self, take: FromJail, rules: Option<&JailRules>) -> Result<Order, String> {
        let mut o = self.order()?;
        if take.any() {
            let Some(r) = rules else {
                return Err(format!(
                    "{}: no such jail, so no bantime or ports to take from it",
                    self.origin
                ));
            };
            if take.length {
                o.length = r.length();
            }
            if take.ports {
                o.ports = r.port_set();
            }
            o.reason = match &self.reason {
                Some(_) => o.reason,
                None => format!("manual ban in jail {}", r.name),
            };
        }
        Ok(o)
    }

    pub fn order(&self) -> Result<Order, String> {
        let length =
            check_length(self.length_secs.map(Duration::from_secs)).map_err(|e| e.to_string())?;
        if length == Some(Duration::ZERO) {
            return Err("a ban must last at least a second".into());
        }
        let ports = PortSet::from_ports(self.ports.clone()).map_err(|e| e.to_string())?;
        let reason = match &self.reason {
            Some(r) if r.len() > MAX_REASON => {
                return Err(format!("the reason is longer than {MAX_REASON} bytes"));
            }
            Some(r) => r.clone(),
            None => "manual ban".to_owned(),
        };
        let mut o = Order::now(self.net, self.origin.clone(), length, ports, reason);
        o.force = self.force;
        o.replace = self.replace;
        Ok(o)
    }
}

impl ImportSpec {
    pub fn check(&self) -> Result<(), String> {
        check_length(self.length_secs.map(Duration::from_secs)).map_err(|e| e.to_string())?;
        PortSet::from_ports(self.ports.clone()).map_err(|e| e.to_string())?;
        if self.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
            return Err(format!("the reason is longer than {MAX_REASON} bytes"));
        }
        Ok(())
    }
}

/// A jail's ban settings as its configuration gives them, saved by the
/// agent for the CLI: what a ban in the jail's name gets unless told
/// otherwise, and what `fail2xdp get JAIL ...` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JailRules {
    pub name: String,
    pub maxretry: u32,
    pub findtime_secs: u64,
    /// None: permanent.
    pub bantime_secs: Option<u64>,
    pub increment_factor: Option<f64>,
    pub increment_max_secs: Option<u64>,
    /// Empty: all ports.
    pub ports: Vec<u16>,
}

impl JailRules {
    pub fn length(&self) -> BanLength {
        BanLength {
            base: self.bantime_secs.map(Duration::from_secs),
            factor: self.increment_factor,
            max: self.increment_max_secs.map(Duration::from_secs),
        }
    }

    pub fn port_set(&self) -> PortSet {
        PortSet::from_ports(self.ports.clone()).unwrap_or_else(|_| PortSet::all())
    }
}

/// How `ban` reports an outcome: the message, or the refusal as an error.
pub fn describe(outcome: &Outcome) -> Result<String, String> {
    match outcome {
        Outcome::Banned(a) => {
            let scope = if a.ports.is_all() {
                "all ports".to_string()
            } else {
                format!("ports {}", a.ports)
            };
            let length = a.length.map_or_else(
                || "permanently".to_string(),
                |d| format!("for {}", crate::addr::format_duration(d)),
            );
            let mut msg = format!(
                "{}banned {} {length} ({scope})",
                if a.dry_run { "[dry run] " } else { "" },
                a.net
            );
            if a.kept_longer {
                msg.push_str("; a longer or wider ban of it stays in force");
            }
            Ok(msg)
        }
        Outcome::Stale => Err("the ban would already be over".into()),
        Outcome::Refused(r) => Err(r.to_string()),
        Outcome::Failed(e) => Err(format!("writing the ban failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_grows_and_caps() {
        let mut l = BanLength {
            base: Some(Duration::from_secs(3600)),
            factor: Some(2.0),
            max: Some(Duration::from_secs(3 * 3600)),
        };
        assert_eq!(l.resolve(0), Some(Duration::from_secs(3600)));
        assert_eq!(l.resolve(1), Some(Duration::from_secs(7200)));
        assert_eq!(l.resolve(2), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(l.resolve(u32::MAX), Some(Duration::from_secs(3 * 3600)));
        l.base = None;
        assert_eq!(l.resolve(5), None);
        l.base = Some(Duration::from_secs(3600));
        l.factor = Some(10.0);
        l.max = None;
        assert_eq!(l.resolve(1000), Some(LONGEST_BAN));
        assert_eq!(
            BanLength::fixed(Some(Duration::MAX)).resolve(0),
            Some(LONGEST_BAN)
        );
    }

    #[test]
    fn absurd_lengths_are_refused() {
        assert!(check_length(Some(Duration::from_secs(u64::MAX))).is_err());
        assert!(check_length(Some(LONGEST_BAN)).is_ok());
        assert!(check_length(None).is_ok());
    }
}
