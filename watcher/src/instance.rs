//! One fail2xdp instance: its name, and where it keeps its pinned maps, its
//! state store and its control socket. `--instance NAME` (default
//! `fail2xdp`) derives all three; explicit paths override each. The running
//! agent holds the instance's lock, which is how the CLI knows an agent
//! runs (and which one) and how a second `run` is refused before it
//! touches anything.
use std::{
    fs::File,
    io::{self, Read, Seek, Write},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub const DEFAULT_NAME: &str = "fail2xdp";
/// Where agents keep their lock files (one per pin directory) and, by
/// default, their control sockets.
const LOCK_DIR: &str = "/run/fail2xdp";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "instance name `{}` must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'",
        .0.escape_default()
    )]
    BadName(String),
    #[error(
        "an agent (pid {pid}) already runs this instance (pin dir {}); stop it first",
        pin_dir.display()
    )]
    Running { pid: u32, pin_dir: PathBuf },
    #[error("instance lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Instance {
    /// The instance called `name`: pins under /sys/fs/bpf/NAME, state in
    /// /var/lib/NAME, socket /run/fail2xdp/NAME.sock.
    pub fn named(name: &str) -> Result<Self, InstanceError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(InstanceError::BadName(name.to_owned()));
        }
        Ok(Instance {
            name: name.to_owned(),
            pin_dir: Path::new("/sys/fs/bpf").join(name),
            state_dir: Path::new("/var/lib").join(name),
            // Beside the instance locks: the one runtime directory a
            // hardened unit makes writable (RuntimeDirectory=fail2xdp).
            socket: Path::new(LOCK_DIR).join(format!("{name}.sock")),
        })
    }

    /// This instance with any of its paths replaced.
    pub fn with(
        mut self,
        pin_dir: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        socket: Option<PathBuf>,
    ) -> Self {
        if let Some(p) = pin_dir {
            self.pin_dir = p;
        }
        if let Some(p) = state_dir {
            self.state_dir = p;
        }
        if let Some(p) = socket {
            self.socket = p;
        }
        self
    }

    /// The lock file of the agent serving this instance's pin directory
    /// (bpffs holds no regular files, so it lives under /run).
    pub fn lock_path(&self) -> PathBuf {
        let key = normalized(&self.pin_dir);
        // FNV-1a: stable across runs and versions, and short.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_os_str().as_encoded_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Path::new(LOCK_DIR).join(format!("agent-{h:016x}.lock"))
    }

    /// Whether `other` names the same pin directory (what the control
    /// socket checks before serving a request).
    pub fn same_pins(&self, other: &Path) -> bool {
        normalized(&self.pin_dir) == normalized(other)
    }

    /// The pid of the agent holding this instance, if one runs.
    pub fn running_agent(&self) -> Option<u32> {
        let path = self.lock_path();
        let mut f = File::open(&path).ok()?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            return None;
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        // Held, but the pid not written yet: an agent is starting.
        Some(
            text.lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0),
        )
    }
}

/// The pin directory as written, without a trailing slash or `.` parts,
/// and resolved when it exists.
fn normalized(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.components().collect())
}

/// Held by the running agent for its whole life; released when dropped or
/// when the process dies (flock).
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

impl AgentLock {
    /// Takes the instance's lock, or says which agent holds it.
    pub fn acquire(inst: &Instance) -> Result<Self, InstanceError> {
        let path = inst.lock_path();
        let err = |source| InstanceError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(LOCK_DIR).map_err(err)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(err)?;
        // A CLI probing for a running agent holds a shared lock for an
        // instant: retry briefly before calling the instance taken.
        let mut tries = 0;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err(e));
            }
            tries += 1;
            if tries >= 25 {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                return Err(InstanceError::Running {
                    pid: text
                        .lines()
                        .next()
                        .and_then(|l| l.trim().parse().ok())
                        .unwrap_or(0),
                    pin_dir: inst.pin_dir.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let body = format!(
            "{}\n{}\n{}\n{}\n",
            std::process::id(),
            inst.pin_dir.display(),
            inst.state_dir.display(),
            inst.socket.display()
        );
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(body.as_bytes()))
            .map_err(err)?;
        Ok(AgentLock { _file: f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_every_path() {
        let i = Instance::named("mx2").unwrap();
        assert_eq!(i.pin_dir, Path::new("/sys/fs/bpf/mx2"));
        assert_eq!(i.state_dir, Path::new("/var/lib/mx2"));
        assert_eq!(i.socket, Path::new("/run/fail2xdp/mx2.sock"));
        let d = Instance::named(DEFAULT_NAME).unwrap();
        assert_eq!(d.pin_dir, Path::new(fail2xdp_common::PIN_DIR_DEFAULT));
        for bad in ["", ".x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(Instance::named(bad).is_err(), "{bad:?}");
        }
        let o = i
            .clone()
            .with(Some("/tmp/p".into()), None, Some("/tmp/s".into()));
        assert_eq!(
            (o.pin_dir.as_path(), o.state_dir.as_path()),
            (Path::new("/tmp/p"), Path::new("/var/lib/mx2"))
        );
        assert!(o.same_pins(Path::new("/tmp/p/")));
        assert!(!o.same_pins(Path::new("/tmp/q")));
    }

    #[test]
    fn one_agent_per_pin_dir() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::named("t").unwrap().with(
            Some(dir.path().join(format!("pins-{}", std::process::id()))),
            None,
            None,
        );
        assert_eq!(inst.running_agent(), None);
        let lock = AgentLock::acquire(&inst).unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        match AgentLock::acquire(&inst) {
            Err(InstanceError::Running { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("second lock taken: {other:?}"),
        }
        assert_eq!(inst.running_agent(), Some(std::process::id()));
        drop(lock);
        assert_eq!(inst.running_agent(), None);
        let _again = AgentLock::acquire(&inst).unwrap();
    }
}
