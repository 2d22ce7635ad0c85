//! What each ingest stage costs per line on the benchmark's log: chunk after
//! chunk through reader checks, match stage and engine on one thread, each
//! stage timed (the agent runs them on two threads, which share CPUs and
//! caches). Not a test: run with
//! `F2X_STAGE_ROUNDS=11 cargo test --release -p fail2xdp --lib stage_costs -- --ignored --nocapture`
//! after `cargo xtask bench ingest` made the log (or set `F2X_STAGE_LOG`).
//! `F2X_STAGE_FILTER` names the jail's filter (default `postfix-sasl`), e.g.
//! `fail2ban:/etc/fail2ban/filter.d/postfix.conf[mode=aggressive, usedns=no]`
//! for the bench's fail2ban row.
use std::time::Instant;

use super::{Engine, matcher};
use crate::{
    config::SourceConf,
    source::{Chunk, Piece, Splitter},
};

const READ: usize = 256 * 1024;

#[test]
#[ignore = "a measurement, not a test: see the module comment"]
fn stage_costs() {
    let path = std::env::var("F2X_STAGE_LOG").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/bench-data/maillog-1000000-s42.log"
        )
        .into()
    });
    let rounds: usize = std::env::var("F2X_STAGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let data = std::fs::read(&path).expect("the bench log (run cargo xtask bench ingest once)");
    let filter = std::env::var("F2X_STAGE_FILTER").unwrap_or_else(|_| "postfix-sasl".into());
    let cfg = format!(
        "[jails.sasl]\nfilter = \"{filter}\"\nfiles = [\"{path}\"]\nports = \"smtp,submission,submissions\"\n"
    );
    let src = SourceConf::Files(vec![path.clone()]);
    let build = || {
        let c = crate::config::parse(&cfg, "t.toml", std::path::Path::new("/tmp")).expect("config");
        let svc = crate::ban::BanService::new(
            None,
            None,
            crate::ban::Persist::Sync,
            Engine::policy(&c),
            Vec::new(),
        );
        Engine::new(c, std::sync::Arc::new(svc))
    };
    // Chunk after chunk through the three stages, as the pipeline sees it:
    // a read lands in a buffer, its block goes into a pooled chunk, the
    // match stage finds the failures in it, the engine counts them.
    let (mut best, mut lines, mut failures) = ([f64::MAX; 3], 0, 0);
    let mut read_buf = vec![0u8; READ];
    let source: std::sync::Arc<str> = path.clone().into();
    let mut text = String::with_capacity(2 * READ);
    for _ in 0..rounds {
        let mut e = build();
        let mut stage = matcher::Stage::new(src.clone(), e.board(), super::YearReference::Now);
        let mut sp = Splitter::default();
        let mut spent = [0f64; 3];
        lines = 0;
        for r in data.chunks(READ) {
            let t0 = Instant::now();
            read_buf[..r.len()].copy_from_slice(r);
            text.clear();
            let before = lines;
            sp.feed_blocks(&read_buf[..r.len()], crate::source::MAX_LINE, |p| match p {
                Piece::Block(t, k) => {
                    text.push_str(t);
                    lines += k;
                }
                Piece::Line(l) => {
                    text.push_str(std::str::from_utf8(l).expect("utf-8"));
                    text.push('\n');
                    lines += 1;
                }
                Piece::TooLong => {}
            });
            let chunk =
                Chunk::from_string(source.clone(), std::mem::take(&mut text), lines - before);
            let t1 = Instant::now();
            let m = stage.run(chunk);
            let t2 = Instant::now();
            e.count(&src, &m);
            let t3 = Instant::now();
            text = m.chunk.into_text();
            for (s, d) in spent.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
                *s += d.as_secs_f64();
            }
        }
        for (b, s) in best.iter_mut().zip(spent) {
            *b = b.min(s);
        }
        failures = e.slots[0].jail.stats.failures;
    }
    let [read_s, match_s, count_s] = best;
    let per = |s: f64| s * 1e9 / lines as f64;
    eprintln!(
        "{lines} lines, {failures} failures; ns per line (best of {rounds}):\n  reader {:.1}\n  match  {:.1}\n  engine {:.1}\n  total  {:.1}",
        per(read_s),
        per(match_s),
        per(count_s),
        per(read_s + match_s + count_s)
    );
}
