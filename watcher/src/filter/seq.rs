//! A direct matcher for failregexes that are a plain sequence: literals,
//! byte-class runs, optional parts and capture groups, anchored at the
//! start. Most mail failregexes are (`^warning: <CLIENT>: SASL ...`).
//!
//! It runs at about a cycle per byte, where the regex crate's one-pass DFA
//! (the engine that yields captures) costs several: a table lookup per byte
//! on a dependent chain. It gives the same answer, by construction: a
//! pattern is only taken when every choice it makes is decided by the next
//! byte (each class run stops at a byte that cannot continue it, and no
//! byte that can continue it can start what follows it; an optional part
//! starts with bytes that what follows it cannot start with). Then the
//! greedy, never-backtracking walk below is the one path the regex can
//! take, with the same captures. Anything else (alternations, nested
//! repetition, look-around other than `^`/`$`) keeps the regex.
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct Set([u64; 4]);

impl Set {
    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn union(self, o: Set) -> Set {
        Set(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }

    fn meets(self, o: Set) -> bool {
        self.0.iter().zip(o.0).any(|(a, b)| a & b != 0)
    }
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Set({} bytes)",
            self.0.iter().map(|w| w.count_ones()).sum::<u32>()
        )
    }
}

#[derive(Debug, Clone)]
enum Item {
    Lit(Box<[u8]>),
    /// `min..=max` bytes of the set, as many as there are.
    Run {
        set: Set,
        min: u32,
        max: u32,
    },
    /// Zero or one of the part: taken when it matches; the groups in it
    /// (unset before it, as every group appears once).
    Opt(Vec<Item>, Vec<usize>),
    Open(usize),
    Close(usize),
    /// `$`: the end of the text.
    End,
}

/// What can come next at a point of the pattern: the bytes, and whether
/// the pattern may also end (or stop matching: unanchored end) there.
#[derive(Clone, Copy, Debug)]
struct First {
    bytes: Set,
    /// Matching may stop here without reading a byte (end of pattern, or
    /// only optional/`min == 0` items up to it).
    may_stop: bool,
}

/// A compiled sequence; `slots` is twice the number of capture groups.
#[derive(Debug, Clone)]
pub struct Seq {
    items: Vec<Item>,
    slots: usize,
}

impl Seq {
    /// The sequence matcher of a pattern, if it is one (see the module doc).
    /// `pattern` is parsed as the filter's regexes are built: bytes, ASCII
    /// classes.
    pub fn new(pattern: &str) -> Option<Seq> {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()?;
        let parts: Vec<&Hir> = match hir.kind() {
            HirKind::Concat(v) => v.iter().collect(),
            _ => vec![&hir],
        };
        let (first, rest) = parts.split_first()?;
        if !matches!(first.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let mut items = Vec::new();
        let mut groups = 0;
        for h in rest {
            lower(h, &mut items, &mut groups)?;
        }
        if let Some(i) = items.iter().position(|i| matches!(i, Item::End))
            && i + 1 != items.len()
        {
            return None;
        }
        let end = First {
            bytes: Set::default(),
            may_stop: true,
        };
        check(&items, end)?;
        Some(Seq {
            items,
            slots: 2 * (groups + 1),
        })
    }

    /// Number of slots [`Seq::captures`] fills: two per group, group 0 first.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Matches at the start of `hay`; `slots[2i]..slots[2i+1]` is group i
    /// (`None` when it took no part). Returns whether it matched.
    pub fn captures(&self, hay: &[u8], slots: &mut [Option<usize>]) -> bool {
        slots.iter_mut().for_each(|s| *s = None);
        match run(&self.items, hay, 0, slots) {
            Some(end) => {
                slots[0] = Some(0);
                slots[1] = Some(end);
                true
            }
            None => false,
        }
    }
}

/// HIR -> items; `None` for anything that is not a plain sequence.
fn lower(h: &Hir, out: &mut Vec<Item>, groups: &mut usize) -> Option<()> {
    match h.kind() {
        HirKind::Empty => {}
        HirKind::Literal(l) => out.push(Item::Lit(l.0.clone())),
        HirKind::Class(c) => out.push(Item::Run {
            set: set_of(c)?,
            min: 1,
            max: 1,
        }),
        HirKind::Look(Look::End) => out.push(Item::End),
        HirKind::Concat(v) => {
            for p in v {
                lower(p, out, groups)?;
            }
        }
        HirKind::Capture(c) => {
            let i = c.index as usize;
            *groups = (*groups).max(i);
            out.push(Item::Open(i));
            lower(&c.sub, out, groups)?;
            out.push(Item::Close(i));
        }
        HirKind::Repetition(r) if r.greedy => match r.sub.kind() {
            HirKind::Class(c) => out.push(Item::Run {
                set: set_of(c)?,
                min: r.min,
                max: r.max.unwrap_or(u32::MAX),
            }),
            _ if r.min == 0 && r.max == Some(1) => {
                let mut part = Vec::new();
                lower(&r.sub, &mut part, groups)?;
                if part.iter().any(|i| matches!(i, Item::End)) {
                    return None;
                }
                let groups = part
                    .iter()
                    .filter_map(|i| match i {
                        Item::Open(g) => Some(*g),
                        _ => None,
                    })
                    .collect();
                out.push(Item::Opt(part, groups));
            }
            _ => return None,
        },
        _ => return None,
    }
    Some(())
}

fn set_of(c: &Class) -> Option<Set> {
    let mut s = Set::default();
    match c {
        Class::Bytes(b) => {
            for r in b.iter() {
                for x in r.start()..=r.end() {
                    s.add(x);
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.iter() {
                if u32::from(r.end()) > 0x7f {
                    return None;
                }
                for x in u32::from(r.start())..=u32::from(r.end()) {
                    s.add(x as u8);
                }
            }
        }
    }
    Some(s)
}

/// Checks that every choice in `items` is decided by the next byte, given
/// what can follow them (`after`); returns what can begin `items`.
fn check(items: &[Item], after: First) -> Option<First> {
    let mut next = after;
    // Back to front: each item sees what can come after it.
    for item in items.iter().rev() {
        next = match item {
            Item::Open(_) | Item::Close(_) => next,
            Item::End => First {
                bytes: Set::default(),
                may_stop: true,
            },
            Item::Lit(l) => match l.first() {
                Some(&b) => {
                    let mut s = Set::default();
                    s.add(b);
                    First {
                        bytes: s,
                        may_stop: false,
                    }
                }
                None => next,
            },
            Item::Run { set, min, max } => {
                // Where the run could stop early, what follows must not be
                // able to start with a byte of the run.
                if min != max && set.meets(next.bytes) {
                    return None;
                }
                if *min == 0 {
                    First {
                        bytes: set.union(next.bytes),
                        may_stop: next.may_stop,
                    }
                } else {
                    First {
                        bytes: *set,
                        may_stop: false,
                    }
                }
            }
            Item::Opt(part, _) => {
                let inner = check(part, next)?;
                // The part must read a byte, one that decides it: alone
                // (nothing after it), it may not stop before reading one.
                let own = check(
                    part,
                    First {
                        bytes: Set::default(),
                        may_stop: true,
                    },
                )?;
                if own.may_stop || own.bytes.meets(next.bytes) {
                    return None;
                }
                First {
                    bytes: inner.bytes.union(next.bytes),
                    may_stop: next.may_stop,
                }
            }
        };
    }
    Some(next)
}

/// Walks `items` from `at`; the end position on success.
fn run(items: &[Item], hay: &[u8], mut at: usize, slots: &mut [Option<usize>]) -> Option<usize> {
    for item in items {
        match item {
            Item::Lit(l) => {
                if !hay[at..].starts_with(l) {
                    return None;
                }
                at += l.len();
            }
            Item::Run { set, min, max } => {
                let limit = hay.len().min(at.saturating_add(*max as usize));
                let start = at;
                while at < limit && set.has(hay[at]) {
                    at += 1;
                }
                if at - start < *min as usize {
                    return None;
                }
            }
            Item::Opt(part, groups) => match run(part, hay, at, slots) {
                Some(end) => at = end,
                None => {
                    for g in groups {
                        slots[2 * g] = None;
                        slots[2 * g + 1] = None;
                    }
                }
            },
            Item::Open(i) => slots[2 * i] = Some(at),
            Item::Close(i) => slots[2 * i + 1] = Some(at),
            Item::End => {
                if at != hay.len() {
                    return None;
                }
            }
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::RegexBuilder;

    /// Same match and same group spans as the regex, on `hay`.
    fn same(pat: &str, hay: &[u8]) {
        let seq = Seq::new(pat).unwrap_or_else(|| panic!("{pat} should be a sequence"));
        let re = RegexBuilder::new(pat)
            .unicode(false)
            .build()
            .expect("regex");
        let mut slots = vec![None; seq.slots()];
        let got = seq.captures(hay, &mut slots);
        let want = re.captures(hay);
        assert_eq!(
            got,
            want.is_some(),
            "{pat} on {:?}",
            String::from_utf8_lossy(hay)
        );
        if let Some(c) = want {
            for i in 0..c.len().min(seq.slots() / 2) {
                let w = c.get(i).map(|m| (m.start(), m.end()));
                let g = slots[2 * i].zip(slots[2 * i + 1]);
                assert_eq!(
                    g,
                    w,
                    "{pat} group {i} on {:?}",
                    String::from_utf8_lossy(hay)
                );
            }
        }
    }

    #[test]
    fn takes_plain_sequences_only() {
        for p in [
            r"^warning: [A-Za-z0-9_.-]*\[(?P<h>[0-9A-Fa-f:.]+)\]:(?:\d+:)? SASL (?P<m>[\w-]+) authentication failed:",
            r"^lost connection after AUTH from [A-Za-z0-9_.-]*\[(?P<h>[0-9A-Fa-f:.]+)\](?::\d+)?$",
            r"^a\d{1,3}b$",
        ] {
            assert!(Seq::new(p).is_some(), "{p}");
        }
        for p in [
            r"warning: (?P<h>\d+)", // not anchored
            r"^(?:ab|cd)e",         // alternation
            r"^[a-z]*ab",           // run overlaps what follows
            r"^x(?:ab)*c",          // repeated group
            r"^(?:\d*:?)?x",        // optional part may be empty
            r"^(?:\d+:)?\d",        // optional part starts like what follows
            r"^a.*?b",              // lazy
            r"^a\bb",               // other look-around
        ] {
            assert!(Seq::new(p).is_none(), "{p}");
        }
    }

    #[test]
    fn agrees_with_the_regex() {
        let pats = [
            r"^warning: [A-Za-z0-9_.-]*\[(?P<h>[0-9A-Fa-f:.]+)\]:(?:\d+:)? SASL (?P<m>[\w-]+) authentication failed:",
            r"^lost connection after AUTH from [A-Za-z0-9_.-]*\[(?P<h>[0-9A-Fa-f:.]+)\](?::\d+)?$",
            r"^a\d{1,3}b$",
            r"^x(?:(?P<d>\d+)-)?(?P<w>[a-z]*)",
        ];
        let hays: &[&[u8]] = &[
            b"warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x",
            b"warning: mail.example.net[2001:db8::1]:587: SASL PLAIN authentication failed:",
            b"warning: unknown[192.0.2.1]:587 SASL LOGIN authentication failed:",
            b"warning: unknown[192.0.2.1]: SASL  authentication failed:",
            b"lost connection after AUTH from unknown[192.0.2.7]",
            b"lost connection after AUTH from unknown[192.0.2.7]:25",
            b"lost connection after AUTH from unknown[192.0.2.7]:25 ",
            b"lost connection after AUTH from unknown[192.0.2.7]:",
            b"a1b",
            b"a1234b",
            b"ab",
            b"x12-abc",
            b"x12abc",
            b"x-abc",
            b"x",
            b"",
        ];
        for p in pats {
            for h in hays {
                for cut in 0..=h.len() {
                    same(p, &h[..cut]);
                }
            }
        }
    }
}
