//! Path globs: `*`, `?` and `[...]`/`[!...]` within one path component (no `**`).
//!
//! Written here because the workspace has no glob crate and the need is small: expand a
//! pattern against the file system, component by component, on every poll.

use std::path::{Path, PathBuf};

use super::SourceError;

#[derive(Debug, Clone)]
pub(crate) struct Glob {
    text: String,
    /// Absolute or relative start directory (the literal prefix of the pattern).
    base: PathBuf,
    /// Remaining components; literal ones are kept as they are.
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Pattern(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    Any,
    Star,
    Class { neg: bool, items: Vec<(char, char)> },
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Glob {
    pub(crate) fn new(text: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::BadGlob {
            glob: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let mut base = PathBuf::new();
        if text.starts_with('/') {
            base.push("/");
        }
        let mut parts = Vec::new();
        for comp in text.split('/').filter(|c| !c.is_empty()) {
            if parts.is_empty() && !has_meta(comp) {
                base.push(comp);
            } else if has_meta(comp) {
                parts.push(Part::Pattern(parse(comp).map_err(bad)?));
            } else {
                parts.push(Part::Literal(comp.to_string()));
            }
        }
        if base.as_os_str().is_empty() {
            base.push(".");
        }
        Ok(Self {
            text: text.to_string(),
            base,
            parts,
        })
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The directory whose changes can reveal new matches (the literal prefix; its parent
    /// when the whole pattern is literal, so a file created later is noticed).
    pub(crate) fn watch_dir(&self) -> PathBuf {
        if self.parts.is_empty() {
            self.base
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            self.base.clone()
        }
    }

    /// Regular files currently matching, sorted by path.
    pub(crate) fn expand(&self) -> Vec<PathBuf> {
        let mut cur = vec![self.base.clone()];
        for part in &self.parts {
            let mut next = Vec::new();
            for dir in &cur {
                match part {
                    Part::Literal(name) => next.push(dir.join(name)),
                    Part::Pattern(toks) => {
                        let Ok(rd) = std::fs::read_dir(dir) else {
                            continue;
                        };
                        for ent in rd.flatten() {
                            let name = ent.file_name();
                            let Some(name) = name.to_str() else { continue };
                            // Like shells: a wildcard does not match a leading dot.
                            if name.starts_with('.')
                                && !matches!(toks.first(), Some(Tok::Char('.')))
                            {
                                continue;
                            }
                            if matches(toks, name) {
                                next.push(dir.join(name));
                            }
                        }
                    }
                }
            }
            cur = next;
        }
        cur.retain(|p| p.metadata().map(|m| m.is_file()).unwrap_or(false));
        cur.sort();
        cur.dedup();
        cur
    }
}

fn parse(s: &str) -> Result<Vec<Tok>, &'static str> {
    let mut toks = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::Any),
            '[' => {
                let neg = matches!(it.peek(), Some('!') | Some('^'));
                if neg {
                    it.next();
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let Some(c) = it.next() else {
                        return Err("unclosed [");
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if it.peek() == Some(&'-') {
                        let mut look = it.clone();
                        look.next();
                        match look.peek() {
                            Some(&hi) if hi != ']' => {
                                it.next();
                                it.next();
                                if hi < c {
                                    return Err("reversed range in [...]");
                                }
                                items.push((c, hi));
                                continue;
                            }
                            _ => {}
                        }
                    }
                    items.push((c, c));
                }
                toks.push(Tok::Class { neg, items });
            }
            c => toks.push(Tok::Char(c)),
        }
    }
    Ok(toks)
}

fn one(t: &Tok, c: char) -> bool {
    match t {
        Tok::Char(x) => *x == c,
        Tok::Any => true,
        Tok::Class { neg, items } => items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg,
        Tok::Star => false,
    }
}

/// Iterative wildcard match with single-star backtracking (linear in practice).
fn matches(toks: &[Tok], name: &str) -> bool {
    let s: Vec<char> = name.chars().collect();
    let (mut ti, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if ti < toks.len() && toks[ti] == Tok::Star {
            star = Some((ti, si));
            ti += 1;
        } else if ti < toks.len() && one(&toks[ti], s[si]) {
            ti += 1;
            si += 1;
        } else if let Some((st, ss)) = star {
            ti = st + 1;
            si = ss + 1;
            star = Some((st, ss + 1));
        } else {
            return false;
        }
    }
    toks[ti..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        matches(&parse(p).expect("pattern"), s)
    }

    #[test]
    fn wildcards() {
        assert!(m("mail.log*", "mail.log"));
        assert!(m("mail.log*", "mail.log.1"));
        assert!(!m("mail.log*", "mail.lo"));
        assert!(m("*.log", "a.b.log"));
        assert!(!m("*.log", "a.log.1"));
        assert!(m("m?il.log", "mail.log"));
        assert!(m("x[0-9].log", "x7.log"));
        assert!(!m("x[!0-9].log", "x7.log"));
        assert!(m("x[]a].log", "x].log"));
        assert!(parse("x[0-9").is_err());
    }

    #[test]
    fn expands_directories() {
        let d = tempfile::tempdir().expect("tempdir");
        for p in ["a/one.log", "b/two.log", "b/skip.txt", "c/.hidden.log"] {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, b"x\n").expect("write");
        }
        let g = Glob::new(&format!("{}/*/*.log", d.path().display())).expect("glob");
        let got = g.expand();
        assert_eq!(
            got,
            [d.path().join("a/one.log"), d.path().join("b/two.log")]
        );
        assert_eq!(g.watch_dir(), d.path());
        let lit = Glob::new(&format!("{}/a/one.log", d.path().display())).expect("glob");
        assert_eq!(lit.expand(), [d.path().join("a/one.log")]);
        assert_eq!(lit.watch_dir(), d.path().join("a"));
    }
}
