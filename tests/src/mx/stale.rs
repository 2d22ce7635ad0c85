//! Leftovers of mx labs whose test process died without running its Drop
//! guards: the Postfix, Dovecot and fail2ban masters it started (their
//! children exit with them) and its directory. A lab directory is named
//! `f2x-mx-<pid>-...` after its creator, so a leftover is one whose pid no
//! longer runs; the namespaces and pins go with the harness's own cleanup.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Once,
};

/// Prefix of every lab directory under the temp dir.
pub(super) const DIR_PREFIX: &str = "f2x-mx-";

static ONCE: Once = Once::new();

/// Where lab directories go: tmpfs when there is one. Postfix fsyncs every
/// queue file and log line; on a disk shared with other developers' builds
/// one fsync can stall a delivery for seconds, which is not what the lab
/// measures.
pub(super) fn lab_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes leftovers of dead lab processes, once per process.
pub(super) fn clean_stale_labs_once() {
    ONCE.call_once(|| {
        let mut stale = Vec::new();
        let parents = [lab_parent(), std::env::temp_dir()];
        for e in parents.iter().flat_map(fs::read_dir).flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if creator(&name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                stale.push(e.path());
            }
        }
        if stale.is_empty() {
            return;
        }
        for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = fs::read(p.path().join("cmdline")) else {
                continue;
            };
            // `master -c DIR/etc`, `dovecot -c DIR/dovecot.conf`, `fail2ban-server -c DIR/...`.
            let ours = cmdline.split(|&b| b == 0).any(|arg| {
                stale
                    .iter()
                    .any(|d| arg.starts_with(d.as_os_str().as_encoded_bytes()))
            });
            if ours {
                // SAFETY: kill(2) on one pid: a daemon a dead lab started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for d in &stale {
            let _ = fs::remove_dir_all(d);
        }
    });
}

/// The creator pid in `f2x-mx-<pid>-...`.
fn creator(name: &str) -> Option<u32> {
    name.strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::creator;

    #[test]
    fn recognises_lab_dirs_only() {
        assert_eq!(creator("f2x-mx-1234-0-AbCd"), Some(1234));
        assert_eq!(creator("f2x-test-1234-0"), None);
        assert_eq!(creator("f2x-mx-x"), None);
    }
}
