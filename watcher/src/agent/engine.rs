//! The jails' counting: takes what the match stage found, counts each
//! failure in its jail, and hands a host that reached maxretry to the ban
//! service as an order. Keeps the counters `status` shows. Synchronous; the
//! run loop feeds it.
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;

use super::matcher::{Board, Found, Matched, Published};
use crate::{
    ban::{BanService, JailBan, JailName, Order, Origin, Outcome, Policy},
    config::{Config, JailConfig, SourceConf},
    jail::{Failure, Jail, Offense},
    status::JailStatus,
};

/// A jail with the configuration it runs with.
pub struct JailSlot {
    pub jail: Jail,
    pub conf: JailConfig,
}

pub struct Engine {
    pub cfg: Arc<Config>,
    pub slots: Vec<JailSlot>,
    /// Source -> indices of the jails reading it.
    routes: HashMap<SourceConf, Vec<usize>>,
    service: Arc<BanService>,
    /// The jails' configurations per source, for the match stage.
    board: Board,
    generation: u64,
    pub started: SystemTime,
    /// Per source: lines counted, and lines some filter recognised.
    lines: HashMap<SourceConf, LineCounts>,
}

/// A source's lines as the jails saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub counted: u64,
    pub matched: u64,
    /// Bytes of the lines counted (a replay's progress).
    pub bytes: u64,
}

/// Unix ns of a wall-clock time (negative before 1970).
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The wall-clock time of unix ns `ns`.
pub fn from_unix_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl Engine {
    pub fn new(cfg: Config, service: Arc<BanService>) -> Self {
        let mut e = Engine {
            cfg: Arc::new(Config::empty()),
            slots: Vec::new(),
            routes: HashMap::new(),
            service,
            board: Board::default(),
            generation: 0,
            started: SystemTime::now(),
            lines: HashMap::new(),
        };
        e.apply_config(cfg);
        e
    }

    /// What the ban service's guard needs from a configuration.
    pub fn policy(cfg: &Config) -> Policy {
        Policy {
            limits: cfg.limits,
            allowlist: cfg.allowlist.clone(),
            jail_allow: cfg
                .jails
                .iter()
                .filter(|j| !j.allowlist.is_empty())
                .map(|j| (j.name.to_string(), j.allowlist.clone()))
                .collect(),
        }
    }

    /// Swaps in a new configuration (already fully built and valid). Jails
    /// keeping their name keep their counts, bans and statistics.
    pub fn apply_config(&mut self, cfg: Config) {
        let mut old: HashMap<JailName, JailSlot> = self
            .slots
            .drain(..)
            .map(|s| (s.conf.name.clone(), s))
            .collect();
        let mut slots = Vec::with_capacity(cfg.jails.len());
        for jc in &cfg.jails {
            let jail = match old.remove(&jc.name) {
                Some(mut s) => {
                    s.jail.set_rules(jc.rules.clone());
                    s.jail
                }
                None => Jail::new(jc.name.as_str(), jc.rules.clone()),
            };
            slots.push(JailSlot {
                jail,
                conf: jc.clone(),
            });
        }
        let mut routes: HashMap<SourceConf, Vec<usize>> = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            for src in &s.conf.sources {
                let r = routes.entry(src.clone()).or_default();
                if !r.contains(&i) {
                    r.push(i);
                }
            }
        }
        // The match stage gets the filters of each source in route order.
        self.generation += 1;
        let published = Published {
            generation: self.generation,
            by_source: routes
                .iter()
                .map(|(src, route)| {
                    let confs = route.iter().map(|&i| slots[i].conf.clone()).collect();
                    (src.clone(), Arc::new(confs))
                })
                .collect(),
        };
        if let Ok(mut b) = self.board.lock() {
            *b = Arc::new(published);
        }
        self.slots = slots;
        self.routes = routes;
        self.service.set_policy(Self::policy(&cfg));
        self.cfg = Arc::new(cfg);
    }

    /// Every source some jail reads, without duplicates.
    pub fn sources(&self) -> Vec<SourceConf> {
        let mut v: Vec<SourceConf> = self.routes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Where the match stage reads the jails' configurations.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    pub fn service(&self) -> &Arc<BanService> {
        &self.service
    }

    /// Counts what the match stage found in a chunk of `src`, line after
    /// line in log order; a host reaching maxretry is banned right there,
    /// not at the end of the chunk.
    pub fn count(&mut self, src: &SourceConf, m: &Matched) {
        let Some(confs) = m.published.by_source.get(src) else {
            return;
        };
        // The jails the chunk was matched for, as slots now: the same ones
        // unless a reload came in between, then found again by name (a jail
        // gone since is skipped; a new one starts with the next chunk).
        let jails: Vec<Option<usize>> = if m.published.generation == self.generation {
            self.routes
                .get(src)
                .map_or_else(Vec::new, |r| r.iter().copied().map(Some).collect())
        } else {
            confs
                .iter()
                .map(|c| self.slots.iter().position(|s| s.conf.name == c.name))
                .collect()
        };
        let lines = m.chunk.len() as u64;
        // Finds come in line order: a line is matched once however many
        // jails recognised it.
        let mut matched = 0u64;
        let mut prev = None;
        for f in &m.finds {
            if prev != Some(f.start) {
                matched += 1;
                prev = Some(f.start);
            }
        }
        let c = self.lines.entry(src.clone()).or_default();
        c.counted += lines;
        c.matched += matched;
        c.bytes += m.chunk.text().len() as u64;
        for &ji in jails.iter().flatten() {
            self.slots[ji].jail.stats.lines += lines;
        }
        let now = unix_ns(SystemTime::now());
        let text = m.chunk.text();
        for f in &m.finds {
            let Some(&Some(ji)) = jails.get(usize::from(f.jail)) else {
                continue;
            };
            let jail = &mut self.slots[ji].jail;
            match f.found {
                Found::Ignored => jail.stats.ignored += 1,
                Found::Failure {
                    host,
                    filter,
                    regex,
                } => {
                    let failure = Failure {
                        host,
                        time: f.time,
                        line: f.line(text),
                        filter: usize::from(filter),
                        regex: usize::from(regex),
                    };
                    if let Some(off) = jail.failure(&failure, now) {
                        self.punish(ji, off, m.arrived);
                    }
                }
            }
        }
    }

    /// Hands an offense to the ban service and books the outcome; the
    /// offense's evidence buffer goes back to the jail for the next host.
    fn punish(&mut self, ji: usize, off: Offense, arrived: Instant) {
        let slot = &self.slots[ji];
        let conf = &slot.conf;
        let reason = match conf.filters.get(off.filter) {
            Some(f) => match f.failregex_sources().get(off.regex) {
                Some(re) => format!("filter {} failregex #{}: {re}", f.name(), off.regex),
                None => format!("filter {} failregex #{}", f.name(), off.regex),
            },
            None => format!("jail {}", conf.name),
        };
        let order = Order {
            net: off.net,
            host: Some(off.host),
            origin: Origin::Jail(conf.name.clone()),
            length: conf.rules.length(),
            start: from_unix_ns(off.crossing),
            ports: conf.ports.clone(),
            reason,
            evidence: off.evidence.to_vec(),
            failures: off.failures,
            first_seen: from_unix_ns(off.first_seen),
            last_seen: from_unix_ns(off.last_seen),
            force: false,
            replace: false,
            decision: None,
            arrived: Some(arrived),
        };
        let outcome = self
            .service
            .ban(vec![order])
            .pop()
            .unwrap_or(Outcome::Failed("no outcome".into()));
        let jail = &mut self.slots[ji].jail;
        match outcome {
            Outcome::Banned(a) => {
                jail.note_ban(a.net, a.expires_at.map(unix_ns));
                jail.stats.total_bans += 1;
            }
            Outcome::Stale => jail.stats.stale += 1,
            Outcome::Refused(_) => jail.stats.refused += 1,
            Outcome::Failed(_) => jail.stats.errors += 1,
        }
        jail.recycle(off.evidence);
    }

    /// The jails' own bans restored from the store: their failures are not
    /// counted again while the ban lasts.
    pub fn note_restored(&mut self, bans: &[JailBan]) {
        for b in bans {
            if let Some(s) = self
                .slots
                .iter_mut()
                .find(|s| s.conf.name.as_str() == b.jail)
            {
                s.jail.note_ban(b.net, b.expires_at.map(unix_ns));
            }
        }
    }

    /// Periodic cleanup of the jails: hosts outside their window, bans that ended.
    pub fn purge(&mut self) {
        let now = unix_ns(SystemTime::now());
        for s in &mut self.slots {
            s.jail.purge(now);
        }
    }

    /// Forgets `net` in every jail's ban list (after an unban).
    pub fn forget(&mut self, net: &IpNet) {
        for s in &mut self.slots {
            s.jail.forget_ban(net);
        }
    }

    /// A source's lines as the jails saw them.
    pub fn line_counts(&self, src: &SourceConf) -> LineCounts {
        self.lines.get(src).copied().unwrap_or_default()
    }

    pub fn slot_by_name(&self, name: &str) -> Option<&JailSlot> {
        self.slots.iter().find(|s| s.conf.name.as_str() == name)
    }

    /// The jails' part of `status`.
    pub fn jail_status(&self) -> Vec<JailStatus> {
        self.slots
            .iter()
            .map(|s| {
                let st = &s.jail.stats;
                let r = s.jail.rules();
                JailStatus {
                    name: s.conf.name.to_string(),
                    filters: s
                        .conf
                        .filters
                        .iter()
                        .map(|f| f.name().to_string())
                        .collect(),
                    sources: s.conf.sources.iter().map(ToString::to_string).collect(),
                    lines: st.lines,
                    failures: st.failures,
                    ignored: st.ignored,
                    current_bans: s.jail.current_bans(),
                    total_bans: st.total_bans,
                    tracked_hosts: s.jail.tracked_hosts(),
                    evictions: s.jail.evictions(),
                    refused: st.refused,
                    stale: st.stale,
                    errors: st.errors,
                    backtrack_limit_lines: s
                        .conf
                        .filters
                        .iter()
                        .map(|f| f.backtrack_limit_hits())
                        .sum(),
                    maxretry: r.maxretry,
                    findtime_secs: r.findtime.as_secs(),
                    bantime_secs: r.bantime.map(|d| d.as_secs()),
                    ports: s.conf.ports.to_string(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::matcher::Stage,
        ban::{Persist, Subscriber},
        source::Chunk,
    };

    fn engine(extra: &str) -> Engine {
        let text = format!(
            "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 3\nbantime = \"1h\"\n{extra}"
        );
        let cfg =
            crate::config::parse(&text, "t.toml", std::path::Path::new("/tmp")).expect("config");
        let svc = BanService::new(
            None,
            None,
            Persist::Sync,
            Engine::policy(&cfg),
            Vec::<Arc<dyn Subscriber>>::new(),
        );
        Engine::new(cfg, Arc::new(svc))
    }

    fn line(ip: &str, t: jiff::Timestamp) -> String {
        let stamp = t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%b %e %H:%M:%S");
        format!(
            "{stamp} mail postfix/smtpd[1]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure\n"
        )
    }

    /// A jail's status counts the lines on which its fail2ban filter hit
    /// the backtracking limit (no match).
    #[test]
    fn status_counts_backtrack_limit_lines() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("slow.conf");
        std::fs::write(
            &conf,
            "[Definition]\nfailregex = ^\\s*\\S+ ((a|aa)+)b\\1 <HOST>$\ndatepattern = {^LN-BEG}\n",
        )
        .unwrap();
        let mut e = engine(&format!(
            "[jails.slow]\nfilter = \"fail2ban:{}\"\nfiles = [\"/tmp/e.log\"]\n",
            conf.display()
        ));
        // Group 1 splits its 30 a's in ~10^6 ways, each tried before the
        // 31 a's after the b rule the line out.
        let slow = format!(
            "Nov 22 05:27:20 mx {}b{} 192.0.2.1\n",
            "a".repeat(30),
            "a".repeat(31)
        );
        feed(&mut e, &[slow, line("192.0.2.2", jiff::Timestamp::now())]);
        let st = e.jail_status();
        let of = |n: &str| st.iter().find(|j| j.name == n).unwrap();
        assert_eq!(of("slow").backtrack_limit_lines, 1);
        assert_eq!(of("slow").failures, 0);
        assert_eq!(of("sasl").backtrack_limit_lines, 0);
        assert_eq!(of("sasl").failures, 1);
    }

    fn feed(e: &mut Engine, lines: &[String]) {
        let src = SourceConf::Files(vec!["/tmp/e.log".into()]);
        let mut stage = Stage::new(src.clone(), e.board(), crate::agent::YearReference::Now);
        let m = stage.run(Chunk::from_text("/tmp/e.log", &lines.concat()));
        e.count(&src, &m);
    }

    #[test]
    fn bans_live_lines_at_maxretry() {
        let mut e = engine("");
        let now = jiff::Timestamp::now();
        feed(
            &mut e,
            &[line("203.0.113.9", now), line("203.0.113.9", now)],
        );
        assert_eq!(e.slots[0].jail.stats.total_bans, 0);
        feed(&mut e, &[line("203.0.113.9", now)]);
        assert_eq!(e.slots[0].jail.stats.total_bans, 1);
        assert_eq!(e.slots[0].jail.current_bans(), 1);
    }

    #[test]
    fn replayed_old_lines_do_not_ban() {
        let mut e = engine("");
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
        let lines: Vec<_> = (0..3).map(|_| line("203.0.113.9", old)).collect();
        feed(&mut e, &lines);
        let st = e.slots[0].jail.stats;
        assert_eq!((st.total_bans, st.stale), (0, 1));
    }

    #[test]
    fn old_crossing_bans_for_what_is_left() {
        let mut e = engine("");
        // Crossed 30 minutes ago: a 1h ban has about 30 minutes left.
        let t = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30);
        let lines: Vec<_> = (0..3).map(|_| line("203.0.113.9", t)).collect();
        feed(&mut e, &lines);
        let (_, exp) = e.slots[0].jail.bans().next().expect("a ban");
        let left = exp.expect("finite") - unix_ns(SystemTime::now());
        assert!(
            (29 * 60 * 1_000_000_000..=31 * 60 * 1_000_000_000).contains(&left),
            "{left}"
        );
    }

    #[test]
    fn guard_refuses_allowlisted_and_loopback() {
        let mut e = engine("allowlist = [\"203.0.113.0/28\"]\n");
        let now = jiff::Timestamp::now();
        let lines: Vec<_> = (0..3)
            .flat_map(|_| [line("203.0.113.9", now), line("127.0.0.1", now)])
            .collect();
        feed(&mut e, &lines);
        let st = e.slots[0].jail.stats;
        assert_eq!((st.total_bans, st.refused), (0, 2));
    }

    #[test]
    fn ignoreregex_keeps_lines_from_counting() {
        let mut e = engine("ignoreregex = [\"unknown\\\\[203\\\\.0\\\\.113\\\\.9\\\\]\"]\n");
        let now = jiff::Timestamp::now();
        let lines: Vec<_> = (0..5).map(|_| line("203.0.113.9", now)).collect();
        feed(&mut e, &lines);
        let st = e.slots[0].jail.stats;
        assert_eq!((st.total_bans, st.ignored, st.failures), (0, 5, 0));
    }

    #[test]
    fn reload_keeps_counts_and_bans() {
        let mut e = engine("");
        let now = jiff::Timestamp::now();
        feed(
            &mut e,
            &[line("203.0.113.9", now), line("203.0.113.9", now)],
        );
        feed(
            &mut e,
            &(0..3)
                .map(|_| line("203.0.113.10", now))
                .collect::<Vec<_>>(),
        );
        let text = "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 3\nbantime = \"1h\"\n\
                    [jails.new]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\n";
        let cfg =
            crate::config::parse(text, "t.toml", std::path::Path::new("/tmp")).expect("config");
        e.apply_config(cfg);
        assert_eq!(e.slots.len(), 2);
        let sasl = e.slot_by_name("sasl").expect("kept");
        assert_eq!(
            (sasl.jail.current_bans(), sasl.jail.tracked_hosts()),
            (1, 1)
        );
        assert_eq!(sasl.jail.stats.lines, 5);
        // The third failure of .9 after the reload completes its count.
        feed(&mut e, &[line("203.0.113.9", now)]);
        assert_eq!(
            e.slot_by_name("sasl").expect("kept").jail.stats.total_bans,
            2
        );
    }

    /// A chunk matched before a reload is counted by the jails it was
    /// matched for, found by name: never matched a second time.
    #[test]
    fn a_chunk_matched_before_a_reload_counts_once() {
        let mut e = engine("");
        let now = jiff::Timestamp::now();
        let src = SourceConf::Files(vec!["/tmp/e.log".into()]);
        let mut stage = Stage::new(src.clone(), e.board(), crate::agent::YearReference::Now);
        let text: String = (0..3).map(|_| line("203.0.113.9", now)).collect();
        let m = stage.run(Chunk::from_text("/tmp/e.log", &text));
        // A reload that puts another jail first.
        let cfg = crate::config::parse(
            "[jails.aaa]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 1\n\
             [jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 3\nbantime = \"1h\"\n",
            "t.toml",
            std::path::Path::new("/tmp"),
        )
        .expect("config");
        e.apply_config(cfg);
        e.count(&src, &m);
        let sasl = e.slot_by_name("sasl").expect("kept");
        assert_eq!((sasl.jail.stats.lines, sasl.jail.stats.total_bans), (3, 1));
        let aaa = e.slot_by_name("aaa").expect("new");
        assert_eq!(
            aaa.jail.stats.lines, 0,
            "a new jail starts with the next chunk"
        );
    }
}
