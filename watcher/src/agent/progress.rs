//! `run --replay` on a terminal: a progress bar over the bytes of the log
//! files being replayed (lines/s, ETA), under the log lines, until the
//! readers caught up with the files' ends.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Agent;
use crate::{config::SourceConf, logging, source};

/// A replay that reads nothing new for this long has caught up.
const CAUGHT_UP: Duration = Duration::from_secs(3);

/// Shows the bar while the files of `sources` are replayed; None when
/// there is nothing to replay from files.
pub fn spawn(agent: Arc<Agent>, sources: Vec<SourceConf>) -> Option<tokio::task::JoinHandle<()>> {
    let total: u64 = sources
        .iter()
        .flat_map(|s| match s {
            SourceConf::Files(globs) => source::matching_files(globs),
            SourceConf::Journal { .. } => Vec::new(),
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if total == 0 {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
    pb.set_style(
        ProgressStyle::with_template(
            "replay [{bar:32}] {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    logging::set_progress(pb.clone());
    Some(tokio::spawn(async move {
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (bytes, lines) = {
                let e = agent.engine();
                sources
                    .iter()
                    .map(|s| e.line_counts(s))
                    .fold((0, 0), |(b, l), c| (b + c.bytes, l + c.counted))
            };
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            pb.set_position(bytes.min(total));
            pb.set_message(format!("{lines} lines, {:.0} lines/s", lines as f64 / secs));
            if bytes != last.0 {
                last = (bytes, Instant::now());
            }
            let idle = last.1.elapsed() >= CAUGHT_UP;
            if bytes >= total || (idle && (bytes > 0 || started.elapsed() > 10 * CAUGHT_UP)) {
                pb.finish_and_clear();
                logging::clear_progress();
                log::info!(
                    "replayed {lines} lines in {:.1} s ({:.0} lines/s)",
                    secs,
                    lines as f64 / secs
                );
                return;
            }
        }
    }))
}
