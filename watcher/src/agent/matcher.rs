//! The match stage between a source and the jails: a thread per source runs
//! the filters of the jails reading it over each chunk (pure work, no jail
//! state), so the engine only counts what they found, in log order. Source,
//! matcher and engine form a pipeline: on a multi-core host the regexes of
//! one chunk run while the engine counts the previous one.
//!
//! The engine publishes the jail configurations per source with a
//! generation number; a result made with an older generation (a reload in
//! between) is not used, and the engine matches that chunk itself.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use crate::{
    config::{JailConfig, SourceConf},
    filter::LineMatch,
    source::Chunk,
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
/// journal entries or no jail reads the source any more).
pub struct Matched {
    pub chunk: Chunk,
    pub found: Option<(u64, Finds)>,
}

/// Starts the match stage of `source`: chunks from `rx`, results to `tx`.
/// It ends when either channel closes.
pub fn spawn(
    source: SourceConf,
    mut rx: mpsc::Receiver<Chunk>,
    tx: mpsc::Sender<Matched>,
    board: Board,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("match".into())
        .spawn(move || {
            while let Some(chunk) = rx.blocking_recv() {
                let found = if chunk.has_times() {
                    None
                } else {
                    let p = board.lock().map(|p| p.clone()).unwrap_or_default();
                    p.by_source
                        .get(&source)
                        .map(|confs| (p.generation, find_all(confs, chunk.text())))
                };
                if tx.blocking_send(Matched { chunk, found }).is_err() {
                    break;
                }
            }
        })
        .map(drop)
}

/// What the filters of each jail in `confs` find in the lines of `text`
/// (lines each ending with `\n`). Only the lines the literal prefilters pick
/// out of the whole text reach the regexes.
pub fn find_all(confs: &[JailConfig], text: &str) -> Finds {
    let mut starts = Vec::new();
    for conf in confs {
        for f in &conf.filters {
            f.candidate_lines(text, |s| starts.push(s as u32));
        }
    }
    // Several jails and literals find the same line: once, in order.
    starts.sort_unstable();
    starts.dedup();
    let mut out = Vec::new();
    for s in starts {
        let line = line_at(text, s);
        let msg = crate::timestamp::stamp_len(line).and_then(|n| line.get(n..));
        for (k, conf) in confs.iter().enumerate() {
            if let Some(found) = classify(conf, line, msg) {
                out.push(Find {
                    start: s,
                    len: line.len() as u32,
                    jail: k as u16,
                    found,
                });
            }
        }
    }
    out
}

/// A jail's filters on one line (`msg`: the text after the timestamp, when
/// it has one): the first filter that finds something decides.
pub fn classify(conf: &JailConfig, line: &str, msg: Option<&str>) -> Option<Found> {
    for (fi, f) in conf.filters.iter().enumerate() {
        let m = match msg {
            Some(m) => f.check_message_host(m),
            None => f.check_host(line),
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
