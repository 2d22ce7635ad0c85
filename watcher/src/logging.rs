//! The log: `tracing` events (and the `log` crate's records, bridged) to
//! stderr, as human lines (coloured on a terminal) or as one JSON object a
//! line. The level comes from `--log-level`, else `RUST_LOG`, else `info`.
//!
//! A progress bar (indicatif) may be on screen while the agent logs: lines
//! are then written with the bar cleared and redrawn after them, so neither
//! garbles the other.
use std::{
    io::{self, IsTerminal, Write},
    sync::Mutex,
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `2025-01-02T03:04:05Z  INFO ban addr=... origin=...`, colours on a TTY.
    #[default]
    Human,
    /// One JSON object a line, fields at the top level (for journald's
    /// `MESSAGE` parsers, Loki, Elasticsearch).
    Json,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub format: Format,
    /// An `EnvFilter` directive (`info`, `fail2xdp=debug,warn`); None:
    /// `RUST_LOG`, else `info` (`debug` with `debug`).
    pub level: Option<String>,
    /// `--debug`: debug level by default, and errors with their trace.
    pub debug: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "--log-level {0:?} is not a level or filter (error, warn, info, debug, trace, or target=level,...)"
    )]
    BadLevel(String, #[source] tracing_subscriber::filter::ParseError),
    #[error("a logger is already installed")]
    AlreadySet,
}

/// Installs the process's logger (once).
pub fn init(o: &Options) -> Result<(), LogError> {
    let default = if o.debug { "debug" } else { "info" };
    let mut bad_env = None;
    let filter = match &o.level {
        Some(l) => EnvFilter::builder()
            .parse(l)
            .map_err(|e| LogError::BadLevel(l.clone(), e))?,
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => EnvFilter::builder().parse(&v).unwrap_or_else(|e| {
                bad_env = Some((v, e));
                EnvFilter::new(default)
            }),
            _ => EnvFilter::new(default),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr);
    let set = match o.format {
        Format::Human => builder
            .with_ansi(io::stderr().is_terminal())
            .with_target(o.debug)
            .try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    set.map_err(|_| LogError::AlreadySet)?;
    if let Some((v, e)) = bad_env {
        tracing::warn!("RUST_LOG={v:?} is not a filter ({e}); logging at {default}");
    }
    if o.format == Format::Json {
        // A panic is an event too (the default hook still prints its trace).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!(panic = %info, "panicked");
            previous(info);
        }));
    }
    Ok(())
}

/// The progress bar on screen, if any: log lines clear it, then redraw it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Shows `bar` under the log lines until [`clear_progress`].
pub fn set_progress(bar: indicatif::ProgressBar) {
    if let Ok(mut b) = BAR.lock() {
        *b = Some(bar);
    }
}

/// Takes the bar off the log's hands (the caller finishes or clears it).
pub fn clear_progress() {
    if let Ok(mut b) = BAR.lock() {
        *b = None;
    }
}

/// stderr, one whole event per write, around the progress bar.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One event's text; written out when dropped.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let out = |b: &[u8]| {
            let _ = io::stderr().lock().write_all(b);
        };
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(|| out(&self.0)),
            _ => out(&self.0),
        }
    }
}
