//! The match stage between a source and the jails: the reader thread of a
//! source runs the filters of the jails reading it over a chunk it read
//! (pure work, no jail state), so the engine only counts what they found,
//! in log order. Reader and engine form a pipeline: on a multi-core host the
//! next chunk is read and matched while the engine counts the previous one,
//! and the matching reads a chunk still in the cache of the core that read
//! it. When the engine is about to run out of work, the reader leaves the
//! next chunk to it unmatched: the two threads share the matching, and a
//! quiet log (a line now and then) is matched and counted by the engine
//! right away.
//!
//! The engine publishes the jail configurations per source with a
//! generation number; a result made with an older generation (a reload in
//! between) is not used, and the engine matches that chunk itself.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::mpsc;

use crate::{
    config::{JailConfig, SourceConf},
    filter::LineMatch,
    source::{Chunk, Deliver},
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

/// What the jails' filters found in a chunk, in line order.
pub type Finds = Vec<Find>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Find {
    /// The line: `text[start..start + len]` of the chunk.
    pub start: u32,
    pub len: u32,
    /// Index of the jail in the source's route.
    pub jail: u16,
    pub found: Found,
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

/// A chunk with what the match stage found in it (`None`: not matched,
/// journal entries, no jail reads the source any more, or left to the
/// engine, which had nothing else to do).
pub struct Matched {
    pub chunk: Chunk,
    pub found: Option<(u64, Finds)>,
    /// Counts the chunk as the engine's until dropped.
    _ticket: Ticket,
}

/// Chunks handed to the engine and not yet counted by it.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reader matches a chunk itself while the engine holds at least this
/// many; with fewer it would soon sit idle, so the chunk goes unmatched and
/// the engine matches it, and the two threads share the work.
const ENGINE_AHEAD: usize = 2;

/// The match stage of `source`, run by its reader on each chunk it read
/// (while the chunk is in that core's cache): what the jails' filters find,
/// sent to `tx` for the engine. `false` once the engine is gone.
pub fn stage(source: SourceConf, tx: mpsc::Sender<Matched>, board: Board) -> Deliver {
    let pending = Arc::new(AtomicUsize::new(0));
    Box::new(move |chunk: Chunk| {
        let found = if chunk.has_times() || pending.load(Ordering::Relaxed) < ENGINE_AHEAD {
            None
        } else {
            let p = board.lock().map(|p| p.clone()).unwrap_or_default();
            p.by_source
                .get(&source)
                .map(|confs| (p.generation, find_all(confs, chunk.text())))
        };
        pending.fetch_add(1, Ordering::Relaxed);
        let m = Matched {
            chunk,
            found,
            _ticket: Ticket(pending.clone()),
        };
        tx.blocking_send(m).is_ok()
    })
}

/// What the filters of each jail in `confs` find in the lines of `text`
/// (lines each ending with `\n`). Only the lines the literal prefilters pick
/// out of the whole text reach the regexes, and only those of the filters
/// that picked them.
pub fn find_all(confs: &[JailConfig], text: &str) -> Finds {
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
    let mut out = Vec::new();
    let mut i = 0;
    while i < picks.len() {
        let start = picks[i] >> 6;
        let mut mask = 0u64;
        while i < picks.len() && picks[i] >> 6 == start {
            mask |= 1 << (picks[i] & 63);
            i += 1;
        }
        let line = line_at(text, start as u32);
        let msg = crate::timestamp::stamp_len(line).and_then(|n| line.get(n..));
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
            Picked::Mask(_) => f.check_picked_host(msg.unwrap_or(line)),
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

    /// The reader matches a chunk only while the engine holds enough to do;
    /// otherwise the chunk goes to the engine unmatched.
    #[test]
    fn reader_matches_only_while_the_engine_is_busy() {
        let cfg = crate::config::parse(
            "[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/m.log\"]\n",
            "t.toml",
            std::path::Path::new("/tmp"),
        )
        .expect("config");
        let engine = super::super::Engine::new(cfg, None, None);
        let src = SourceConf::Files(vec!["/tmp/m.log".into()]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut deliver = stage(src, tx, engine.board());
        let line = "Nov 22 05:27:23 mail postfix/smtpd[1]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: x\n";
        let mut send = || {
            assert!(deliver(Chunk::from_text("/tmp/m.log", line)));
            rx.try_recv().expect("a chunk")
        };
        // The engine holds nothing, then one chunk: both go unmatched.
        let first = send();
        let second = send();
        assert!(first.found.is_none() && second.found.is_none());
        // It holds two: the reader matches.
        let third = send();
        let (_, finds) = third.found.as_ref().expect("matched by the reader");
        assert_eq!(finds.len(), 1);
        assert!(matches!(finds[0].found, Found::Failure { .. }));
        // The engine is done with them: unmatched again.
        drop((first, second, third));
        assert!(send().found.is_none());
    }
}
