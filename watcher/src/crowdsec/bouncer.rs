//! The bouncer's decisions: which CrowdSec decisions are active, per
//! (network, decision origin) claim, and what the ban service must do when
//! a stream answer changes them. A claim enforces the longest of its
//! decisions; a deleted decision lifts the claim only when it was the
//! claim's last (a jail's ban of the same address is another claim and
//! stays). A full listing (`startup=true`: at start, after an outage) is
//! reconciled against the claims the state store holds: missing ones are
//! added, ones no longer listed are lifted, expiries are re-asserted; what
//! stays listed is never lifted in between.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;

use super::{
    api::{Decision, DecisionStream},
    duration::GoDuration,
};
use crate::{
    addr::{self, PortSet},
    ban::{BanService, Order, Origin, Outcome},
    state::DecisionRef,
};

/// Expiries closer than this are the same (LAPI computes the time left
/// when it answers; two answers differ by their latency).
const SAME_EXPIRY: Duration = Duration::from_secs(5);
/// Distinct reasons counted for ignored decisions (the rest are `other`):
/// a hostile LAPI must not grow the counters without bound.
const MAX_REASONS: usize = 32;
/// Longest CrowdSec origin kept (the store bounds origins to 200 bytes).
const MAX_ORIGIN: usize = 64;
/// Longest scenario kept as the ban's reason.
const MAX_SCENARIO: usize = 512;

type Claim = (IpNet, Origin);

/// An active ban decision.
#[derive(Debug, Clone, PartialEq)]
struct Active {
    claim: Claim,
    until: SystemTime,
    scenario: String,
}

/// A decision read from an answer: a ban to apply, or why not.
#[derive(Debug, PartialEq)]
enum Read {
    Ban(i64, Active),
    /// Not for the XDP program: another type or scope, simulated, expired.
    Ignored(String),
    /// Not a decision at all (an address that is none, a bad duration).
    Invalid(String),
}

/// What the bouncer counts, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Decisions whose ban was written (a claim set or extended).
    pub applied: u64,
    /// Ban decisions the guard refused (loopback, allowlisted, too broad...).
    pub refused: u64,
    /// Decisions that are not bans of addresses, by reason.
    pub ignored: BTreeMap<String, u64>,
    /// Entries that are no decision (bad value or duration).
    pub invalid: u64,
    /// Claims lifted (decisions deleted or expired, or no longer listed).
    pub lifted: u64,
}

/// What one answer changed, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    pub full: bool,
    pub decisions: usize,
    pub banned: usize,
    pub refused: usize,
    pub ignored: usize,
    pub invalid: usize,
    pub lifted: usize,
    pub reasserted: usize,
    pub failed: usize,
}

impl std::fmt::Display for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} decision(s): {} ban(s) written, {} lifted, {} re-asserted, {} refused by the guard, {} ignored, {} invalid",
            if self.full { "full sync," } else { "delta," },
            self.decisions,
            self.banned,
            self.lifted,
            self.reasserted,
            self.refused,
            self.ignored,
            self.invalid
        )?;
        if self.failed > 0 {
            write!(f, ", {} failed", self.failed)?;
        }
        Ok(())
    }
}

impl Sync {
    pub fn changed(&self) -> bool {
        self.banned + self.lifted + self.reasserted + self.refused + self.failed + self.invalid > 0
    }
}

/// The plan for the ban service, before it is carried out.
#[derive(Debug, Default)]
struct Plan {
    /// Claims to set or extend (the longest decision of each).
    ban: Vec<(i64, Active)>,
    /// Claims whose longest decision is now shorter than what is in force.
    shorten: Vec<(i64, Active)>,
    lift: Vec<Claim>,
}

#[derive(Default)]
pub struct Bouncer {
    active: HashMap<i64, Active>,
    claims: HashMap<Claim, ClaimState>,
    pub counts: Counts,
}

#[derive(Debug, Default)]
struct ClaimState {
    ids: Vec<i64>,
    /// The expiry recorded for this claim (what is in force for it).
    applied: Option<SystemTime>,
}

/// The decision's origin as a ban origin: printable, bounded.
fn origin(o: &str) -> Origin {
    let o: String = o
        .chars()
        .map(|c| if c.is_control() || c == '/' { '_' } else { c })
        .take(MAX_ORIGIN)
        .collect();
    let o = o.trim();
    Origin::CrowdSec(if o.is_empty() {
        "unknown".into()
    } else {
        o.into()
    })
}

/// A short printable name for a counter key.
fn reason(prefix: &str, v: &str) -> String {
    let v: String = v
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(24)
        .collect();
    format!("{prefix} {}", if v.is_empty() { "?" } else { &v }).to_lowercase()
}

fn read(d: &Decision, now: SystemTime) -> Read {
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Read::Ignored(reason("type", &d.kind));
    }
    if d.simulated == Some(true) {
        return Read::Ignored("simulated".into());
    }
    let net = match d.scope.to_ascii_lowercase().as_str() {
        "ip" if !d.value.contains('/') => addr::parse_net(&d.value),
        "range" if d.value.contains('/') => addr::parse_net(&d.value),
        "ip" | "range" => {
            return Read::Invalid(format!(
                "decision {}: `{}` is not a value of scope {}",
                d.id,
                d.value.escape_default(),
                d.scope.escape_default()
            ));
        }
        _ => return Read::Ignored(reason("scope", &d.scope)),
    };
    let net = match net {
        Ok(n) => addr::unmap(n).trunc(),
        Err(e) => return Read::Invalid(format!("decision {}: {e}", d.id)),
    };
    let left = match GoDuration::parse(&d.duration) {
        Ok(g) => g.remaining(),
        Err(e) => return Read::Invalid(format!("decision {}: {e}", d.id)),
    };
    let Some(left) = left else {
        return Read::Ignored("expired".into());
    };
    let until = now
        .checked_add(left.min(crate::ban::LONGEST_BAN))
        .unwrap_or(now + crate::ban::LONGEST_BAN);
    let scenario: String = d.scenario.chars().take(MAX_SCENARIO).collect();
    Read::Ban(
        d.id,
        Active {
            claim: (net, origin(&d.origin)),
            until,
            scenario: if scenario.is_empty() {
                "crowdsec decision".into()
            } else {
                scenario
            },
        },
    )
}

impl Bouncer {
    /// Active ban decisions known.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// The claims with an active decision (for the fuzz target's checks).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.claims.keys()
    }

    fn count_ignored(&mut self, why: String) {
        let key = if self.counts.ignored.len() >= MAX_REASONS
            && !self.counts.ignored.contains_key(&why)
        {
            "other".to_owned()
        } else {
            why
        };
        *self.counts.ignored.entry(key).or_default() += 1;
    }

    fn forget(&mut self, id: i64) -> Option<Claim> {
        let a = self.active.remove(&id)?;
        if let Some(c) = self.claims.get_mut(&a.claim) {
            c.ids.retain(|i| *i != id);
        }
        Some(a.claim)
    }

    fn learn(&mut self, id: i64, a: Active) -> Claim {
        self.forget(id);
        let claim = a.claim.clone();
        let c = self.claims.entry(claim.clone()).or_default();
        if !c.ids.contains(&id) {
            c.ids.push(id);
        }
        self.active.insert(id, a);
        claim
    }

    /// Reads the new decisions of an answer into the index; returns the
    /// claims they touch.
    fn take_new(&mut self, new: &[Decision], now: SystemTime, sync: &mut Sync) -> HashSet<Claim> {
        let mut touched = HashSet::new();
        for d in new {
            match read(d, now) {
                Read::Ban(id, a) => {
                    touched.insert(self.learn(id, a));
                }
                Read::Ignored(why) => {
                    sync.ignored += 1;
                    self.count_ignored(why);
                }
                Read::Invalid(msg) => {
                    sync.invalid += 1;
                    self.counts.invalid += 1;
                    if sync.invalid <= 5 {
                        log::warn!("crowdsec: {}", crate::state::printable(&msg));
                    }
                }
            }
        }
        touched
    }

    /// The longest decision of a claim.
    fn longest(&self, claim: &Claim) -> Option<(i64, &Active)> {
        let c = self.claims.get(claim)?;
        c.ids
            .iter()
            .filter_map(|id| self.active.get(id).map(|a| (*id, a)))
            .max_by_key(|(_, a)| a.until)
    }

    /// What to do for each touched claim, given what is in force for it.
    fn plan(&mut self, touched: impl IntoIterator<Item = Claim>) -> Plan {
        let mut plan = Plan::default();
        for claim in touched {
            let applied = self.claims.get(&claim).and_then(|c| c.applied);
            match self.longest(&claim).map(|(id, a)| (id, a.clone())) {
                None => {
                    self.claims.remove(&claim);
                    // A claim never written (refused, or added and deleted
                    // between two pulls) has nothing to lift.
                    if applied.is_some() {
                        plan.lift.push(claim);
                    }
                }
                Some((id, a)) => match applied {
                    None => plan.ban.push((id, a)),
                    Some(t) if a.until > t + SAME_EXPIRY => plan.ban.push((id, a)),
                    Some(t) if a.until + SAME_EXPIRY < t => plan.shorten.push((id, a)),
                    Some(_) => {}
                },
            }
        }
        plan
    }

    /// Applies a delta answer (`startup=false`).
    pub fn delta(&mut self, s: &DecisionStream, svc: &BanService) -> Sync {
        let now = SystemTime::now();
        let mut sync = Sync {
            decisions: s.new.len() + s.deleted.len(),
            ..Sync::default()
        };
        let mut touched = self.take_new(&s.new, now, &mut sync);
        for d in &s.deleted {
            // A decision never learnt (filtered, ignored, long expired) has
            // nothing to lift.
            if let Some(c) = self.forget(d.id) {
                touched.insert(c);
            }
        }
        let plan = self.plan(touched);
        self.carry_out(plan, svc, &mut sync);
        sync
    }

    /// Applies a full listing (`startup=true`): the index is rebuilt from
    /// it and reconciled with the CrowdSec claims the store holds.
    pub fn full(&mut self, s: &DecisionStream, svc: &BanService) -> Sync {
        let now = SystemTime::now();
        let mut sync = Sync {
            full: true,
            decisions: s.new.len(),
            ..Sync::default()
        };
        self.active.clear();
        self.claims.clear();
        // What the store holds for CrowdSec: what is in force for it.
        let mut stored: HashMap<Claim, Option<SystemTime>> = HashMap::new();
        if let Some(store) = svc.store() {
            svc.flush();
            let r = store.for_each(|r| {
                if matches!(r.origin, Origin::CrowdSec(_)) && !r.is_expired(now) {
                    stored.insert((r.net, r.origin), r.expires_at);
                }
            });
            if let Err(e) = r {
                // Without it nothing is lifted: a missing ban is worse than
                // one kept until its kernel expiry.
                log::error!(
                    "crowdsec: reading the stored CrowdSec bans: {}",
                    crate::error_chain(&e)
                );
            }
        }
        let touched = self.take_new(&s.new, now, &mut sync);
        for claim in &touched {
            if let Some(c) = self.claims.get_mut(claim) {
                // A permanent claim (never made by CrowdSec) counts as long.
                c.applied = stored
                    .get(claim)
                    .map(|e| e.unwrap_or(now + crate::ban::LONGEST_BAN));
            }
        }
        let mut plan = self.plan(touched.iter().cloned());
        plan.lift
            .extend(stored.into_keys().filter(|c| !self.claims.contains_key(c)));
        self.carry_out(plan, svc, &mut sync);
        sync
    }

    fn order(id: i64, a: &Active, now: SystemTime) -> Order {
        let left = a
            .until
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        let mut o = Order::now(
            a.claim.0,
            a.claim.1.clone(),
            Some(left),
            PortSet::all(),
            a.scenario.clone(),
        );
        o.evidence = vec![format!(
            "CrowdSec decision #{id}: ban {} for {} ({})",
            a.claim.0,
            crate::addr::format_duration(left),
            a.scenario
        )];
        o.decision = Some(DecisionRef {
            id,
            scenario: a.scenario.clone(),
        });
        o
    }

    fn carry_out(&mut self, plan: Plan, svc: &BanService, sync: &mut Sync) {
        let now = SystemTime::now();
        if !plan.ban.is_empty() || !plan.shorten.is_empty() {
            let all: Vec<&(i64, Active)> = plan.ban.iter().chain(&plan.shorten).collect();
            let orders = all.iter().map(|(id, a)| Self::order(*id, a, now)).collect();
            let outcomes = svc.ban(orders);
            let mut shortened = Vec::new();
            for (i, ((_, a), out)) in all.iter().zip(outcomes).enumerate() {
                match out {
                    Outcome::Banned(_) => {
                        sync.banned += 1;
                        self.counts.applied += 1;
                        if let Some(c) = self.claims.get_mut(&a.claim) {
                            c.applied = Some(a.until);
                        }
                        if i >= plan.ban.len() {
                            shortened.push(a.claim.0);
                        }
                    }
                    Outcome::Refused(_) => {
                        sync.refused += 1;
                        self.counts.refused += 1;
                    }
                    Outcome::Stale => {
                        sync.ignored += 1;
                        self.count_ignored("expired".into());
                    }
                    Outcome::Failed(_) => sync.failed += 1,
                }
            }
            if !shortened.is_empty() && !svc.dry_run() {
                match svc.reassert(&shortened) {
                    Ok(()) => sync.reasserted += shortened.len(),
                    Err(e) => {
                        sync.failed += shortened.len();
                        log::error!(
                            "crowdsec: shortening {} ban(s): {}",
                            shortened.len(),
                            crate::error_chain(&e)
                        );
                    }
                }
            }
        }
        if !plan.lift.is_empty() && !svc.dry_run() {
            match svc.lift_claims(&plan.lift) {
                Ok(_) => {
                    sync.lifted += plan.lift.len();
                    self.counts.lifted += plan.lift.len() as u64;
                }
                Err(e) => {
                    sync.failed += plan.lift.len();
                    log::error!(
                        "crowdsec: lifting {} ban(s): {}",
                        plan.lift.len(),
                        crate::error_chain(&e)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(id: i64, value: &str, duration: &str) -> Decision {
        Decision {
            id,
            origin: "cscli".into(),
            kind: "ban".into(),
            scope: if value.contains('/') { "Range" } else { "Ip" }.into(),
            value: value.into(),
            duration: duration.into(),
            scenario: "manual".into(),
            simulated: None,
            until: None,
        }
    }

    fn ban_plan(b: &mut Bouncer, new: &[Decision], deleted: &[i64]) -> Plan {
        let mut sync = Sync::default();
        let mut touched = b.take_new(new, SystemTime::now(), &mut sync);
        for id in deleted {
            if let Some(c) = b.forget(*id) {
                touched.insert(c);
            }
        }
        let plan = b.plan(touched);
        // As if every ban were written.
        for (_, a) in plan.ban.iter().chain(&plan.shorten) {
            if let Some(c) = b.claims.get_mut(&a.claim) {
                c.applied = Some(a.until);
            }
        }
        plan
    }

    #[test]
    fn reads_decisions_as_the_xdp_program_can_enforce_them() {
        let now = SystemTime::now();
        let Read::Ban(7, a) = read(&dec(7, "198.51.100.7", "3h59m46.15s"), now) else {
            panic!()
        };
        assert_eq!(a.claim.0, "198.51.100.7/32".parse::<IpNet>().unwrap());
        assert_eq!(a.claim.1, Origin::CrowdSec("cscli".into()));
        assert_eq!(
            a.until.duration_since(now).unwrap().as_secs(),
            3 * 3600 + 59 * 60 + 46
        );
        let Read::Ban(_, a) = read(&dec(8, "2001:db8:5::1/64", "1h"), now) else {
            panic!()
        };
        assert_eq!(a.claim.0, "2001:db8:5::/64".parse::<IpNet>().unwrap());
        let mut captcha = dec(1, "198.51.100.7", "1h");
        captcha.kind = "captcha".into();
        assert_eq!(read(&captcha, now), Read::Ignored("type captcha".into()));
        let mut country = dec(1, "FR", "1h");
        country.scope = "Country".into();
        assert_eq!(read(&country, now), Read::Ignored("scope country".into()));
        let mut sim = dec(1, "198.51.100.7", "1h");
        sim.simulated = Some(true);
        assert_eq!(read(&sim, now), Read::Ignored("simulated".into()));
        assert_eq!(
            read(&dec(1, "198.51.100.7", "-1s"), now),
            Read::Ignored("expired".into())
        );
        for bad in [
            dec(1, "not-an-ip", "1h"),
            dec(1, "198.51.100.7", "forever"),
            dec(1, "198.51.100.0/33", "1h"),
        ] {
            assert!(matches!(read(&bad, now), Read::Invalid(_)), "{bad:?}");
        }
        let mut range_as_ip = dec(1, "198.51.100.0/24", "1h");
        range_as_ip.scope = "Ip".into();
        assert!(matches!(read(&range_as_ip, now), Read::Invalid(_)));
        // A hostile origin cannot break the label or the terminal.
        let mut odd = dec(1, "198.51.100.7", "1h");
        odd.origin = "a/b\u{1b}[31m".into();
        let Read::Ban(_, a) = read(&odd, now) else {
            panic!()
        };
        assert_eq!(a.claim.1, Origin::CrowdSec("a_b_[31m".into()));
        assert!(Origin::parse(&a.claim.1.to_string()).is_ok());
    }

    #[test]
    fn the_longest_decision_of_an_address_holds() {
        let mut b = Bouncer::default();
        let p = ban_plan(
            &mut b,
            &[dec(1, "198.51.100.7", "1h"), dec(2, "198.51.100.7", "4h")],
            &[],
        );
        assert_eq!(p.ban.len(), 1, "one claim, its longest decision");
        assert_eq!(p.ban[0].0, 2);
        // A shorter one later changes nothing.
        let p = ban_plan(&mut b, &[dec(3, "198.51.100.7", "30m")], &[]);
        assert!(p.ban.is_empty() && p.shorten.is_empty() && p.lift.is_empty());
        // Deleting the longest shortens to the next; deleting a short one
        // changes nothing; deleting the last lifts.
        let p = ban_plan(&mut b, &[], &[2]);
        assert_eq!(p.shorten.iter().map(|x| x.0).collect::<Vec<_>>(), [1]);
        let p = ban_plan(&mut b, &[], &[3]);
        assert!(p.ban.is_empty() && p.shorten.is_empty() && p.lift.is_empty());
        let p = ban_plan(&mut b, &[], &[1]);
        assert_eq!(p.lift.len(), 1);
        assert_eq!(b.active(), 0);
        // A deleted decision never seen lifts nothing, nor one added and
        // deleted between two pulls.
        let p = ban_plan(&mut b, &[], &[99]);
        assert!(p.lift.is_empty());
        let mut sync = Sync::default();
        let mut touched = b.take_new(
            &[dec(5, "198.51.100.9", "1h")],
            SystemTime::now(),
            &mut sync,
        );
        touched.extend(b.forget(5));
        let p = b.plan(touched);
        assert!(p.ban.is_empty() && p.lift.is_empty(), "{p:?}");
    }

    #[test]
    fn origins_are_separate_claims() {
        let mut b = Bouncer::default();
        let mut capi = dec(2, "198.51.100.7", "1h");
        capi.origin = "CAPI".into();
        let p = ban_plan(&mut b, &[dec(1, "198.51.100.7", "1h"), capi], &[]);
        assert_eq!(p.ban.len(), 2);
        let p = ban_plan(&mut b, &[], &[1]);
        assert_eq!(
            p.lift,
            vec![(
                "198.51.100.7/32".parse().unwrap(),
                Origin::CrowdSec("cscli".into())
            )]
        );
    }

    #[test]
    fn ignored_reasons_are_bounded() {
        let mut b = Bouncer::default();
        let mut sync = Sync::default();
        let odd: Vec<Decision> = (0..100)
            .map(|i| {
                let mut d = dec(i, "198.51.100.7", "1h");
                d.kind = format!("kind{i}");
                d
            })
            .collect();
        b.take_new(&odd, SystemTime::now(), &mut sync);
        assert!(b.counts.ignored.len() <= MAX_REASONS + 1);
        assert_eq!(b.counts.ignored.values().sum::<u64>(), 100);
        assert_eq!(sync.ignored, 100);
    }
}
