//! What the fuzz targets (fuzz/, `cargo xtask fuzz TARGET`) run: each entry
//! point takes libFuzzer's raw bytes through the agent's own code and
//! panics only where a property breaks (a panic inside that code is a
//! crash too). Built with the `fuzzing` feature, and for the unit tests,
//! which replay the corpora kept in fuzz/corpus/ so every input that once
//! crashed stays a regression test of the ordinary `cargo test`.
//!
//! Inputs never reach outside the process: no file but the scratch
//! directory of [`scratch`] and read-only fail2ban files is opened, no
//! socket, no map.
mod blocklist;
mod config;
mod control;
mod crowdsec;
mod fail2ban;
mod lines;

pub use blocklist::ban_file;
pub use config::config_toml;
pub use control::control;
pub use crowdsec::crowdsec_stream;
pub use fail2ban::{fail2ban_ini, pyregex};
pub use lines::line_path;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::filter::parse_host;

/// A fuzz target: one input, panicking on a broken property.
pub type Target = fn(&[u8]);

/// The targets by name, as `cargo xtask fuzz TARGET` knows them.
pub const TARGETS: &[(&str, Target)] = &[
    ("line_path", line_path),
    ("config_toml", config_toml),
    ("fail2ban_ini", fail2ban_ini),
    ("pyregex", pyregex),
    ("control", control),
    ("ban_file", ban_file),
    ("crowdsec_stream", crowdsec_stream),
];

/// Builds what target `name` reuses from input to input (its filters, its
/// agent), so the first input is not charged with it: the fuzz targets call
/// this once before the first input.
pub fn prepare(name: &str) {
    match name {
        "line_path" => lines::prepare(),
        "control" => control::prepare(),
        "fail2ban_ini" => fail2ban::prepare(),
        _ => {}
    }
    let _ = fixture_lines();
}

/// Where fail2ban's stock filters are read (Debian's package `fail2ban`).
pub const FAIL2BAN_FILTERS: &str = "/etc/fail2ban/filter.d";

/// A directory of this process's own for files a target must write,
/// removed by nobody: it is reused by every input, and its name carries
/// the pid (`f2x-fuzz-PID`), like everything the test harness leaves.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("f2x-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d)
            .unwrap_or_else(|e| panic!("creating the scratch directory {}: {e}", d.display()));
        d
    })
}

/// Whether `line` writes `host` somewhere: some run of address characters
/// that parses as it, a whole word. A built-in filter must never report an
/// address the line does not name (whatever else it reports).
pub fn named_in(line: &str, host: IpAddr) -> bool {
    address_runs(line, |run, ends_word| {
        ends_word && parse_host(run) == Some(host)
    })
}

/// Whether `line` writes `host` at the start of a word, as fail2ban's
/// tags take it: `<HOST>` has no right boundary, so fail2ban reports
/// 203.0.113.170 from `203.0.113.1703` and 192.0.2.19 from `192.0.2.19tpd`,
/// and the stock filters, run as fail2ban runs them, do too. Less than
/// that (an address from the middle of a word, or one the line does not
/// write) is a bug even there.
pub fn begins_a_word_in(line: &str, host: IpAddr) -> bool {
    address_runs(line, |run, _| parse_host(run) == Some(host))
}

/// Calls `f` with every run of address characters that starts a word
/// (up to 64 bytes long), and whether it also ends one; true as soon as
/// `f` is.
fn address_runs(line: &str, mut f: impl FnMut(&[u8], bool) -> bool) -> bool {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric();
    let addr_char = |c: u8| c.is_ascii_hexdigit() || b".:%".contains(&c) || word(c);
    for i in 0..b.len() {
        if !addr_char(b[i]) || (i > 0 && word(b[i - 1]) && word(b[i])) {
            continue;
        }
        let mut j = i;
        while j < b.len() && j - i < 64 && addr_char(b[j]) {
            j += 1;
            let ends_word = j == b.len() || !(word(b[j - 1]) && word(b[j]));
            if f(&b[i..j], ends_word) {
                return true;
            }
        }
    }
    false
}

/// The lines of the filters' test fixtures (watcher/tests/data/filters),
/// without their annotations: seeds, and lines for filters under test.
pub fn fixture_lines() -> &'static [String] {
    static LINES: OnceLock<Vec<String>> = OnceLock::new();
    LINES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/filters");
        let mut out = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            out.extend(
                text.lines()
                    .filter_map(|l| l.split_once(" | "))
                    .map(|(_, l)| l.to_string()),
            );
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_named_only_where_written() {
        let h = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(named_in("x unknown[192.0.2.7]: y", h("192.0.2.7")));
        assert!(named_in("rip=2001:DB8::1, lip", h("2001:db8::1")));
        assert!(named_in("from ::ffff:192.0.2.7 port", h("192.0.2.7")));
        assert!(named_in("192.0.2.7", h("192.0.2.7")));
        assert!(!named_in("x 192.0.2.77 y", h("192.0.2.7")));
        assert!(!named_in("x 1192.0.2.7 y", h("192.0.2.7")));
        assert!(!named_in("x 192.0.2.8 y", h("192.0.2.7")));
        // fail2ban's tags take an address from the start of a word (two
        // crashes of the line_path target on the stock kerio filter).
        assert!(!named_in("address 192.0.2.19tpd[2210]:", h("192.0.2.19")));
        assert!(begins_a_word_in(
            "address 192.0.2.19tpd[2210]:",
            h("192.0.2.19")
        ));
        assert!(begins_a_word_in(
            "address 203.0.113.1703, mail",
            h("203.0.113.170")
        ));
        assert!(!begins_a_word_in("from x192.0.2.19", h("192.0.2.19")));
        assert!(!begins_a_word_in("from 1192.0.2.19", h("192.0.2.19")));
    }

    /// Every input kept under fuzz/corpus/TARGET (seeds, and inputs that
    /// once crashed a target) through its target again.
    #[test]
    fn the_fuzz_corpora_still_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut ran = 0;
        for (name, run) in TARGETS {
            let dir = root.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("the corpus of {name} ({}): {e}", dir.display()));
            for e in entries.flatten() {
                let input = std::fs::read(e.path()).expect("corpus file");
                run(&input);
                ran += 1;
            }
        }
        assert!(ran >= TARGETS.len(), "{ran} inputs");
    }
}
