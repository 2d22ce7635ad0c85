//! A fail2ban filter as its server runs it: the date found and cut out,
//! `prefregex` (its `<F-CONTENT>` is what the failregexes see, its groups
//! join the failure's), the failregexes in order, `ignoreregex`, the
//! failure id (`fid`, `ip4`, `ip6`, `dns`), `<F-NOFAIL>`, and for
//! multi-line filters the connection table of `<F-MLFID>` with
//! `<F-MLFFORGET>` / `<F-MLFGAINED>` (see [`Correlator`]).
//!
//! A filter of one line at a time (`maxlines` 1, nearly all of them) has a
//! path that allocates nothing on a line that is no failure: the date cut
//! as a slice of the line, a prefregex whose content runs to the end of the
//! line answered by where its head ends, groups kept as spans, the failure
//! id read from them. The agent's match stage runs every line of a source
//! through it ([`F2bFilter::agent_line`]), with the source's multi-line
//! state ([`MlfState`]) for the filters that need one.
use std::{
    collections::{BTreeSet, VecDeque},
    net::IpAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use jiff::{Timestamp, tz::TimeZone};

use super::engine::{Caps, End, PyRegex, Search, Text};
use crate::fail2ban::{dates::DateDetector, filterconf::FilterFile, pyre::Layout, tags};

/// Connections a [`Correlator`] keeps at most (fail2ban keeps 100; a busy
/// MX has more open at once). The oldest go first when it is full.
pub const MLF_MAX_ENTRIES: usize = 10_000;
/// How long a connection's entry is kept after it was made, on the log's
/// clock (fail2ban: 5 minutes).
pub const MLF_MAX_AGE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
#[error("{key}[{index}]: {message}")]
pub struct F2bError {
    pub key: &'static str,
    pub index: usize,
    pub message: String,
}

/// Indexes of the groups that make a failure's id, in one regex.
#[derive(Debug, Default, Clone, Copy)]
struct Ids {
    ip4: Option<usize>,
    ip6: Option<usize>,
    dns: Option<usize>,
    fid: Option<usize>,
    cidr: Option<usize>,
}

/// One regex with the failure groups looked up once.
struct Rule {
    re: PyRegex,
    /// (group index, name) of every named group.
    groups: Vec<(usize, String)>,
    /// `alt_X[_N]` groups: (group name, merged name), sorted.
    alts: Vec<(String, String)>,
    /// `tuple_X[_N]` groups likewise.
    tuples: Vec<(String, String)>,
    ids: Ids,
    /// Literals every match holds (from the pattern's screen): a text
    /// without one of them is no match, told without running the regex.
    /// Empty in plain mode (the reference runs every regex).
    needles: Vec<memchr::memmem::Finder<'static>>,
}

impl Rule {
    fn new(python: &str, layout: Layout, fast: bool) -> Result<Rule, String> {
        let re = if fast {
            PyRegex::new(python, layout)?
        } else {
            PyRegex::new_plain(python, layout)?
        };
        let groups: Vec<(usize, String)> = re.names().map(|(i, n)| (i, n.to_string())).collect();
        let mut alts = Vec::new();
        let mut tuples = Vec::new();
        for (_, n) in &groups {
            for (pre, list) in [("alt_", &mut alts), ("tuple_", &mut tuples)] {
                if n.len() > 4
                    && let Some(rest) = n.strip_prefix(pre)
                {
                    // `alt_user_1` -> `user`; the name keeps digits not after `_`.
                    let base = match rest.rfind('_') {
                        Some(u)
                            if u > 0
                                && rest[u + 1..].bytes().all(|b| b.is_ascii_digit())
                                && u + 1 < rest.len() =>
                        {
                            &rest[..u]
                        }
                        _ => rest,
                    };
                    let base = match base {
                        "id" => "fid",
                        "port" => "fport",
                        b => b,
                    };
                    list.push((n.clone(), base.to_string()));
                }
            }
        }
        alts.sort();
        tuples.sort();
        let ids = Ids {
            ip4: re.group("ip4"),
            ip6: re.group("ip6"),
            dns: re.group("dns"),
            fid: re.group("fid"),
            cidr: re.group("cidr"),
        };
        let needles = if fast {
            super::required_literals(re.screen_pattern())
        } else {
            Vec::new()
        };
        Ok(Rule {
            re,
            groups,
            alts,
            tuples,
            ids,
            needles,
        })
    }

    /// `false`: `hay` lacks a literal every match holds.
    fn may_match(&self, hay: &str) -> bool {
        self.needles
            .iter()
            .all(|n| n.find(hay.as_bytes()).is_some())
    }

    /// Its groups mean what they say: no alternates merged into others.
    fn plain(&self) -> bool {
        self.alts.is_empty() && self.tuples.is_empty()
    }

    /// The named groups of a match, alternates merged (fail2ban's
    /// `getGroups`).
    fn fail(&self, c: &Caps<'_>) -> Fail {
        let mut f = Fail::default();
        for (i, n) in &self.groups {
            f.set(n, c.get(*i).map(str::to_string));
        }
        for (k, n) in &self.alts {
            if let Some(v) = f.get(k).filter(|v| !v.is_empty()).map(str::to_string)
                && f.get(n).is_none_or(str::is_empty)
            {
                f.set(n, Some(v));
            }
        }
        for (k, n) in &self.tuples {
            let v = f.get(k).unwrap_or_default().to_string();
            let t = f.get(n).map(str::to_string).unwrap_or_default();
            f.set(n, Some(format!("{t}\u{1f}{v}")));
        }
        f
    }
}

/// A failure's data as fail2ban keeps it: the groups (a group that did not
/// take part is `None`), the users of a connection, its matched lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fail {
    groups: Vec<(String, Option<String>)>,
    pub users: Option<BTreeSet<String>>,
    /// Line numbers merged into the failure.
    pub matches: Option<Vec<u64>>,
    nofail_matches: Option<Vec<u64>>,
    mlfpending: bool,
}

impl Fail {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.as_deref())
    }

    fn truthy(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| !v.is_empty())
    }

    fn set(&mut self, k: &str, v: Option<String>) {
        match self.groups.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v,
            None => self.groups.push((k.to_string(), v)),
        }
    }

    fn pop(&mut self, k: &str) -> Option<String> {
        let i = self.groups.iter().position(|(n, _)| n == k)?;
        self.groups.remove(i).1
    }

    /// Every named group, `None` for one that took no part.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.groups.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Named groups with a value, in pattern order.
    pub fn captures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.groups
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
    }

    /// The failregex's groups over the prefregex's (`self`), those that
    /// took part (fail2ban after 1.0.2; 1.0.2 let an idle group of the
    /// failregex blank the prefix's).
    fn under(&self, fail: Fail) -> Fail {
        let mut merged = self.clone();
        for (k, v) in fail.groups {
            match v {
                Some(_) => merged.set(&k, v),
                None if merged.get(&k).is_none() => merged.set(&k, None),
                None => {}
            }
        }
        merged
    }
}

/// A failure found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Index of the failregex.
    pub regex: usize,
    /// The failure id as text (an address, a host name, an `<F-ID>`).
    pub id: String,
    /// The id came from `ip4`/`ip6` (an address), `dns` (a name) or `fid`.
    pub kind: IdKind,
    /// `<CIDR>`/`<SUBNET>` prefix length.
    pub cidr: Option<u8>,
    pub fail: Fail,
    pub time: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Ip4,
    Ip6,
    Dns,
    Fid,
}

/// What one line (or buffer) gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub failures: Vec<Found>,
    /// An ignoreregex removed a match.
    pub ignored: bool,
    /// A regex hit the backtracking limit on this line.
    pub limited: bool,
}

/// A line split around its date, fail2ban's `(before, date, after)`.
#[derive(Debug, Clone)]
struct Tuple {
    text: String,
    /// Line number (1-based) of the line.
    line: u64,
}

/// The failure id of a match: fail2ban's `ip4`, `ip6`, `dns`, else `fid`;
/// an `<F-ID>` beside a different address is the id (a complex id).
/// `get` reads a group of the (merged) match.
fn ident<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<(&'a str, IdKind, Option<u8>)> {
    let (id, kind) = if let Some(ip) = get("ip4") {
        (ip, IdKind::Ip4)
    } else if let Some(ip) = get("ip6") {
        (ip, IdKind::Ip6)
    } else if let Some(d) = get("dns") {
        (d, IdKind::Dns)
    } else {
        (get("fid")?, IdKind::Fid)
    };
    let (id, kind) = match get("fid") {
        // fail2ban: `fid == ip` is the address itself.
        Some(fid) if kind != IdKind::Fid && fid != id => (fid, IdKind::Fid),
        _ => (id, kind),
    };
    let cidr = get("cidr").and_then(|c| c.parse().ok());
    Some((id, kind, cidr))
}

/// A failure found in one line on its own.
#[derive(Debug)]
struct Single {
    regex: usize,
    kind: IdKind,
    /// The id read as an address, for `ip4`/`ip6` ids.
    addr: Option<IpAddr>,
    /// The id as text and the merged groups, when asked for.
    detail: Option<(String, Fail)>,
    cidr: Option<u8>,
}

#[derive(Debug)]
enum Verdict {
    Failure(Single),
    Ignored,
    Missed,
}

/// The prefregex's part before `<F-CONTENT>`, for a prefregex whose content
/// runs to the end of the line and whose head sets no group: where its
/// match ends is where the content starts.
struct Head {
    re: PyRegex,
    /// `<F-CONTENT>.*</F-CONTENT>`: the content may be empty (then the
    /// failregexes see the whole line, as in fail2ban).
    empty_ok: bool,
}

impl Head {
    fn new(prefregex: &str, no_dns: bool, layout: Layout) -> Option<Head> {
        let (pre, inner, post) = super::split_content(prefregex)?;
        let empty_ok = match inner {
            ".+" => false,
            ".*" => true,
            _ => return None,
        };
        if !matches!(post, "" | "$") || !pre.starts_with('^') {
            return None;
        }
        let py = tags::resolve_regex_tags(pre, no_dns);
        let re = PyRegex::new(&py, layout).ok()?;
        if re.names().next().is_some() {
            return None;
        }
        Some(Head { re, empty_ok })
    }
}

/// How the match stage hands a line to [`F2bFilter::agent_line`].
#[derive(Debug, Clone, Copy)]
pub enum Dated {
    /// A journal entry, with the journal's time: its text holds no date
    /// (fail2ban's systemd backend passes the date beside the message).
    Journal(Option<Timestamp>),
    /// A line of a file. `stamp`: where the match stage's stamp ends and
    /// its time; `reference`: the time a yearless date is nearest to.
    File {
        stamp: Option<(usize, Timestamp)>,
        reference: Timestamp,
    },
}

/// A failure the agent counts: the failregex and the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentHit {
    pub regex: usize,
    pub kind: IdKind,
    /// The id as an address (`ip4`/`ip6` ids that read as one).
    pub addr: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentVerdict {
    Failure(AgentHit),
    Ignored,
    Missed,
}

/// What a filter made of one line in the agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentLine {
    pub verdict: AgentVerdict,
    /// The line's time as the filter dates it (`None`: it found no date).
    pub time: Option<Timestamp>,
    /// A regex hit the backtracking limit on this line.
    pub limited: bool,
}

pub struct F2bFilter {
    dates: DateDetector,
    pref: Option<Rule>,
    /// Group index of `content` in the prefregex.
    content: Option<usize>,
    head: Option<Head>,
    fail: Vec<Rule>,
    ignore: Vec<Rule>,
    pub maxlines: usize,
    /// `<F-MLFID>` somewhere: lines are joined per connection.
    pub mlfid: bool,
    /// Lines on which a regex hit the backtracking limit.
    limit_hits: AtomicU64,
    limit_reported: AtomicBool,
    /// Failures whose id is a host name or an `<F-ID>`, not an address.
    pub(super) not_addresses: AtomicU64,
    pub failregex_python: Vec<String>,
    pub journalmatch: Vec<Vec<String>>,
}

impl F2bFilter {
    /// `usedns`: the jail's (`no` takes host names out of `<HOST>`).
    pub fn compile(spec: &FilterFile, usedns: Option<&str>) -> Result<F2bFilter, F2bError> {
        Self::compile_with(spec, usedns, true)
    }

    /// Every pattern that needs the backtracker runs on it, and every line
    /// takes the general path: the reference the fast paths are tested
    /// against.
    #[cfg(test)]
    pub(crate) fn compile_plain(
        spec: &FilterFile,
        usedns: Option<&str>,
    ) -> Result<F2bFilter, F2bError> {
        Self::compile_with(spec, usedns, false)
    }

    fn compile_with(
        spec: &FilterFile,
        usedns: Option<&str>,
        fast: bool,
    ) -> Result<F2bFilter, F2bError> {
        let usedns = usedns.or(spec.usedns.as_deref()).unwrap_or("warn");
        let no_dns = usedns.eq_ignore_ascii_case("no");
        let several = spec.maxlines > 1;
        let fail_layout = Layout {
            multiline: several,
            several_lines: several,
        };
        let plain_layout = Layout {
            multiline: false,
            several_lines: several,
        };
        let rule = |key: &'static str,
                    index: usize,
                    text: &str,
                    layout: Layout|
         -> Result<Rule, F2bError> {
            let py = tags::resolve_regex_tags(text, no_dns);
            if py.trim().is_empty() {
                return Err(F2bError {
                    key,
                    index,
                    message: "empty regex".into(),
                });
            }
            Rule::new(&py, layout, fast).map_err(|message| F2bError {
                key,
                index,
                message,
            })
        };
        let pref = match &spec.prefregex {
            Some(p) => Some(rule("prefregex", 0, &p.text, plain_layout)?),
            None => None,
        };
        let head = match &spec.prefregex {
            Some(p) if fast && !several => Head::new(&p.text, no_dns, plain_layout),
            _ => None,
        };
        let mut fail = Vec::new();
        for (i, p) in spec.failregex.iter().enumerate() {
            let r = rule("failregex", i, &p.text, fail_layout)?;
            let has_id = ["fid", "ip4", "ip6", "dns", "mlfid"].iter().any(|g| {
                r.re.group(g).is_some() || pref.as_ref().is_some_and(|p| p.re.group(g).is_some())
            });
            if !has_id {
                return Err(F2bError {
                    key: "failregex",
                    index: i,
                    message: "no failure-id group (<HOST>, <ADDR>, <F-ID>, ...)".into(),
                });
            }
            fail.push(r);
        }
        let mut ignore = Vec::new();
        for (i, p) in spec.ignoreregex.iter().enumerate() {
            ignore.push(rule("ignoreregex", i, &p.text, plain_layout)?);
        }
        let dates = DateDetector::new(spec.datepattern.as_deref()).map_err(|e| F2bError {
            key: "datepattern",
            index: 0,
            message: e.to_string(),
        })?;
        let mlfid = pref
            .iter()
            .chain(&fail)
            .any(|r| r.re.group("mlfid").is_some());
        Ok(F2bFilter {
            dates,
            failregex_python: fail.iter().map(|r| r.re.python().to_string()).collect(),
            content: pref.as_ref().and_then(|p| p.re.group("content")),
            pref,
            head,
            fail,
            ignore,
            maxlines: spec.maxlines.max(1),
            mlfid,
            limit_hits: AtomicU64::new(0),
            limit_reported: AtomicBool::new(false),
            not_addresses: AtomicU64::new(0),
            journalmatch: spec.journalmatch.clone(),
        })
    }

    /// A bare regex in place of a filter (`fail2xdp test LOG 'REGEX'`):
    /// fail2ban's default date templates, no prefregex.
    pub fn bare(regex: &str) -> Result<F2bFilter, F2bError> {
        let spec = FilterFile {
            name: "regex".into(),
            path: Default::default(),
            prefregex: None,
            failregex: vec![crate::fail2ban::filterconf::Pattern {
                text: regex.to_string(),
                origin: None,
            }],
            ignoreregex: Vec::new(),
            datepattern: None,
            maxlines: 1,
            journalmatch: Vec::new(),
            usedns: None,
            combined: Vec::new(),
            warnings: Vec::new(),
            missing_includes: Vec::new(),
        };
        Self::compile(&spec, None)
    }

    pub fn failregex_count(&self) -> usize {
        self.fail.len()
    }

    /// The `regex`-crate patterns (screens) of the failregexes, for
    /// literal extraction.
    pub fn screens(&self) -> Vec<&str> {
        self.fail.iter().map(|r| r.re.screen_pattern()).collect()
    }

    pub fn backtracking_patterns(&self) -> usize {
        self.pref
            .iter()
            .chain(&self.fail)
            .chain(&self.ignore)
            .filter(|r| r.re.backtracks())
            .count()
    }

    /// Only dates at the line start are cut.
    pub fn dates_at_line_start(&self) -> bool {
        self.dates.line_start_only()
    }

    /// Lines need the state of the lines before them ([`MlfState`]): a
    /// connection table or a line buffer.
    pub fn needs_state(&self) -> bool {
        self.mlfid || self.maxlines > 1
    }

    /// Lines on which a pattern hit the backtracking limit so far.
    pub fn limit_hits(&self) -> u64 {
        self.limit_hits.load(Ordering::Relaxed)
    }

    /// `true` the first time a limit hit is reported (once per filter).
    pub fn first_limit_report(&self) -> bool {
        self.limit_hits() > 0 && !self.limit_reported.swap(true, Ordering::Relaxed)
    }

    pub fn not_address_ids(&self) -> u64 {
        self.not_addresses.load(Ordering::Relaxed)
    }

    /// The line with its date cut out, and the date's time. `now`: the
    /// reference for missing fields, and the time of a line without date.
    fn split(
        &self,
        line: &str,
        now: Option<Timestamp>,
        tz: &TimeZone,
    ) -> (String, Option<Timestamp>) {
        let found = match now {
            Some(now) => self.dates.find(line, now, tz),
            None => self.dates.find_span(line, tz),
        };
        match found {
            Some(f) => {
                let mut t = String::with_capacity(line.len());
                t.push_str(&line[..f.start]);
                t.push_str(&line[f.end..]);
                (t, f.time)
            }
            None => (line.to_string(), None),
        }
    }

    /// One line on its own (no connection table, no line buffer), with the
    /// server's rule (the first failregex that matches decides).
    /// `now`: the reference for the line's time; `None` when the time is
    /// not wanted.
    pub fn check_line(&self, line: &str, now: Option<Timestamp>, tz: &TimeZone) -> Outcome {
        let (mut text, time) = self.split(line, now, tz);
        if self.maxlines == 1 {
            text.push('\n');
            let (v, limited) = self.find_single(&text, time, None, 0, true);
            return outcome(v, limited, time);
        }
        let mut buf = vec![Tuple { text, line: 0 }];
        self.find(&mut buf, time, None, false)
    }

    /// One line of a source in the agent: `line` ends with its newline;
    /// `state`, the source's for this filter when it
    /// [needs one](Self::needs_state). Allocates nothing on a line that is
    /// no failure of a one-line filter whose date is where the match
    /// stage's stamp is, or at the line start.
    pub fn agent_line(
        &self,
        line: &str,
        dated: Dated,
        state: Option<&mut MlfState>,
        tz: &TimeZone,
    ) -> AgentLine {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let cut;
        let (text, time): (&str, Option<Timestamp>) = match dated {
            Dated::Journal(t) => (line, t),
            Dated::File { stamp, reference } => match stamp {
                // The stage's stamp is the date fail2ban's default
                // templates cut: its time serves (parsed once per line).
                Some((n, t))
                    if self.dates.is_default() && DateDetector::syslog_stamp(bare) == Some(n) =>
                {
                    (&line[n..], Some(t))
                }
                _ => match self.dates.find(bare, reference, tz) {
                    Some(f) if f.start == 0 => (&line[f.end..], f.time),
                    Some(f) => {
                        cut = format!("{}{}\n", &bare[..f.start], &bare[f.end..]);
                        (cut.as_str(), f.time)
                    }
                    None => (line, None),
                },
            },
        };
        let (verdict, limited) = if self.maxlines > 1 {
            let mut scratch;
            let st = match state {
                Some(s) => s,
                None => {
                    scratch = MlfState::new();
                    &mut scratch
                }
            };
            let text = text.strip_suffix('\n').unwrap_or(text).to_string();
            let o = st.feed(self, text, time, false);
            let verdict = match o.failures.into_iter().next() {
                Some(f) => Verdict::Failure(Single {
                    regex: f.regex,
                    kind: f.kind,
                    addr: address(f.kind, &f.id),
                    detail: None,
                    cidr: f.cidr,
                }),
                None if o.ignored => Verdict::Ignored,
                None => Verdict::Missed,
            };
            (verdict, o.limited)
        } else {
            let cache = match state {
                Some(s) if self.mlfid => Some(&mut s.cache),
                _ => None,
            };
            self.find_single(text, time, cache, 0, false)
        };
        let verdict = match verdict {
            Verdict::Failure(s) => AgentVerdict::Failure(AgentHit {
                regex: s.regex,
                kind: s.kind,
                addr: s.addr,
            }),
            Verdict::Ignored => AgentVerdict::Ignored,
            Verdict::Missed => AgentVerdict::Missed,
        };
        AgentLine {
            verdict,
            time,
            limited,
        }
    }

    /// Counts a limit hit once per line.
    fn note_limit(&self, limited: &mut bool) {
        if !*limited {
            self.limit_hits.fetch_add(1, Ordering::Relaxed);
        }
        *limited = true;
    }

    fn search<'h>(&self, r: &Rule, hay: Text<'h>, limited: &mut bool) -> Option<Caps<'h>> {
        if !r.may_match(hay.s) {
            return None;
        }
        match r.re.search_text(hay) {
            Search::Hit(c) => Some(c),
            Search::Miss => None,
            Search::Limit => {
                self.note_limit(limited);
                None
            }
        }
    }

    fn ignored(&self, buf: Text<'_>, limited: &mut bool) -> bool {
        self.ignore.iter().any(|r| {
            r.may_match(buf.s)
                && match r.re.is_match_text(buf) {
                    Some(m) => m,
                    None => {
                        self.note_limit(limited);
                        false
                    }
                }
        })
    }

    /// fail2ban's `findFailure` on one line on its own (`maxlines` 1) with
    /// the server's rule (the first failregex that matches decides). `t`:
    /// the line with its date cut out, ending in `\n`. `cache`: the
    /// connection table, if kept. `detail`: the id as text and the merged
    /// groups are wanted (`fail2xdp test`); without, nothing is allocated
    /// unless a failregex matched and the filter joins connections.
    /// Returns the verdict and whether a regex hit the backtracking limit.
    fn find_single(
        &self,
        t: &str,
        time: Option<Timestamp>,
        mut cache: Option<&mut MlfCache>,
        line_no: u64,
        detail: bool,
    ) -> (Verdict, bool) {
        let mut limited = false;
        // Whether the line is ASCII, found once for every regex.
        let line = Text::new(t);
        if !self.ignore.is_empty()
            && self.ignore.len() + 2 < self.fail.len()
            && self.ignored(line, &mut limited)
        {
            return (Verdict::Ignored, limited);
        }
        let content;
        let mut pre: Option<(Caps<'_>, &Rule)> = None;
        let buf: &str = match &self.pref {
            None => t,
            Some(p) => {
                let quick = match &self.head {
                    Some(h) => {
                        let end = match h.re.match_end_text(line) {
                            // A look-around may be on its path: the head's
                            // own search (it sets no group but markers).
                            End::Unsure => match h.re.search_text(line) {
                                Search::Hit(c) => c.span(0).map_or(End::Unsure, |s| End::At(s.1)),
                                Search::Miss => End::Miss,
                                Search::Limit => End::Unsure,
                            },
                            e => e,
                        };
                        match end {
                            End::Miss => return (Verdict::Missed, limited),
                            End::At(e) if e + 1 < t.len() => Some(&t[e..]),
                            End::At(_) if h.empty_ok => Some(t),
                            _ => None,
                        }
                    }
                    None => None,
                };
                match quick {
                    Some(b) => b,
                    None => {
                        let Some(c) = self.search(p, line, &mut limited) else {
                            return (Verdict::Missed, limited);
                        };
                        let span = self.content.and_then(|i| c.span(i));
                        let b = match span {
                            Some((s, e)) if e > s && e + 1 == t.len() => &t[s..],
                            Some((s, e)) if e > s => {
                                content = format!("{}\n", &t[s..e]);
                                content.as_str()
                            }
                            _ => t,
                        };
                        pre = Some((c, p));
                        b
                    }
                }
            }
        };
        let buf = Text::part_of(buf, line);
        for (idx, rule) in self.fail.iter().enumerate() {
            let Some(c) = self.search(rule, buf, &mut limited) else {
                continue;
            };
            if !self.ignore.is_empty() && self.ignored(buf, &mut limited) {
                return (Verdict::Ignored, limited);
            }
            let simple = !self.mlfid
                && !detail
                && rule.plain()
                && pre.as_ref().is_none_or(|(_, p)| p.plain());
            if simple {
                // The groups as spans: the failregex's where they took
                // part, else the prefregex's.
                let get = |k: &str| -> Option<&str> {
                    let of = |ids: &Ids| match k {
                        "ip4" => ids.ip4,
                        "ip6" => ids.ip6,
                        "dns" => ids.dns,
                        "fid" => ids.fid,
                        _ => ids.cidr,
                    };
                    of(&rule.ids).and_then(|i| c.get(i)).or_else(|| {
                        let (pc, pr) = pre.as_ref()?;
                        of(&pr.ids).and_then(|i| pc.get(i))
                    })
                };
                let Some((id, kind, cidr)) = ident(get) else {
                    return (Verdict::Missed, limited);
                };
                let single = Single {
                    regex: idx,
                    kind,
                    addr: address(kind, id),
                    detail: None,
                    cidr,
                };
                return (Verdict::Failure(single), limited);
            }
            let mut fail = rule.fail(&c);
            if let Some((pc, pr)) = &pre {
                let mut p = pr.fail(pc);
                p.pop("content");
                if !p.groups.is_empty() {
                    fail = p.under(fail);
                }
            }
            let matched = [line_no];
            let mlfid = fail.get("mlfid").map(str::to_string);
            let fail = match (&mlfid, cache.as_deref_mut()) {
                (Some(id), Some(cache)) => {
                    let f = cache.merge(id, fail, &matched, time);
                    if f.truthy("nofail") {
                        return (Verdict::Missed, limited);
                    }
                    f
                }
                (Some(_), None) => {
                    // No table: the line alone, as a fresh connection.
                    let mut scratch = MlfCache::new(1);
                    let f = scratch.merge("", fail, &matched, time);
                    if f.truthy("nofail") {
                        return (Verdict::Missed, limited);
                    }
                    f
                }
                (None, _) => {
                    fail.matches.get_or_insert_with(Vec::new).push(line_no);
                    fail
                }
            };
            let Some((id, kind, cidr)) = ident(|k| fail.get(k)) else {
                // Waiting for the connection's address.
                if let (Some(m), Some(cache)) = (&mlfid, cache.as_deref_mut()) {
                    cache.mark_pending(m);
                }
                return (Verdict::Missed, limited);
            };
            let id = id.to_string();
            let single = Single {
                regex: idx,
                kind,
                addr: address(kind, &id),
                detail: detail.then_some((id, fail)),
                cidr,
            };
            return (Verdict::Failure(single), limited);
        }
        (Verdict::Missed, limited)
    }

    /// fail2ban's `findFailure` over the line buffer `lines` (the newest
    /// last). `cache`: the connection table, if kept; `check_all`: try every
    /// failregex (fail2ban-regex and fail2ban's own sample tests do)
    /// instead of stopping at the first that matches (the server).
    fn find(
        &self,
        lines: &mut Vec<Tuple>,
        time: Option<Timestamp>,
        mut cache: Option<&mut MlfCache>,
        check_all: bool,
    ) -> Outcome {
        let mut out = Outcome::default();
        let org: Vec<Tuple> = lines.clone();
        let mut buf: Option<String> = Some(joined(lines));
        if !self.ignore.is_empty()
            && self.ignore.len() + 2 < self.fail.len()
            && self.ignored(
                Text::new(buf.as_deref().unwrap_or_default()),
                &mut out.limited,
            )
        {
            out.ignored = true;
            return out;
        }
        let mut pre = Fail::default();
        let mut have_pre = false;
        if let Some(p) = &self.pref {
            let b = buf.clone().unwrap_or_default();
            let Some(c) = self.search(p, Text::new(&b), &mut out.limited) else {
                return out;
            };
            pre = p.fail(&c);
            have_pre = !pre.groups.is_empty();
            if let Some(content) = pre.pop("content")
                && !content.is_empty()
            {
                *lines = vec![Tuple {
                    text: content,
                    line: org.last().map_or(0, |t| t.line),
                }];
                buf = None;
            }
            have_pre = have_pre && !pre.groups.is_empty();
        }
        for (idx, rule) in self.fail.iter().enumerate() {
            let b = match &buf {
                Some(b) => b.clone(),
                None => {
                    let j = joined(lines);
                    buf = Some(j.clone());
                    j
                }
            };
            let Some(c) = self.search(rule, Text::new(&b), &mut out.limited) else {
                continue;
            };
            let mut fail = rule.fail(&c);
            let (matched, unmatched) = split_matched(lines, &b, c.span(0).unwrap_or((0, 0)));
            if !self.ignore.is_empty() {
                let ib = if self.maxlines > 1 {
                    joined(&matched)
                } else {
                    b.clone()
                };
                if self.ignored(Text::new(&ib), &mut out.limited) {
                    out.ignored = true;
                    if !check_all || self.maxlines > 1 {
                        *lines = unmatched.clone();
                    }
                    buf = None;
                    if !check_all {
                        break;
                    }
                    continue;
                }
            }
            if !check_all || self.maxlines > 1 {
                *lines = unmatched;
                buf = None;
            }
            if have_pre {
                fail = pre.under(fail);
            }
            let matched_lines: Vec<u64> = matched.iter().map(|t| t.line).collect();
            let mlfid = fail.get("mlfid").map(str::to_string);
            let mut fail = match (&mlfid, cache.as_deref_mut()) {
                (Some(id), Some(cache)) => {
                    let f = cache.merge(id, fail, &matched_lines, time);
                    if f.truthy("nofail") && !check_all {
                        return out;
                    }
                    f
                }
                (Some(_), None) => {
                    // No table: the line alone, as a fresh connection.
                    let mut scratch = MlfCache::new(1);
                    let f = scratch.merge("", fail, &matched_lines, time);
                    if f.truthy("nofail") && !check_all {
                        return out;
                    }
                    f
                }
                (None, _) => {
                    fail.matches
                        .get_or_insert_with(Vec::new)
                        .extend(matched_lines.iter().copied());
                    fail
                }
            };
            let Some((id, kind, cidr)) = ident(|k| fail.get(k)) else {
                // Waiting for the connection's address.
                fail.mlfpending = true;
                if let (Some(m), Some(cache)) = (&mlfid, cache.as_deref_mut()) {
                    cache.mark_pending(m);
                }
                if !check_all {
                    return out;
                }
                continue;
            };
            let id = id.to_string();
            out.failures.push(Found {
                regex: idx,
                id,
                kind,
                cidr,
                fail,
                time,
            });
            if !check_all {
                break;
            }
        }
        out
    }
}

/// The id as an address, for an `ip4`/`ip6` id that reads as one.
fn address(kind: IdKind, id: &str) -> Option<IpAddr> {
    match kind {
        IdKind::Ip4 | IdKind::Ip6 => super::parse_host(id.as_bytes()),
        IdKind::Dns | IdKind::Fid => None,
    }
}

/// A one-line verdict as [`Outcome`] (for [`F2bFilter::check_line`] and
/// `fail2xdp test`).
fn outcome(v: Verdict, limited: bool, time: Option<Timestamp>) -> Outcome {
    let mut o = Outcome {
        limited,
        ..Outcome::default()
    };
    match v {
        Verdict::Failure(s) => {
            let (id, fail) = s.detail.unwrap_or_default();
            o.failures.push(Found {
                regex: s.regex,
                id,
                kind: s.kind,
                cidr: s.cidr,
                fail,
                time,
            });
        }
        Verdict::Ignored => o.ignored = true,
        Verdict::Missed => {}
    }
    o
}

/// The buffer fail2ban's regexes see: each line (date cut out) and `\n`.
fn joined(lines: &[Tuple]) -> String {
    let mut s = String::new();
    for t in lines {
        s.push_str(&t.text);
        s.push('\n');
    }
    s
}

/// The lines a match touches and the others (fail2ban's matched and
/// unmatched tuple lines; `<SKIPLINES>` is not honoured for these).
fn split_matched(lines: &[Tuple], buf: &str, (s, e): (usize, usize)) -> (Vec<Tuple>, Vec<Tuple>) {
    if lines.len() <= 1 {
        return (lines.to_vec(), Vec::new());
    }
    let first = buf[..s.min(buf.len())].matches('\n').count();
    let end = if e > s { e - 1 } else { e };
    let last = buf[..end.min(buf.len())].matches('\n').count();
    let mut matched = Vec::new();
    let mut unmatched = Vec::new();
    for (i, t) in lines.iter().enumerate() {
        if i >= first && i <= last {
            matched.push(t.clone());
        } else {
            unmatched.push(t.clone());
        }
    }
    (matched, unmatched)
}

/// The connection table of a multi-line filter: what earlier lines of a
/// connection (`<F-MLFID>`) said, bounded in entries and age.
#[derive(Debug)]
pub struct MlfCache {
    entries: std::collections::HashMap<String, Entry>,
    /// Insertion order for eviction (oldest first); a key whose entry was
    /// made again later is skipped when its old place comes up.
    order: VecDeque<(u64, String)>,
    seq: u64,
    max: usize,
    /// Entries older than this (log time) are gone; `None`: kept until
    /// the table is full.
    max_age: Option<i64>,
    /// Newest log time seen (unix s).
    latest: i64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// Log time it was made (unix s).
    at: i64,
    fail: Fail,
}

impl MlfCache {
    pub fn new(max: usize) -> MlfCache {
        MlfCache {
            entries: Default::default(),
            order: VecDeque::new(),
            seq: 0,
            max: max.max(1),
            max_age: Some(MLF_MAX_AGE_SECS),
            latest: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn cutoff(&self) -> i64 {
        self.max_age
            .map_or(i64::MIN, |a| self.latest.saturating_sub(a))
    }

    /// The live entry of `id` (an expired one is dropped).
    fn live(&mut self, id: &str) -> Option<&mut Entry> {
        let cutoff = self.cutoff();
        if self.entries.get(id).is_some_and(|e| e.at < cutoff) {
            self.entries.remove(id);
        }
        self.entries.get_mut(id)
    }

    fn insert(&mut self, id: &str, fail: Fail) {
        self.entries.remove(id);
        while self.entries.len() >= self.max {
            let Some((seq, k)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&k).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&k);
            }
        }
        self.seq += 1;
        self.order.push_back((self.seq, id.to_string()));
        self.entries.insert(
            id.to_string(),
            Entry {
                seq: self.seq,
                at: self.latest,
                fail,
            },
        );
        // Places of entries since removed or made again: keep the queue
        // within a small multiple of the table.
        if self.order.len() > 2 * self.max + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(seq, k)| entries.get(k).is_some_and(|e| e.seq == *seq));
        }
    }

    fn mark_pending(&mut self, id: &str) {
        if let Some(e) = self.live(id) {
            e.fail.mlfpending = true;
        }
    }

    /// fail2ban's `_mergeFailure`.
    fn merge(
        &mut self,
        id: &str,
        mut fail: Fail,
        matched: &[u64],
        time: Option<Timestamp>,
    ) -> Fail {
        if let Some(t) = time {
            self.latest = self.latest.max(t.as_second());
        } else if self.latest == i64::MIN {
            self.latest = 0;
        }
        let mut flags = 0u8;
        if fail.truthy("mlfgained") {
            flags |= 8 | 1;
            if !fail.truthy("nofail") {
                let g = fail.get("mlfgained").map(str::to_string);
                fail.set("nofail", g);
            }
        } else if fail.truthy("nofail") {
            flags |= 1;
        }
        if fail.pop("mlfforget").is_some_and(|v| !v.is_empty()) {
            flags |= 2;
        }
        let user = fail.get("user").map(str::to_string);
        let users;
        let cached = self.live(id).map(|e| e.fail.clone());
        let mut fail = match cached {
            Some(mut cached) => {
                users = update_users(&mut cached, user.as_deref());
                if cached.pop("nofail").is_some() {
                    flags |= 4;
                }
                if cached.pop("mlfgained").is_some() {
                    flags |= 4;
                }
                if flags & 8 != 0 {
                    cached.mlfpending = false;
                }
                if flags & 4 == 0 && !cached.mlfpending {
                    cached.matches = None;
                }
                for (k, v) in &fail.groups {
                    if v.is_some() {
                        cached.set(k, v.clone());
                    }
                }
                if fail.matches.is_some() {
                    cached.matches = fail.matches.clone();
                }
                if flags & 2 != 0 {
                    self.entries.remove(id);
                }
                cached
            }
            None if flags & 2 == 0 => {
                users = update_users(&mut fail, user.as_deref());
                self.insert(id, fail.clone());
                fail
            }
            None => {
                users = fail.users.clone();
                fail
            }
        };
        if std::mem::take(&mut fail.mlfpending) || users.is_some_and(|u| u.len() > 1) {
            fail.pop("nofail");
            fail.pop("mlfgained");
            flags &= !(8 | 1);
        }
        if flags & 1 == 0 {
            let mut m = fail.nofail_matches.take().unwrap_or_default();
            m.extend(fail.matches.take().unwrap_or_default());
            if flags & 8 == 0 {
                m.extend_from_slice(matched);
            }
            fail.matches = Some(m);
        } else if flags & 3 == 1 {
            fail.nofail_matches
                .get_or_insert_with(Vec::new)
                .extend_from_slice(matched);
        }
        // The table holds what the next line of the connection merges with.
        if flags & 2 == 0
            && let Some(e) = self.live(id)
        {
            e.fail = fail.clone();
        }
        fail
    }
}

fn update_users(fail: &mut Fail, user: Option<&str>) -> Option<BTreeSet<String>> {
    match user.filter(|u| !u.is_empty()) {
        Some(u) => {
            let users = fail.users.get_or_insert_with(BTreeSet::new);
            users.insert(u.to_string());
            Some(users.clone())
        }
        None => fail.users.clone(),
    }
}

/// What a multi-line filter keeps between the lines of one source: the
/// line buffer (`maxlines`) and the connection table (`<F-MLFID>`), so
/// failures spread over several lines of a connection are joined as
/// fail2ban joins them. Memory is bounded: `maxlines` lines and
/// [`MLF_MAX_ENTRIES`] connections. It holds no reference to the filter:
/// the agent's match stage keeps one per (jail, filter) and source across
/// configuration reloads.
#[derive(Debug)]
pub struct MlfState {
    lines: Vec<Tuple>,
    cache: MlfCache,
    /// Lines fed so far (their numbers in a failure's matches).
    line_no: u64,
}

impl Default for MlfState {
    fn default() -> Self {
        Self::new()
    }
}

impl MlfState {
    pub fn new() -> Self {
        MlfState {
            lines: Vec::new(),
            cache: MlfCache::new(MLF_MAX_ENTRIES),
            line_no: 0,
        }
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.cache.len()
    }

    /// The next line (date cut out, no newline) through `filter`.
    fn feed(
        &mut self,
        filter: &F2bFilter,
        text: String,
        time: Option<Timestamp>,
        check_all: bool,
    ) -> Outcome {
        self.line_no += 1;
        self.feed_numbered(filter, text, time, self.line_no, check_all)
    }

    fn feed_numbered(
        &mut self,
        filter: &F2bFilter,
        mut text: String,
        time: Option<Timestamp>,
        line_no: u64,
        check_all: bool,
    ) -> Outcome {
        let f = filter;
        if f.maxlines == 1 && !check_all {
            text.push('\n');
            let cache = f.mlfid.then_some(&mut self.cache);
            let (v, limited) = f.find_single(&text, time, cache, line_no, true);
            return outcome(v, limited, time);
        }
        let t = Tuple {
            text,
            line: line_no,
        };
        if f.maxlines > 1 {
            self.lines.push(t);
            let extra = self.lines.len().saturating_sub(f.maxlines);
            self.lines.drain(..extra);
        } else {
            self.lines = vec![t];
        }
        let cache = f.mlfid.then_some(&mut self.cache);
        f.find(&mut self.lines, time, cache, check_all)
    }
}

/// A multi-line filter's state for one source with the filter it serves,
/// as `fail2xdp test` drives it (see [`MlfState`]).
pub struct Correlator<'f> {
    filter: &'f F2bFilter,
    state: MlfState,
    check_all: bool,
}

impl<'f> Correlator<'f> {
    /// `check_all`: every failregex is tried on each line (as
    /// fail2ban-regex does); else the first that matches decides (as the
    /// fail2ban server does).
    pub fn new(filter: &'f F2bFilter, check_all: bool) -> Self {
        Correlator {
            filter,
            state: MlfState::new(),
            check_all,
        }
    }

    /// Connections are not aged out on the log's clock (a replay of sample
    /// lines with unrelated dates, as `fail2xdp test` runs them; fail2ban
    /// ages them on the wall clock, which such a run does not outlast).
    pub fn without_aging(mut self) -> Self {
        self.state.cache.max_age = None;
        self
    }

    /// The next line of the source (its 1-based number `line_no`).
    pub fn feed(&mut self, line: &str, line_no: u64, now: Timestamp, tz: &TimeZone) -> Outcome {
        let (text, time) = self.filter.split(line, Some(now), tz);
        self.state
            .feed_numbered(self.filter, text, time, line_no, self.check_all)
    }

    /// A line whose time is known (a journal entry): no date is looked for.
    pub fn feed_timed(&mut self, line: &str, line_no: u64, time: Timestamp) -> Outcome {
        self.state.feed_numbered(
            self.filter,
            line.to_string(),
            Some(time),
            line_no,
            self.check_all,
        )
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.state.connections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fail2ban::filterconf::Pattern;

    fn spec(pref: Option<&str>, fail: &[&str], maxlines: usize) -> FilterFile {
        FilterFile {
            name: "t".into(),
            path: Default::default(),
            prefregex: pref.map(|p| Pattern {
                text: p.into(),
                origin: None,
            }),
            failregex: fail
                .iter()
                .map(|f| Pattern {
                    text: f.to_string(),
                    origin: None,
                })
                .collect(),
            ignoreregex: Vec::new(),
            datepattern: Some("{^LN-BEG}".into()),
            maxlines,
            journalmatch: Vec::new(),
            usedns: None,
            combined: Vec::new(),
            warnings: Vec::new(),
            missing_includes: Vec::new(),
        }
    }

    fn tz() -> TimeZone {
        TimeZone::get("Europe/Zurich").unwrap()
    }

    fn now() -> Timestamp {
        "2005-08-14T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn content_and_prefix_groups() {
        let s = spec(
            Some(r"^\s*\S+ app: <F-CONTENT>.+?</F-CONTENT>(?:, user=<F-USER>\S+</F-USER>)?\s*$"),
            &[r"^fail from <HOST>$"],
            1,
        );
        let f = F2bFilter::compile(&s, None).unwrap();
        let o = f.check_line(
            "Aug 14 10:00:00 mx app: fail from 192.0.2.1, user=bob",
            Some(now()),
            &tz(),
        );
        assert_eq!(o.failures.len(), 1);
        let x = &o.failures[0];
        assert_eq!((x.id.as_str(), x.kind), ("192.0.2.1", IdKind::Ip4));
        assert_eq!(x.fail.get("user"), Some("bob"));
        assert!(x.time.is_some());
        // The failregex sees only the content.
        let o = f.check_line(
            "Aug 14 10:00:00 mx app: xfail from 192.0.2.1",
            Some(now()),
            &tz(),
        );
        assert!(o.failures.is_empty());
        let o = f.check_line(
            "Aug 14 10:00:00 mx app: fail from bad.example.com",
            Some(now()),
            &tz(),
        );
        assert_eq!(o.failures[0].kind, IdKind::Dns);
    }

    #[test]
    fn connections_join_lines() {
        let s = spec(
            Some(r"^\s*\S+ app\[<F-MLFID>\d+</F-MLFID>\]: <F-CONTENT>.+</F-CONTENT>$"),
            &[
                r"^<F-NOFAIL>user <F-USER>\S+</F-USER> tried</F-NOFAIL>$",
                r"^rejected from <ADDR>$",
                r"^<F-MLFFORGET>closed</F-MLFFORGET>$",
            ],
            1,
        );
        let f = F2bFilter::compile(&s, None).unwrap();
        assert!(f.mlfid);
        let mut c = Correlator::new(&f, false);
        let l = |n: u32, m: &str| format!("Aug 14 10:00:0{n} mx app[7]: {m}");
        assert!(
            c.feed(&l(1, "user alice tried"), 1, now(), &tz())
                .failures
                .is_empty()
        );
        assert!(
            c.feed(&l(2, "user bob tried"), 2, now(), &tz())
                .failures
                .is_empty()
        );
        let o = c.feed(&l(3, "rejected from 192.0.2.9"), 3, now(), &tz());
        assert_eq!(o.failures.len(), 1);
        let x = &o.failures[0];
        assert_eq!(x.id, "192.0.2.9");
        assert_eq!(x.fail.get("user"), Some("bob"));
        assert_eq!(
            x.fail.users.as_ref().unwrap().iter().collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(c.connections(), 1);
        c.feed(&l(4, "closed"), 4, now(), &tz());
        assert_eq!(c.connections(), 0);
    }

    #[test]
    fn the_connection_table_is_bounded() {
        let s = spec(
            Some(r"^\s*\S+ app\[<F-MLFID>\d+</F-MLFID>\]: <F-CONTENT>.+</F-CONTENT>$"),
            &[r"^<F-NOFAIL>hello</F-NOFAIL>$", r"^from <ADDR>$"],
            1,
        );
        let f = F2bFilter::compile(&s, None).unwrap();
        let mut c = Correlator::new(&f, false);
        for i in 0..(MLF_MAX_ENTRIES as u64 + 500) {
            c.feed(
                &format!("Aug 14 10:00:00 mx app[{i}]: hello"),
                i + 1,
                now(),
                &tz(),
            );
        }
        assert_eq!(c.connections(), MLF_MAX_ENTRIES);
    }

    /// The agent's fast paths (a prefregex head with look-arounds on its
    /// path, whose end its own search finds) answer as the reference.
    #[test]
    fn fast_paths_agree_with_the_reference() {
        let s = spec(
            Some(r"^\s*\S+ (?:app(?!x)|ap)\w*(?<=p): <F-CONTENT>.+</F-CONTENT>$"),
            &[r"^fail from <HOST>$"],
            1,
        );
        let fast = F2bFilter::compile(&s, None).unwrap();
        let plain = F2bFilter::compile_plain(&s, None).unwrap();
        assert!(fast.head.is_some());
        let mut failures = 0;
        for l in [
            "mx app: fail from 192.0.2.1",
            "mx appx: fail from 192.0.2.2",
            "mx apx: fail from 192.0.2.3",
            "mx app: xfail from 192.0.2.4",
            "mx ap: fail from 192.0.2.5",
            "mx apq: fail from 192.0.2.6",
        ] {
            let line = format!("Aug 14 10:00:00 {l}\n");
            let d = Dated::File {
                stamp: None,
                reference: now(),
            };
            let a = fast.agent_line(&line, d, None, &tz());
            let b = plain.agent_line(&line, d, None, &tz());
            assert_eq!((a.verdict, a.time), (b.verdict, b.time), "{l}");
            failures += usize::from(matches!(a.verdict, AgentVerdict::Failure(_)));
        }
        assert_eq!(failures, 2);
    }

    /// fail2ban's own postfix filter in aggressive mode, look-arounds in its
    /// prefregex and in a failregex: the agent's fast paths give the plain
    /// reference's answers on the kinds of lines it reads and on near
    /// misses made from them (some with non-ASCII text), and find the
    /// prefregex head's end without a search for captures on the common
    /// ones.
    #[test]
    fn postfix_aggressive_fast_paths_agree_with_the_reference() {
        let path = std::path::Path::new("/etc/fail2ban/filter.d/postfix.conf");
        assert!(
            path.is_file(),
            "{} is missing: install Debian's fail2ban (cargo xtask installs it)",
            path.display()
        );
        let spec = crate::fail2ban::filterconf::FilterReader::open_file(
            path,
            vec![("mode".into(), "aggressive".into())],
        )
        .and_then(|r| r.resolve(&crate::fail2ban::ini::Vars::new(), "auto"))
        .unwrap();
        let common = [
            "smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: authentication failure",
            "smtpd[1]: warning: unknown[192.0.2.2]: SASL PLAIN authentication failed: Connection lost to authentication server",
            "smtpd[1]: warning: h.example[192.0.2.3]: SASL login authentication failed: Invalid authentication mechanism",
            "smtpd[1]: lost connection after AUTH from unknown[192.0.2.4]",
            "smtpd[1]: lost connection after DATA from unknown[192.0.2.5]",
            "smtpd[1]: lost connection after DATA (0 bytes) from unknown[192.0.2.6]",
            "submission/smtpd[1]: disconnect from unknown[192.0.2.7] ehlo=1 auth=0/1 quit=1 commands=2/3",
            "smtpd[1]: disconnect from unknown[192.0.2.8] ehlo=1 quit=1 commands=2",
            "smtpd[1]: disconnect from unknown[192.0.2.9] ehlo=1 auth=0/12 commands=2/3",
            "smtpd[1]: disconnect from unknown[192.0.2.10] ehlo=1 auth=1/1 commands=2/3",
            "smtpd[1]: disconnect from unknown[2001:db8::1] auth=0/1",
            "smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.11]: 554 5.7.1 <a@example.com>: Relay access denied; from=<b@example.net> to=<a@example.com> proto=ESMTP helo=<x>",
            "smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.12]: 550 5.1.1 <n@example.com>: Recipient address rejected: User unknown in virtual mailbox table; from=<t@example.net> to=<n@example.com>",
            "smtpd[1]: connect from unknown[192.0.2.13]",
            "smtpd[1]: improper command pipelining after CONNECT from unknown[192.0.2.14]: x",
            "smtpd[1]: too many errors after RCPT from unknown[192.0.2.15]",
            "postscreen[1]: PREGREET 11 after 0.1 from [192.0.2.16]:1234: EHLO x",
            "postscreen[1]: HANGUP after 0.5 from [192.0.2.17]:1234 in tests after SMTP handshake",
            "postscreen[1]: COMMAND COUNT LIMIT from [192.0.2.18]:15592 after RCPT",
            "qmgr[1]: 46C3114D2CC: from=<contact@example.com>, size=113771, nrcpt=1 (queue active)",
        ];
        let odd = [
            // The literal before a look-around twice, the look-around
            // holding after one and failing after the other.
            "smtpd[1]: lost connection after DATA lost connection after AUTH from unknown[192.0.2.19]",
            "smtpd[1]: disconnect disconnect from unknown[192.0.2.20] auth=0/1",
            "smtpd[1]: disconnect from x[192.0.2.21] auth=0/0 disconnect from y[192.0.2.22] auth=0/3",
            // Non-ASCII: Python's \d, \w and \s are Unicode.
            "smtpd[1]: warning: \u{fc}nknown[192.0.2.23]: SASL LOGIN authentication failed: x",
            "smtpd[1]: disconnect from unknown[192.0.2.24] auth=0/\u{661}\u{662}",
            "smtpd[1]: disconnect from unknown[192.0.2.25] auth=0/\u{661}",
            "smtpd[1]:\u{a0}lost connection after AUTH from unknown[192.0.2.26]",
            "smtpd[1]: lost connection after \u{212a}EY from unknown[192.0.2.27]",
        ];
        let tokens = [
            " ",
            "x",
            "1",
            "0",
            "/",
            "[",
            "]",
            ":",
            "DATA",
            " DATA",
            "from ",
            " from x",
            " auth=0/",
            " k=1",
            "disconnect",
            "lost connection after",
            "SASL ",
            "warning:",
            "\u{e9}",
            "\u{663}",
            "\u{a0}",
        ];
        let mut below = crate::testrng::below(0xf2b0);
        let mut texts: Vec<String> = common.iter().chain(&odd).map(|m| m.to_string()).collect();
        for m in common.iter().chain(&odd) {
            for _ in 0..60 {
                let mut t = m.to_string();
                for _ in 0..1 + below(3) {
                    let mut at = below(t.len() as u64 + 1) as usize;
                    while !t.is_char_boundary(at) {
                        at -= 1;
                    }
                    match below(3) {
                        0 if at < t.len() => {
                            t.remove(at);
                        }
                        _ => t.insert_str(at, tokens[below(tokens.len() as u64) as usize]),
                    }
                }
                texts.push(t);
            }
        }
        let d = Dated::File {
            stamp: None,
            reference: now(),
        };
        for usedns in ["no", "warn"] {
            let fast = F2bFilter::compile(&spec, Some(usedns)).unwrap();
            let plain = F2bFilter::compile_plain(&spec, Some(usedns)).unwrap();
            let head = fast.head.as_ref().expect("a prefregex head");
            let mut failures = 0;
            for (i, m) in texts.iter().enumerate() {
                let line = format!("Aug 14 10:00:00 mx1 postfix/{m}\n");
                let a = fast.agent_line(&line, d, None, &tz());
                let b = plain.agent_line(&line, d, None, &tz());
                assert_eq!(
                    (a.verdict, a.time),
                    (b.verdict, b.time),
                    "{usedns}: {line:?}"
                );
                assert!(!a.limited && !b.limited, "{line:?}");
                failures += usize::from(matches!(a.verdict, AgentVerdict::Failure(_)));
                if i < common.len() {
                    assert_ne!(head.re.match_end(&line[15..]), End::Unsure, "{line:?}");
                }
            }
            assert!(failures > 150, "{failures}");
        }
    }
}

#[cfg(test)]
mod costs {
    use super::*;

    /// What each step of a one-line filter costs on the benchmark's log.
    /// Not a test: `F2X_COST_LOG=... cargo test --release -p fail2xdp --lib f2b_costs -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement"]
    fn f2b_costs() {
        let path = std::env::var("F2X_COST_LOG").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/bench-data/maillog-1000000-s42.log"
            )
            .into()
        });
        let data = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = data
            .lines()
            .take(200_000)
            .map(|l| format!("{}\n", &l[15..]))
            .collect();
        let spec = crate::fail2ban::filterconf::FilterReader::open_file(
            std::path::Path::new("/etc/fail2ban/filter.d/postfix.conf"),
            vec![("mode".into(), "aggressive".into())],
        )
        .and_then(|r| r.resolve(&crate::fail2ban::ini::Vars::new(), "auto"))
        .unwrap();
        let f = F2bFilter::compile(&spec, Some("no")).unwrap();
        let h = f.head.as_ref().unwrap();
        let t0 = std::time::Instant::now();
        let mut ends = Vec::new();
        for l in &lines {
            ends.push(h.re.match_end(l));
        }
        let t1 = t0.elapsed();
        let unsure = ends.iter().filter(|e| **e == End::Unsure).count();
        let at = ends.iter().filter(|e| matches!(e, End::At(_))).count();
        let t0 = std::time::Instant::now();
        let mut contents = Vec::new();
        for (l, e) in lines.iter().zip(&ends) {
            match e {
                End::At(e) => contents.push(&l[*e..]),
                End::Unsure => {
                    if let Search::Hit(c) = h.re.search(l) {
                        contents.push(&l[c.span(0).unwrap().1..]);
                    }
                }
                End::Miss => {}
            }
        }
        let t2 = t0.elapsed();
        eprintln!(
            "{} lines: head end {:?} ({at} at, {unsure} unsure), unsure searches {:?}, {} contents",
            lines.len(),
            t1,
            t2,
            contents.len()
        );
        for (i, r) in f.fail.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let mut hits = 0;
            for c in &contents {
                if let Search::Hit(_) = r.re.search(c) {
                    hits += 1;
                }
            }
            let t1 = t0.elapsed();
            let t0 = std::time::Instant::now();
            let (mut gated, mut passed) = (0, 0);
            for c in &contents {
                if r.may_match(c) {
                    passed += 1;
                    if let Search::Hit(_) = r.re.search(c) {
                        gated += 1;
                    }
                }
            }
            eprintln!(
                "failregex {i}: {t1:?}, {hits} hits, marked {}; behind its literals {:?}, {passed} searched, {gated} hits",
                r.re.has_marked_form(),
                t0.elapsed(),
            );
            let Ok(rx) = regex::Regex::new(r.re.rust()) else {
                continue;
            };
            let t0 = std::time::Instant::now();
            let mut hits = 0;
            for c in &contents {
                if rx.is_match(c) {
                    hits += 1;
                }
            }
            let t1 = t0.elapsed();
            let t0 = std::time::Instant::now();
            let mut locs = rx.capture_locations();
            for c in &contents {
                if rx.captures_read(&mut locs, c).is_some() {
                    hits += 1;
                }
            }
            eprintln!(
                "   regex is_match {:?}, captures_read {:?} {hits}: {}",
                t1,
                t0.elapsed(),
                r.re.rust()
            );
        }
        let t0 = std::time::Instant::now();
        let mut n = 0;
        for l in &lines {
            if let (Verdict::Failure(_), _) = f.find_single(l, None, None, 0, false) {
                n += 1;
            }
        }
        eprintln!("find_single: {:?}, {n} failures", t0.elapsed());
    }
}
