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

/// Live frames: the program runs `repeat` times on fresh copies of `data`
/// (in batches of `batch`, 0 for the kernel's 64), and what it redirects is
/// transmitted for real, as a driver transmits (no skb). The frames seem
/// to arrive on the loopback device of the calling thread's network
/// namespace, where the redirect target is looked up.
pub fn test_run_live(prog: BorrowedFd<'_>, data: &[u8], repeat: u32, batch: u32) -> Result<()> {
    let mut a = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
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
    prog_ifindex: u32,
    expected_attach_type: u32,
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
        expected_attach_type: BPF_XDP,
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

const BPF_LINK_CREATE: i64 = 28;
/// `BPF_XDP`: the attach type of XDP links, and the one aya loads XDP
/// programs with; tail calls need it alike on both sides (the kernel
/// compares it for program arrays), so [`load_xdp`] loads with it too.
const BPF_XDP: u32 = 37;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches XDP program `prog` to `ifindex` (of the calling thread's
/// network namespace) through a bpf_link: attached while the fd lives.
pub fn xdp_link(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> Result<OwnedFd> {
    let mut a = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    let fd = bpf(BPF_LINK_CREATE, &mut a)
        .with_context(|| format!("attaching XDP to ifindex {ifindex}"))?;
    Ok(owned(fd))
}

/// BPF_F_MMAPABLE: an array userspace can fill as memory.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// An array map of `n` elements of `value` bytes, mapped into memory.
pub struct ArrayMem {
    pub fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    stride: usize,
    n: u32,
}

impl ArrayMem {
    pub fn new(value: u32, n: u32) -> Result<Self> {
        let fd = map_create(BPF_MAP_TYPE_ARRAY, 4, value, n.max(1), BPF_F_MMAPABLE)?;
        let stride = (value as usize).next_multiple_of(8);
        let len = (stride * n.max(1) as usize).next_multiple_of(4096);
        // SAFETY: a fresh shared mapping of the map's memory; the kernel
        // checks that the map is mmapable and `len` fits it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of an array map");
        }
        Ok(ArrayMem {
            fd,
            ptr: ptr.cast(),
            len,
            stride,
            n,
        })
    }

    /// Writes `bytes` (at most the value size) into element `i`.
    pub fn set(&mut self, i: u32, bytes: &[u8]) {
        assert!(
            i < self.n && bytes.len() <= self.stride,
            "element {i} out of range"
        );
        // SAFETY: element i lies within the mapping (checked above), and
        // nothing reads it while the sender program is not running.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(i as usize * self.stride),
                bytes.len(),
            )
        };
    }
}

impl Drop for ArrayMem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;

/// Like [`load_sender`], but instead of redirecting the frame it tail-calls
/// program 0 of `progs` (a prog array) with it: one program measured by
/// BPF_PROG_TEST_RUN on a source that changes with every run.
pub fn load_cycler(
    cursor: BorrowedFd<'_>,
    list: BorrowedFd<'_>,
    n: u32,
    progs: BorrowedFd<'_>,
    v6: bool,
) -> Result<OwnedFd> {
    let mut p = sender_head(cursor, list, n, v6);
    let t = ld_map(2, progs);
    p.extend([
        insn(0xbf, 1, 6, 0, 0), // 30: r1 = ctx
        t[0],
        t[1],                                    // 31-32: r2 = progs
        insn(0xb7, 3, 0, 0, 0),                  // 33: r3 = 0
        insn(0x85, 0, 0, 0, 12),                 // 34: call bpf_tail_call
        insn(0xb7, 0, 0, 0, XDP_ABORTED as i32), // 35: the tail call failed
        insn(0x95, 0, 0, 0, 0),                  // 36: exit
    ]);
    // The head's "out" jumps land at 34 in the sender; here at 37.
    fix_out(&mut p, 37);
    p.extend([
        insn(0xb7, 0, 0, 0, XDP_DROP as i32), // 37: out
        insn(0x95, 0, 0, 0, 0),
    ]);
    load_xdp(&p, "f2x_cycler")
}

/// Rewrites the three "goto out" jumps of [`sender_head`] to land at `out`.
fn fix_out(p: &mut [u64], out: i64) {
    for at in [7usize, 20, 25] {
        let mut b = p[at].to_le_bytes();
        let off = (out - (at as i64 + 1)) as i16;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        p[at] = u64::from_le_bytes(b);
    }
}

/// Instructions 0..30 shared by the sender and the cycler: take the next
/// entry of `list` and write it into the frame as its source.
fn sender_head(cursor: BorrowedFd<'_>, list: BorrowedFd<'_>, n: u32, v6: bool) -> Vec<u64> {
    let c = ld_map(1, cursor);
    let l = ld_map(1, list);
    let mut p = vec![
        insn(0xbf, 6, 1, 0, 0),   // 0: r6 = ctx
        insn(0x62, 10, 0, -4, 0), // 1: *(u32 *)(r10 - 4) = 0
        c[0],
        c[1],                          // 2-3: r1 = cursor
        insn(0xbf, 2, 10, 0, 0),       // 4: r2 = r10
        insn(0x07, 2, 0, 0, -4),       // 5: r2 += -4
        insn(0x85, 0, 0, 0, 1),        // 6: call bpf_map_lookup_elem
        insn(0x15, 0, 0, 26, 0),       // 7: if r0 == 0 goto out
        insn(0x79, 7, 0, 0, 0),        // 8: r7 = *(u64 *)(r0 + 0)
        insn(0xbf, 8, 7, 0, 0),        // 9: r8 = r7
        insn(0x07, 8, 0, 0, 1),        // 10: r8 += 1
        insn(0xa5, 8, 0, 1, n as i32), // 11: if r8 < n goto +1
        insn(0xb7, 8, 0, 0, 0),        // 12: r8 = 0
        insn(0x7b, 0, 8, 0, 0),        // 13: *(u64 *)(r0 + 0) = r8
        insn(0x63, 10, 7, -8, 0),      // 14: *(u32 *)(r10 - 8) = w7
        l[0],
        l[1],                    // 15-16: r1 = list
        insn(0xbf, 2, 10, 0, 0), // 17: r2 = r10
        insn(0x07, 2, 0, 0, -8), // 18: r2 += -8
        insn(0x85, 0, 0, 0, 1),  // 19: call bpf_map_lookup_elem
        insn(0x15, 0, 0, 13, 0), // 20: if r0 == 0 goto out
        insn(0x61, 2, 6, 0, 0),  // 21: r2 = ctx->data
        insn(0x61, 3, 6, 4, 0),  // 22: r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),  // 23: r4 = r2
        insn(0x07, 4, 0, 0, 54), // 24: r4 += 54
        insn(0x2d, 4, 3, 8, 0),  // 25: if r4 > r3 goto out
    ];
    if v6 {
        p.extend([
            insn(0x79, 5, 0, 0, 0),  // 26: r5 = *(u64 *)(r0 + 0)
            insn(0x7b, 2, 5, 22, 0), // 27: *(u64 *)(r2 + 22) = r5
            insn(0x79, 5, 0, 8, 0),  // 28: r5 = *(u64 *)(r0 + 8)
            insn(0x7b, 2, 5, 30, 0), // 29: *(u64 *)(r2 + 30) = r5
        ]);
    } else {
        p.extend([
            insn(0x61, 5, 0, 0, 0),  // 26: r5 = *(u32 *)(r0 + 0)
            insn(0x63, 2, 5, 26, 0), // 27: *(u32 *)(r2 + 26) = w5
            insn(0x69, 5, 0, 4, 0),  // 28: r5 = *(u16 *)(r0 + 4)
            insn(0x6b, 2, 5, 24, 0), // 29: *(u16 *)(r2 + 24) = w5
        ]);
    }
    p
}

/// The live-frames sender: on each run takes the next entry of `list`
/// (`n` entries, in turn, the position kept in `cursor`, a one-element u64
/// array), writes it into the frame as the source address (IPv4: address
/// and the header checksum that goes with it, 8-byte entries; IPv6: the
/// address, 16-byte entries) and redirects the frame out of `ifindex`.
pub fn load_sender(
    cursor: BorrowedFd<'_>,
    list: BorrowedFd<'_>,
    n: u32,
    ifindex: u32,
    v6: bool,
) -> Result<OwnedFd> {
    let mut p = sender_head(cursor, list, n, v6);
    p.extend([
        insn(0xb7, 1, 0, 0, ifindex as i32),  // 30: r1 = ifindex
        insn(0xb7, 2, 0, 0, 0),               // 31: r2 = 0
        insn(0x85, 0, 0, 0, 23),              // 32: call bpf_redirect
        insn(0x95, 0, 0, 0, 0),               // 33: exit
        insn(0xb7, 0, 0, 0, XDP_DROP as i32), // 34: out: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),               // 35: exit
    ]);
    load_xdp(&p, "f2x_sender")
}
