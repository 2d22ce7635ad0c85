//! The verdict: allowlist, then exact ban, then prefix ban, then pass.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::offset_of,
    ptr::addr_of_mut,
};

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::{bpf_ktime_get_boot_ns, bpf_loop},
    programs::XdpContext,
};
use fail2xdp_common::{
    BanValue, Config, EXPIRES_NEVER, LEN_SLOTS_V4, LEN_SLOTS_V6, LEN_UNUSED, LenSlotV4, LenSlotV6,
    MAX_BAN_PORTS, MAX_PROBE, PfxKeyV4, PfxKeyV6, Stats, TBL_ALLOW_V4, TBL_ALLOW_V6, TBL_BANS_V4,
    TBL_BANS_V6, TBL_PFX_V4, TBL_PFX_V6, TableGeom, addr_words, fold_p4, fold_p6, fold_v4, fold_v6, home,
};

use crate::{
    ALLOW_V4, ALLOW_V4_OVF, ALLOW_V6, ALLOW_V6_OVF, BANS_V4, BANS_V4_OVF, BANS_V6, BANS_V6_OVF,
    CONFIG, PFX_V4, PFX_V4_OVF, PFX_V6, PFX_V6_OVF,
    parse::{self, NO_PORT, Packet, Skip, Src},
};

/// Index (in u64 words) of a `Stats` field, so the exit bumps the reason
/// counter with one indexed add instead of a branch per reason.
const fn word(off: usize) -> usize {
    off / 8
}

/// Reason counter to bump besides pass/drop totals; `None` for a plain pass.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    None = 0,
    DropExactV4 = word(offset_of!(Stats, drop_exact_v4)),
    DropExactV6 = word(offset_of!(Stats, drop_exact_v6)),
    DropPrefixV4 = word(offset_of!(Stats, drop_prefix_v4)),
    DropPrefixV6 = word(offset_of!(Stats, drop_prefix_v6)),
    PassAllowlisted = word(offset_of!(Stats, pass_allowlisted)),
    PassUnparsed = word(offset_of!(Stats, pass_unparsed)),
    PassExpired = word(offset_of!(Stats, pass_expired)),
    PassOtherPort = word(offset_of!(Stats, pass_other_port)),
}

// `None` shares index 0 with pass_pkts; the exit skips it explicitly.
const _: () = assert!(offset_of!(Stats, pass_pkts) == 0);

#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
}

impl Verdict {
    const fn pass(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    const fn drop(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_DROP,
            reason,
        }
    }
}

#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Verdict {
    let pkt = match parse::parse(ctx) {
        Ok(p) => p,
        Err(Skip::NotIp) => return Verdict::pass(Reason::None),
        Err(Skip::Unparsed) => return Verdict::pass(Reason::PassUnparsed),
    };
    // An array lookup the verifier inlines; without it the tables are
    // assumed empty, which is what a freshly created CONFIG says too.
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::pass(Reason::None);
    };
    match pkt.src {
        Src::V4(src) => decide_v4(cfg, &pkt, src),
        Src::V6(src) => decide_v6(cfg, &pkt, src),
    }
}

/// State shared with the slot-probing callbacks. The slot tables have up to
/// 33 and 129 entries; `bpf_loop` lets the verifier check one iteration
/// instead of walking every slot on every path (a plain bounded loop blows
/// its 1M instruction budget or takes seconds to verify), and the kernel
/// inlines the call. Slot 0, the only one in the common single-length case,
/// is probed inline to save the per-iteration callback cost (~10 ns); the
/// callbacks handle slots 1..n.
#[repr(C)]
struct Probe {
    /// The source address as native words of its packet-order bytes: IPv4
    /// in the low 32 bits of `hi`, IPv6 as the two halves.
    hi: u64,
    lo: u64,
    port: u32,
    /// Set by a callback that found a match that decides the packet.
    hit: u32,
    miss: Reason,
}

/// `bpf_loop` callback results.
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// Runs `step` `n` times (at most `max`); callback index `i` probes slot `i + 1`.
#[inline(always)]
fn probe(n: u32, max: usize, step: unsafe extern "C" fn(u64, *mut c_void) -> i64, p: &mut Probe) {
    let n = if n as usize > max { max as u32 } else { n };
    // SAFETY: `step` has the callback signature bpf_loop expects and `p`
    // outlives the call; flags must be 0.
    unsafe {
        bpf_loop(n, step as *mut c_void, (p as *mut Probe).cast(), 0);
    }
}

#[inline(always)]
fn decide_v4(cfg: &Config, pkt: &Packet, src: *const [u8; 4]) -> Verdict {
    // SAFETY: parse checked that the 4 address bytes lie inside the packet.
    let src = unsafe { &*src };
    let mut p = Probe {
        hi: u32::from_ne_bytes(*src) as u64,
        lo: 0,
        port: pkt.port,
        hit: 0,
        miss: Reason::None,
    };
    if cfg.allow_v4_n > 0 {
        if let Some(key) = key_v4(&cfg.allow_v4, 0, p.hi) {
            if find_a4(&cfg.tables[TBL_ALLOW_V4], &key) {
                return Verdict::pass(Reason::PassAllowlisted);
            }
        }
        if cfg.allow_v4_n > 1 {
            probe(cfg.allow_v4_n - 1, LEN_SLOTS_V4 - 1, allow_v4_step, &mut p);
            if p.hit != 0 {
                return Verdict::pass(Reason::PassAllowlisted);
            }
        }
    }
    if let Some(v) = find_v4(&cfg.tables[TBL_BANS_V4], p.hi as u32, src) {
        if applies(v, p.port, &mut p.miss) {
            return Verdict::drop(Reason::DropExactV4);
        }
    }
    if cfg.pfx_v4_n > 0 {
        if let Some(key) = key_v4(&cfg.pfx_v4, 0, p.hi) {
            if let Some(v) = find_p4(&cfg.tables[TBL_PFX_V4], &key) {
                if applies(v, p.port, &mut p.miss) {
                    return Verdict::drop(Reason::DropPrefixV4);
                }
            }
        }
        if cfg.pfx_v4_n > 1 {
            probe(cfg.pfx_v4_n - 1, LEN_SLOTS_V4 - 1, pfx_v4_step, &mut p);
            if p.hit != 0 {
                return Verdict::drop(Reason::DropPrefixV4);
            }
        }
    }
    Verdict::pass(p.miss)
}

#[inline(always)]
fn decide_v6(cfg: &Config, pkt: &Packet, src: *const [u8; 16]) -> Verdict {
    // SAFETY: parse checked that the 16 address bytes lie inside the packet.
    let src = unsafe { &*src };
    let (hi, lo) = addr_words(src);
    let mut p = Probe {
        hi,
        lo,
        port: pkt.port,
        hit: 0,
        miss: Reason::None,
    };
    if cfg.allow_v6_n > 0 {
        if let Some(key) = key_v6(&cfg.allow_v6, 0, p.hi, p.lo) {
            if find_a6(&cfg.tables[TBL_ALLOW_V6], &key) {
                return Verdict::pass(Reason::PassAllowlisted);
            }
        }
        if cfg.allow_v6_n > 1 {
            probe(cfg.allow_v6_n - 1, LEN_SLOTS_V6 - 1, allow_v6_step, &mut p);
            if p.hit != 0 {
                return Verdict::pass(Reason::PassAllowlisted);
            }
        }
    }
    if let Some(v) = find_v6(&cfg.tables[TBL_BANS_V6], p.hi, p.lo, src) {
        if applies(v, p.port, &mut p.miss) {
            return Verdict::drop(Reason::DropExactV6);
        }
    }
    if cfg.pfx_v6_n > 0 {
        if let Some(key) = key_v6(&cfg.pfx_v6, 0, p.hi, p.lo) {
            if let Some(v) = find_p6(&cfg.tables[TBL_PFX_V6], &key) {
                if applies(v, p.port, &mut p.miss) {
                    return Verdict::drop(Reason::DropPrefixV6);
                }
            }
        }
        if cfg.pfx_v6_n > 1 {
            probe(cfg.pfx_v6_n - 1, LEN_SLOTS_V6 - 1, pfx_v6_step, &mut p);
            if p.hit != 0 {
                return Verdict::drop(Reason::DropPrefixV6);
            }
        }
    }
    Verdict::pass(p.miss)
}

/// The prefix key of slot `i` of an IPv4 table, or `None` for a free or
/// out-of-range slot.
#[inline(always)]
fn key_v4(slots: &[LenSlotV4; LEN_SLOTS_V4], i: u64, addr: u64) -> Option<PfxKeyV4> {
    let slot = slots.get(i as usize)?;
    if slot.len == LEN_UNUSED {
        return None;
    }
    Some(PfxKeyV4 {
        len: slot.len,
        addr: (addr as u32 & u32::from_ne_bytes(slot.mask)).to_ne_bytes(),
    })
}

#[inline(always)]
fn key_v6(slots: &[LenSlotV6; LEN_SLOTS_V6], i: u64, hi: u64, lo: u64) -> Option<PfxKeyV6> {
    let slot = slots.get(i as usize)?;
    if slot.len == LEN_UNUSED {
        return None;
    }
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&(hi & slot.mask[0]).to_ne_bytes());
    addr[8..].copy_from_slice(&(lo & slot.mask[1]).to_ne_bytes());
    Some(PfxKeyV6 {
        len: slot.len,
        addr,
    })
}

// The callbacks look CONFIG up again rather than take a pointer through
// `Probe`: an array lookup is inlined by the verifier, and a map pointer
// stored in the shared stack struct is harder for it to follow.

unsafe extern "C" fn allow_v4_step(i: u64, p: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the &mut Probe given to `probe`.
    let p = unsafe { &mut *p.cast::<Probe>() };
    let Some(cfg) = CONFIG.get(0) else {
        return STOP;
    };
    let Some(key) = key_v4(&cfg.allow_v4, i + 1, p.hi) else {
        return CONTINUE;
    };
    if find_a4(&cfg.tables[TBL_ALLOW_V4], &key) {
        p.hit = 1;
        return STOP;
    }
    CONTINUE
}

unsafe extern "C" fn pfx_v4_step(i: u64, p: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the &mut Probe given to `probe`.
    let p = unsafe { &mut *p.cast::<Probe>() };
    let Some(cfg) = CONFIG.get(0) else {
        return STOP;
    };
    let Some(key) = key_v4(&cfg.pfx_v4, i + 1, p.hi) else {
        return CONTINUE;
    };
    if let Some(v) = find_p4(&cfg.tables[TBL_PFX_V4], &key) {
        if applies(v, p.port, &mut p.miss) {
            p.hit = 1;
            return STOP;
        }
    }
    CONTINUE
}

unsafe extern "C" fn allow_v6_step(i: u64, p: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the &mut Probe given to `probe`.
    let p = unsafe { &mut *p.cast::<Probe>() };
    let Some(cfg) = CONFIG.get(0) else {
        return STOP;
    };
    let Some(key) = key_v6(&cfg.allow_v6, i + 1, p.hi, p.lo) else {
        return CONTINUE;
    };
    if find_a6(&cfg.tables[TBL_ALLOW_V6], &key) {
        p.hit = 1;
        return STOP;
    }
    CONTINUE
}

unsafe extern "C" fn pfx_v6_step(i: u64, p: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the &mut Probe given to `probe`.
    let p = unsafe { &mut *p.cast::<Probe>() };
    let Some(cfg) = CONFIG.get(0) else {
        return STOP;
    };
    let Some(key) = key_v6(&cfg.pfx_v6, i + 1, p.hi, p.lo) else {
        return CONTINUE;
    };
    if let Some(v) = find_p6(&cfg.tables[TBL_PFX_V6], &key) {
        if applies(v, p.port, &mut p.miss) {
            p.hit = 1;
            return STOP;
        }
    }
    CONTINUE
}

// Open-addressing probes: at most MAX_PROBE array slots from the key's
// home, stopping at the first empty slot or at the first occupant nearer
// its own home than the key would be (userspace keeps Robin Hood order, so
// the key cannot lie beyond it); then the overflow map, only while it holds
// anything. Userspace writes one slot per map update, so a probe
// may read one slot half-written; that can affect the keys being moved or
// written at that moment, and a key whose probe crosses that slot may stop
// early on the torn occupant (see enforcer/table.rs): fail-open, and the
// next packet sees the finished slot. Slots are read through raw pointers
// because `drops` is added to concurrently by other CPUs.

/// Whether the occupant (key folded to `fold`) of slot `idx`, read `i`
/// slots from the probed key's home, sits nearer its own home: then, by the
/// Robin Hood order, the probed key is not in the table.
#[inline(always)]
fn closer(g: &TableGeom, idx: u32, i: u32, fold: u64) -> bool {
    idx.wrapping_sub(home(fold, g.seed, g.bits)) & g.mask < i
}

#[inline(always)]
fn find_v4(g: &TableGeom, addr: u32, src: &[u8; 4]) -> Option<*mut BanValue> {
    if g.count != 0 {
        let h = home(fold_v4(addr), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let s = BANS_V4.get_ptr_mut(idx)?;
            // SAFETY: an array element, valid for the whole run.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let k = u32::from_ne_bytes((*s).key);
                if k == addr {
                    return Some(addr_of_mut!((*s).val));
                }
                if closer(g, idx, i, fold_v4(k)) {
                    break;
                }
            }
        }
    }
    if g.ovf != 0 {
        return BANS_V4_OVF.get_ptr_mut(src);
    }
    None
}

#[inline(always)]
fn find_v6(g: &TableGeom, hi: u64, lo: u64, src: &[u8; 16]) -> Option<*mut BanValue> {
    if g.count != 0 {
        let h = home(fold_v6(hi, lo), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let s = BANS_V6.get_ptr_mut(idx)?;
            // SAFETY: an array element, valid for the whole run; the key is
            // at offset 0 of an 8-aligned value, so it reads as two words.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let k = s.cast::<u64>();
                let (k0, k1) = (*k, *k.add(1));
                if k0 == hi && k1 == lo {
                    return Some(addr_of_mut!((*s).val));
                }
                if closer(g, idx, i, fold_v6(k0, k1)) {
                    break;
                }
            }
        }
    }
    if g.ovf != 0 {
        return BANS_V6_OVF.get_ptr_mut(src);
    }
    None
}

#[inline(always)]
fn find_p4(g: &TableGeom, key: &PfxKeyV4) -> Option<*mut BanValue> {
    let addr = u32::from_ne_bytes(key.addr);
    if g.count != 0 {
        let h = home(fold_p4(key.len, addr), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let s = PFX_V4.get_ptr_mut(idx)?;
            // SAFETY: an array element, valid for the whole run.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let (len, a) = ((*s).key.len, u32::from_ne_bytes((*s).key.addr));
                if len == key.len && a == addr {
                    return Some(addr_of_mut!((*s).val));
                }
                if closer(g, idx, i, fold_p4(len, a)) {
                    break;
                }
            }
        }
    }
    if g.ovf != 0 {
        return PFX_V4_OVF.get_ptr_mut(key);
    }
    None
}

#[inline(always)]
fn find_p6(g: &TableGeom, key: &PfxKeyV6) -> Option<*mut BanValue> {
    let (hi, lo) = addr_words(&key.addr);
    if g.count != 0 {
        let h = home(fold_p6(key.len, hi, lo), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let s = PFX_V6.get_ptr_mut(idx)?;
            // SAFETY: an array element, valid for the whole run. The address
            // sits at offset 4, so it is compared as 4-aligned u32 words.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let k = addr_of_mut!((*s).key.addr).cast::<u32>();
                let len = (*s).key.len;
                let khi = *k as u64 | (*k.add(1) as u64) << 32;
                let klo = *k.add(2) as u64 | (*k.add(3) as u64) << 32;
                if len == key.len && khi == hi && klo == lo {
                    return Some(addr_of_mut!((*s).val));
                }
                if closer(g, idx, i, fold_p6(len, khi, klo)) {
                    break;
                }
            }
        }
    }
    if g.ovf != 0 {
        return PFX_V6_OVF.get_ptr_mut(key);
    }
    None
}

/// Whether the allowlist holds exactly `key`.
#[inline(always)]
fn find_a4(g: &TableGeom, key: &PfxKeyV4) -> bool {
    let addr = u32::from_ne_bytes(key.addr);
    if g.count != 0 {
        let h = home(fold_p4(key.len, addr), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let Some(s) = ALLOW_V4.get_ptr(idx) else {
                break;
            };
            // SAFETY: an array element, valid for the whole run.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let (len, a) = ((*s).key.len, u32::from_ne_bytes((*s).key.addr));
                if len == key.len && a == addr {
                    return true;
                }
                if closer(g, idx, i, fold_p4(len, a)) {
                    break;
                }
            }
        }
    }
    g.ovf != 0 && ALLOW_V4_OVF.get_ptr(key).is_some()
}

#[inline(always)]
fn find_a6(g: &TableGeom, key: &PfxKeyV6) -> bool {
    let (hi, lo) = addr_words(&key.addr);
    if g.count != 0 {
        let h = home(fold_p6(key.len, hi, lo), g.seed, g.bits);
        for i in 0..MAX_PROBE {
            let idx = h.wrapping_add(i) & g.mask;
            let Some(s) = ALLOW_V6.get_ptr(idx) else {
                break;
            };
            // SAFETY: as in find_p6; the address is compared as u32 words.
            unsafe {
                if (*s).used == 0 {
                    break;
                }
                let k = core::ptr::addr_of!((*s).key.addr).cast::<u32>();
                let len = (*s).key.len;
                let khi = *k as u64 | (*k.add(1) as u64) << 32;
                let klo = *k.add(2) as u64 | (*k.add(3) as u64) << 32;
                if len == key.len && khi == hi && klo == lo {
                    return true;
                }
                if closer(g, idx, i, fold_p6(len, khi, klo)) {
                    break;
                }
            }
        }
    }
    g.ovf != 0 && ALLOW_V6_OVF.get_ptr(key).is_some()
}


/// Whether a found ban applies to this packet; if so counts the drop on the
/// ban. Otherwise records in `miss` why it did not, for the pass counters.
#[inline(always)]
fn applies(v: *mut BanValue, port: u32, miss: &mut Reason) -> bool {
    // SAFETY (all derefs of `v`): it came from a successful map lookup and
    // stays valid for the whole program run (array elements live as long
    // as the map; overflow hash elements are freed only after an RCU grace
    // period). Fields are read through the raw pointer
    // because `drops` is written concurrently by other CPUs.
    let expires = unsafe { (*v).expires_ns };
    // Permanent bans skip the clock read.
    // SAFETY: a plain helper call without arguments.
    if expires != EXPIRES_NEVER && unsafe { bpf_ktime_get_boot_ns() } >= expires {
        *miss = Reason::PassExpired;
        return false;
    }
    let n = unsafe { (*v).nports };
    if n != 0 {
        if port == NO_PORT {
            *miss = Reason::PassOtherPort;
            return false;
        }
        let mut hit = false;
        for i in 0..MAX_BAN_PORTS {
            if (i as u32) < n && unsafe { (*v).ports[i] } as u32 == port {
                hit = true;
            }
        }
        if !hit {
            *miss = Reason::PassOtherPort;
            return false;
        }
    }
    // The bpfel target has no compare-and-swap, so core's AtomicU64 offers
    // no fetch_add; the intrinsic lowers to the BPF atomic add instruction
    // (`lock *(u64 *)(r + off) += 1`) since the old value is unused.
    // SAFETY: `drops` is a naturally aligned u64 inside the map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(addr_of_mut!((*v).drops), 1) };
    true
}
