//! fail2xdp's XDP program: drops packets from banned addresses and prefixes.
//!
//! Map statics are named exactly as `fail2xdp_common::map::*`: the symbol
//! name becomes the kernel map name and the pin file name.
#![no_std]
#![no_main]
// For the atomic add on BanEntry::drops (see verdict::applies).
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics: the BPF atomic add")]

mod events;
mod parse;
mod verdict;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use fail2xdp_common::{
    AllowEntryV4, AllowEntryV6, BanEntry, BanEntryP6, BanEntryV6, BanMeta, Bucket, Config,
    JailName, PortList, Stats, capacity,
};

use crate::verdict::{Reason, Verdict};

/// JAILS is created without preallocation: sized for the worst case but
/// usually holding a few names, so memory follows content.
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Every table is an array: an array lookup is inlined by the verifier (a
/// hash-map lookup is a helper call that costs 25-40 ns). Mmapable so that
/// userspace reads and writes slots and entries as memory (a million bans
/// load in a fraction of a second) and each 64-byte bucket starts a cache
/// line. Userspace sets the real sizes when it creates the maps; see
/// `fail2xdp_common` for the layout.
const MMAPABLE: usize = BPF_F_MMAPABLE as usize;
#[btf_map]
static BANS_V4: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V4_ENT: Array<BanEntry, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V4_META: Array<BanMeta, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V6: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V6_ENT: Array<BanEntryV6, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V6_META: Array<BanMeta, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V4: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V4_ENT: Array<BanEntry, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V4_META: Array<BanMeta, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V6: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V6_ENT: Array<BanEntryP6, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V6_META: Array<BanMeta, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V4: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V4_ENT: Array<AllowEntryV4, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V6: Array<Bucket, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V6_ENT: Array<AllowEntryV6, 2, MMAPABLE> = Array::new();
#[btf_map]
static PORTS: Array<PortList, { capacity::PORTS as usize }, MMAPABLE> = Array::new();
#[btf_map]
static CONFIG: Array<Config, 1> = Array::new();
#[btf_map]
static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();
/// Only read by userspace (`list`, `bpftool`); lives in the object so it is
/// created and pinned with the others.
#[btf_map]
static JAILS: HashMap<u32, JailName, { capacity::JAILS as usize }, NO_PREALLOC> = HashMap::new();

#[xdp]
pub fn fail2xdp(ctx: XdpContext) -> u32 {
    let v = verdict::decide(&ctx);
    account(&ctx, v)
}

/// The single exit: one per-CPU STATS lookup for every packet.
#[inline(always)]
fn account(ctx: &XdpContext, v: Verdict) -> u32 {
    if let Some(s) = STATS.get_ptr_mut(0) {
        let bytes = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: the per-CPU slot belongs to this CPU for the whole run, and
        // Stats is repr(C) made only of u64s, so it is a u64 array.
        unsafe {
            if v.action == xdp_action::XDP_DROP {
                (*s).drop_pkts += 1;
                (*s).drop_bytes += bytes;
            } else {
                (*s).pass_pkts += 1;
                (*s).pass_bytes += bytes;
            }
            if v.reason != Reason::None {
                *s.cast::<u64>().add(v.reason as usize) += 1;
            }
        }
    }
    v.action
}

/// Benchmark baseline in the same object: the cost of XDP itself.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
