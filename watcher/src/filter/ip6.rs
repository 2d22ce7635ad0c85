//! The IPv6 branch of the host tags (`<HOST>`, `<ADDR>`, `<IP6>`: group
//! `ip6`), matched by hand, for the lines whose host is not a dotted quad
//! (the IPv4 branch, [`super::ip4`], comes first in the tags).
//!
//! The branch is `(?:H{1,4}::?|::){1,7}(?:H{1,4}|:)`, H a hex digit. The
//! answer is the backtracker's, the preferred (leftmost-first) match of
//! the branch alone: a repetition tries one more round before it stops, a
//! round `H{1,4}::?` must take the whole run of hex digits (a shorter take
//! leaves a digit where the `:` must be) and then prefers the second `:`,
//! and the last part, once reached, matches at once if it can (nothing
//! after it in the branch can fail it), taking up to four digits. Seven
//! rounds of at most two choices each: the search is a short walk.
use regex_syntax::hir::Hir;

/// The branch as the host tags write it (it has no `\d` to cut down).
const BRANCH: &str = crate::fail2ban::tags::IP6;

/// Rounds of the repetition at most.
const ROUNDS: usize = 7;

/// Whether `hir` is the branch (any group name or index).
pub fn is_branch(hir: &Hir) -> bool {
    super::ip4::is_pattern(hir, BRANCH)
}

/// Where the branch's preferred match at `at` in `b` ends (its group is
/// the whole match), when it matches there.
pub fn find(b: &[u8], at: usize) -> Option<usize> {
    rounds(b, at, 0)
}

/// The preferred match from `at` after `done` rounds.
fn rounds(b: &[u8], at: usize, done: usize) -> Option<usize> {
    let hex = hex_run(b, at);
    if done < ROUNDS {
        if (1..=4).contains(&hex) && b.get(at + hex) == Some(&b':') {
            let after = at + hex + 1;
            // `::?` takes the second colon first.
            if b.get(after) == Some(&b':')
                && let Some(end) = rounds(b, after + 1, done + 1)
            {
                return Some(end);
            }
            if let Some(end) = rounds(b, after, done + 1) {
                return Some(end);
            }
        } else if hex == 0
            && b.get(at..at + 2) == Some(b"::")
            && let Some(end) = rounds(b, at + 2, done + 1)
        {
            return Some(end);
        }
    }
    if done == 0 {
        return None;
    }
    match hex {
        0 => (b.get(at) == Some(&b':')).then_some(at + 1),
        n => Some(at + n.min(4)),
    }
}

/// Hex digits from `at` on.
fn hex_run(b: &[u8], at: usize) -> usize {
    b.get(at..).map_or(0, |r| {
        r.iter().take_while(|c| c.is_ascii_hexdigit()).count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::ip4::tests::against_the_backtracker;

    /// The hand scan gives the backtracker's answer on random texts over
    /// the characters that matter.
    #[test]
    fn answers_like_the_backtracker() {
        let alphabet = [
            "1",
            "a",
            "F",
            "23",
            "4567",
            "abcde",
            ":",
            "::",
            ":::",
            "x",
            "]",
            ".",
            "2001:db8::1",
            "fe80::",
            "::1",
            "1:2:3:4:5:6:7:8",
            "a:b:",
            "0:",
        ];
        against_the_backtracker(BRANCH, &alphabet, 0x1b6, 30_000, 10, |hay, at, found| {
            assert_eq!(
                find(hay.as_bytes(), at),
                found.map(|f| f.1),
                "{hay:?} at {at}"
            );
        });
    }

    #[test]
    fn the_host_tags_hold_the_branch() {
        let parse = |p: &str| regex_automata::util::syntax::parse(p).unwrap();
        let ascii = |p: &str| {
            let h = parse(p);
            crate::filter::engine::ascii_only(&h).unwrap_or(h)
        };
        // Split cuts the ASCII form when the pattern has one.
        assert!(is_branch(&parse(crate::fail2ban::tags::IP6)));
        assert!(is_branch(&ascii(crate::fail2ban::tags::IP6)));
        // Not with another repetition or another last part.
        assert!(!is_branch(&parse(
            r"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,8}(?:[0-9a-fA-F]{1,4}|:))"
        )));
        assert!(!is_branch(&parse(
            r"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)?)"
        )));
        assert!(!is_branch(&parse(
            r"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,3}|:))"
        )));
    }
}
