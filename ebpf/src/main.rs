//! fail2xdp's XDP program: drops packets from banned addresses and prefixes.
//!
//! Map statics are named exactly as `fail2xdp_common::map::*`: the symbol
//! name becomes the kernel map name and the pin file name.
#![no_std]
#![no_main]
// For the atomic add on BanValue::drops (see verdict::applies).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod parse;
mod verdict;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use fail2xdp_common::{
    AllowValue, BanValue, Config, JailName, PfxKeyV4, PfxKeyV6, SlotA4, SlotA6, SlotP4, SlotP6,
    SlotV4, SlotV6, Stats, capacity,
};

use crate::verdict::{Reason, Verdict};

/// Every hash map is created without preallocation: the tables are sized for
/// the worst case but usually hold few entries, so memory follows content.
/// It also means a deleted element is freed only after an RCU grace period,
/// so the `drops` add through a value pointer never lands in a recycled
/// element of another address (preallocated maps reuse slots at once).
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// The ban tables are open-addressing tables in arrays (see
/// `fail2xdp_common::TableGeom`): an array lookup is inlined by the verifier,
/// a hash-map lookup is a helper call that costs 25-40 ns. Userspace sets the
/// real size (a power of two) when it creates the maps. Mmapable so that
/// userspace scans (list, purge, counting) read memory instead of copying
/// a million slots through bpf(2); writes still go through the syscall.
const MMAPABLE: usize = BPF_F_MMAPABLE as usize;
#[btf_map]
static BANS_V4: Array<SlotV4, 2, MMAPABLE> = Array::new();
#[btf_map]
static BANS_V6: Array<SlotV6, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V4: Array<SlotP4, 2, MMAPABLE> = Array::new();
#[btf_map]
static PFX_V6: Array<SlotP6, 2, MMAPABLE> = Array::new();
/// Keys that found no slot near their home; looked up only while
/// Config says the map is non-empty.
#[btf_map]
static BANS_V4_OVF: HashMap<[u8; 4], BanValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
#[btf_map]
static BANS_V6_OVF: HashMap<[u8; 16], BanValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
#[btf_map]
static PFX_V4_OVF: HashMap<PfxKeyV4, BanValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
#[btf_map]
static PFX_V6_OVF: HashMap<PfxKeyV6, BanValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
#[btf_map]
static ALLOW_V4: Array<SlotA4, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V6: Array<SlotA6, 2, MMAPABLE> = Array::new();
#[btf_map]
static ALLOW_V4_OVF: HashMap<PfxKeyV4, AllowValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
#[btf_map]
static ALLOW_V6_OVF: HashMap<PfxKeyV6, AllowValue, { capacity::OVERFLOW as usize }, NO_PREALLOC> =
    HashMap::new();
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
