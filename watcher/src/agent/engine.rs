//! The agent's decision core: routes source lines through each jail's
//! filters (or takes what the match stage found in them, see matcher.rs),
//! turns offenses into bans (guard, increment, enforcer, state store) and
//! keeps the counters `status` shows. Synchronous; the run loop feeds it.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;

use super::{
    matcher::{self, Board, Finds, Found, Published},
    state_writer::StateWriter,
};
use crate::{
    addr::{self, Guard, PortSet},
    config::{Config, JailConfig, SourceConf},
    enforcer::{BanRequest, Enforcer},
    jail::{Failure, Jail, Offense},
    source::{Chunk, LogLine},
    state::{BanRecord, Store},
    timestamp::TimeParser,
};

/// Prefix limits of the guard for automatic bans: jails ban /32../8 and
/// /128../16 prefixes only when configured to, never broader than this.
const MAX_PREFIX_V4: u8 = 16;
const MAX_PREFIX_V6: u8 = 32;

/// A jail with what it runs with.
pub struct Slot {
    pub jail: Jail,
    pub conf: JailConfig,
    pub guard: Guard,
}

/// What happened to one offense, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Banned {
        net: IpNet,
        ttl: Option<Duration>,
    },
    DryRun {
        net: IpNet,
        ttl: Option<Duration>,
    },
    /// The ban would already be over (old lines).
    Stale,
    Refused(String),
    Failed(String),
}

pub struct Engine {
    pub cfg: Arc<Config>,
    pub slots: Vec<Slot>,
    /// Source -> indices of the jails reading it.
    routes: HashMap<SourceConf, Vec<usize>>,
    /// `None` in --dry-run: decisions are made and logged, nothing is written.
    pub enforcer: Option<Enforcer>,
    pub store: Option<Arc<Store>>,
    writer: Option<StateWriter>,
    /// Previous bans per net (all jails), read from the store once and then
    /// kept here, so a burst of bans does not wait for store writes.
    ban_counts: HashMap<IpNet, u32>,
    /// The host's own addresses, refused as ban targets.
    local: Vec<IpNet>,
    /// The jails' configurations per source, for the match stage.
    board: Board,
    generation: u64,
    pub started: SystemTime,
}

pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Wall-clock now, taken once per batch.
struct Clock {
    now: i64,
    now_ts: jiff::Timestamp,
}

impl Clock {
    fn now() -> Self {
        let now_sys = SystemTime::now();
        Clock {
            now: unix_ns(now_sys),
            now_ts: jiff::Timestamp::try_from(now_sys).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        }
    }
}

/// A line's log time, parsed on first use.
struct LineTime<'a> {
    time: Option<i64>,
    tp: &'a mut TimeParser,
    now: i64,
    now_ts: jiff::Timestamp,
}

impl LineTime<'_> {
    fn get(&mut self, text: &str) -> i64 {
        if let Some(t) = self.time {
            return t;
        }
        // A line without a readable stamp happened now.
        let t = self
            .tp
            .parse(text, self.now_ts)
            .map_or(self.now, |(t, _)| jiff_ns(t));
        self.time = Some(t);
        t
    }
}

fn jiff_ns(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(if t.as_second() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn local_nets() -> Vec<IpNet> {
    addr::local_addrs()
        .into_iter()
        .map(addr::host_net)
        .collect()
}

impl Engine {
    pub fn new(cfg: Config, enforcer: Option<Enforcer>, store: Option<Arc<Store>>) -> Self {
        let writer = store.clone().map(StateWriter::spawn);
        let mut e = Engine {
            cfg: Arc::new(Config {
                origin: String::new(),
                jails: Vec::new(),
                allowlist: Vec::new(),
                capacity: Default::default(),
            }),
            slots: Vec::new(),
            routes: HashMap::new(),
            enforcer,
            store,
            writer,
            ban_counts: HashMap::new(),
            local: local_nets(),
            board: Board::default(),
            generation: 0,
            started: SystemTime::now(),
        };
        e.apply_config(cfg);
        e
    }

    fn guard_for(&self, allow: &[IpNet]) -> Guard {
        let mut g = Guard {
            allow: allow.to_vec(),
            max_prefix_v4: MAX_PREFIX_V4,
            max_prefix_v6: MAX_PREFIX_V6,
        };
        for n in &self.local {
            if !g.allow.contains(n) {
                g.allow.push(*n);
            }
        }
        g
    }

    /// The guard of bans not made by a jail (control socket, restore).
    pub fn global_guard(&self) -> Guard {
        self.guard_for(&self.cfg.allowlist)
    }

    /// Swaps in a new configuration (already fully built and valid). Jails
    /// keeping their name keep their counts, bans and statistics.
    pub fn apply_config(&mut self, cfg: Config) {
        self.local = local_nets();
        let mut old: HashMap<String, Slot> = self
            .slots
            .drain(..)
            .map(|s| (s.conf.name.clone(), s))
            .collect();
        let mut slots = Vec::with_capacity(cfg.jails.len());
        for jc in &cfg.jails {
            let guard = self.guard_for(&jc.allowlist);
            let jail = match old.remove(&jc.name) {
                Some(mut s) => {
                    s.jail.set_rules(jc.rules.clone());
                    s.jail
                }
                None => Jail::new(&jc.name, jc.rules.clone()),
            };
            slots.push(Slot {
                jail,
                conf: jc.clone(),
                guard,
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
        // The global allowlist also goes to the data plane, so the XDP
        // program passes it even past a covering ban made by hand; a jail's
        // own allowlist only stops that jail from banning.
        if let Some(enf) = self.enforcer.as_mut()
            && let Err(e) = enf.allow_sync_configured(&cfg.allowlist)
        {
            log::error!("writing the configured allowlist to the data plane: {e}");
        }
        self.cfg = Arc::new(cfg);
    }

    /// Every source some jail reads, without duplicates.
    pub fn sources(&self) -> Vec<SourceConf> {
        let mut v: Vec<SourceConf> = self.routes.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn dry_run(&self) -> bool {
        self.enforcer.is_none()
    }

    /// Runs a batch of lines of `src` through its jails, line by line (the
    /// reference [`ingest_matched`](Self::ingest_matched) is tested against).
    /// Bans are made as soon as the line that causes them is seen, not at
    /// the end of the batch.
    pub fn ingest(&mut self, src: &SourceConf, lines: &[LogLine], tp: &mut TimeParser) {
        let Some(route) = self.routes.get(src) else {
            return;
        };
        // Cheap to clone (a few indices) and frees `self` for punish().
        let route = route.clone();
        for &ji in &route {
            self.slots[ji].jail.stats.lines += lines.len() as u64;
        }
        let clock = Clock::now();
        for line in lines {
            self.ingest_line(&route, &line.text, line.time, tp, &clock);
        }
    }

    /// Runs a chunk of lines of `src` through its jails, in the order of
    /// [`ingest`](Self::ingest), but only the lines some filter's literal
    /// prefilter picked out of the whole chunk in one scan reach the regexes.
    /// `found`: what the match stage found in the chunk, used if it was made
    /// with the current configuration (else the chunk is matched here).
    pub fn ingest_matched(
        &mut self,
        src: &SourceConf,
        chunk: &Chunk,
        found: Option<(u64, Finds)>,
        tp: &mut TimeParser,
    ) {
        let Some(route) = self.routes.get(src) else {
            return;
        };
        let route = route.clone();
        for &ji in &route {
            self.slots[ji].jail.stats.lines += chunk.len() as u64;
        }
        let clock = Clock::now();
        if chunk.has_times() {
            for (text, time) in chunk.lines() {
                self.ingest_line(&route, text, time, tp, &clock);
            }
            return;
        }
        let text = chunk.text();
        let seen = match found {
            Some((generation, finds)) if generation == self.generation => finds,
            // Published together with the route: the same jails in the same order.
            _ => match self.published().by_source.get(src) {
                Some(confs) => matcher::find_all(confs, text),
                None => Vec::new(),
            },
        };
        // Then the jails count, line after line, in log order.
        let mut last: Option<(u32, Option<i64>)> = None;
        for f in &seen {
            let line = f.line(text);
            // Jails reading the same line share its parsed time.
            let time = match last {
                Some((ls, t)) if ls == f.start => t,
                _ => None,
            };
            let mut when = LineTime {
                time,
                tp: &mut *tp,
                now: clock.now,
                now_ts: clock.now_ts,
            };
            let ji = route[usize::from(f.jail)];
            if let Some(off) = self.count(ji, line, f.found, &mut when) {
                self.punish_and_recycle(ji, off, clock.now);
            }
            last = Some((f.start, when.time));
        }
    }

    /// Where the match stage reads the jails' configurations.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    pub(super) fn published(&self) -> Arc<Published> {
        self.board.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// One line through the jails of `route` (lines already counted).
    fn ingest_line(
        &mut self,
        route: &[usize],
        text: &str,
        time: Option<jiff::Timestamp>,
        tp: &mut TimeParser,
        clock: &Clock,
    ) {
        // Filters read the message after the stamp; the stamp itself is
        // only turned into a time for the few lines that are failures.
        // Journal entries carry their time and no stamp in the text.
        let msg = match time {
            Some(_) => None,
            None => crate::timestamp::stamp_len(text).and_then(|n| text.get(n..)),
        };
        let mut when = LineTime {
            time: time.map(jiff_ns),
            tp,
            now: clock.now,
            now_ts: clock.now_ts,
        };
        for &ji in route {
            if let Some(off) = self.offer(ji, text, msg, &mut when) {
                self.punish_and_recycle(ji, off, clock.now);
            }
        }
    }

    /// `msg`: the text after the timestamp, when the line has one.
    fn offer(
        &mut self,
        ji: usize,
        line: &str,
        msg: Option<&str>,
        when: &mut LineTime<'_>,
    ) -> Option<Offense> {
        let found = matcher::classify(&self.slots[ji].conf, line, msg, matcher::Picked::Unknown)?;
        self.count(ji, line, found, when)
    }

    /// Counts what the filters found in a line.
    fn count(
        &mut self,
        ji: usize,
        line: &str,
        found: Found,
        when: &mut LineTime<'_>,
    ) -> Option<Offense> {
        let jail = &mut self.slots[ji].jail;
        match found {
            Found::Ignored => {
                jail.stats.ignored += 1;
                None
            }
            Found::Failure {
                host,
                filter,
                regex,
            } => {
                let failure = Failure {
                    host,
                    time: when.get(line),
                    line,
                    filter: filter as usize,
                    regex: regex as usize,
                };
                jail.failure(&failure, when.now)
            }
        }
    }

    /// Previous bans of `net` over all jails.
    fn previous_bans(&mut self, net: IpNet) -> u32 {
        if let Some(n) = self.ban_counts.get(&net) {
            return *n;
        }
        let n = self.store.as_ref().map_or(0, |s| s.ban_count(net));
        self.ban_counts.insert(net, n);
        n
    }

    /// A replayed old log makes an offense every maxretry failures: its
    /// evidence buffer goes back to the jail for the next new host.
    fn punish_and_recycle(&mut self, ji: usize, off: Offense, now: i64) {
        self.punish(ji, &off, now);
        self.slots[ji].jail.recycle(off.evidence);
    }

    /// Turns an offense into a ban, unless it would already be over or the
    /// guard refuses the target.
    pub fn punish(&mut self, ji: usize, off: &Offense, now: i64) -> Verdict {
        let previous = self.previous_bans(off.net);
        let slot = &mut self.slots[ji];
        let name = slot.conf.name.clone();
        let length = slot.conf.rules.ban_length(previous);
        // The ban started when the crossing line was written: replayed or
        // late lines only ban for what is left of it.
        let (expires, ttl) = match length {
            None => (None, None),
            Some(len) => {
                let exp = off
                    .crossing
                    .saturating_add(i64::try_from(len.as_nanos()).unwrap_or(i64::MAX));
                if exp <= now {
                    slot.jail.stats.stale += 1;
                    return Verdict::Stale;
                }
                (Some(exp), Some(Duration::from_nanos((exp - now) as u64)))
            }
        };
        if let Err(e) = slot.guard.check(&off.net, false) {
            slot.jail.stats.refused += 1;
            log::info!("jail {name}: not banning {}: {e}", off.net);
            return Verdict::Refused(e.to_string());
        }
        let ports = slot.conf.ports.clone();
        let verdict = match self.enforcer.as_mut() {
            Some(enf) => {
                let req = BanRequest {
                    net: off.net,
                    ttl,
                    ports: ports.clone(),
                    jail: name.clone(),
                    mode: Default::default(),
                };
                match enf.ban(&req) {
                    Ok(_) => Verdict::Banned { net: off.net, ttl },
                    Err(e) => {
                        slot.jail.stats.errors += 1;
                        log::error!("jail {name}: banning {}: {e}", off.net);
                        return Verdict::Failed(e.to_string());
                    }
                }
            }
            None => Verdict::DryRun { net: off.net, ttl },
        };
        slot.jail.note_ban(off.net, expires);
        slot.jail.stats.total_bans += 1;
        let reason = match slot.conf.filters.get(off.filter) {
            Some(f) => match f.failregex_sources().get(off.regex) {
                Some(re) => format!("filter {} failregex #{}: {re}", f.name(), off.regex),
                None => format!("filter {} failregex #{}", f.name(), off.regex),
            },
            None => "?".to_string(),
        };
        log::info!(
            "jail {name}: {}ban {} for {} after {} failures ({reason})",
            if self.enforcer.is_none() {
                "[dry-run] "
            } else {
                ""
            },
            off.net,
            length.map_or_else(|| "ever".to_string(), addr::format_duration),
            off.failures,
        );
        self.ban_counts.insert(off.net, previous.saturating_add(1));
        if self.enforcer.is_some()
            && let Some(w) = &self.writer
        {
            w.record(BanRecord {
                net: off.net,
                jail: name,
                reason,
                evidence: off.evidence.to_vec(),
                first_seen: system_time(off.first_seen),
                last_seen: system_time(off.last_seen),
                failures: off.failures,
                times_banned: previous.saturating_add(1),
                banned_at: system_time(off.crossing),
                expires_at: expires.map(system_time),
                ports: ports.0,
            });
        }
        verdict
    }

    /// Puts stored bans that are still running back into the maps (after a
    /// reboot emptied them) and into the jails' ban lists. Returns (restored
    /// into the maps, already present, skipped).
    pub fn restore(&mut self) -> anyhow::Result<(usize, usize, usize)> {
        let Some(store) = self.store.clone() else {
            return Ok((0, 0, 0));
        };
        let t0 = std::time::Instant::now();
        let now_sys = SystemTime::now();
        let now = unix_ns(now_sys);
        let present: HashSet<IpNet> = match &self.enforcer {
            Some(enf) => enf
                .list()?
                .into_iter()
                .filter(|b| !b.expired)
                .map(|b| b.net)
                .collect(),
            None => HashSet::new(),
        };
        let guard = self.global_guard();
        let by_name: HashMap<String, usize> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.conf.name.clone(), i))
            .collect();
        let mut reqs = Vec::new();
        let (mut already, mut skipped) = (0, 0);
        let slots = &mut self.slots;
        store.for_each(|r| {
            if r.is_expired(now_sys) {
                return;
            }
            if let Err(e) = guard.check(&r.net, true) {
                log::warn!("not restoring ban of {} ({}): {e}", r.net, r.jail);
                skipped += 1;
                return;
            }
            let expires = r.expires_at.map(unix_ns);
            if let Some(&i) = by_name.get(&r.jail) {
                slots[i].jail.note_ban(r.net, expires);
            }
            if present.contains(&r.net) {
                already += 1;
                return;
            }
            let ttl = expires.map(|e| Duration::from_nanos((e - now).max(1) as u64));
            let ports = PortSet::from_ports(r.ports.clone()).unwrap_or_else(|_| PortSet::all());
            reqs.push(BanRequest {
                net: r.net,
                ttl,
                ports,
                jail: r.jail.clone(),
                mode: Default::default(),
            });
        })?;
        let read = t0.elapsed();
        let mut restored = 0;
        if let Some(enf) = self.enforcer.as_mut()
            && !reqs.is_empty()
        {
            restored = enf.ban_batch(&reqs)?.len();
        }
        log::debug!(
            "restore: maps listed and store read in {read:?}, {} ban(s) written in {:?}",
            reqs.len(),
            t0.elapsed() - read
        );
        Ok((restored, already, skipped))
    }

    /// Periodic cleanup: hosts outside their window, bans that ended, expired
    /// map entries and old store records.
    pub fn purge(&mut self) {
        let now_sys = SystemTime::now();
        let now = unix_ns(now_sys);
        for s in &mut self.slots {
            s.jail.purge(now);
        }
        if let Some(enf) = self.enforcer.as_mut()
            && let Err(e) = enf.purge_expired()
        {
            log::warn!("purging expired bans from the maps: {e}");
        }
        if let Some(w) = &self.writer {
            // Records of ended bans stay a day for `explain`; history stays longer.
            w.purge(now_sys - Duration::from_secs(86_400));
        }
        if self.ban_counts.len() > 100_000 {
            self.ban_counts.clear();
        }
    }

    /// Forgets `net` in every jail's ban list (after an unban).
    pub fn forget(&mut self, net: &IpNet) {
        for s in &mut self.slots {
            s.jail.forget_ban(net);
        }
    }

    pub fn writer(&self) -> Option<&StateWriter> {
        self.writer.as_ref()
    }

    /// Flushes pending store writes and stops the writer thread.
    pub fn shutdown(&mut self) {
        if let Some(w) = self.writer.take() {
            w.finish();
        }
    }

    pub fn note_manual_ban(&mut self, net: IpNet) {
        let n = self.previous_bans(net);
        self.ban_counts.insert(net, n.saturating_add(1));
    }

    pub fn previous(&mut self, net: IpNet) -> u32 {
        self.previous_bans(net)
    }

    pub fn slot_by_name(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.conf.name == name)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(extra: &str) -> Engine {
        let text = format!(
            "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 3\nbantime = \"1h\"\n{extra}"
        );
        let cfg =
            crate::config::parse(&text, "t.toml", std::path::Path::new("/tmp")).expect("config");
        Engine::new(cfg, None, None)
    }

    fn line(ip: &str, t: jiff::Timestamp) -> LogLine {
        let stamp = t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%b %e %H:%M:%S");
        LogLine {
            source: Arc::from("/tmp/e.log"),
            text: format!(
                "{stamp} mail postfix/smtpd[1]: warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure"
            ),
            time: None,
        }
    }

    fn feed(e: &mut Engine, lines: &[LogLine]) {
        let src = SourceConf::Files(vec!["/tmp/e.log".into()]);
        let mut tp = TimeParser::new();
        e.ingest(&src, lines, &mut tp);
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

    /// The chunk path (literal scan over the whole chunk, only candidate
    /// lines reach the regexes) decides exactly as the line-by-line path:
    /// every built-in filter's fixtures, each filter in a jail of its own
    /// (so its own prefilter picks the lines), then all of them and a jail
    /// with two filters on one source, with counts crossing maxretry.
    #[test]
    fn chunks_decide_like_single_lines() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/filters");
        let mut text = String::new();
        let mut jails = Vec::new();
        for name in crate::filter::Filter::builtin_names() {
            let fixture =
                std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("fixture");
            for l in fixture.lines().filter_map(|l| l.split_once(" | ")) {
                text.push_str(l.1);
                text.push('\n');
            }
            jails.push(format!(
                "[jails.{name}]\nfilter = \"{name}\"\nfiles = [\"/tmp/e.log\"]\nmaxretry = 2\nbantime = \"permanent\"\n"
            ));
        }
        // Twice, so hosts reach maxretry; a line with no stamp, and the last
        // line without a newline.
        let text = format!(
            "{text}{text}no stamp warning: unknown[192.0.2.1]: SASL LOGIN authentication failed:\nlast"
        );
        let lines: Vec<LogLine> = text
            .lines()
            .map(|l| LogLine {
                source: Arc::from("/tmp/e.log"),
                text: l.to_string(),
                time: None,
            })
            .collect();
        let src = SourceConf::Files(vec!["/tmp/e.log".into()]);
        let summary = |e: &Engine| {
            e.slots
                .iter()
                .map(|s| {
                    let mut bans: Vec<String> = s.jail.bans().map(|(n, _)| n.to_string()).collect();
                    bans.sort();
                    (
                        s.conf.name.clone(),
                        s.jail.stats,
                        bans,
                        s.jail.tracked_hosts(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut configs: Vec<String> = jails.clone();
        configs.push(format!(
            "{}[jails.both]\nfilter = [\"postfix-auth-flood\", \"postfix-sasl\"]\nfiles = [\"/tmp/e.log\"]\nmaxretry = 3\nbantime = \"permanent\"\n",
            jails.concat()
        ));
        for cfg in &configs {
            let build = || {
                let c = crate::config::parse(cfg, "t.toml", std::path::Path::new("/tmp"))
                    .expect("config");
                Engine::new(c, None, None)
            };
            let mut by_line = build();
            by_line.ingest(&src, &lines, &mut TimeParser::new());
            let want = summary(&by_line);
            let chunk = Chunk::from_text("/tmp/e.log", &text);
            // Matched by the engine itself.
            let mut by_chunk = build();
            by_chunk.ingest_matched(&src, &chunk, None, &mut TimeParser::new());
            assert_eq!(summary(&by_chunk), want, "{cfg}");
            // Matched by the match stage from what the engine published.
            let mut staged = build();
            let p = staged.published();
            let finds = matcher::find_all(&p.by_source[&src], chunk.text());
            staged.ingest_matched(
                &src,
                &chunk,
                Some((p.generation, finds)),
                &mut TimeParser::new(),
            );
            assert_eq!(summary(&staged), want, "{cfg}");
            // Found under an older configuration: not used.
            let mut reloaded = build();
            let old = reloaded.published().generation;
            let c =
                crate::config::parse(cfg, "t.toml", std::path::Path::new("/tmp")).expect("config");
            reloaded.apply_config(c);
            reloaded.ingest_matched(
                &src,
                &chunk,
                Some((old, Vec::new())),
                &mut TimeParser::new(),
            );
            assert_eq!(summary(&reloaded), want, "{cfg}");
            assert!(
                want.iter().all(|(_, st, bans, _)| {
                    st.lines == lines.len() as u64 && st.total_bans > 0 && !bans.is_empty()
                }),
                "every jail should ban: {want:?}"
            );
        }
    }
}
