//! Where the preferred match of a pattern anchored at the text's start ends
//! (all a prefregex head needs), walked byte by byte on a lazy DFA of its
//! own, resuming where the last text walked on this thread stops sharing
//! the start of this one.
//!
//! A head reads the start of a line: host name, daemon, pid, the message's
//! first words (44 bytes of a Postfix line on the benchmark's log), one
//! dependent table load per byte. The lines of one log share their first
//! bytes (` mail postfix/smtpd[`: 19 of the 44 on average between consecutive
//! lines there), and after those the DFA is in the states the last walk
//! went through: each walk keeps them, and the next starts after the bytes
//! the two texts share.
use std::{cell::RefCell, sync::OnceLock};

use regex_automata::{
    Anchored,
    hybrid::{
        LazyStateID,
        dfa::{Cache, DFA},
    },
    nfa::thompson,
    util::start,
};
use regex_syntax::hir::Hir;
use thread_local::ThreadLocal;

/// Bytes of a walk kept for the next one: more than any head reads.
const KEEP: usize = 256;
/// No match so far.
const NONE: usize = usize::MAX;

/// The walker of an anchored pattern, built from its text when first asked
/// for (only heads ask; the text, not the parsed form, waits: a parsed
/// pattern is many times larger).
pub struct Unbuilt {
    pattern: Box<str>,
    built: OnceLock<Option<Ends>>,
}

impl Unbuilt {
    pub fn new(pattern: &str) -> Unbuilt {
        Unbuilt {
            pattern: pattern.into(),
            built: OnceLock::new(),
        }
    }

    /// The walker, from the pattern's ASCII form (or itself, with nothing
    /// to cut down): for ASCII texts only. `None` when it does not build.
    pub fn get(&self, size_limit: usize) -> Option<&Ends> {
        self.built
            .get_or_init(|| {
                let hir = regex_automata::util::syntax::parse(&self.pattern).ok()?;
                let hir = super::engine::ascii_only(&hir).unwrap_or(hir);
                Ends::new(&hir, size_limit).ok()
            })
            .as_ref()
    }
}

pub struct Ends {
    dfa: DFA,
    walks: ThreadLocal<RefCell<Walk>>,
}

/// One thread's cache of the DFA and its last walk.
struct Walk {
    cache: Cache,
    /// The last walk's first `len` bytes (up to where its DFA died, at most
    /// [`KEEP`]), the state after each and the end of the preferred match
    /// so far. Arrays: the walk stores into them off the chain of loads
    /// it waits on.
    bytes: [u8; KEEP],
    states: [LazyStateID; KEEP],
    ends: [usize; KEEP],
    len: usize,
    /// The cache's clear count when they were walked: clearing the cache
    /// invalidates every state ID it gave before.
    clears: usize,
}

impl Ends {
    /// `hir` must be anchored at the start (`^` first on every path); the
    /// answers are its preferred match's ends (leftmost-first).
    pub fn new(hir: &Hir, size_limit: usize) -> Result<Ends, String> {
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .which_captures(thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(size_limit)),
            )
            .build_from_hir(hir)
            .map_err(|e| e.to_string())?;
        let dfa = DFA::builder()
            .build_from_nfa(nfa)
            .map_err(|e| e.to_string())?;
        Ok(Ends {
            dfa,
            walks: ThreadLocal::new(),
        })
    }

    /// `Some(end)`: where the preferred match at the start of `hay` ends
    /// (`None`: no match); `None` when the DFA gave up (a quit byte, a
    /// cache too small) and the caller must search otherwise.
    pub fn end(&self, hay: &[u8]) -> Option<Option<usize>> {
        let walk = self.walks.get_or(|| {
            RefCell::new(Walk {
                cache: self.dfa.create_cache(),
                bytes: [0; KEEP],
                states: [LazyStateID::default(); KEEP],
                ends: [NONE; KEEP],
                len: 0,
                clears: 0,
            })
        });
        // A search never starts another on the same pattern; should one,
        // it searches otherwise.
        let mut walk = walk.try_borrow_mut().ok()?;
        let found = walk.walk(&self.dfa, hay);
        if found.is_none() || walk.cache.clear_count() != walk.clears {
            walk.forget();
        }
        found
    }
}

impl Walk {
    fn forget(&mut self) {
        self.len = 0;
        self.clears = self.cache.clear_count();
    }

    /// Resumes from the last walk's states: [`Ends::end`] forgets them
    /// after any walk that cleared the cache, and only walks use it.
    fn walk(&mut self, dfa: &DFA, hay: &[u8]) -> Option<Option<usize>> {
        let Walk {
            cache,
            bytes,
            states,
            ends,
            len,
            ..
        } = self;
        let shared = common_prefix(&bytes[..*len], hay);
        let (mut sid, mut end) = match shared.checked_sub(1) {
            Some(i) => (states[i], ends[i]),
            None => (
                dfa.start_state(cache, &start::Config::new().anchored(Anchored::Yes))
                    .ok()?,
                NONE,
            ),
        };
        let found = |end: usize| (end != NONE).then_some(end);
        // The first KEEP bytes are kept with the state after each; zipped,
        // the stores check no bounds (a walk is a few dozen bytes: per byte
        // this loop is a table load and a test of what it loaded).
        let kept = hay.len().min(KEEP);
        let mut at = shared;
        let mut stop = None;
        for ((&b, state), e) in hay[shared..kept]
            .iter()
            .zip(&mut states[shared..kept])
            .zip(&mut ends[shared..kept])
        {
            sid = dfa.next_state(cache, sid, b).ok()?;
            if sid.is_tagged() {
                // Matches show one byte late: this state says a match ends
                // before `b`.
                if sid.is_match() {
                    end = at;
                } else if sid.is_dead() {
                    stop = Some(Some(found(end)));
                    break;
                } else if sid.is_quit() {
                    stop = Some(None);
                    break;
                }
            }
            (*state, *e) = (sid, end);
            at += 1;
        }
        bytes[shared..at].copy_from_slice(&hay[shared..at]);
        *len = at;
        if let Some(answer) = stop {
            return answer;
        }
        for (k, &b) in hay[at..].iter().enumerate() {
            sid = dfa.next_state(cache, sid, b).ok()?;
            if sid.is_tagged() {
                if sid.is_match() {
                    end = at + k;
                } else if sid.is_dead() {
                    return Some(found(end));
                } else if sid.is_quit() {
                    return None;
                }
            }
        }
        if dfa.next_eoi_state(cache, sid).ok()?.is_match() {
            end = hay.len();
        }
        Some(found(end))
    }
}

/// How many bytes `a` and `b` share at their start, eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    while let (Some(x), Some(y)) = (a.get(i..i + 8), b.get(i..i + 8)) {
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        let diff = word(x) ^ word(y);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use regex_automata::{Input, meta::Regex};

    use super::*;
    use crate::testrng;

    fn answers(pattern: &str, texts: &[String]) {
        // As the engine builds it: from the ASCII form, for ASCII texts.
        let hir = regex_automata::util::syntax::parse(pattern).expect("pattern");
        let hir = super::super::engine::ascii_only(&hir).unwrap_or(hir);
        let ends = Ends::new(&hir, 8 << 20).expect("ends");
        let re = Regex::new(pattern).expect("regex");
        for t in texts {
            let want = re
                .search_half(&Input::new(t).anchored(Anchored::Yes))
                .map(|h| h.offset());
            assert_eq!(ends.end(t.as_bytes()), Some(want), "{pattern:?} on {t:?}");
        }
    }

    /// Texts made of a few pieces each, so that consecutive ones share
    /// starts of every length, walked in order and shuffled.
    fn texts(seed: u64, pieces: &[&str], n: usize) -> Vec<String> {
        let mut next = testrng::below(seed);
        (0..n)
            .map(|_| {
                let k = next(6);
                (0..k)
                    .map(|_| pieces[next(pieces.len() as u64) as usize])
                    .collect::<String>()
            })
            .collect()
    }

    /// The answers are the regex crate's, whatever the last text shared
    /// with this one, over patterns whose matches end early, late, at the
    /// end of the text or after a longer try that failed.
    #[test]
    fn answers_like_the_regex_crate() {
        let pieces = [
            " mail ",
            "postfix/smtpd[",
            "123",
            "]: ",
            "warning: ",
            "lost connection after AUTH",
            "disconnect",
            "a",
            "ab",
            "\n",
            "x",
            " ",
        ];
        let patterns = [
            r"^\s*(?:\S+\s+)?postfix/\w+\[\d+\]: (?:warning:|lost connection after [A-Z]+|disconnect)",
            r"^(?:a|ab)*",
            r"^ab|^a",
            r"^(?:mail|mai|m)\s",
            r"^.*x",
            r"^.+$",
            r"^(?m:.*$)",
            r"^a\b",
            r"^",
        ];
        let texts = texts(7, &pieces, 3000);
        for p in patterns {
            answers(p, &texts);
        }
    }

    /// A lazy DFA whose cache fills up and is cleared mid-walk keeps
    /// answering right: the states of the last walk are not reused.
    #[test]
    fn survives_cache_clears() {
        // Many states: a counted repetition over a wide class.
        let pattern = r"^(?:[a-q][a-z]{0,3}){1,12}(?:zz|yx)";
        let hir = regex_automata::util::syntax::parse(pattern).expect("pattern");
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_from_hir(&hir)
            .expect("nfa");
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .cache_capacity(0)
                    .skip_cache_capacity_check(true)
                    .minimum_cache_clear_count(None),
            )
            .build_from_nfa(nfa)
            .expect("dfa");
        let ends = Ends {
            dfa,
            walks: ThreadLocal::new(),
        };
        let re = Regex::new(pattern).expect("regex");
        let letters: Vec<String> = (b'a'..=b'z').map(|c| (c as char).to_string()).collect();
        let pieces: Vec<&str> = letters
            .iter()
            .map(String::as_str)
            .chain(["abcd", "zz", "yx"])
            .collect();
        let mut cleared = 0;
        for t in texts(11, &pieces, 3000) {
            let want = re
                .search_half(&Input::new(&t).anchored(Anchored::Yes))
                .map(|h| h.offset());
            let before = ends
                .walks
                .get()
                .map_or(0, |w| w.borrow().cache.clear_count());
            assert_eq!(ends.end(t.as_bytes()), Some(want), "{t:?}");
            let after = ends
                .walks
                .get()
                .map_or(0, |w| w.borrow().cache.clear_count());
            cleared += after - before;
        }
        assert!(cleared > 100, "the cache was cleared {cleared} times");
    }

    #[test]
    fn common_prefix_counts_shared_bytes() {
        let a = b"mail postfix/smtpd[123]: warning";
        for n in 0..a.len() {
            let mut b = a.to_vec();
            b[n] ^= 1;
            assert_eq!(common_prefix(a, &b), n);
            assert_eq!(common_prefix(&a[..n], a), n);
        }
        assert_eq!(common_prefix(a, a), a.len());
    }
}
