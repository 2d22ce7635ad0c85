//! Failregex engine: turns a log line into a failure (host + evidence).
//!
//! A filter is `prefregex` (optional, the part every line of the daemon
//! shares, with `<F-CONTENT>` marking the message), a list of `failregex`
//! and a list of `ignoreregex`. Patterns use the `regex` crate, so matching
//! is linear in the line length whatever the pattern or the line; the
//! constructs it lacks (look-around, backreferences) are config errors.
//!
//! Per line: skip the timestamp, look for the literals the failregexes
//! require (one SIMD substring scan; most lines stop here without
//! allocating), then run the candidate regexes with captures.
mod builtin;
mod cache;
mod ends;
pub mod engine;
pub mod f2b;
mod header;
mod ip4;
mod ip6;
mod pattern;
mod seq;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use f2b::F2bFilter;
use header::Header;
pub use pattern::{IP4, IP6};
use seq::Seq;

/// Patterns beyond this compiled size are config errors rather than a
/// memory surprise.
const REGEX_SIZE_LIMIT: usize = 8 << 20;
/// Shorter required literals reject too few lines to be worth a scan.
const MIN_LITERAL: usize = 3;
/// Up to this many distinct literals are searched one by one.
const FEW_LITERALS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error(
        "filter {filter}: {key}[{index}]: {construct} is not supported (the regex engine runs in linear time)"
    )]
    Unsupported {
        filter: String,
        key: &'static str,
        index: usize,
        construct: &'static str,
    },
    #[error("filter {filter}: {key}[{index}]: {message}")]
    Regex {
        filter: String,
        key: &'static str,
        index: usize,
        message: String,
    },
    #[error("filter {filter}: failregex[{index}] has no <HOST> (or <ADDR>/<IP4>/<IP6>)")]
    NoHost { filter: String, index: usize },
    #[error("filter {filter}: option <{option}> expands into itself")]
    RecursiveOption { filter: String, option: String },
    #[error("filter {filter}: prefregex: {message}")]
    Prefregex { filter: String, message: String },
    #[error("filter {filter}: no failregex")]
    Empty { filter: String },
}

/// A filter definition as written in TOML (our own format, see
/// `builtin/*.toml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDef {
    /// Defaults to the file stem.
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub prefregex: Option<String>,
    #[serde(default)]
    pub failregex: Vec<String>,
    #[serde(default)]
    pub ignoreregex: Vec<String>,
    /// Values for `<name>` tags in the patterns; a jail may override them.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// One failure found in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub host: IpAddr,
    /// Named captures (user, mechanism, ...), kept as evidence.
    pub captures: Vec<(String, String)>,
    /// Which failregex matched (index into the filter's list).
    pub regex_index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineMatch {
    Failure(Hit),
    /// A failregex matched but an ignoreregex did too.
    Ignored,
    Missed,
}

struct Ignore {
    regex: Regex,
    literals: Vec<memmem::Finder<'static>>,
}

struct Rule {
    regex: Regex,
    /// Text as written, for `fail2xdp test`.
    source: String,
    /// The longest literal every match contains (feeds the prefilter).
    literal: Option<memmem::Finder<'static>>,
    /// The required literals looked for before the rule runs: all of them
    /// for a regex; for a sequence (which rejects a line about as fast as
    /// a literal search) only those that no other rule of the filter has,
    /// the ones that tell its lines from theirs.
    screen: Vec<memmem::Finder<'static>>,
    /// Capture indexes of the host groups, in pattern order.
    host_groups: Vec<usize>,
    /// (capture index, name) of the evidence groups.
    evidence: Vec<(usize, String)>,
    /// The direct matcher, when the pattern is a plain sequence (same
    /// answers as `regex`, several times faster).
    seq: Option<Seq>,
}

/// Most capture slots a sequence match keeps on the stack (group 0 and
/// seven more; a pattern with more groups keeps the regex).
const SEQ_SLOTS: usize = 16;

/// The groups of one match, from the regex or the sequence matcher.
enum Spans<'h> {
    Regex(regex::bytes::Captures<'h>),
    Seq(&'h [u8], [Option<usize>; SEQ_SLOTS]),
}

impl<'h> Spans<'h> {
    fn get(&self, i: usize) -> Option<&'h [u8]> {
        match self {
            Spans::Regex(c) => c.get(i).map(|m| m.as_bytes()),
            Spans::Seq(hay, slots) => {
                let (s, e) = (*slots.get(2 * i)?, *slots.get(2 * i + 1)?);
                Some(&hay[s?..e?])
            }
        }
    }
}

impl Rule {
    fn captures<'h>(&self, hay: &'h [u8]) -> Option<Spans<'h>> {
        match &self.seq {
            Some(seq) => {
                let mut slots = [None; SEQ_SLOTS];
                seq.captures(hay, &mut slots[..seq.slots()])
                    .then_some(Spans::Seq(hay, slots))
            }
            None => self.regex.captures(hay).map(Spans::Regex),
        }
    }
}

/// Rejects lines that contain none of the rules' literals.
enum Prefilter {
    /// Some rule has no usable literal: every line is a candidate.
    None,
    /// memmem's SIMD search beats a one-pattern automaton.
    One(Box<memmem::Finder<'static>>),
    /// A few SIMD substring scans beat an automaton whose own prefilter
    /// keys on a byte common in mail logs.
    Few(Vec<memmem::Finder<'static>>),
    Many(AhoCorasick),
}

impl Prefilter {
    fn may_match(&self, hay: &[u8]) -> bool {
        match self {
            Prefilter::None => true,
            Prefilter::One(f) => f.find(hay).is_some(),
            Prefilter::Few(fs) => fs.iter().any(|f| f.find(hay).is_some()),
            Prefilter::Many(ac) => ac.is_match(hay),
        }
    }

    /// Calls `f` with the start of every line of `text` (lines end with
    /// `\n`) that contains a literal, once per line and in order for each
    /// literal; with several literals a line may come once per literal.
    fn line_starts(&self, text: &[u8], f: &mut impl FnMut(usize)) {
        match self {
            Prefilter::None => {
                if !text.is_empty() {
                    f(0);
                }
                for nl in memchr::memchr_iter(b'\n', text) {
                    if nl + 1 < text.len() {
                        f(nl + 1);
                    }
                }
            }
            Prefilter::One(fi) => hit_lines(text, |at| find_from(fi, text, at), f),
            Prefilter::Few(fs) => {
                for fi in fs {
                    hit_lines(text, |at| find_from(fi, text, at), f);
                }
            }
            Prefilter::Many(ac) => hit_lines(
                text,
                |at| {
                    ac.find(aho_corasick::Input::new(text).range(at..))
                        .map(|m| m.start())
                },
                f,
            ),
        }
    }
}

/// The first match of `fi` in `text` at or after `at`.
fn find_from(fi: &memmem::Finder<'_>, text: &[u8], at: usize) -> Option<usize> {
    fi.find(&text[at..]).map(|i| at + i)
}

/// Line starts of the matches `find(from)` reports (the first match at or
/// after `from`), skipping to the next line after each.
fn hit_lines(text: &[u8], mut find: impl FnMut(usize) -> Option<usize>, f: &mut impl FnMut(usize)) {
    let mut at = 0;
    while at < text.len() {
        let Some(p) = find(at) else { break };
        f(memchr::memrchr(b'\n', &text[at..p]).map_or(at, |i| at + i + 1));
        at = memchr::memchr(b'\n', &text[p..]).map_or(text.len(), |i| p + i + 1);
    }
}

/// A compiled filter. Cheap to share between threads (`Send + Sync`).
pub struct Filter {
    name: String,
    description: String,
    rules: Vec<Rule>,
    ignore: Vec<Ignore>,
    /// A prefregex without `<F-CONTENT>`: every failure line must match it.
    gate: Option<Regex>,
    /// A prefregex whose `<F-CONTENT>` runs to the end of the line and that
    /// captures nothing: its match end is where the content starts, and the
    /// rules run on the content alone (a DFA scan over the header instead
    /// of captures over the whole line).
    header: Option<Header>,
    /// Literals of all rules; `None` when some rule has none (every line is
    /// a candidate then).
    prefilter: Prefilter,
    /// A fail2ban filter (filter.d), run as fail2ban runs it; `rules`,
    /// `ignore`, `gate` and `header` are empty then.
    f2b: Option<Box<F2bFilter>>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("name", &self.name)
            .field("failregex", &self.rules.len())
            .field("ignoreregex", &self.ignore.len())
            .finish()
    }
}

impl Filter {
    /// A built-in mail filter by name (see [`Filter::builtin_names`]).
    pub fn builtin(name: &str) -> Option<Filter> {
        Self::builtin_with_options(name, &BTreeMap::new())
            .ok()
            .flatten()
    }

    /// A built-in filter with some of its options replaced.
    pub fn builtin_with_options(
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Option<Filter>, FilterError> {
        let Some(text) = builtin::source(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(format!("<builtin>/{name}.toml"));
        let mut def = parse_def(text, &path)?;
        def.name.get_or_insert_with(|| name.to_string());
        def.options
            .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self::compile(def).map(Some)
    }

    pub fn builtin_names() -> &'static [&'static str] {
        builtin::NAMES
    }

    /// A filter file in our TOML format; the name defaults to the file stem.
    pub fn from_toml_file(path: &Path) -> Result<Filter, FilterError> {
        Self::from_toml_file_with_options(path, &BTreeMap::new())
    }

    pub fn from_toml_file_with_options(
        path: &Path,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Filter, FilterError> {
        let text = std::fs::read_to_string(path).map_err(|source| FilterError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut def = parse_def(&text, path)?;
        if def.name.is_none() {
            def.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        def.options
            .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self::compile(def)
    }

    /// Compiles a definition; every pattern error names the filter, the key
    /// and the index.
    pub fn compile(def: FilterDef) -> Result<Filter, FilterError> {
        let name = def.name.clone().unwrap_or_else(|| "unnamed".to_string());
        if def.failregex.is_empty() {
            return Err(FilterError::Empty { filter: name });
        }
        let expand = |pat: &str| -> Result<String, FilterError> {
            pattern::Expander::new(&def.options).expand(pat).map_err(
                |pattern::ExpandError::Recursive(option)| FilterError::RecursiveOption {
                    filter: name.clone(),
                    option,
                },
            )
        };
        let check = |key: &'static str, index: usize, pat: &str| -> Result<(), FilterError> {
            match pattern::unsupported_construct(pat) {
                Some(construct) => Err(FilterError::Unsupported {
                    filter: name.clone(),
                    key,
                    index,
                    construct,
                }),
                None => Ok(()),
            }
        };

        // The prefregex either wraps every pattern (with <F-CONTENT>) or is
        // a separate gate.
        let mut wrap: Option<(String, String)> = None;
        let mut gate = None;
        let mut header = None;
        if let Some(p) = &def.prefregex {
            let p = expand(p)?;
            check("prefregex", 0, &p)?;
            match split_content(&p) {
                Some((pre, inner, post)) if is_header(pre, inner, post) => {
                    header = Some(Header::new(build(&name, "prefregex", 0, pre)?));
                }
                Some((pre, _, post)) => wrap = Some((pre.to_string(), post.to_string())),
                None if p.contains("F-CONTENT>") => {
                    return Err(FilterError::Prefregex {
                        filter: name,
                        message: "<F-CONTENT> must appear once, before </F-CONTENT>".into(),
                    });
                }
                None => gate = Some(build(&name, "prefregex", 0, &p)?),
            }
        }
        let full = |pat: &str| match &wrap {
            Some((pre, post)) => combine(pre, pat, post),
            None => pat.to_string(),
        };

        let mut rules = Vec::with_capacity(def.failregex.len());
        for (index, src) in def.failregex.iter().enumerate() {
            let body = expand(src)?;
            check("failregex", index, &body)?;
            let text = full(&body);
            let regex = build(&name, "failregex", index, &text)?;
            let mut host_groups = Vec::new();
            let mut evidence = Vec::new();
            for (i, n) in regex.capture_names().enumerate() {
                match n {
                    Some(n) if n.starts_with(pattern::HOST_GROUP) => host_groups.push(i),
                    Some(n) if !n.starts_with("__") => evidence.push((i, n.to_string())),
                    _ => {}
                }
            }
            if host_groups.is_empty() {
                return Err(FilterError::NoHost {
                    filter: name,
                    index,
                });
            }
            // The literals come from the failregex alone: the prefix part
            // is on nearly every line of the daemon and would not filter.
            let literals = required_literals(&body);
            let literal = literals.first().cloned();
            let seq = Seq::new(&text).filter(|q| q.slots() <= SEQ_SLOTS);
            rules.push(Rule {
                regex,
                source: src.clone(),
                literal,
                screen: literals,
                host_groups,
                evidence,
                seq,
            });
        }

        // A sequence rule keeps only the screening literals it alone has.
        let needles: Vec<Vec<Vec<u8>>> = rules
            .iter()
            .map(|r| r.screen.iter().map(|l| l.needle().to_vec()).collect())
            .collect();
        for (i, r) in rules.iter_mut().enumerate() {
            if r.seq.is_some() {
                r.screen.retain(|l| {
                    !needles
                        .iter()
                        .enumerate()
                        .any(|(j, other)| j != i && other.iter().any(|o| o == l.needle()))
                });
            }
        }

        let mut ignore = Vec::with_capacity(def.ignoreregex.len());
        for (index, src) in def.ignoreregex.iter().enumerate() {
            let body = expand(src)?;
            check("ignoreregex", index, &body)?;
            ignore.push(Ignore {
                regex: build(&name, "ignoreregex", index, &full(&body))?,
                literals: required_literals(&body),
            });
        }

        let literals: Option<Vec<&[u8]>> = rules
            .iter()
            .map(|r| r.literal.as_ref().map(|f| f.needle().trim_ascii()))
            .collect();
        let prefilter = match literals {
            Some(lits) => literal_prefilter(lits, &name)?,
            None => Prefilter::None,
        };

        Ok(Filter {
            name,
            description: def.description,
            rules,
            ignore,
            gate,
            header,
            prefilter,
            f2b: None,
        })
    }

    /// A fail2ban filter file as read by [`crate::fail2ban`], with the
    /// jail's `usedns`. It answers the same calls as a native filter:
    /// `check_*` cut the date as fail2ban does and run its prefregex,
    /// failregexes and ignoreregexes (the first failregex that matches
    /// decides, as in fail2ban's server). A failure whose id is not an
    /// address (a host name, an `<F-ID>`) is counted
    /// ([`Filter::not_address_failures`]) and is no failure here: it is
    /// never banned. Multi-line filters (`<F-MLFID>`, `maxlines`) need a
    /// [`f2b::Correlator`] per source; these calls see each line alone.
    pub fn from_fail2ban(
        name: &str,
        spec: &crate::fail2ban::filterconf::FilterFile,
        usedns: Option<&str>,
    ) -> Result<Filter, FilterError> {
        let f = F2bFilter::compile(spec, usedns).map_err(|e| FilterError::Regex {
            filter: name.to_string(),
            key: e.key,
            index: e.index,
            message: e.message,
        })?;
        if f.failregex_count() == 0 {
            return Err(FilterError::Empty {
                filter: name.to_string(),
            });
        }
        // A line a failregex matches holds the regex's literals, but only
        // after the date was cut out: a literal may run across the cut,
        // which at the line start leaves at most two non-word characters
        // before it. Later cuts, or several lines at once: no prefilter.
        let prefilter = if f.dates_at_line_start() && f.maxlines == 1 {
            let lits: Option<Vec<Vec<u8>>> = f
                .screens()
                .iter()
                .map(|p| {
                    required_literals(p).first().map(|l| {
                        let n = l.needle();
                        let skip = n
                            .iter()
                            .take(2)
                            .take_while(|b| {
                                !(b.is_ascii_alphanumeric() || **b == b'_' || **b >= 0x80)
                            })
                            .count();
                        n[skip..].to_vec()
                    })
                })
                .collect();
            match lits {
                Some(l) => literal_prefilter(l.iter().map(Vec::as_slice).collect(), name)?,
                None => Prefilter::None,
            }
        } else {
            Prefilter::None
        };
        Ok(Filter {
            name: name.to_string(),
            description: format!("fail2ban filter {}", spec.path.display()),
            rules: Vec::new(),
            ignore: Vec::new(),
            gate: None,
            header: None,
            prefilter,
            f2b: Some(Box::new(f)),
        })
    }

    /// The fail2ban filter inside, if this is one.
    pub fn fail2ban(&self) -> Option<&F2bFilter> {
        self.f2b.as_deref()
    }

    /// Failures of a fail2ban filter whose id was not an address.
    pub fn not_address_failures(&self) -> u64 {
        self.f2b.as_ref().map_or(0, |f| f.not_address_ids())
    }

    /// Lines on which a pattern hit the backtracking limit (no match).
    pub fn backtrack_limit_hits(&self) -> u64 {
        self.f2b.as_ref().map_or(0, |f| f.limit_hits())
    }

    /// A fail2ban filter's answer for one line (`text`: the whole line, or
    /// the part after a stamp the caller cut).
    fn check_f2b(&self, f: &F2bFilter, text: &str, evidence: bool) -> LineMatch {
        let o = LOCAL_TZ.with(|tz| f.check_line(text, None, tz));
        self.report_limit(f, o.limited);
        let Some(found) = o.failures.into_iter().next() else {
            return if o.ignored {
                LineMatch::Ignored
            } else {
                LineMatch::Missed
            };
        };
        let host = match found.kind {
            f2b::IdKind::Ip4 | f2b::IdKind::Ip6 => parse_host(found.id.as_bytes()),
            f2b::IdKind::Dns | f2b::IdKind::Fid => None,
        };
        let Some(host) = host else {
            f.not_addresses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return LineMatch::Missed;
        };
        let captures = if evidence {
            found
                .fail
                .captures()
                .filter(|(k, _)| !matches!(*k, "ip4" | "ip6" | "mlfid"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        } else {
            Vec::new()
        };
        LineMatch::Failure(Hit {
            host,
            captures,
            regex_index: found.regex,
        })
    }

    /// The first line of this filter that hit the backtracking limit is
    /// said in the log; the others are counted only.
    fn report_limit(&self, f: &F2bFilter, limited: bool) {
        if limited && f.first_limit_report() {
            log::warn!(
                "filter {}: a line hit the backtracking limit ({} steps) and counts as no match; further ones are counted only (see status)",
                self.name,
                engine::BACKTRACK_LIMIT
            );
        }
    }

    /// A fail2ban filter's answer for one line of a source in the agent's
    /// match stage (`line` with its newline), and the line's time as the
    /// filter dates it; see [`F2bFilter::agent_line`]. `None` for a native
    /// filter. A failure whose id is not an address is counted
    /// ([`Filter::not_address_failures`]) and is no failure here.
    pub fn check_fail2ban_line(
        &self,
        line: &str,
        dated: f2b::Dated,
        state: Option<&mut f2b::MlfState>,
    ) -> Option<(LineMatch, Option<jiff::Timestamp>)> {
        let f = self.f2b.as_deref()?;
        let l = LOCAL_TZ.with(|tz| f.agent_line(line, dated, state, tz));
        self.report_limit(f, l.limited);
        let m = match l.verdict {
            f2b::AgentVerdict::Failure(h) => match h.addr {
                Some(host) => LineMatch::Failure(Hit {
                    host,
                    captures: Vec::new(),
                    regex_index: h.regex,
                }),
                None => {
                    f.not_addresses
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    LineMatch::Missed
                }
            },
            f2b::AgentVerdict::Ignored => LineMatch::Ignored,
            f2b::AgentVerdict::Missed => LineMatch::Missed,
        };
        Some((m, l.time))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The filter with the regex crate doing all matching (tests compare).
    #[cfg(test)]
    fn regex_only(mut self) -> Filter {
        for r in &mut self.rules {
            r.seq = None;
        }
        self.header = self.header.map(Header::regex_only);
        self
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The failregexes as written (before tag expansion).
    pub fn failregex_sources(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.source.as_str()).collect()
    }

    /// Checks one line: a whole log line, or the message after the
    /// timestamp (a leading timestamp is skipped).
    pub fn check(&self, line: &str) -> LineMatch {
        if let Some(f) = &self.f2b {
            return self.check_f2b(f, line, true);
        }
        self.check_bytes(after_stamp(line), true, false)
    }

    /// [`check`](Self::check) without the evidence captures.
    pub fn check_host(&self, line: &str) -> LineMatch {
        if let Some(f) = &self.f2b {
            return self.check_f2b(f, line, false);
        }
        self.check_bytes(after_stamp(line), false, false)
    }

    /// Calls `f` with the start of each line of `text` (a run of lines,
    /// each ending with `\n`) that may hold a failure, as the literal
    /// prefilter decides in one scan over the whole text. A line may come
    /// more than once and, with several literals, out of order. Lines left
    /// out are [`LineMatch::Missed`] for certain.
    pub fn candidate_lines(&self, text: &str, mut f: impl FnMut(usize)) {
        self.prefilter.line_starts(text.as_bytes(), &mut f);
    }

    /// Bit i set: rule i may match (rules past 64 always may).
    fn candidates(&self, hay: &[u8]) -> u64 {
        let mut set = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            if i >= 64 {
                return set | 1 << 63;
            }
            if rule.screen.iter().all(|l| l.find(hay).is_some()) {
                set |= 1 << i;
            }
        }
        set
    }

    /// Checks text that starts after the timestamp.
    /// Leading blanks are not part of the message (`^` is the first word).
    pub fn check_message(&self, msg: &str) -> LineMatch {
        self.check_bytes(msg, true, false)
    }

    /// Like [`check_message`](Self::check_message) without the evidence
    /// captures (`Hit::captures` is empty): what the agent's jails use.
    pub fn check_message_host(&self, msg: &str) -> LineMatch {
        self.check_bytes(msg, false, false)
    }

    /// Like [`check_message_host`](Self::check_message_host) for a line
    /// that [`candidate_lines`](Self::candidate_lines) picked: the
    /// prefilter already looked at it.
    pub fn check_picked_host(&self, msg: &str) -> LineMatch {
        self.check_bytes(msg, false, true)
    }

    fn check_bytes(&self, msg: &str, evidence: bool, picked: bool) -> LineMatch {
        if let Some(f) = &self.f2b {
            if !picked && !self.prefilter.may_match(msg.as_bytes()) {
                return LineMatch::Missed;
            }
            return self.check_f2b(f, msg, evidence);
        }
        let bytes = msg.trim_start_matches([' ', '\t']).as_bytes();
        // Only a shortcut: a line a rule matches holds the rule's literals
        // (the prefilter's among them), whether `candidates` looks for them
        // or the rule itself reads them.
        if !picked && !self.prefilter.may_match(bytes) {
            return LineMatch::Missed;
        }
        // Rules whose screening literals are all in the line (the content
        // is a part of it, so this holds there too); decided before any
        // regex runs.
        let candidates = self.candidates(bytes);
        if candidates == 0 {
            return LineMatch::Missed;
        }
        if let Some(g) = &self.gate
            && !g.is_match(bytes)
        {
            return LineMatch::Missed;
        }
        let bytes = match &self.header {
            Some(h) => match h.end(bytes) {
                Some(end) => &bytes[end..],
                None => return LineMatch::Missed,
            },
            None => bytes,
        };
        for (regex_index, rule) in self.rules.iter().enumerate() {
            if regex_index < 64 && candidates & (1 << regex_index) == 0 {
                continue;
            }
            let Some(caps) = rule.captures(bytes) else {
                continue;
            };
            // The first host group that took part; a text that is not an
            // address (999.1.1.1) is no failure, whatever else matched.
            let Some(host) = rule
                .host_groups
                .iter()
                .find_map(|&i| caps.get(i))
                .and_then(parse_host)
            else {
                continue;
            };
            if self.ignore.iter().any(|r| {
                r.literals.iter().all(|l| l.find(bytes).is_some()) && r.regex.is_match(bytes)
            }) {
                return LineMatch::Ignored;
            }
            let captures = rule
                .evidence
                .iter()
                .filter(|_| evidence)
                .filter_map(|(i, n)| {
                    caps.get(*i)
                        .map(|m| (n.clone(), String::from_utf8_lossy(m).into_owned()))
                })
                .collect();
            return LineMatch::Failure(Hit {
                host,
                captures,
                regex_index,
            });
        }
        LineMatch::Missed
    }
}

thread_local! {
    /// The local time zone (the `TZ` environment variable wins), once per
    /// thread.
    static LOCAL_TZ: jiff::tz::TimeZone = jiff::tz::TimeZone::system();
}

/// The scan that turns away lines holding none of `lits` (one per rule).
fn literal_prefilter(mut lits: Vec<&[u8]>, name: &str) -> Result<Prefilter, FilterError> {
    if lits.is_empty() || !lits.iter().all(|l| l.len() >= MIN_LITERAL) {
        return Ok(Prefilter::None);
    }
    lits.sort_unstable();
    lits.dedup();
    Ok(if let [one] = lits[..] {
        Prefilter::One(Box::new(memmem::Finder::new(one).into_owned()))
    } else if lits.len() <= FEW_LITERALS {
        Prefilter::Few(
            lits.iter()
                .map(|l| memmem::Finder::new(l).into_owned())
                .collect(),
        )
    } else {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(lits)
            .map_err(|e| FilterError::Regex {
                filter: name.to_string(),
                key: "failregex",
                index: 0,
                message: format!("literal prefilter: {e}"),
            })?;
        Prefilter::Many(ac)
    })
}

fn after_stamp(line: &str) -> &str {
    match crate::timestamp::stamp_len(line) {
        Some(n) => &line[n..],
        None => line,
    }
}

/// Up to a few required literals of a pattern, longest first.
fn required_literals(pat: &str) -> Vec<memmem::Finder<'static>> {
    let Ok(hir) = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pat)
    else {
        return Vec::new();
    };
    pattern::required_literals(&hir, MIN_LITERAL, 3)
        .iter()
        .map(|l| memmem::Finder::new(l).into_owned())
        .collect()
}

fn parse_def(text: &str, path: &Path) -> Result<FilterDef, FilterError> {
    toml::from_str(text).map_err(|e| FilterError::Toml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn build(filter: &str, key: &'static str, index: usize, pat: &str) -> Result<Regex, FilterError> {
    RegexBuilder::new(pat)
        // ASCII classes: `\w`, `\d`, `\s` and `.` over bytes keep the
        // automata small (several times faster on hits); UTF-8 text still
        // matches `.`/`\S`, and `(?u)` turns Unicode classes back on.
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| FilterError::Regex {
            filter: filter.to_string(),
            key,
            index,
            message: e.to_string(),
        })
}

/// An address as the kernel map keys it: IPv4-mapped IPv6 becomes IPv4, a
/// zone suffix is dropped, IPv6 text is normalised by the parse itself.
pub fn parse_host(s: &[u8]) -> Option<IpAddr> {
    if let Some(a) = dotted_quad(s) {
        return Some(IpAddr::V4(a));
    }
    if let Some(a) = colon_hex(s) {
        return Some(IpAddr::V6(a).to_canonical());
    }
    let s = std::str::from_utf8(s).ok()?;
    let s = s.split('%').next().unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

/// Plain dotted-quad IPv4, the common case, read straight from the bytes;
/// `Some` only where `Ipv4Addr::from_str` gives the same address (four
/// decimal parts of 1 to 3 digits, at most 255, no leading zero). Anything
/// else (`None`) takes the full parse.
fn dotted_quad(s: &[u8]) -> Option<std::net::Ipv4Addr> {
    // One pass over the bytes, no splitting iterator: every failure's host
    // comes through here (282 instructions a host as a split, cachegrind).
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, o) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v = 0u32;
        while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start == 3 {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
            i += 1;
        }
        let n = i - start;
        if n == 0 || (n > 1 && s[start] == b'0') {
            return None;
        }
        *o = u8::try_from(v).ok()?;
    }
    (i == s.len()).then(|| std::net::Ipv4Addr::from(octets))
}

/// IPv6 in hex groups and at most one `::`, read straight from the bytes;
/// `Some` only where `Ipv6Addr::from_str` gives the same address (groups of
/// 1 to 4 hex digits, eight of them or fewer around one `::`, which stands
/// for one group of zeros at least). An embedded IPv4 part, a zone or
/// anything else (`None`) takes the full parse, which took 1,500
/// instructions for each IPv6 host (cachegrind).
fn colon_hex(s: &[u8]) -> Option<std::net::Ipv6Addr> {
    let mut groups = [0u16; 8];
    let mut n = 0;
    // Where `::` stands: the number of groups before it.
    let mut gap = None;
    let mut i = 0;
    if s.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < s.len() {
        let start = i;
        let mut v = 0u16;
        while let Some(d) = s.get(i).and_then(|&c| char::from(c).to_digit(16)) {
            if i - start == 4 {
                return None;
            }
            v = v << 4 | d as u16;
            i += 1;
        }
        if i == start || n == 8 {
            return None;
        }
        groups[n] = v;
        n += 1;
        if i == s.len() {
            break;
        }
        if s[i] != b':' {
            return None;
        }
        i += 1;
        if s.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            i += 1;
        } else if i == s.len() {
            return None;
        }
    }
    match gap {
        None if n == 8 => Some(groups.into()),
        None => None,
        Some(g) if n <= 7 => {
            let tail = n - g;
            groups.copy_within(g..n, 8 - tail);
            groups[g..8 - tail].fill(0);
            Some(groups.into())
        }
        Some(_) => None,
    }
}

/// `pre<F-CONTENT>inner</F-CONTENT>post` -> (pre, inner, post).
fn split_content(p: &str) -> Option<(&str, &str, &str)> {
    const OPEN: &str = "<F-CONTENT>";
    const CLOSE: &str = "</F-CONTENT>";
    let open = p.find(OPEN)?;
    let close = p.find(CLOSE)?;
    if close < open + OPEN.len() || p[open + 1..].contains(OPEN) || p[close + 1..].contains(CLOSE) {
        return None;
    }
    Some((
        &p[..open],
        &p[open + OPEN.len()..close],
        &p[close + CLOSE.len()..],
    ))
}

/// Whether the prefregex is a plain header: anchored, capturing nothing,
/// and its content is the rest of the line.
fn is_header(pre: &str, inner: &str, post: &str) -> bool {
    pre.starts_with('^')
        && matches!(inner, ".+" | ".*")
        && matches!(post, "" | "$")
        && !pre.contains("(?P<")
        && !pre.contains("(?<")
}

/// One regex for prefix + failregex, so a line costs one capture run: a
/// failregex anchored with `^` starts where the content starts, otherwise
/// it may start anywhere in it; likewise for `$` at the end.
fn combine(pre: &str, body: &str, post: &str) -> String {
    let (head, body) = match body.strip_prefix('^') {
        Some(b) => ("", b),
        None => (".*?", body),
    };
    let anchored_end = body.ends_with('$') && !body.ends_with("\\$");
    let (body, tail) = if anchored_end {
        (&body[..body.len() - 1], "")
    } else {
        (body, ".*")
    };
    format!("{pre}{head}(?:{body}){tail}{post}")
}

#[cfg(test)]
mod tests;
