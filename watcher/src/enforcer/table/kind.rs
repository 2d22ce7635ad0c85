//! The six tables' keys: how each hashes and tags exactly as the XDP
//! program does (ebpf/src/verdict.rs), and what its entries hold.
use std::{fmt::Debug, hash::Hash};

use aya::Pod;
use fail2xdp_common::{
    ALLOW_USED, AllowEntryV4, AllowEntryV6, BanEntry, BanEntryP6, BanEntryV6, EXPIRY_MIN, PfxKeyV4,
    PfxKeyV6, Shape, TBL_ALLOW_V4, TBL_ALLOW_V6, TBL_BANS_V4, TBL_BANS_V6, TBL_PFX_V4, TBL_PFX_V6,
    addr_words, hash_a4, hash_p6, hash_tag, hash_v4, hash_v6, mark_v4, place,
};

use super::cuckoo::Loc;
use crate::enforcer::maps::MapId;

/// One table: its key, entry and maps.
pub trait Kind: 'static {
    type Key: Copy + Eq + Hash + Debug + Send + Sync;
    /// What the XDP program reads at an entry id.
    type Entry: Pod + Copy + Default + Debug;
    /// Index in `Config::tables`.
    const TBL: usize;
    const BUCKETS: MapId;
    const ENTRIES: MapId;
    /// Index of the entry word that says whether the entry is in use:
    /// written last when an entry is filled, first when it is freed.
    const MARK_WORD: usize;

    fn locate(key: &Self::Key, seed: u64, shape: Shape) -> Loc;
    /// The key a tag stands for, where tags are exact.
    fn key_of_tag(tag: u32) -> Option<Self::Key>;
    /// The key an entry holds, where tags are hashes.
    fn key_of_entry(e: &Self::Entry) -> Self::Key;
    fn used(e: &Self::Entry) -> bool;
    /// `used` from the entry's MARK_WORD alone (scans read one word).
    fn used_mark(word: u64) -> bool;
}

/// A ban table: entries carry expiry, port set and drop counter.
pub trait BanKind: Kind {
    const META: MapId;
    /// Index of `expiry_ports` and `drops` among the entry's words.
    const EXPIRY_WORD: usize;
    const DROPS_WORD: usize;
    fn entry(key: &Self::Key, expiry_ports: u64) -> Self::Entry;
    fn expiry_ports(e: &Self::Entry) -> u64;
    fn drops(e: &Self::Entry) -> u64;
}

/// An allowlist table: entries carry their key and flags.
pub trait AllowKind: Kind {
    fn entry(key: &Self::Key, flags: u32) -> Self::Entry;
    fn flags(e: &Self::Entry) -> u32;
}

pub struct V4;
pub struct V6;
pub struct P4;
pub struct P6;
pub struct A4;
pub struct A6;

fn ne(a: [u8; 4]) -> u32 {
    u32::from_ne_bytes(a)
}

/// Exact tag of a /0../31 prefix (see `fail2xdp_common::tag_p4`).
pub fn p4_tag(k: &PfxKeyV4) -> u32 {
    ne(k.addr) | ne(mark_v4(k.len))
}

/// The prefix a PFX_V4 tag stands for: the lowest set bit (in network
/// order) is the mark just after the prefix.
pub fn p4_of_tag(tag: u32) -> Option<PfxKeyV4> {
    let be = u32::from_be_bytes(tag.to_ne_bytes());
    if be == 0 {
        return None;
    }
    let p = be.trailing_zeros();
    Some(PfxKeyV4 {
        len: 31 - p,
        addr: (be & !(1 << p)).to_be_bytes(),
    })
}

impl Kind for V4 {
    type Key = [u8; 4];
    type Entry = BanEntry;
    const TBL: usize = TBL_BANS_V4;
    const BUCKETS: MapId = MapId::BansV4;
    const ENTRIES: MapId = MapId::BansV4Ent;
    const MARK_WORD: usize = 0;
    fn locate(k: &[u8; 4], seed: u64, shape: Shape) -> Loc {
        Loc {
            place: place(hash_v4(ne(*k), seed), shape),
            tag: ne(*k),
        }
    }
    fn key_of_tag(tag: u32) -> Option<[u8; 4]> {
        Some(tag.to_ne_bytes())
    }
    fn key_of_entry(_: &BanEntry) -> [u8; 4] {
        [0; 4]
    }
    fn used(e: &BanEntry) -> bool {
        e.expiry_ports >= EXPIRY_MIN
    }
    fn used_mark(w: u64) -> bool {
        w >= EXPIRY_MIN
    }
}

impl BanKind for V4 {
    const META: MapId = MapId::BansV4Meta;
    const EXPIRY_WORD: usize = 0;
    const DROPS_WORD: usize = 1;
    fn entry(_: &[u8; 4], expiry_ports: u64) -> BanEntry {
        BanEntry {
            expiry_ports,
            drops: 0,
        }
    }
    fn expiry_ports(e: &BanEntry) -> u64 {
        e.expiry_ports
    }
    fn drops(e: &BanEntry) -> u64 {
        e.drops
    }
}

impl Kind for V6 {
    type Key = [u8; 16];
    type Entry = BanEntryV6;
    const TBL: usize = TBL_BANS_V6;
    const BUCKETS: MapId = MapId::BansV6;
    const ENTRIES: MapId = MapId::BansV6Ent;
    const MARK_WORD: usize = 2;
    fn locate(k: &[u8; 16], seed: u64, shape: Shape) -> Loc {
        let (hi, lo) = addr_words(k);
        let h = hash_v6(hi, lo, seed);
        Loc {
            place: place(h, shape),
            tag: hash_tag(h),
        }
    }
    fn key_of_tag(_: u32) -> Option<[u8; 16]> {
        None
    }
    fn key_of_entry(e: &BanEntryV6) -> [u8; 16] {
        e.addr
    }
    fn used(e: &BanEntryV6) -> bool {
        e.expiry_ports >= EXPIRY_MIN
    }
    fn used_mark(w: u64) -> bool {
        w >= EXPIRY_MIN
    }
}

impl BanKind for V6 {
    const META: MapId = MapId::BansV6Meta;
    const EXPIRY_WORD: usize = 2;
    const DROPS_WORD: usize = 3;
    fn entry(k: &[u8; 16], expiry_ports: u64) -> BanEntryV6 {
        BanEntryV6 {
            addr: *k,
            expiry_ports,
            drops: 0,
        }
    }
    fn expiry_ports(e: &BanEntryV6) -> u64 {
        e.expiry_ports
    }
    fn drops(e: &BanEntryV6) -> u64 {
        e.drops
    }
}

impl Kind for P4 {
    type Key = PfxKeyV4;
    type Entry = BanEntry;
    const TBL: usize = TBL_PFX_V4;
    const BUCKETS: MapId = MapId::PfxV4;
    const ENTRIES: MapId = MapId::PfxV4Ent;
    const MARK_WORD: usize = 0;
    fn locate(k: &PfxKeyV4, seed: u64, shape: Shape) -> Loc {
        let tag = p4_tag(k);
        Loc {
            place: place(hash_v4(tag, seed), shape),
            tag,
        }
    }
    fn key_of_tag(tag: u32) -> Option<PfxKeyV4> {
        p4_of_tag(tag)
    }
    fn key_of_entry(_: &BanEntry) -> PfxKeyV4 {
        PfxKeyV4::default()
    }
    fn used(e: &BanEntry) -> bool {
        e.expiry_ports >= EXPIRY_MIN
    }
    fn used_mark(w: u64) -> bool {
        w >= EXPIRY_MIN
    }
}

impl BanKind for P4 {
    const META: MapId = MapId::PfxV4Meta;
    const EXPIRY_WORD: usize = 0;
    const DROPS_WORD: usize = 1;
    fn entry(_: &PfxKeyV4, expiry_ports: u64) -> BanEntry {
        BanEntry {
            expiry_ports,
            drops: 0,
        }
    }
    fn expiry_ports(e: &BanEntry) -> u64 {
        e.expiry_ports
    }
    fn drops(e: &BanEntry) -> u64 {
        e.drops
    }
}

impl Kind for P6 {
    type Key = PfxKeyV6;
    type Entry = BanEntryP6;
    const TBL: usize = TBL_PFX_V6;
    const BUCKETS: MapId = MapId::PfxV6;
    const ENTRIES: MapId = MapId::PfxV6Ent;
    const MARK_WORD: usize = 3;
    fn locate(k: &PfxKeyV6, seed: u64, shape: Shape) -> Loc {
        let (hi, lo) = addr_words(&k.addr);
        let h = hash_p6(k.len, hi, lo, seed);
        Loc {
            place: place(h, shape),
            tag: hash_tag(h),
        }
    }
    fn key_of_tag(_: u32) -> Option<PfxKeyV6> {
        None
    }
    fn key_of_entry(e: &BanEntryP6) -> PfxKeyV6 {
        PfxKeyV6 {
            len: e.len,
            addr: e.addr,
        }
    }
    fn used(e: &BanEntryP6) -> bool {
        e.expiry_ports >= EXPIRY_MIN
    }
    fn used_mark(w: u64) -> bool {
        w >= EXPIRY_MIN
    }
}

impl BanKind for P6 {
    const META: MapId = MapId::PfxV6Meta;
    const EXPIRY_WORD: usize = 3;
    const DROPS_WORD: usize = 4;
    fn entry(k: &PfxKeyV6, expiry_ports: u64) -> BanEntryP6 {
        BanEntryP6 {
            addr: k.addr,
            len: k.len,
            _pad: 0,
            expiry_ports,
            drops: 0,
        }
    }
    fn expiry_ports(e: &BanEntryP6) -> u64 {
        e.expiry_ports
    }
    fn drops(e: &BanEntryP6) -> u64 {
        e.drops
    }
}

impl Kind for A4 {
    type Key = PfxKeyV4;
    type Entry = AllowEntryV4;
    const TBL: usize = TBL_ALLOW_V4;
    const BUCKETS: MapId = MapId::AllowV4;
    const ENTRIES: MapId = MapId::AllowV4Ent;
    const MARK_WORD: usize = 1;
    fn locate(k: &PfxKeyV4, seed: u64, shape: Shape) -> Loc {
        let h = hash_a4(k.len, ne(k.addr), seed);
        Loc {
            place: place(h, shape),
            tag: hash_tag(h),
        }
    }
    fn key_of_tag(_: u32) -> Option<PfxKeyV4> {
        None
    }
    fn key_of_entry(e: &AllowEntryV4) -> PfxKeyV4 {
        e.key
    }
    fn used(e: &AllowEntryV4) -> bool {
        e.flags & ALLOW_USED != 0
    }
    fn used_mark(w: u64) -> bool {
        // flags in the low half of word 1 (little-endian).
        (w as u32) & ALLOW_USED != 0
    }
}

impl AllowKind for A4 {
    fn entry(k: &PfxKeyV4, flags: u32) -> AllowEntryV4 {
        AllowEntryV4 {
            key: *k,
            flags: flags | ALLOW_USED,
            _pad: 0,
        }
    }
    fn flags(e: &AllowEntryV4) -> u32 {
        e.flags
    }
}

impl Kind for A6 {
    type Key = PfxKeyV6;
    type Entry = AllowEntryV6;
    const TBL: usize = TBL_ALLOW_V6;
    const BUCKETS: MapId = MapId::AllowV6;
    const ENTRIES: MapId = MapId::AllowV6Ent;
    const MARK_WORD: usize = 2;
    fn locate(k: &PfxKeyV6, seed: u64, shape: Shape) -> Loc {
        let (hi, lo) = addr_words(&k.addr);
        let h = hash_p6(k.len, hi, lo, seed);
        Loc {
            place: place(h, shape),
            tag: hash_tag(h),
        }
    }
    fn key_of_tag(_: u32) -> Option<PfxKeyV6> {
        None
    }
    fn key_of_entry(e: &AllowEntryV6) -> PfxKeyV6 {
        e.key
    }
    fn used(e: &AllowEntryV6) -> bool {
        e.flags & ALLOW_USED != 0
    }
    fn used_mark(w: u64) -> bool {
        // flags in the high half of word 2 (little-endian).
        ((w >> 32) as u32) & ALLOW_USED != 0
    }
}

impl AllowKind for A6 {
    fn entry(k: &PfxKeyV6, flags: u32) -> AllowEntryV6 {
        AllowEntryV6 {
            key: *k,
            flags: flags | ALLOW_USED,
        }
    }
    fn flags(e: &AllowEntryV6) -> u32 {
        e.flags
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use fail2xdp_common::mask_v4;

    use super::*;

    #[test]
    fn prefix_tags_are_exact_and_invertible() {
        let mut seen = std::collections::HashSet::new();
        for len in 0..32 {
            for a in [0u32, 0xc633_6400, 0xffff_ffff, 0x0a00_0001] {
                let m = u32::from_be_bytes(mask_v4(len));
                let k = PfxKeyV4 {
                    len,
                    addr: (a & m).to_be_bytes(),
                };
                let t = p4_tag(&k);
                assert_eq!(p4_of_tag(t), Some(k));
                seen.insert(t);
            }
        }
        // Distinct (length, prefix) pairs have distinct tags.
        let distinct: std::collections::HashSet<_> = (0..32)
            .flat_map(|len| {
                [0u32, 0xc633_6400, 0xffff_ffff, 0x0a00_0001]
                    .map(move |a| (len, a & u32::from_be_bytes(mask_v4(len))))
            })
            .collect();
        assert_eq!(seen.len(), distinct.len());
    }

    #[test]
    fn keys_sharing_a_bucket_get_unrelated_nibbles() {
        // The spill counters only spare clean lookups a second line if the
        // keys of one first bucket spread over the 16 nibbles.
        let buckets = Shape::of(4096);
        let mut by_bucket: std::collections::HashMap<u32, Vec<u32>> = Default::default();
        for a in 0..200_000u32 {
            let p = V4::locate(&a.to_be_bytes(), 0x5eed, buckets).place;
            by_bucket.entry(p.b1).or_default().push(p.nib);
        }
        let (mut spread, mut n) = (0usize, 0usize);
        for nibs in by_bucket.values().filter(|v| v.len() >= 16) {
            let distinct: std::collections::HashSet<_> = nibs.iter().collect();
            spread += distinct.len();
            n += 1;
        }
        // 16+ random nibbles cover about 10 of 16 values on average.
        assert!(n > 1000 && spread / n >= 8, "{spread} / {n}");
    }

    #[test]
    fn word_indexes_match_the_layouts() {
        // The words the map layer writes alone must be the fields named.
        assert_eq!(offset_of!(BanEntry, expiry_ports) / 8, V4::EXPIRY_WORD);
        assert_eq!(offset_of!(BanEntry, drops) / 8, V4::DROPS_WORD);
        assert_eq!(offset_of!(BanEntryV6, expiry_ports) / 8, V6::EXPIRY_WORD);
        assert_eq!(offset_of!(BanEntryV6, drops) / 8, V6::DROPS_WORD);
        assert_eq!(offset_of!(BanEntryP6, expiry_ports) / 8, P6::EXPIRY_WORD);
        assert_eq!(offset_of!(BanEntryP6, drops) / 8, P6::DROPS_WORD);
        assert_eq!(offset_of!(AllowEntryV4, flags) / 8, A4::MARK_WORD);
        assert_eq!(offset_of!(AllowEntryV6, flags) / 8, A6::MARK_WORD);
        // used_mark agrees with used on the mark word alone.
        let a6 = A6::entry(&PfxKeyV6::default(), 0);
        let w = |e: &AllowEntryV6, i: usize| {
            // SAFETY: AllowEntryV6 is 24 bytes of plain integers.
            let b: [u64; 3] = unsafe { std::mem::transmute(*e) };
            b[i]
        };
        assert!(A6::used_mark(w(&a6, A6::MARK_WORD)));
        assert!(!A6::used_mark(w(&AllowEntryV6::default(), A6::MARK_WORD)));
        let a4 = A4::entry(&PfxKeyV4::default(), 0);
        // SAFETY: AllowEntryV4 is 16 bytes of plain integers.
        let b: [u64; 2] = unsafe { std::mem::transmute(a4) };
        assert!(A4::used_mark(b[A4::MARK_WORD]));
        assert_eq!(V4::MARK_WORD, V4::EXPIRY_WORD);
        assert_eq!(V6::MARK_WORD, V6::EXPIRY_WORD);
        assert_eq!(P4::MARK_WORD, P4::EXPIRY_WORD);
        assert_eq!(P6::MARK_WORD, P6::EXPIRY_WORD);
    }
}
