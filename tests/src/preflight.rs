//! The tests need root powers and bpffs; without them they must fail with a
//! message saying what is missing, never pass by skipping.

use std::{ffi::CString, fs, mem::MaybeUninit};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Returns what is missing to run the data-plane tests, if anything.
pub fn check_privileges() -> Result<(), String> {
    let mut missing = Vec::new();
    match effective_caps() {
        Some(caps) => {
            let has = |c: u32| caps & (1u64 << c) != 0;
            if !has(CAP_NET_ADMIN) {
                missing.push("CAP_NET_ADMIN (namespaces, veth, XDP attach)".to_string());
            }
            if !has(CAP_SYS_ADMIN) && !has(CAP_BPF) {
                missing.push("CAP_BPF or CAP_SYS_ADMIN (loading XDP programs)".to_string());
            }
            if !has(CAP_SYS_ADMIN) {
                missing.push("CAP_SYS_ADMIN (setns into the test namespaces)".to_string());
            }
        }
        None => missing.push("readable CapEff in /proc/self/status".to_string()),
    }
    if !is_bpffs("/sys/fs/bpf") {
        missing.push("bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)".to_string());
    }
    for tool in ["ip", "bpftool"] {
        if which(tool).is_none() {
            missing.push(format!("`{tool}` in PATH"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the data-plane tests need root powers and kernel features; missing: {}. \
             Run them as root (cargo xtask test does), they never skip.",
            missing.join("; ")
        ))
    }
}

/// Panics with a clear message when [`check_privileges`] finds something missing.
pub fn require_privileges() {
    if let Err(e) = check_privileges() {
        panic!("{e}");
    }
    crate::stale::clean_stale_once();
}

fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn is_bpffs(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c is a valid NUL-terminated path and st is large enough for statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled st.
    let st = unsafe { st.assume_init() };
    st.f_type == BPF_FS_MAGIC
}

pub(crate) fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
