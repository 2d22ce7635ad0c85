//! fail2ban's configuration as the agent reads it: the INI dialect (filter
//! files and jail.conf, includes, interpolation, tags) and Python regexes.
use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::{
    fail2ban::{
        filterconf::FilterReader,
        ini::{self, Vars},
        pyre::Layout,
        tags,
    },
    filter::{Filter, LineMatch, engine::PyRegex, engine::Search, f2b::Correlator},
};

/// `NAME/filter.d` in the scratch directory holding every stock filter
/// (symbolic links, so includes such as `common.conf` resolve as in
/// fail2ban's own directory), and `NAME/action.d`, for a fuzzed file to
/// sit among them.
fn etc() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = super::scratch().join("fail2ban");
        let filters = dir.join("filter.d");
        std::fs::create_dir_all(&filters).expect("scratch filter.d");
        let stock = Path::new(super::FAIL2BAN_FILTERS);
        let entries = std::fs::read_dir(stock).unwrap_or_else(|e| {
            panic!(
                "{} (Debian package fail2ban; `cargo xtask prereqs` installs it): {e}",
                stock.display()
            )
        });
        for e in entries.flatten() {
            let link = filters.join(e.file_name());
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(e.path(), &link).expect("linking a stock filter");
            }
        }
        let actions = dir.join("action.d");
        if std::fs::symlink_metadata(&actions).is_err() {
            let stock_actions = stock.with_file_name("action.d");
            std::os::unix::fs::symlink(&stock_actions, &actions).expect("linking action.d");
        }
        dir
    })
}

pub(super) fn prepare() {
    let _ = etc();
}

/// Input: the text of an INI file, optionally a NUL and log lines. The
/// text is read as a filter file in filter.d (then the lines go through
/// it, alone and as a multi-line buffer) and as a jail.conf.
pub fn fail2ban_ini(data: &[u8]) {
    let (ini_bytes, lines) = match memchr::memchr(0, data) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let text = String::from_utf8_lossy(ini_bytes);
    let lines = String::from_utf8_lossy(lines);
    let _ = ini::parse(&text, Path::new("fuzz.conf"));
    // An include names a file by any path: a fuzzed one could be a device
    // that never ends. Includes stay among the stock files.
    if text.contains("INCLUDES") && text.contains('/') {
        return;
    }
    let etc = etc();
    let path = etc.join("filter.d/fuzz-input.conf");
    std::fs::write(&path, ini_bytes).expect("writing the filter file");
    if let Ok(reader) = FilterReader::open_file(&path, Vec::new())
        && let Ok(ff) = reader.resolve(&Vars::new(), "auto")
        && let Ok(f) = Filter::from_fail2ban(&ff.name, &ff, ff.usedns.as_deref())
    {
        for line in lines
            .lines()
            .chain(super::fixture_lines().iter().map(String::as_str))
        {
            for m in [
                f.check(line),
                f.check_host(line),
                f.check_message_host(line),
            ] {
                if let LineMatch::Failure(h) = m {
                    assert!(
                        super::begins_a_word_in(line, h.host),
                        "{} from a line that does not name it: {line:?}",
                        h.host
                    );
                }
            }
        }
        if let Some(f2b) = f.fail2ban() {
            let now = jiff::Timestamp::now();
            let tz = jiff::tz::TimeZone::UTC;
            let mut c = Correlator::new(f2b, true).without_aging();
            for (i, line) in lines.lines().enumerate() {
                c.feed(line, i as u64 + 1, now, &tz);
            }
        }
    }
    // The same text as a jail.conf beside the stock filters.
    std::fs::write(etc.join("jail.conf"), ini_bytes).expect("writing jail.conf");
    let _ = crate::fail2ban::load_config(etc);
}

/// Input: one byte of layout (MULTILINE, several lines), a pattern in
/// Python's syntax with fail2ban's tags, a NUL, the text to search.
pub fn pyregex(data: &[u8]) {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let (pat, hay) = match memchr::memchr(0, rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let pat = String::from_utf8_lossy(pat);
    let hay = String::from_utf8_lossy(hay);
    let layout = Layout {
        multiline: knobs & 1 != 0,
        several_lines: knobs & 2 != 0,
    };
    let python = if knobs & 4 != 0 {
        tags::resolve_regex_tags(&pat, knobs & 8 != 0)
    } else {
        pat.into_owned()
    };
    let Ok(re) = PyRegex::new(&python, layout) else {
        return;
    };
    for h in std::iter::once(&*hay).chain(hay.lines()) {
        let found = match re.search(h) {
            Search::Hit(c) => {
                for i in 0..c.len() {
                    if let Some((s, e)) = c.span(i) {
                        assert!(
                            s <= e && e <= h.len(),
                            "group {i} at {s}..{e} of {}",
                            h.len()
                        );
                        assert!(h.is_char_boundary(s) && h.is_char_boundary(e));
                        assert_eq!(c.get(i), Some(&h[s..e]));
                    }
                }
                Some(true)
            }
            Search::Miss => Some(false),
            Search::Limit => None,
        };
        // Both ways of asking agree (a search at the limit may not repeat).
        if let (Some(a), Some(b)) = (found, re.is_match(h)) {
            assert_eq!(a, b, "search and is_match disagree on {h:?}");
        }
    }
}
