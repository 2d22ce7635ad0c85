//! The ban tables: open addressing with linear probing in BPF array maps
//! (the XDP program's array lookups are inlined, a hash-map lookup is a
//! helper call costing 25-40 ns), plus an overflow hash map per table for
//! keys that find no slot within `MAX_PROBE` of their home.
//!
//! Entries are kept in Robin Hood order (along a run of used slots, each
//! entry is at most one slot farther from its home than the one before
//! it), so a miss stops at the first occupant nearer its own home than the
//! probed key would be, not only at an empty slot: a miss in a crowded
//! region reads a few slots instead of the rest of the run.
//!
//! The XDP program reads without any lock, so every change is a sequence of
//! single-slot writes (one `bpf_map_update_elem` each, a memcpy of one slot)
//! that keeps every other key findable at every moment:
//!
//! - insert walks from home; a new or displaced entry farther from its home
//!   than the resident takes its slot and the resident walks on. The whole
//!   chain is computed first ([`plan`]), an entry that would land
//!   `MAX_PROBE` or more from home is put in the overflow map first, then
//!   the slots are written last to first ([`apply`]): each moved entry
//!   reaches its new slot before its old one is overwritten. Every slot,
//!   old or new, satisfies the order for each key that does not move, so
//!   those stay findable in any mix of old and new slots;
//! - delete is backward-shift deletion without tombstones: each entry moved
//!   back is written to its new slot before its old slot is reused or
//!   cleared, so a reader finds it in one place or the other;
//! - `Config::tables[t].count` is raised before a new entry is written and
//!   lowered after it is gone, `ovf` likewise for the overflow map.
//!
//! A reader may see one slot half-written. That affects the key written
//! there, and, because misses stop early, any key whose probe crosses that
//! slot and meets a torn occupant that looks nearer its home: a packet then
//! passes that the next one would drop (fail-open). A drop counted by the
//! XDP program on a slot in the middle of a move can be lost.
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
    SlotV4, SlotV6, TableGeom, addr_words, fold_p4, fold_p6, fold_v4, fold_v6, home,
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

/// What an update keeps of the value it replaces.
pub trait Keep {
    fn keep(_old: &Self, _new: &mut Self) {}
}

impl Keep for BanValue {
    /// A re-ban keeps counting the drops of the ban it renews.
    fn keep(old: &Self, new: &mut Self) {
        new.drops = old.drops;
    }
}

impl Keep for AllowValue {}

/// The six slot types differ only in key, value and how the key folds.
macro_rules! impl_slot {
    ($slot:ident, $key:ty, $val:ty, |$k:ident| $fold:expr) => {
        impl Slot for $slot {
            type Key = $key;
            type Val = $val;
            fn keep(old: &$val, new: &mut $val) {
                <$val as Keep>::keep(old, new)
            }
            fn key(&self) -> $key {
                self.key
            }
            fn used(&self) -> bool {
                self.used != 0
            }
            fn val(&self) -> $val {
                self.val
            }
            fn make(key: $key, val: $val) -> Self {
                $slot {
                    key,
                    used: 1,
                    val,
                    ..Default::default()
                }
            }
            fn fold($k: &$key) -> u64 {
                $fold
            }
        }
    };
}

impl_slot!(SlotV4, [u8; 4], BanValue, |k| fold_v4(u32::from_ne_bytes(
    *k
)));
impl_slot!(SlotV6, [u8; 16], BanValue, |k| {
    let (hi, lo) = addr_words(k);
    fold_v6(hi, lo)
});
impl_slot!(SlotP4, PfxKeyV4, BanValue, |k| fold_p4(
    k.len,
    u32::from_ne_bytes(k.addr)
));
impl_slot!(SlotP6, PfxKeyV6, BanValue, |k| {
    let (hi, lo) = addr_words(&k.addr);
    fold_p6(k.len, hi, lo)
});
impl_slot!(SlotA4, PfxKeyV4, AllowValue, |k| fold_p4(
    k.len,
    u32::from_ne_bytes(k.addr)
));
impl_slot!(SlotA6, PfxKeyV6, AllowValue, |k| {
    let (hi, lo) = addr_words(&k.addr);
    fold_p6(k.len, hi, lo)
});

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

/// A key and its value, as they leave or enter a table.
pub type Entry<S> = (<S as Slot>::Key, <S as Slot>::Val);

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

/// The changed slots of a snapshot in the order one batch update writes
/// them: backwards, as [`apply`] does, starting just below a slot that is
/// empty afterwards. Entries only move forward within a run of used slots,
/// and no run crosses an empty slot, so each moved entry lands at its new
/// place before its old one is overwritten, also across the wrap-around.
fn write_order<S: Slot>(snap: &Snapshot<S>, mask: u32) -> Vec<u32> {
    let cut = snap
        .slots
        .iter()
        .position(|s| !s.used())
        .map_or(0, |i| i as u32);
    let mut idx: Vec<u32> = snap.dirty.keys().copied().collect();
    idx.sort_by_key(|&i| std::cmp::Reverse(i.wrapping_sub(cut) & mask));
    idx
}

/// A read-only mapping of part of a mmapable array map (BPF_F_MMAPABLE).
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// `offset` must be page-aligned.
    fn new(fd: BorrowedFd<'_>, offset: usize, len: usize) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a fresh shared read-only mapping of `len` bytes of the map;
        // the kernel refuses it (EINVAL/EPERM) unless the map is mmapable
        // and the range lies within it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
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

/// Bytes of a table mapped at a time while scanning: the pages of a mapping
/// count in the agent's RSS while it exists, and a whole table is hundreds
/// of MiB at default capacities.
const SCAN_WINDOW: usize = 4 << 20;

/// Calls `f` with every slot index and content: through memory mappings of
/// a window at a time when the array allows it, else with batched bpf(2)
/// lookups.
pub fn scan<S: Pod>(fd: BorrowedFd<'_>, slots: u32, mut f: impl FnMut(u32, &S)) -> io::Result<()> {
    // Array elements are laid out at value_size rounded up to 8.
    let stride = size_of::<S>().next_multiple_of(8);
    let page = page_size();
    let total = stride * slots as usize;
    let mut i = 0usize;
    while i < slots as usize {
        let start = (i * stride) & !(page - 1);
        let end = (start + SCAN_WINDOW).min(total);
        // Whole slots only; the next window starts at the page holding the
        // first slot this one leaves out.
        let last = (end / stride).max(i + 1).min(slots as usize);
        let len = (last * stride - start).next_multiple_of(page);
        let m = match Mapped::new(fd, start, len) {
            Ok(m) => m,
            Err(_) if i == 0 => return sys::walk::<u32, S>(fd, |i, s| f(*i, s)),
            Err(e) => return Err(e),
        };
        for j in i..last {
            // SAFETY: slot j lies within the `len` bytes mapped from `start`,
            // 8-aligned in a page-aligned mapping; S is Pod, so any bytes are
            // a value. A volatile copy, since the XDP program writes there.
            let s = unsafe {
                std::ptr::read_volatile(m.ptr.cast::<u8>().add(j * stride - start).cast::<S>())
            };
            f(j as u32, &s);
        }
        i = last;
    }
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

fn home_of<S: Slot>(g: &TableGeom, key: &S::Key) -> u32 {
    home(S::fold(key), g.seed, g.bits) & g.mask
}

/// Distance of an entry stored at `idx` from its home slot.
fn dist<S: Slot>(g: &TableGeom, idx: u32, s: &S) -> u32 {
    idx.wrapping_sub(home_of::<S>(g, &s.key())) & g.mask
}

/// Slot index and content of `key`, probing as the XDP program does:
/// Robin Hood order lets a miss stop at the first occupant closer to its
/// own home than the key would be, as well as at an empty slot.
pub fn find<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
) -> io::Result<Option<(u32, S)>> {
    let h = home_of::<S>(g, key);
    for d in 0..MAX_PROBE {
        let idx = h.wrapping_add(d) & g.mask;
        let s = t.read(idx)?;
        if !s.used() {
            break;
        }
        if s.key() == *key {
            return Ok(Some((idx, s)));
        }
        if dist::<S>(g, idx, &s) < d {
            break;
        }
    }
    Ok(None)
}

/// Slots the XDP program reads for `key` (hit or miss, overflow map not
/// counted), and how many plain linear probing would read (up to the key
/// or the first empty slot, at most `MAX_PROBE`).
pub fn probes<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
) -> io::Result<(u32, u32)> {
    let h = home_of::<S>(g, key);
    let (mut early, mut linear) = (None, None);
    for d in 0..MAX_PROBE {
        let idx = h.wrapping_add(d) & g.mask;
        let s = t.read(idx)?;
        if !s.used() || s.key() == *key {
            early.get_or_insert(d + 1);
            linear = Some(d + 1);
            break;
        }
        if dist::<S>(g, idx, &s) < d {
            early.get_or_insert(d + 1);
        }
    }
    Ok((early.unwrap_or(MAX_PROBE), linear.unwrap_or(MAX_PROBE)))
}

/// Checks, slot by slot in index order, the Robin Hood order early
/// termination relies on: every entry within `MAX_PROBE` of its home and at
/// most one slot farther from it than the entry before it (an empty slot
/// counts as one slot before home).
#[derive(Default)]
pub struct Order {
    /// Distance of the previous slot's entry; `None` after an empty slot.
    prev: Option<u32>,
    /// Distance of slot 0's entry, checked against the last slot at the end.
    first: Option<u32>,
    seen: bool,
    broken: bool,
}

impl Order {
    pub fn next<S: Slot>(&mut self, g: &TableGeom, idx: u32, s: &S) {
        let d = s.used().then(|| dist::<S>(g, idx, s));
        if let Some(d) = d {
            if d >= MAX_PROBE {
                self.broken = true;
            }
            if !self.seen {
                self.first = Some(d);
            } else if d > self.prev.map_or(0, |p| p + 1) {
                self.broken = true;
            }
        }
        self.seen = true;
        self.prev = d;
    }

    /// Whether the order held, wrap-around included.
    pub fn holds(&self) -> bool {
        let wrap = match self.first {
            Some(d) => d <= self.prev.map_or(0, |p| p + 1),
            None => true,
        };
        !self.broken && wrap
    }
}

/// The same entries in Robin Hood order, and those that spill.
pub fn robin_hood_layout<S: Slot>(old: &[S], g: &TableGeom) -> io::Result<(Vec<S>, Vec<Entry<S>>)> {
    let mut new = vec![S::default(); old.len()];
    let mut spills = Vec::new();
    for s in old.iter().filter(|s| s.used()) {
        let p = plan(&mut new, g, &s.key(), s.val(), true)?;
        spills.extend(p.spill);
        apply(&mut new, &p)?;
    }
    Ok((new, spills))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The key was there; its value was replaced, its drop counter kept.
    Updated,
    Inserted,
    /// Some entry (the new key or a resident it displaced) would land
    /// `MAX_PROBE` or more slots from its home: it is the overflow map's
    /// job, see [`Plan::spill`].
    NoRoom,
    /// A new key, but the table already holds `allow_new == false` entries.
    Full,
}

/// The slot writes of one insert or update, computed before any is made.
#[derive(Debug)]
pub struct Plan<S: Slot> {
    pub kind: Put,
    /// New slot contents in probe order; written last to first.
    writes: Vec<(u32, S)>,
    /// With `Put::NoRoom`: the entry that leaves (or never enters) the
    /// table. It must be in the overflow map before [`apply`] runs.
    pub spill: Option<(S::Key, S::Val)>,
}

/// Robin Hood insert: walking from home, an entry farther from its home
/// than the resident takes the slot and the resident walks on. An entry
/// that would end up `MAX_PROBE` or more from its home spills.
pub fn plan<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
    mut val: S::Val,
    allow_new: bool,
) -> io::Result<Plan<S>> {
    let mut writes = Vec::new();
    if let Some((idx, s)) = find(t, g, key)? {
        S::keep(&s.val(), &mut val);
        writes.push((idx, S::make(*key, val)));
        return Ok(Plan {
            kind: Put::Updated,
            writes,
            spill: None,
        });
    }
    if !allow_new {
        return Ok(Plan {
            kind: Put::Full,
            writes,
            spill: None,
        });
    }
    let mut cur = S::make(*key, val);
    let mut idx = home_of::<S>(g, key);
    let mut d = 0;
    // At most one lap: the load is at most one half, so an empty slot or a
    // spill comes first; the bound only guards a corrupt table.
    for _ in 0..=g.mask {
        if d >= MAX_PROBE {
            return Ok(Plan {
                kind: Put::NoRoom,
                writes,
                spill: Some((cur.key(), cur.val())),
            });
        }
        let s = t.read(idx)?;
        if !s.used() {
            writes.push((idx, cur));
            return Ok(Plan {
                kind: Put::Inserted,
                writes,
                spill: None,
            });
        }
        let od = dist::<S>(g, idx, &s);
        if od < d {
            writes.push((idx, cur));
            cur = s;
            d = od;
        }
        idx = idx.wrapping_add(1) & g.mask;
        d += 1;
    }
    Ok(Plan {
        kind: Put::NoRoom,
        writes,
        spill: Some((cur.key(), cur.val())),
    })
}

/// Makes the writes of `plan`, last slot first. Each write puts an entry
/// at its new place, one slot farther from home than its old one, before
/// the next write overwrites the old: every other key keeps a findable
/// copy at every moment, because each slot, old or new, satisfies the
/// Robin Hood order for every key whose place did not change. What a
/// lock-free reader can still meet is a slot caught half-written: a key
/// probing across it may stop early and miss (fail-open: one packet
/// passes that the next one drops).
pub fn apply<S: Slot>(t: &mut impl Slots<S>, plan: &Plan<S>) -> io::Result<()> {
    for (idx, s) in plan.writes.iter().rev() {
        t.write(*idx, s)?;
    }
    Ok(())
}

/// [`plan`] then [`apply`]; a spilled entry is left to the caller, so this
/// suits only tables whose caller tolerates that entry vanishing while it
/// writes the overflow map afterwards (tests).
pub fn put<S: Slot>(
    t: &mut impl Slots<S>,
    g: &TableGeom,
    key: &S::Key,
    val: S::Val,
    allow_new: bool,
) -> io::Result<(Put, Option<Entry<S>>)> {
    let p = plan(t, g, key, val, allow_new)?;
    apply(t, &p)?;
    Ok((p.kind, p.spill))
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
        let geom = cfg.tables[self.tbl];
        let mut count = 0u32;
        let mut order = Order::default();
        scan::<S>(self.arr, self.slots, |i, s| {
            count += s.used() as u32;
            order.next(&geom, i, s);
        })
        .map_err(io("reading", self.name))?;
        if !order.holds() {
            // Pins written by a linear-probing agent: lay them out again.
            self.relayout(&geom)?;
        }
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

    /// Rewrites the array in Robin Hood order: the entries that no longer
    /// fit go to the overflow map first, then the changed slots are written
    /// in one batch, backwards. Until that ends, a key may be missed by the
    /// early-terminating probe (fail-open, only on the first start after an
    /// upgrade from pins in plain linear-probing order).
    fn relayout(&self, g: &TableGeom) -> Result<(), TableError> {
        let mut old = vec![S::default(); self.slots as usize];
        scan::<S>(self.arr, self.slots, |i, s| {
            if let Some(d) = old.get_mut(i as usize) {
                *d = *s;
            }
        })
        .map_err(io("reading", self.name))?;
        let (new, spills) = robin_hood_layout(&old, g).map_err(io("reordering", self.name))?;
        if !spills.is_empty() {
            let mut cfg = self.read_config()?;
            cfg.tables[self.tbl].ovf += spills.len() as u32;
            self.write_config(&cfg)?;
            for (k, v) in &spills {
                sys::update(self.ovf, k, v, sys::BPF_ANY)
                    .map_err(io("writing overflow of", self.name))?;
            }
        }
        let mut snap = Snapshot {
            slots: new,
            dirty: BTreeMap::new(),
        };
        for (i, (o, n)) in old.iter().zip(&snap.slots).enumerate() {
            if o.used() != n.used() || (n.used() && o.key() != n.key()) {
                snap.dirty.insert(i as u32, ());
            }
        }
        if snap.dirty.is_empty() {
            return Ok(());
        }
        let idx = write_order(&snap, g.mask);
        let vals: Vec<S> = idx.iter().map(|&i| snap.slots[i as usize]).collect();
        sys::update_batch(self.arr, &idx, &vals).map_err(|(_, e)| TableError::Io {
            what: "writing",
            map: self.name,
            err: e,
        })?;
        Ok(())
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

    /// Slots the XDP program reads for `key`, and what linear probing
    /// without early termination would read (see [`probes`]).
    pub fn probes(&self, key: &S::Key) -> Result<(u32, u32), TableError> {
        let g = self.geom(&self.read_config()?)?;
        if g.count == 0 {
            return Ok((0, 0));
        }
        probes::<S>(&mut MapSlots(self.arr), &g, key).map_err(io("reading", self.name))
    }

    /// From one copy of the array: whether it is in Robin Hood order, and
    /// [`probes`] for each of `keys` (for benches and diagnostics).
    pub fn probe_survey(&self, keys: &[S::Key]) -> Result<(bool, Vec<(u32, u32)>), TableError> {
        let g = self.geom(&self.read_config()?)?;
        let mut copy = vec![S::default(); self.slots as usize];
        let mut order = Order::default();
        scan::<S>(self.arr, self.slots, |i, s| {
            order.next(&g, i, s);
            if let Some(d) = copy.get_mut(i as usize) {
                *d = *s;
            }
        })
        .map_err(io("reading", self.name))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(probes::<S>(&mut copy, &g, k).map_err(io("reading", self.name))?);
        }
        Ok((order.holds(), out))
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
        let mut ovf_keys: HashMap<S::Key, S::Val> = if start.ovf > 0 {
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
                ovf_keys.insert(*k, v);
                done += 1;
                continue;
            }
            let allow_new = count + ovf < cap;
            let p = if snapshot {
                plan::<S>(&mut snap, &g, k, *v, allow_new)
            } else {
                plan::<S>(&mut live, &g, k, *v, allow_new)
            }
            .map_err(io("reading", self.name))?;
            match p.kind {
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
                    // The spilled entry (maybe a resident the new key
                    // displaces) enters the overflow map, and `ovf` goes up,
                    // before its slot is given away.
                    let Some((sk, sv)) = p.spill else {
                        continue;
                    };
                    cfg.tables[self.tbl].ovf = ovf + 1;
                    self.write_config(&cfg)?;
                    if let Err(e) = sys::update(self.ovf, &sk, &sv, sys::BPF_ANY) {
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
                    ovf_keys.insert(sk, sv);
                    ovf += 1;
                }
            }
            if snapshot {
                apply::<S>(&mut snap, &p)
            } else {
                apply::<S>(&mut live, &p)
            }
            .map_err(io("writing", self.name))?;
            done += 1;
        }
        if snapshot && !snap.dirty.is_empty() {
            let idx = write_order(&snap, g.mask);
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

    /// Every used slot's entry lies within `MAX_PROBE` of its home, and
    /// each is at most one slot farther from home than the slot before it
    /// (an empty slot counting as distance -1): the Robin Hood order that
    /// early termination relies on.
    fn assert_robin_hood(slots: &[SlotV4], g: &TableGeom, step: usize) {
        let n = slots.len() as u32;
        for i in 0..n {
            let s = &slots[i as usize];
            if !s.used() {
                continue;
            }
            let d = dist::<SlotV4>(g, i, s);
            assert!(d < MAX_PROBE, "step {step}: slot {i} at distance {d}");
            let prev = &slots[(i.wrapping_sub(1) & g.mask) as usize];
            let pd = if prev.used() {
                dist::<SlotV4>(g, i.wrapping_sub(1) & g.mask, prev) as i64
            } else {
                -1
            };
            assert!(
                d as i64 <= pd + 1,
                "step {step}: slot {i} at {d} after {pd}"
            );
        }
    }

    /// Returns how many residents were spilled to make room for a new key.
    fn check_model(seed: u64, bits: u32, keyspace: u64, ops: usize) -> usize {
        let keys: Vec<[u8; 4]> = (0..keyspace as u32).map(u32::to_ne_bytes).collect();
        check_model_keys(seed, bits, &keys, ops)
    }

    fn check_model_keys(seed: u64, bits: u32, keys: &[[u8; 4]], ops: usize) -> usize {
        let mut spilled_residents = 0;
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
            let k = keys[(rng(&mut st) % keys.len() as u64) as usize];
            let others: HashMap<[u8; 4], u64> = model
                .iter()
                .filter(|(x, _)| **x != k && !ovf.contains_key(*x))
                .map(|(x, v)| (*x, *v))
                .collect();
            let mut slots = std::mem::take(&mut t.slots);
            if rng(&mut st) % 3 == 0 {
                let mut w = Watched {
                    slots,
                    g,
                    must: &others,
                };
                let had = remove::<SlotV4>(&mut w, &g, &k).unwrap();
                let in_ovf = ovf.remove(&k).is_some();
                assert_eq!(had || in_ovf, model.remove(&k).is_some(), "step {step}");
                slots = w.slots;
            } else {
                let v = step as u64 + 1;
                if ovf.contains_key(&k) {
                    ovf.insert(k, v);
                    model.insert(k, v);
                } else {
                    let p = plan::<SlotV4>(&mut slots, &g, &k, val(v), model.len() < cap).unwrap();
                    // A spilled resident is in the overflow map before any
                    // slot write, so only the others must stay in the table.
                    let mut others = others;
                    if let Some((sk, sv)) = p.spill {
                        others.remove(&sk);
                        ovf.insert(sk, sv.expires_ns);
                        if sk != k {
                            spilled_residents += 1;
                        }
                    }
                    let mut w = Watched {
                        slots,
                        g,
                        must: &others,
                    };
                    apply::<SlotV4>(&mut w, &p).unwrap();
                    slots = w.slots;
                    match p.kind {
                        Put::Inserted => assert!(model.insert(k, v).is_none()),
                        Put::Updated => assert!(model.insert(k, v).is_some()),
                        Put::NoRoom => assert!(model.insert(k, v).is_none()),
                        Put::Full => assert!(model.len() >= cap),
                    }
                }
            }
            t.slots = slots;
            assert_robin_hood(&t.slots, &g, step);
            let used = t.slots.iter().filter(|s| s.used != 0).count();
            assert_eq!(used + ovf.len(), model.len(), "step {step}");
            for (k, v) in &model {
                if ovf.contains_key(k) {
                    continue;
                }
                let got = find::<SlotV4>(&mut t.slots, &g, k).unwrap();
                assert_eq!(got.map(|(_, s)| s.val.expires_ns), Some(*v), "step {step}");
            }
            for (k, v) in &ovf {
                assert_eq!(model.get(k), Some(v), "step {step}: overflow {k:?}");
                assert!(find::<SlotV4>(&mut t.slots, &g, k).unwrap().is_none());
            }
        }
        spilled_residents
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
    fn model_crowded_homes_spill_residents() {
        // Keys whose homes fall in 6 neighbouring slots of 256: runs far
        // longer than MAX_PROBE, so new keys displace residents into the
        // overflow map and deletes shift them back.
        let mut spilled = 0;
        for seed in [3, 11, 2024] {
            let g = new_geom(256, seed);
            let keys: Vec<[u8; 4]> = (0u32..)
                .map(u32::to_ne_bytes)
                .filter(|k| home_of::<SlotV4>(&g, k).wrapping_sub(250) & g.mask < 6)
                .take(60)
                .collect();
            spilled += check_model_keys(seed, 8, &keys, 3000);
        }
        assert!(spilled > 0, "no resident was ever displaced into overflow");
    }

    fn same_home(g: &TableGeom, target: u32, n: usize) -> Vec<[u8; 4]> {
        (0u32..)
            .map(|x| x.to_ne_bytes())
            .filter(|k| home_of::<SlotV4>(g, k) == target)
            .take(n)
            .collect()
    }

    #[test]
    fn adversarial_same_home_goes_to_overflow() {
        // 20 keys with one home: the first MAX_PROBE fill the run, the rest
        // overflow; none vanishes.
        let g = new_geom(64, 3);
        let mut t = vec![SlotV4::default(); 64];
        let target = home_of::<SlotV4>(&g, &[0, 0, 0, 0]);
        let keys = same_home(&g, target, 20);
        let mut placed = 0;
        let mut overflow = 0;
        for k in &keys {
            match put::<SlotV4>(&mut t, &g, k, val(1), true).unwrap() {
                (Put::Inserted, None) => placed += 1,
                (Put::NoRoom, Some((s, _))) if s == *k => overflow += 1,
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
    fn displaced_resident_spills_not_the_newcomer() {
        // One key homed at H-1, MAX_PROBE homed at H: a second key homed at
        // H-1 is farther from home than the H residents from slot H on, so
        // it takes slot H and an H resident is pushed past reach.
        let g = new_geom(64, 9);
        let mut t = vec![SlotV4::default(); 64];
        let h = 20;
        let before = same_home(&g, h - 1, 2);
        let at = same_home(&g, h, MAX_PROBE as usize);
        assert_eq!(
            put::<SlotV4>(&mut t, &g, &before[0], val(1), true)
                .unwrap()
                .0,
            Put::Inserted
        );
        for k in &at {
            assert_eq!(
                put::<SlotV4>(&mut t, &g, k, val(2), true).unwrap().0,
                Put::Inserted
            );
        }
        let p = plan::<SlotV4>(&mut t, &g, &before[1], val(3), true).unwrap();
        assert_eq!(p.kind, Put::NoRoom);
        let (spilled, v) = p.spill.unwrap();
        // Ties do not swap, so the first resident displaced walks the whole
        // run and is the one pushed out.
        assert_eq!((spilled, v.expires_ns), (at[0], 2));
        apply::<SlotV4>(&mut t, &p).unwrap();
        assert_eq!(
            find::<SlotV4>(&mut t, &g, &before[1]).unwrap().unwrap().0,
            h
        );
        for k in at[1..].iter().chain(&before[..1]) {
            assert!(find::<SlotV4>(&mut t, &g, k).unwrap().is_some(), "{k:?}");
        }
        assert!(find::<SlotV4>(&mut t, &g, &spilled).unwrap().is_none());
        // A miss homed at H-1 stops at slot H+1: the H entry there sits one
        // slot from its home, the miss would be two; linear probing would
        // read on to MAX_PROBE.
        let miss = same_home(&g, h - 1, 3)[2];
        let (early, linear) = probes::<SlotV4>(&mut t, &g, &miss).unwrap();
        assert_eq!(early, 3);
        assert_eq!(linear, MAX_PROBE);
    }

    #[test]
    fn linear_probing_pins_are_reordered() {
        // A layout written by plain linear probing (first empty slot):
        // keys homed at 11 first, then keys homed at 10, which land beyond
        // them, farther from home than Robin Hood order allows.
        let g = new_geom(64, 17);
        let mut old = vec![SlotV4::default(); 64];
        let mut keys = same_home(&g, 11, 3);
        keys.extend(same_home(&g, 10, 3));
        let mut order = Order::default();
        for (x, k) in keys.iter().enumerate() {
            let h = home_of::<SlotV4>(&g, k);
            let free = (0..64)
                .map(|i| (h + i) & g.mask)
                .find(|&i| old[i as usize].used == 0)
                .unwrap();
            old[free as usize] = SlotV4::make(*k, val(x as u64));
        }
        for (i, s) in old.iter().enumerate() {
            order.next(&g, i as u32, s);
        }
        assert!(!order.holds());
        // Early termination misses a key homed at 10 stored past the 11s.
        assert!(
            find::<SlotV4>(&mut old.clone(), &g, &keys[5])
                .unwrap()
                .is_none()
        );
        let (mut new, spills) = robin_hood_layout(&old, &g).unwrap();
        assert!(spills.is_empty());
        let mut order = Order::default();
        for (i, s) in new.iter().enumerate() {
            order.next(&g, i as u32, s);
        }
        assert!(order.holds());
        assert_robin_hood(&new, &g, 0);
        for (x, k) in keys.iter().enumerate() {
            let got = find::<SlotV4>(&mut new, &g, k).unwrap();
            assert_eq!(got.map(|(_, s)| s.val.expires_ns), Some(x as u64));
        }
    }

    #[test]
    fn batch_write_order_keeps_old_keys_findable() {
        // A batch planned on a snapshot, then written in `write_order` onto
        // the live copy: after every single write, every key that was there
        // before (and did not spill) is still found. Homes crowd around the
        // wrap-around so runs cross the end of the array.
        for seed in [5, 77, 4242] {
            let g = new_geom(256, seed);
            let keys: Vec<[u8; 4]> = (0u32..)
                .map(u32::to_ne_bytes)
                .filter(|k| home_of::<SlotV4>(&g, k).wrapping_sub(250) & g.mask < 10)
                .take(90)
                .collect();
            let mut live = vec![SlotV4::default(); 256];
            for k in &keys[..40] {
                put::<SlotV4>(&mut live, &g, k, val(1), true).unwrap();
            }
            let mut snap = Snapshot {
                slots: live.clone(),
                dirty: BTreeMap::new(),
            };
            let mut must: HashMap<[u8; 4], u64> = HashMap::new();
            for (i, s) in live.iter().enumerate() {
                if s.used != 0 {
                    must.insert(s.key, s.val.expires_ns);
                    assert!(dist::<SlotV4>(&g, i as u32, s) < MAX_PROBE);
                }
            }
            for k in &keys[40..] {
                let p = plan::<SlotV4>(&mut snap, &g, k, val(2), true).unwrap();
                if let Some((sk, _)) = p.spill {
                    must.remove(&sk);
                }
                apply::<SlotV4>(&mut snap, &p).unwrap();
            }
            let order = write_order(&snap, g.mask);
            let mut w = Watched {
                slots: live,
                g,
                must: &must,
            };
            for i in order {
                let s = snap.slots[i as usize];
                w.write(i, &s).unwrap();
            }
            assert_eq!(w.slots, snap.slots);
            assert_robin_hood(&w.slots, &g, 0);
        }
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
            (Put::Inserted, None)
        );
        let (i, _) = find::<SlotV6>(&mut t, &g, &k).unwrap().unwrap();
        t[i as usize].val.drops = 9;
        assert_eq!(
            put::<SlotV6>(&mut t, &g, &k, val(2), true).unwrap(),
            (Put::Updated, None)
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
