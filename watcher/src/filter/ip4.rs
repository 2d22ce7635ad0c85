//! The IPv4 branch of the host tags (`<HOST>`, `<ADDR>`, `<IP4>`: an
//! optional `::ffff:` then a dotted quad in group `ip4`), matched by hand.
//!
//! In a failregex cut around its groups (`engine::Split`) that branch is
//! where nearly every match spends its time on the capture engines, which
//! pay by the byte and by the state for what is a fixed scan here. The
//! answer is the backtracker's, the preferred (leftmost-first) match of
//! the branch: each `\d{1,3}` before a `.` must take the whole run of
//! digits (a shorter take leaves a digit where the `.` must be), the last
//! takes up to three, and `f{4,6}` must take the whole run of `f` before
//! its `:`. The prefix is optional and greedy: tried first, then left out.
use regex_syntax::hir::{Hir, HirKind};

/// The branch as it runs on ASCII texts (`\d` cut down to `[0-9]`).
const BRANCH: &str = r"(?:::f{4,6}:)?(?P<ip4>(?:[0-9]{1,3}\.){3}[0-9]{1,3})";

/// Whether `hir` is the branch (any group name or index).
pub fn is_branch(hir: &Hir) -> bool {
    is_pattern(hir, BRANCH)
}

/// Whether `hir` is `pattern` parsed, but for the index and name of groups.
pub(super) fn is_pattern(hir: &Hir, pattern: &str) -> bool {
    regex_automata::util::syntax::parse(pattern).is_ok_and(|reference| same_shape(hir, &reference))
}

/// Equal but for the index and name of groups.
fn same_shape(a: &Hir, b: &Hir) -> bool {
    match (a.kind(), b.kind()) {
        (HirKind::Capture(x), HirKind::Capture(y)) => same_shape(&x.sub, &y.sub),
        (HirKind::Repetition(x), HirKind::Repetition(y)) => {
            x.min == y.min && x.max == y.max && x.greedy == y.greedy && same_shape(&x.sub, &y.sub)
        }
        (HirKind::Concat(x), HirKind::Concat(y))
        | (HirKind::Alternation(x), HirKind::Alternation(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_shape(a, b))
        }
        _ => a == b,
    }
}

/// The span of the group of the branch's preferred match at `at` in `b`
/// (the match ends where the group does), when it matches there.
pub fn find(b: &[u8], at: usize) -> Option<(usize, usize)> {
    if let Some(p) = mapped_prefix(b, at)
        && let Some(end) = quad(b, p)
    {
        return Some((p, end));
    }
    quad(b, at).map(|end| (at, end))
}

/// `::f{4,6}:` at `at`: where it ends.
fn mapped_prefix(b: &[u8], at: usize) -> Option<usize> {
    let rest = b.get(at..)?.strip_prefix(b"::")?;
    let fs = rest.iter().take_while(|&&c| c == b'f').count();
    ((4..=6).contains(&fs) && rest.get(fs) == Some(&b':')).then_some(at + 2 + fs + 1)
}

/// `(?:[0-9]{1,3}\.){3}[0-9]{1,3}` at `at`: where it ends.
fn quad(b: &[u8], mut at: usize) -> Option<usize> {
    let digits = |i: usize| {
        b.get(i..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    for _ in 0..3 {
        let n = digits(at);
        if !(1..=3).contains(&n) || b.get(at + n) != Some(&b'.') {
            return None;
        }
        at += n + 1;
    }
    match digits(at) {
        0 => None,
        n => Some(at + n.min(3)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use regex_automata::{Anchored, Input, nfa::thompson::backtrack::BoundedBacktracker};

    /// Every start of `texts` random texts over `alphabet` (up to
    /// `max_parts` parts each), with what the backtracker makes of
    /// `branch` there: `check(text, start, its match as (group 1, end))`.
    pub(in crate::filter) fn against_the_backtracker(
        branch: &str,
        alphabet: &[&str],
        seed: u64,
        texts: usize,
        max_parts: u64,
        mut check: impl FnMut(&str, usize, Option<((usize, usize), usize)>),
    ) {
        let re = BoundedBacktracker::new(branch).unwrap();
        let mut cache = re.create_cache();
        let mut caps = re.create_captures();
        let mut below = crate::testrng::below(seed);
        for _ in 0..texts {
            let n = below(max_parts) as usize;
            let hay: String = (0..n)
                .map(|_| alphabet[below(alphabet.len() as u64) as usize])
                .collect();
            for at in 0..=hay.len() {
                let input = Input::new(&hay).range(at..).anchored(Anchored::Yes);
                re.try_search(&mut cache, &input, &mut caps).unwrap();
                let found = caps.get_match().map(|m| {
                    let g = caps.get_group(1).expect("the branch's group takes part");
                    ((g.start, g.end), m.end())
                });
                check(&hay, at, found);
            }
        }
    }

    /// The hand scan gives the backtracker's answer on random texts over
    /// the characters that matter.
    #[test]
    fn answers_like_the_backtracker() {
        let alphabet = [
            "1", "23", "4567", ".", ":", "::", "f", "ffff", "fffff", "ffffff", "fffffff", "x", "]",
            "0.0.0.0", "::ffff:",
        ];
        against_the_backtracker(BRANCH, &alphabet, 0x1b4, 20_000, 9, |hay, at, found| {
            if let Some((group, end)) = found {
                assert_eq!(group.1, end, "{hay:?} at {at}");
            }
            assert_eq!(
                find(hay.as_bytes(), at),
                found.map(|f| f.0),
                "{hay:?} at {at}"
            );
        });
    }

    #[test]
    fn the_host_tags_hold_the_branch() {
        let ascii = |p: &str| {
            let h = regex_automata::util::syntax::parse(p).unwrap();
            crate::filter::engine::ascii_only(&h).unwrap_or(h)
        };
        let ip4 = ascii(crate::fail2ban::tags::IP4);
        assert!(is_branch(&ip4));
        // Not with other digits, another group shape, or case folded.
        assert!(!is_branch(
            &regex_automata::util::syntax::parse(r"(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})")
                .unwrap()
        ));
        assert!(!is_branch(&ascii(
            r"(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,2})"
        )));
        assert!(!is_branch(&ascii(
            r"(?i)(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})"
        )));
    }
}
