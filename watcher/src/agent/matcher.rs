//! The match stage, between a source and the jails: the only place lines
//! are matched. It runs on the source's reader thread over each chunk it
//! read (while the chunk is in that core's cache): the literal prefilters
//! of the jails' filters pick candidate lines out of the whole chunk in one
//! scan, the timestamp of a candidate line is parsed once (its length tells
//! the filters where the message starts, its value is the failure's time),
//! and the filters of the jails that picked it classify it. The engine only
//! counts what comes out, in log order.
//!
//! The engine publishes the jails' configurations per source with a
//! generation number; each result names the configuration it was made with,
//! so a chunk matched just before a reload is counted by the jails that
//! matched it (by name), never matched twice.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tokio::sync::mpsc;

use crate::{
    config::{JailConfig, SourceConf},
    filter::LineMatch,
    source::{Chunk, Deliver},
    timestamp::TimeParser,
};

/// What a jail's filters found in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Failure {
        host: IpAddr,
        filter: u16,
        regex: u16,
    },
    /// By a filter's ignoreregex or the jail's.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Find {
    /// The line: `text[start..start + len]` of the chunk.
    pub start: u32,
    pub len: u32,
    /// Index of the jail in the source's route of the configuration the
    /// chunk was matched with.
    pub jail: u16,
    pub found: Found,
    /// The line's time, unix ns: its stamp, the journal's time, or when it
    /// was read for a line without either.
    pub time: i64,
}

impl Find {
    pub fn line<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start as usize..(self.start + self.len) as usize]
    }
}

/// The jails' configurations per source, in route order, as the engine has
/// them now.
#[derive(Default)]
pub struct Published {
    pub generation: u64,
    pub by_source: HashMap<SourceConf, Arc<Vec<JailConfig>>>,
}

pub type Board = Arc<Mutex<Arc<Published>>>;

/// A chunk with what the match stage found in it, and the configuration it
/// was matched with.
pub struct Matched {
    pub chunk: Chunk,
    pub finds: Vec<Find>,
    pub published: Arc<Published>,
}

/// Per source: what carries over from chunk to chunk.
pub struct Stage {
    source: SourceConf,
    board: Board,
    /// Year inference and the hour cache follow the source's own clock.
    times: TimeParser,
}

impl Stage {
    pub fn new(source: SourceConf, board: Board) -> Self {
        Stage {
            source,
            board,
            times: TimeParser::new(),
        }
    }

    /// Matches one chunk with the configuration published now.
    pub fn run(&mut self, chunk: Chunk) -> Matched {
        let published = self.board.lock().map(|p| p.clone()).unwrap_or_default();
        let finds = match published.by_source.get(&self.source) {
            Some(confs) => find_all(confs, &chunk, &mut self.times, SystemTime::now()),
            None => Vec::new(),
        };
        Matched {
            chunk,
            finds,
            published,
        }
    }

    /// This stage as the function a source's reader hands each chunk to;
    /// results go to `tx` (blocking when the engine is behind: back
    /// pressure). `false` once the engine is gone.
    pub fn deliver(mut self, tx: mpsc::Sender<Matched>) -> Deliver {
        Box::new(move |chunk: Chunk| tx.blocking_send(self.run(chunk)).is_ok())
    }
}

fn unix_ns(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(if t.as_second() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// What the filters of each jail in `confs` find in the lines of `chunk`
/// (lines each ending with `\n`). Only the lines the literal prefilters pick
/// out of the whole text reach the regexes, and only those of the filters
/// that picked them. `now` is the time of lines that carry none.
pub fn find_all(
    confs: &[JailConfig],
    chunk: &Chunk,
    times: &mut TimeParser,
    now: SystemTime,
) -> Vec<Find> {
    let now_ts = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let now_ns = unix_ns(now_ts);
    let text = chunk.text();
    let mut out = Vec::new();
    if chunk.has_times() {
        // Journal entries: few lines, each with its own time and no stamp
        // in the text.
        let mut start = 0u32;
        for (line, time) in chunk.lines() {
            let time = time.map_or(now_ns, unix_ns);
            for (k, conf) in confs.iter().enumerate() {
                if let Some(found) = classify(conf, line, None, Picked::Unknown) {
                    out.push(Find {
                        start,
                        len: line.len() as u32,
                        jail: k as u16,
                        found,
                        time,
                    });
                }
            }
            start += line.len() as u32 + 1;
        }
        return out;
    }
    // (line start << 6 | filter number over all jails), sorted: each line
    // once, in order, with the filters that picked it (known as bits when
    // there are at most 64 filters).
    let mut picks: Vec<u64> = Vec::new();
    let mut filters = 0u64;
    for conf in confs {
        for f in &conf.filters {
            f.candidate_lines(text, |s| picks.push((s as u64) << 6 | (filters & 63)));
            filters += 1;
        }
    }
    picks.sort_unstable();
    let mut i = 0;
    while i < picks.len() {
        let start = picks[i] >> 6;
        let mut mask = 0u64;
        while i < picks.len() && picks[i] >> 6 == start {
            mask |= 1 << (picks[i] & 63);
            i += 1;
        }
        let line = line_at(text, start as u32);
        // The stamp once: where the message starts, and the line's time.
        let (time, msg) = match times.parse(line, now_ts) {
            Some((t, n)) => (unix_ns(t), line.get(n..)),
            None => (now_ns, None),
        };
        let mut first = 0;
        for (k, conf) in confs.iter().enumerate() {
            let n = conf.filters.len() as u32;
            let by = if filters <= 64 {
                let own = mask.checked_shr(first).unwrap_or(0);
                Picked::Mask(own & 1u64.checked_shl(n).map_or(u64::MAX, |b| b - 1))
            } else {
                Picked::Unknown
            };
            first += n;
            if let Some(found) = classify(conf, line, msg, by) {
                out.push(Find {
                    start: start as u32,
                    len: line.len() as u32,
                    jail: k as u16,
                    found,
                    time,
                });
            }
        }
    }
    out
}

/// Which filters' prefilters picked a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picked {
    /// Not known (the line was not picked by a prefilter scan): every
    /// filter checks it in full.
    Unknown,
    /// Bit i: filter i picked it; the others cannot match it.
    Mask(u64),
}

/// A jail's filters on one line (`msg`: the text after the timestamp, when
/// it has one): the first filter that finds something decides.
pub fn classify(conf: &JailConfig, line: &str, msg: Option<&str>, by: Picked) -> Option<Found> {
    for (fi, f) in conf.filters.iter().enumerate() {
        let m = match by {
            Picked::Mask(mask) if mask & (1 << fi) == 0 => continue,
            Picked::Mask(_) => match msg {
                Some(m) => f.check_picked_host(m),
                // No stamp the time parser reads (`Feb 30 ...`): the filter
                // skips what it takes for one, as it does on the line alone.
                None => f.check_host(line),
            },
            Picked::Unknown => match msg {
                Some(m) => f.check_message_host(m),
                None => f.check_host(line),
            },
        };
        match m {
            LineMatch::Failure(hit) => {
                if conf.ignore.iter().any(|r| r.is_match(line)) {
                    return Some(Found::Ignored);
                }
                return Some(Found::Failure {
                    host: hit.host,
                    filter: u16::try_from(fi).unwrap_or(u16::MAX),
                    regex: u16::try_from(hit.regex_index).unwrap_or(u16::MAX),
                });
            }
            LineMatch::Ignored => return Some(Found::Ignored),
            LineMatch::Missed => {}
        }
    }
    None
}

/// The line of `text` starting at byte `start`, without its newline.
fn line_at(text: &str, start: u32) -> &str {
    let rest = &text[start as usize..];
    &rest[..memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confs(text: &str) -> Vec<JailConfig> {
        crate::config::parse(text, "t.toml", std::path::Path::new("/tmp"))
            .expect("config")
            .jails
    }

    /// The chunk path (one prefilter scan over the chunk, the stamp parsed
    /// once per candidate line) finds what each filter finds line by line,
    /// on every built-in filter's fixtures, with the lines' own times.
    #[test]
    fn chunks_find_what_lines_find() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/filters");
        let mut text = String::new();
        let mut jails = String::new();
        for name in crate::filter::Filter::builtin_names() {
            let fixture =
                std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("fixture");
            for l in fixture.lines().filter_map(|l| l.split_once(" | ")) {
                text.push_str(l.1);
                text.push('\n');
            }
            jails.push_str(&format!(
                "[jails.{name}]\nfilter = \"{name}\"\nfiles = [\"/tmp/e.log\"]\n"
            ));
        }
        text.push_str("no stamp warning: unknown[192.0.2.1]: SASL LOGIN authentication failed:\n");
        let confs = confs(&jails);
        let now = SystemTime::now();
        let chunk = Chunk::from_text("/tmp/e.log", &text);
        let got = find_all(&confs, &chunk, &mut TimeParser::new(), now);
        let mut want = Vec::new();
        let mut tp = TimeParser::new();
        let now_ts = jiff::Timestamp::try_from(now).unwrap();
        let mut start = 0u32;
        for line in text.lines() {
            let (time, msg) = match tp.parse(line, now_ts) {
                Some((t, n)) => (unix_ns(t), line.get(n..)),
                None => (unix_ns(now_ts), None),
            };
            for (k, c) in confs.iter().enumerate() {
                if let Some(found) = classify(c, line, msg, Picked::Unknown) {
                    want.push(Find {
                        start,
                        len: line.len() as u32,
                        jail: k as u16,
                        found,
                        time,
                    });
                }
            }
            start += line.len() as u32 + 1;
        }
        assert!(want.len() > 20, "{}", want.len());
        assert_eq!(got, want);
    }

    /// A line whose stamp the time parser refuses (a day February does not
    /// have, a stray byte for the space) is still matched as the filter
    /// matches it alone: the chunk path used to hand the filter the whole
    /// line, stamp and all, and miss the failure (found by the line_path
    /// fuzz target).
    #[test]
    fn lines_with_stamps_the_parser_refuses_match_as_alone() {
        let c = confs("[jails.ddos]\nfilter = \"postfix-ddos\"\nfiles = [\"/tmp/e.log\"]\n");
        let text = "Nov 22'05:33:08 mx1 postfix/postscreen[5502]: COMMAND COUNT LIMIT from [203.0.113.97]:15592 after RCPT\n\
                    Feb 30 05:33:08 mx1 postfix/postscreen[5502]: COMMAND COUNT LIMIT from [203.0.113.98]:15592 after RCPT\n";
        let chunk = Chunk::from_text("/tmp/e.log", text);
        let got = find_all(&c, &chunk, &mut TimeParser::new(), SystemTime::now());
        let hosts: Vec<String> = got
            .iter()
            .filter_map(|f| match f.found {
                Found::Failure { host, .. } => Some(host.to_string()),
                Found::Ignored => None,
            })
            .collect();
        for line in text.lines() {
            assert!(matches!(
                classify(&c[0], line, None, Picked::Unknown),
                Some(Found::Failure { .. })
            ));
        }
        assert_eq!(hosts, ["203.0.113.97", "203.0.113.98"]);
    }

    /// A chunk is matched with the configuration published when it is read,
    /// and says which one that was.
    #[test]
    fn results_name_their_configuration() {
        let c = confs("[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/m.log\"]\n");
        let src = SourceConf::Files(vec!["/tmp/m.log".into()]);
        let board: Board = Arc::default();
        let mut stage = Stage::new(src.clone(), board.clone());
        let line = "Nov 22 05:27:23 mail postfix/smtpd[1]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: x\n";
        let m = stage.run(Chunk::from_text("/tmp/m.log", line));
        assert!(m.finds.is_empty(), "nothing published yet");
        *board.lock().unwrap() = Arc::new(Published {
            generation: 7,
            by_source: [(src, Arc::new(c))].into_iter().collect(),
        });
        let m = stage.run(Chunk::from_text("/tmp/m.log", line));
        assert_eq!((m.published.generation, m.finds.len()), (7, 1));
        assert!(matches!(m.finds[0].found, Found::Failure { .. }));
    }
}
