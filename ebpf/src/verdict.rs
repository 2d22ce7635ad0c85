//! The verdict: allowlist, then exact ban, then prefix ban, then pass.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::offset_of,
    ptr::{addr_of, addr_of_mut, read_volatile},
};

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::Array,
    cty::c_void,
    helpers::{bpf_ktime_get_boot_ns, bpf_loop},
    programs::XdpContext,
};
use fail2xdp_common::{
    BUCKET_SLOTS, Bucket, Config, EXPIRY_MASK, EXPIRY_NEVER, LEN_SLOTS_V4, LEN_SLOTS_V6,
    LEN_UNUSED, LenSlotV4, LenSlotV6, MAX_BAN_PORTS, Place, Shape, Stats, TBL_ALLOW_V4,
    TBL_ALLOW_V6, TBL_BANS_V4, TBL_BANS_V6, TBL_PFX_V4, TBL_PFX_V6, TableGeom, addr_words, hash_a4,
    hash_p6, hash_tag, hash_v4, hash_v6, place, spill_count, tag_p4,
};

use crate::{
    ALLOW_V4, ALLOW_V4_ENT, ALLOW_V6, ALLOW_V6_ENT, BANS_V4, BANS_V4_ENT, BANS_V6, BANS_V6_ENT,
    CONFIG, MMAPABLE, PFX_V4, PFX_V4_ENT, PFX_V6, PFX_V6_ENT, PORTS, events,
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
        Err(Skip::Unparsed(why)) => {
            events::anomaly(why, parse::frame_len(ctx));
            return Verdict::pass(Reason::PassUnparsed);
        }
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
        if let Some(k) = key_v4(&cfg.allow_v4, 0, p.hi) {
            if find_a4(&cfg.tables[TBL_ALLOW_V4], &k) {
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
    let hi = p.hi;
    if let Some(e) = find_v4(&cfg.tables[TBL_BANS_V4], p.hi as u32) {
        if applies(e, p.port, &mut p.miss, || {
            events::first_drop_v4(hi as u32, hi as u32, 32)
        }) {
            return Verdict::drop(Reason::DropExactV4);
        }
    }
    if cfg.pfx_v4_n > 0 {
        if let Some(k) = key_v4(&cfg.pfx_v4, 0, p.hi) {
            if let Some(e) = find_p4(&cfg.tables[TBL_PFX_V4], &k) {
                if applies(e, p.port, &mut p.miss, || {
                    events::first_drop_v4(hi as u32, k.hi as u32, k.len)
                }) {
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
        if let Some(k) = key_v6(&cfg.allow_v6, 0, p.hi, p.lo) {
            if find_a6(&cfg.tables[TBL_ALLOW_V6], &k) {
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
    if let Some(e) = find_v6(&cfg.tables[TBL_BANS_V6], p.hi, p.lo) {
        if applies(e, p.port, &mut p.miss, || {
            events::first_drop_v6(hi, lo, hi, lo, 128)
        }) {
            return Verdict::drop(Reason::DropExactV6);
        }
    }
    if cfg.pfx_v6_n > 0 {
        if let Some(k) = key_v6(&cfg.pfx_v6, 0, p.hi, p.lo) {
            if let Some(e) = find_p6(&cfg.tables[TBL_PFX_V6], &k) {
                if applies(e, p.port, &mut p.miss, || {
                    events::first_drop_v6(hi, lo, k.hi, k.lo, k.len)
                }) {
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

/// One prefix length applied to the source: its length and the address
/// masked to it, as native words of the packet-order bytes.
#[derive(Clone, Copy)]
struct Masked {
    len: u32,
    hi: u64,
    lo: u64,
    /// IPv4 only: the bit after the prefix (see `fail2xdp_common::tag_p4`).
    mark: u32,
}

/// The source under slot `i` of an IPv4 length table, or `None` for a free
/// or out-of-range slot.
#[inline(always)]
fn key_v4(slots: &[LenSlotV4; LEN_SLOTS_V4], i: u64, addr: u64) -> Option<Masked> {
    let slot = slots.get(i as usize)?;
    if slot.len == LEN_UNUSED {
        return None;
    }
    Some(Masked {
        len: slot.len,
        hi: (addr as u32 & u32::from_ne_bytes(slot.mask)) as u64,
        lo: 0,
        mark: u32::from_ne_bytes(slot.mark),
    })
}

#[inline(always)]
fn key_v6(slots: &[LenSlotV6; LEN_SLOTS_V6], i: u64, hi: u64, lo: u64) -> Option<Masked> {
    let slot = slots.get(i as usize)?;
    if slot.len == LEN_UNUSED {
        return None;
    }
    Some(Masked {
        len: slot.len,
        hi: hi & slot.mask[0],
        lo: lo & slot.mask[1],
        mark: 0,
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
    let Some(k) = key_v4(&cfg.allow_v4, i + 1, p.hi) else {
        return CONTINUE;
    };
    if find_a4(&cfg.tables[TBL_ALLOW_V4], &k) {
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
    let Some(k) = key_v4(&cfg.pfx_v4, i + 1, p.hi) else {
        return CONTINUE;
    };
    if let Some(e) = find_p4(&cfg.tables[TBL_PFX_V4], &k) {
        let hi = p.hi;
        if applies(e, p.port, &mut p.miss, || {
            events::first_drop_v4(hi as u32, k.hi as u32, k.len)
        }) {
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
    let Some(k) = key_v6(&cfg.allow_v6, i + 1, p.hi, p.lo) else {
        return CONTINUE;
    };
    if find_a6(&cfg.tables[TBL_ALLOW_V6], &k) {
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
    let Some(k) = key_v6(&cfg.pfx_v6, i + 1, p.hi, p.lo) else {
        return CONTINUE;
    };
    if let Some(e) = find_p6(&cfg.tables[TBL_PFX_V6], &k) {
        let (hi, lo) = (p.hi, p.lo);
        if applies(e, p.port, &mut p.miss, || {
            events::first_drop_v6(hi, lo, k.hi, k.lo, k.len)
        }) {
            p.hit = 1;
            return STOP;
        }
    }
    CONTINUE
}

// Table lookups: the key's first bucket (one cache line); its second only
// while the first bucket's spill counter for the key's nibble is non-zero
// (userspace raises it before a key of that nibble can appear in its second
// bucket, and lowers it only after the key left). A tag match yields an
// entry id; tables whose tags are hashes confirm the key in the entry.
// Userspace moves and clears slots with single 8-byte stores, so a slot is
// never read half-written; an entry of a ban being removed may be read just
// as it is freed, and then reads as expired (fail-open for that packet).
// Entries are read through raw pointers because `drops` is added to
// concurrently by other CPUs.

/// A match: pointers to the entry's `expiry_ports` and `drops` words.
#[derive(Clone, Copy)]
struct Hit {
    expiry_ports: *const u64,
    drops: *mut u64,
}

type Buckets = Array<Bucket, 2, MMAPABLE>;

/// The slots of bucket `b` whose tag is `tag`, each offered to `get`
/// (which confirms the entry behind the id) until one is accepted.
///
/// # Safety
/// `b` must point to a bucket of a map, valid for the program run.
#[inline(always)]
unsafe fn scan<T>(b: *const Bucket, tag: u32, get: &impl Fn(u32) -> Option<T>) -> Option<T> {
    // SAFETY: per the contract, the slot words lie in the map value.
    let slots = unsafe { addr_of!((*b).slots) }.cast::<u64>();
    for i in 0..BUCKET_SLOTS {
        // SAFETY: i < BUCKET_SLOTS, within the bucket.
        let w = unsafe { read_volatile(slots.add(i)) };
        let id = (w >> 32) as u32;
        if w as u32 == tag && id != 0 {
            if let Some(t) = get(id) {
                return Some(t);
            }
        }
    }
    None
}

/// The key at `p` with `tag`: first bucket, then (if its spill counter
/// says so) the second.
#[inline(always)]
fn lookup<T>(buckets: &Buckets, p: Place, tag: u32, get: impl Fn(u32) -> Option<T>) -> Option<T> {
    let b = buckets.get_ptr(p.b1)?;
    // SAFETY: an element of the bucket array, valid for the whole run.
    if let Some(t) = unsafe { scan(b, tag, &get) } {
        return Some(t);
    }
    // SAFETY: as above; the spill word is read once.
    let spill = unsafe { read_volatile(addr_of!((*b).spill)) };
    if spill_count(spill, p.nib) == 0 {
        return None;
    }
    let b = buckets.get_ptr(p.b2)?;
    // SAFETY: as above.
    unsafe { scan(b, tag, &get) }
}

/// The table's shape, read as one word: userspace grows or shrinks a table
/// by storing a new shape while this program runs (keys sit where either
/// shape puts them until every run that read the old one has ended). The
/// map update that stores it copies the whole CONFIG value; should a run
/// ever see its two halves from different updates, it looks in a wrong
/// bucket (never outside the array) and at worst passes that one packet.
#[inline(always)]
fn shape(g: &TableGeom) -> Shape {
    // SAFETY: `shape` is an 8-aligned 8-byte field of the CONFIG value.
    Shape::from_word(unsafe { read_volatile(addr_of!(g.shape).cast::<u64>()) })
}

#[inline(always)]
fn find_v4(g: &TableGeom, addr: u32) -> Option<Hit> {
    if g.count == 0 {
        return None;
    }
    // The tag is the address itself: a match needs no confirmation.
    lookup(
        &BANS_V4,
        place(hash_v4(addr, g.seed), shape(g)),
        addr,
        |id| {
            let e = BANS_V4_ENT.get_ptr_mut(id)?;
            Some(Hit {
                // SAFETY: field addresses inside an element of the entry array.
                expiry_ports: unsafe { addr_of!((*e).expiry_ports) },
                drops: unsafe { addr_of_mut!((*e).drops) },
            })
        },
    )
}

#[inline(always)]
fn find_v6(g: &TableGeom, hi: u64, lo: u64) -> Option<Hit> {
    if g.count == 0 {
        return None;
    }
    let h = hash_v6(hi, lo, g.seed);
    lookup(&BANS_V6, place(h, shape(g)), hash_tag(h), |id| {
        let e = BANS_V6_ENT.get_ptr_mut(id)?;
        // SAFETY: an element of the entry array; the address is at offset
        // 0 of an 8-aligned value, so it reads as two words.
        unsafe {
            let k = e.cast::<u64>();
            if read_volatile(k) != hi || read_volatile(k.add(1)) != lo {
                return None;
            }
            Some(Hit {
                expiry_ports: addr_of!((*e).expiry_ports),
                drops: addr_of_mut!((*e).drops),
            })
        }
    })
}

#[inline(always)]
fn find_p4(g: &TableGeom, k: &Masked) -> Option<Hit> {
    if g.count == 0 {
        return None;
    }
    // The tag holds length and prefix exactly.
    let tag = tag_p4(k.hi as u32, k.mark);
    lookup(&PFX_V4, place(hash_v4(tag, g.seed), shape(g)), tag, |id| {
        let e = PFX_V4_ENT.get_ptr_mut(id)?;
        Some(Hit {
            // SAFETY: field addresses inside an element of the entry array.
            expiry_ports: unsafe { addr_of!((*e).expiry_ports) },
            drops: unsafe { addr_of_mut!((*e).drops) },
        })
    })
}

#[inline(always)]
fn find_p6(g: &TableGeom, k: &Masked) -> Option<Hit> {
    if g.count == 0 {
        return None;
    }
    let h = hash_p6(k.len, k.hi, k.lo, g.seed);
    lookup(&PFX_V6, place(h, shape(g)), hash_tag(h), |id| {
        let e = PFX_V6_ENT.get_ptr_mut(id)?;
        // SAFETY: an element of the entry array; the address is at offset
        // 0 of an 8-aligned value.
        unsafe {
            let a = e.cast::<u64>();
            if read_volatile(a) != k.hi
                || read_volatile(a.add(1)) != k.lo
                || read_volatile(addr_of!((*e).len)) != k.len
            {
                return None;
            }
            Some(Hit {
                expiry_ports: addr_of!((*e).expiry_ports),
                drops: addr_of_mut!((*e).drops),
            })
        }
    })
}

/// Whether the allowlist holds exactly this prefix.
#[inline(always)]
fn find_a4(g: &TableGeom, k: &Masked) -> bool {
    if g.count == 0 {
        return false;
    }
    let addr = k.hi as u32;
    let h = hash_a4(k.len, addr, g.seed);
    lookup(&ALLOW_V4, place(h, shape(g)), hash_tag(h), |id| {
        let e = ALLOW_V4_ENT.get_ptr(id)?;
        // SAFETY: an element of the entry array; key.addr is 4-aligned.
        let same = unsafe {
            read_volatile(addr_of!((*e).key.len)) == k.len
                && read_volatile(addr_of!((*e).key.addr).cast::<u32>()) == addr
        };
        same.then_some(())
    })
    .is_some()
}

#[inline(always)]
fn find_a6(g: &TableGeom, k: &Masked) -> bool {
    if g.count == 0 {
        return false;
    }
    let h = hash_p6(k.len, k.hi, k.lo, g.seed);
    lookup(&ALLOW_V6, place(h, shape(g)), hash_tag(h), |id| {
        let e = ALLOW_V6_ENT.get_ptr(id)?;
        // SAFETY: an element of the entry array. The address sits at offset
        // 4, so it is compared as 4-aligned u32 words.
        let same = unsafe {
            let a = addr_of!((*e).key.addr).cast::<u32>();
            let hi = read_volatile(a) as u64 | (read_volatile(a.add(1)) as u64) << 32;
            let lo = read_volatile(a.add(2)) as u64 | (read_volatile(a.add(3)) as u64) << 32;
            read_volatile(addr_of!((*e).key.len)) == k.len && hi == k.hi && lo == k.lo
        };
        same.then_some(())
    })
    .is_some()
}

/// Whether a found ban applies to this packet; if so counts the drop on the
/// ban, and calls `first` when it is the ban's first (the counter went from
/// 0 to 1: one branch on the old value in the steady state). Otherwise
/// records in `miss` why it did not, for the pass counters.
#[inline(always)]
fn applies(h: Hit, port: u32, miss: &mut Reason, first: impl FnOnce()) -> bool {
    // SAFETY (all derefs of `h`): it points into an entry array element,
    // valid for the whole program run. The word is read once, so expiry
    // and port set come from the same write.
    let w = unsafe { read_volatile(h.expiry_ports) };
    let expiry = w & EXPIRY_MASK;
    // Permanent bans skip the clock read. A free entry reads as expiry 0.
    // SAFETY: a plain helper call without arguments.
    if expiry != EXPIRY_NEVER && unsafe { bpf_ktime_get_boot_ns() } >= expiry {
        *miss = Reason::PassExpired;
        return false;
    }
    let set = (w & 0xffff) as u32;
    if set != 0 {
        if port == NO_PORT {
            *miss = Reason::PassOtherPort;
            return false;
        }
        let Some(l) = PORTS.get_ptr(set) else {
            *miss = Reason::PassOtherPort;
            return false;
        };
        // SAFETY: an element of PORTS, valid for the whole run.
        let n = unsafe { read_volatile(addr_of!((*l).n)) };
        let mut hit = false;
        for i in 0..MAX_BAN_PORTS {
            // SAFETY: i < MAX_BAN_PORTS, within the element.
            if (i as u32) < n && unsafe { (*l).ports[i] } as u32 == port {
                hit = true;
            }
        }
        if !hit {
            *miss = Reason::PassOtherPort;
            return false;
        }
    }
    // The bpfel target has no compare-and-swap, so core's AtomicU64 offers
    // no fetch_add; the intrinsic lowers to the BPF atomic fetch-add (ISA
    // v3), whose old value tells the first drop: two CPUs cannot both see
    // 0. SeqCst, not Relaxed: with Relaxed, LLVM emits the plain atomic add
    // (`lock ... += r1`, no fetch) and reads the old value from its source
    // register, so the first drop never showed. Both JIT to one locked
    // x86 instruction.
    // SAFETY: `drops` is a naturally aligned u64 inside the map value.
    let old = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(h.drops, 1) };
    if old == 0 {
        first();
    }
    true
}
