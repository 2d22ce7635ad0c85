//! Raw bpf(2) calls and small hand-assembled XDP programs for tests and
//! benchmarks: every program measured goes through the same calls, and
//! the helper programs (a trivial floor, a one-lookup probe, the
//! live-frames sender) need no compiler.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// BPF_PROG_TEST_RUN runs the program on frames the kernel then sends on
/// as a NIC driver would (XDP_TX, XDP_REDIRECT), without an skb.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TEST_RUN: i64 = 10;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_PROG_TYPE_XDP: u32 = 6;

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_F_NO_PREALLOC: u32 = 1;

fn bpf<T>(cmd: i64, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a bpf_attr prefix of the size passed, as the command
    // expects, and every pointer in it refers to live buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<u8>(),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new descriptor that we now own.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs the program `repeat` times on `data`; returns (verdict, ns per run).
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN")?;
    Ok((a.retval, a.duration))
}

/// `struct xdp_md` as a test run's context: live frames need an ingress
/// interface to come from.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Live frames: the program runs `repeat` times on fresh copies of `data`
/// (in batches of `batch`), and what it redirects is transmitted for real.
/// `ingress` is the interface the frames seem to arrive on (in the calling
/// thread's network namespace).
pub fn test_run_live(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    batch: u32,
    ingress: u32,
) -> Result<()> {
    let ctx = XdpMd {
        data_end: data.len() as u32,
        ingress_ifindex: ingress,
        ..Default::default()
    };
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: (&raw const ctx) as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN with live frames")?;
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut a = GetFdById {
        id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a)
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    Ok(owned(fd))
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

pub fn map_create(map_type: u32, key: u32, value: u32, max: u32, flags: u32) -> Result<OwnedFd> {
    let mut a = MapCreate {
        map_type,
        key_size: key,
        value_size: value,
        max_entries: max,
        map_flags: flags,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut a).context("BPF_MAP_CREATE")?;
    Ok(owned(fd))
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `map[key] = value`, both as raw bytes of the map's sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<()> {
    let mut a = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).context("BPF_MAP_UPDATE_ELEM")?;
    Ok(())
}

/// `map[key]` into `value` (the map's value size, times the CPU count for
/// per-CPU maps).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<()> {
    let mut a = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut a).context("BPF_MAP_LOOKUP_ELEM")?;
    Ok(())
}

/// Possible CPUs, for the size of per-CPU map values.
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1),
                    None => r.parse::<usize>().ok().map(|_| 1),
                })
                .sum::<Option<usize>>()
        })
        .unwrap_or(1)
}

/// Sum over CPUs of the u64 at index `key` of a per-CPU array of u64.
pub fn percpu_sum(map: BorrowedFd<'_>, key: u32) -> Result<u64> {
    let n = possible_cpus();
    let mut v = vec![0u8; 8 * n];
    map_lookup(map, &key.to_ne_bytes(), &mut v)?;
    Ok(v.chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .sum())
}

/// One BPF instruction.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

/// `dst = map` (ld_imm64 with a map fd): two instruction slots.
pub fn ld_map(dst: u8, map: BorrowedFd<'_>) -> [u64; 2] {
    [insn(0x18, dst, 1, 0, map.as_raw_fd()), 0]
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Loads hand-assembled XDP instructions; the verifier log comes with a refusal.
pub fn load_xdp(insns: &[u64], name: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 1 << 16];
    let mut a = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let n = name.len().min(15);
    a.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(e).with_context(|| {
                format!(
                    "BPF_PROG_LOAD of {name}: {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                )
            })
        }
    }
}

/// `r0 = verdict; exit`.
pub fn load_const(verdict: u32, name: &str) -> Result<OwnedFd> {
    load_xdp(
        &[insn(0xb7, 0, 0, 0, verdict as i32), insn(0x95, 0, 0, 0, 0)],
        name,
    )
}

/// Adds 1 to u64 slot 0 of per-CPU array `counter`, then returns
/// `verdict`: a floor that keeps its own count.
pub fn load_counting(counter: BorrowedFd<'_>, verdict: u32, name: &str) -> Result<OwnedFd> {
    let m = ld_map(1, counter);
    let insns = [
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
        m[0],
        m[1],                    // r1 = counter
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -4), // r2 += -4
        insn(0x85, 0, 0, 0, 1),  // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 3, 0),  // if r0 == 0 goto +3
        insn(0x79, 1, 0, 0, 0),  // r1 = *(u64 *)(r0 + 0)
        insn(0x07, 1, 0, 0, 1),  // r1 += 1
        insn(0x7b, 0, 1, 0, 0),  // *(u64 *)(r0 + 0) = r1
        insn(0xb7, 0, 0, 0, verdict as i32),
        insn(0x95, 0, 0, 0, 0),
    ];
    load_xdp(&insns, name)
}

/// One lookup of a constant 4-byte key in `map`, then XDP_PASS: what a
/// single hash probe costs here, the floor under any check.
pub fn load_lookup(map: BorrowedFd<'_>, key: u32) -> Result<OwnedFd> {
    let m = ld_map(1, map);
    let insns = [
        insn(0x62, 10, 0, -4, key as i32), // *(u32 *)(r10 - 4) = key
        m[0],
        m[1],
        insn(0xbf, 2, 10, 0, 0), // r2 = r10
        insn(0x07, 2, 0, 0, -4), // r2 += -4
        insn(0x85, 0, 0, 0, 1),  // call bpf_map_lookup_elem
        insn(0xb7, 0, 0, 0, 2),  // r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),  // exit
    ];
    load_xdp(&insns, "raw_lookup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_like_the_kernel_reads_them() {
        // mov64 r0, 2; exit
        assert_eq!(
            insn(0xb7, 0, 0, 0, 2).to_le_bytes(),
            [0xb7, 0, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(insn(0x95, 0, 0, 0, 0).to_le_bytes()[0], 0x95);
        // *(u32 *)(r10 - 4) = 7: dst r10 in the low nibble, offset -4.
        assert_eq!(
            insn(0x62, 10, 0, -4, 7).to_le_bytes(),
            [0x62, 0x0a, 0xfc, 0xff, 7, 0, 0, 0]
        );
        assert!(possible_cpus() >= 1);
    }
}
