//! Types shared by the XDP program (ebpf/) and the agent (watcher/).
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]` with explicit
//! padding and only integer fields, so both sides agree byte for byte and
//! `bpftool map dump` can print it from BTF. Names and limits are defined once
//! here and used by both sides.
//!
//! # The ban tables
//!
//! Each table is a bucketized cuckoo hash in three array maps:
//!
//! - the **buckets** (`BANS_V4`, ...): one 64-byte [`Bucket`] per element,
//!   one cache line, holding seven 8-byte slots (a 32-bit tag and a 32-bit
//!   entry id) and a counter of keys homed here that live in their other
//!   bucket. A key lives in one of two buckets ([`Place`]); a lookup reads
//!   its first bucket and, only when that bucket's counter for the key's
//!   nibble is non-zero, its second one. This is all a clean source costs;
//! - the **entries** (`BANS_V4_ENT`, ...), indexed by entry id: what a match
//!   needs to decide (expiry, port set, the drop counter, and for tables whose
//!   tags are hashes the key itself to confirm the match). Read only for a
//!   tag that matched: a banned source costs its bucket and its entry;
//! - the **metadata** (`BANS_V4_META`, ...), indexed by the same id: when the
//!   ban was made and by which jail. Never read by the XDP program.
//!
//! Entries never move: only 8-byte slots move between buckets, each with one
//! atomic store, so a lookup never sees a torn slot.
//!
//! The arrays are sized for the configured capacity, but a table uses only
//! as many buckets as its keys need ([`Shape`], from [`INITIAL_BUCKETS`] up,
//! doubling by linear hashing as keys arrive), and entry ids are given
//! lowest first: ten thousand bans occupy a few hundred kilobytes of table,
//! not the whole array, and stay in the caches and TLB.
#![no_std]

/// Directory under bpffs where every map and the XDP links are pinned.
pub const PIN_DIR_DEFAULT: &str = "/sys/fs/bpf/fail2xdp";
/// Pin name of the XDP link on interface `IF` is `LINK_PIN_PREFIX` + `IF`.
pub const LINK_PIN_PREFIX: &str = "link_";
/// Pin name of the program fail2xdp added to libxdp's dispatcher on `IF`:
/// `DISPATCHED_PIN_PREFIX` + `IF` (the link itself is pinned by libxdp's rules).
pub const DISPATCHED_PIN_PREFIX: &str = "ext_";
/// Name of the XDP entry point in the object file.
pub const PROG_NAME: &str = "fail2xdp";
/// The log target of the XDP program's own records (aya-log): the agent
/// asks its logger which of their levels it keeps, and the program skips
/// the others before writing anything.
pub const XDP_LOG_TARGET: &str = "fail2xdp::xdp";

/// Layout of the maps below; CONFIG carries it, so pins of another layout
/// are refused even where their value sizes happen to agree.
pub const LAYOUT_VERSION: u32 = 3;

/// Map names: the static's name in ebpf/src/main.rs, the kernel map name and
/// the pin file name under the pin directory, all the same (at most 15 bytes).
pub mod map {
    /// Exact IPv4 bans (/32): [`Bucket`](crate::Bucket)s; a tag is the address.
    pub const BANS_V4: &str = "BANS_V4";
    /// [`BanEntry`](crate::BanEntry) per entry id of BANS_V4.
    pub const BANS_V4_ENT: &str = "BANS_V4_ENT";
    /// [`BanMeta`](crate::BanMeta) per entry id of BANS_V4 (userspace only).
    pub const BANS_V4_META: &str = "BANS_V4_META";
    /// Exact IPv6 bans (/128): buckets with hash tags.
    pub const BANS_V6: &str = "BANS_V6";
    /// [`BanEntryV6`](crate::BanEntryV6) (address, to confirm a tag).
    pub const BANS_V6_ENT: &str = "BANS_V6_ENT";
    pub const BANS_V6_META: &str = "BANS_V6_META";
    /// IPv4 prefix bans: a tag is the prefix itself ([`tag_p4`](crate::tag_p4)).
    pub const PFX_V4: &str = "PFX_V4";
    /// [`BanEntry`](crate::BanEntry) per entry id of PFX_V4.
    pub const PFX_V4_ENT: &str = "PFX_V4_ENT";
    pub const PFX_V4_META: &str = "PFX_V4_META";
    /// IPv6 prefix bans: buckets with hash tags.
    pub const PFX_V6: &str = "PFX_V6";
    /// [`BanEntryP6`](crate::BanEntryP6) (prefix, to confirm a tag).
    pub const PFX_V6_ENT: &str = "PFX_V6_ENT";
    pub const PFX_V6_META: &str = "PFX_V6_META";
    /// IPv4 allowlist (any prefix length): buckets with hash tags.
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// [`AllowEntryV4`](crate::AllowEntryV4) per entry id of ALLOW_V4.
    pub const ALLOW_V4_ENT: &str = "ALLOW_V4_ENT";
    /// IPv6 allowlist.
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const ALLOW_V6_ENT: &str = "ALLOW_V6_ENT";
    /// Port sets of port-scoped bans: id -> [`PortList`](crate::PortList).
    pub const PORTS: &str = "PORTS";
    /// One-entry array: [`Config`](crate::Config), the prefix lengths in use
    /// and each table's geometry.
    pub const CONFIG: &str = "CONFIG";
    /// One-entry per-CPU array: [`Stats`](crate::Stats).
    pub const STATS: &str = "STATS";
    /// Jail names for `list`/`bpftool`: `u32` jail id -> [`JailName`](crate::JailName).
    pub const JAILS: &str = "JAILS";

    /// Every map, for pinning, status and detach.
    pub const ALL: [&str; 20] = [
        BANS_V4,
        BANS_V4_ENT,
        BANS_V4_META,
        BANS_V6,
        BANS_V6_ENT,
        BANS_V6_META,
        PFX_V4,
        PFX_V4_ENT,
        PFX_V4_META,
        PFX_V6,
        PFX_V6_ENT,
        PFX_V6_META,
        ALLOW_V4,
        ALLOW_V4_ENT,
        ALLOW_V6,
        ALLOW_V6_ENT,
        PORTS,
        CONFIG,
        STATS,
        JAILS,
    ];

    /// Pins only the previous layout made (open-addressing overflow maps);
    /// `detach` removes them too, so an upgrade can start afresh.
    pub const LEGACY: [&str; 6] = [
        "BANS_V4_OVF",
        "BANS_V6_OVF",
        "PFX_V4_OVF",
        "PFX_V6_OVF",
        "ALLOW_V4_OVF",
        "ALLOW_V6_OVF",
    ];
}

/// Default capacities (entries); the agent overrides them from its
/// configuration when it first creates the maps (pinned maps keep the size
/// they were made with).
pub mod capacity {
    pub const BANS_V4: u32 = 1 << 20;
    pub const BANS_V6: u32 = 1 << 20;
    pub const PFX_V4: u32 = 1 << 18;
    pub const PFX_V6: u32 = 1 << 18;
    pub const ALLOW_V4: u32 = 1 << 16;
    pub const ALLOW_V6: u32 = 1 << 16;
    pub const JAILS: u32 = 4096;
    /// Distinct port sets in use at once (ids 1..PORTS; 0 is "every port").
    pub const PORTS: u32 = 4096;
}

/// Slots per bucket: seven 8-byte slots after the 8-byte spill counters.
pub const BUCKET_SLOTS: usize = 7;

/// Keys per slot a table is sized for at full capacity: with one key in
/// two, a key finds room in its first bucket more than 98 % of the time,
/// and only 0.3 % of clean lookups have to read the second one.
pub const MAX_LOAD_NUM: u32 = 1;
pub const MAX_LOAD_DEN: u32 = 2;

/// One bucket: exactly one cache line (array map values of 64 bytes start
/// page-aligned in a mmapable map, so each bucket is one line).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Sixteen 4-bit counters: `nibble(n)` counts the keys whose first
    /// bucket is this one, whose [`Place::nib`] is `n`, and which live in
    /// their second bucket. A lookup reads the second bucket only if its
    /// nibble's counter is non-zero. Saturates at 15 (then stays).
    pub spill: u64,
    /// `tag | id << 32`; id 0 is an empty slot.
    pub slots: [u64; BUCKET_SLOTS],
}

/// A slot word: the tag in the low half, the entry id in the high half.
#[inline(always)]
pub const fn slot_word(tag: u32, id: u32) -> u64 {
    tag as u64 | (id as u64) << 32
}

/// The spill counter of nibble `n` in a bucket's `spill` word.
#[inline(always)]
pub const fn spill_count(spill: u64, n: u32) -> u64 {
    (spill >> ((n & 15) * 4)) & 15
}

/// Where a key may live: its first and second bucket, and its nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub b1: u32,
    pub b2: u32,
    pub nib: u32,
}

/// The murmur3 finalizer: every output bit depends on every input bit.
#[inline(always)]
pub const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Bucket of hash half `x` in a table of shape `s`: linear hashing, the
/// low bits of `x` under `s.mask`, folded to one bit fewer where they reach
/// beyond `s.buckets`. Growing a table from `s` to a larger shape sends
/// each key either to the bucket it had or to a new bucket (one at or
/// beyond `s.buckets`) that receives keys from that bucket alone.
#[inline(always)]
pub const fn bucket_of(x: u32, s: Shape) -> u32 {
    let b = x & s.mask;
    if b >= s.buckets { b & (s.mask >> 1) } else { b }
}

/// The two buckets and the nibble of a key hash in a table of shape `s`:
/// one bucket from each half of the hash ([`bucket_of`]; the two may be
/// the same bucket), and the nibble from bits 28..31, which no table of
/// fewer than 2^28 buckets uses to pick a bucket: keys sharing a first
/// bucket get unrelated nibbles, so its spill counters tell them apart.
#[inline(always)]
pub const fn place(h: u64, s: Shape) -> Place {
    Place {
        b1: bucket_of(h as u32, s),
        b2: bucket_of((h >> 32) as u32, s),
        nib: ((h >> 28) & 15) as u32,
    }
}

/// A 32-bit tag from a key hash, for tables whose keys do not fit a tag.
#[inline(always)]
pub const fn hash_tag(h: u64) -> u32 {
    ((h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as u32
}

/// Hash of an IPv4 address given as the native word of its packet-order
/// bytes (what the XDP program has in a register); also the tag of BANS_V4.
#[inline(always)]
pub const fn hash_v4(addr: u32, seed: u64) -> u64 {
    mix(addr as u64 ^ seed)
}

/// Hash of an IPv6 address as the two native words of its packet-order bytes.
#[inline(always)]
pub const fn hash_v6(hi: u64, lo: u64, seed: u64) -> u64 {
    mix(mix(hi ^ seed) ^ lo)
}

/// Hash of an IPv4 prefix of any length (the allowlist, which has /32s).
#[inline(always)]
pub const fn hash_a4(len: u32, addr: u32, seed: u64) -> u64 {
    mix((addr as u64 | (len as u64) << 32) ^ seed)
}

/// Hash of an IPv6 prefix.
#[inline(always)]
pub const fn hash_p6(len: u32, hi: u64, lo: u64, seed: u64) -> u64 {
    mix(mix(hi ^ seed) ^ lo ^ (len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The exact 32-bit tag of an IPv4 prefix of length `len` < 32: the masked
/// address with the bit just after the prefix set (`mark`, see
/// [`LenSlotV4::mark`]), so every (length, prefix) pair has its own tag.
#[inline(always)]
pub const fn tag_p4(masked: u32, mark: u32) -> u32 {
    masked | mark
}

/// `mark` of [`tag_p4`] for `len` < 32, as the native word of packet-order bytes.
pub const fn mark_v4(len: u32) -> [u8; 4] {
    if len >= 32 {
        [0; 4]
    } else {
        (1u32 << (31 - len)).to_be_bytes()
    }
}

/// `BanEntry::expiry_ports` bits that hold the expiry; the low 16 hold the
/// port set id (0: every port and protocol).
pub const EXPIRY_MASK: u64 = !0xffff;
/// The expiry of a ban that never expires: the largest, so the expiry test
/// in the XDP program needs no special case.
pub const EXPIRY_NEVER: u64 = EXPIRY_MASK;
/// An entry whose `expiry_ports` is below this is free.
pub const EXPIRY_MIN: u64 = 1 << 16;

/// `expiry_ports` of a ban: CLOCK_BOOTTIME ns rounded *up* to 65,536 ns (a
/// ban never ends early; it may last 65 µs longer), `None` for permanent.
pub const fn expiry_ports(expires_ns: Option<u64>, ports: u16) -> u64 {
    let e = match expires_ns {
        None => EXPIRY_NEVER,
        Some(ns) => {
            let up = ns.saturating_add(0xffff) & EXPIRY_MASK;
            if up >= EXPIRY_NEVER {
                EXPIRY_NEVER - EXPIRY_MIN
            } else if up < EXPIRY_MIN {
                EXPIRY_MIN
            } else {
                up
            }
        }
    };
    e | ports as u64
}

/// What the XDP program reads for a matched IPv4 ban or prefix: four per
/// cache line. Free while `expiry_ports < EXPIRY_MIN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEntry {
    /// Expiry and port set, see [`expiry_ports`]. The kernel enforces the
    /// expiry: an expired entry is passed even if no agent runs.
    pub expiry_ports: u64,
    /// Packets dropped by this ban; the XDP program adds to it atomically.
    pub drops: u64,
}

/// A matched IPv6 ban: the address confirms the tag. Two per cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEntryV6 {
    pub addr: [u8; 16],
    pub expiry_ports: u64,
    pub drops: u64,
}

/// A matched IPv6 prefix ban: length and masked address confirm the tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEntryP6 {
    pub addr: [u8; 16],
    pub len: u32,
    pub _pad: u32,
    pub expiry_ports: u64,
    pub drops: u64,
}

/// `AllowEntryV4::flags` of an entry in use.
pub const ALLOW_USED: u32 = 1 << 31;
/// `AllowEntryV4::flags` of an entry owned by the configuration.
pub const ALLOW_FROM_CONFIG: u32 = 1;

/// An allowlist entry: the prefix confirms the tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowEntryV4 {
    pub key: PfxKeyV4,
    pub flags: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowEntryV6 {
    pub key: PfxKeyV6,
    pub flags: u32,
}

/// What only userspace reads about a ban, at the ban's entry id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanMeta {
    /// CLOCK_REALTIME ns (unix time) when the ban was made.
    pub created_ns: u64,
    /// The label (jail) that made the ban, a key of the JAILS map.
    pub jail_id: u32,
    pub _pad: u32,
}

/// Most destination ports one ban can be scoped to.
pub const MAX_BAN_PORTS: usize = 8;
/// Jail id of bans made by hand on the command line.
pub const JAIL_MANUAL: u32 = 0;
/// Longest jail name (label) kept in [`JailName`].
pub const JAIL_NAME_LEN: usize = 32;

/// A port set of PORTS: destination ports (host order), TCP and UDP.
/// `n == 0` marks a free id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortList {
    pub ports: [u16; MAX_BAN_PORTS],
    pub n: u32,
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
    /// The bit just after the prefix, same order: see [`tag_p4`].
    pub mark: [u8; 4],
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

/// Index of each cuckoo table in [`Config::tables`].
pub const TBL_BANS_V4: usize = 0;
pub const TBL_BANS_V6: usize = 1;
pub const TBL_PFX_V4: usize = 2;
pub const TBL_PFX_V6: usize = 3;
pub const TBL_ALLOW_V4: usize = 4;
pub const TBL_ALLOW_V6: usize = 5;
/// Number of cuckoo tables.
pub const TABLES: usize = 6;

/// How many buckets of its array a table uses now, and the mask that
/// splits hashes over them (see [`place`]). Tables start small and grow
/// within their array as keys arrive, so a table of few keys stays in few
/// pages and cache lines. Read and written as one 8-byte word.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Buckets in use, `0..buckets` (at least 1); 0 before userspace set
    /// the table up.
    pub buckets: u32,
    /// The next power of two at or above `buckets`, minus one.
    pub mask: u32,
}

impl Shape {
    /// The shape of `buckets` buckets (at least 1).
    pub const fn of(buckets: u32) -> Shape {
        let b = if buckets == 0 { 1 } else { buckets };
        Shape {
            buckets: b,
            mask: if b > 1 << 31 {
                u32::MAX
            } else {
                b.next_power_of_two() - 1
            },
        }
    }

    /// The one word both fields travel in (`buckets` low, as in memory on
    /// little-endian machines; the XDP program reads it with one load).
    pub const fn word(self) -> u64 {
        self.buckets as u64 | (self.mask as u64) << 32
    }

    pub const fn from_word(w: u64) -> Shape {
        Shape {
            buckets: w as u32,
            mask: (w >> 32) as u32,
        }
    }
}

/// Buckets a fresh table starts with (one page of the bucket array).
pub const INITIAL_BUCKETS: u32 = 64;

/// Shape and fill of one table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableGeom {
    /// Random per instance, so remote clients cannot aim at one bucket.
    pub seed: u64,
    /// The buckets in use (changed with one 8-byte store when the table
    /// grows).
    pub shape: Shape,
    /// Entry ids run 1..=entries (the entry arrays have one more element).
    pub entries: u32,
    /// Keys in the table; the XDP program skips the table while it is 0.
    pub count: u32,
    /// No entry id below this one is free: the search for a free id starts
    /// here, so ids stay low and the entries in use packed together.
    pub next: u32,
    pub _pad: u32,
}

/// The prefix lengths in use, one table per prefix map, and the cuckoo
/// tables' geometry. The XDP program probes slots `0..n`, skipping
/// `LEN_UNUSED`, one table lookup per length in use: with few distinct
/// lengths (the usual /24, /16, /64, /48) that beats an LPM trie.
///
/// Userspace changes one slot or one `n` per map update, so a concurrent
/// reader sees either the old or the new value of the one field that changed:
/// a slot is written before `n` grows to cover it, and freed (LEN_UNUSED)
/// before the last entry of that length is deleted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`LAYOUT_VERSION`] once userspace set the maps up; 0 in fresh maps.
    pub version: u32,
    pub allow_v4_n: u32,
    pub allow_v6_n: u32,
    pub pfx_v4_n: u32,
    pub pfx_v6_n: u32,
    pub _pad: u32,
    pub allow_v4: [LenSlotV4; LEN_SLOTS_V4],
    pub pfx_v4: [LenSlotV4; LEN_SLOTS_V4],
    pub allow_v6: [LenSlotV6; LEN_SLOTS_V6],
    pub pfx_v6: [LenSlotV6; LEN_SLOTS_V6],
    /// The cuckoo tables, indexed by `TBL_*`.
    pub tables: [TableGeom; TABLES],
}

impl Config {
    pub const EMPTY: Config = Config {
        version: 0,
        allow_v4_n: 0,
        allow_v6_n: 0,
        pfx_v4_n: 0,
        pfx_v6_n: 0,
        _pad: 0,
        allow_v4: [LenSlotV4 {
            len: LEN_UNUSED,
            mask: [0; 4],
            mark: [0; 4],
        }; LEN_SLOTS_V4],
        pfx_v4: [LenSlotV4 {
            len: LEN_UNUSED,
            mask: [0; 4],
            mark: [0; 4],
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
            shape: Shape {
                buckets: 0,
                mask: 0,
            },
            entries: 0,
            count: 0,
            next: 0,
            _pad: 0,
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
/// the slot masks and the hash use, on both sides.
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
    // SAFETY: all of these are repr(C), made only of integers, with no
    // implicit padding (the size asserts below check it), so every bit
    // pattern is a value.
    unsafe impl aya::Pod for super::Bucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanEntryV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanEntryP6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowEntryV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowEntryV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortList {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PfxKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PfxKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::JailName {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Stats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TableGeom {}
}

// Layout is part of the contract with pinned maps made by an older agent.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Bucket>() == 64);
    assert!(size_of::<BanEntry>() == 16);
    assert!(size_of::<BanEntryV6>() == 32);
    assert!(size_of::<BanEntryP6>() == 40);
    assert!(size_of::<AllowEntryV4>() == 16);
    assert!(size_of::<AllowEntryV6>() == 24);
    assert!(size_of::<BanMeta>() == 16);
    assert!(size_of::<PortList>() == 20);
    assert!(size_of::<PfxKeyV4>() == 8);
    assert!(size_of::<PfxKeyV6>() == 20);
    assert!(size_of::<LenSlotV4>() == 12);
    assert!(size_of::<LenSlotV6>() == 24);
    assert!(size_of::<Stats>() == 96);
    assert!(size_of::<TableGeom>() == 32);
    assert!(offset_of!(TableGeom, shape) == 8);
    assert!(offset_of!(Config, allow_v4) == 24);
    assert!(offset_of!(Config, allow_v6) % 8 == 0);
    assert!(offset_of!(Config, tables) % 8 == 0);
    assert!(size_of::<Config>() == offset_of!(Config, tables) + TABLES * 32);
    assert!(offset_of!(BanEntryV6, expiry_ports) == 16);
    assert!(offset_of!(BanEntryP6, expiry_ports) == 24);
};
