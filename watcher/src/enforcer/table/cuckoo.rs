//! Bucketized cuckoo hashing over any store of buckets: the algorithm alone,
//! free of maps, tested below against a plain `HashMap` model.
//!
//! A key lives in one of two buckets of seven slots (its [`Place`]), in its
//! first one whenever there is room. The XDP program reads the first bucket
//! and reads the second only while the first bucket's spill counter for the
//! key's nibble is non-zero ([`reader_find`]). So a clean source costs one
//! cache line, and a banned one its bucket plus its entry.
//!
//! The XDP program reads without any lock while one writer (under the pin
//! directory's flock) changes slots, so every change is a sequence of single
//! 8-byte stores that keeps every other key findable by [`reader_find`] at
//! every moment:
//!
//! - a key enters its second bucket only after its spill counter went up,
//!   and the counter goes down only after the key left that bucket;
//! - when both buckets are full, a breadth-first search finds a chain of
//!   residents that can each move to their other bucket, ending at a free
//!   slot; the chain is executed from its end, each resident copied to its
//!   new slot before its old slot is overwritten by the next one, so it is
//!   in one place or the other (briefly both) all the time;
//! - a removal clears the slot, then lowers the spill counter.
//!
//! Duplicates (the same slot word in two places) are harmless to readers;
//! [`find`] and [`remove`] look at both buckets whatever the counters say.
use std::{collections::HashMap, fmt::Debug, hash::Hash};

use fail2xdp_common::{BUCKET_SLOTS, Bucket, Place, spill_count};

/// Where a key may live, and the tag its slot carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub place: Place,
    pub tag: u32,
}

/// The buckets of one table and how its keys map to them.
pub trait Store {
    type Key: Copy + Eq + Hash + Debug;
    /// The key's buckets, nibble and tag.
    fn locate(&self, key: &Self::Key) -> Loc;
    /// The key a used slot word stands for (from the tag itself, or from
    /// the entry its id names); `None` if the entry does not say.
    fn key_at(&self, word: u64) -> Option<Self::Key>;
    fn bucket(&self, b: u32) -> Bucket;
    /// One atomic 8-byte store of slot `i` of bucket `b`.
    fn set_slot(&mut self, b: u32, i: usize, word: u64);
    /// One atomic 8-byte store of bucket `b`'s spill counters.
    fn set_spill(&mut self, b: u32, spill: u64);
}

/// The entry id in a slot word; 0 for an empty slot.
pub fn id_of(word: u64) -> u32 {
    (word >> 32) as u32
}

pub fn tag_of(word: u64) -> u32 {
    word as u32
}

/// Where a key was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub bucket: u32,
    pub slot: usize,
    pub id: u32,
}

fn matches<S: Store>(s: &S, word: u64, loc: &Loc, key: &S::Key) -> bool {
    id_of(word) != 0 && tag_of(word) == loc.tag && s.key_at(word).as_ref() == Some(key)
}

/// The key's slot, looking at both buckets whatever the spill counters say.
pub fn find<S: Store>(s: &S, key: &S::Key) -> Option<Found> {
    let loc = s.locate(key);
    for b in [loc.place.b1, loc.place.b2] {
        let bucket = s.bucket(b);
        for (i, &w) in bucket.slots.iter().enumerate() {
            if matches(s, w, &loc, key) {
                return Some(Found {
                    bucket: b,
                    slot: i,
                    id: id_of(w),
                });
            }
        }
    }
    None
}

/// What the XDP program does: the key's entry id if it finds one, and how
/// many buckets (cache lines) it read.
pub fn reader_find<S: Store>(s: &S, key: &S::Key) -> (Option<u32>, u32) {
    let loc = s.locate(key);
    let first = s.bucket(loc.place.b1);
    if let Some(&w) = first.slots.iter().find(|&&w| matches(s, w, &loc, key)) {
        return (Some(id_of(w)), 1);
    }
    if spill_count(first.spill, loc.place.nib) == 0 {
        return (None, 1);
    }
    let second = s.bucket(loc.place.b2);
    let id = second
        .slots
        .iter()
        .find(|&&w| matches(s, w, &loc, key))
        .map(|&w| id_of(w));
    (id, 2)
}

fn free_slot(b: &Bucket) -> Option<usize> {
    b.slots.iter().position(|&w| id_of(w) == 0)
}

/// Adds `delta` (+1 or -1) to nibble `nib` of bucket `b`'s spill counters.
/// A counter at 15 stays there (it may then overstate, which only costs a
/// reader a second bucket; [`spill_counts`] recomputes them exactly).
fn bump_spill<S: Store>(s: &mut S, b: u32, nib: u32, up: bool) {
    let spill = s.bucket(b).spill;
    let c = spill_count(spill, nib);
    let c2 = match (up, c) {
        (_, 15) => return,
        (true, c) => c + 1,
        (false, 0) => return,
        (false, c) => c - 1,
    };
    let shift = (nib & 15) * 4;
    s.set_spill(b, (spill & !(15 << shift)) | (c2 << shift));
}

/// No chain of moves within reach frees a slot in either of the key's
/// buckets: only possible far beyond the tables' designed load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// Buckets the search for a chain of moves visits at most.
const SEARCH_BUCKETS: usize = 2048;

/// One step of a chain: the resident in `slot` of `bucket` moves to
/// `to` (its other bucket).
#[derive(Clone, Copy, Debug)]
struct Hop {
    bucket: u32,
    slot: usize,
    to: u32,
    /// Index of the hop that leads into `bucket`; `None` for the key's own.
    parent: Option<usize>,
}

/// Inserts `key` (not present) with entry `id` (already written).
pub fn insert<S: Store>(s: &mut S, key: &S::Key, id: u32) -> Result<(), NoRoom> {
    let loc = s.locate(key);
    let word = fail2xdp_common::slot_word(loc.tag, id);
    let Place { b1, b2, nib } = loc.place;
    if let Some(i) = free_slot(&s.bucket(b1)) {
        s.set_slot(b1, i, word);
        return Ok(());
    }
    if let Some(i) = free_slot(&s.bucket(b2)) {
        bump_spill(s, b1, nib, true);
        s.set_slot(b2, i, word);
        return Ok(());
    }
    let (chain, free) = search(s, b1, b2).ok_or(NoRoom)?;
    // Every resident's word and place, read before anything moves.
    let mut moves = Vec::with_capacity(chain.len());
    for h in &chain {
        let w = s.bucket(h.bucket).slots[h.slot];
        let m = s.key_at(w).ok_or(NoRoom)?;
        moves.push((*h, w, s.locate(&m).place));
    }
    // Executed from the free end: each resident reaches its new slot before
    // the slot it leaves is overwritten by the next one. `left` is the
    // resident whose old copy the next write overwrites, if that copy was
    // in its second bucket: its counter goes down once the copy is gone.
    let mut into = free;
    let mut left: Option<Place> = None;
    for (h, w, p) in moves.iter().rev() {
        if h.to == p.b2 {
            bump_spill(s, p.b1, p.nib, true);
        }
        s.set_slot(h.to, into, *w);
        if let Some(q) = left.take() {
            bump_spill(s, q.b1, q.nib, false);
        }
        if h.bucket == p.b2 {
            left = Some(*p);
        }
        into = h.slot;
    }
    let first = chain[0];
    if first.bucket == b2 {
        bump_spill(s, b1, nib, true);
    }
    s.set_slot(first.bucket, first.slot, word);
    if let Some(q) = left {
        bump_spill(s, q.b1, q.nib, false);
    }
    Ok(())
}

/// Breadth-first search from the key's two (full) buckets for a bucket
/// with a free slot; returns the chain of hops from the key's bucket to it
/// and the free slot.
fn search<S: Store>(s: &S, b1: u32, b2: u32) -> Option<(Vec<Hop>, usize)> {
    let mut hops: Vec<Hop> = Vec::new();
    let mut seen: HashMap<u32, ()> = HashMap::from([(b1, ()), (b2, ())]);
    // Frontier: (bucket, hop that leads into it).
    let mut frontier: Vec<(u32, Option<usize>)> = vec![(b1, None), (b2, None)];
    while !frontier.is_empty() && seen.len() < SEARCH_BUCKETS {
        let mut next = Vec::new();
        for (b, parent) in frontier {
            let bucket = s.bucket(b);
            for (i, &w) in bucket.slots.iter().enumerate() {
                let Some(m) = s.key_at(w) else { continue };
                let p = s.locate(&m).place;
                let to = if p.b1 == b { p.b2 } else { p.b1 };
                if seen.insert(to, ()).is_some() {
                    continue;
                }
                hops.push(Hop {
                    bucket: b,
                    slot: i,
                    to,
                    parent,
                });
                let h = hops.len() - 1;
                if let Some(free) = free_slot(&s.bucket(to)) {
                    let mut chain = vec![hops[h]];
                    let mut at = hops[h].parent;
                    while let Some(j) = at {
                        chain.push(hops[j]);
                        at = hops[j].parent;
                    }
                    chain.reverse();
                    return Some((chain, free));
                }
                next.push((to, Some(h)));
            }
        }
        frontier = next;
    }
    None
}

/// Removes every copy of `key`; returns its entry id if it was there.
pub fn remove<S: Store>(s: &mut S, key: &S::Key) -> Option<u32> {
    let loc = s.locate(key);
    let mut id = None;
    for b in [loc.place.b1, loc.place.b2] {
        for i in 0..BUCKET_SLOTS {
            let w = s.bucket(b).slots[i];
            if matches(s, w, &loc, key) {
                id = Some(id_of(w));
                s.set_slot(b, i, 0);
                if b == loc.place.b2 {
                    bump_spill(s, loc.place.b1, loc.place.nib, false);
                }
            }
        }
    }
    id
}

/// The exact spill counters of every bucket for the keys stored now
/// (saturated at 15), for repairs.
pub fn spill_counts<S: Store>(s: &S, buckets: u32) -> Vec<u64> {
    let mut counts = vec![0u64; buckets as usize];
    for b in 0..buckets {
        for &w in &s.bucket(b).slots {
            if id_of(w) == 0 {
                continue;
            }
            let Some(k) = s.key_at(w) else { continue };
            let p = s.locate(&k).place;
            if p.b2 == b && p.b1 != b {
                let shift = (p.nib & 15) * 4;
                let c = spill_count(counts[p.b1 as usize], p.nib);
                if c < 15 {
                    counts[p.b1 as usize] += 1 << shift;
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use fail2xdp_common::{mix, place};

    use super::*;
    use crate::testrng;

    /// A table of u32 keys whose placement the test controls: `places`
    /// pins chosen keys to chosen buckets (adversarial collisions), every
    /// other key is hashed. The tag is the key, as in BANS_V4.
    #[derive(Clone)]
    struct Model {
        buckets: Vec<Bucket>,
        places: HashMap<u32, Place>,
        seed: u64,
        /// Keys that must stay visible to `reader_find` after every write.
        must: HashSet<u32>,
        writes: usize,
    }

    impl Model {
        fn new(n: u32, seed: u64) -> Self {
            Model {
                buckets: vec![Bucket::default(); n as usize],
                places: HashMap::new(),
                seed,
                must: HashSet::new(),
                writes: 0,
            }
        }

        fn check_visible(&self) {
            for k in &self.must {
                let (id, _) = reader_find(self, k);
                assert_eq!(
                    id,
                    Some(*k),
                    "key {k} not visible after write {}",
                    self.writes
                );
            }
        }
    }

    impl Store for Model {
        type Key = u32;
        fn locate(&self, key: &u32) -> Loc {
            let place =
                self.places.get(key).copied().unwrap_or_else(|| {
                    place(mix(*key as u64 ^ self.seed), self.buckets.len() as u32)
                });
            Loc { place, tag: *key }
        }
        fn key_at(&self, word: u64) -> Option<u32> {
            (id_of(word) != 0).then_some(tag_of(word))
        }
        fn bucket(&self, b: u32) -> Bucket {
            self.buckets[b as usize]
        }
        fn set_slot(&mut self, b: u32, i: usize, word: u64) {
            self.buckets[b as usize].slots[i] = word;
            self.writes += 1;
            self.check_visible();
        }
        fn set_spill(&mut self, b: u32, spill: u64) {
            self.buckets[b as usize].spill = spill;
            self.writes += 1;
            self.check_visible();
        }
    }

    /// Every key once, each in one of its buckets, and spill counters that
    /// are never below the truth.
    fn check_table(t: &Model, present: &HashSet<u32>) {
        let mut seen = HashSet::new();
        for (b, bucket) in t.buckets.iter().enumerate() {
            for &w in &bucket.slots {
                if id_of(w) == 0 {
                    continue;
                }
                let k = tag_of(w);
                assert!(seen.insert(k), "key {k} twice");
                let p = t.locate(&k).place;
                assert!(
                    p.b1 == b as u32 || p.b2 == b as u32,
                    "key {k} in bucket {b}"
                );
            }
        }
        assert_eq!(&seen, present);
        let exact = spill_counts(t, t.buckets.len() as u32);
        for (b, bucket) in t.buckets.iter().enumerate() {
            for n in 0..16 {
                let have = spill_count(bucket.spill, n);
                let want = spill_count(exact[b], n);
                assert!(
                    have >= want && (have == want || have == 15),
                    "bucket {b} nibble {n}: {have} for {want}"
                );
            }
        }
    }

    /// Random inserts and removes against a set model; the store checks
    /// after every single write that every other key stays visible.
    fn run_model(
        seed: u64,
        buckets: u32,
        keyspace: u32,
        ops: usize,
        pin: &dyn Fn(u32) -> Option<Place>,
    ) -> usize {
        let mut t = Model::new(buckets, seed);
        for k in 0..keyspace {
            if let Some(p) = pin(k) {
                t.places.insert(k + 1, p);
            }
        }
        let mut present: HashSet<u32> = HashSet::new();
        let mut next = testrng::below(seed);
        let cap = buckets as usize * BUCKET_SLOTS;
        let mut no_room = 0;
        for step in 0..ops {
            let k = next(keyspace as u64) as u32 + 1;
            let remove_it = next(3) == 0;
            t.must = present.iter().copied().filter(|&x| x != k).collect();
            if present.contains(&k) {
                if remove_it {
                    assert_eq!(remove(&mut t, &k), Some(k), "step {step}");
                    present.remove(&k);
                } else {
                    assert_eq!(find(&t, &k).map(|f| f.id), Some(k));
                }
            } else if remove_it {
                assert_eq!(remove(&mut t, &k), None, "step {step}");
            } else if present.len() < cap {
                match insert(&mut t, &k, k) {
                    Ok(()) => {
                        present.insert(k);
                    }
                    Err(NoRoom) => no_room += 1,
                }
            }
            t.must.clear();
            check_table(&t, &present);
            for p in &present {
                assert_eq!(reader_find(&t, p).0, Some(*p), "step {step}");
            }
        }
        no_room
    }

    #[test]
    fn model_random_keys_at_high_load() {
        // 16 buckets of 7 for up to 100 keys: loads past 85 %, long chains.
        for seed in [1, 7, 99, 12345] {
            let refused = run_model(seed, 16, 100, 4000, &|_| None);
            // Only when truly crowded (past 95 % of the slots).
            assert!(refused * 50 <= 4000, "{refused} refusals");
        }
    }

    #[test]
    fn model_larger_table() {
        assert_eq!(run_model(42, 96, 600, 3000, &|_| None), 0);
    }

    #[test]
    fn model_adversarial_pairs() {
        // Keys crowded onto a few bucket pairs: chains must move residents
        // of other pairs, and some inserts must fail cleanly.
        let mut refused = 0;
        for seed in [3, 11] {
            refused += run_model(seed, 32, 120, 3000, &|k| {
                (k % 3 != 0).then(|| Place {
                    b1: k % 4,
                    b2: 4 + k % 5,
                    nib: k % 16,
                })
            });
        }
        assert!(refused > 0, "the crowded pairs never filled up");
    }

    #[test]
    fn reader_reads_one_bucket_unless_the_counter_says() {
        let mut t = Model::new(64, 5);
        // Eight keys with one first bucket: the eighth goes to its second.
        let pinned = |k: u32| Place {
            b1: 10,
            b2: 20 + k,
            nib: k,
        };
        for k in 1..=8 {
            t.places.insert(k, pinned(k));
            insert(&mut t, &k, k).unwrap();
        }
        assert_eq!(reader_find(&t, &1), (Some(1), 1));
        assert_eq!(reader_find(&t, &8), (Some(8), 2));
        assert_eq!(spill_count(t.bucket(10).spill, 8), 1);
        // A clean key homed at 10 with another nibble reads one bucket.
        t.places.insert(
            100,
            Place {
                b1: 10,
                b2: 40,
                nib: 3,
            },
        );
        assert_eq!(reader_find(&t, &100), (None, 1));
        // Removing the spilled key lowers the counter again.
        assert_eq!(remove(&mut t, &8), Some(8));
        assert_eq!(t.bucket(10).spill, 0);
        assert_eq!(reader_find(&t, &8), (None, 1));
    }

    #[test]
    fn chain_moves_residents_to_their_other_buckets() {
        let mut t = Model::new(8, 9);
        // Fill buckets 0 and 1 with keys whose other buckets are 2..=5.
        for k in 1..=14u32 {
            t.places.insert(
                k,
                Place {
                    b1: (k - 1) / 7,
                    b2: 2 + k % 4,
                    nib: k % 16,
                },
            );
            insert(&mut t, &k, k).unwrap();
        }
        // A key with buckets 0 and 1: both full, a resident must move.
        t.places.insert(
            99,
            Place {
                b1: 0,
                b2: 1,
                nib: 0,
            },
        );
        t.must = (1..=14).collect();
        insert(&mut t, &99, 99).unwrap();
        t.must.clear();
        let present: HashSet<u32> = (1..=14).chain([99]).collect();
        check_table(&t, &present);
        assert_eq!(reader_find(&t, &99).0, Some(99));
    }

    #[test]
    fn saturated_counter_stays_and_repair_recomputes() {
        let mut t = Model::new(40, 1);
        // 7 keys fill bucket 0; 16 more with the same nibble spill.
        for k in 1..=23u32 {
            t.places.insert(
                k,
                Place {
                    b1: 0,
                    b2: 1 + k,
                    nib: 4,
                },
            );
            insert(&mut t, &k, k).unwrap();
        }
        assert_eq!(spill_count(t.bucket(0).spill, 4), 15);
        for k in 8..=23u32 {
            remove(&mut t, &k).unwrap();
        }
        // Overstated but safe; the exact count is 0.
        assert_eq!(spill_count(t.bucket(0).spill, 4), 15);
        assert_eq!(spill_counts(&t, 40)[0], 0);
    }
}
