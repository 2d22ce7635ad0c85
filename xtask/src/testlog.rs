//! `cargo test` run with its output passed through and its failures kept,
//! so `cargo xtask test` can print them again at the very end: CI shows
//! only the tail of its log, and the fuzzing that follows the tests would
//! otherwise push a failed test out of sight.
use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    thread,
};

use anyhow::{Context, Result};

/// What a failed run left to repeat.
pub struct Outcome {
    pub success: bool,
    /// libtest's `failures:` blocks, each up to its `test result:` line.
    pub failures: Vec<Vec<String>>,
    /// cargo's own `error:` lines and the indented lines under them
    /// (`N targets failed:` and the list of them).
    pub errors: Vec<String>,
}

/// A block longer than this is cut in the middle when printed again (its
/// start holds the first panic, its end the names of the failed tests).
const HEAD: usize = 200;
const TAIL: usize = 100;

/// Runs `cmd`, copying its stdout and stderr through line by line.
pub fn run(cmd: &mut Command) -> Result<Outcome> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let out = child.stdout.take().context("cargo test's stdout")?;
    let err = child.stderr.take().context("cargo test's stderr")?;
    let errors = thread::spawn(move || {
        let mut errors = Vec::new();
        let mut under_error = false;
        each_line(err, |line| {
            let _ = writeln!(std::io::stderr(), "{line}");
            if line.starts_with("error") {
                under_error = true;
                errors.push(line.to_string());
            } else if under_error && line.starts_with(char::is_whitespace) {
                errors.push(line.to_string());
            } else {
                under_error = false;
            }
        });
        errors
    });
    let mut failures = Vec::new();
    let mut block: Option<Vec<String>> = None;
    each_line(out, |line| {
        let _ = writeln!(std::io::stdout(), "{line}");
        if let Some(b) = block.as_mut() {
            b.push(line.to_string());
            if line.starts_with("test result:") {
                failures.push(block.take().unwrap_or_default());
            }
        } else if line == "failures:" {
            block = Some(vec![line.to_string()]);
        }
    });
    failures.extend(block);
    let status = child.wait().context("waiting for cargo test")?;
    let errors = errors.join().unwrap_or_default();
    Ok(Outcome {
        success: status.success(),
        failures,
        errors,
    })
}

/// Calls `f` on each line of `r`, invalid UTF-8 replaced, until EOF or a
/// read error.
fn each_line(r: impl Read, mut f: impl FnMut(&str)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                f(line.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

impl Outcome {
    /// Prints the failures again, to stderr.
    pub fn repeat_failures(&self) {
        if self.success {
            return;
        }
        eprintln!("\nxtask: cargo test FAILED; its failures again:");
        for b in &self.failures {
            eprintln!();
            if b.len() <= HEAD + TAIL {
                b.iter().for_each(|l| eprintln!("{l}"));
            } else {
                b[..HEAD].iter().for_each(|l| eprintln!("{l}"));
                eprintln!("[... {} lines cut ...]", b.len() - HEAD - TAIL);
                b[b.len() - TAIL..].iter().for_each(|l| eprintln!("{l}"));
            }
        }
        if !self.errors.is_empty() {
            eprintln!();
            self.errors.iter().for_each(|l| eprintln!("{l}"));
        }
        if self.failures.is_empty() && self.errors.is_empty() {
            eprintln!("(no failure block or error line was printed: see the log above)");
        }
    }
}
