//! A compiled pattern with a search cache of its own for each thread that
//! runs it.
//!
//! The regex crate keeps a pattern's caches in a pool whose fast path
//! serves only the first thread that searched with it (here the source's
//! reader); every other thread locks a shared stack to borrow a cache and
//! again to give it back, on every search, and builds a fresh cache
//! whenever that stack is busy. The match stage's helper threads (see
//! `agent::matcher`) run several searches per line: with the pool, two
//! matching threads spent about a tenth more CPU on the same lines. Here
//! each thread gets its own cache on its first search and keeps it: the
//! helpers of the next chunk (new threads) take over those of the last,
//! warm, since a thread's slot is reused once it exits.
use std::cell::RefCell;

use regex_automata::{
    HalfMatch, Input, PatternID,
    meta::{Cache, Regex},
    util::{captures::GroupInfo, primitives::NonMaxUsize},
};
use thread_local::ThreadLocal;

pub struct Re {
    re: Regex,
    caches: ThreadLocal<RefCell<Cache>>,
}

impl From<Regex> for Re {
    fn from(re: Regex) -> Re {
        Re {
            re,
            caches: ThreadLocal::new(),
        }
    }
}

impl Re {
    /// Runs `f` with this thread's cache; with a fresh one should this
    /// thread's be in use already (a search never starts another one on
    /// the same pattern, but nothing here depends on it).
    fn with<R>(&self, f: impl FnOnce(&Regex, &mut Cache) -> R) -> R {
        let cache = self.caches.get_or(|| RefCell::new(self.re.create_cache()));
        match cache.try_borrow_mut() {
            Ok(mut c) => f(&self.re, &mut c),
            Err(_) => f(&self.re, &mut self.re.create_cache()),
        }
    }

    pub fn search_slots(
        &self,
        input: &Input<'_>,
        slots: &mut [Option<NonMaxUsize>],
    ) -> Option<PatternID> {
        self.with(|re, c| re.search_slots_with(c, input, slots))
    }

    pub fn search_half(&self, input: &Input<'_>) -> Option<HalfMatch> {
        self.with(|re, c| re.search_half_with(c, input))
    }

    /// The crate has no `is_match` with a cache: a search that may stop at
    /// the first match it sees is what its own `is_match` runs.
    pub fn is_match<'h, I: Into<Input<'h>>>(&self, input: I) -> bool {
        let input = input.into().earliest(true);
        self.with(|re, c| re.search_half_with(c, &input).is_some())
    }

    pub fn group_info(&self) -> &GroupInfo {
        self.re.group_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads searching at once each get a cache; the answers are the
    /// pattern's own.
    #[test]
    fn threads_search_with_caches_of_their_own() {
        let mut re = Re::from(Regex::new(r"from (?P<h>\d+\.\d+\.\d+\.\d+)\b").unwrap());
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let re = &re;
                s.spawn(move || {
                    for i in 0..200u8 {
                        let hay = format!("x from 10.{t}.{i}.1 y");
                        let mut slots = [None; 4];
                        assert!(re.search_slots(&Input::new(&hay), &mut slots).is_some());
                        let (a, b) = (slots[2].unwrap().get(), slots[3].unwrap().get());
                        assert_eq!(&hay[a..b], format!("10.{t}.{i}.1"));
                        assert!(re.is_match(hay.as_str()));
                        assert!(!re.is_match("from nowhere"));
                        assert_eq!(
                            re.search_half(&Input::new(&hay)).map(|h| h.offset()),
                            Some(hay.len() - 2)
                        );
                    }
                });
            }
        });
        assert!(re.caches.iter_mut().count() >= 1);
    }
}
