//! Jails: count failures per host within `findtime` (on the log's clock) and
//! decide bans when a host reaches `maxretry`. Pure bookkeeping: the ban
//! service carries the decisions out (guard, length, maps, store).
mod hosts;

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use ipnet::IpNet;
use serde::Serialize;

pub use hosts::{Evidence, HostEntry, HostTable, Times};

/// How a jail counts and bans; built from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub maxretry: u32,
    pub findtime: Duration,
    /// `None`: permanent.
    pub bantime: Option<Duration>,
    pub increment: Option<Increment>,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub max_hosts: usize,
    pub evidence_lines: usize,
}

/// Longer bans for repeat offenders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increment {
    pub factor: f64,
    /// Upper bound of an incremented ban; `None`: unbounded (still finite).
    pub max: Option<Duration>,
}

impl Rules {
    /// How long this jail's bans last (the ban service resolves a repeat
    /// offender's longer ban from the network's history).
    pub fn length(&self) -> crate::ban::BanLength {
        crate::ban::BanLength {
            base: self.bantime,
            factor: self.increment.map(|i| i.factor),
            max: self.increment.and_then(|i| i.max),
        }
    }

    /// The network a host is counted and banned as.
    pub fn net_of(&self, host: IpAddr) -> IpNet {
        let len = match host {
            IpAddr::V4(_) => self.ipv4_prefix.min(32),
            IpAddr::V6(_) => self.ipv6_prefix.min(128),
        };
        IpNet::new(host, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(host))
    }
}

/// One failure found by a filter.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub host: IpAddr,
    /// Log time of the line, unix ns.
    pub time: i64,
    pub line: &'a str,
    /// Index of the filter in the jail's list and of the regex that matched.
    pub filter: usize,
    pub regex: usize,
}

/// A host that reached `maxretry`: what the agent needs to ban it and explain why.
#[derive(Debug, Clone)]
pub struct Offense {
    pub net: IpNet,
    /// The address of the failure that crossed maxretry (inside `net`).
    pub host: IpAddr,
    /// The failure that crossed maxretry: the ban starts at its log time (unix ns).
    pub crossing: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Failures counted for this host since it was first seen.
    pub failures: u32,
    /// The host's newest matched lines; give the buffer back with
    /// [`Jail::recycle`] once done with it.
    pub evidence: Evidence,
    pub filter: usize,
    pub regex: usize,
}

/// Counters shown by `fail2xdp status`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct JailStats {
    /// Lines offered to the jail's filters.
    pub lines: u64,
    /// Lines a filter turned into a failure.
    pub failures: u64,
    /// Lines dropped by an ignoreregex.
    pub ignored: u64,
    /// Bans made since the agent started.
    pub total_bans: u64,
    /// Offenses not banned because the guard refused the address (allowlist, own address, ...).
    pub refused: u64,
    /// Offenses whose ban would already have ended (replayed old lines).
    pub stale: u64,
    /// Bans the enforcer failed to write.
    pub errors: u64,
}

/// A jail's counting state.
#[derive(Debug)]
pub struct Jail {
    name: Arc<str>,
    rules: Rules,
    hosts: HostTable,
    /// Current bans made by (or restored for) this jail: net -> expiry (unix
    /// ns wall clock; `None` permanent). Failures of a banned net are not counted again.
    bans: HashMap<IpNet, Option<i64>, foldhash::fast::RandomState>,
    /// Newest failure time seen (log clock), the reference for purging.
    latest: i64,
    pub stats: JailStats,
}

impl Jail {
    pub fn new(name: &str, rules: Rules) -> Self {
        Self {
            name: Arc::from(name),
            hosts: HostTable::new(rules.max_hosts),
            rules,
            bans: HashMap::default(),
            latest: i64::MIN,
            stats: JailStats::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies new rules on reload, keeping the counts and bans.
    pub fn set_rules(&mut self, rules: Rules) {
        self.hosts.set_cap(rules.max_hosts);
        self.rules = rules;
    }

    pub fn tracked_hosts(&self) -> usize {
        self.hosts.len()
    }

    pub fn evictions(&self) -> u64 {
        self.hosts.evictions()
    }

    pub fn current_bans(&self) -> usize {
        self.bans.len()
    }

    pub fn host(&self, net: &IpNet) -> Option<&HostEntry> {
        self.hosts.get(net)
    }

    /// Is `net` banned by this jail at wall time `now` (unix ns)?
    pub fn is_banned(&self, net: &IpNet, now: i64) -> bool {
        !self.bans.is_empty()
            && self
                .bans
                .get(net)
                .is_some_and(|exp| exp.is_none_or(|e| e > now))
    }

    pub fn note_ban(&mut self, net: IpNet, expires: Option<i64>) {
        self.bans.insert(net, expires);
    }

    pub fn forget_ban(&mut self, net: &IpNet) -> bool {
        self.bans.remove(net).is_some()
    }

    pub fn bans(&self) -> impl Iterator<Item = (&IpNet, &Option<i64>)> {
        self.bans.iter()
    }

    /// Counts one failure; returns the offense when it makes the host reach
    /// maxretry within findtime. The host's count starts over after an offense.
    pub fn failure(&mut self, f: &Failure<'_>, now: i64) -> Option<Offense> {
        self.stats.failures += 1;
        let net = self.rules.net_of(f.host);
        if self.is_banned(&net, now) {
            return None;
        }
        self.latest = self.latest.max(f.time);
        let findtime = i64::try_from(self.rules.findtime.as_nanos()).unwrap_or(i64::MAX);
        let maxretry = self.rules.maxretry.max(1) as usize;
        let keep = self.rules.evidence_lines;
        let e = self.hosts.touch(net, f.time);
        e.total = e.total.saturating_add(1);
        e.first_seen = e.first_seen.min(f.time);
        e.last_seen = e.last_seen.max(f.time);
        e.times.push_back(f.time);
        let newest = e.last_seen;
        while e
            .times
            .front()
            .is_some_and(|t| t <= newest.saturating_sub(findtime))
        {
            e.times.pop_front();
        }
        e.evidence.push(f.line, keep);
        if e.times.len() < maxretry {
            return None;
        }
        let e = self.hosts.remove(&net)?;
        Some(Offense {
            net,
            host: f.host,
            crossing: f.time,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            failures: e.total,
            evidence: e.evidence,
            filter: f.filter,
            regex: f.regex,
        })
    }

    /// Takes back the evidence buffer of an offense, for the next new host:
    /// a replay of an old log makes an offense every maxretry failures.
    pub fn recycle(&mut self, evidence: Evidence) {
        self.hosts.recycle(evidence);
    }

    /// Forgets hosts with no failure inside the window (log clock) and bans
    /// that ended (wall clock). Returns (hosts, bans) removed.
    pub fn purge(&mut self, now: i64) -> (usize, usize) {
        let findtime = i64::try_from(self.rules.findtime.as_nanos()).unwrap_or(i64::MAX);
        let hosts = if self.latest == i64::MIN {
            0
        } else {
            self.hosts
                .purge_older_than(self.latest.saturating_sub(findtime))
        };
        let before = self.bans.len();
        self.bans.retain(|_, exp| exp.is_none_or(|e| e > now));
        (hosts, before - self.bans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn rules() -> Rules {
        Rules {
            maxretry: 3,
            findtime: Duration::from_secs(600),
            bantime: Some(Duration::from_secs(3600)),
            increment: None,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_hosts: 100,
            evidence_lines: 2,
        }
    }

    fn fail(host: &str, time: i64) -> Failure<'static> {
        Failure {
            host: host.parse().expect("test address"),
            time,
            line: "line",
            filter: 0,
            regex: 0,
        }
    }

    #[test]
    fn bans_at_maxretry_not_before() {
        let mut j = Jail::new("t", rules());
        assert!(j.failure(&fail("203.0.113.5", 10 * S), 0).is_none());
        assert!(j.failure(&fail("203.0.113.5", 20 * S), 0).is_none());
        let o = j.failure(&fail("203.0.113.5", 30 * S), 0).expect("offense");
        assert_eq!(o.net, "203.0.113.5/32".parse::<IpNet>().expect("net"));
        assert_eq!(o.crossing, 30 * S);
        assert_eq!(o.first_seen, 10 * S);
        assert_eq!(o.failures, 3);
        assert_eq!(o.evidence.len(), 2);
        // The count starts over.
        assert_eq!(j.tracked_hosts(), 0);
    }

    #[test]
    fn failures_outside_findtime_do_not_add_up() {
        let mut j = Jail::new("t", rules());
        for i in 0..10 {
            // One failure every 301 s: never three within 600 s.
            assert!(j.failure(&fail("203.0.113.5", i * 301 * S), 0).is_none());
        }
        // Two inside the window plus this one make three.
        assert!(
            j.failure(&fail("203.0.113.5", 9 * 301 * S + 1), 0)
                .is_some()
        );
    }

    #[test]
    fn hosts_are_counted_separately() {
        let mut j = Jail::new("t", rules());
        for i in 0..2 {
            assert!(j.failure(&fail("203.0.113.5", i * S), 0).is_none());
            assert!(j.failure(&fail("203.0.113.6", i * S), 0).is_none());
        }
        assert!(j.failure(&fail("203.0.113.6", 3 * S), 0).is_some());
        assert_eq!(j.tracked_hosts(), 1);
    }

    #[test]
    fn ipv6_counts_per_prefix() {
        let mut j = Jail::new("t", rules());
        assert!(j.failure(&fail("2001:db8:1:2::1", S), 0).is_none());
        assert!(j.failure(&fail("2001:db8:1:2::2", S), 0).is_none());
        let o = j
            .failure(&fail("2001:db8:1:2:ffff::3", S), 0)
            .expect("offense");
        assert_eq!(o.net, "2001:db8:1:2::/64".parse::<IpNet>().expect("net"));
        // Another /64 is another host.
        assert!(j.failure(&fail("2001:db8:1:3::1", S), 0).is_none());
    }

    #[test]
    fn banned_net_is_not_counted_again() {
        let mut j = Jail::new("t", rules());
        let net: IpNet = "203.0.113.5/32".parse().expect("net");
        j.note_ban(net, Some(100 * S));
        for i in 0..10 {
            assert!(j.failure(&fail("203.0.113.5", i * S), 50 * S).is_none());
        }
        // After expiry it counts again.
        for i in 0..2 {
            assert!(j.failure(&fail("203.0.113.5", i * S), 200 * S).is_none());
        }
        assert!(j.failure(&fail("203.0.113.5", 3 * S), 200 * S).is_some());
        assert_eq!(j.purge(200 * S).1, 1);
    }

    #[test]
    fn purge_uses_log_clock() {
        let mut j = Jail::new("t", rules());
        j.failure(&fail("203.0.113.5", 0), 0);
        j.failure(&fail("203.0.113.6", 1000 * S), 0);
        let (hosts, _) = j.purge(i64::MAX);
        assert_eq!(hosts, 1);
        assert!(j.host(&"203.0.113.6/32".parse().expect("net")).is_some());
    }
}
