//! fail2ban's date detection: its default templates, `datepattern`
//! (`{^LN-BEG}`, `{NONE}`, `{EPOCH}`, `{DATE}`, strftime-style `%` fields,
//! plain regex), the date found and cut out of the line before any filter
//! regex runs, and the time it stands for (local time in the agent's zone,
//! explicit zones converted, a missing year from the reference time).
//!
//! Templates are built as fail2ban builds them (the same Python regex
//! text, the same word and line boundaries) and run through the regex
//! translation, so a custom `datepattern` means what it means to
//! fail2ban. The one template nearly every mail log hits, syslog's
//! `Mon dd hh:mm:ss` at the start of the line, also has a direct parser
//! that gives the same answers (tested against the template) without a
//! regex search per line.
use std::sync::{Arc, OnceLock};

use jiff::{Timestamp, civil::Date, tz::TimeZone};

use super::pyre::Layout;
use crate::filter::engine::{Caps, PyRegex, Search};

#[derive(Debug, thiserror::Error)]
#[error("datepattern {pattern:?}: {message}")]
pub struct DateError {
    pub pattern: String,
    pub message: String,
}

/// Where a template may match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordBegin {
    No,
    Yes,
    /// At the start of the line, after at most two non-word characters.
    Start,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pattern,
    /// Unix time; `long`: milli/microseconds too; the value's group.
    Epoch {
        long: bool,
        group: usize,
    },
    Tai64n,
    /// `{NONE}`: no date in the line; the time is the reference time.
    None,
}

#[derive(Clone)]
struct Template {
    name: String,
    kind: Kind,
    /// Anchored at the line start or end: the first match wins at once.
    anchored: bool,
    /// Shared: the default templates are compiled once per process.
    regex: Arc<PyRegex>,
    /// The template is fail2ban's `(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?`
    /// at the line start: [`syslog_fast`] answers for it.
    syslog: bool,
}

/// A date found in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The date text is `line[start..end]` (cut out before matching).
    pub start: usize,
    pub end: usize,
    /// `None`: the text could not be read as a date (fail2ban goes on
    /// without a time), or a template that takes no text (`{NONE}`).
    pub time: Option<Timestamp>,
}

/// The date templates of one filter, in the order fail2ban tries them.
pub struct DateDetector {
    templates: Vec<Template>,
    /// Only line-start templates: a date elsewhere is never cut.
    line_start_only: bool,
    /// fail2ban's default templates (no `datepattern`, `{^LN-BEG}` or
    /// `{DEFAULT}`): on a line that opens with a syslog stamp, the syslog
    /// template decides (see [`DateDetector::syslog_stamp`]).
    defaults: bool,
}

impl std::fmt::Debug for DateDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.templates.iter().map(|t| &t.name))
            .finish()
    }
}

/// fail2ban's default templates, in its order.
const DEFAULT_TEMPLATES: &[&str] = &[
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
];

/// The syslog template's pattern (see [`Template::syslog`]).
const SYSLOG_TEMPLATE: &str = r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?";

impl DateDetector {
    /// From a filter's `datepattern` (`None`: fail2ban's defaults).
    pub fn new(datepattern: Option<&str>) -> Result<DateDetector, DateError> {
        let mut d = DateDetector {
            templates: Vec::new(),
            line_start_only: true,
            defaults: datepattern.is_none_or(|p| {
                let p = p.trim();
                p.eq_ignore_ascii_case("{^LN-BEG}") || p.eq_ignore_ascii_case("{DEFAULT}")
            }),
        };
        match datepattern {
            None => d.add_defaults(false, None)?,
            Some(p) => {
                for pat in p.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
                    d.append(pat)?;
                }
                if d.templates.is_empty() {
                    d.add_defaults(false, None)?;
                }
            }
        }
        d.line_start_only = d.templates.iter().all(|t| t.anchored_at_start());
        Ok(d)
    }

    /// Every template is anchored at the line start (after at most two
    /// non-word characters), so a cut never happens later in a line.
    pub fn line_start_only(&self) -> bool {
        self.line_start_only
    }

    /// fail2ban's default templates, which begin with the ISO one (it
    /// needs a digit within the first three characters) and then the
    /// syslog one.
    pub fn is_default(&self) -> bool {
        self.defaults
    }

    /// Where a syslog stamp at the very start of `line` ends, when the
    /// syslog template settles it without a regex; for the default
    /// templates that is the date [`find`](Self::find) cuts.
    pub fn syslog_stamp(line: &str) -> Option<usize> {
        syslog_fast(line, None, &TimeZone::UTC).map(|f| f.end)
    }

    pub fn names(&self) -> Vec<&str> {
        self.templates.iter().map(|t| t.name.as_str()).collect()
    }

    fn push(&mut self, t: Template, ignore_dup: bool) -> Result<(), DateError> {
        if self.templates.iter().any(|x| x.name == t.name) {
            if ignore_dup {
                return Ok(());
            }
            return Err(DateError {
                pattern: t.name.clone(),
                message: "there is already a template with this name".into(),
            });
        }
        self.templates.push(t);
        Ok(())
    }

    fn append(&mut self, pattern: &str) -> Result<(), DateError> {
        let key = if pattern.contains('%') {
            pattern.to_string()
        } else {
            pattern.to_uppercase()
        };
        match key.as_str() {
            "{^LN-BEG}" => return self.add_defaults(true, None),
            "{DEFAULT}" => return self.add_defaults(false, None),
            "{NONE}" => {
                let t = pattern_template("{UNB}^", WordBegin::Yes, true)?;
                return self.push(
                    Template {
                        name: "{NONE}".into(),
                        kind: Kind::None,
                        ..t
                    },
                    false,
                );
            }
            _ => {}
        }
        if key.contains("{DATE}") {
            return self.add_defaults(false, Some(pattern));
        }
        let t = pattern_to_template(pattern, &key)?;
        self.push(t, false)
    }

    /// fail2ban's `addDefaultTemplate`: every default (first anchored
    /// copies of the unanchored ones, then the originals), only the
    /// line-start ones for `{^LN-BEG}`, or each wrapped in `pre_match`'s
    /// `{DATE}`.
    fn add_defaults(&mut self, line_begin: bool, pre_match: Option<&str>) -> Result<(), DateError> {
        let ignore_dup = !self.templates.is_empty();
        if let Some(pm) = pre_match {
            for p in DEFAULT_TEMPLATES {
                let inner = match *p {
                    "EPOCH" => "Epoch".to_string(),
                    "TAI64N" => "TAI64N".to_string(),
                    _ => unbound(p),
                };
                let wrapped = replace_date(pm, &inner);
                let key = if wrapped.contains('%') {
                    wrapped.clone()
                } else {
                    wrapped.to_uppercase()
                };
                let t = pattern_to_template(&wrapped, &key)?;
                self.push(t, ignore_dup)?;
            }
            return Ok(());
        }
        let (anchored, originals) = default_templates();
        for t in anchored.iter().chain(originals) {
            if line_begin && !t.line_begin() {
                continue;
            }
            self.push(t.clone(), ignore_dup)?;
        }
        Ok(())
    }

    /// The date in `line` as fail2ban finds it (the first anchored template
    /// that matches, else the match nearest the line start), and its time.
    /// `now` is the reference for a missing year or day; `tz` the local zone.
    pub fn find(&self, line: &str, now: Timestamp, tz: &TimeZone) -> Option<Found> {
        self.find_with(line, Some(now), tz)
    }

    /// Where the date is, without working out its time.
    pub fn find_span(&self, line: &str, tz: &TimeZone) -> Option<Found> {
        self.find_with(line, None, tz)
    }

    fn find_with(&self, line: &str, now: Option<Timestamp>, tz: &TimeZone) -> Option<Found> {
        let mut best: Option<(&Template, Caps<'_>)> = None;
        for t in &self.templates {
            if t.syslog
                && let Some(f) = syslog_fast(line, now, tz)
            {
                return Some(f);
            }
            let Search::Hit(c) = t.regex.search(line) else {
                continue;
            };
            let start = c.span(0).map_or(0, |s| s.0);
            if t.anchored || start <= 1 {
                best = Some((t, c));
                break;
            }
            if best
                .as_ref()
                .is_none_or(|(_, b)| start < b.span(0).map_or(0, |s| s.0))
            {
                best = Some((t, c));
            }
        }
        let (t, c) = best?;
        let (start, end) = c.span(1).unwrap_or((0, 0));
        let Some(now) = now else {
            return Some(Found {
                start,
                end,
                time: None,
            });
        };
        if t.kind == Kind::None || start == end {
            return Some(Found {
                start,
                end,
                time: Some(now),
            });
        }
        let time = match t.kind {
            Kind::Pattern => time_of(&t.regex, &c, now, tz),
            Kind::Epoch { long, group } => epoch(c.get(group)?, long),
            Kind::Tai64n => tai64n(c.get(1)?),
            Kind::None => Some(now),
        };
        Some(Found { start, end, time })
    }
}

impl Template {
    fn line_begin(&self) -> bool {
        self.anchored_at_start()
    }

    fn anchored_at_start(&self) -> bool {
        self.anchored && self.name.starts_with(['{', '^'])
    }
}

/// `{UNB}`, `{^LN-BEG}` and explicit word boundaries taken off a template
/// pattern (fail2ban's `unboundPattern`).
fn unbound(p: &str) -> String {
    let mut s = p.strip_prefix("{UNB}").unwrap_or(p);
    s = s.strip_prefix("{^LN-BEG}").unwrap_or(s);
    for pre in [r"(?:^|\b|\W)", r"(^|\b|\W)"] {
        s = s.strip_prefix(pre).unwrap_or(s);
    }
    s.strip_suffix(r"(?=\b|\W|$)").unwrap_or(s).to_string()
}

/// `{DATE}` (any case, not escaped) replaced by `inner`.
fn replace_date(pm: &str, inner: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < pm.len() {
        if pm[i..].len() >= 6
            && pm[i..i + 6].eq_ignore_ascii_case("{DATE}")
            && (i == 0 || &pm[i - 1..i] != "\\")
        {
            out.push_str(inner);
            i += 6;
            continue;
        }
        let c = pm[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// fail2ban's `_getPatternTemplate`.
/// fail2ban's default templates: anchored copies of the unanchored ones,
/// and the originals. Compiled once per process, not once per filter:
/// every filter without a `datepattern` has them, and compiling them is
/// most of what loading such a filter costs.
fn default_templates() -> &'static (Vec<Template>, Vec<Template>) {
    static DEFAULTS: OnceLock<(Vec<Template>, Vec<Template>)> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let compiled = || -> Result<_, DateError> {
            let mut anchored = Vec::new();
            let mut originals = Vec::new();
            for p in DEFAULT_TEMPLATES {
                let key = if p.contains('%') {
                    p.to_string()
                } else {
                    p.to_uppercase()
                };
                let t = pattern_to_template(p, &key)?;
                if !t.name.starts_with("{^LN-BEG}") && !t.name.starts_with('^') {
                    let ak = match *p {
                        "EPOCH" => "{^LN-BEG}EPOCH".to_string(),
                        "TAI64N" => "{^LN-BEG}TAI64N".to_string(),
                        _ => format!("{{^LN-BEG}}{p}"),
                    };
                    anchored.push(pattern_to_template(&ak, &ak)?);
                }
                originals.push(t);
            }
            Ok((anchored, originals))
        };
        // Constants of this file: a failure is a bug the unit tests show.
        compiled().unwrap_or_else(|e| panic!("fail2ban's default date templates: {e}"))
    })
}

fn pattern_to_template(pattern: &str, key: &str) -> Result<Template, DateError> {
    if key.contains("EPOCH") {
        if has_epoch_tag(pattern) {
            return epoch_template(Some(pattern), false, key.contains("LEPOCH"));
        }
        match key {
            "EPOCH" | "{^LN-BEG}EPOCH" | "^EPOCH" => {
                return epoch_template(None, key != "EPOCH", false);
            }
            "LEPOCH" | "{^LN-BEG}LEPOCH" | "^LEPOCH" => {
                return epoch_template(None, key != "LEPOCH", true);
            }
            _ => {}
        }
    }
    if matches!(key, "TAI64N" | "{^LN-BEG}TAI64N" | "^TAI64N") {
        let wb = if key == "TAI64N" {
            WordBegin::No
        } else {
            WordBegin::Start
        };
        let (regex, anchored, _) = bounded("@[0-9a-f]{24}", wb, true, pattern)?;
        return Ok(Template {
            name: if key == "TAI64N" {
                "TAI64N".into()
            } else {
                "{^LN-BEG}TAI64N".into()
            },
            kind: Kind::Tai64n,
            anchored,
            regex: Arc::new(compile(&regex, pattern)?),
            syslog: false,
        });
    }
    pattern_template(pattern, WordBegin::Yes, true)
}

fn has_epoch_tag(p: &str) -> bool {
    let up = p.to_uppercase();
    ["{EPOCH}", "{LEPOCH}"].iter().any(|t| {
        up.match_indices(t)
            .any(|(i, _)| i == 0 || &p[i - 1..i] != "\\")
    })
}

fn epoch_template(
    pattern: Option<&str>,
    line_begin_only: bool,
    long: bool,
) -> Result<Template, DateError> {
    let re = if long {
        r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"
    } else {
        r"\d{10,11}\b(?:\.\d{3,6})?"
    };
    let base = if long { "LongEpoch" } else { "Epoch" };
    let (regex, anchored, name, group) = match pattern {
        Some(p) => {
            let mut body = String::new();
            let mut i = 0;
            while i < p.len() {
                let rest = &p[i..];
                let tag = ["{EPOCH}", "{LEPOCH}"]
                    .iter()
                    .find(|t| rest.len() >= t.len() && rest[..t.len()].eq_ignore_ascii_case(t));
                if let Some(t) = tag
                    && (i == 0 || &p[i - 1..i] != "\\")
                {
                    body.push_str(&format!("({re})"));
                    i += t.len();
                    continue;
                }
                let c = rest.chars().next().expect("in bounds");
                body.push(c);
                i += c.len_utf8();
            }
            let (r, a, _) = bounded(&format!("({body})"), WordBegin::Yes, true, p)?;
            (r, a, p.to_string(), 2)
        }
        None if !line_begin_only => {
            let r = r"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))%s)(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"
                .replace("%s", re);
            let (r, a, _) = bounded(&r, WordBegin::No, true, base)?;
            (r, a, base.to_string(), 1)
        }
        None => {
            let r = r"((?P<square>(?<=^\[))?%s)(?(square)(?=\]))".replace("%s", re);
            let (r, a, _) = bounded(&r, WordBegin::Start, true, base)?;
            (r, a, format!("{{^LN-BEG}}{base}"), 1)
        }
    };
    Ok(Template {
        name,
        kind: Kind::Epoch { long, group },
        anchored,
        regex: Arc::new(compile(&regex, pattern.unwrap_or(base))?),
        syslog: false,
    })
}

/// fail2ban's `DatePatternRegex`: `%` fields to regex, then boundaries.
fn pattern_template(
    pattern: &str,
    word_begin: WordBegin,
    word_end: bool,
) -> Result<Template, DateError> {
    let mut p = pattern;
    let (mut wb, mut we) = (word_begin, word_end);
    if let Some(r) = p.strip_prefix("{UNB}") {
        p = r;
        wb = WordBegin::No;
        we = false;
    }
    if wb != WordBegin::No
        && let Some(r) = p.strip_prefix("{^LN-BEG}")
    {
        p = r;
        wb = WordBegin::Start;
    }
    let mut regex = fields_to_regex(p).map_err(|message| DateError {
        pattern: pattern.to_string(),
        message,
    })?;
    if alpha_field(p) {
        regex = format!("(?iu){regex}");
    }
    let (regex, anchored, start) = bounded(&regex, wb, we, pattern)?;
    let name = if start && !pattern.starts_with("{^LN-BEG}") {
        format!("{{^LN-BEG}}{pattern}")
    } else {
        pattern.to_string()
    };
    let syslog = start && p == SYSLOG_TEMPLATE;
    Ok(Template {
        name,
        kind: Kind::Pattern,
        anchored,
        regex: Arc::new(compile(&regex, pattern)?),
        syslog,
    })
}

fn compile(regex: &str, pattern: &str) -> Result<PyRegex, DateError> {
    PyRegex::new(regex, Layout::default()).map_err(|message| DateError {
        pattern: pattern.to_string(),
        message,
    })
}

/// `%a`, `%A`, `%b`, `%B`, `%p`, `%c` (names: matched case-insensitively).
fn alpha_field(p: &str) -> bool {
    let b = p.as_bytes();
    (1..b.len())
        .any(|i| b[i - 1] == b'%' && b"aAbBpc".contains(&b[i]) && (i < 2 || b[i - 2] != b'%'))
}

/// fail2ban's `DateTemplate.setRegex`: the date in group 1, word or line
/// boundaries around it. Returns (regex, anchored, line-start).
fn bounded(
    regex: &str,
    wb: WordBegin,
    we: bool,
    pattern: &str,
) -> Result<(String, bool, bool), DateError> {
    let mut regex = regex.trim().to_string();
    // A leading flag group is set aside and put back in front.
    let mut flags = String::new();
    if let Some(i) = regex.find("(?")
        && let Some(len) = flag_group_len(&regex[i..])
    {
        flags = regex[i..i + len].to_string();
        regex.replace_range(i..i + len, "");
    }
    let begins_bound = starts_bounded(&regex);
    let ends_bound = ends_bounded(&regex);
    let bound_begin = wb != WordBegin::No && !begins_bound;
    let bound_end = we && !ends_bound;
    if !has_plain_group(&regex) {
        regex = wrap_group(&regex);
    }
    let mut line_start = false;
    if bound_begin {
        if wb == WordBegin::Start {
            regex = format!(r"^(?:\W{{0,2}})?{regex}");
            line_start = true;
        } else {
            regex = format!(r"(?=^|\b|\W){regex}");
        }
    }
    if bound_end {
        regex.push_str(r"(?=\b|\W|$)");
    }
    let begin_anchor = line_start || line_bound_begin(&regex);
    let end_anchor = line_bound_end(&regex);
    regex = strip_stars(&regex);
    let _ = pattern;
    Ok((
        format!("{flags}{regex}"),
        begin_anchor || end_anchor,
        begin_anchor,
    ))
}

/// Length of a `(?flags)` group at the start of `s`.
fn flag_group_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 2;
    while i < b.len() && b[i].is_ascii_lowercase() {
        i += 1;
    }
    (i > 2 && b.get(i) == Some(&b')')).then_some(i + 1)
}

/// `RE_NO_WRD_BOUND_BEG`: starts with `^`, `**` or `(^` (after `(`s and a flag group).
fn starts_bounded(r: &str) -> bool {
    let mut s = r.trim_start_matches('(');
    let opened = r.len() - s.len();
    if opened > 0 {
        // `(?flags)` right after the parentheses.
        let full = &r[opened - 1..];
        if let Some(len) = flag_group_len(full) {
            s = &full[len..];
        }
    }
    s.starts_with('^')
        || s.trim_start_matches('(').starts_with("**")
        || s.starts_with("(^")
        || s.starts_with("(?:^")
}

/// `RE_NO_WRD_BOUND_END`: ends with `$`, `$)`, `\b`, `\s` or `**`, `**)`.
fn ends_bounded(r: &str) -> bool {
    let unescaped = |s: &str, tail: usize| {
        let head = &s[..s.len() - tail];
        head.len() - head.trim_end_matches('\\').len() % 2 == 0 || !head.ends_with('\\')
    };
    let t = r.trim_end_matches(')');
    if t.ends_with("**") {
        return true;
    }
    for tail in ["$)", "$", r"\b", r"\s"] {
        if r.ends_with(tail) && unescaped(r, tail.len()) {
            return true;
        }
    }
    false
}

/// `RE_GROUPED`: a `(` that opens a capture group (not `\(`, not `(?`).
fn has_plain_group(r: &str) -> bool {
    let b = r.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'('
            && b.get(i + 1) != Some(&b'?')
            && (i == 0 || b[i - 1] != b'\\')
            && !(i >= 2 && &b[i - 2..i] == b"(?")
    })
}

/// `RE_GROUP`: leading flags and `^`, then the rest in a group, then `$`.
fn wrap_group(r: &str) -> String {
    let mut head = String::new();
    let mut s = r;
    if let Some(len) = flag_group_len(s).filter(|_| s.starts_with("(?")) {
        head.push_str(&s[..len]);
        s = &s[len..];
    }
    if let Some(rest) = s.strip_prefix('^') {
        head.push('^');
        s = rest;
    }
    if let Some(len) = flag_group_len(s).filter(|_| s.starts_with("(?")) {
        head.push_str(&s[..len]);
        s = &s[len..];
    }
    let (mid, tail) = match s.strip_suffix('$') {
        Some(m) => (m, "$"),
        None => (s, ""),
    };
    format!("{head}({mid}){tail}")
}

fn line_bound_begin(r: &str) -> bool {
    let s = match flag_group_len(r).filter(|_| r.starts_with("(?")) {
        Some(len) => &r[len..],
        None => r,
    };
    s.starts_with('^') || ((s.starts_with("(^") || s.starts_with("(?:^")) && !s.contains("^|"))
}

fn line_bound_end(r: &str) -> bool {
    let t = r.strip_suffix(')').unwrap_or(r);
    t.ends_with('$') && !t.ends_with("\\$") && !t.ends_with("|$")
}

/// `RE_DEL_WRD_BOUNDS`: the `**` markers taken out.
fn strip_stars(r: &str) -> String {
    let mut s = r.to_string();
    let lead = s.len() - s.trim_start_matches('(').len();
    if s[lead..].starts_with("**") {
        s.replace_range(lead..lead + 2, "");
    }
    let t = s.trim_end_matches(')').len();
    if s[..t].ends_with("**") && !s[..t - 2].ends_with('\\') {
        s.replace_range(t - 2..t, "");
    }
    s
}

/// `%` fields replaced by fail2ban's regexes for them.
fn fields_to_regex(p: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = p;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (key, len) = field_key(after).ok_or_else(|| {
            format!(
                "% must start a field (%Y, %m, %%, ...): {:?}",
                &rest[i..rest.len().min(i + 6)]
            )
        })?;
        out.push_str(&field_regex(key));
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn field_key(s: &str) -> Option<(&str, usize)> {
    const LONG: &[&str] = &[
        "ExZ", "Exz", "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExY", "Exy",
    ];
    if let Some(k) = LONG.iter().find(|k| s.starts_with(*k)) {
        return Some((k, 3));
    }
    let c = s.chars().next()?;
    "dfHIGjmMSUwuVyYzAaBbpZ%WcxXkl"
        .contains(c)
        .then(|| (&s[..1], 1))
}

const MONTHS: &str = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec";
const DAYS: &str = "mon|tue|wed|thu|fri|sat|sun";

fn field_regex(k: &str) -> String {
    let tz_abbr = r"[A-Z](?:[A-Z]{2,4})?";
    match k {
        "%" => "%".into(),
        "a" => format!("(?P<a>{DAYS})"),
        "A" => "(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)".into(),
        "b" => format!("(?P<b>{MONTHS})"),
        "B" => "(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)".into(),
        "c" => format!(r"(?P<a>{DAYS})\s+(?P<b>{MONTHS})\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)"),
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])".into(),
        "f" => r"(?P<f>[0-9]{1,6})".into(),
        "G" => r"(?P<G>\d\d\d\d)".into(),
        "H" => r"(?P<H>[0-1]?\d|2[0-3])".into(),
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])".into(),
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])".into(),
        "k" => r" ?(?P<H>[0-2]?\d)".into(),
        "l" => r" ?(?P<I>1?\d)".into(),
        "m" => r"(?P<m>0?[1-9]|1[0-2])".into(),
        "M" => r"(?P<M>[0-5]?\d)".into(),
        "p" => "(?P<p>am|pm)".into(),
        "S" => r"(?P<S>[0-5]?\d|6[0-1])".into(),
        "u" => "(?P<u>[1-7])".into(),
        "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)".into(),
        "V" => r"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)".into(),
        "w" => "(?P<w>[0-6])".into(),
        "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)".into(),
        "x" => r"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)".into(),
        "X" => r"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)".into(),
        "y" => r"(?P<y>\d\d)".into(),
        "Y" => r"(?P<Y>\d{4})".into(),
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)".into(),
        "Z" => "(?P<Z>Z|[A-Z]{3,5})".into(),
        "ExZ" => format!("(?P<Z>{tz_abbr})"),
        "Exz" => format!(r"(?P<z>(?:{tz_abbr})?[+-][01]\d(?::?\d{{2}})?|{tz_abbr})"),
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])".into(),
        "Exm" => "(?P<m>0[1-9]|1[0-2])".into(),
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])".into(),
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])".into(),
        "Exl" => r" ?(?P<I>1[0-2]|\d)".into(),
        "ExM" => r"(?P<M>[0-5]\d)".into(),
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])".into(),
        "ExY" => format!(r"(?P<Y>{}\d)", year_decades()),
        "Exy" => r"(?P<y>\d{2})".into(),
        _ => unreachable!("field_key gives known keys"),
    }
}

/// `%ExY`: years from 2000 to three years ahead, as fail2ban limits them
/// (`20[0-2]` followed by a digit in the 2020s).
fn year_decades() -> String {
    let year = Timestamp::now()
        .to_zoned(TimeZone::UTC)
        .year()
        .clamp(2000, 2099);
    let last = (year + 3).min(2099);
    let d = (last % 100) / 10;
    if d == 0 {
        "200".into()
    } else {
        format!("20[0-{d}]")
    }
}

/// The time a pattern template's groups stand for (fail2ban's
/// `reGroupDictStrptime`; fractions of a second are dropped as it does).
fn time_of(re: &PyRegex, c: &Caps<'_>, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let g = |n: &str| re.group(n).and_then(|i| c.get(i));
    let num = |n: &str| g(n).and_then(|v| v.trim().parse::<i64>().ok());
    let mut year = num("Y");
    if year.is_none()
        && let Some(y) = num("y")
    {
        year = Some(if y <= 2000 { y + 2000 } else { y });
    }
    let mut month = num("m");
    if month.is_none() {
        month = g("B")
            .and_then(|v| month_index(v, true))
            .or_else(|| g("b").and_then(|v| month_index(v, false)));
    }
    let mut day = num("d");
    let mut hour = num("H").unwrap_or(0);
    if let Some(h) = num("I") {
        let pm = g("p").is_some_and(|p| p.eq_ignore_ascii_case("pm"));
        hour = match (pm, h) {
            (false, 12) => 0,
            (true, h) if h != 12 => h + 12,
            (_, h) => h,
        };
    }
    let minute = num("M").unwrap_or(0);
    // Python's datetime takes no leap second: such a stamp has no time.
    let second = num("S").unwrap_or(0);
    let offset = match g("z").or_else(|| g("Z")) {
        Some(z) => Some(zone_offset_minutes(z)?),
        None => None,
    };
    if (month.is_none() || day.is_none())
        && let Some(j) = num("j")
    {
        {
            let y = year.unwrap_or_else(|| i64::from(now.to_zoned(tz.clone()).year()));
            let d = Date::new(i16::try_from(y).ok()?, 1, 1)
                .ok()?
                .checked_add(jiff::Span::new().days(j - 1))
                .ok()?;
            year = Some(i64::from(d.year()));
            month = Some(i64::from(d.month()));
            day = Some(i64::from(d.day()));
        }
    }
    let (h, mi, s) = (
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
    );
    let to_ts = |y: i64, mo: i64, d: i64| -> Option<Timestamp> {
        let dt = jiff::civil::DateTime::new(
            i16::try_from(y).ok()?,
            i8::try_from(mo).ok()?,
            i8::try_from(d).ok()?,
            h,
            mi,
            s,
            0,
        )
        .ok()?;
        match offset {
            Some(off) => {
                let o = jiff::tz::Offset::from_seconds(i32::try_from(off * 60).ok()?).ok()?;
                o.to_timestamp(dt).ok()
            }
            None => tz.to_ambiguous_timestamp(dt).compatible().ok(),
        }
    };
    match (year, month, day) {
        (Some(y), Some(mo), Some(d)) => to_ts(y, mo, d),
        (None, Some(mo), Some(d)) if offset.is_none() => crate::timestamp::nearest_year(
            tz,
            i8::try_from(mo).ok()?,
            i8::try_from(d).ok()?,
            h,
            mi,
            s,
            now,
        ),
        (None, Some(mo), Some(d)) => {
            // An explicit zone: the nearest year is told the same way.
            let y = i64::from(now.to_zoned(TimeZone::UTC).year());
            let limit = now.as_second() + 86_400;
            [y + 1, y, y - 1]
                .into_iter()
                .filter_map(|y| to_ts(y, mo, d))
                .find(|t| t.as_second() <= limit)
        }
        (y, None, None) => {
            // Time only: today, or yesterday if that is still ahead.
            let today = now.to_zoned(tz.clone()).date();
            let y = y.unwrap_or(i64::from(today.year()));
            let t = to_ts(y, i64::from(today.month()), i64::from(today.day()))?;
            if t > now {
                t.checked_sub(jiff::SignedDuration::from_hours(24)).ok()
            } else {
                Some(t)
            }
        }
        _ => None,
    }
}

fn month_index(v: &str, full: bool) -> Option<i64> {
    const FULL: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    if !full {
        // This runs on every line a filter dates: three bytes compared at
        // once, in place. `| 0x20` lowercases a letter and turns no other
        // byte into one.
        let &[a, b, c] = v.as_bytes() else {
            return None;
        };
        let key = u32::from_le_bytes([a | 0x20, b | 0x20, c | 0x20, 0]);
        return FULL
            .iter()
            .position(|m| {
                let m = m.as_bytes();
                u32::from_le_bytes([m[0], m[1], m[2], 0]) == key
            })
            .map(|i| i as i64 + 1);
    }
    FULL.iter()
        .position(|m| m.eq_ignore_ascii_case(v))
        .map(|i| i as i64 + 1)
}

/// Minutes east of UTC for a zone as fail2ban reads it: `Z`, `UTC`,
/// `GMT`, `+hh`, `+hhmm`, `+hh:mm`, an abbreviation from its table,
/// optionally followed by an offset. `None`: unknown.
pub fn zone_offset_minutes(z: &str) -> Option<i64> {
    if matches!(z, "Z" | "UTC" | "GMT") {
        return Some(0);
    }
    let split = z.find(['+', '-']).unwrap_or(z.len());
    let (abbr, off) = z.split_at(split);
    let base = if abbr.is_empty() {
        0
    } else {
        abbr_offset(abbr)?
    };
    if off.is_empty() {
        return Some(base);
    }
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits = &off[1..];
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i64>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        5 if &digits[2..3] == ":" => (digits[..2].parse().ok()?, digits[3..].parse().ok()?),
        _ => return None,
    };
    Some(base + sign * (h * 60 + m))
}

/// Time zone abbreviations fail2ban knows, with their offsets (hours).
fn abbr_offset(a: &str) -> Option<i64> {
    const TABLE: &[(f64, &[&str])] = &[
        (-12.0, &["Y"]),
        (-11.0, &["X", "NUT", "SST"]),
        (-10.0, &["W", "CKT", "HAST", "HST", "TAHT", "TKT"]),
        (-9.0, &["V", "AKST", "GAMT", "GIT", "HADT", "HNY"]),
        (-8.0, &["U", "AKDT", "CIST", "HAY", "HNP", "PST", "PT"]),
        (-7.0, &["T", "HAP", "HNR", "MST", "PDT"]),
        (-6.0, &["S", "CST", "EAST", "GALT", "HAR", "HNC", "MDT"]),
        (
            -5.0,
            &[
                "R", "CDT", "COT", "EASST", "ECT", "EST", "ET", "HAC", "HNE", "PET",
            ],
        ),
        (
            -4.0,
            &[
                "Q", "AST", "BOT", "CLT", "COST", "EDT", "FKT", "GYT", "HAE", "HNA", "PYT",
            ],
        ),
        (
            -3.0,
            &[
                "P", "ADT", "ART", "BRT", "CLST", "FKST", "GFT", "HAA", "PMST", "PYST", "SRT",
                "UYT", "WGT",
            ],
        ),
        (-2.0, &["O", "BRST", "FNT", "PMDT", "UYST", "WGST"]),
        (-1.0, &["N", "AZOT", "CVT", "EGT"]),
        (0.0, &["Z", "EGST", "GMT", "UTC", "WET", "WT"]),
        (1.0, &["A", "CET", "DFT", "WAT", "WEDT", "WEST"]),
        (2.0, &["B", "CAT", "CEDT", "CEST", "EET", "SAST", "WAST"]),
        (3.0, &["C", "EAT", "EEDT", "EEST", "IDT", "MSK"]),
        (
            4.0,
            &[
                "D", "AMT", "AZT", "GET", "GST", "KUYT", "MSD", "MUT", "RET", "SAMT", "SCT",
            ],
        ),
        (
            5.0,
            &[
                "E", "AMST", "AQTT", "AZST", "HMT", "MAWT", "MVT", "PKT", "TFT", "TJT", "TMT",
                "UZT", "YEKT",
            ],
        ),
        (
            6.0,
            &[
                "F", "ALMT", "BIOT", "BTT", "IOT", "KGT", "NOVT", "OMST", "YEKST",
            ],
        ),
        (
            7.0,
            &[
                "G", "CXT", "DAVT", "HOVT", "ICT", "KRAT", "NOVST", "OMSST", "THA", "WIB",
            ],
        ),
        (
            8.0,
            &[
                "H", "ACT", "AWST", "BDT", "BNT", "CAST", "HKT", "IRKT", "KRAST", "MYT", "PHT",
                "SGT", "ULAT", "WITA", "WST",
            ],
        ),
        (
            9.0,
            &[
                "I", "AWDT", "IRKST", "JST", "KST", "PWT", "TLT", "WDT", "WIT", "YAKT",
            ],
        ),
        (10.0, &["K", "AEST", "ChST", "PGT", "VLAT", "YAKST", "YAPT"]),
        (
            11.0,
            &[
                "L", "AEDT", "LHDT", "MAGT", "NCT", "PONT", "SBT", "VLAST", "VUT",
            ],
        ),
        (
            12.0,
            &[
                "M", "ANAST", "ANAT", "FJT", "GILT", "MAGST", "MHT", "NZST", "PETST", "PETT",
                "TVT", "WFT",
            ],
        ),
        (13.0, &["FJST", "NZDT"]),
        (11.5, &["NFT"]),
        (10.5, &["ACDT", "LHST"]),
        (9.5, &["ACST"]),
        (6.5, &["CCT", "MMT"]),
        (5.75, &["NPT"]),
        (5.5, &["SLT"]),
        (4.5, &["AFT", "IRDT"]),
        (3.5, &["IRST"]),
        (-2.5, &["HAT", "NDT"]),
        (-3.5, &["HNT", "NST", "NT"]),
        (-4.5, &["HLV", "VET"]),
        (-9.5, &["MART", "MIT"]),
    ];
    TABLE
        .iter()
        .find(|(_, names)| names.contains(&a))
        .map(|(h, _)| (h * 60.0) as i64)
}

fn epoch(v: &str, long: bool) -> Option<Timestamp> {
    let mut f: f64 = v.parse().ok()?;
    if long && v.len() >= 13 {
        f /= if v.len() >= 16 && !v.contains('.') {
            1e6
        } else {
            1e3
        };
    }
    Timestamp::from_second(f.trunc() as i64).ok()
}

/// fail2ban reads the 15 hex digits after `@4` as seconds.
fn tai64n(v: &str) -> Option<Timestamp> {
    let secs = i64::from_str_radix(v.get(2..17)?, 16).ok()?;
    Timestamp::from_second(secs).ok()
}

/// The line-start syslog template without a regex:
/// `^(?:\W{0,2})?((?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?)(?=\b|\W|$)`,
/// case-insensitive. `None`: a line it does not settle (it defers to the
/// regex, which gives the answer).
fn syslog_fast(line: &str, now: Option<Timestamp>, tz: &TimeZone) -> Option<Found> {
    let b = line.as_bytes();
    // The common shape only: a month name at the very start, no weekday.
    if b.len() < 15 || !b[0].is_ascii_alphabetic() {
        return None;
    }
    let month = month_index(std::str::from_utf8(&b[..3]).ok()?, false)?;
    if b[3] != b' ' {
        return None;
    }
    // Day: `[1-2]\d|[0 ]?[1-9]|3[0-1]`, then ' '.
    let (day, mut i) = match (b[4], b[5], b[6]) {
        (b' ', d @ b'1'..=b'9', b' ') => (i64::from(d - b'0'), 6),
        (b'0', d @ b'1'..=b'9', b' ') => (i64::from(d - b'0'), 6),
        (t @ b'1'..=b'2', u @ b'0'..=b'9', b' ') => {
            (i64::from(t - b'0') * 10 + i64::from(u - b'0'), 6)
        }
        (b'3', u @ b'0'..=b'1', b' ') => (30 + i64::from(u - b'0'), 6),
        _ => return None,
    };
    i += 1;
    // `HH:MM:SS` in two-digit form only (other spellings defer).
    let hms = b.get(i..i + 8)?;
    if hms[2] != b':'
        || hms[5] != b':'
        || !hms
            .iter()
            .enumerate()
            .all(|(k, c)| k == 2 || k == 5 || c.is_ascii_digit())
    {
        return None;
    }
    let two = |k: usize| i64::from(hms[k] - b'0') * 10 + i64::from(hms[k + 1] - b'0');
    let (h, m, s) = (two(0), two(3), two(6));
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    i += 8;
    // What follows must end the date: a blank then a non-digit (a year or
    // a fraction would continue it), or a separator that cannot.
    match b.get(i) {
        None => {}
        Some(b' ') if b.get(i + 1).is_some_and(|c| !c.is_ascii_digit()) => {}
        Some(b':' | b'[' | b']' | b',' | b';' | b'-' | b'|' | b'>' | b'<' | b'(' | b')') => {}
        _ => return None,
    }
    let time = now.and_then(|now| {
        crate::timestamp::nearest_year(tz, month as i8, day as i8, h as i8, m as i8, s as i8, now)
    });
    Some(Found {
        start: 0,
        end: i,
        time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zurich() -> TimeZone {
        TimeZone::get("Europe/Zurich").unwrap()
    }

    fn now() -> Timestamp {
        "2005-08-14T10:00:00Z".parse().unwrap()
    }

    fn local(t: Timestamp) -> String {
        t.to_zoned(zurich()).datetime().to_string()
    }

    /// The three-byte comparison reads month abbreviations as a
    /// case-insensitive comparison of the names does, on every text of
    /// three characters over letters, their neighbours in ASCII (which
    /// `| 0x20` moves next to letters) and a non-ASCII one.
    #[test]
    fn month_abbreviations_as_names_compare() {
        let names = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let reference = |v: &str| {
            names
                .iter()
                .position(|m| m.eq_ignore_ascii_case(v))
                .map(|i| i as i64 + 1)
        };
        let chars: Vec<char> = ('@'..='~').chain(['\u{e9}', ' ', '0', '\u{130}']).collect();
        let mut texts = 0;
        for a in &chars {
            for b in &chars {
                for c in &chars {
                    let v: String = [*a, *b, *c].into_iter().collect();
                    assert_eq!(month_index(&v, false), reference(&v), "{v:?}");
                    texts += 1;
                }
            }
        }
        assert!(texts > 100_000);
        for (i, m) in names.iter().enumerate() {
            assert_eq!(month_index(&m.to_uppercase(), false), Some(i as i64 + 1));
        }
        assert_eq!(month_index("ja", false), None);
        assert_eq!(month_index("janu", false), None);
        assert_eq!(month_index("SEPTEMBER", true), Some(9));
        assert_eq!(month_index("sep", true), None);
    }

    fn cut(d: &DateDetector, line: &str) -> Option<(String, Option<String>)> {
        let f = d.find(line, now(), &zurich())?;
        Some((
            format!("{}{}", &line[..f.start], &line[f.end..]),
            f.time.map(local),
        ))
    }

    #[test]
    fn line_begin_templates_cut_the_date() {
        let d = DateDetector::new(Some("{^LN-BEG}")).unwrap();
        assert!(d.line_start_only());
        assert_eq!(
            cut(&d, "Feb 21 09:21:54 xxx postfix/smtpd[1]: x"),
            Some((
                " xxx postfix/smtpd[1]: x".into(),
                Some("2005-02-21T09:21:54".into())
            ))
        );
        assert_eq!(
            cut(&d, "2005-01-23T21:59:59 host x").map(|c| c.1),
            Some(Some("2005-01-23T21:59:59".into()))
        );
        assert_eq!(
            cut(&d, "[17/Jun/2005 17:00:45] x"),
            Some(("[] x".into(), Some("2005-06-17T17:00:45".into())))
        );
        assert_eq!(cut(&d, "no date here"), None);
        assert_eq!(
            cut(&d, "Dec 25 02:35:54 x").unwrap().1,
            Some("2004-12-25T02:35:54".into())
        );
        let t = cut(&d, "@4000000044c3bd0d2e9dd3f4 imap-login: x").unwrap();
        assert_eq!(t.0, " imap-login: x");
    }

    #[test]
    fn custom_patterns() {
        let d = DateDetector::new(Some(r"^\[%d/%b/%Y %H:%M:%S\]")).unwrap();
        assert_eq!(
            cut(&d, "[17/Jun/2011 17:00:45] Relay attempt"),
            Some((" Relay attempt".into(), Some("2011-06-17T17:00:45".into())))
        );
        let d = DateDetector::new(Some("{NONE}")).unwrap();
        let f = d.find("Aug 14 11:00:00 x", now(), &zurich()).unwrap();
        assert_eq!((f.start, f.end, f.time), (0, 0, Some(now())));
        let d = DateDetector::new(Some("^{DATE}")).unwrap();
        assert_eq!(
            cut(&d, "2005-01-23 21:59:59,123 fail2ban.actions NOTICE").map(|c| c.1),
            Some(Some("2005-01-23T21:59:59".into()))
        );
        let d = DateDetector::new(Some("EPOCH")).unwrap();
        let f = d.find("1124013600 x", now(), &zurich()).unwrap();
        assert_eq!(f.time, Some(now()));
        assert!(DateDetector::new(Some("%Q")).is_err());
    }

    #[test]
    fn zones_and_offsets() {
        assert_eq!(zone_offset_minutes("+0130"), Some(90));
        assert_eq!(zone_offset_minutes("-05:00"), Some(-300));
        assert_eq!(zone_offset_minutes("CEST"), Some(120));
        assert_eq!(zone_offset_minutes("CET+01"), Some(120));
        assert_eq!(zone_offset_minutes("QQQ"), None);
        let d = DateDetector::new(None).unwrap();
        assert!(!d.line_start_only());
        assert_eq!(
            cut(&d, "2005-01-23T21:59:59+0100 x").unwrap().1,
            Some("2005-01-23T21:59:59".into())
        );
    }

    /// The syslog shortcut answers as the template's regex does.
    #[test]
    fn syslog_shortcut_agrees_with_the_template() {
        let d = DateDetector::new(Some("{^LN-BEG}")).unwrap();
        let t = d
            .templates
            .iter()
            .find(|t| t.syslog)
            .expect("syslog template");
        let mut below = crate::testrng::below(7);
        let months = ["Jan", "feb", "MAR", "Aug", "Dec", "Xyz"];
        let tails = [
            " host x", "", ":x", " 2005 x", ".123 x", "x", " 1x", "]", "  y", "5 x",
        ];
        for _ in 0..3000 {
            let mut line = String::new();
            line.push_str(months[below(months.len() as u64) as usize]);
            line.push_str([" ", "  ", " 0"][below(3) as usize]);
            line.push_str(&format!("{}", below(33)));
            line.push(' ');
            line.push_str(&format!(
                "{:02}:{:02}:{:02}",
                below(26),
                below(62),
                below(62)
            ));
            line.push_str(tails[below(tails.len() as u64) as usize]);
            let Some(f) = syslog_fast(&line, Some(now()), &zurich()) else {
                continue;
            };
            let Search::Hit(c) = t.regex.search(&line) else {
                panic!("shortcut found a date the template does not: {line:?}");
            };
            assert_eq!(c.span(1), Some((f.start, f.end)), "{line:?}");
            assert_eq!(f.time, time_of(&t.regex, &c, now(), &zurich()), "{line:?}");
        }
    }
}
