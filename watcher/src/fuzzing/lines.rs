//! The line path: bytes as a tailed file delivers them (split, checked,
//! repaired, chunked) -> the match stage (prefilters, timestamps, every
//! built-in filter and fail2ban's stock mail filters) -> the jails counting
//! -> the ban service (dry run: guard, length, merge, no maps).
use std::{
    sync::{Arc, OnceLock, mpsc},
    time::SystemTime,
};

use crate::{
    agent::{Engine, Found, Stage, YearReference, classify_alone},
    ban::{BanService, Persist},
    config::{Config, SourceConf},
    source::{Chunk, MAX_LINE, chunks_of_reads},
    timestamp::TimeParser,
};

const LOG: &str = "/fuzz/mail.log";

/// One jail per built-in filter and per stock mail filter, all reading
/// [`LOG`]; small tables and maxretry, so inputs reach evictions and bans.
fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let mut text = String::from("max_hosts = 16\nevidence_lines = 2\n");
        text.push_str("[defaults]\nmaxretry = 2\nfindtime = \"1h\"\n");
        let mut jail = |name: &str, filter: &str| {
            text.push_str(&format!(
                "[jails.{name}]\nfilter = {filter:?}\nfiles = [\"{LOG}\"]\n"
            ));
        };
        for name in crate::filter::Filter::builtin_names() {
            jail(&format!("b-{name}"), name);
        }
        for (i, f) in crate::framing::STOCK_MAIL_FILTERS.iter().enumerate() {
            jail(
                &format!("f{i}"),
                &crate::framing::stock_spec(super::FAIL2BAN_FILTERS, f),
            );
        }
        crate::config::parse(&text, "fuzz.toml", std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("the line path's configuration (fail2ban installed?): {e}"))
    })
}

pub(super) fn prepare() {
    let _ = config();
}

/// Input: one byte of knobs (how the stream is cut into reads, a short or
/// the real line limit), then the stream.
pub fn line_path(data: &[u8]) {
    let Some((&knobs, stream)) = data.split_first() else {
        return;
    };
    let read_len = 1 + usize::from(knobs & 0x7f) * 13;
    let max = if knobs & 0x80 != 0 { 100 } else { MAX_LINE };
    let cfg = config();
    let src = SourceConf::Files(vec![LOG.into()]);

    let chunks = read(stream.chunks(read_len), max);
    // However the stream is cut, the same lines come out, with the same counts.
    let whole = read([stream], max);
    let text = |c: &[Chunk]| c.iter().map(Chunk::text).collect::<String>();
    assert_eq!(text(&chunks.0), text(&whole.0), "lines depend on the reads");
    assert_eq!(chunks.1, whole.1, "counters depend on the reads");
    drop(whole);
    for c in &chunks.0 {
        assert_eq!(c.text().split_terminator('\n').count(), c.len());
        for l in c.text().split_terminator('\n') {
            assert!(
                !l.is_empty() && !l.contains('\0') && !l.ends_with('\r'),
                "{l:?}"
            );
        }
    }

    let service = Arc::new(BanService::new(
        None,
        None,
        Persist::Sync,
        Engine::policy(cfg),
        Vec::new(),
    ));
    let mut engine = Engine::new(cfg.clone(), service);
    let mut stage = Stage::new(src.clone(), engine.board(), YearReference::Now);
    let mut reference = TimeParser::new();
    let mut failures = vec![0u64; cfg.jails.len()];
    for chunk in chunks.0 {
        let m = stage.run(chunk);
        let text = m.chunk.text();
        let confs = m.published.by_source.get(&src).expect("the source's jails");
        // The chunk's one prefilter scan finds what each filter finds line by line.
        let mut want = Vec::new();
        let now = jiff::Timestamp::try_from(SystemTime::now()).expect("a clock after 1970");
        let mut start = 0;
        for line in text.split_terminator('\n') {
            for (k, c) in confs.iter().enumerate() {
                if let Some(found) = classify_alone(c, line, &mut reference, now) {
                    want.push((start, line.len(), k, found));
                }
            }
            start += line.len() + 1;
        }
        let got: Vec<_> = m
            .finds
            .iter()
            .map(|f| {
                (
                    f.start as usize,
                    f.len as usize,
                    usize::from(f.jail),
                    f.found,
                )
            })
            .collect();
        assert_eq!(got, want, "the chunk path disagrees with line by line");
        for f in &m.finds {
            if let Found::Failure { host, .. } = f.found {
                let line = f.line(text);
                // Built-in filters name whole words; stock ones are as
                // loose as fail2ban's tags.
                let named = if confs[usize::from(f.jail)].name.as_str().starts_with("b-") {
                    super::named_in(line, host)
                } else {
                    super::begins_a_word_in(line, host)
                };
                assert!(
                    named,
                    "{host} reported from a line that does not name it: {line:?}"
                );
                failures[usize::from(f.jail)] += 1;
            }
        }
        engine.count(&src, &m);
    }
    for (s, want) in engine.slots.iter().zip(&failures) {
        assert_eq!(s.jail.stats.failures, *want, "jail {}", s.conf.name);
        assert!(s.jail.tracked_hosts() <= s.jail.rules().max_hosts);
    }
    engine.purge();
}

/// The chunks the file reader makes of `reads`, and its counters
/// (lines, repairs, skips).
fn read<'a>(reads: impl IntoIterator<Item = &'a [u8]>, max: usize) -> (Vec<Chunk>, [u64; 4]) {
    let (tx, rx) = mpsc::channel();
    let st = chunks_of_reads(LOG, reads, max, Box::new(move |c| tx.send(c).is_ok()));
    (
        rx.try_iter().collect(),
        [
            st.lines,
            st.replaced_invalid_utf8,
            st.replaced_nul,
            st.skipped_too_long,
        ],
    )
}
