//! The ban tables: open addressing with linear probing in BPF array maps
//! (the XDP program's array lookups are inlined, a hash-map lookup is a
//! helper call costing 25-40 ns), plus an overflow hash map per table for
//! keys that find no slot within `MAX_PROBE` of their home.
//!
//! The XDP program reads without any lock, so every change is a sequence of
//! single-slot writes (one `bpf_map_update_elem` each, a memcpy of one slot)
//! that keeps every other key findable at every moment:
//! - insert writes the new key into the first empty slot of its probe path;
//! - delete is backward-shift deletion without tombstones: each entry moved
//!   back is written to its new slot before its old slot is reused or
//!   cleared, so a reader finds it in one place or the other;
//! - `Config::tables[t].count` is raised before a new entry is written and
//!   lowered after it is gone, `ovf` likewise for the overflow map.
//! A reader may see one slot half-written, which can only affect the one
//! key written at that moment (or, while a delete shifts, the moved key
//! whose old copy is still intact further on); a packet then passes that
//! the next one would drop. A drop counted by the XDP program on a slot
//! in the middle of a move can be lost.
//!
//! The probing logic is generic over [`Slots`], so it is tested against a
//! plain `Vec` below and runs unchanged on the array maps.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Debug,
    hash::Hash,
    io,
    os::fd::BorrowedFd,
};

use aya::Pod;
use fail2xdp_common::{
    AllowValue, BanValue, Config, MAX_PROBE, PfxKeyV4, PfxKeyV6, SlotA4, SlotA6, SlotP4, SlotP6,
    SlotV4, SlotV6, TableGeom, fold_p4, fold_p6, fold_v4, fold_v6, home,
};

use super::sys;

/// One slot type of a table and its key.
pub trait Slot: Pod + Copy + Default + Debug {
    type Key: Pod + Copy + Eq + Hash + Debug;
    type Val: Pod + Copy + Debug;
    fn key(&self) -> Self::Key;
    fn used(&self) -> bool;
    fn val(&self) -> Self::Val;
    fn make(key: Self::Key, val: Self::Val) -> Self;
    /// What an update keeps of the value it replaces.
    fn keep(_old: &Self::Val, _new: &mut Self::Val) {}
    /// The key folded to the 64 bits [`home`] hashes, exactly as the XDP
    /// program folds the packet's address.
    fn fold(key: &Self::Key) -> u64;
}

fn words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

impl Slot for SlotV4 {
    type Key = [u8; 4];
    type Val = BanValue;
    fn keep(old: &BanValue, new: &mut BanValue) {
        new.drops = old.drops;
    }
    fn key(&self) -> [u8; 4] {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> BanValue {
        self.val
    }
    fn make(key: [u8; 4], val: BanValue) -> Self {
        SlotV4 { key, used: 1, val }
    }
    fn fold(key: &[u8; 4]) -> u64 {
        fold_v4(u32::from_ne_bytes(*key))
    }
}

impl Slot for SlotV6 {
    type Key = [u8; 16];
    type Val = BanValue;
    fn keep(old: &BanValue, new: &mut BanValue) {
        new.drops = old.drops;
    }
    fn key(&self) -> [u8; 16] {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> BanValue {
        self.val
    }
    fn make(key: [u8; 16], val: BanValue) -> Self {
        SlotV6 {
            key,
            used: 1,
            _pad: 0,
            val,
        }
    }
    fn fold(key: &[u8; 16]) -> u64 {
        let (hi, lo) = words(key);
        fold_v6(hi, lo)
    }
}

impl Slot for SlotP4 {
    type Key = PfxKeyV4;
    type Val = BanValue;
    fn keep(old: &BanValue, new: &mut BanValue) {
        new.drops = old.drops;
    }
    fn key(&self) -> PfxKeyV4 {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> BanValue {
        self.val
    }
    fn make(key: PfxKeyV4, val: BanValue) -> Self {
        SlotP4 {
            key,
            used: 1,
            _pad: 0,
            val,
        }
    }
    fn fold(key: &PfxKeyV4) -> u64 {
        fold_p4(key.len, u32::from_ne_bytes(key.addr))
    }
}

impl Slot for SlotP6 {
    type Key = PfxKeyV6;
    type Val = BanValue;
    fn keep(old: &BanValue, new: &mut BanValue) {
        new.drops = old.drops;
    }
    fn key(&self) -> PfxKeyV6 {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> BanValue {
        self.val
    }
    fn make(key: PfxKeyV6, val: BanValue) -> Self {
        SlotP6 { key, used: 1, val }
    }
    fn fold(key: &PfxKeyV6) -> u64 {
        let (hi, lo) = words(&key.addr);
        fold_p6(key.len, hi, lo)
    }
}

impl Slot for SlotA4 {
    type Key = PfxKeyV4;
    type Val = AllowValue;
    fn key(&self) -> PfxKeyV4 {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> AllowValue {
        self.val
    }
    fn make(key: PfxKeyV4, val: AllowValue) -> Self {
        SlotA4 { key, used: 1, val }
    }
    fn fold(key: &PfxKeyV4) -> u64 {
        SlotP4::fold(key)
    }
}

impl Slot for SlotA6 {
    type Key = PfxKeyV6;
    type Val = AllowValue;
    fn key(&self) -> PfxKeyV6 {
        self.key
    }
    fn used(&self) -> bool {
        self.used != 0
    }
    fn val(&self) -> AllowValue {
        self.val
    }
    fn make(key: PfxKeyV6, val: AllowValue) -> Self {
        SlotA6 { key, used: 1, val }
    }
    fn fold(key: &PfxKeyV6) -> u64 {
        SlotP6::fold(key)
    }
}

/// Slot count of a table for `capacity` entries: a power of two at least
/// twice the capacity, so the load stays at most one half.
pub fn slots_for(capacity: u32) -> u32 {
    (capacity.max(1) as u64 * 2)
        .next_power_of_two()
        .min(1 << 31) as u32
}

/// Entries a table of `slots` slots takes before it reports full.
pub fn capacity_of(slots: u32) -> u32 {
    slots / 2
}

/// Geometry for a fresh table of `slots` slots (a power of two).
pub fn new_geom(slots: u32, seed: u64) -> TableGeom {
    let bits = slots.max(2).trailing_zeros();
    TableGeom {
        seed,
        bits,
        mask: (1u64 << bits).wrapping_sub(1) as u32,
        count: 0,
        ovf: 0,
    }
}

pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n != 8 {
        // No entropy source: still a usable (if guessable) table.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
    }
    u64::from_ne_bytes(b)
}

/// Where the slots live: the array map, a snapshot of it, or a test model.
pub trait Slots<S> {
    fn read(&mut self, i: u32) -> io::Result<S>;
    fn write(&mut self, i: u32, s: &S) -> io::Result<()>;
}

impl<S: Copy> Slots<S> for Vec<S> {
    fn read(&mut self, i: u32) -> io::Result<S> {
        self.get(i as usize)
            .copied()
            .ok_or_else(|| io::Error::other("slot index out of range"))
    }
    fn write(&mut self, i: u32, s: &S) -> io::Result<()> {
        let slot = self
            .get_mut(i as usize)
            .ok_or_else(|| io::Error::other("slot index out of range"))?;
        *slot = *s;
        Ok(())
    }
}

/// The live array map, one element per call.
pub struct MapSlots<'a>(pub BorrowedFd<'a>);

impl<S: Pod + Default> Slots<S> for MapSlots<'_> {
    fn read(&mut self, i: u32) -> io::Result<S> {
        Ok(sys::lookup::<u32, S>(self.0, &i)?.unwrap_or_default())
    }
    fn write(&mut self, i: u32, s: &S) -> io::Result<()> {
        sys::update(self.0, &i, s, sys::BPF_ANY)
    }
}

/// A copy of the whole array that remembers what changed, for batches.
struct Snapshot<S> {
    slots: Vec<S>,
    dirty: BTreeMap<u32, ()>,
}

impl<S: Copy> Slots<S> for Snapshot<S> {
    fn read(&mut self, i: u32) -> io::Result<S> {
        self.slots.read(i)
    }
    fn write(&mut self, i: u32, s: &S) -> io::Result<()> {
        self.slots.write(i, s)?;
        self.dirty.insert(i, ());
        Ok(())
    }
}

/// A read-only mapping of a mmapable array map (BPF_F_MMAPABLE).
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a fresh shared read-only mapping of `len` bytes of the map;
        // the kernel refuses it (EINVAL/EPERM) unless the map is mmapable.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Calls `f` with every slot index and content: through a memory mapping
/// when the array allows it, else with batched bpf(2) lookups.
pub fn scan<S: Pod>(fd: BorrowedFd<'_>, slots: u32, mut f: impl FnMut(u32, &S)) -> io::Result<()> {
    // Array elements are laid out at value_size rounded up to 8.
    let stride = size_of::<S>().next_multiple_of(8);
    let len = stride * slots as usize;
    match Mapped::new(fd, len) {
        Ok(m) => {
            for i in 0..slots as usize {
                // SAFETY: slot i lies within the `len` mapped bytes, 8-aligned
                // in a page-aligned mapping; S is Pod, so any bytes are a
                // value. A volatile copy, since the XDP program writes there.
                let s = unsafe {
                    std::ptr::read_volatile(m.ptr.cast::<u8>().add(i * stride).cast::<S>())
                };
                f(i as u32, &s);
            }
            Ok(())
        }
        Err(_) => sys::walk::<u32, S>(fd, |i, s| f(*i, s)),
    }
}

fn home_of<S: Slot>(g: &TableGeom, key: &S::Key) -> u32 {
    home(S::fold(key), g.seed, g.bits) & g.mask
}

/// Slot index and content of `key`, probing as the XDP program does.
pub fn find<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
) -> io::Result<Option<(u32, S)>> {
    let h = home_of::<S>(g, key);
    for i in 0..MAX_PROBE {
        let idx = h.wrapping_add(i) & g.mask;
        let s = t.read(idx)?;
        if !s.used() {
            break;
        }
        if s.key() == *key {
            return Ok(Some((idx, s)));
        }
    }
    Ok(None)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The key was there; its value was replaced, its drop counter kept.
    Updated,
    Inserted,
    /// No empty slot within MAX_PROBE of home: the overflow map's job.
    NoRoom,
    /// A new key, but the table already holds `allow_new == false` entries.
    Full,
}

/// Writes `key -> val` in one slot write.
pub fn put<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
    mut val: S::Val,
    allow_new: bool,
) -> io::Result<Put> {
    let h = home_of::<S>(g, key);
    for i in 0..MAX_PROBE {
        let idx = h.wrapping_add(i) & g.mask;
        let s = t.read(idx)?;
        if !s.used() {
            if !allow_new {
                return Ok(Put::Full);
            }
            t.write(idx, &S::make(*key, val))?;
            return Ok(Put::Inserted);
        }
        if s.key() == *key {
            S::keep(&s.val(), &mut val);
            t.write(idx, &S::make(*key, val))?;
            return Ok(Put::Updated);
        }
    }
    Ok(if allow_new { Put::NoRoom } else { Put::Full })
}

/// Backward-shift deletion. True if `key` was in the table.
pub fn remove<S: Slot>(t: &mut impl Slots<S>, g: &TableGeom, key: &S::Key) -> io::Result<bool> {
    let Some((mut hole, _)) = find(t, g, key)? else {
        return Ok(false);
    };
    let mut j = hole;
    loop {
        j = j.wrapping_add(1) & g.mask;
        if j == hole {
            break;
        }
        let s = t.read(j)?;
        if !s.used() {
            break;
        }
        // The entry at j may fill the hole if the hole lies on its probe
        // path [home, j]: it then sits closer to home, still within reach.
        let h = home_of::<S>(g, &s.key());
        if j.wrapping_sub(h) & g.mask >= j.wrapping_sub(hole) & g.mask {
            // The copy lands before the old slot is reused or cleared.
            t.write(hole, &s)?;
            hole = j;
        }
    }
    t.write(hole, &S::default())?;
    Ok(true)
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {map} is full ({capacity} entries); raise its capacity")]
    Full { map: &'static str, capacity: u32 },
    #[error("table {0} is not set up (its geometry in CONFIG is empty)")]
    NoGeometry(&'static str),
    #[error("{what} {map}: {err}")]
    Io {
        what: &'static str,
        map: &'static str,
        err: io::Error,
    },
}

fn io(what: &'static str, map: &'static str) -> impl FnOnce(io::Error) -> TableError {
    move |err| TableError::Io { what, map, err }
}

/// Batches larger than this work on a snapshot of the whole array and
/// write back the changed slots with one batch update.
const SNAPSHOT_MIN: usize = 4096;

/// One ban table: its array, overflow map, and its entry in CONFIG.
pub struct BanTable<'a, S> {
    pub arr: BorrowedFd<'a>,
    pub ovf: BorrowedFd<'a>,
    pub config: BorrowedFd<'a>,
    /// Index in `Config::tables`.
    pub tbl: usize,
    pub name: &'static str,
    /// max_entries of the array.
    pub slots: u32,
    pub _slot: std::marker::PhantomData<S>,
}

impl<'a, S: Slot> BanTable<'a, S> {
    pub fn new(
        arr: BorrowedFd<'a>,
        ovf: BorrowedFd<'a>,
        config: BorrowedFd<'a>,
        tbl: usize,
        name: &'static str,
        slots: u32,
    ) -> Self {
        BanTable {
            arr,
            ovf,
            config,
            tbl,
            name,
            slots,
            _slot: std::marker::PhantomData,
        }
    }

    fn read_config(&self) -> Result<Config, TableError> {
        Ok(sys::lookup::<u32, Config>(self.config, &0)
            .map_err(io("reading CONFIG for", self.name))?
            .unwrap_or(Config::EMPTY))
    }

    fn write_config(&self, cfg: &Config) -> Result<(), TableError> {
        sys::update(self.config, &0u32, cfg, sys::BPF_ANY)
            .map_err(io("writing CONFIG for", self.name))
    }

    fn geom(&self, cfg: &Config) -> Result<TableGeom, TableError> {
        let g = cfg.tables[self.tbl];
        if g.bits == 0 || g.mask.wrapping_add(1) as u64 != self.slots as u64 {
            return Err(TableError::NoGeometry(self.name));
        }
        Ok(g)
    }

    pub fn capacity(&self) -> u32 {
        capacity_of(self.slots)
    }

    /// Gives the table a geometry and random seed if it has none, and makes
    /// `count`/`ovf` match the maps (after a crash between writes).
    /// Returns false if the pinned geometry does not fit the array.
    pub fn repair(&self) -> Result<bool, TableError> {
        let mut cfg = self.read_config()?;
        let g = cfg.tables[self.tbl];
        if g.bits == 0 {
            cfg.tables[self.tbl] = new_geom(self.slots, random_seed());
        } else if g.mask.wrapping_add(1) as u64 != self.slots as u64 {
            return Ok(false);
        }
        let mut count = 0u32;
        scan::<S>(self.arr, self.slots, |_, s| count += s.used() as u32)
            .map_err(io("reading", self.name))?;
        let ovf = sys::count::<S::Key, S::Val>(self.ovf).map_err(io("reading", self.name))?;
        let t = &mut cfg.tables[self.tbl];
        // Raise first: a stale low count would hide entries.
        if t.count != count || t.ovf != ovf as u32 || g.bits == 0 {
            t.count = count;
            t.ovf = ovf as u32;
            self.write_config(&cfg)?;
        }
        Ok(true)
    }

    /// Current entries (table and overflow).
    pub fn len(&self) -> Result<u32, TableError> {
        let g = self.read_config()?.tables[self.tbl];
        Ok(g.count + g.ovf)
    }

    pub fn get(&self, key: &S::Key) -> Result<Option<S::Val>, TableError> {
        let cfg = self.read_config()?;
        let g = self.geom(&cfg)?;
        if let Some((_, s)) =
            find::<S>(&mut MapSlots(self.arr), &g, key).map_err(io("reading", self.name))?
        {
            return Ok(Some(s.val()));
        }
        if g.ovf == 0 {
            return Ok(None);
        }
        sys::lookup::<S::Key, S::Val>(self.ovf, key).map_err(io("reading", self.name))
    }

    /// Every entry, table then overflow.
    pub fn entries(&self) -> Result<Vec<(S::Key, S::Val)>, TableError> {
        let mut out = Vec::new();
        // An empty table is not worth reading slot by slot (a million-ban
        // table is tens of MB); `count` is never below the truth.
        let g = self.read_config()?.tables[self.tbl];
        if g.bits != 0 && g.count == 0 && g.ovf == 0 {
            return Ok(out);
        }
        scan::<S>(self.arr, self.slots, |_, s| {
            if s.used() {
                out.push((s.key(), s.val()));
            }
        })
        .map_err(io("reading", self.name))?;
        out.extend(sys::dump::<S::Key, S::Val>(self.ovf).map_err(io("reading", self.name))?);
        Ok(out)
    }

    /// Inserts or updates every item (a re-ban keeps its drop counter).
    /// Returns how many were written; on `Full`, the ones before stay.
    pub fn insert_many(&self, items: &[(S::Key, S::Val)]) -> Result<usize, TableError> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut cfg = self.read_config()?;
        let g = self.geom(&cfg)?;
        let cap = self.capacity();
        let start = cfg.tables[self.tbl];
        // Overflowed keys: re-bans of those update the overflow map.
        let ovf_keys: HashMap<S::Key, S::Val> = if start.ovf > 0 {
            sys::dump::<S::Key, S::Val>(self.ovf)
                .map_err(io("reading", self.name))?
                .into_iter()
                .collect()
        } else {
            HashMap::new()
        };
        // The XDP program must look at the table before a new entry lands.
        let (mut count, mut ovf) = (start.count, start.ovf);
        if count == 0 {
            cfg.tables[self.tbl].count = (items.len() as u32).min(self.slots);
            self.write_config(&cfg)?;
        }
        let snapshot = items.len() >= SNAPSHOT_MIN;
        let mut snap = Snapshot {
            slots: Vec::new(),
            dirty: BTreeMap::new(),
        };
        if snapshot {
            snap.slots = vec![S::default(); self.slots as usize];
            scan::<S>(self.arr, self.slots, |i, s| {
                if let Some(d) = snap.slots.get_mut(i as usize) {
                    *d = *s;
                }
            })
            .map_err(io("reading", self.name))?;
        }
        let mut live = MapSlots(self.arr);
        let mut done = 0;
        let mut result = Ok(());
        for (k, v) in items {
            if let Some(old) = ovf_keys.get(k) {
                let mut v = *v;
                S::keep(old, &mut v);
                sys::update(self.ovf, k, &v, sys::BPF_ANY).map_err(io("writing", self.name))?;
                done += 1;
                continue;
            }
            let allow_new = count + ovf < cap;
            let r = if snapshot {
                put::<S>(&mut snap, &g, k, *v, allow_new)
            } else {
                put::<S>(&mut live, &g, k, *v, allow_new)
            }
            .map_err(io("writing", self.name))?;
            match r {
                Put::Updated => {}
                Put::Inserted => count += 1,
                Put::Full => {
                    result = Err(TableError::Full {
                        map: self.name,
                        capacity: cap,
                    });
                    break;
                }
                Put::NoRoom => {
                    cfg.tables[self.tbl].ovf = ovf + 1;
                    self.write_config(&cfg)?;
                    if let Err(e) = sys::update(self.ovf, k, v, sys::BPF_ANY) {
                        cfg.tables[self.tbl].ovf = ovf;
                        self.write_config(&cfg)?;
                        result = Err(if e.raw_os_error() == Some(libc::E2BIG) {
                            TableError::Full {
                                map: self.name,
                                capacity: cap,
                            }
                        } else {
                            TableError::Io {
                                what: "writing overflow of",
                                map: self.name,
                                err: e,
                            }
                        });
                        break;
                    }
                    ovf += 1;
                }
            }
            done += 1;
        }
        if snapshot && !snap.dirty.is_empty() {
            let idx: Vec<u32> = snap.dirty.keys().copied().collect();
            let vals: Vec<S> = idx.iter().map(|&i| snap.slots[i as usize]).collect();
            sys::update_batch(self.arr, &idx, &vals).map_err(|(_, e)| TableError::Io {
                what: "writing",
                map: self.name,
                err: e,
            })?;
        }
        cfg.tables[self.tbl].count = count;
        cfg.tables[self.tbl].ovf = ovf;
        self.write_config(&cfg)?;
        result.map(|()| done)
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&self, key: &S::Key) -> Result<bool, TableError> {
        let mut cfg = self.read_config()?;
        let g = self.geom(&cfg)?;
        if remove::<S>(&mut MapSlots(self.arr), &g, key).map_err(io("writing", self.name))? {
            cfg.tables[self.tbl].count = g.count.saturating_sub(1);
            self.write_config(&cfg)?;
            return Ok(true);
        }
        if g.ovf > 0 && sys::delete(self.ovf, key).map_err(io("deleting from", self.name))? {
            cfg.tables[self.tbl].ovf = g.ovf - 1;
            self.write_config(&cfg)?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(n: u64) -> BanValue {
        BanValue {
            expires_ns: n,
            ..Default::default()
        }
    }

    /// A store that checks, after every single write, that every key the
    /// model says must stay visible is still found by the XDP-style probe.
    struct Watched<'m> {
        slots: Vec<SlotV4>,
        g: TableGeom,
        must: &'m HashMap<[u8; 4], u64>,
    }

    impl Slots<SlotV4> for Watched<'_> {
        fn read(&mut self, i: u32) -> io::Result<SlotV4> {
            self.slots.read(i)
        }
        fn write(&mut self, i: u32, s: &SlotV4) -> io::Result<()> {
            self.slots.write(i, s)?;
            for (k, e) in self.must {
                let got = find::<SlotV4>(&mut self.slots, &self.g, k)?;
                assert_eq!(
                    got.map(|(_, s)| s.val.expires_ns),
                    Some(*e),
                    "{k:?} lost after writing slot {i}"
                );
            }
            Ok(())
        }
    }

    /// xorshift, so the test needs no rand crate and is reproducible.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn check_model(seed: u64, bits: u32, keyspace: u64, ops: usize) {
        let g = new_geom(1 << bits, seed);
        let mut model: HashMap<[u8; 4], u64> = HashMap::new();
        let mut ovf: HashMap<[u8; 4], u64> = HashMap::new();
        let mut t = Watched {
            slots: vec![SlotV4::default(); 1 << bits],
            g,
            must: &HashMap::new(),
        };
        let cap = capacity_of(1 << bits) as usize;
        let mut st = seed | 1;
        for step in 0..ops {
            let k = ((rng(&mut st) % keyspace) as u32).to_ne_bytes();
            let others: HashMap<[u8; 4], u64> = model
                .iter()
                .filter(|(x, _)| **x != k && !ovf.contains_key(*x))
                .map(|(x, v)| (*x, *v))
                .collect();
            let slots = std::mem::take(&mut t.slots);
            let mut w = Watched {
                slots,
                g,
                must: &others,
            };
            if rng(&mut st) % 3 == 0 {
                let had = remove::<SlotV4>(&mut w, &g, &k).unwrap();
                let in_ovf = ovf.remove(&k).is_some();
                assert_eq!(had || in_ovf, model.remove(&k).is_some(), "step {step}");
            } else {
                let v = step as u64 + 1;
                if ovf.contains_key(&k) {
                    ovf.insert(k, v);
                    model.insert(k, v);
                } else {
                    match put::<SlotV4>(&mut w, &g, &k, val(v), model.len() < cap).unwrap() {
                        Put::Inserted => assert!(model.insert(k, v).is_none()),
                        Put::Updated => assert!(model.insert(k, v).is_some()),
                        Put::NoRoom => {
                            ovf.insert(k, v);
                            model.insert(k, v);
                        }
                        Put::Full => assert!(model.len() >= cap),
                    }
                }
            }
            t.slots = w.slots;
            let used = t.slots.iter().filter(|s| s.used != 0).count();
            assert_eq!(used + ovf.len(), model.len(), "step {step}");
            for (k, v) in &model {
                if ovf.contains_key(k) {
                    continue;
                }
                let got = find::<SlotV4>(&mut t.slots, &g, k).unwrap();
                assert_eq!(got.map(|(_, s)| s.val.expires_ns), Some(*v), "step {step}");
            }
        }
    }

    #[test]
    fn model_small_table_many_collisions() {
        // 16 slots, 8 allowed: long clusters and wrap-around.
        for seed in [1, 7, 99, 12345] {
            check_model(seed, 4, 40, 3000);
        }
    }

    #[test]
    fn model_larger_table() {
        check_model(42, 8, 400, 4000);
    }

    #[test]
    fn adversarial_same_home_goes_to_overflow() {
        // bits = 1 (2 slots) with a 3-key workload: keys beyond room overflow
        // or report full, never vanish.
        let g = new_geom(64, 3);
        let mut t = vec![SlotV4::default(); 64];
        // Find 20 keys with the same home.
        let target = home_of::<SlotV4>(&g, &[0, 0, 0, 0]);
        let keys: Vec<[u8; 4]> = (0u32..)
            .map(|x| x.to_ne_bytes())
            .filter(|k| home_of::<SlotV4>(&g, k) == target)
            .take(20)
            .collect();
        let mut placed = 0;
        let mut overflow = 0;
        for k in &keys {
            match put::<SlotV4>(&mut t, &g, k, val(1), true).unwrap() {
                Put::Inserted => placed += 1,
                Put::NoRoom => overflow += 1,
                r => panic!("{r:?}"),
            }
        }
        assert_eq!(placed, MAX_PROBE as usize);
        assert_eq!(overflow, 20 - MAX_PROBE as usize);
        // Removing the first shifts the rest back; all stay findable.
        assert!(remove::<SlotV4>(&mut t, &g, &keys[0]).unwrap());
        for k in &keys[1..MAX_PROBE as usize] {
            assert!(find::<SlotV4>(&mut t, &g, k).unwrap().is_some());
        }
        assert!(find::<SlotV4>(&mut t, &g, &keys[0]).unwrap().is_none());
    }

    #[test]
    fn update_keeps_drops() {
        let g = new_geom(8, 5);
        let mut t = vec![SlotV6::default(); 8];
        let k = [7u8; 16];
        let mut v = val(1);
        v.drops = 0;
        assert_eq!(
            put::<SlotV6>(&mut t, &g, &k, v, true).unwrap(),
            Put::Inserted
        );
        let (i, _) = find::<SlotV6>(&mut t, &g, &k).unwrap().unwrap();
        t[i as usize].val.drops = 9;
        assert_eq!(
            put::<SlotV6>(&mut t, &g, &k, val(2), true).unwrap(),
            Put::Updated
        );
        let (_, s) = find::<SlotV6>(&mut t, &g, &k).unwrap().unwrap();
        assert_eq!((s.val.drops, s.val.expires_ns), (9, 2));
    }

    #[test]
    fn sizes() {
        assert_eq!(slots_for(1), 2);
        assert_eq!(slots_for(3), 8);
        assert_eq!(slots_for(1 << 20), 1 << 21);
        assert_eq!(capacity_of(slots_for(1 << 20)), 1 << 20);
        let g = new_geom(1 << 21, 0);
        assert_eq!((g.bits, g.mask), (21, (1 << 21) - 1));
    }
}
