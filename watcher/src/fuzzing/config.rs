//! The TOML loaders: the agent's configuration and a filter file in the
//! agent's own format, and what a loaded filter then says about lines.
use crate::{
    config::{self, ConfigError},
    filter::{Filter, LineMatch},
};

/// Input: the configuration's text, optionally a NUL and the text of the
/// filter file `filter.toml` beside it (which the configuration may name).
pub fn config_toml(data: &[u8]) {
    let (cfg, filter) = match memchr::memchr(0, data) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let text = String::from_utf8_lossy(cfg);
    let dir = super::scratch().join("config");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let file = dir.join("filter.toml");
    match filter {
        Some(f) => std::fs::write(&file, f).expect("writing filter.toml"),
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
    if filter.is_some()
        && let Ok(f) = Filter::from_toml_file(&file)
    {
        check_lines(&f);
    }
    if !reads_only_known_files(&text) {
        return;
    }
    match config::parse(&text, "fuzz.toml", &dir) {
        Ok(cfg) => {
            for j in &cfg.jails {
                assert!(!j.filters.is_empty(), "jail {} without a filter", j.name);
                for f in &j.filters {
                    check_lines(f);
                }
            }
        }
        Err(ConfigError::Invalid(problems)) => {
            assert!(
                !problems.is_empty(),
                "an invalid configuration without a problem"
            );
            // file:line:key names a place in the file.
            let lines = text.lines().count().max(1);
            for p in &problems {
                assert!(p.line <= lines + 1, "{p} is past the end ({lines} lines)");
                assert!(!p.message.is_empty(), "{p}: no message");
            }
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parse read a file: {e}"),
    }
}

/// Only files the configuration's filters can be read from: `filter.toml`
/// beside it and fail2ban's filter.d (a fuzzed path could name a device
/// that never ends, which is an operator's choice, not a hostile input).
fn reads_only_known_files(text: &str) -> bool {
    let Ok(v) = text.parse::<toml::Table>() else {
        return true;
    };
    fn ok(v: &toml::Value, filter_key: bool) -> bool {
        match v {
            toml::Value::String(s) if filter_key => {
                let s = s.trim_start_matches("./");
                !(s.contains('/') || s.ends_with(".toml"))
                    || s == "filter.toml"
                    || (s.starts_with(&format!("fail2ban:{}/", super::FAIL2BAN_FILTERS))
                        && !s.contains(".."))
            }
            toml::Value::Array(a) => a.iter().all(|x| ok(x, filter_key)),
            toml::Value::Table(t) => t.iter().all(|(k, x)| ok(x, k == "filter")),
            _ => true,
        }
    }
    v.iter().all(|(k, x)| ok(x, k == "filter"))
}

/// A compiled filter on the fixture lines: any failure it reports names
/// an address the line writes.
fn check_lines(f: &Filter) {
    for line in super::fixture_lines() {
        for m in [
            f.check(line),
            f.check_host(line),
            f.check_message_host(line),
        ] {
            if let LineMatch::Failure(h) = m {
                assert!(
                    super::named_in(line, h.host),
                    "filter {} reported {} from {line:?}",
                    f.name(),
                    h.host
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_filter_files_are_read() {
        assert!(reads_only_known_files(
            "[jails.a]\nfilter = \"postfix-sasl\"\nfiles = [\"/var/log/x\"]\n"
        ));
        assert!(reads_only_known_files(
            "[jails.a]\nfilter = [\"./filter.toml\"]\n"
        ));
        assert!(reads_only_known_files(
            "[jails.a]\nfilter = \"fail2ban:/etc/fail2ban/filter.d/postfix.conf[mode=auth]\"\n"
        ));
        assert!(!reads_only_known_files(
            "[jails.a]\nfilter = \"/dev/zero\"\n"
        ));
        assert!(!reads_only_known_files(
            "[jails.a]\nfilter = [\"x.toml\"]\n"
        ));
        assert!(!reads_only_known_files(
            "[defaults]\nfilter = \"fail2ban:/etc/fail2ban/filter.d/../../../dev/zero\"\n"
        ));
    }
}
