//! The header part of a prefregex (`host daemon[pid]: ` before
//! `<F-CONTENT>`): where the content starts. It runs on every candidate
//! line, and for so short a match the set-up of a regex search costs more
//! than the scan, so a small header gets a fully built DFA (no cache, no
//! pool) that answers with the same leftmost-first match end. Headers whose
//! DFA would be large keep the regex.
use regex::bytes::Regex;
use regex_automata::{
    Anchored, Input,
    dfa::{Automaton, StartKind, dense},
    nfa::thompson,
    util::syntax,
};

/// Largest DFA kept per header; a mail header's is a few KiB.
const DFA_LIMIT: usize = 256 * 1024;

pub(super) struct Header {
    regex: Regex,
    dfa: Option<dense::DFA<Vec<u32>>>,
}

impl Header {
    /// `regex` is the header as compiled for the regex crate (ASCII
    /// classes, bytes); the DFA is built from the same pattern and syntax.
    pub(super) fn new(regex: Regex) -> Self {
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(thompson::Config::new().utf8(false))
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(DFA_LIMIT))
                    .determinize_size_limit(Some(4 * DFA_LIMIT)),
            )
            .build(regex.as_str())
            .ok();
        Header { regex, dfa }
    }

    /// End of the header match at the start of `hay` (the pattern begins
    /// with `^`), if it matches.
    pub(super) fn end(&self, hay: &[u8]) -> Option<usize> {
        match &self.dfa {
            Some(dfa) => dfa
                .try_search_fwd(&Input::new(hay).anchored(Anchored::Yes))
                .ok()?
                .map(|m| m.offset()),
            None => self.regex.find(hay).map(|m| m.end()),
        }
    }

    #[cfg(test)]
    pub(super) fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }

    /// The same header answered by the regex crate (tests compare).
    #[cfg(test)]
    pub(super) fn regex_only(mut self) -> Self {
        self.dfa = None;
        self
    }
}
