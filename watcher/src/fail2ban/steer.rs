//! Failregexes a client can steer onto an innocent address: the client
//! writes parts of the logged line (a sender, a recipient, a user name, a
//! subject), and a pattern that may start anywhere in the message, or lets
//! a catch-all run up to the address with nothing after it tied to the
//! line end, takes the address the client wrote instead of the client's.
use std::collections::BTreeSet;

use super::{filterconf::FilterFile, jails::Warning};
use crate::{filter::Filter, framing};

/// Tags that stand for the failure id.
const ID_TAGS: &[&str] = &[
    "<HOST>",
    "<ADDR>",
    "<IP4>",
    "<IP6>",
    "<SUBNET>",
    "<DNS>",
    "<F-ID/>",
    "<F-IP4/>",
    "<F-IP6/>",
    "<F-ADDR/>",
];

/// One warning per steerable failregex of each filter (once per filter).
///
/// A filter is run through the framing corpus ([`crate::framing`]): log
/// lines of the mail daemons whose client-written fields name another
/// address. A failregex the corpus made report that address is named with
/// the field. Any other failregex gets the pattern heuristic below: the
/// corpus knows the mail daemons' usual lines, not every line a filter
/// reads (the seed Kerio spam-relay filter is framed through a line the
/// corpus does not write), so reading clients right on its lines proves
/// nothing about the rest.
pub fn warnings(filters: &[(String, FilterFile)]) -> Vec<Warning> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (jail, f) in filters {
        if !seen.insert((f.path.clone(), f.name.clone(), f.failregex.len())) {
            continue;
        }
        let report = Filter::from_fail2ban(&f.name, f, f.usedns.as_deref())
            .ok()
            .map(|c| framing::probe(&c));
        for (i, p) in f.failregex.iter().enumerate() {
            let framed = report
                .as_ref()
                .map(|r| framed_warnings(&f.name, i, r))
                .unwrap_or_default();
            if !framed.is_empty() {
                out.extend(framed.into_iter().map(|message| Warning {
                    origin: p.origin.clone(),
                    jail: Some(jail.clone()),
                    message,
                }));
            } else if let Some(why) = steerable(&p.text) {
                out.push(Warning {
                    origin: p.origin.clone(),
                    jail: Some(jail.clone()),
                    message: format!(
                        "filter {} failregex[{i}] can be steered by client-controlled text: {why}",
                        f.name
                    ),
                });
            }
        }
    }
    out
}

/// The framing corpus's findings for failregex `i` of a filter, one
/// message per field, each with a line that shows it.
pub fn framed_warnings(filter: &str, i: usize, report: &framing::Report) -> Vec<String> {
    report
        .framed
        .iter()
        .filter(|f| f.regex == i)
        .map(|f| {
            format!(
                "filter {filter} failregex[{i}] can be framed through the {} field ({}): a client writing an address there gets that address reported instead of its own, e.g. {} from: {}",
                f.field.name,
                f.field.what,
                f.reported,
                f.line.escape_debug()
            )
        })
        .collect()
}

/// The framing warnings of a compiled fail2ban filter (one named in a
/// native configuration as `fail2ban:PATH`), for `check-config`.
pub fn filter_warnings(jail: &str, filter: &Filter) -> Vec<Warning> {
    let Some(f2b) = filter.fail2ban() else {
        return Vec::new();
    };
    let report = framing::probe(filter);
    (0..f2b.failregex_count())
        .flat_map(|i| framed_warnings(filter.name(), i, &report))
        .map(|message| Warning {
            origin: None,
            jail: Some(jail.to_string()),
            message,
        })
        .collect()
}

/// Why the pattern can be steered, if it can.
pub fn steerable(re: &str) -> Option<&'static str> {
    let body = strip_flags(re);
    let host = ID_TAGS.iter().filter_map(|t| re.find(t)).min()?;
    if !body.starts_with('^') {
        return Some(
            "it is not anchored with ^, so a field the client wrote earlier in the line can hold the text it looks for, with another address",
        );
    }
    let before = &re[..host];
    let after = &re[host..];
    let end_anchored = after.trim_end().ends_with('$') && !after.trim_end().ends_with("\\$");
    if has_catch_all(before) && !end_anchored {
        return Some(
            "a catch-all (.* or .+) before the address and nothing after it anchored to the line end: it runs over client text up to the last address that fits",
        );
    }
    None
}

fn strip_flags(re: &str) -> &str {
    let mut s = re;
    while s.starts_with("(?") {
        let Some(end) = s.find(')') else { break };
        if s[2..end].bytes().all(|b| b.is_ascii_lowercase()) && end > 2 {
            s = &s[end + 1..];
        } else {
            break;
        }
    }
    s
}

/// An unescaped `.` followed by `*` or `+`, outside a character class.
fn has_catch_all(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut class = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !class => class = true,
            b']' if class => class = false,
            b'.' if !class && matches!(b.get(i + 1), Some(b'*' | b'+')) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_and_catch_all_patterns_are_steerable() {
        assert!(steerable(r"lost connection after AUTH from (.*)\[<HOST>\]").is_some());
        assert!(steerable(r"^Failed login from .* ip <HOST>").is_some());
        assert!(steerable(r"^Failed login from .* ip <HOST> port \d+$").is_none());
        assert!(steerable(r"^warning: [^[]*\[<HOST>\]: SASL").is_none());
        assert!(steerable(r"^(?:[.*]+) <HOST>").is_none());
        assert!(steerable(r"^no host here").is_none());
    }
}
