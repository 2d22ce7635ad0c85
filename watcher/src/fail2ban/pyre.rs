//! Python `re` pattern text -> Rust regex text, with Python's meaning.
//!
//! fail2ban's patterns are Python regexes. Most of them mean the same in
//! the `regex` crate once a few spellings change (`\d{,3}`, `[^[]`, `\Z`,
//! escapes of any punctuation, a literal `{`); those run on the
//! linear-time engine. The rest use look-around, back-references,
//! conditionals, atomic groups or possessive quantifiers: they are
//! translated for fancy-regex (a backtracking engine the caller runs with
//! a step limit), together with a loosened `regex`-crate pattern that
//! matches every line the real one can (look-arounds dropped, a
//! back-reference replaced by its group, both branches of a conditional),
//! so most lines are turned away before any backtracking.
//!
//! When look-arounds are all a pattern needs the backtracker for, it also
//! gets a marked form ([`Marked`]): the pattern with each look-around
//! replaced by an empty marker group. Look-arounds only ever remove paths,
//! so the linear engine's preferred match of the marked form is the
//! pattern's own match whenever its path passes no marker whose
//! look-around fails there; the caller checks the markers that took part
//! and asks the backtracker only when one cannot be settled.
//!
//! `^` and `$` keep Python's meaning on the texts fail2ban builds: each
//! line of the text ends in `\n`, `^` without MULTILINE is the start of
//! the text, and `$` is the end or the place before a final newline.
use std::fmt::Write;

/// A translated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// For the `regex` crate, or for fancy-regex when `backtrack` is set.
    pub pattern: String,
    /// The pattern needs a backtracking engine.
    pub backtrack: bool,
    /// `regex`-crate pattern matching at least every text `pattern` does
    /// (same as `pattern` when nothing needs backtracking).
    pub screen: String,
    /// For a pattern that needs the backtracker for look-arounds only.
    pub marked: Option<Marked>,
}

/// A pattern whose look-arounds are empty marker groups, for the `regex`
/// crate: the same groups as the pattern, in the same order, plus one
/// marker per look-around (named [`MARKER`]`N`, N its index in `sites`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub pattern: String,
    pub sites: Vec<Site>,
}

/// Prefix of the marker groups' names (no Python group name starts so:
/// they are checked against it).
pub const MARKER: &str = "__f2x_look";

/// One look-around of a marked pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub look: Look,
    /// The look-around's pattern for the `regex` crate; `None` when it
    /// holds a look-around itself (it cannot be settled without the
    /// backtracker).
    pub body: Option<String>,
    /// Inside a repetition: a path may pass it more than once, and the
    /// marker only tells where the last time was.
    pub repeated: bool,
    /// The alternatives around it, innermost first (each a `regex`-crate
    /// pattern with the flags in force): every match whose path passes the
    /// marker holds a match of each, so their required literals tell the
    /// lines on which no path can pass it.
    pub branches: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Ahead,
    NotAhead,
    Behind,
    NotBehind,
}

/// A pattern Python itself would refuse, or one of the few constructs
/// neither engine runs; `pos` counts characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {pos}")]
pub struct PyReError {
    pub pos: usize,
    pub message: String,
}

/// How the text the pattern runs on is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// Python's `re.MULTILINE` (fail2ban sets it on failregexes when
    /// `maxlines` > 1).
    pub multiline: bool,
    /// The text may hold several lines (a `maxlines` buffer): then `$`
    /// without MULTILINE needs a look-ahead.
    pub several_lines: bool,
}

pub fn translate(pat: &str, layout: Layout) -> Result<Translation, PyReError> {
    let mut p = Parser {
        s: pat.chars().collect(),
        i: 0,
        out: String::with_capacity(pat.len() + 16),
        screen: String::with_capacity(pat.len() + 16),
        marked: String::with_capacity(pat.len() + 16),
        markable: true,
        nonlinear: 0,
        sites: Vec::new(),
        open_sites: Vec::new(),
        flag_opens: Vec::new(),
        backtrack: false,
        multiline: layout.multiline,
        several: layout.several_lines,
        verbose: vec![false],
        groups: Vec::new(),
        names: Vec::new(),
    };
    p.global_flags()?;
    p.alternation(0)?;
    if p.i < p.s.len() {
        return Err(p.err("unbalanced parenthesis"));
    }

    let marked = (p.backtrack && p.markable && !p.sites.is_empty()).then(|| Marked {
        pattern: std::mem::take(&mut p.marked),
        sites: std::mem::take(&mut p.sites),
    });
    Ok(Translation {
        screen: if p.backtrack { p.screen } else { p.out.clone() },
        pattern: p.out,
        backtrack: p.backtrack,
        marked,
    })
}

struct Parser {
    s: Vec<char>,
    i: usize,
    out: String,
    screen: String,
    backtrack: bool,
    multiline: bool,
    several: bool,
    /// Verbose mode per open group (Python's `x`, local or global).
    verbose: Vec<bool>,
    /// Screen text of each capture group once closed (by number - 1).
    groups: Vec<Option<String>>,
    /// Name of each capture group (by number - 1).
    names: Vec<Option<String>>,
    /// `out` with look-arounds as marker groups (see [`Marked`]).
    marked: String,
    /// Nothing but look-arounds needs the backtracker (so far).
    markable: bool,
    /// Constructs written so far that the `regex` crate cannot run.
    nonlinear: usize,
    sites: Vec<Site>,
    /// Per open alternative: (start in `marked`, first site in it).
    open_sites: Vec<(usize, usize)>,
    /// The flag groups open around the current position, as `marked`
    /// text (`(?i:`).
    flag_opens: Vec<String>,
}

impl Parser {
    fn err(&self, m: &str) -> PyReError {
        PyReError {
            pos: self.i,
            message: m.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn starts(&self, lit: &str) -> bool {
        lit.chars().enumerate().all(|(k, c)| self.at(k) == Some(c))
    }

    fn both(&mut self, t: &str) {
        self.out.push_str(t);
        self.screen.push_str(t);
        self.marked.push_str(t);
    }

    /// A construct only the backtracker runs, other than a look-around.
    fn unmarkable(&mut self) {
        self.backtrack = true;
        self.markable = false;
        self.nonlinear += 1;
    }

    /// An alternative starts at the current position.
    fn open_branch(&mut self) {
        self.open_sites.push((self.marked.len(), self.sites.len()));
    }

    /// The alternative opened last ends here: its text goes to the sites in
    /// it.
    fn close_branch(&mut self) {
        let Some((start, first)) = self.open_sites.pop() else {
            return;
        };
        if first >= self.sites.len() {
            return;
        }
        let mut text = String::new();
        for f in &self.flag_opens {
            text.push_str(f);
        }
        text.push_str(&self.marked[start..]);
        for _ in &self.flag_opens {
            text.push(')');
        }
        for site in &mut self.sites[first..] {
            site.branches.push(text.clone());
        }
    }

    fn verbose(&self) -> bool {
        *self.verbose.last().unwrap_or(&false)
    }

    /// `(?aiLmsux)` groups at the very start apply to the whole pattern.
    fn global_flags(&mut self) -> Result<(), PyReError> {
        let mut flags = String::new();
        while self.starts("(?") {
            let mut k = 2;
            let mut fl = String::new();
            while let Some(c) = self.at(k) {
                if "aiLmsux".contains(c) {
                    fl.push(c);
                    k += 1;
                } else {
                    break;
                }
            }
            if fl.is_empty() || self.at(k) != Some(')') {
                break;
            }
            for c in fl.chars() {
                match c {
                    'i' | 's' if !flags.contains(c) => flags.push(c),
                    'm' => self.multiline = true,
                    'x' => self.verbose[0] = true,
                    'L' => return Err(self.err("the L (locale) flag is not supported")),
                    // `a` (ASCII classes) and `u` (Unicode, Python 3's default):
                    // the classes stay Unicode, a superset for `a`.
                    _ => {}
                }
            }
            self.i += k + 1;
        }
        if !flags.is_empty() {
            self.both(&format!("(?{flags})"));
            self.flag_opens.push(format!("(?{flags}:"));
        }
        Ok(())
    }

    /// Branches up to the closing `)` of the group at `depth` (or the end).
    fn alternation(&mut self, depth: usize) -> Result<(), PyReError> {
        loop {
            self.open_branch();
            self.sequence()?;
            self.close_branch();
            match self.peek() {
                Some('|') => {
                    self.i += 1;
                    self.both("|");
                }
                Some(')') if depth > 0 => return Ok(()),
                Some(')') => return Err(self.err("unbalanced parenthesis")),
                None if depth > 0 => return Err(self.err("missing ), unterminated subpattern")),
                None => return Ok(()),
                Some(_) => unreachable!("sequence stops at | or ) or the end"),
            }
        }
    }

    fn sequence(&mut self) -> Result<(), PyReError> {
        loop {
            if self.verbose() {
                self.skip_verbose();
            }
            match self.peek() {
                None | Some('|') | Some(')') => return Ok(()),
                _ => {}
            }
            let (o, s) = (self.out.len(), self.screen.len());
            let first_site = self.sites.len();
            let quantifiable = self.atom()?;
            if self.verbose() {
                self.skip_verbose();
            }
            self.quantifier(quantifiable, o, s, first_site)?;
        }
    }

    fn skip_verbose(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.i += 1;
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// One atom; `false` for ones that cannot be repeated (anchors).
    fn atom(&mut self) -> Result<bool, PyReError> {
        let c = self.peek().expect("caller checked");
        match c {
            '(' => self.group(),
            '[' => {
                self.class()?;
                Ok(true)
            }
            '\\' => self.escape(),
            '.' => {
                self.i += 1;
                self.both(".");
                Ok(true)
            }
            '^' => {
                self.i += 1;
                self.both(if self.multiline { "(?m:^)" } else { r"\A" });
                Ok(false)
            }
            '$' => {
                self.i += 1;
                if self.multiline || !self.several {
                    // The text ends in its only newline: before it or at
                    // the end, as Python's `$`.
                    self.both("(?m:$)");
                } else {
                    self.backtrack = true;
                    self.out.push_str(r"(?=\n?\z)");
                    self.screen.push_str("(?m:$)");
                    self.marked.push_str("(?m:$)");
                    self.site(Look::Ahead, Some(r"\n?\z".to_string()));
                }
                Ok(false)
            }
            '*' | '+' | '?' => Err(self.err("nothing to repeat")),
            '{' if self.repeat_spec().is_some() => Err(self.err("nothing to repeat")),
            _ => {
                self.i += 1;
                let mut t = String::new();
                push_literal(&mut t, c, false);
                self.both(&t);
                Ok(true)
            }
        }
    }

    /// `{m}`, `{m,}`, `{,n}`, `{m,n}` at the current position: (min, max,
    /// chars); anything else is a literal `{` in Python.
    fn repeat_spec(&self) -> Option<(u32, Option<u32>, usize)> {
        if self.peek() != Some('{') {
            return None;
        }
        let mut k = 1;
        let mut lo = String::new();
        while let Some(c) = self.at(k).filter(char::is_ascii_digit) {
            lo.push(c);
            k += 1;
        }
        let hi = if self.at(k) == Some(',') {
            k += 1;
            let mut hi = String::new();
            while let Some(c) = self.at(k).filter(char::is_ascii_digit) {
                hi.push(c);
                k += 1;
            }
            hi
        } else {
            if lo.is_empty() {
                return None;
            }
            lo.clone()
        };
        if self.at(k) != Some('}') {
            return None;
        }
        let min = if lo.is_empty() { 0 } else { lo.parse().ok()? };
        let max = if hi.is_empty() {
            None
        } else {
            Some(hi.parse().ok()?)
        };
        Some((min, max, k + 1))
    }

    /// `first_site`: the sites the atom holds start there.
    fn quantifier(
        &mut self,
        quantifiable: bool,
        o: usize,
        s: usize,
        first_site: usize,
    ) -> Result<(), PyReError> {
        let q = match self.peek() {
            Some(c @ ('*' | '+' | '?')) => {
                self.i += 1;
                c.to_string()
            }
            Some('{') => match self.repeat_spec() {
                Some((min, max, len)) => {
                    if max.is_some_and(|m| m < min) {
                        return Err(self.err("min repeat greater than max repeat"));
                    }
                    self.i += len;
                    match max {
                        Some(m) if m == min => format!("{{{min}}}"),
                        Some(m) => format!("{{{min},{m}}}"),
                        None => format!("{{{min},}}"),
                    }
                }
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        if !quantifiable {
            return Err(self.err("nothing to repeat"));
        }
        if q != "?" && q != "{0,1}" && q != "{1}" && q != "{0}" {
            for site in &mut self.sites[first_site..] {
                site.repeated = true;
            }
        }
        match self.peek() {
            Some('?') => {
                self.i += 1;
                self.both(&format!("{q}?"));
            }
            Some('+') => {
                // Possessive: an atomic group around the repetition.
                self.i += 1;
                self.unmarkable();
                self.out.insert_str(o, "(?>");
                self.out.push_str(&q);
                self.out.push(')');
                self.screen.push_str(&q);
                self.marked.push_str(&q);
            }
            _ => self.both(&q),
        }
        if matches!(self.peek(), Some('*' | '+' | '?'))
            || (self.peek() == Some('{') && self.repeat_spec().is_some())
        {
            return Err(self.err("multiple repeat"));
        }
        let _ = s;
        Ok(())
    }

    fn group(&mut self) -> Result<bool, PyReError> {
        let start = self.i;
        self.i += 1;
        if self.peek() != Some('?') {
            return self.capture(None);
        }
        self.i += 1;
        match self.peek() {
            Some(':') => {
                self.i += 1;
                self.both("(?:");
                self.inner(None)?;
                Ok(true)
            }
            Some('P') if self.at(1) == Some('<') => {
                self.i += 2;
                let name = self.name('>')?;
                self.capture(Some(name))
            }
            Some('<') if !matches!(self.at(1), Some('=' | '!')) => {
                self.i += 1;
                let name = self.name('>')?;
                self.capture(Some(name))
            }
            Some('P') if self.at(1) == Some('=') => {
                self.i += 2;
                let name = self.name(')')?;
                let n = self
                    .names
                    .iter()
                    .position(|x| x.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| self.err(&format!("unknown group name '{name}'")))?;
                self.backref(n + 1);
                Ok(true)
            }
            Some('#') => {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == ')' {
                        return Ok(false);
                    }
                }
                Err(self.err("missing ), unterminated comment"))
            }
            Some(c @ ('=' | '!')) => {
                self.i += 1;
                self.look(if c == '=' {
                    Look::Ahead
                } else {
                    Look::NotAhead
                })
            }
            Some('<') => {
                let c = self.at(1).expect("checked above");
                self.i += 2;
                self.look(if c == '=' {
                    Look::Behind
                } else {
                    Look::NotBehind
                })
            }
            Some('>') => {
                self.i += 1;
                self.unmarkable();
                self.out.push_str("(?>");
                self.screen.push_str("(?:");
                self.marked.push_str("(?:");
                self.inner(None)?;
                Ok(true)
            }
            Some('(') => {
                self.i += 1;
                self.conditional()
            }
            Some(c) if "aiLmsux-".contains(c) => self.local_flags(start),
            _ => Err(self.err("unknown extension")),
        }
    }

    /// The rest of a group after its opening, then `)`; `verbose` changes
    /// the mode inside.
    fn inner(&mut self, verbose: Option<bool>) -> Result<(), PyReError> {
        self.verbose.push(verbose.unwrap_or(self.verbose()));
        self.alternation(1)?;
        self.verbose.pop();
        self.i += 1; // ')'
        self.both(")");
        Ok(())
    }

    fn capture(&mut self, name: Option<String>) -> Result<bool, PyReError> {
        if let Some(n) = &name
            && self.names.iter().any(|x| x.as_ref() == Some(n))
        {
            return Err(self.err(&format!("redefinition of group name '{n}'")));
        }
        let n = self.groups.len();
        self.groups.push(None);
        self.names.push(name.clone());
        if name.as_deref().is_some_and(|n| n.starts_with(MARKER)) {
            self.markable = false;
        }
        match &name {
            Some(nm) => {
                self.out.push_str(&format!("(?P<{nm}>"));
                self.marked.push_str(&format!("(?P<{nm}>"));
            }
            None => {
                self.out.push('(');
                self.marked.push('(');
            }
        }
        self.screen.push_str("(?:");
        let s = self.screen.len();
        self.inner(None)?;
        let body = self.screen[s..self.screen.len() - 1].to_string();
        self.groups[n] = Some(body);
        Ok(true)
    }

    fn backref(&mut self, n: usize) {
        self.unmarkable();
        let _ = write!(self.out, r"\{n}");
        // A group referred to inside itself (or not yet closed) may hold anything.
        let body = self
            .groups
            .get(n - 1)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "(?s:.*)".to_string());
        let _ = write!(self.screen, "(?:{body})");
    }

    fn look(&mut self, look: Look) -> Result<bool, PyReError> {
        self.backtrack = true;
        self.out.push_str(match look {
            Look::Ahead => "(?=",
            Look::NotAhead => "(?!",
            Look::Behind => "(?<=",
            Look::NotBehind => "(?<!",
        });
        let keep = self.screen.len();
        self.screen.push_str("(?:");
        let keep_marked = self.marked.len();
        let (sites, groups, nonlinear) = (self.sites.len(), self.groups.len(), self.nonlinear);
        self.inner(None)?;
        // Dropped from the screen: a look-around only ever removes matches.
        self.screen.truncate(keep);
        // The marked form keeps an empty group in its place; the body is
        // what settles it.
        let body = self.marked[keep_marked..self.marked.len() - 1].to_string();
        self.marked.truncate(keep_marked);
        let plain = self.sites.len() == sites && self.nonlinear == nonlinear;
        self.sites.truncate(sites);
        if self.groups.len() > groups {
            // Groups set inside a look-around: the marked form lacks them.
            self.markable = false;
        }
        self.site(look, plain.then_some(body));
        Ok(false)
    }

    /// A marker for a look-around here; `body`: its pattern, if linear.
    fn site(&mut self, look: Look, body: Option<String>) {
        let k = self.sites.len();
        let _ = write!(self.marked, "(?P<{MARKER}{k}>)");
        self.sites.push(Site {
            look,
            body,
            repeated: false,
            branches: Vec::new(),
        });
    }

    fn conditional(&mut self) -> Result<bool, PyReError> {
        let mut id = String::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == ')' {
                break;
            }
            id.push(c);
        }
        let cond = if let Ok(n) = id.parse::<usize>() {
            if n == 0 || n > self.groups.len() {
                return Err(self.err(&format!("invalid group reference {n}")));
            }
            format!("({n})")
        } else if self.names.iter().any(|x| x.as_deref() == Some(id.as_str())) {
            format!("(<{id}>)")
        } else {
            return Err(self.err(&format!("unknown group name '{id}'")));
        };
        self.unmarkable();
        self.out.push_str(&format!("(?{cond}"));
        self.screen.push_str("(?:");
        self.marked.push_str("(?:");
        self.inner(None)?;
        Ok(true)
    }

    /// `(?i:...)`, `(?-i:...)`; a bare `(?i)` here is not at the start.
    fn local_flags(&mut self, start: usize) -> Result<bool, PyReError> {
        let mut on = String::new();
        let mut off = String::new();
        let mut neg = false;
        let mut verbose = None;
        loop {
            match self.peek() {
                Some('-') if !neg => neg = true,
                Some(c @ ('i' | 's' | 'm' | 'x' | 'a' | 'u' | 'L')) => {
                    if c == 'x' {
                        verbose = Some(!neg);
                    } else if c == 'i' || c == 's' || c == 'm' {
                        if neg { &mut off } else { &mut on }.push(c);
                    }
                }
                Some(':') => break,
                Some(')') => {
                    self.i = start;
                    return Err(self.err("global flags not at the start of the expression"));
                }
                _ => return Err(self.err("unknown flag")),
            }
            self.i += 1;
        }
        self.i += 1; // ':'
        // `m` changes what `^`/`$` become, which is decided here.
        let was = self.multiline;
        if on.contains('m') {
            self.multiline = true;
        }
        if off.contains('m') {
            self.multiline = false;
        }
        let on: String = on.chars().filter(|&c| c != 'm').collect();
        let off: String = off.chars().filter(|&c| c != 'm').collect();
        let open = match (on.is_empty(), off.is_empty()) {
            (true, true) => "(?:".to_string(),
            (false, true) => format!("(?{on}:"),
            (true, false) => format!("(?-{off}:"),
            (false, false) => format!("(?{on}-{off}:"),
        };
        self.both(&open);
        self.flag_opens.push(open);
        let r = self.inner(verbose);
        self.flag_opens.pop();
        self.multiline = was;
        r.map(|()| true)
    }

    fn name(&mut self, end: char) -> Result<String, PyReError> {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == end {
                let ok = n
                    .chars()
                    .next()
                    .is_some_and(|f| f.is_alphabetic() || f == '_')
                    && n.chars().all(|c| c.is_alphanumeric() || c == '_');
                if !ok {
                    return Err(self.err(&format!("bad character in group name '{n}'")));
                }
                if !n.is_ascii() {
                    return Err(self.err(&format!("group name '{n}' is not ASCII")));
                }
                return Ok(n);
            }
            n.push(c);
        }
        Err(self.err("missing group name terminator"))
    }

    fn escape(&mut self) -> Result<bool, PyReError> {
        self.i += 1;
        let Some(c) = self.peek() else {
            return Err(self.err("bad escape (end of pattern)"));
        };
        self.i += 1;
        let text = match c {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => format!("\\{c}"),
            'b' | 'B' => {
                self.both(&format!("\\{c}"));
                return Ok(false);
            }
            'A' => {
                self.both(r"\A");
                return Ok(false);
            }
            'Z' => {
                self.both(r"\z");
                return Ok(false);
            }
            '1'..='9' => {
                // Back-reference (1 or 2 digits), or a 3-digit octal escape.
                let mut digits = c.to_string();
                if let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    if c <= '3'
                        && ('0'..='7').contains(&d)
                        && self.at(1).is_some_and(|e| ('0'..='7').contains(&e))
                        && ('0'..='7').contains(&c)
                    {
                        let v = u32::from_str_radix(&format!("{c}{d}{}", self.at(1).unwrap()), 8)
                            .unwrap_or(0);
                        self.i += 2;
                        let mut t = String::new();
                        push_literal(&mut t, char::from_u32(v).unwrap_or('\0'), false);
                        self.both(&t);
                        return Ok(true);
                    }
                    digits.push(d);
                    self.i += 1;
                }
                let n: usize = digits.parse().unwrap_or(0);
                if n > self.groups.len() {
                    return Err(self.err(&format!("invalid group reference {n}")));
                }
                self.backref(n);
                return Ok(true);
            }
            _ => {
                let ch = self.char_escape(c)?;
                let mut t = String::new();
                push_literal(&mut t, ch, false);
                t
            }
        };
        self.both(&text);
        Ok(true)
    }

    /// A Python escape that stands for one character (after the `\`).
    fn char_escape(&mut self, c: char) -> Result<char, PyReError> {
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'f' => '\x0c',
            'v' => '\x0b',
            'a' => '\x07',
            '0' => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            v = v * 8 + d.to_digit(8).unwrap_or(0);
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(v).unwrap_or('\0')
            }
            'x' => self.hex(2)?,
            'u' => self.hex(4)?,
            'U' => self.hex(8)?,
            c if c.is_ascii_alphanumeric() => {
                return Err(self.err(&format!("bad escape \\{c}")));
            }
            c => c,
        })
    }

    fn hex(&mut self, n: usize) -> Result<char, PyReError> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err("incomplete escape"))?;
            v = v.wrapping_mul(16) + d;
            self.i += 1;
        }
        char::from_u32(v).ok_or_else(|| self.err("bad escape (not a character)"))
    }

    fn class(&mut self) -> Result<(), PyReError> {
        self.i += 1;
        let mut t = String::from("[");
        if self.peek() == Some('^') {
            self.i += 1;
            t.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated character set"));
            };
            if c == ']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            // One item: a class escape, or a character that may start a range.
            let lo = match self.class_char()? {
                ClassItem::Set(s) => {
                    t.push_str(&s);
                    continue;
                }
                ClassItem::Char(ch) => ch,
            };
            if self.peek() == Some('-') && self.at(1).is_some_and(|n| n != ']') {
                self.i += 1;
                let hi = match self.class_char()? {
                    ClassItem::Char(h) => h,
                    ClassItem::Set(_) => return Err(self.err("bad character range")),
                };
                if hi < lo {
                    return Err(self.err("bad character range"));
                }
                push_literal(&mut t, lo, true);
                t.push('-');
                push_literal(&mut t, hi, true);
            } else {
                push_literal(&mut t, lo, true);
            }
        }
        if t == "[" || t == "[^" {
            return Err(self.err("unterminated character set"));
        }
        t.push(']');
        self.both(&t);
        Ok(())
    }

    fn class_char(&mut self) -> Result<ClassItem, PyReError> {
        let c = self.peek().expect("caller checked");
        self.i += 1;
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.peek() else {
            return Err(self.err("bad escape (end of pattern)"));
        };
        self.i += 1;
        Ok(match e {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => ClassItem::Set(format!("\\{e}")),
            'b' => ClassItem::Char('\x08'),
            '1'..='7' => {
                // Octal in a class (Python has no back-references there).
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            v = v * 8 + d.to_digit(8).unwrap_or(0);
                            self.i += 1;
                        }
                        _ => break,
                    }
                }
                ClassItem::Char(char::from_u32(v).unwrap_or('\0'))
            }
            _ => ClassItem::Char(self.char_escape(e)?),
        })
    }
}

enum ClassItem {
    Char(char),
    /// A class escape such as `\d`, as Rust text.
    Set(String),
}

/// `c` as Rust regex text matching exactly that character.
fn push_literal(out: &mut String, c: char, in_class: bool) {
    let meta = if in_class {
        matches!(c, '[' | ']' | '\\' | '^' | '-' | '&' | '~')
    } else {
        matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        )
    };
    if meta {
        out.push('\\');
        out.push(c);
    } else if c == '\n' {
        out.push_str(r"\n");
    } else if c == '\t' {
        out.push_str(r"\t");
    } else if c == '\r' {
        out.push_str(r"\r");
    } else if c.is_control() || c == '#' || c == ' ' && in_class {
        let _ = write!(out, r"\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> Translation {
        translate(p, Layout::default()).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn matches(p: &str, hay: &str) -> bool {
        let tr = t(p);
        let screen = regex::Regex::new(&tr.screen).unwrap();
        let got = if tr.backtrack {
            fancy_regex::Regex::new(&tr.pattern)
                .unwrap()
                .is_match(hay)
                .unwrap()
        } else {
            regex::Regex::new(&tr.pattern).unwrap().is_match(hay)
        };
        // The screen never turns away a text the pattern matches.
        assert!(!got || screen.is_match(hay), "{p} screen lost {hay:?}");
        got
    }

    #[test]
    fn plain_patterns_stay_linear() {
        for (p, want) in [
            (r"\d{,3}x", r"\d{0,3}x"),
            (r"[^[]*\[", r"[^\[]*\["),
            (r"a\Z", r"a\z"),
            (r"^a$", r"\Aa(?m:$)"),
            (r"\<\>\-\;\ \'", r"<>-; '"),
            (r"a{b", r"a\{b"),
            (r"a{}", r"a\{\}"),
            (r"x{2,}y{,}", r"x{2,}y{0,}"),
            (r"[\]a-c&&~]", r"[\]a-c\&\&\~]"),
            (r"(?P<user>\S+)(?:a|b)", r"(?P<user>\S+)(?:a|b)"),
            (r"(?i)abc", r"(?i)abc"),
            (r"a(?i:b)c", r"a(?i:b)c"),
            (r"a(?#note)b", r"ab"),
            (r"\x41\u00e9\0\101", "A\u{e9}\\x{0}A"),
            (r"a#b", r"a\x{23}b"),
        ] {
            let tr = t(p);
            assert!(!tr.backtrack, "{p}");
            assert_eq!(tr.pattern, want, "{p}");
            regex::Regex::new(&tr.pattern).unwrap();
        }
    }

    #[test]
    fn python_dollar_matches_before_the_final_newline() {
        assert!(matches(r"^foo$", "foo\n"));
        assert!(matches(r"^foo\s*$", "foo \n"));
        assert!(!matches(r"^foo$", "foo bar\n"));
        assert!(!matches(r"^$", "foo\n"));
    }

    #[test]
    fn lookaround_and_backrefs_go_to_the_backtracker() {
        for p in [
            r"a(?!b)",
            r"(?<=x)y",
            r"(a)\1",
            r"(?P<n>a)(?P=n)",
            r"(?P<c>x)?(?(c)y|z)",
            r"(?>ab|a)c",
            r"a*+b",
        ] {
            let tr = t(p);
            assert!(tr.backtrack, "{p}");
            fancy_regex::Regex::new(&tr.pattern).unwrap_or_else(|e| panic!("{p}: {e}"));
            regex::Regex::new(&tr.screen).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        assert!(matches(r"^SASL (?!Invalid)\w+", "SASL PLAIN"));
        assert!(!matches(r"^SASL (?!Invalid)\w+", "SASL Invalid"));
        assert!(matches(r"^(\w+) \1$", "ab ab\n"));
        assert!(!matches(r"^(\w+) \1$", "ab ac\n"));
        assert!(matches(r"^(?P<c>x)?(?(c)y|z)$", "xy"));
        assert!(matches(r"^(?P<c>x)?(?(c)y|z)$", "z"));
        assert!(!matches(r"^(?P<c>x)?(?(c)y|z)$", "xz"));
        assert!(!matches(r"^a*+a", "aaa"));
    }

    #[test]
    fn python_errors_are_errors() {
        for p in [
            r"a**",
            r"*a",
            r"(a",
            r"a)",
            r"[a",
            r"\q",
            r"a(?i)b",
            r"(?P<x>a)(?P<x>b)",
            r"(?P=nope)",
            r"\3",
            r"[z-a]",
        ] {
            assert!(translate(p, Layout::default()).is_err(), "{p}");
        }
    }

    #[test]
    fn verbose_and_multiline_flags() {
        let tr = t("(?x) a b # comment\n c");
        assert_eq!(tr.pattern, "abc");
        let tr = t(r"(?m)^a$");
        assert_eq!(tr.pattern, r"(?m:^)a(?m:$)");
        let tr = translate(
            r"^a$",
            Layout {
                multiline: false,
                several_lines: true,
            },
        )
        .unwrap();
        assert!(tr.backtrack);
        let re = fancy_regex::Regex::new(&tr.pattern).unwrap();
        assert!(!re.is_match("a\nb\n").unwrap());
        assert!(re.is_match("a\n").unwrap());
    }

    #[test]
    fn look_arounds_become_markers() {
        let tr = t(r"^(?P<a>x)(?:lost(?! DATA) \w+|dis(?= from))(?<=s) end$");
        let m = tr.marked.expect("look-arounds only: a marked form");
        assert_eq!(
            m.pattern,
            format!(
                r"\A(?P<a>x)(?:lost(?P<{MARKER}0>) \w+|dis(?P<{MARKER}1>))(?P<{MARKER}2>) end(?m:$)"
            )
        );
        let looks: Vec<_> = m
            .sites
            .iter()
            .map(|s| (s.look, s.body.as_deref()))
            .collect();
        assert_eq!(
            looks,
            [
                (Look::NotAhead, Some(" DATA")),
                (Look::Ahead, Some(" from")),
                (Look::Behind, Some("s")),
            ]
        );
        // The innermost alternative first, then the whole pattern.
        assert_eq!(m.sites[0].branches[0], format!("lost(?P<{MARKER}0>) \\w+"));
        assert_eq!(m.sites[2].branches.len(), 1);
        regex::Regex::new(&m.pattern).unwrap();
        // Flags in force go with a branch.
        let m = t(r"(?i)a(?:b(?!c)|d)").marked.unwrap();
        assert_eq!(m.sites[0].branches[0], format!("(?i:b(?P<{MARKER}0>))"));
        // In a repetition, holding a look-around, holding a group.
        let m = t(r"(?:a(?!b))+").marked.unwrap();
        assert!(m.sites[0].repeated);
        let m = t(r"a(?!b(?=c))").marked.unwrap();
        assert_eq!((m.sites.len(), m.sites[0].body.as_deref()), (1, None));
        assert!(t(r"a(?=(?P<x>b))").marked.is_none());
        // Anything else the backtracker runs: no marked form.
        for p in [
            r"(a)\1(?!x)",
            r"(?>ab|a)c(?!x)",
            r"a*+b(?!x)",
            r"(x)?(?(1)y|z)(?!x)",
        ] {
            assert!(t(p).marked.is_none(), "{p}");
        }
        assert!(t(r"abc").marked.is_none());
    }
}
