//! One translated Python regex on the engine it needs: the `regex` crate
//! (linear time) when it can, else fancy-regex with a hard backtracking
//! limit per search, behind a loosened `regex` screen. A search that hits
//! the limit is no match for the caller, and says so (`Search::Limit`),
//! so it can be counted; it never runs away with the CPU.
use std::collections::HashMap;

use crate::fail2ban::pyre::{self, Layout, Translation};

/// Backtracking steps one search may take. fail2ban's patterns need a few
/// hundred on a mail log line; a pattern that needs more on a line of at
/// most a few KiB is being driven into its exponential case.
pub const BACKTRACK_LIMIT: usize = 200_000;
/// Compiled size limit of one pattern (and of a backtracker's delegates).
const SIZE_LIMIT: usize = 8 << 20;

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
    Linear(regex::Regex),
    Back {
        re: fancy_regex::Regex,
        screen: regex::Regex,
    },
}

/// The groups of one match: spans by group index.
#[derive(Debug, Clone)]
pub struct Caps<'h> {
    pub hay: &'h str,
    spans: Vec<Option<(usize, usize)>>,
}

impl<'h> Caps<'h> {
    pub fn get(&self, i: usize) -> Option<&'h str> {
        let (s, e) = (*self.spans.get(i)?)?;
        Some(&self.hay[s..e])
    }

    pub fn span(&self, i: usize) -> Option<(usize, usize)> {
        *self.spans.get(i)?
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

pub enum Search<'h> {
    Hit(Caps<'h>),
    Miss,
    /// The backtracking limit was reached: no match, to be counted.
    Limit,
}

impl PyRegex {
    /// `python`: a Python pattern (tags already resolved).
    pub fn new(python: &str, layout: Layout) -> Result<PyRegex, String> {
        let Translation {
            pattern,
            backtrack,
            screen,
        } = pyre::translate(python, layout).map_err(|e| e.to_string())?;
        let (engine, names) = if backtrack {
            let re = fancy_regex::RegexBuilder::new(&pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            let screen = regex::RegexBuilder::new(&screen)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            let names: Vec<Option<String>> =
                re.capture_names().map(|n| n.map(str::to_string)).collect();
            (Engine::Back { re, screen }, names)
        } else {
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            let names: Vec<Option<String>> =
                re.capture_names().map(|n| n.map(str::to_string)).collect();
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

    /// The `regex`-crate pattern every match satisfies (the pattern itself
    /// on the linear engine): for literal extraction.
    pub fn screen_pattern(&self) -> &str {
        match &self.engine {
            Engine::Linear(r) => r.as_str(),
            Engine::Back { screen, .. } => screen.as_str(),
        }
    }

    pub fn group(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((i, n.as_deref()?)))
    }

    pub fn search<'h>(&self, hay: &'h str) -> Search<'h> {
        match &self.engine {
            Engine::Linear(re) => match re.captures(hay) {
                Some(c) => Search::Hit(Caps {
                    hay,
                    spans: (0..c.len())
                        .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                        .collect(),
                }),
                None => Search::Miss,
            },
            Engine::Back { re, screen } => {
                if !screen.is_match(hay) {
                    return Search::Miss;
                }
                match re.captures(hay) {
                    Ok(Some(c)) => Search::Hit(Caps {
                        hay,
                        spans: (0..c.len())
                            .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                            .collect(),
                    }),
                    Ok(None) => Search::Miss,
                    Err(_) => Search::Limit,
                }
            }
        }
    }

    /// `Some(found)`, or `None` when the limit was reached.
    pub fn is_match(&self, hay: &str) -> Option<bool> {
        match &self.engine {
            Engine::Linear(re) => Some(re.is_match(hay)),
            Engine::Back { re, screen } => {
                if !screen.is_match(hay) {
                    return Some(false);
                }
                re.is_match(hay).ok()
            }
        }
    }
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
}
