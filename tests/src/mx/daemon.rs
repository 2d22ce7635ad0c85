//! A daemon the lab started in the foreground (Postfix's master, Dovecot,
//! fail2ban-server): stopped with SIGTERM, then SIGKILL, on Drop. Their
//! children watch their master and exit with it. And the other processes
//! the lab runs: commands bounded in time, users looked up.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Daemon {
    what: &'static str,
    child: Option<Child>,
    /// Where its stdout and stderr go.
    output: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` (already aimed at its namespace) with stdout and stderr
    /// appended to `output`.
    pub fn spawn(what: &'static str, mut cmd: Command, output: &Path) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output)
            .with_context(|| format!("opening {}", output.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            what,
            child: Some(child),
            output: output.to_path_buf(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it printed itself (start-up errors; the rest goes to its log).
    pub fn output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was stopped", self.what);
        };
        if let Some(st) = child.try_wait()? {
            self.child = None;
            bail!(
                "{} exited with {st}; it printed:\n{}",
                self.what,
                self.output()
            );
        }
        Ok(())
    }

    /// Polls `ready` every 20 ms until it holds, the daemon exits, or `timeout`.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
        explain: impl Fn() -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // An exit during start-up says why in the daemon's own log
            // rather than on its stdout (Postfix's `maillog_file`).
            if let Err(e) = self.check_running() {
                bail!("{e:#}\n{}", explain());
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {timeout:?}; it printed:\n{}\n{}",
                    self.what,
                    self.output(),
                    explain()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} ignored SIGTERM for {grace:?}; killing it",
            self.what
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// (uid, gid) of a user of this host.
pub(super) fn user_ids(name: &str) -> Result<(u32, u32)> {
    let c = CString::new(name)?;
    // SAFETY: c is NUL-terminated; getpwnam's result is read before any other call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        bail!("no user {name} on this host (is postfix installed?)");
    }
    // SAFETY: pw is non-null and points to libc's static passwd entry.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}

/// Runs `cmd`, killing it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = std::thread::spawn(move || read_all(out.as_mut()));
    let read_err = std::thread::spawn(move || read_all(err.as_mut()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: read_out.join().unwrap_or_default(),
        stderr: read_err.join().unwrap_or_default(),
    })
}

fn read_all(r: Option<&mut impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    buf
}
