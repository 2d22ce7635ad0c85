//! fail2ban's `<tag>` layer: `NAME[key=value, ...]` option lists, the
//! recursive `<name>` substitution of filter options (`<mdre-<mode>>`),
//! and the regex tags the server resolves (`<HOST>`, `<F-USER>`, ...).

/// Most replacements of one tag inside one value (fail2ban's limit).
const MAX_TAG_REPLACE_COUNT: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("{0}")]
    Syntax(String),
    #[error("option <{tag}> refers to itself (through <{found}>)")]
    Recursive { tag: String, found: String },
}

/// `name[k=v, k2="v, 2"][k3='x']` -> (name, options in order).
pub fn extract_options(spec: &str) -> Result<(String, Vec<(String, String)>), TagError> {
    let (name, rest) = match spec.find('[') {
        Some(i) => (&spec[..i], &spec[i..]),
        None => (spec, ""),
    };
    if name.is_empty() {
        return Err(TagError::Syntax(format!("{spec:?}: no name before [")));
    }
    let rest = rest.trim_end();
    if rest.is_empty() {
        return Ok((name.trim_end().to_string(), Vec::new()));
    }
    let inner = rest
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| TagError::Syntax(format!("{spec:?}: expected name[key=value, ...]")))?;
    let b: Vec<char> = inner.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        // `,?\s*$`: the end, possibly after one comma.
        let tail: String = b[i..].iter().collect();
        if tail.trim_start_matches(',').trim().is_empty() {
            break;
        }
        let ks = i;
        while i < b.len() && (b[i].is_alphanumeric() || matches!(b[i], '_' | '-' | '.')) {
            i += 1;
        }
        if i == ks || b.get(i) != Some(&'=') {
            return Err(TagError::Syntax(format!(
                "{spec:?}: expected key=value at {:?}",
                tail.chars().take(25).collect::<String>()
            )));
        }
        let key: String = b[ks..i].iter().collect();
        i += 1;
        let value: String = match b.get(i) {
            Some(&q @ ('"' | '\'')) => {
                let vs = i + 1;
                let Some(e) = b[vs..].iter().position(|&c| c == q) else {
                    return Err(TagError::Syntax(format!("{spec:?}: unterminated quote")));
                };
                i = vs + e + 1;
                b[vs..vs + e].iter().collect()
            }
            _ => {
                let vs = i;
                while i < b.len() && b[i] != ',' && b[i] != ']' {
                    i += 1;
                }
                b[vs..i].iter().collect()
            }
        };
        // Then `,`, `] [` (another option group) or the end.
        if i < b.len() {
            if b[i] == ',' {
                i += 1;
            } else if b[i] == ']' {
                let mut j = i + 1;
                while j < b.len() && b[j].is_whitespace() {
                    j += 1;
                }
                if b.get(j) != Some(&'[') {
                    return Err(TagError::Syntax(format!(
                        "{spec:?}: unexpected text after option {key}"
                    )));
                }
                i = j + 1;
            } else {
                return Err(TagError::Syntax(format!(
                    "{spec:?}: unexpected text after option {key}"
                )));
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
    Ok((name.trim_end().to_string(), out))
}

/// Splits an `action` value into its entries (`name[...]` each, options
/// possibly over several lines), as fail2ban's `splitWithOptions`.
pub fn split_with_options(v: &str) -> Vec<String> {
    let b: Vec<char> = v.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let s = i;
        while i < b.len() && !b[i].is_whitespace() && b[i] != '[' {
            i += 1;
        }
        let mut j = i;
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == '[' && j > s && i > s {
            // Options up to the closing bracket, quotes respected, `][` continuing.
            let mut k = j;
            let mut quote: Option<char> = None;
            let mut end = None;
            while k < b.len() {
                let c = b[k];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c == ']' => {
                        let mut n = k + 1;
                        while n < b.len() && b[n].is_whitespace() {
                            n += 1;
                        }
                        if b.get(n) == Some(&'[') {
                            k = n;
                        } else {
                            end = Some(k);
                            break;
                        }
                    }
                    None => {}
                }
                k += 1;
            }
            if let Some(e) = end {
                out.push(b[s..=e].iter().collect());
                i = e + 1;
                continue;
            }
        }
        // No closing bracket: the word as it stands.
        while i < b.len() && !b[i].is_whitespace() {
            i += 1;
        }
        out.push(b[s..i].iter().collect());
    }
    out
}

/// fail2ban's `substituteRecursiveTags`: every `<name>` in the values
/// replaced by the option of that name (from `tags`, else `lookup`),
/// again and again until nothing changes. Unknown tags (`<HOST>`) stay.
pub fn substitute(
    tags: &mut [(String, String)],
    ignore: &[String],
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), TagError> {
    let mut done: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<String, std::collections::HashMap<String, usize>> =
        Default::default();
    loop {
        let mut again = false;
        for idx in 0..tags.len() {
            let tag = tags[idx].0.clone();
            if ignore.contains(&tag) || done.contains(&tag) {
                continue;
            }
            let orig = tags[idx].1.clone();
            let mut value = orig.clone();
            let mut rplc = counts.remove(&tag).unwrap_or_default();
            let mut from = 0;
            while let Some((s, e)) = find_tag(&value, from) {
                let rtag = value[s + 1..e - 1].to_string();
                if ignore.contains(&rtag) {
                    from = e;
                    continue;
                }
                if rtag == tag || rplc.get(&rtag).copied().unwrap_or(1) > MAX_TAG_REPLACE_COUNT {
                    return Err(TagError::Recursive { tag, found: rtag });
                }
                let repl = tags
                    .iter()
                    .find(|(k, _)| *k == rtag)
                    .map(|(_, v)| v.clone())
                    .or_else(|| lookup(&rtag));
                let Some(repl) = repl else {
                    from = e;
                    continue;
                };
                value = value.replace(&format!("<{rtag}>"), &repl);
                *rplc.entry(rtag).or_insert(0) += 1;
                from = s;
            }
            if value != orig {
                if find_tag(&value, 0).is_some() {
                    counts.insert(tag.clone(), rplc);
                    again = true;
                }
                tags[idx].1 = value.clone();
            }
            if !value.contains('<') {
                done.push(tag);
            }
        }
        if !again {
            return Ok(());
        }
    }
}

/// The next `<name>` (no blank, `<` or `>` inside) at or after `from`.
fn find_tag(s: &str, from: usize) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        if b[i] == b'<' {
            let mut j = i + 1;
            while j < b.len()
                && !matches!(
                    b[j],
                    b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' | b'<' | b'>'
                )
            {
                j += 1;
            }
            if j > i + 1 && j < b.len() && b[j] == b'>' {
                return Some((i, j + 1));
            }
        }
        i += 1;
    }
    None
}

/// `<HOST>`'s address groups (fail2ban's `R_HOST`). The IPv6 form ends in
/// `(?:[0-9a-fA-F]{1,4}|:)`: fail2ban writes the second branch `(?<=:):`,
/// but the repetition before it always ends in `:`, so the look-behind
/// always holds there and the linear engine can take the pattern.
pub(crate) const IP4: &str = r"(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})";
pub(crate) const IP6: &str = r"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:))";
const DNS: &str = r"(?P<dns>[\w\-.^_]*\w)";
const CIDR: &str = r"(?P<cidr>\d+)";

fn addr() -> String {
    format!(r"\[?(?:{IP4}|{IP6})\]?")
}

/// The server's tag resolution (`Regex._resolveHostTag`) and its rewrite
/// of a flag group opening a group (`((?i)x)` -> `(?i:x)`), giving the
/// Python pattern fail2ban compiles. `usedns = no` makes `<HOST>` an
/// address only.
pub fn resolve_regex_tags(regex: &str, usedns_no: bool) -> String {
    let mut out = String::with_capacity(regex.len() + 64);
    let mut open: Vec<String> = Vec::new();
    let mut skiplines = 0;
    let b = regex.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<'
            && let Some(len) = ftag_len(&regex[i..])
        {
            let tag = &regex[i..i + len];
            let tn = &tag[1..len - 1];
            let repl = match tn {
                "HOST" if usedns_no => Some(addr()),
                "HOST" => Some(format!("(?:{}|{DNS})", addr())),
                "SKIPLINES" => {
                    skiplines += 1;
                    Some(format!(r"\n(?P<skiplines{}>(?:(?:.*\n)*?))", skiplines - 1))
                }
                "IP4" | "F-IP4/" => Some(IP4.to_string()),
                "IP6" | "F-IP6/" => Some(IP6.to_string()),
                "ADDR" | "F-ADDR/" => Some(addr()),
                "CIDR" | "F-CIDR/" => Some(CIDR.to_string()),
                "SUBNET" | "F-SUBNET/" => Some(format!(r"\[?(?:{IP4}|{IP6})(?:/{CIDR})?\]?")),
                "DNS" | "F-DNS/" => Some(DNS.to_string()),
                "F-ID/" => Some(r"(?P<fid>\S+)".to_string()),
                "F-PORT/" => Some(r"(?P<fport>\w+)".to_string()),
                _ => custom_tag(tn, &mut open),
            };
            match repl {
                Some(r) => out.push_str(&r),
                None => out.push_str(tag),
            }
            i += len;
            continue;
        }
        let c = regex[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    glob_to_local_flags(&out)
}

/// `<F-NAME>` opens the group `name` (lower case, `id` -> `fid`, `port`
/// -> `fport`); `</F-NAME>` closes it if it was opened.
fn custom_tag(tn: &str, open: &mut Vec<String>) -> Option<String> {
    let (close, name) = match tn.strip_prefix('/') {
        Some(n) => (true, n),
        None => (false, tn),
    };
    let n = name.strip_prefix("F-")?;
    if n.is_empty()
        || !n
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    {
        return None;
    }
    if close {
        return open.iter().any(|o| o == n).then(|| ")".to_string());
    }
    open.push(n.to_string());
    let lower = n.to_ascii_lowercase();
    let g = match lower.as_str() {
        "id" => "fid".to_string(),
        "port" => "fport".to_string(),
        _ => lower,
    };
    Some(format!("(?P<{g}>"))
}

/// Length of a `</?[\w\-]+/?>` tag at the start of `s`.
fn ftag_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    let start = i;
    while i < b.len() {
        let c = s[i..].chars().next()?;
        if c.is_alphanumeric() || c == '_' || c == '-' {
            i += c.len_utf8();
        } else {
            break;
        }
    }
    if i == start {
        return None;
    }
    if b.get(i) == Some(&b'/') {
        i += 1;
    }
    (b.get(i) == Some(&b'>')).then_some(i + 1)
}

/// fail2ban's `R_GLOB2LOCFLAGS`: `((?i)` or `(?:(?i)` -> `(?i:`.
fn glob_to_local_flags(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') {
            let mut j = i + 1;
            if s[j..].starts_with("?:") {
                j += 2;
            }
            if s[j..].starts_with("(?") {
                let fs = j + 2;
                let mut k = fs;
                while k < b.len() && b[k].is_ascii_lowercase() {
                    k += 1;
                }
                if k > fs && b.get(k) == Some(&b')') {
                    out.push_str(&s[j..k]);
                    out.push(':');
                    i = k + 1;
                    continue;
                }
            }
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_lists() {
        assert_eq!(
            extract_options("postfix[mode=aggressive, logtype=journal]").unwrap(),
            (
                "postfix".into(),
                vec![
                    ("mode".into(), "aggressive".into()),
                    ("logtype".into(), "journal".into())
                ]
            )
        );
        assert_eq!(
            extract_options(r#"iptables[name=x, port="a,b", protocol=tcp][chain='IN']"#)
                .unwrap()
                .1,
            vec![
                ("name".into(), "x".into()),
                ("port".into(), "a,b".into()),
                ("protocol".into(), "tcp".into()),
                ("chain".into(), "IN".into())
            ]
        );
        assert_eq!(extract_options("sshd").unwrap(), ("sshd".into(), vec![]));
        assert!(extract_options("x[a=b] junk").is_err());
        assert!(extract_options("x[=b]").is_err());
    }

    #[test]
    fn action_lists_split_on_blanks_outside_options() {
        let v = "iptables-multiport[name=SMTP, port=\"25,465\", protocol=tcp]\n         iptables-multiport[name=HTTP,\n   port=\"80,443\"]\nsendmail-whois";
        assert_eq!(
            split_with_options(v),
            vec![
                "iptables-multiport[name=SMTP, port=\"25,465\", protocol=tcp]".to_string(),
                "iptables-multiport[name=HTTP,\n   port=\"80,443\"]".to_string(),
                "sendmail-whois".to_string()
            ]
        );
    }

    #[test]
    fn recursive_substitution() {
        let mut tags = vec![
            ("failregex".to_string(), "<mdre-<mode>> <HOST>".to_string()),
            ("mode".to_string(), "more".to_string()),
        ];
        let mut lookup = |t: &str| match t {
            "mdre-more" => Some("<mdre-normal>".to_string()),
            "mdre-normal" => Some("N".to_string()),
            _ => None,
        };
        substitute(&mut tags, &[], &mut lookup).unwrap();
        assert_eq!(tags[0].1, "N <HOST>");
        let mut tags = vec![("a".to_string(), "<b>".to_string())];
        let mut lookup = |t: &str| match t {
            "b" => Some("x<b>".to_string()),
            _ => None,
        };
        assert!(substitute(&mut tags, &[], &mut lookup).is_err());
    }

    #[test]
    fn regex_tags() {
        let r = resolve_regex_tags("^<F-USER>\\S+</F-USER> from <HOST> </F-X> <F-ID/>", false);
        assert!(r.starts_with("^(?P<user>\\S+) from (?:"), "{r}");
        assert!(
            r.contains("(?P<dns>") && r.ends_with(" </F-X> (?P<fid>\\S+)"),
            "{r}"
        );
        let r = resolve_regex_tags("<HOST>", true);
        assert!(!r.contains("dns"));
        assert_eq!(
            resolve_regex_tags("SASL ((?i)LOGIN|PLAIN)", true),
            "SASL (?i:LOGIN|PLAIN)"
        );
        assert_eq!(resolve_regex_tags("a(?:(?i)b)", true), "a(?i:b)");
        assert_eq!(resolve_regex_tags(r"\((?i)b)", true), r"\((?i)b)");
    }
}
