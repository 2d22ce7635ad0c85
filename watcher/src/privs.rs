//! Least privilege: once the XDP program is loaded and attached, the agent
//! keeps only the capabilities the running agent needs ([`KEPT`]) and
//! drops every other one from its effective, permitted, inheritable,
//! ambient and bounding sets, with `no_new_privs` set, before any thread
//! starts, so every thread (the log readers and their match stage, the
//! jails, the control socket, the CrowdSec client) runs with no more.
//!
//! The agent stays uid 0: its state directory, control socket and pins are
//! root's, and an owner needs no capability to use its own files.
//!
//! What the running agent does, and what that takes:
//! - updating and reading the maps through the descriptors opened at start:
//!   nothing on kernels since 6.5; before that, with
//!   `kernel.unprivileged_bpf_disabled` set (every distribution's default),
//!   every `bpf()` call needs `CAP_BPF`;
//! - re-opening the pinned maps and links (`list`, `explain` and `status`
//!   read a fresh handle, `BPF_OBJ_GET`): `CAP_BPF`, as above;
//! - reading log files it does not own (`/var/log/mail.log` is
//!   `syslog:adm 0640` on Debian), in directories it may not search, and
//!   the new files after a rotation: `CAP_DAC_READ_SEARCH`;
//! - a reload (SIGHUP, `fail2xdp reload`) re-reads the configuration and
//!   restarts sources; it never re-attaches, so no `CAP_NET_ADMIN`;
//!   `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SETUID`, `CAP_DAC_OVERRIDE`,
//!   `CAP_NET_ADMIN` and all the others are gone for good.
//!
//! The one exception is a separate process: the connection closer's helper
//! (closer/), started before the drop, keeps `CAP_NET_ADMIN` and nothing
//! else ([`drop_to`]).
//!
//! An agent that does not run with capabilities (not root) changes nothing.
use std::io;

/// `CAP_DAC_READ_SEARCH` (linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_SETPCAP`: needed to shrink the bounding set.
const CAP_SETPCAP: u32 = 8;
/// `CAP_NET_ADMIN`: kept by the connection closer's helper only.
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_BPF` (Linux 5.8).
pub const CAP_BPF: u32 = 39;

/// The capabilities the agent keeps after attaching, and why (see the
/// module documentation): `CAP_BPF` for `bpf()` on the pinned maps and
/// links, `CAP_DAC_READ_SEARCH` for log files it does not own.
pub const KEPT: [u32; 2] = [CAP_BPF, CAP_DAC_READ_SEARCH];

/// Names as capabilities(7) spells them, lower case, by number.
const NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// The name of capability `cap` (`cap_42` for one this table lacks).
pub fn name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("cap_{cap}"), |n| (*n).to_string())
}

/// The names of the capabilities in `mask`, lowest number first.
pub fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|c| mask & (1u64 << c) != 0)
        .map(name)
        .collect()
}

/// [`KEPT`] as a mask.
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, c| m | (1u64 << c))
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's (effective, permitted, inheritable) sets.
fn capget() -> io::Result<(u64, u64, u64)> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: a v3 header and the two data structs v3 writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |m: u64| ((m & 0xffff_ffff) as u32, (m >> 32) as u32);
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let d = [
        CapData {
            effective: e.0,
            permitted: p.0,
            inheritable: i.0,
        },
        CapData {
            effective: e.1,
            permitted: p.1,
            inheritable: i.1,
        },
    ];
    // SAFETY: a v3 header and the two data structs v3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl operations used here take integers only.
    let rc = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The highest capability this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// This thread's effective capabilities, by name (the agent's, once it
/// has dropped them: every thread has the same).
pub fn effective() -> Vec<String> {
    capget().map(|(e, _, _)| names(e)).unwrap_or_default()
}

/// Threads of this process (1 when only the calling one runs).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {what}: {source}")]
pub struct PrivsError {
    what: String,
    #[source]
    source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PrivsError {
    let what = what.into();
    move |source| PrivsError { what, source }
}

/// Keeps [`KEPT`] (those of them this process has) and drops every other
/// capability from the effective, permitted, inheritable, ambient and
/// bounding sets, and sets `no_new_privs`, so no thread and no program
/// it runs can get them back. Call it before any other thread starts:
/// capabilities are per thread, and threads started later inherit the
/// caller's. Returns the names of the capabilities kept, or None when the
/// process had none to drop (not root).
pub fn drop_to_kept() -> Result<Option<Vec<String>>, PrivsError> {
    drop_to(&KEPT)
}

/// [`drop_to_kept`] keeping `caps` instead of [`KEPT`] (the closer's
/// helper keeps `CAP_NET_ADMIN` only).
pub fn drop_to(caps: &[u32]) -> Result<Option<Vec<String>>, PrivsError> {
    let wanted = caps.iter().fold(0u64, |m, c| m | 1u64 << c);
    let (eff, perm, _) = capget().map_err(err("capget"))?;
    if eff == 0 && perm == 0 {
        return Ok(None);
    }
    // A thread left from start-up (a name lookup's) ends on its own soon.
    for _ in 0..30 {
        if threads() <= 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let n = threads();
    if n > 1 {
        log::warn!(
            "dropping capabilities with {} other thread(s) still running: they keep theirs until they end",
            n - 1
        );
    }
    let keep = wanted & perm;
    let last = last_cap().min(63);
    if eff & (1u64 << CAP_SETPCAP) != 0 {
        for cap in 0..=last {
            if keep & (1u64 << cap) != 0 {
                continue;
            }
            // EINVAL: a capability this kernel does not know.
            match prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap)) {
                Ok(1) => prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))
                    .map(drop)
                    .map_err(err(format!("removing {} from the bounding set", name(cap))))?,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(err(format!("reading the bounding set ({})", name(cap)))(e)),
            }
        }
    } else {
        log::warn!("no cap_setpcap: the bounding set cannot be reduced");
    }
    // Old kernels have no ambient set: nothing to clear there.
    // SAFETY: integers only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(err("clearing the ambient set")(e));
        }
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(err("setting no_new_privs"))?;
    capset(keep, keep, 0).map_err(err("capset"))?;
    let (e, p, i) = capget().map_err(err("capget"))?;
    if e != keep || p != keep || i != 0 {
        return Err(err("checking the result")(io::Error::other(format!(
            "effective {e:#x}, permitted {p:#x}, inheritable {i:#x}, expected {keep:#x}"
        ))));
    }
    Ok(Some(names(keep)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_capability_numbers() {
        assert_eq!(name(0), "cap_chown");
        assert_eq!(name(CAP_DAC_READ_SEARCH), "cap_dac_read_search");
        assert_eq!(name(CAP_SETPCAP), "cap_setpcap");
        assert_eq!(name(12), "cap_net_admin");
        assert_eq!(name(21), "cap_sys_admin");
        assert_eq!(name(CAP_BPF), "cap_bpf");
        assert_eq!(name(40), "cap_checkpoint_restore");
        assert_eq!(name(50), "cap_50");
        assert_eq!(names(kept_mask()), ["cap_dac_read_search", "cap_bpf"]);
        assert_eq!(names(0), Vec::<String>::new());
    }
}
