//! The match stage, between a source and the jails: the only place lines
//! are matched. It runs on the source's reader thread over each chunk it
//! read (while the chunk is in that core's cache): the literal prefilters
//! of the jails' filters pick candidate lines out of the whole chunk in one
//! scan, the timestamp of a candidate line is parsed once (its length tells
//! the filters where the message starts, its value is the failure's time),
//! and the filters of the jails that picked it classify it. The engine only
//! counts what comes out, in log order.
//!
//! A fail2ban filter dates a line itself when it has its own
//! `datepattern` (or the line opens with a date its templates read
//! differently); on the common syslog stamp it takes the stage's. A filter
//! that joins the lines of a connection (`<F-MLFID>`, `maxlines`) keeps
//! that state here, per source and (jail, filter), so a failure completed
//! by a later line, in a later chunk, counts once, with the time and the
//! line that completed it.
//!
//! A yearless stamp gets the year nearest to the reference: now, or when
//! replaying (`run --replay`) the modification time of the file the line
//! came from, so an old log dates its lines as they were written.
//!
//! The engine publishes the jails' configurations per source with a
//! generation number; each result names the configuration it was made with,
//! so a chunk matched just before a reload is counted by the jails that
//! matched it (by name), never matched twice.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Instant, SystemTime},
};

use tokio::sync::mpsc;

use super::helpers::Helpers;

use crate::{
    ban::JailName,
    config::{JailConfig, SourceConf},
    filter::{
        LineMatch,
        f2b::{Dated, MlfState},
    },
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
    /// When the match stage got the chunk from its reader: a ban's latency
    /// is measured from here to its map write.
    pub arrived: Instant,
}

/// What a yearless stamp's year is nearest to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YearReference {
    Now,
    /// The modification time of the file a line was read from (a replay
    /// of an old log), now for lines that come with none.
    FileModified,
}

/// What the match stage keeps of a source from line to line: the stamp
/// parser, where yearless stamps are dated from, and the multi-line state
/// of the fail2ban filters that need one.
pub struct Matching {
    /// The hour cache follows the source's own clock.
    pub times: TimeParser,
    pub reference: YearReference,
    states: F2bStates,
    /// Threads that match a big chunk's blocks beside the reader.
    helpers: Helpers,
}

impl Matching {
    pub fn new(reference: YearReference) -> Self {
        Matching {
            times: TimeParser::new(),
            reference,
            states: F2bStates::default(),
            helpers: Helpers::default(),
        }
    }

    /// Connections the fail2ban filters of this source hold now.
    pub fn connections(&self) -> usize {
        self.states
            .states
            .iter()
            .map(|s| s.state.connections())
            .sum()
    }
}

/// The multi-line state of each fail2ban filter that needs one, by jail
/// (name) and filter (its place and name in the jail): it survives a reload
/// that keeps them, and goes with them.
#[derive(Default)]
struct F2bStates {
    /// For the configuration of this generation: per jail in route order,
    /// per filter, the index of its state in `states`.
    generation: Option<u64>,
    index: Vec<Vec<Option<usize>>>,
    states: Vec<F2bState>,
}

struct F2bState {
    jail: JailName,
    filter: usize,
    name: String,
    state: MlfState,
}

impl F2bStates {
    /// Index the states for `confs` (of `generation`): new ones for
    /// filters that have none, those of filters gone dropped.
    fn prepare(&mut self, generation: u64, confs: &[JailConfig]) {
        if self.generation == Some(generation) && self.index.len() == confs.len() {
            return;
        }
        let mut old: Vec<Option<F2bState>> = self.states.drain(..).map(Some).collect();
        self.index = confs
            .iter()
            .map(|c| {
                c.filters
                    .iter()
                    .enumerate()
                    .map(|(fi, f)| {
                        if !f.fail2ban().is_some_and(|x| x.needs_state()) {
                            return None;
                        }
                        let kept = old.iter_mut().find_map(|o| {
                            o.take_if(|s| s.jail == c.name && s.filter == fi && s.name == f.name())
                        });
                        self.states.push(kept.unwrap_or_else(|| F2bState {
                            jail: c.name.clone(),
                            filter: fi,
                            name: f.name().to_string(),
                            state: MlfState::new(),
                        }));
                        Some(self.states.len() - 1)
                    })
                    .collect()
            })
            .collect();
        self.generation = Some(generation);
    }

    fn of_jail(&mut self, jail: usize) -> JailStates<'_> {
        JailStates {
            states: Some(self),
            jail,
        }
    }
}

/// The multi-line states of one jail's filters.
pub struct JailStates<'a> {
    states: Option<&'a mut F2bStates>,
    jail: usize,
}

impl JailStates<'_> {
    /// For a jail checked on its own, without kept state.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn none() -> Self {
        JailStates {
            states: None,
            jail: 0,
        }
    }

    fn get(&mut self, filter: usize) -> Option<&mut MlfState> {
        let s = self.states.as_deref_mut()?;
        let i = (*s.index.get(self.jail)?.get(filter)?)?;
        s.states.get_mut(i).map(|s| &mut s.state)
    }
}

/// Per source: what carries over from chunk to chunk.
pub struct Stage {
    source: SourceConf,
    board: Board,
    matching: Matching,
}

impl Stage {
    pub fn new(source: SourceConf, board: Board, reference: YearReference) -> Self {
        Stage {
            source,
            board,
            matching: Matching::new(reference),
        }
    }

    /// Matches one chunk with the configuration published now.
    pub fn run(&mut self, chunk: Chunk) -> Matched {
        let arrived = Instant::now();
        let published = self.board.lock().map(|p| p.clone()).unwrap_or_default();
        let finds = match published.by_source.get(&self.source) {
            Some(confs) => find_all(
                confs,
                published.generation,
                &chunk,
                &mut self.matching,
                SystemTime::now(),
            ),
            None => Vec::new(),
        };
        Matched {
            chunk,
            finds,
            published,
            arrived,
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

/// What the filters of each jail in `confs` (the configuration of
/// `generation`) find in the lines of `chunk` (lines each ending with
/// `\n`). Only the lines the literal prefilters pick out of the whole text
/// reach the regexes, and only those of the filters that picked them.
/// `now` is the time of lines that carry none.
pub fn find_all(
    confs: &[JailConfig],
    generation: u64,
    chunk: &Chunk,
    m: &mut Matching,
    now: SystemTime,
) -> Vec<Find> {
    find_all_on(confs, generation, chunk, m, now, match_threads)
}

/// [`find_all`], on `threads(candidate lines)` threads when no filter
/// keeps multi-line state.
fn find_all_on(
    confs: &[JailConfig],
    generation: u64,
    chunk: &Chunk,
    m: &mut Matching,
    now: SystemTime,
    threads: fn(usize) -> usize,
) -> Vec<Find> {
    let now_ts = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let now_ns = unix_ns(now_ts);
    let reference = match m.reference {
        YearReference::FileModified => chunk.modified().unwrap_or(now_ts),
        YearReference::Now => now_ts,
    };
    m.states.prepare(generation, confs);
    let text = chunk.text();
    let mut out = Vec::new();
    if chunk.has_times() {
        // Journal entries: few lines, each with its own time and no stamp
        // in the text.
        let mut start = 0u32;
        for (line, time) in chunk.lines() {
            let l = Line {
                text: line,
                with_nl: &text[start as usize..start as usize + line.len() + 1],
                msg: None,
                dated: Dated::Journal(time),
            };
            let time = time.map_or(now_ns, unix_ns);
            for (k, conf) in confs.iter().enumerate() {
                if let Some((found, t)) = classify(conf, &l, Picked::Unknown, m.states.of_jail(k)) {
                    out.push(Find {
                        start,
                        len: line.len() as u32,
                        jail: k as u16,
                        found,
                        time: match t {
                            LineTime::Stage => time,
                            LineTime::Filter(t) => t.map_or(now_ns, unix_ns),
                        },
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
    // One filter gives its lines in order: nothing to sort.
    if !picks.is_sorted() {
        picks.sort_unstable();
    }
    let mut picked: Vec<(u32, u64)> = Vec::new();
    let mut i = 0;
    while i < picks.len() {
        let start = picks[i] >> 6;
        let mut mask = 0u64;
        while i < picks.len() && picks[i] >> 6 == start {
            mask |= 1 << (picks[i] & 63);
            i += 1;
        }
        picked.push((start as u32, mask));
    }
    let lines = Lines {
        confs,
        filters,
        text,
        reference,
        now_ns,
    };
    // Lines no filter joins to others are matched on their own: a big chunk
    // (a backlog, a replay, a flood) is split between threads, in order.
    let workers = if m.states.states.is_empty() {
        threads(picked.len())
    } else {
        1
    };
    if workers <= 1 {
        lines.classify(&picked, &mut m.times, Some(&mut m.states), &mut out);
        return out;
    }
    // The lines go in blocks to whichever thread asks next, not in one
    // share per thread: the threads share the CPUs with the engine and the
    // other sources, and a thread the scheduler holds back would otherwise
    // keep the others waiting at the join with its whole share undone.
    let next = AtomicUsize::new(0);
    let claim = |times: &mut TimeParser| {
        let mut done: Vec<(usize, Vec<Find>)> = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(block) = picked.chunks(MATCH_BLOCK).nth(i) else {
                return done;
            };
            let mut out = Vec::new();
            lines.classify(block, times, None, &mut out);
            done.push((i, out));
        }
    };
    // The helpers start from the reader's stamp parser as it is now.
    let base = m.times.clone();
    let theirs: Mutex<Vec<(usize, Vec<Find>)>> = Mutex::new(Vec::new());
    let helper = || {
        let got = claim(&mut base.clone());
        theirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(got);
    };
    let mut done = Vec::new();
    let times = &mut m.times;
    m.helpers.run(workers - 1, &helper, || done = claim(times));
    done.extend(
        theirs
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    done.sort_unstable_by_key(|(i, _)| *i);
    for (_, v) in done {
        out.extend(v);
    }
    out
}

/// Candidate lines a matching thread claims at a time.
const MATCH_BLOCK: usize = 128;
/// Candidate lines a matching thread gets at least: fewer are not worth
/// the thread's start.
const LINES_PER_MATCH_THREAD: usize = 512;
/// Threads one chunk is matched on at most.
const MATCH_THREADS: usize = 4;

/// How many threads `lines` candidate lines are matched on: one per CPU
/// this process may run on, up to [`MATCH_THREADS`], each with at least
/// [`LINES_PER_MATCH_THREAD`] lines.
fn match_threads(lines: usize) -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cpus.min(MATCH_THREADS)
        .min(lines / LINES_PER_MATCH_THREAD)
        .max(1)
}

/// What every candidate line of a chunk is classified with.
struct Lines<'a> {
    confs: &'a [JailConfig],
    /// Filters over all jails.
    filters: u64,
    text: &'a str,
    reference: jiff::Timestamp,
    now_ns: i64,
}

impl Lines<'_> {
    /// Classifies the `picked` lines (start, mask of the filters that
    /// picked it), in order, into `out`. `states`: the multi-line states,
    /// when a filter may keep one.
    fn classify(
        &self,
        picked: &[(u32, u64)],
        times: &mut TimeParser,
        mut states: Option<&mut F2bStates>,
        out: &mut Vec<Find>,
    ) {
        let (confs, filters, text) = (self.confs, self.filters, self.text);
        for &(start, mask) in picked {
            let line = line_at(text, start);
            // The stamp once: where the message starts, and the line's time.
            let stamp = times.parse(line, self.reference);
            let (time, msg) = match stamp {
                Some((t, n)) => (unix_ns(t), line.get(n..)),
                None => (self.now_ns, None),
            };
            let s = start as usize;
            let l = Line {
                text: line,
                with_nl: text.get(s..s + line.len() + 1).unwrap_or(line),
                msg,
                dated: Dated::File {
                    stamp: stamp.map(|(t, n)| (n, t)),
                    reference: self.reference,
                },
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
                let jail_states = match states.as_deref_mut() {
                    Some(s) => s.of_jail(k),
                    None => JailStates {
                        states: None,
                        jail: k,
                    },
                };
                if let Some((found, t)) = classify(conf, &l, by, jail_states) {
                    out.push(Find {
                        start,
                        len: line.len() as u32,
                        jail: k as u16,
                        found,
                        time: match t {
                            LineTime::Stage => time,
                            LineTime::Filter(t) => t.map_or(self.now_ns, unix_ns),
                        },
                    });
                }
            }
        }
    }
}

/// Where the time of a line a filter decided comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTime {
    /// The stage's stamp (or the journal's time), else now.
    Stage,
    /// A fail2ban filter dated the line itself; `None`: it found no date,
    /// and the line happened now (as for fail2ban).
    Filter(Option<jiff::Timestamp>),
}

/// One line as the filters get it.
pub struct Line<'a> {
    /// Without its newline.
    pub text: &'a str,
    /// With it (fail2ban's regexes see it).
    pub with_nl: &'a str,
    /// The text after the stamp, when it has one.
    pub msg: Option<&'a str>,
    pub dated: Dated,
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

/// One line on its own through a jail's filters, as the match stage reads
/// it (its stamp parsed against `now`; no multi-line state): what a chunk's
/// finds are checked against, in tests and the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub fn classify_alone(
    conf: &JailConfig,
    line: &str,
    tp: &mut TimeParser,
    now: jiff::Timestamp,
) -> Option<Found> {
    let stamp = tp.parse(line, now);
    let with_nl = format!("{line}\n");
    let l = Line {
        text: line,
        with_nl: &with_nl,
        msg: stamp.and_then(|(_, n)| line.get(n..)),
        dated: Dated::File {
            stamp: stamp.map(|(t, n)| (n, t)),
            reference: now,
        },
    };
    classify(conf, &l, Picked::Unknown, JailStates::none()).map(|(f, _)| f)
}

/// A jail's filters on one line: the first filter that finds something
/// decides. `state(i)`: the multi-line state of filter i, for a fail2ban
/// filter that needs one. With the verdict, where the line's time comes
/// from.
pub fn classify(
    conf: &JailConfig,
    l: &Line<'_>,
    by: Picked,
    mut states: JailStates<'_>,
) -> Option<(Found, LineTime)> {
    for (fi, f) in conf.filters.iter().enumerate() {
        if let Picked::Mask(mask) = by
            && mask & (1 << fi) == 0
        {
            continue;
        }
        let (m, time) = match f.check_fail2ban_line(l.with_nl, l.dated, states.get(fi)) {
            Some((m, t)) => (m, LineTime::Filter(t)),
            None => {
                let m = match (by, l.msg) {
                    (Picked::Mask(_), Some(m)) => f.check_picked_host(m),
                    (Picked::Unknown, Some(m)) => f.check_message_host(m),
                    // No stamp the time parser reads (`Feb 30 ...`): the filter
                    // skips what it takes for one, as it does on the line alone.
                    (_, None) => f.check_host(l.text),
                };
                (m, LineTime::Stage)
            }
        };
        match m {
            LineMatch::Failure(hit) => {
                if conf.ignore.iter().any(|r| r.is_match(l.text)) {
                    return Some((Found::Ignored, time));
                }
                let found = Found::Failure {
                    host: hit.host,
                    filter: u16::try_from(fi).unwrap_or(u16::MAX),
                    regex: u16::try_from(hit.regex_index).unwrap_or(u16::MAX),
                };
                return Some((found, time));
            }
            LineMatch::Ignored => return Some((Found::Ignored, time)),
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

    /// Every built-in filter's fixture lines, and a jail per filter.
    fn builtin_fixtures() -> (Vec<String>, Vec<JailConfig>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/filters");
        let mut lines = Vec::new();
        let mut jails = String::new();
        for name in crate::filter::Filter::builtin_names() {
            let fixture =
                std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("fixture");
            lines.extend(
                fixture
                    .lines()
                    .filter_map(|l| l.split_once(" | "))
                    .map(|l| l.1.to_string()),
            );
            jails.push_str(&format!(
                "[jails.{name}]\nfilter = \"{name}\"\nfiles = [\"/tmp/e.log\"]\n"
            ));
        }
        (lines, confs(&jails))
    }

    /// The chunk path (one prefilter scan over the chunk, the stamp parsed
    /// once per candidate line) finds what each filter finds line by line,
    /// on every built-in filter's fixtures, with the lines' own times.
    #[test]
    fn chunks_find_what_lines_find() {
        let (lines, confs) = builtin_fixtures();
        let mut text = String::new();
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("no stamp warning: unknown[192.0.2.1]: SASL LOGIN authentication failed:\n");
        let now = SystemTime::now();
        let chunk = Chunk::from_text("/tmp/e.log", &text);
        let got = find_all(
            &confs,
            0,
            &chunk,
            &mut Matching::new(YearReference::Now),
            now,
        );
        let mut want = Vec::new();
        let mut tp = TimeParser::new();
        let now_ts = jiff::Timestamp::try_from(now).unwrap();
        let mut start = 0u32;
        for line in text.lines() {
            let stamp = tp.parse(line, now_ts);
            let (time, msg) = match stamp {
                Some((t, n)) => (unix_ns(t), line.get(n..)),
                None => (unix_ns(now_ts), None),
            };
            let with_nl = format!("{line}\n");
            let l = Line {
                text: line,
                with_nl: &with_nl,
                msg,
                dated: Dated::File {
                    stamp: stamp.map(|(t, n)| (n, t)),
                    reference: now_ts,
                },
            };
            for (k, c) in confs.iter().enumerate() {
                if let Some((found, _)) = classify(c, &l, Picked::Unknown, JailStates::none()) {
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

    /// A chunk split between threads finds what it finds on one, in the
    /// same order, with the same times.
    #[test]
    fn threads_find_what_one_thread_finds() {
        let (lines, confs) = builtin_fixtures();
        // Enough candidate lines for several threads, in a shuffled order.
        let mut text = String::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..40 * lines.len() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            text.push_str(&lines[(rng % lines.len() as u64) as usize]);
            text.push('\n');
        }
        let chunk = Chunk::from_text("/tmp/e.log", &text);
        let now = SystemTime::now();
        let run = |threads: fn(usize) -> usize| {
            find_all_on(
                &confs,
                0,
                &chunk,
                &mut Matching::new(YearReference::Now),
                now,
                threads,
            )
        };
        let one = run(|_| 1);
        assert!(one.len() > 3 * LINES_PER_MATCH_THREAD, "{}", one.len());
        for n in [2, 3, 7] {
            let split: fn(usize) -> usize = match n {
                2 => |_| 2,
                3 => |_| 3,
                _ => |_| 7,
            };
            assert_eq!(run(split), one, "{n} threads");
        }
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
        let now = SystemTime::now();
        let got = find_all(&c, 0, &chunk, &mut Matching::new(YearReference::Now), now);
        let hosts: Vec<String> = got
            .iter()
            .filter_map(|f| match f.found {
                Found::Failure { host, .. } => Some(host.to_string()),
                Found::Ignored => None,
            })
            .collect();
        let now = jiff::Timestamp::try_from(now).unwrap();
        for line in text.lines() {
            assert!(matches!(
                classify_alone(&c[0], line, &mut TimeParser::new(), now),
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
        let mut stage = Stage::new(src.clone(), board.clone(), YearReference::Now);
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

    fn published(board: &Board, src: &SourceConf, c: Vec<JailConfig>, generation: u64) {
        *board.lock().unwrap() = Arc::new(Published {
            generation,
            by_source: [(src.clone(), Arc::new(c))].into_iter().collect(),
        });
    }

    fn year_of(ns: i64) -> i16 {
        jiff::Timestamp::from_nanosecond(ns as i128)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .year()
    }

    /// A replay dates a yearless stamp from the modification time of the
    /// file it read: a log last written early in a year has its "Dec 31"
    /// lines in the year before, whatever the year is now.
    #[test]
    fn a_replay_dates_yearless_lines_from_the_files_mtime() {
        let c = confs("[jails.sasl]\nfilter = \"postfix-sasl\"\nfiles = [\"/tmp/m.log\"]\n");
        let src = SourceConf::Files(vec!["/tmp/m.log".into()]);
        let board: Board = Arc::default();
        published(&board, &src, c, 1);
        let line = "Dec 31 06:00:00 mail postfix/smtpd[1]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: x\n";
        let mtime: jiff::Timestamp = "2021-01-05T10:00:00Z".parse().unwrap();
        let mut replay = Stage::new(src.clone(), board.clone(), YearReference::FileModified);
        let m = replay.run(Chunk::from_text("/tmp/m.log", line).with_modified(mtime));
        assert_eq!(m.finds.len(), 1);
        assert_eq!(year_of(m.finds[0].time), 2020);
        // Live, the same chunk is dated from now.
        let mut live = Stage::new(src, board, YearReference::Now);
        let m = live.run(Chunk::from_text("/tmp/m.log", line).with_modified(mtime));
        assert!(year_of(m.finds[0].time) >= 2025);
    }

    /// A fail2ban filter that joins a connection's lines (`<F-MLFID>`)
    /// keeps them in the match stage, from chunk to chunk: the address
    /// given on one line makes a failure of a later one, counted once,
    /// with that line's time; another connection's lines are its own.
    #[test]
    fn the_match_stage_joins_a_connections_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.conf"),
            "[Definition]\n\
             prefregex = ^\\s*\\S+ <F-MLFID>app\\[\\d+\\]</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$\n\
             failregex = ^<F-NOFAIL>connect from <ADDR></F-NOFAIL>$\n\
             \x20           ^login failed$\n\
             datepattern = {^LN-BEG}\n",
        )
        .unwrap();
        let c = crate::config::parse(
            "[jails.app]\nfilter = \"fail2ban:app.conf\"\nfiles = [\"/tmp/a.log\"]\n",
            "t.toml",
            dir.path(),
        )
        .expect("config")
        .jails;
        assert!(c[0].filters[0].fail2ban().unwrap().needs_state());
        let src = SourceConf::Files(vec!["/tmp/a.log".into()]);
        let board: Board = Arc::default();
        published(&board, &src, c.clone(), 1);
        let mut stage = Stage::new(src.clone(), board.clone(), YearReference::Now);
        let m = stage.run(Chunk::from_text(
            "/tmp/a.log",
            "Nov 22 05:27:20 mx app[7]: connect from 192.0.2.9\n\
             Nov 22 05:27:21 mx app[8]: connect from 192.0.2.10\n",
        ));
        assert!(
            !m.finds
                .iter()
                .any(|f| matches!(f.found, Found::Failure { .. })),
            "{:?}",
            m.finds
        );
        assert_eq!(stage.matching.connections(), 2);
        // A reload that keeps the jail keeps its connections.
        published(&board, &src, c, 2);
        let m = stage.run(Chunk::from_text(
            "/tmp/a.log",
            "Nov 22 05:27:23 mx app[7]: login failed\n",
        ));
        let failures: Vec<_> = m
            .finds
            .iter()
            .filter_map(|f| match f.found {
                Found::Failure { host, .. } => Some((host, f.time)),
                _ => None,
            })
            .collect();
        let t = TimeParser::new()
            .parse("Nov 22 05:27:23 x", jiff::Timestamp::now())
            .unwrap()
            .0;
        assert_eq!(
            failures,
            [("192.0.2.9".parse().unwrap(), unix_ns(t))],
            "{:?}",
            m.finds
        );
    }
}
