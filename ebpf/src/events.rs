//! Rare events reported to the agent's log through aya-log (target
//! `fail2xdp::xdp`): the first drop of each ban, and parse anomalies
//! rate-limited per CPU. Every function here is out of line, so the
//! per-packet path holds only the branch that already decides the case and
//! a call on its rare side; nothing is written to the ring buffer unless an
//! event happens.

use aya_ebpf::{btf_maps::PerCpuArray, helpers::bpf_ktime_get_ns, macros::btf_map};
use aya_log_ebpf::info;

/// At most this many anomaly lines per CPU in any one-second window; the
/// rest are counted and the count is reported with the next line.
pub const ANOMALIES_PER_SEC: u64 = 4;
const WINDOW_NS: u64 = 1_000_000_000;

/// What the parser could not follow. The frame is passed (and counted in
/// `pass_unparsed`, or judged without a port); this only says why.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Anomaly {
    /// The Ethernet header or a VLAN tag is cut short.
    TruncatedL2,
    /// More VLAN tags than the two the parser follows.
    VlanDepth,
    /// The IPv4 or IPv6 header is cut short.
    TruncatedIp,
    /// An IP header with the wrong version or an IPv4 IHL below 5.
    BadIpHeader,
    /// More IPv6 extension headers than the parser follows.
    LongExtChain,
    /// The TCP or UDP header is cut short.
    TruncatedL4,
}

impl Anomaly {
    #[inline(always)]
    const fn what(self) -> &'static str {
        match self {
            Anomaly::TruncatedL2 => "truncated Ethernet/VLAN header",
            Anomaly::VlanDepth => "more than two VLAN tags",
            Anomaly::TruncatedIp => "truncated IP header",
            Anomaly::BadIpHeader => "malformed IP header",
            Anomaly::LongExtChain => "IPv6 extension-header chain longer than followed",
            Anomaly::TruncatedL4 => "truncated TCP/UDP header",
        }
    }
}

/// One CPU's anomaly budget: the window's start, lines logged in it, and
/// events not logged since the last line.
#[repr(C)]
pub struct RateLimit {
    start: u64,
    count: u64,
    suppressed: u64,
}

/// Not pinned: a fresh budget with every load is fine.
#[btf_map]
static ANOMALY_RATE: PerCpuArray<RateLimit, 1> = PerCpuArray::new();

const TARGET: &str = fail2xdp_common::XDP_LOG_TARGET;

/// Logs a parse anomaly of a `len`-byte frame, within the per-CPU budget.
#[inline(never)]
pub fn anomaly(kind: Anomaly, len: u32) {
    let Some(r) = ANOMALY_RATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the per-CPU slot belongs to this CPU for the whole run.
    let r = unsafe { &mut *r };
    if now.wrapping_sub(r.start) >= WINDOW_NS {
        r.start = now;
        r.count = 0;
    }
    if r.count >= ANOMALIES_PER_SEC {
        r.suppressed += 1;
        return;
    }
    r.count += 1;
    let suppressed = r.suppressed;
    r.suppressed = 0;
    info!(
        &(),
        target: TARGET,
        "parse anomaly: {} in a {}-byte frame, passed ({} more not logged since the last, at most {}/s per CPU)",
        kind.what(),
        len,
        suppressed,
        ANOMALIES_PER_SEC
    );
}

/// The first drop of an IPv4 ban: `src` is the source as its packet-order
/// bytes in a native word; `len` < 32 names a prefix ban of `pfx`/`len`.
#[inline(never)]
pub fn first_drop_v4(src: u32, pfx: u32, len: u32) {
    let src = src.to_ne_bytes();
    if len >= 32 {
        info!(&(), target: TARGET, "ban {:i} is dropping traffic", src);
    } else {
        info!(
            &(),
            target: TARGET,
            "ban {:i}/{} is dropping traffic (first from {:i})",
            pfx.to_ne_bytes(),
            len,
            src
        );
    }
}

#[inline(always)]
fn v6_bytes(hi: u64, lo: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&hi.to_ne_bytes());
    a[8..].copy_from_slice(&lo.to_ne_bytes());
    a
}

/// The first drop of an IPv6 ban, as [`first_drop_v4`] with the addresses
/// as two native words of their packet-order bytes.
#[inline(never)]
pub fn first_drop_v6(hi: u64, lo: u64, pfx_hi: u64, pfx_lo: u64, len: u32) {
    let src = v6_bytes(hi, lo);
    if len >= 128 {
        info!(&(), target: TARGET, "ban {:i} is dropping traffic", src);
    } else {
        info!(
            &(),
            target: TARGET,
            "ban {:i}/{} is dropping traffic (first from {:i})",
            v6_bytes(pfx_hi, pfx_lo),
            len,
            src
        );
    }
}
