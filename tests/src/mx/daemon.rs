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
///
/// getpwnam_r, not getpwnam: the lab's tests run in parallel threads, and
/// getpwnam answers in one static entry that another thread's lookup can
/// overwrite before this one reads it.
pub(super) fn user_ids(name: &str) -> Result<(u32, u32)> {
    let c = CString::new(name)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: zeroed is a valid `passwd`; getpwnam_r writes it and `buf`.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the lengths given.
        let rc = unsafe {
            libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found)
        };
        if rc == libc::ERANGE && buf.len() < 1 << 24 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            bail!(
                "looking up user {name}: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if found.is_null() {
            bail!("no user {name} on this host (is postfix installed?)");
        }
        return Ok((pw.pw_uid, pw.pw_gid));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's tests run in parallel threads of one process, and each
    /// looks up postfix's user and the mailbox owner while preparing its
    /// Postfix. With getpwnam's one static entry, a lookup of one name
    /// could answer with another's ids (CI: the data directory chowned to
    /// the wrong user, and Postfix's master refusing to start).
    #[test]
    fn lookups_in_parallel_threads_answer_for_their_own_name() {
        let names = ["root", "nobody"];
        let want: Vec<(u32, u32)> = names.iter().map(|n| user_ids(n).unwrap()).collect();
        assert_ne!(want[0], want[1], "root and nobody have the same ids here");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let want = want.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let k = (i + t) % names.len();
                        assert_eq!(user_ids(names[k]).unwrap(), want[k], "ids of {}", names[k]);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(
                t.join().is_ok(),
                "a lookup answered with another user's ids"
            );
        }
    }
}
