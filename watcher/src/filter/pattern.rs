//! Pattern text -> regex text: tag expansion (`<HOST>`, `<F-NAME>`, filter
//! options), rejection of constructs the linear-time engine cannot run, and
//! the literal every match must contain (for the prefilter).
use std::collections::BTreeMap;

use regex_syntax::hir::{Hir, HirKind};

/// Dotted quad; the parser decides whether it is a real address.
pub const IP4: &str = r"\d{1,3}(?:\.\d{1,3}){3}";
/// Colon forms including `::`, `::ffff:192.0.2.1`. Deliberately loose (a
/// small automaton is a fast one): the address parser has the last word.
pub const IP6: &str = r"(?:[0-9A-Fa-f]{0,4}:)+[0-9A-Fa-f.]*";

/// Prefix of the internal capture groups that carry the host.
pub const HOST_GROUP: &str = "__h";

/// Expansion state: host groups need unique names per pattern.
pub struct Expander<'a> {
    pub options: &'a BTreeMap<String, String>,
    host_groups: usize,
}

#[derive(Debug)]
pub enum ExpandError {
    /// An option refers to itself, directly or through others.
    Recursive(String),
}

impl<'a> Expander<'a> {
    pub fn new(options: &'a BTreeMap<String, String>) -> Self {
        Expander {
            options,
            host_groups: 0,
        }
    }

    /// Replaces the tags in `pat`:
    /// - `<HOST>`: an address, bare or as Postfix `name[addr]`; the address
    ///   is the host either way.
    /// - `<CLIENT>`: Postfix `name[addr]` (or `[addr]`) only; the cheapest.
    /// - `<ADDR>`, `<IP4>`, `<IP6>`: a bare address (as host).
    /// - `<F-NAME>` ... `</F-NAME>`: the capture `name` (lower case), kept as
    ///   evidence; `<F-CONTENT>` is handled by the caller.
    /// - `<option>`: the filter option of that name, itself expanded.
    ///
    /// Anything else in angle brackets (`user=<[^>]*>`, `(?P<user>`) is
    /// regex text and left alone.
    pub fn expand(&mut self, pat: &str) -> Result<String, ExpandError> {
        self.expand_depth(pat, 0)
    }

    fn expand_depth(&mut self, pat: &str, depth: usize) -> Result<String, ExpandError> {
        let mut out = String::with_capacity(pat.len() + 64);
        let mut rest = pat;
        while let Some(lt) = rest.find('<') {
            let (before, tail) = rest.split_at(lt);
            out.push_str(before);
            let Some(gt) = tail.find('>') else {
                out.push_str(tail);
                return Ok(out);
            };
            let name = &tail[1..gt];
            // `(?P<name>` and `(?<name>` are regex group syntax.
            let group_syntax = out.ends_with("(?P") || out.ends_with("(?");
            match (group_syntax, self.tag(name, depth)?) {
                (false, Some(text)) => {
                    out.push_str(&text);
                    rest = &tail[gt + 1..];
                }
                _ => {
                    out.push('<');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn tag(&mut self, name: &str, depth: usize) -> Result<Option<String>, ExpandError> {
        let n = self.host_groups;
        let text = match name {
            "HOST" => {
                self.host_groups += 2;
                format!(
                    r"(?:[A-Za-z0-9_.-]*\[(?P<{HOST_GROUP}{n}>{IP4}|{IP6})\]|(?P<{HOST_GROUP}{}>{IP4}|{IP6}))",
                    n + 1
                )
            }
            // Postfix's "name[addr]" only. Name, brackets and address use
            // disjoint bytes, so a pattern built from it can stay one-pass
            // (a single forward scan that also yields the captures).
            "CLIENT" => {
                self.host_groups += 1;
                format!(r"[A-Za-z0-9_.-]*\[(?P<{HOST_GROUP}{n}>[0-9A-Fa-f:.]+)\]")
            }
            "ADDR" => {
                self.host_groups += 1;
                format!("(?P<{HOST_GROUP}{n}>{IP4}|{IP6})")
            }
            "IP4" => {
                self.host_groups += 1;
                format!("(?P<{HOST_GROUP}{n}>{IP4})")
            }
            "IP6" => {
                self.host_groups += 1;
                format!("(?P<{HOST_GROUP}{n}>{IP6})")
            }
            _ if name.starts_with("F-") && name != "F-CONTENT" && is_ident(&name[2..]) => {
                format!("(?P<{}>", name[2..].to_ascii_lowercase())
            }
            _ if name.starts_with("/F-") && name != "/F-CONTENT" && is_ident(&name[3..]) => {
                ")".to_string()
            }
            _ => match self.options.get(name) {
                Some(v) if is_ident(name) => {
                    if depth > 16 {
                        return Err(ExpandError::Recursive(name.to_string()));
                    }
                    self.expand_depth(v, depth + 1)?
                }
                _ => return Ok(None),
            },
        };
        Ok(Some(text))
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// A construct the `regex` crate does not run (it guarantees linear time by
/// leaving these out), named so the config error can say what to change.
pub fn unsupported_construct(pat: &str) -> Option<&'static str> {
    let b = pat.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if let Some(&c) = b.get(i + 1)
                    && !in_class
                {
                    if c.is_ascii_digit() && c != b'0' {
                        return Some("backreference (\\N)");
                    }
                    if c == b'k' && matches!(b.get(i + 2), Some(b'<' | b'{' | b'\'')) {
                        return Some("named backreference (\\k<name>)");
                    }
                    if c == b'G' || c == b'Z' {
                        return Some("anchor \\G/\\Z (use $)");
                    }
                }
                i += 2;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                // `[]...]` and `[^]...]`: a leading ] is a literal.
                if b.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'(' if !in_class && b.get(i + 1) == Some(&b'?') => {
                let rest = &b[i + 2..];
                if rest.starts_with(b"=") || rest.starts_with(b"!") {
                    return Some("look-ahead (?=...)/(?!...)");
                }
                if rest.starts_with(b"<=") || rest.starts_with(b"<!") {
                    return Some("look-behind (?<=...)/(?<!...)");
                }
                if rest.starts_with(b"P=") {
                    return Some("named backreference (?P=name)");
                }
                if rest.starts_with(b">") {
                    return Some("atomic group (?>...)");
                }
                if rest.starts_with(b"(") {
                    return Some("conditional group (?(...)...)");
                }
                if rest.starts_with(b"#") {
                    return Some("inline comment (?#...)");
                }
            }
            b'+' | b'*' | b'?' | b'}' if !in_class && matches!(b.get(i + 1), Some(b'+')) => {
                return Some("possessive quantifier (x*+)");
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Literals every match of `hir` contains, longest first, at most `max`,
/// each at least `min` bytes: a line without one of them cannot match, so
/// a substring search rejects most lines before any regex runs.
pub fn required_literals(hir: &Hir, min: usize, max: usize) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    collect(hir, &mut all);
    all.retain(|l| l.len() >= min);
    all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    all.dedup();
    all.truncate(max);
    all
}

fn collect(hir: &Hir, out: &mut Vec<Vec<u8>>) {
    match hir.kind() {
        HirKind::Literal(l) => out.push(l.0.to_vec()),
        HirKind::Capture(c) => collect(&c.sub, out),
        HirKind::Repetition(r) if r.min >= 1 => collect(&r.sub, out),
        HirKind::Concat(parts) => {
            // Adjacent literals form one longer required run.
            let mut run: Vec<u8> = Vec::new();
            for p in parts {
                match p.kind() {
                    HirKind::Literal(l) => run.extend_from_slice(&l.0),
                    _ => {
                        if !run.is_empty() {
                            out.push(std::mem::take(&mut run));
                        }
                        collect(p, out);
                    }
                }
            }
            if !run.is_empty() {
                out.push(run);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_tags_and_options() {
        let mut opts = BTreeMap::new();
        opts.insert("daemon".to_string(), "postfix/<proc>".to_string());
        opts.insert("proc".to_string(), "smtpd".to_string());
        let mut e = Expander::new(&opts);
        let out = e
            .expand("^<daemon>: user=<[^>]*> (?P<x>a) <F-USER>\\S+</F-USER> <unknown>")
            .unwrap();
        assert!(
            out.starts_with("^postfix/smtpd: user=<[^>]*> (?P<x>a) (?P<user>\\S+) <unknown>"),
            "{out}"
        );
        let out = e.expand("from <HOST> to <ADDR>").unwrap();
        assert!(
            out.contains("(?P<__h0>") && out.contains("(?P<__h1>") && out.contains("(?P<__h2>")
        );
    }

    #[test]
    fn recursive_option_is_an_error() {
        let mut opts = BTreeMap::new();
        opts.insert("a".to_string(), "x<b>".to_string());
        opts.insert("b".to_string(), "<a>".to_string());
        assert!(Expander::new(&opts).expand("<a>").is_err());
    }

    #[test]
    fn finds_unsupported_constructs() {
        assert!(
            unsupported_construct(r"^(?!foo)bar")
                .unwrap()
                .contains("look-ahead")
        );
        assert!(
            unsupported_construct(r"(?<=x)y")
                .unwrap()
                .contains("look-behind")
        );
        assert!(
            unsupported_construct(r"(a)\1")
                .unwrap()
                .contains("backreference")
        );
        assert!(
            unsupported_construct(r"(?P<n>a)(?P=n)")
                .unwrap()
                .contains("backreference")
        );
        assert!(
            unsupported_construct(r"a*+")
                .unwrap()
                .contains("possessive")
        );
        assert_eq!(
            unsupported_construct(r"[\1(?=]x\\1 (?P<a>b) (?:c) \d+"),
            None
        );
    }

    #[test]
    fn literal_is_required_text() {
        let hir = regex_syntax::parse(r"^warning: (?:a|b)\[\d+\]: SASL \w+ authentication failed")
            .unwrap();
        assert_eq!(
            required_literals(&hir, 3, 1),
            vec![b" authentication failed".to_vec()]
        );
        let hir = regex_syntax::parse(r"^(?:foo|bar)$").unwrap();
        assert!(required_literals(&hir, 3, 3).is_empty());
        let hir =
            regex_syntax::parse(r"^warning: \S+ failed(?:, x=\S+)? done, sasl_username=(\S*)$")
                .unwrap();
        let all = required_literals(&hir, 3, 3);
        assert_eq!(
            all,
            vec![
                b" done, sasl_username=".to_vec(),
                b"warning: ".to_vec(),
                b" failed".to_vec()
            ]
        );
    }
}
