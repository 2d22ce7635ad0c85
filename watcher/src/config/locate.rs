//! Names the key at a byte offset of a TOML document, for error messages of
//! the parser, which knows where it failed but not under which key.
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Dotted path of the innermost key whose key or value covers `at`, e.g.
/// `jails.postfix-sasl.maxretry`; `None` when the document does not parse
/// or `at` is outside every key.
pub fn key_at(text: &str, at: usize) -> Option<String> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    walk_table(doc.get_ref(), at, &mut path);
    if path.is_empty() {
        None
    } else {
        Some(path.join("."))
    }
}

fn walk_table(t: &DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
    for (k, v) in t.iter() {
        if covers(k, at) || covers(v, at) {
            path.push(k.get_ref().to_string());
            walk_value(v, at, path);
            return true;
        }
    }
    // Tables declared by headers span only their header: look inside too.
    for (k, v) in t.iter() {
        if let DeValue::Table(inner) = v.get_ref() {
            path.push(k.get_ref().to_string());
            if walk_table(inner, at, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

fn walk_value(v: &Spanned<DeValue<'_>>, at: usize, path: &mut Vec<String>) {
    match v.get_ref() {
        DeValue::Table(t) => {
            walk_table(t, at, path);
        }
        DeValue::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if covers(x, at) {
                    if let Some(last) = path.last_mut() {
                        last.push_str(&format!("[{i}]"));
                    }
                    walk_value(x, at, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

fn covers<T>(s: &Spanned<T>, at: usize) -> bool {
    let r = s.span();
    r.start <= at && (at < r.end || (r.is_empty() && at == r.start))
}

/// For text the parser could not make a tree of: the `key =` written on the
/// line of `at`, under the nearest `[table]` header above it.
pub fn key_on_line(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let header = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(_), None) if line.trim().starts_with('[') => None,
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}
