//! Types shared by the XDP program (ebpf/) and the agent (watcher/).
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]` with explicit
//! padding and only integer fields, so both sides agree byte for byte and
//! `bpftool map dump` can print it from BTF. Names and limits are defined once
//! here and used by both sides.
#![no_std]

/// Directory under bpffs where every map and the XDP links are pinned.
pub const PIN_DIR_DEFAULT: &str = "/sys/fs/bpf/fail2xdp";
/// Pin name of the XDP link on interface `IF` is `LINK_PIN_PREFIX` + `IF`.
pub const LINK_PIN_PREFIX: &str = "link_";
/// Name of the XDP entry point in the object file.
pub const PROG_NAME: &str = "fail2xdp";

/// Map names: the static's name in ebpf/src/main.rs, the kernel map name and
/// the pin file name under the pin directory, all the same.
pub mod map {
    /// Exact IPv4 bans (/32): open-addressing table, a mmapable array of
    /// [`SlotV4`](crate::SlotV4) (`[u8; 4]` key, [`BanValue`](crate::BanValue));
    /// geometry in `Config::tables[TBL_BANS_V4]`.
    pub const BANS_V4: &str = "BANS_V4";
    /// Exact IPv6 bans (/128): array of [`SlotV6`](crate::SlotV6).
    pub const BANS_V6: &str = "BANS_V6";
    /// IPv4 prefix bans: array of [`SlotP4`](crate::SlotP4) ([`PfxKeyV4`](crate::PfxKeyV4) key).
    pub const PFX_V4: &str = "PFX_V4";
    /// IPv6 prefix bans: array of [`SlotP6`](crate::SlotP6) ([`PfxKeyV6`](crate::PfxKeyV6) key).
    pub const PFX_V6: &str = "PFX_V6";
    /// IPv4 allowlist (any prefix length): array of [`SlotA4`](crate::SlotA4)
    /// ([`PfxKeyV4`](crate::PfxKeyV4) key, [`AllowValue`](crate::AllowValue)).
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// IPv6 allowlist: array of [`SlotA6`](crate::SlotA6).
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// One-entry array: [`Config`](crate::Config), the prefix lengths in use.
    pub const CONFIG: &str = "CONFIG";
    /// One-entry per-CPU array: [`Stats`](crate::Stats).
    pub const STATS: &str = "STATS";
    /// Jail names for `list`/`bpftool`: `u32` jail id -> [`JailName`](crate::JailName).
    pub const JAILS: &str = "JAILS";

    /// Overflow of the open-addressing tables: hash maps with the old key
    /// and value types, holding the few keys that found no slot within
    /// [`MAX_PROBE`](crate::MAX_PROBE) of their home (adversarial collisions).
    pub const BANS_V4_OVF: &str = "BANS_V4_OVF";
    pub const BANS_V6_OVF: &str = "BANS_V6_OVF";
    pub const PFX_V4_OVF: &str = "PFX_V4_OVF";
    pub const PFX_V6_OVF: &str = "PFX_V6_OVF";
    pub const ALLOW_V4_OVF: &str = "ALLOW_V4_OVF";
    pub const ALLOW_V6_OVF: &str = "ALLOW_V6_OVF";

    /// Every map, for pinning, status and detach.
    pub const ALL: [&str; 15] = [
        BANS_V4,
        BANS_V6,
        PFX_V4,
        PFX_V6,
        ALLOW_V4,
        ALLOW_V6,
        CONFIG,
        STATS,
        JAILS,
        BANS_V4_OVF,
        BANS_V6_OVF,
        PFX_V4_OVF,
        PFX_V6_OVF,
        ALLOW_V4_OVF,
        ALLOW_V6_OVF,
    ];
}

/// Default capacities; the agent overrides them from its configuration when
/// it first creates the maps (pinned maps keep the size they were made with).
pub mod capacity {
    pub const BANS_V4: u32 = 1 << 20;
    pub const BANS_V6: u32 = 1 << 20;
    pub const PFX_V4: u32 = 1 << 18;
    pub const PFX_V6: u32 = 1 << 18;
    pub const ALLOW_V4: u32 = 1 << 16;
    pub const ALLOW_V6: u32 = 1 << 16;
    pub const JAILS: u32 = 4096;
    /// Entries of each overflow hash map (see `map::BANS_V4_OVF`).
    pub const OVERFLOW: u32 = 4096;
}

/// Slots an open-addressing table is probed at most, from a key's home.
/// A key that finds no free slot that close goes to the overflow map.
pub const MAX_PROBE: u32 = 16;

/// Index of each open-addressing table in [`Config::tables`].
pub const TBL_BANS_V4: usize = 0;
pub const TBL_BANS_V6: usize = 1;
pub const TBL_PFX_V4: usize = 2;
pub const TBL_PFX_V6: usize = 3;
pub const TBL_ALLOW_V4: usize = 4;
pub const TBL_ALLOW_V6: usize = 5;
/// Number of open-addressing tables.
pub const TABLES: usize = 6;

/// Shape and fill of one open-addressing table (an array map of 2^bits
/// slots, linear probing, no tombstones).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableGeom {
    /// Random per instance, so remote clients cannot aim at one home slot.
    pub seed: u64,
    /// log2 of the slot count, 1..=32; 0 before userspace set the table up.
    pub bits: u32,
    /// Slot count - 1.
    pub mask: u32,
    /// Used slots; the XDP program skips the table while it is 0.
    pub count: u32,
    /// Entries in the overflow map; it is looked up only while non-zero.
    pub ovf: u32,
}

/// Multiplicative (Fibonacci) hashing of a key folded to 64 bits: the top
/// `bits` bits of the product depend on every input bit.
#[inline(always)]
pub fn home(x: u64, seed: u64, bits: u32) -> u32 {
    ((x ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> ((64 - bits) & 63)) as u32
}

/// The 64-bit folds of each key type, from the native words of the
/// packet-order address bytes (what the XDP program has in registers).
#[inline(always)]
pub fn fold_v4(addr: u32) -> u64 {
    addr as u64
}
#[inline(always)]
pub fn fold_p4(len: u32, addr: u32) -> u64 {
    addr as u64 | (len as u64) << 32
}
#[inline(always)]
pub fn fold_v6(hi: u64, lo: u64) -> u64 {
    hi ^ lo.rotate_left(31)
}
#[inline(always)]
pub fn fold_p6(len: u32, hi: u64, lo: u64) -> u64 {
    fold_v6(hi, lo) ^ len as u64
}

/// Slot of BANS_V4. `used == 0` marks an empty slot (probing stops there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV4 {
    pub key: [u8; 4],
    pub used: u32,
    pub val: BanValue,
}

/// Slot of BANS_V6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV6 {
    pub key: [u8; 16],
    pub used: u32,
    pub _pad: u32,
    pub val: BanValue,
}

/// Slot of PFX_V4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotP4 {
    pub key: PfxKeyV4,
    pub used: u32,
    pub _pad: u32,
    pub val: BanValue,
}

/// Slot of ALLOW_V4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotA4 {
    pub key: PfxKeyV4,
    pub used: u32,
    pub val: AllowValue,
}

/// Slot of ALLOW_V6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotA6 {
    pub key: PfxKeyV6,
    pub used: u32,
    pub val: AllowValue,
}

/// Slot of PFX_V6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotP6 {
    pub key: PfxKeyV6,
    pub used: u32,
    pub val: BanValue,
}

/// `BanValue::expires_ns` of a ban that never expires. Chosen as the largest
/// value so the expiry test in the XDP program needs no special case.
pub const EXPIRES_NEVER: u64 = u64::MAX;
/// Most destination ports one ban can be scoped to (`nports == 0` is all ports).
pub const MAX_BAN_PORTS: usize = 8;
/// Jail id of bans made by hand on the command line.
pub const JAIL_MANUAL: u32 = 0;
/// Longest jail name kept in [`JailName`].
pub const JAIL_NAME_LEN: usize = 32;

/// What the XDP program reads for every banned address or prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// CLOCK_BOOTTIME ns after which the ban no longer applies, or [`EXPIRES_NEVER`].
    /// The kernel enforces it: an expired entry is passed even if no agent runs.
    pub expires_ns: u64,
    /// CLOCK_REALTIME ns (unix time) when the ban was made.
    pub created_ns: u64,
    /// Packets dropped by this ban; the XDP program adds to it atomically.
    pub drops: u64,
    /// Jail that made the ban, a key of the JAILS map ([`JAIL_MANUAL`] for the CLI).
    pub jail_id: u32,
    /// Number of valid entries in `ports`; 0 means every port and protocol.
    pub nports: u32,
    /// Destination ports (host byte order) the ban applies to, TCP and UDP.
    pub ports: [u16; MAX_BAN_PORTS],
}

/// Key of the prefix maps: prefix length and the address masked to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PfxKeyV4 {
    pub len: u32,
    pub addr: [u8; 4],
}

/// Key of the IPv6 prefix maps: prefix length and the address masked to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PfxKeyV6 {
    pub len: u32,
    pub addr: [u8; 16],
}

/// Value of the allowlist maps. Presence is what counts; `reserved` keeps the
/// value non-empty and leaves room for flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowValue {
    pub reserved: u32,
}

/// A jail's name, NUL padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JailName {
    pub name: [u8; JAIL_NAME_LEN],
}

/// A prefix length in use in one prefix map, with its mask precomputed so the
/// XDP program only ANDs. `len == LEN_UNUSED` marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenSlotV4 {
    pub len: u32,
    /// Network-order mask as it lies in memory (the packet's byte order).
    pub mask: [u8; 4],
}

/// IPv6 counterpart of [`LenSlotV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenSlotV6 {
    pub len: u32,
    pub _pad: u32,
    /// The 16 mask bytes in packet order, read as two native u64 words.
    pub mask: [u64; 2],
}

/// Marks a free slot in the length tables.
pub const LEN_UNUSED: u32 = u32::MAX;
/// Slots per table: one per possible prefix length.
pub const LEN_SLOTS_V4: usize = 33;
pub const LEN_SLOTS_V6: usize = 129;

/// The prefix lengths in use, one table per prefix map. The XDP program probes
/// slots `0..n`, skipping `LEN_UNUSED`, one hash lookup per length in use: with
/// few distinct lengths (the usual /24, /16, /64, /48) that beats an LPM trie.
///
/// Userspace changes one slot or one `n` per map update, so a concurrent
/// reader sees either the old or the new value of the one field that changed:
/// a slot is written before `n` grows to cover it, and freed (LEN_UNUSED)
/// before the last entry of that length is deleted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub allow_v4_n: u32,
    pub allow_v6_n: u32,
    pub pfx_v4_n: u32,
    pub pfx_v6_n: u32,
    pub allow_v4: [LenSlotV4; LEN_SLOTS_V4],
    pub pfx_v4: [LenSlotV4; LEN_SLOTS_V4],
    pub allow_v6: [LenSlotV6; LEN_SLOTS_V6],
    pub pfx_v6: [LenSlotV6; LEN_SLOTS_V6],
    /// The open-addressing tables, indexed by `TBL_*`.
    pub tables: [TableGeom; TABLES],
}

impl Config {
    pub const EMPTY: Config = Config {
        allow_v4_n: 0,
        allow_v6_n: 0,
        pfx_v4_n: 0,
        pfx_v6_n: 0,
        allow_v4: [LenSlotV4 {
            len: LEN_UNUSED,
            mask: [0; 4],
        }; LEN_SLOTS_V4],
        pfx_v4: [LenSlotV4 {
            len: LEN_UNUSED,
            mask: [0; 4],
        }; LEN_SLOTS_V4],
        allow_v6: [LenSlotV6 {
            len: LEN_UNUSED,
            _pad: 0,
            mask: [0; 2],
        }; LEN_SLOTS_V6],
        pfx_v6: [LenSlotV6 {
            len: LEN_UNUSED,
            _pad: 0,
            mask: [0; 2],
        }; LEN_SLOTS_V6],
        tables: [TableGeom {
            seed: 0,
            bits: 0,
            mask: 0,
            count: 0,
            ovf: 0,
        }; TABLES],
    };
}

/// Per-CPU packet counters, one struct so the program does a single lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pass_pkts: u64,
    pub pass_bytes: u64,
    pub drop_pkts: u64,
    pub drop_bytes: u64,
    /// Drops by reason.
    pub drop_exact_v4: u64,
    pub drop_exact_v6: u64,
    pub drop_prefix_v4: u64,
    pub drop_prefix_v6: u64,
    /// Passes worth telling apart.
    pub pass_allowlisted: u64,
    pub pass_unparsed: u64,
    pub pass_expired: u64,
    pub pass_other_port: u64,
}

impl Stats {
    /// Sum of per-CPU copies.
    pub fn add(&mut self, o: &Stats) {
        self.pass_pkts += o.pass_pkts;
        self.pass_bytes += o.pass_bytes;
        self.drop_pkts += o.drop_pkts;
        self.drop_bytes += o.drop_bytes;
        self.drop_exact_v4 += o.drop_exact_v4;
        self.drop_exact_v6 += o.drop_exact_v6;
        self.drop_prefix_v4 += o.drop_prefix_v4;
        self.drop_prefix_v6 += o.drop_prefix_v6;
        self.pass_allowlisted += o.pass_allowlisted;
        self.pass_unparsed += o.pass_unparsed;
        self.pass_expired += o.pass_expired;
        self.pass_other_port += o.pass_other_port;
    }
}

/// An IPv6 address as two native words of its packet-order bytes: the form
/// the slot masks and the hash fold use, on both sides.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

/// Mask of `len` leading one bits over 4 bytes, in memory (network) order.
pub const fn mask_v4(len: u32) -> [u8; 4] {
    let m: u32 = if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - len)
    };
    m.to_be_bytes()
}

/// Mask of `len` leading one bits over 16 bytes, as two native u64 words of
/// the packet-order bytes (what the XDP program ANDs with).
pub const fn mask_v6(len: u32) -> [u64; 2] {
    let m: u128 = if len == 0 {
        0
    } else if len >= 128 {
        u128::MAX
    } else {
        u128::MAX << (128 - len)
    };
    let b = m.to_be_bytes();
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        hi[i] = b[i];
        lo[i] = b[i + 8];
        i += 1;
    }
    [u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers, with no implicit padding.
    unsafe impl aya::Pod for super::BanValue {}
    unsafe impl aya::Pod for super::PfxKeyV4 {}
    unsafe impl aya::Pod for super::PfxKeyV6 {}
    unsafe impl aya::Pod for super::AllowValue {}
    unsafe impl aya::Pod for super::JailName {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::TableGeom {}
    unsafe impl aya::Pod for super::SlotV4 {}
    unsafe impl aya::Pod for super::SlotV6 {}
    unsafe impl aya::Pod for super::SlotP4 {}
    unsafe impl aya::Pod for super::SlotP6 {}
    unsafe impl aya::Pod for super::SlotA4 {}
    unsafe impl aya::Pod for super::SlotA6 {}
}

// Layout is part of the contract with pinned maps made by an older agent.
const _: () = {
    assert!(core::mem::size_of::<BanValue>() == 48);
    assert!(core::mem::size_of::<PfxKeyV4>() == 8);
    assert!(core::mem::size_of::<PfxKeyV6>() == 20);
    assert!(core::mem::size_of::<LenSlotV4>() == 8);
    assert!(core::mem::size_of::<LenSlotV6>() == 24);
    assert!(core::mem::size_of::<Stats>() == 96);
    assert!(core::mem::size_of::<TableGeom>() == 24);
    assert!(core::mem::size_of::<SlotV4>() == 56);
    assert!(core::mem::size_of::<SlotV6>() == 72);
    assert!(core::mem::size_of::<SlotP4>() == 64);
    assert!(core::mem::size_of::<SlotP6>() == 72);
    assert!(core::mem::offset_of!(SlotP6, val) == 24);
    assert!(core::mem::size_of::<SlotA4>() == 16);
    assert!(core::mem::size_of::<SlotA6>() == 28);
};
