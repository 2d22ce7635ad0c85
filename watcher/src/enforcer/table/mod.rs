//! The ban and allowlist tables as they live in the pinned maps: the
//! bucket arrays and entry arrays mapped into memory, with entry ids
//! allocated from the entry array and the geometry kept in CONFIG. The
//! hashing algorithm itself is [`cuckoo`]; what each table's keys look like
//! is [`kind`].
//!
//! A [`Table`] serves one operation under the pin directory's flock: it
//! reads the geometry from CONFIG when opened and the caller writes the
//! updated geometry (count, allocation hint) back when done; a table that
//! has to grow for the keys an operation brings publishes its new shape
//! itself first ([`Table::reserve`]).
//!
//! Entries never move. A new key's entry is written completely before its
//! slot is published; a removed key's slot is cleared before its entry is
//! freed, and the operation that freed entries waits for an RCU grace
//! period before it releases the lock, so no XDP program still holding an
//! old slot reads an entry that was meanwhile given to another key.
pub mod cuckoo;
pub mod kind;

use std::marker::PhantomData;

use fail2xdp_common::{
    BUCKET_SLOTS, Bucket, Config, INITIAL_BUCKETS, MAX_LOAD_DEN, MAX_LOAD_NUM, Shape, TableGeom,
};

use self::cuckoo::{GrowError, Loc, NoRoom, Store, id_of, tag_of};
pub use self::kind::{A4, A6, AllowKind, BanKind, Kind, P4, P6, V4, V6};
use super::maps::{Mapping, Maps};

/// Buckets for `capacity` entries at the designed load (one key in two
/// slots at full capacity); at least 2. The bucket arrays have this many
/// elements; a table uses as many of them as its keys need.
pub fn buckets_for(capacity: u32) -> u32 {
    let slots = u64::from(capacity) * u64::from(MAX_LOAD_DEN) / u64::from(MAX_LOAD_NUM);
    slots
        .div_ceil(BUCKET_SLOTS as u64)
        .clamp(2, u64::from(u32::MAX)) as u32
}

/// Elements of an entry array for `capacity` entries (id 0 is never used).
pub fn entries_for(capacity: u32) -> u32 {
    capacity.max(1).saturating_add(1)
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {map} is full ({capacity} entries); raise its capacity")]
    Full { map: &'static str, capacity: u32 },
    #[error(
        "table {map}: no room in either bucket of a key even after moving others (far beyond the designed load)"
    )]
    NoRoom { map: &'static str },
    #[error("table {0} is not set up (its geometry in CONFIG does not match the arrays)")]
    Geometry(&'static str),
    #[error("no random seed for table {map}")]
    Seed {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The slots of one table, straight in the mapped arrays.
pub(crate) struct Mapped<'a, K> {
    buckets: &'a Mapping,
    entries: &'a Mapping,
    seed: u64,
    shape: Shape,
    _kind: PhantomData<K>,
}

impl<K: Kind> Store for Mapped<'_, K> {
    type Key = K::Key;

    fn locate_in(&self, key: &K::Key, shape: Shape) -> Loc {
        K::locate(key, self.seed, shape)
    }

    fn shape(&self) -> Shape {
        self.shape
    }

    fn set_shape(&mut self, shape: Shape) {
        self.shape = shape;
    }

    fn key_at(&self, word: u64) -> Option<K::Key> {
        let id = id_of(word);
        if id == 0 {
            return None;
        }
        if let Some(k) = K::key_of_tag(tag_of(word)) {
            return Some(k);
        }
        let e: K::Entry = self.entries.read(id);
        K::used(&e).then(|| K::key_of_entry(&e))
    }

    fn bucket(&self, b: u32) -> Bucket {
        self.buckets.read(b)
    }

    fn set_slot(&mut self, b: u32, i: usize, word: u64) {
        self.buckets.store(b, 1 + i, word);
    }

    fn set_spill(&mut self, b: u32, spill: u64) {
        self.buckets.store(b, 0, spill);
    }
}

/// One table of an instance, for the length of one locked operation.
pub(crate) struct Table<'a, K: Kind> {
    store: Mapped<'a, K>,
    /// The geometry, with `count` and `next` as this operation left them.
    pub geom: TableGeom,
    name: &'static str,
    /// Entries freed by this operation (a grace period is due).
    pub freed: usize,
}

/// A seed nobody outside can guess, from the kernel's random source.
pub fn random_seed() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(b))
}

impl<'a, K: Kind> Table<'a, K> {
    /// The table with the geometry `cfg` gives it; an error if that does
    /// not fit the arrays (not set up, or pins of another size).
    pub fn open(maps: &'a Maps, cfg: &Config) -> Result<Self, super::EnforcerError> {
        let g = cfg.tables[K::TBL];
        let t = Self::with_geom(maps, g)?;
        if !fits(g, t.store.buckets.elems(), t.store.entries.elems()) {
            return Err(TableError::Geometry(K::BUCKETS.name()).into());
        }
        Ok(t)
    }

    fn with_geom(maps: &'a Maps, g: TableGeom) -> Result<Self, super::EnforcerError> {
        Ok(Table {
            store: Mapped {
                buckets: maps.mem(K::BUCKETS)?,
                entries: maps.mem(K::ENTRIES)?,
                seed: g.seed,
                shape: g.shape,
                _kind: PhantomData,
            },
            geom: g,
            name: K::BUCKETS.name(),
            freed: 0,
        })
    }

    /// Grows the table if `more` keys beyond its count would take it past
    /// the designed load of the buckets it uses: to the next power of two
    /// of buckets that holds them (at most the whole array), see
    /// [`cuckoo::grow`]. `publish` writes
    /// the geometry given to it to CONFIG; the RCU grace period after it is
    /// waited for here. Returns whether the table grew.
    pub fn reserve(
        &mut self,
        more: usize,
        publish: impl FnOnce(TableGeom) -> Result<(), super::EnforcerError>,
    ) -> Result<bool, super::EnforcerError> {
        let now = self.geom.shape.buckets;
        let keys = (self.geom.count as usize).saturating_add(more);
        let need = buckets_for(keys.min(u32::MAX as usize) as u32);
        let max = self.store.buckets.elems();
        if need <= now || now >= max {
            return Ok(false);
        }
        // Powers of two while they fit: linear hashing's buckets then all
        // take the same share of keys (in between, the buckets not yet
        // split take twice the share of the others).
        let to = need.checked_next_power_of_two().map_or(max, |p| p.min(max));
        let to = Shape::of(to);
        let geom = TableGeom {
            shape: to,
            ..self.geom
        };
        let r = cuckoo::grow(&mut self.store, to, |_| {
            publish(geom)?;
            super::sys::rcu_grace_period();
            Ok(())
        });
        match r {
            Ok(()) => {
                self.geom.shape = to;
                Ok(true)
            }
            Err(GrowError::Publish(e)) => Err(e),
            Err(GrowError::NoRoom) => Err(TableError::NoRoom { map: self.name }.into()),
        }
    }

    /// Shrinks the table when its keys fill less than 1/16 of the slots of
    /// the buckets it uses (after many bans ended): to the power of two of
    /// buckets they fill a quarter of, at least [`INITIAL_BUCKETS`], so a
    /// table that held a flood's sources does not keep spreading clean
    /// lookups over all of its old buckets. `publish` as for
    /// [`Self::reserve`]. Returns whether it shrank (it does not where a
    /// bucket has no room for the keys folded into it).
    pub fn compact(
        &mut self,
        publish: impl FnOnce(TableGeom) -> Result<(), super::EnforcerError>,
    ) -> Result<bool, super::EnforcerError> {
        let now = self.geom.shape.buckets;
        let want = buckets_for(self.geom.count.saturating_mul(2))
            .next_power_of_two()
            .max(INITIAL_BUCKETS);
        if want.saturating_mul(4) > now {
            return Ok(false);
        }
        let to = Shape::of(want);
        let geom = TableGeom {
            shape: to,
            ..self.geom
        };
        let shrank = cuckoo::shrink(&mut self.store, to, |_| {
            publish(geom)?;
            super::sys::rcu_grace_period();
            Ok::<(), super::EnforcerError>(())
        })?;
        if shrank {
            self.geom.shape = to;
        }
        Ok(shrank)
    }

    /// Buckets the table uses now.
    pub fn shape(&self) -> Shape {
        self.geom.shape
    }

    pub fn entry(&self, id: u32) -> K::Entry {
        self.store.entries.read(id)
    }

    /// One atomic store of word `w` of entry `id` (an expiry change keeps
    /// the drop counter the XDP program is adding to).
    pub fn set_entry_word(&self, id: u32, w: usize, v: u64) {
        self.store.entries.store(id, w, v);
    }

    /// The key's entry id and entry.
    pub fn get(&self, key: &K::Key) -> Option<(u32, K::Entry)> {
        if self.geom.count == 0 {
            return None;
        }
        cuckoo::find(&self.store, key).map(|f| (f.id, self.entry(f.id)))
    }

    /// Starts loading `key`'s two buckets into the cache, so a batch can
    /// look a few keys ahead.
    pub fn prefetch(&self, key: &K::Key) {
        let p = self.store.locate(key).place;
        self.store.buckets.prefetch(p.b1);
        self.store.buckets.prefetch(p.b2);
    }

    /// Buckets (cache lines of table) the XDP program reads for `key`, and
    /// whether it finds it.
    pub fn reader_lines(&self, key: &K::Key) -> (bool, u32) {
        if self.geom.count == 0 {
            return (false, 0);
        }
        let (id, lines) = cuckoo::reader_find(&self.store, key);
        (id.is_some(), lines)
    }

    /// The lowest free entry id: every id below the hint is in use, so the
    /// search starts there (it wraps around to the start only if a crash
    /// left the hint too high).
    fn alloc(&mut self) -> Result<u32, TableError> {
        let full = TableError::Full {
            map: self.name,
            capacity: self.geom.entries,
        };
        if self.geom.count >= self.geom.entries {
            return Err(full);
        }
        let n = self.geom.entries;
        let start = self.geom.next.clamp(1, n);
        let free = |id: &u32| !K::used_mark(self.store.entries.load(*id, K::MARK_WORD));
        // Entries leaked by a crash between two writes make it look full;
        // the next `load` repairs them.
        let id = (start..=n).chain(1..start).find(free).ok_or(full)?;
        self.geom.next = id + 1;
        Ok(id)
    }

    /// Adds `key` (absent) with `entry`: the entry first, then its slot.
    /// Returns the entry id.
    pub fn insert(&mut self, key: &K::Key, entry: &K::Entry) -> Result<u32, TableError> {
        let id = self.alloc()?;
        self.store.entries.write(id, entry, K::MARK_WORD);
        if let Err(NoRoom) = cuckoo::insert(&mut self.store, key, id) {
            self.free(id);
            return Err(TableError::NoRoom { map: self.name });
        }
        self.geom.count += 1;
        Ok(id)
    }

    fn free(&mut self, id: u32) {
        // The mark word first: a late reader sees a free (expired) entry.
        self.store.entries.store(id, K::MARK_WORD, 0);
        self.store
            .entries
            .write(id, &K::Entry::default(), K::MARK_WORD);
        self.freed += 1;
        self.geom.next = self.geom.next.min(id);
    }

    /// Removes `key`: its slot, then its entry. Returns what it held.
    pub fn remove(&mut self, key: &K::Key) -> Option<(u32, K::Entry)> {
        if self.geom.count == 0 {
            return None;
        }
        let id = cuckoo::remove(&mut self.store, key)?;
        let e = self.entry(id);
        self.free(id);
        self.geom.count = self.geom.count.saturating_sub(1);
        Some((id, e))
    }

    /// Every key with its entry id and entry, bucket by bucket.
    pub fn for_each(&self, mut f: impl FnMut(K::Key, u32, K::Entry)) {
        if self.geom.count == 0 {
            return;
        }
        for b in 0..self.store.shape.buckets {
            let bucket = self.store.bucket(b);
            for &w in &bucket.slots {
                if let Some(k) = self.store.key_at(w) {
                    let id = id_of(w);
                    f(k, id, self.entry(id));
                }
            }
        }
    }

    /// Sets up a fresh table, or checks and repairs one after a crash
    /// between two writes: duplicate or misplaced slots, spill counters,
    /// entries no slot refers to, the count. Returns false if the pinned
    /// geometry does not fit the arrays.
    pub fn repair(maps: &'a Maps, cfg: &mut Config) -> Result<bool, super::EnforcerError> {
        let g = cfg.tables[K::TBL];
        // Sizes from the maps' info: a fresh table maps nothing yet.
        let buckets = maps.max_entries(K::BUCKETS);
        let entry_elems = maps.max_entries(K::ENTRIES);
        if g.shape.buckets == 0 {
            let seed = random_seed().map_err(|source| TableError::Seed {
                map: K::BUCKETS.name(),
                source,
            })?;
            cfg.tables[K::TBL] = TableGeom {
                seed,
                shape: Shape::of(INITIAL_BUCKETS.min(buckets)),
                entries: entry_elems.saturating_sub(1),
                count: 0,
                next: 1,
                _pad: 0,
            };
            // Fresh arrays are all zeros: nothing to repair.
            return Ok(true);
        } else if !fits(g, buckets, entry_elems) {
            return Ok(false);
        }
        let mut t = Self::with_geom(maps, cfg.tables[K::TBL])?;
        let mut seen_keys = std::collections::HashSet::new();
        let mut seen_ids = std::collections::HashSet::new();
        for b in 0..t.store.shape.buckets {
            for i in 0..BUCKET_SLOTS {
                let w = t.store.bucket(b).slots[i];
                if id_of(w) == 0 {
                    continue;
                }
                let ok = match t.store.key_at(w) {
                    Some(k) => {
                        let p = t.store.locate(&k).place;
                        (p.b1 == b || p.b2 == b)
                            && id_of(w) <= t.geom.entries
                            && seen_keys.insert(k)
                            && seen_ids.insert(id_of(w))
                    }
                    None => false,
                };
                if !ok {
                    log::warn!("{}: clearing a stale slot (bucket {b}, slot {i})", t.name);
                    t.store.set_slot(b, i, 0);
                }
            }
        }
        // Buckets beyond the shape are empty, unless a crash cut a growth
        // short after copying keys there (nobody reads them).
        for b in t.store.shape.buckets..buckets {
            if t.store.bucket(b) != Bucket::default() {
                t.store.buckets.write(b, &Bucket::default(), 0);
            }
        }
        let exact = cuckoo::spill_counts(&t.store);
        for (b, &want) in exact.iter().enumerate() {
            if t.store.bucket(b as u32).spill != want {
                t.store.set_spill(b as u32, want);
            }
        }
        let mut lowest_free = None;
        for id in 1..=t.geom.entries {
            if K::used_mark(t.store.entries.load(id, K::MARK_WORD)) && !seen_ids.contains(&id) {
                log::warn!("{}: freeing entry {id}, which no slot refers to", t.name);
                t.free(id);
            }
            if lowest_free.is_none() && !seen_ids.contains(&id) {
                lowest_free = Some(id);
            }
        }
        t.geom.next = lowest_free.unwrap_or(t.geom.entries);
        t.geom.count = seen_keys.len() as u32;
        cfg.tables[K::TBL] = t.geom;
        Ok(true)
    }
}

/// Whether geometry `g` fits bucket and entry arrays of these sizes.
fn fits(g: TableGeom, bucket_elems: u32, entry_elems: u32) -> bool {
    let b = g.shape.buckets;
    b >= 1 && b <= bucket_elems && g.shape == Shape::of(b) && g.entries < entry_elems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(buckets_for(1), 2);
        assert_eq!(buckets_for(7), 2);
        assert_eq!(buckets_for(1 << 20), 299_594);
        // At capacity, one key per two slots.
        let b = u64::from(buckets_for(1_000_000));
        assert!(b * 7 >= 2_000_000 && b * 7 < 2_000_007);
        assert_eq!(entries_for(4096), 4097);
    }
}
