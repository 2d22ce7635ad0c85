//! Progress bars (indicatif) for reading a large log: `fail2xdp test`. On
//! a terminal only; piped, nothing extra is printed.
use std::{
    io::{self, IsTerminal, Read},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` bytes on stderr, if stderr is a terminal and
/// `quiet_stdout` (nothing else writes to the same screen meanwhile).
pub fn bar(total: u64, quiet_stdout: bool) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() || !quiet_stdout || total == 0 {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
    pb.set_style(style());
    Some(pb)
}

pub fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{bar:32}] {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// A reader that moves `bar` by the bytes read and shows lines/s.
pub struct Reading<R> {
    inner: R,
    bar: ProgressBar,
    lines: u64,
    started: Instant,
    shown: Instant,
}

impl<R: Read> Reading<R> {
    pub fn new(inner: R, bar: ProgressBar) -> Self {
        let now = Instant::now();
        Reading {
            inner,
            bar,
            lines: 0,
            started: now,
            shown: now,
        }
    }
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.bar.finish_and_clear();
            return Ok(0);
        }
        self.lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        self.bar.inc(n as u64);
        if self.shown.elapsed() >= Duration::from_millis(250) {
            self.shown = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            self.bar.set_message(format!(
                "{} lines, {:.0} lines/s",
                self.lines,
                self.lines as f64 / secs
            ));
        }
        Ok(n)
    }
}

/// `file` behind a bar when one is shown.
pub fn reader(file: std::fs::File, quiet_stdout: bool) -> Box<dyn Read> {
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    match bar(total, quiet_stdout) {
        Some(pb) => Box::new(Reading::new(file, pb)),
        None => Box::new(file),
    }
}
