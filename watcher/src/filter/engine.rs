//! One translated Python regex on the engine it needs: the `regex` crate's
//! linear engines when they can run it, else fancy-regex with a hard
//! backtracking limit per search. A search that hits the limit is no match
//! for the caller, and says so (`Search::Limit`), so it can be counted; it
//! never runs away with the CPU.
//!
//! A pattern that needs the backtracker for look-arounds only is first run
//! in its marked form (see [`pyre::Marked`]) on the linear engine, which
//! also reports where its path passed each look-around; when every
//! look-around it passed holds there (each settled by a linear search of
//! its own), that is the pattern's match, groups and all. Only a path
//! through a look-around that cannot be settled that way (a look-behind of
//! varying width, one inside a repetition or holding another) goes to the
//! backtracker. Where the preferred match of such a pattern ends (all a
//! prefregex head needs) is found without groups: each look-around that
//! gives one answer wherever a path could pass it either removes no path or
//! every path through it, and the marked variant that leaves those out
//! answers on the linear engine alone. Searches allocate nothing: the
//! groups of a match are kept on the stack.
//!
//! Every linear pattern also has an ASCII form (see [`Meta`]) that runs on
//! lines that are all ASCII: far smaller automata, the same answers.
use std::collections::HashMap;

use memchr::memmem;
use regex_automata::{
    Anchored, HalfMatch, Input, PatternID, meta,
    util::{captures::GroupInfo, primitives::NonMaxUsize},
};
use regex_syntax::hir::{self, Class, Hir, HirKind};

use super::{cache::Re, ends::Unbuilt};
use crate::fail2ban::pyre::{self, Layout, Look, Translation};

/// Backtracking steps one search may take. fail2ban's patterns need a few
/// hundred on a mail log line; a pattern that needs more on a line of at
/// most a few KiB is being driven into its exponential case.
pub const BACKTRACK_LIMIT: usize = 200_000;
/// Compiled size limit of one pattern (and of a backtracker's delegates).
const SIZE_LIMIT: usize = 8 << 20;
/// Group spans a match keeps on the stack (more go to the heap): 16
/// groups, more than fail2ban's patterns have.
const INLINE_SLOTS: usize = 32;
/// Look-arounds of a marked pattern that may be ruled out one by one (each
/// subset has its own variant of the pattern, built when first needed).
const MAX_DEAD_SITES: usize = 4;
/// Shortest literal worth telling a look-around's lines by.
const MIN_SITE_LITERAL: usize = 3;

pub struct PyRegex {
    engine: Engine,
    /// Capture group names by index (index 0: the whole match).
    names: Vec<Option<String>>,
    index: HashMap<String, usize>,
    /// The Python pattern as fail2ban compiles it.
    python: String,
    /// What the engine runs.
    rust: String,
}

enum Engine {
    Linear(Meta),
    Back {
        re: fancy_regex::Regex,
        screen: Meta,
        screen_text: String,
        /// The marked form, when the look-arounds are all that needs the
        /// backtracker; `None` also in plain mode (tests compare).
        marked: Option<Box<Marked>>,
    },
}

/// A marked pattern on the linear engine and how to settle its markers.
struct Marked {
    re: Meta,
    pattern: String,
    /// Variant i: the sites of the bits of i can be passed nowhere (their
    /// marker never matches), built when first needed; `None` when it does
    /// not build.
    variants: Vec<std::sync::OnceLock<Option<Meta>>>,
    /// Group i of the pattern is group `map[i]` of `re`.
    map: Vec<usize>,
    sites: Vec<Site>,
    /// Every site has a literal that each path through it matches: a text
    /// holding none of them cannot pass any, and the preferred match of
    /// `re` is the pattern's (see [`PyRegex::match_end`]).
    literals: Option<Vec<memmem::Finder<'static>>>,
}

struct Site {
    /// The marker's group in `Marked::re`.
    group: usize,
    look: Look,
    /// `None`: only the backtracker can settle it.
    check: Option<Meta>,
    /// A look-behind's length in bytes (they have a fixed width).
    width: usize,
    /// The literal right before the marker in its pattern: every path
    /// passes the marker just after one of its occurrences, so a
    /// look-around that fails after each occurrence fails on every path.
    before: Option<memmem::Finder<'static>>,
}

/// Spans of the groups of one match, on the stack for up to
/// [`INLINE_SLOTS`] / 2 groups.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "on the stack for one match; boxing the spans would allocate per match"
)]
enum Slots {
    Inline {
        len: usize,
        s: [Option<NonMaxUsize>; INLINE_SLOTS],
    },
    Heap(Vec<Option<NonMaxUsize>>),
}

impl Slots {
    fn new(len: usize) -> Slots {
        if len <= INLINE_SLOTS {
            Slots::Inline {
                len,
                s: [None; INLINE_SLOTS],
            }
        } else {
            Slots::Heap(vec![None; len])
        }
    }

    fn as_slice(&self) -> &[Option<NonMaxUsize>] {
        match self {
            Slots::Inline { len, s } => &s[..*len],
            Slots::Heap(v) => v,
        }
    }

    fn as_mut(&mut self) -> &mut [Option<NonMaxUsize>] {
        match self {
            Slots::Inline { len, s } => &mut s[..*len],
            Slots::Heap(v) => v,
        }
    }

    fn span(&self, group: usize) -> Option<(usize, usize)> {
        let s = self.as_slice();
        let (a, b) = ((*s.get(2 * group)?)?, (*s.get(2 * group + 1)?)?);
        Some((a.get(), b.get()))
    }
}

/// The groups of one match: spans by group index.
#[derive(Clone)]
pub struct Caps<'h> {
    pub hay: &'h str,
    slots: Slots,
}

impl std::fmt::Debug for Caps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.len()).map(|i| self.span(i)))
            .finish()
    }
}

impl<'h> Caps<'h> {
    pub fn get(&self, i: usize) -> Option<&'h str> {
        let (s, e) = self.span(i)?;
        self.hay.get(s..e)
    }

    pub fn span(&self, i: usize) -> Option<(usize, usize)> {
        self.slots.span(i)
    }

    /// Number of groups (with the whole match).
    pub fn len(&self) -> usize {
        self.slots.as_slice().len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "on the stack for one match; boxing the spans would allocate per match"
)]
pub enum Search<'h> {
    Hit(Caps<'h>),
    Miss,
    /// The backtracking limit was reached: no match, to be counted.
    Limit,
}

/// A text to search and whether it is all ASCII (see [`Meta`]), found once
/// for every pattern run on it or on a part of it.
#[derive(Debug, Clone, Copy)]
pub struct Text<'h> {
    pub s: &'h str,
    ascii: bool,
}

impl<'h> Text<'h> {
    pub fn new(s: &'h str) -> Text<'h> {
        Text {
            s,
            ascii: is_ascii(s.as_bytes()),
        }
    }

    /// `s`: a part of `whole`'s text, or a copy of parts of it.
    pub fn part_of(s: &'h str, whole: Text<'_>) -> Text<'h> {
        debug_assert!(
            !whole.ascii || s.is_ascii(),
            "{s:?} is not a part of {:?}",
            whole.s
        );
        Text {
            s,
            ascii: whole.ascii || s.is_ascii(),
        }
    }
}

/// `str::is_ascii` for a log line: std's checks 64-byte blocks and then
/// the rest byte by byte, which on a line of about a hundred bytes is most
/// of the line (a third of `find_single`'s own time). Here words of 8 bytes, the last
/// one overlapping the one before.
fn is_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let Some(last) = b.last_chunk::<8>() else {
        return b.iter().all(u8::is_ascii);
    };
    let (words, _) = b.as_chunks::<8>();
    let all = words.iter().fold(u64::from_ne_bytes(*last), |acc, w| {
        acc | u64::from_ne_bytes(*w)
    });
    all & HIGH == 0
}

/// Where the preferred match of a pattern anchored at the start ends,
/// as far as the linear engine alone can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Miss,
    At(usize),
    /// It may match: a full [`PyRegex::search`] decides.
    Unsure,
}

/// A pattern on the linear engine, and beside it the same pattern with
/// every class cut down to its ASCII part, for texts that are all ASCII
/// (nearly every log line). On such a text no class can match anything
/// else, and a Unicode word boundary sees only ASCII characters, so the
/// two give the same answers, groups included; the ASCII form's automata
/// are a fraction of the size (`\w`, `\d`, `\S`, `[^[]` in UTF-8 are
/// hundreds of states), which is what the captures engines pay for by the
/// byte.
struct Meta {
    any: Re,
    /// `None` when the pattern has no class or boundary to cut down.
    ascii: Option<Re>,
    /// For a pattern anchored at the start: the same pattern (in its ASCII
    /// form when it has one, and then only for ASCII texts) without the
    /// lazy DFA, so a search for groups goes straight to the capture
    /// engines. The regex crate first runs the DFA to find where the match
    /// ends and then the backtracker on that span: on log lines, which a
    /// failregex's literals already picked and which nearly all match, the
    /// DFA's pass is wasted work (the regex crate's own comment says so).
    /// The answers, groups included, are the same: every engine of the
    /// crate reports the leftmost-first match.
    groups: Option<Groups>,
    /// For a pattern anchored at the start: the walker of [`Meta::end`],
    /// built when first needed. Boxed: most patterns never need it, and a
    /// built one is far larger than a pointer.
    ends: Option<Box<Unbuilt>>,
}

struct Groups {
    re: Re,
    /// Built from the ASCII form: only for texts that are all ASCII.
    ascii: bool,
    split: Option<Split>,
}

/// A pattern P = A·G·B cut around its groups that can hold text: A and B
/// hold none (B but for empty ones at its very end, the markers of a
/// look-ahead there, which are empty at P's end). The DFA finds where A's
/// preferred match ends, the capture engines run G alone from there, and
/// the DFA checks B where G's preferred match ends. Leftmost-first tries
/// A's paths in order, G's after each and B's after each of those, so when
/// G and B match after the preferred paths before them that is P's
/// preferred match, G's groups are P's and B's end is P's end; when one
/// does not, P itself is searched (and when A does not match, P cannot).
/// The capture engines pay by the byte and by the state; G (the host) is a
/// short part of a failregex.
struct Split {
    /// A; `None` when G starts the pattern.
    pre: Option<Re>,
    /// G: the groups.
    head: Re,
    /// B; `None` when G ends the pattern (but for markers).
    tail: Option<Re>,
    /// G opens with an alternation whose first branch is the host tags'
    /// IPv4 one: that branch is scanned by hand ([`super::ip4`]) before the
    /// capture engines are asked.
    host: Option<HostCut>,
}

/// G as H·R, H the host's alternation: when H's IPv4 branch matches, that
/// is H's preferred match, and R's preferred match after it is G's (else P
/// itself is searched, as when B fails). When it does not and H's other
/// branch is the IPv6 one, that branch's preferred match is H's.
struct HostCut {
    /// Groups H holds (the IPv4 branch's comes first).
    groups: usize,
    /// H is the two branches of the host tags, IPv4 then IPv6, one group
    /// each: the second is scanned by hand ([`super::ip6`]) too.
    ip6: bool,
    /// R on the capture engines; `None` when H ends G. Its groups keep
    /// their numbers in P, so it fills P's slots after H's.
    rest: Option<Re>,
}

/// Every search takes `ascii`: whether the haystack is all ASCII, found
/// once per line by the caller ([`Text`]), not by each search over again
/// (a line goes through several patterns, and the scan costs as much as a
/// short search).
impl Meta {
    fn on(&self, ascii: bool) -> &Re {
        match &self.ascii {
            Some(a) if ascii => a,
            _ => &self.any,
        }
    }

    fn search_slots(
        &self,
        input: &Input<'_>,
        ascii: bool,
        slots: &mut [Option<NonMaxUsize>],
    ) -> Option<PatternID> {
        match &self.groups {
            Some(g) if slots.len() > 2 && ((ascii && self.ascii.is_some()) || !g.ascii) => match &g
                .split
            {
                Some(sp)
                    if input.get_span() == (0..input.haystack().len()) && !input.get_earliest() =>
                {
                    sp.search_slots(&g.re, input, slots)
                }
                _ => g.re.search_slots(input, slots),
            },
            _ => self.on(ascii).search_slots(input, slots),
        }
    }

    fn search_half(&self, input: &Input<'_>, ascii: bool) -> Option<HalfMatch> {
        self.on(ascii).search_half(input)
    }

    /// Where the preferred match at the start of `t` ends, the pattern
    /// anchored there: on an ASCII text walked by [`super::ends::Ends`], which resumes
    /// after the start the last text shared with it.
    fn end(&self, t: Text<'_>) -> Option<usize> {
        if t.ascii
            && let Some(ends) = self.ends.as_deref().and_then(|u| u.get(SIZE_LIMIT))
            && let Some(end) = ends.end(t.s.as_bytes())
        {
            return end;
        }
        self.search_half(&Input::new(t.s).anchored(Anchored::Yes), t.ascii)
            .map(|h| h.offset())
    }

    fn is_match<'h, I: Into<Input<'h>>>(&self, input: I, ascii: bool) -> bool {
        self.on(ascii).is_match(input)
    }

    fn group_info(&self) -> &GroupInfo {
        self.any.group_info()
    }
}

impl Split {
    /// `hir` cut as [`Split`] says; `None` when there is nothing to cut.
    fn new(hir: &Hir, build: impl Fn(&Hir, bool) -> Result<Re, String>) -> Option<Split> {
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let empty_group = |h: &Hir| match h.kind() {
            HirKind::Capture(c) => matches!(c.sub.kind(), HirKind::Empty),
            _ => false,
        };
        let markers = parts.iter().rev().take_while(|h| empty_group(h)).count();
        let body = &parts[..parts.len() - markers];
        let groups = |h: &Hir| h.properties().explicit_captures_len() > 0;
        let mut first = body.iter().position(groups)?;
        let last = body.iter().rposition(groups)?;
        // Only `^` before G: nothing for a DFA to do.
        if body[..first]
            .iter()
            .all(|h| matches!(h.kind(), HirKind::Look(_)))
        {
            first = 0;
        }
        let (a, g, b) = (&body[..first], &body[first..=last], &body[last + 1..]);
        if a.is_empty() && b.is_empty() {
            return None;
        }
        let part = |p: &[Hir], dfa: bool| build(&Hir::concat(p.to_vec()), dfa).ok();
        let pre = if a.is_empty() {
            None
        } else {
            Some(part(a, true)?)
        };
        let tail = if b.is_empty() {
            None
        } else {
            Some(part(b, true)?)
        };
        let head = part(g, false)?;
        // G may open with the `^` that holds at 0, where G starts then.
        let starts = g
            .iter()
            .take_while(|h| *h.kind() == HirKind::Look(hir::Look::Start))
            .count();
        let host = match g.get(starts).map(Hir::kind) {
            // A rest that does not build leaves G whole, not P uncut.
            Some(HirKind::Alternation(branches)) if super::ip4::is_branch(&branches[0]) => {
                let rest = &g[starts + 1..];
                let rest = if rest.is_empty() {
                    Some(None)
                } else {
                    part(rest, false).map(Some)
                };
                let groups = g[starts].properties().explicit_captures_len();
                rest.map(|rest| HostCut {
                    groups,
                    ip6: groups == 2 && branches.len() == 2 && super::ip6::is_branch(&branches[1]),
                    rest,
                })
            }
            _ => None,
        };
        Some(Split {
            pre,
            head,
            tail,
            host,
        })
    }

    /// P's search for groups over the whole of `input`'s haystack
    /// (`whole`: P on the capture engines).
    fn search_slots(
        &self,
        whole: &Re,
        input: &Input<'_>,
        slots: &mut [Option<NonMaxUsize>],
    ) -> Option<PatternID> {
        let hay = input.haystack();
        let from = |at: usize| Input::new(hay).range(at..).anchored(Anchored::Yes);
        let g = match &self.pre {
            Some(pre) => pre.search_half(&from(0))?.offset(),
            None => 0,
        };
        // The groups `head` holds come first in P.
        let n = self.head.group_info().slot_len().min(slots.len());
        let fallback = |slots: &mut [Option<NonMaxUsize>]| {
            slots.fill(None);
            whole.search_slots(input, slots)
        };
        // (H, which of its groups took part, the group's span.)
        let by_hand = match &self.host {
            Some(h) if n >= 2 + 2 * h.groups => match super::ip4::find(hay, g) {
                Some(m) => Some((h, 0, m)),
                None if h.ip6 => super::ip6::find(hay, g).map(|e| (h, 1, (g, e))),
                None => None,
            },
            _ => None,
        };
        if let Some((h, group, (s, e))) = by_hand {
            match &h.rest {
                // R's end is G's (slot 1; slot 0 is set below).
                Some(rest) => {
                    if rest.search_slots(&from(e), &mut slots[..n]).is_none() {
                        return fallback(slots);
                    }
                }
                None => {
                    slots[..n].fill(None);
                    slots[1] = NonMaxUsize::new(e);
                }
            }
            // H's groups: only the branch's took part.
            slots[2..2 + 2 * h.groups].fill(None);
            (slots[2 + 2 * group], slots[3 + 2 * group]) =
                (NonMaxUsize::new(s), NonMaxUsize::new(e));
        } else if self.head.search_slots(&from(g), &mut slots[..n]).is_none() {
            // With nothing before G, P has no other path to try.
            return if self.pre.is_some() {
                fallback(slots)
            } else {
                None
            };
        }
        let mut end = slots[1]?.get();
        if let Some(tail) = &self.tail {
            match tail.search_half(&from(end)) {
                Some(h) => end = h.offset(),
                None => return fallback(slots),
            }
        }
        let end = NonMaxUsize::new(end);
        slots[0] = NonMaxUsize::new(0);
        slots[1] = end;
        for s in &mut slots[n..] {
            *s = end;
        }
        Some(PatternID::ZERO)
    }
}

fn meta(pattern: &str) -> Result<Meta, String> {
    meta_with(pattern, true)
}

fn meta_with(pattern: &str, ascii: bool) -> Result<Meta, String> {
    let hir = regex_automata::util::syntax::parse(pattern).map_err(|e| e.to_string())?;
    let build = |h: &Hir| {
        meta::Builder::new()
            .configure(meta::Config::new().nfa_size_limit(Some(SIZE_LIMIT)))
            .build_from_hir(h)
            .map(Re::from)
            .map_err(|e| e.to_string())
    };
    let any = build(&hir)?;
    let ascii_hir = ascii.then(|| ascii_only(&hir)).flatten();
    let ascii = match &ascii_hir {
        Some(h) => Some(build(h)?),
        None => None,
    };
    let anchored = hir
        .properties()
        .look_set_prefix()
        .contains(hir::Look::Start);
    let ends = anchored.then(|| Box::new(Unbuilt::new(pattern)));
    let groups = if anchored && hir.properties().explicit_captures_len() > 0 {
        let h = ascii_hir.as_ref().unwrap_or(&hir);
        // `dfa`: the lazy DFA and the full one (for a part without groups).
        let engines = |h: &Hir, dfa: bool| {
            meta::Builder::new()
                .configure(
                    meta::Config::new()
                        .nfa_size_limit(Some(SIZE_LIMIT))
                        .hybrid(dfa)
                        .dfa(dfa),
                )
                .build_from_hir(h)
                .map(Re::from)
                .map_err(|e| e.to_string())
        };
        let re = engines(h, false)?;
        Some(Groups {
            re,
            ascii: ascii_hir.is_some(),
            split: Split::new(h, engines),
        })
    } else {
        None
    };
    Ok(Meta {
        any,
        ascii,
        groups,
        ends,
    })
}

/// `hir` as it runs on ASCII texts: each class cut down to its ASCII part,
/// each Unicode word boundary an ASCII one; `None` when nothing changes.
/// Groups, repetitions and the order of alternatives stay as they are.
pub(super) fn ascii_only(hir: &Hir) -> Option<Hir> {
    fn walk(h: &Hir, changed: &mut bool) -> Hir {
        match h.kind() {
            HirKind::Class(Class::Unicode(c)) => {
                let mut a = c.clone();
                a.intersect(&hir::ClassUnicode::new([hir::ClassUnicodeRange::new(
                    '\0', '\x7f',
                )]));
                if a != *c {
                    *changed = true;
                }
                Hir::class(Class::Unicode(a))
            }
            HirKind::Class(Class::Bytes(c)) => {
                let mut a = c.clone();
                a.intersect(&hir::ClassBytes::new([hir::ClassBytesRange::new(0, 0x7f)]));
                if a != *c {
                    *changed = true;
                }
                Hir::class(Class::Bytes(a))
            }
            HirKind::Look(l) => {
                use hir::Look as L;
                let a = match *l {
                    L::WordUnicode => L::WordAscii,
                    L::WordUnicodeNegate => L::WordAsciiNegate,
                    L::WordStartUnicode => L::WordStartAscii,
                    L::WordEndUnicode => L::WordEndAscii,
                    L::WordStartHalfUnicode => L::WordStartHalfAscii,
                    L::WordEndHalfUnicode => L::WordEndHalfAscii,
                    other => other,
                };
                if a != *l {
                    *changed = true;
                }
                Hir::look(a)
            }
            HirKind::Repetition(r) => Hir::repetition(hir::Repetition {
                min: r.min,
                max: r.max,
                greedy: r.greedy,
                sub: Box::new(walk(&r.sub, changed)),
            }),
            HirKind::Capture(c) => Hir::capture(hir::Capture {
                index: c.index,
                name: c.name.clone(),
                sub: Box::new(walk(&c.sub, changed)),
            }),
            HirKind::Concat(v) => Hir::concat(v.iter().map(|x| walk(x, changed)).collect()),
            HirKind::Alternation(v) => {
                Hir::alternation(v.iter().map(|x| walk(x, changed)).collect())
            }
            HirKind::Empty | HirKind::Literal(_) => h.clone(),
        }
    }
    let mut changed = false;
    let a = walk(hir, &mut changed);
    changed.then_some(a)
}

fn group_names(re: &Meta) -> Vec<Option<String>> {
    names_of(&re.any)
}

fn names_of(re: &Re) -> Vec<Option<String>> {
    re.group_info()
        .pattern_names(regex_automata::PatternID::ZERO)
        .map(|n| n.map(str::to_string))
        .collect()
}

impl PyRegex {
    /// `python`: a Python pattern (tags already resolved).
    pub fn new(python: &str, layout: Layout) -> Result<PyRegex, String> {
        Self::build(python, layout, true)
    }

    /// Without the marked form: every pattern that needs the backtracker
    /// runs on it (the reference the fast path is tested against).
    pub fn new_plain(python: &str, layout: Layout) -> Result<PyRegex, String> {
        Self::build(python, layout, false)
    }

    fn build(python: &str, layout: Layout, fast: bool) -> Result<PyRegex, String> {
        let Translation {
            pattern,
            backtrack,
            screen,
            marked,
        } = pyre::translate(python, layout).map_err(|e| e.to_string())?;
        let (engine, names) = if backtrack {
            let re = fancy_regex::RegexBuilder::new(&pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            let screen_text = screen;
            let screen = meta(&screen_text)?;
            let names: Vec<Option<String>> =
                re.capture_names().map(|n| n.map(str::to_string)).collect();
            let marked = match marked.filter(|_| fast) {
                Some(m) => Some(Box::new(Marked::new(&m, names.len())?)),
                None => None,
            };
            (
                Engine::Back {
                    re,
                    screen,
                    screen_text,
                    marked,
                },
                names,
            )
        } else {
            let re = meta(&pattern)?;
            let names = group_names(&re);
            (Engine::Linear(re), names)
        };
        let index = names
            .iter()
            .enumerate()
            .filter_map(|(i, n): (usize, &Option<String>)| Some((n.clone()?, i)))
            .collect();
        Ok(PyRegex {
            engine,
            names,
            index,
            python: python.to_string(),
            rust: pattern,
        })
    }

    pub fn python(&self) -> &str {
        &self.python
    }

    pub fn rust(&self) -> &str {
        &self.rust
    }

    pub fn backtracks(&self) -> bool {
        matches!(self.engine, Engine::Back { .. })
    }

    /// Matches on the linear engine unless a look-around it passed cannot
    /// be settled there.
    pub fn has_marked_form(&self) -> bool {
        matches!(
            self.engine,
            Engine::Back {
                marked: Some(_),
                ..
            }
        )
    }

    /// The `regex`-crate pattern every match satisfies (the pattern itself
    /// on the linear engine): for literal extraction.
    pub fn screen_pattern(&self) -> &str {
        match &self.engine {
            Engine::Linear(_) => &self.rust,
            Engine::Back { screen_text, .. } => screen_text,
        }
    }

    pub fn group(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Number of groups, the whole match included.
    pub fn group_count(&self) -> usize {
        self.names.len()
    }

    pub fn names(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i, n.as_deref()?)))
    }

    pub fn search<'h>(&self, hay: &'h str) -> Search<'h> {
        self.search_text(Text::new(hay))
    }

    pub fn search_text<'h>(&self, text: Text<'h>) -> Search<'h> {
        let (hay, ascii) = (text.s, text.ascii);
        match &self.engine {
            Engine::Linear(re) => {
                let mut slots = Slots::new(2 * self.names.len());
                match re.search_slots(&Input::new(hay), ascii, slots.as_mut()) {
                    Some(_) => Search::Hit(Caps { hay, slots }),
                    None => Search::Miss,
                }
            }
            Engine::Back {
                re, screen, marked, ..
            } => {
                match marked {
                    Some(m) => match m.search(text, self.names.len()) {
                        Marking::Miss => return Search::Miss,
                        Marking::Hit(slots) => return Search::Hit(Caps { hay, slots }),
                        Marking::Unsettled => {}
                    },
                    None => {
                        if !screen.is_match(hay, ascii) {
                            return Search::Miss;
                        }
                    }
                }
                match re.captures(hay) {
                    Ok(Some(c)) => {
                        let mut slots = Slots::new(2 * c.len());
                        let s = slots.as_mut();
                        for i in 0..c.len() {
                            if let Some(m) = c.get(i) {
                                s[2 * i] = NonMaxUsize::new(m.start());
                                s[2 * i + 1] = NonMaxUsize::new(m.end());
                            }
                        }
                        Search::Hit(Caps { hay, slots })
                    }
                    Ok(None) => Search::Miss,
                    Err(_) => Search::Limit,
                }
            }
        }
    }

    /// `Some(found)`, or `None` when the limit was reached.
    pub fn is_match(&self, hay: &str) -> Option<bool> {
        self.is_match_text(Text::new(hay))
    }

    pub fn is_match_text(&self, text: Text<'_>) -> Option<bool> {
        let (hay, ascii) = (text.s, text.ascii);
        match &self.engine {
            Engine::Linear(re) => Some(re.is_match(hay, ascii)),
            Engine::Back {
                marked: Some(_), ..
            } => match self.search_text(text) {
                Search::Hit(_) => Some(true),
                Search::Miss => Some(false),
                Search::Limit => None,
            },
            Engine::Back { re, screen, .. } => {
                if !screen.is_match(hay, ascii) {
                    return Some(false);
                }
                re.is_match(hay).ok()
            }
        }
    }

    /// The end of the match at the start of `hay` (the pattern is anchored
    /// there: it begins with `^`), from the linear engine's search for the
    /// end alone; [`End::Unsure`] when a look-around may be on its path.
    pub fn match_end(&self, hay: &str) -> End {
        self.match_end_text(Text::new(hay))
    }

    pub fn match_end_text(&self, text: Text<'_>) -> End {
        match &self.engine {
            Engine::Linear(re) => re.end(text).map_or(End::Miss, End::At),
            Engine::Back {
                marked: Some(m), ..
            } => m.end(text),
            Engine::Back { screen, .. } => {
                if screen.end(text).is_none() {
                    End::Miss
                } else {
                    End::Unsure
                }
            }
        }
    }
}

/// What the marked form says about one text.
#[expect(
    clippy::large_enum_variant,
    reason = "on the stack for one match; boxing the spans would allocate per match"
)]
enum Marking {
    Miss,
    /// The pattern's match (the pattern's groups, markers left out).
    Hit(Slots),
    /// Its path passed a look-around the linear engine cannot settle, or
    /// one that does not hold there (a later path may be the match).
    Unsettled,
}

impl Marked {
    fn new(m: &pyre::Marked, groups: usize) -> Result<Marked, String> {
        let re = meta(&m.pattern)?;
        let names = group_names(&re);
        let mut map = Vec::with_capacity(groups);
        let mut site_groups = vec![0; m.sites.len()];
        for (i, n) in names.iter().enumerate() {
            match n.as_deref().and_then(|n| n.strip_prefix(pyre::MARKER)) {
                Some(k) => {
                    let k: usize = k.parse().map_err(|_| format!("marker group {k}"))?;
                    *site_groups
                        .get_mut(k)
                        .ok_or_else(|| format!("marker group {k}"))? = i;
                }
                None => map.push(i),
            }
        }
        if map.len() != groups {
            return Err(format!(
                "marked form has {} groups, the pattern {groups}",
                map.len()
            ));
        }
        let mut sites = Vec::with_capacity(m.sites.len());
        let mut literals = Some(Vec::new());
        for (s, &group) in m.sites.iter().zip(&site_groups) {
            let mut width = 0;
            let check = match &s.body {
                Some(body) if !s.repeated => {
                    let ok = match s.look {
                        Look::Ahead | Look::NotAhead => true,
                        Look::Behind | Look::NotBehind => match fixed_width(body) {
                            Some(w) => {
                                width = w;
                                true
                            }
                            None => false,
                        },
                    };
                    if ok {
                        Some(meta(&format!("(?:{body})"))?)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let lit = s
                .branches
                .iter()
                .filter_map(|b| longest_literal(b))
                .max_by_key(Vec::len);
            let name = format!("{}{}", pyre::MARKER, sites.len());
            let before = s
                .branches
                .first()
                .and_then(|b| literal_before(b, &name))
                .map(|l| memmem::Finder::new(&l).into_owned());
            match (&mut literals, lit) {
                (Some(ls), Some(l)) => ls.push(memmem::Finder::new(&l).into_owned()),
                (ls, _) => *ls = None,
            }
            sites.push(Site {
                group,
                look: s.look,
                check,
                width,
                before,
            });
        }
        let variants = if sites.len() <= MAX_DEAD_SITES {
            (0..1usize << sites.len())
                .map(|_| std::sync::OnceLock::new())
                .collect()
        } else {
            Vec::new()
        };
        Ok(Marked {
            re,
            pattern: m.pattern.clone(),
            variants,
            map,
            sites,
            literals,
        })
    }

    /// The marked pattern with the sites of `dead` never passed.
    fn variant(&self, dead: usize) -> Option<&Meta> {
        if dead == 0 {
            return Some(&self.re);
        }
        self.variants
            .get(dead)?
            .get_or_init(|| {
                let mut p = self.pattern.clone();
                for k in (0..self.sites.len()).filter(|k| dead & (1 << k) != 0) {
                    let m = format!("(?P<{}{k}>)", pyre::MARKER);
                    let never = format!(r"(?P<{}{k}>[^\s\S])", pyre::MARKER);
                    p = p.replace(&m, &never);
                }
                meta(&p).ok()
            })
            .as_ref()
    }

    /// Whether `site`'s look-around holds at `p` in `t`.
    fn holds(site: &Site, check: &Meta, t: Text<'_>, p: usize) -> bool {
        let (hay, ascii) = (t.s, t.ascii);
        let holds = match site.look {
            Look::Ahead | Look::NotAhead => {
                check.is_match(Input::new(hay).range(p..).anchored(Anchored::Yes), ascii)
            }
            Look::Behind | Look::NotBehind => {
                p >= site.width
                    && hay.is_char_boundary(p - site.width)
                    && check.is_match(
                        Input::new(hay)
                            .range(p - site.width..p)
                            .anchored(Anchored::Yes),
                        ascii,
                    )
            }
        };
        holds == matches!(site.look, Look::Ahead | Look::Behind)
    }

    /// `site` fails wherever a path could pass it in `t`.
    fn fails_everywhere(site: &Site, check: &Meta, t: Text<'_>) -> bool {
        Self::everywhere(site, check, t) == Some(false)
    }

    /// `Some(holds)` when the look-around of `site` gives the same answer
    /// at every place a path could pass its marker in `t` (just after an
    /// occurrence of the literal before it); `None` when the places
    /// disagree or are not known. With no such place, `Some(true)`: no
    /// path passes it.
    fn everywhere(site: &Site, check: &Meta, t: Text<'_>) -> Option<bool> {
        let before = site.before.as_ref()?;
        let (b, n) = (t.s.as_bytes(), before.needle().len());
        let mut at = 0;
        let mut answer = None;
        while let Some(i) = before.find(&b[at..]) {
            let h = Self::holds(site, check, t, at + i + n);
            if answer.is_some_and(|a| a != h) {
                return None;
            }
            answer = Some(h);
            at += i + 1;
        }
        Some(answer.unwrap_or(true))
    }

    /// [`PyRegex::match_end`] of a marked pattern. A site whose
    /// look-around holds wherever a path could pass it removes no path: its
    /// marker is as good as the look-around. One that fails everywhere
    /// removes every path through it: the variant without it has the
    /// pattern's paths. When every site is one or the other, the preferred
    /// match of that variant is the pattern's, and the linear engine's
    /// search for its end alone answers.
    fn end(&self, t: Text<'_>) -> End {
        let at = |re: &Meta| re.end(t).map_or(End::Miss, End::At);
        let mut dead = 0usize;
        for (k, site) in self.sites.iter().enumerate() {
            let settled = site
                .check
                .as_ref()
                .and_then(|check| Self::everywhere(site, check, t));
            match settled {
                Some(true) => {}
                Some(false) if k < MAX_DEAD_SITES => dead |= 1 << k,
                // Without a literal of any site in the text no path
                // passes one: the marked form's match is the pattern's.
                _ => {
                    return match &self.literals {
                        Some(ls) if ls.iter().all(|l| l.find(t.s.as_bytes()).is_none()) => {
                            at(&self.re)
                        }
                        _ => End::Unsure,
                    };
                }
            }
        }
        self.variant(dead).map_or(End::Unsure, at)
    }

    fn search(&self, t: Text<'_>, groups: usize) -> Marking {
        let mut all = Slots::new(self.re.group_info().slot_len());
        // Sites found to fail on every path: the variant without them has
        // the pattern's matches, and the next preferred path.
        let mut dead = 0usize;
        'paths: loop {
            let Some(re) = self.variant(dead) else {
                return Marking::Unsettled;
            };
            if re
                .search_slots(&Input::new(t.s), t.ascii, all.as_mut())
                .is_none()
            {
                return Marking::Miss;
            }
            for (k, site) in self.sites.iter().enumerate() {
                let Some((p, _)) = all.span(site.group) else {
                    continue;
                };
                let Some(check) = &site.check else {
                    return Marking::Unsettled;
                };
                if Self::holds(site, check, t, p) {
                    continue;
                }
                if dead & (1 << k) == 0
                    && k < MAX_DEAD_SITES
                    && Self::fails_everywhere(site, check, t)
                {
                    dead |= 1 << k;
                    continue 'paths;
                }
                return Marking::Unsettled;
            }
            break;
        }
        let mut slots = Slots::new(2 * groups);
        let (from, to) = (all.as_slice(), slots.as_mut());
        for (i, &g) in self.map.iter().enumerate() {
            to[2 * i] = from[2 * g];
            to[2 * i + 1] = from[2 * g + 1];
        }
        Marking::Hit(slots)
    }
}

/// The one length in bytes of every match of `pattern`, if it has one.
fn fixed_width(pattern: &str) -> Option<usize> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let p = hir.properties();
    match (p.minimum_len(), p.maximum_len()) {
        (Some(a), Some(b)) if a == b => Some(a),
        _ => None,
    }
}

/// The literal right before the group `marker` in `pattern`: the run of
/// literals before it in the sequence that holds it.
fn literal_before(pattern: &str, marker: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::{Hir, HirKind};
    fn walk(h: &Hir, marker: &str) -> Option<Option<Vec<u8>>> {
        match h.kind() {
            HirKind::Concat(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if let HirKind::Capture(c) = p.kind()
                        && c.name.as_deref() == Some(marker)
                    {
                        let mut lit = Vec::new();
                        for q in parts[..i].iter().rev() {
                            match q.kind() {
                                HirKind::Literal(l) => {
                                    let mut x = l.0.to_vec();
                                    x.extend_from_slice(&lit);
                                    lit = x;
                                }
                                _ => break,
                            }
                        }
                        return Some((!lit.is_empty()).then_some(lit));
                    }
                    if let Some(found) = walk(p, marker) {
                        return Some(found);
                    }
                }
                None
            }
            HirKind::Capture(c) if c.name.as_deref() == Some(marker) => Some(None),
            HirKind::Capture(c) => walk(&c.sub, marker),
            HirKind::Repetition(r) => walk(&r.sub, marker),
            HirKind::Alternation(alts) => alts.iter().find_map(|a| walk(a, marker)),
            _ => None,
        }
    }
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    walk(&hir, marker).flatten()
}

/// The longest literal every match of `pattern` holds.
fn longest_literal(pattern: &str) -> Option<Vec<u8>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    super::pattern::required_literals(&hir, MIN_SITE_LITERAL, 1)
        .into_iter()
        .next()
}

impl std::fmt::Debug for PyRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRegex")
            .field("python", &self.python)
            .field("backtracks", &self.backtracks())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word scan says what std says, with a non-ASCII byte at every
    /// place of texts of every length around the word size.
    #[test]
    fn is_ascii_is_std() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert!(is_ascii(plain.as_bytes()), "{len}");
            for at in 0..len {
                for c in ['\u{e9}', '\u{7f}', '\u{80}', '\u{663}'] {
                    let mut t = String::from(&plain[..at]);
                    t.push(c);
                    t.push_str(&plain[at + 1..]);
                    assert_eq!(is_ascii(t.as_bytes()), t.is_ascii(), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn runaway_backtracking_stops_at_the_limit() {
        // Alternatives that match the same text, then a back-reference
        // that fails at the end: exponential in the backtracker.
        let re = PyRegex::new(r"^(?:(a|a))+(?!x)x", Layout::default()).unwrap();
        assert!(re.backtracks());
        let evil = format!("{}x", "a".repeat(60));
        let t = std::time::Instant::now();
        assert!(matches!(re.search(&evil), Search::Limit));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // A short text fails in a few steps: a plain miss.
        assert!(matches!(re.search("aax"), Search::Miss));
        let re = PyRegex::new(r"^(?=x)(\w+\s?)+$", Layout::default()).unwrap();
        assert!(matches!(re.search("xab cd\n"), Search::Hit(_)));
    }

    #[test]
    fn groups_by_name() {
        let re = PyRegex::new(
            r"from (?P<ip4>\d+\.\d+\.\d+\.\d+)(?! bad)",
            Layout::default(),
        )
        .unwrap();
        let Search::Hit(c) = re.search("x from 192.0.2.1 ok") else {
            panic!("no match")
        };
        assert_eq!(c.get(re.group("ip4").unwrap()), Some("192.0.2.1"));
        assert!(matches!(
            re.search("from 192.0.2.1 bad"),
            Search::Hit(_) | Search::Miss
        ));
    }

    /// The ASCII form of a pattern gives the full pattern's answers,
    /// groups included, on texts that are all ASCII, and the full pattern
    /// runs the rest (a Unicode digit, a word character, a case fold
    /// outside ASCII).
    #[test]
    fn ascii_form_answers_like_the_full_pattern() {
        let patterns = [
            r"^\w+ (?P<d>\d+)\b",
            r"(?i)(?P<k>k\S*s)",
            r"[^\[]*\[(?P<x>.)(?P<y>[^\]]+)",
            r"\B\w\b(?P<r>.*)",
            r"(?P<a>[\w\-.^_]*\w)",
            r"\A\s*(?:\S+\s+)?(?P<w>\w+)",
            r"(?i:sasl (?P<m>LOGIN|PLAIN))",
            r"(?P<n>\d\d+)|(?P<o>[1-9])",
            r"(?-u:\w)(?P<b>\W)",
        ];
        let alphabet = [
            "a",
            "K",
            "s",
            "S",
            "1",
            "9",
            "_",
            "-",
            "[",
            "]",
            " ",
            "\t",
            "\n",
            "x",
            ".",
            "sasl login",
            "SASL PLAIN",
            "\u{17f}",
            "\u{212a}",
            "\u{e9}",
            "\u{663}",
            "\u{a0}",
        ];
        let mut below = crate::testrng::below(0xa5c11);
        for p in patterns {
            let dual = meta_with(p, true).unwrap();
            let full = meta_with(p, false).unwrap();
            assert!(dual.ascii.is_some(), "{p}");
            assert!(full.ascii.is_none(), "{p}");
            let n = dual.group_info().slot_len();
            assert_eq!(dual.ascii.as_ref().unwrap().group_info().slot_len(), n);
            let mut ascii_texts = 0;
            for _ in 0..6000 {
                let hay = random_text(&mut below, &alphabet, 9);
                let ascii = hay.is_ascii();
                ascii_texts += usize::from(ascii);
                for anchored in [Anchored::No, Anchored::Yes] {
                    let input = Input::new(&hay).anchored(anchored);
                    assert_eq!(
                        found(n, |s| dual.search_slots(&input, ascii, s)),
                        found(n, |s| full.search_slots(&input, ascii, s)),
                        "{p} on {hay:?}"
                    );
                    assert_eq!(
                        dual.search_half(&input, ascii).map(|h| h.offset()),
                        full.search_half(&input, ascii).map(|h| h.offset()),
                        "{p} on {hay:?}"
                    );
                    assert_eq!(
                        dual.is_match(input.clone(), ascii),
                        full.is_match(input, ascii),
                        "{p} on {hay:?}"
                    );
                }
            }
            assert!(ascii_texts > 1000);
        }
        // A pattern with nothing to cut down keeps one form.
        assert!(meta_with(r"^ab(?P<c>c)$", true).unwrap().ascii.is_none());
    }

    /// Up to `max - 1` pieces of `alphabet`, drawn by `below`.
    fn random_text(below: &mut impl FnMut(u64) -> u64, alphabet: &[&str], max: u64) -> String {
        let k = below(max) as usize;
        (0..k)
            .map(|_| alphabet[below(alphabet.len() as u64) as usize])
            .collect()
    }

    /// What a search for `n` slots answers. The slots only on a match:
    /// what a search leaves in them when it finds nothing differs between
    /// engines.
    fn found(
        n: usize,
        search: impl FnOnce(&mut [Option<NonMaxUsize>]) -> Option<PatternID>,
    ) -> (Option<PatternID>, Vec<Option<NonMaxUsize>>) {
        let mut slots = vec![None; n];
        let id = search(&mut slots);
        if id.is_none() {
            slots.fill(None);
        }
        (id, slots)
    }

    /// A pattern anchored at the start searches for its groups without the
    /// DFA's pass first; the answers are the regex crate's own, groups
    /// included, on random texts, ASCII or not.
    #[test]
    fn group_searches_without_the_dfa_answer_alike() {
        let patterns = [
            r"^[^\[]*\[(?:(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})|(?P<dns>[\w\-.^_]*\w))\](?::\d+)?: SASL (?i:LOGIN|PLAIN) x",
            r"^\w+ (?P<d>\d+)\b",
            r"^(?P<a>a*)(?P<b>a*s)?",
            r"^(?:from (?P<f>\S+)|to (?P<t>\S+))( |$)",
        ];
        // Cut after the last group: the tail often fails where the head's
        // preferred match ends while the whole still matches.
        let cut = [
            r"^(?P<x>a+)as",
            r"^\S* (?P<h>\d+(?:\.\d+)?)\]?(?::\d+)?:? ?(?:SASL|x|s)\b",
            r"^(?P<a>a*)s(?:as|s)*(?P<m>)",
            r"^(?P<a>\w+)(?:\d|a)+ (?:s|ss)?$",
            r"^(?P<a>[a1]*)(?P<b>1?)(?:1a|a)+(?P<m>)(?P<n>)",
            // ... and before the first: there too.
            r"^a*(?P<x>as?)",
            r"^[a1 ]*\[?(?P<x>\d+|a)(?:s|\]| )*(?P<m>)",
            r"^\S*(?P<x>1|11)(?P<y>a?)\b:?",
        ];
        let cut_alphabet = [
            "a", "a", "aa", "as", "s", "1", "x", " ", "]", ":", "SASL", ".", "25", "\u{17f}",
            "\u{663}",
        ];
        let alphabet = [
            "a",
            "s",
            "1",
            "9",
            ".",
            "[",
            "]",
            ":",
            " ",
            "from ",
            "to ",
            " SASL ",
            "login",
            "PLAIN",
            " x",
            "\u{17f}",
            "\u{212a}",
            "\u{a0}",
            "\u{663}",
            "1.2.3.4",
            "]: SASL login x",
            "]:25: SASL PLAIN x",
        ];
        let mut below = crate::testrng::below(0x9a05);
        let runs = patterns
            .iter()
            .map(|p| (*p, &alphabet[..], 6))
            .chain(cut.iter().map(|p| (*p, &cut_alphabet[..], 9)));
        // `p`'s groups as the regex crate's own search on the same form finds
        // them, on random texts over `alphabet`.
        let mut agrees = |p: &str, m: &Meta, alphabet: &[&str], max: u64| {
            let n = m.group_info().slot_len();
            let mut hits = 0;
            for _ in 0..20000 {
                let hay = random_text(&mut below, alphabet, max);
                let input = Input::new(&hay);
                let ascii = hay.is_ascii();
                let x = found(n, |s| m.search_slots(&input, ascii, s));
                hits += usize::from(x.0.is_some());
                assert_eq!(
                    x,
                    found(n, |s| m.on(ascii).search_slots(&input, s)),
                    "{p} on {hay:?}"
                );
            }
            assert!(hits > 30, "{p}: {hits} matches");
        };
        for (p, alphabet, max) in runs {
            let m = meta(p).unwrap();
            assert!(m.groups.is_some(), "{p}");
            agrees(p, &m, alphabet, max);
        }
        for p in cut {
            let g = meta(p).unwrap().groups.unwrap();
            assert!(g.split.is_some(), "{p} is cut");
        }
        // The host tags' IPv4 branch, scanned by hand: where the tail
        // takes what the branch's preferred match gave (the whole pattern
        // then gives up digits), and where only the IPv6 branch matches.
        use crate::fail2ban::tags::{IP4, IP6};
        let hosts = [
            format!(r"^\S*\[\[?(?:{IP4}|{IP6})\]?\](?::\d+)?:? ?(?:x|s)?"),
            format!(r"^\S*\[(?:{IP4}|{IP6})\d\]"),
            format!(r"^(?:{IP4}|{IP6})(?:\.\d+)? x"),
            // G goes on after the host, with groups of its own.
            format!(r"^\S*\[(?:{IP4}|{IP6})\]?(?P<p>:\d+)?: (s|(?i:x)+)(?P<m>)x?"),
            format!(r"^(?:{IP4}|{IP6})(?P<d>\d*)\]"),
        ];
        let host_alphabet = [
            "1",
            "23",
            "456",
            "7890",
            ".",
            ":",
            "::",
            "f",
            "ffff",
            "fffffff",
            "::ffff:",
            "a",
            "[",
            "]",
            " x",
            "s",
            "1.2.3.4",
            "10.0.0.255",
            "2001:db8::1",
            "\u{663}",
            "a[1.2.3.4",
            "a[10.0.0.25]",
            "a[::ffff:1.2.3.4]",
            "a[2001:db8::1]",
            "a[fe80::2:3]",
            "a[1:2:3:4:5:6:7:8]",
            "a[::1]",
            "abcde",
            "A:",
            "]: s",
            "]:25: xX",
            ": x",
        ];
        for p in &hosts {
            let m = meta(p).unwrap();
            let host = m
                .groups
                .as_ref()
                .and_then(|g| g.split.as_ref())
                .and_then(|s| s.host.as_ref());
            assert!(host.is_some(), "{p} scans its IPv4 branch by hand");
            assert!(
                host.is_some_and(|h| h.ip6),
                "{p} scans its IPv6 branch by hand"
            );
            agrees(p, &m, &host_alphabet, 8);
        }
        // The head's preferred match leaves the tail nothing: the whole
        // pattern gives up an `a`.
        let m = meta(cut[0]).unwrap();
        let x = found(4, |s| m.search_slots(&Input::new("aaas"), true, s));
        assert_eq!(x.1[2..4], [NonMaxUsize::new(0), NonMaxUsize::new(2)]);
        assert_eq!(x.1[1], NonMaxUsize::new(4));
        // What comes before G leaves it nothing.
        let m = meta(r"^a*(?P<x>as?)").unwrap();
        let x = found(4, |s| m.search_slots(&Input::new("aas"), true, s));
        assert_eq!(x.1[2..4], [NonMaxUsize::new(1), NonMaxUsize::new(3)]);
        // Nothing around the groups but `^` (and markers): nothing to cut.
        for p in [r"^(?P<x>b+)", r"^(?P<x>b+)(?P<m>)"] {
            assert!(meta(p).unwrap().groups.unwrap().split.is_none(), "{p}");
        }
        // Not anchored, or without groups: nothing to gain.
        assert!(meta(r"a(?P<x>b)").unwrap().groups.is_none());
        assert!(meta(r"^ab").unwrap().groups.is_none());
    }

    /// The marked form gives the backtracker's answers, groups included,
    /// on random texts over the patterns' alphabet.
    #[test]
    fn marked_form_answers_like_the_backtracker() {
        let patterns = [
            r"(?P<a>a+)(?!b)(?P<r>\w*)",
            r"^(?:x(?=yy)|xy|x)(?P<t>y*)",
            r"(?:a(?!b)b|a(?=b)|ab)(?P<t>.*)",
            r"(?<=a)b+(?P<c>c?)",
            r"(?<!a)(?P<b>b)(?!c)",
            r"^\S+ (?:lost after(?! DATA) [A-Z]+|disc(?= from \S+(?: \S+=\d+)* auth=0/[1-9])|w:) (?P<content>.+)$",
            r"(?:a(?!b))+(?P<x>.)",
            r"a(?!b(?=c))(?P<x>..)",
            r"(?<=ab|cd)x",
            r"(?:ab(?!c)|a)(?P<x>\w*)",
            r"^(?:x|ab(?=b)|c)(?P<x>\w*)(?<=c)b",
            // Heads, whose end alone is asked for: the marked form's
            // preferred path passes a marker inside its match, or only
            // after its end.
            r"^\S+ (?:lost after(?! DATA) [A-Z]+|disc(?= from \S+(?: \S+=\d+)* auth=0/[1-9])|w:) ",
            r"^(?:ab(?!c)|a)b*",
            r"^(?:a|ab(?=b))c?",
            r"^x*(?:y|ab(?!c))",
        ];
        let alphabet = [
            "a",
            "b",
            "c",
            "x",
            "y",
            " ",
            "lost after",
            " DATA",
            " AUTH",
            "disc",
            " from h",
            " k=1",
            " auth=0/1",
            " auth=0/0",
            "w:",
            "h ",
            "\n",
        ];
        let mut below = crate::testrng::below(0x5eed);
        for p in patterns {
            let fast = PyRegex::new(p, Layout::default()).unwrap();
            let plain = PyRegex::new_plain(p, Layout::default()).unwrap();
            assert!(fast.has_marked_form() || p.contains("ab|cd"), "{p}");
            for _ in 0..4000 {
                let n = below(8) as usize;
                let hay: String = (0..n)
                    .map(|_| alphabet[below(alphabet.len() as u64) as usize])
                    .collect();
                let a = match fast.search(&hay) {
                    Search::Hit(c) => Some((0..c.len()).map(|i| c.span(i)).collect::<Vec<_>>()),
                    Search::Miss => None,
                    Search::Limit => panic!("limit"),
                };
                let b = match plain.search(&hay) {
                    Search::Hit(c) => Some((0..c.len()).map(|i| c.span(i)).collect::<Vec<_>>()),
                    Search::Miss => None,
                    Search::Limit => panic!("limit"),
                };
                assert_eq!(a, b, "{p} on {hay:?}");
                if p.starts_with('^') {
                    let end = b.as_ref().and_then(|g| g[0]).map(|s| s.1);
                    match fast.match_end(&hay) {
                        End::At(e) => assert_eq!(Some(e), end, "{p} on {hay:?}"),
                        End::Miss => assert_eq!(end, None, "{p} on {hay:?}"),
                        End::Unsure => {}
                    }
                }
            }
        }
    }
}
