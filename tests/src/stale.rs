//! Leftovers of test processes that died without running their Drop guards
//! (killed by a timeout, SIGKILL): their namespaces, pin dirs and agents.
//! Everything the harness creates carries its creator's pid, so a leftover
//! is recognised by a pid that no longer runs.

use std::{fs, path::Path, sync::Once};

static ONCE: Once = Once::new();

/// Removes leftovers of dead test processes, once per process.
pub fn clean_stale_once() {
    ONCE.call_once(|| {
        if let Err(e) = clean_stale() {
            eprintln!("warning: cleaning leftovers of earlier test runs: {e:#}");
        }
    });
}

/// The creator pid in `f2x-<pid>-...` / `f2x-test-<pid>-...` / `f2x-bench-<pid>-...`.
fn creator(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("f2x-")?;
    let rest = rest
        .strip_prefix("test-")
        .or_else(|| rest.strip_prefix("bench-"))
        .unwrap_or(rest);
    rest.split('-').next()?.parse().ok()
}

fn dead(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn clean_stale() -> anyhow::Result<()> {
    // Agents first: they hold the links that keep programs attached.
    let mut stale_pins = Vec::new();
    if let Ok(dir) = fs::read_dir("/sys/fs/bpf") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if creator(&name).is_some_and(dead) {
                stale_pins.push(e.path());
            }
        }
    }
    if !stale_pins.is_empty() {
        for p in fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let orphan = args.windows(2).any(|w| {
                w[0] == b"--pin-dir"
                    && stale_pins
                        .iter()
                        .any(|s| s.as_os_str().as_encoded_bytes() == w[1])
            });
            if orphan {
                // SAFETY: kill(2) on one pid: an agent a dead test run started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for p in &stale_pins {
            // A dead run's private bpffs instance (see xdp_filter.rs) is a
            // mount point: detach it first.
            if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
                // SAFETY: a NUL-terminated path; failing on a plain
                // directory is fine.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = fs::remove_dir_all(p);
        }
    }
    if let Ok(dir) = fs::read_dir("/var/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if creator(&name).is_some_and(dead) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &name])
                    .output();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::creator;

    #[test]
    fn recognises_harness_names_only() {
        assert_eq!(creator("f2x-1234-0-s"), Some(1234));
        assert_eq!(creator("f2x-test-99-3"), Some(99));
        assert_eq!(creator("f2x-bench-7-1"), Some(7));
        assert_eq!(creator("fail2xdp"), None);
        assert_eq!(creator("f2x-prod"), None);
        assert_eq!(creator("h6test"), None);
    }
}
