//! The pinned maps by name: which maps exist, the shape each must have
//! (checked once, when it is opened), and memory mappings of the arrays
//! that userspace reads and writes as memory.
use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::Path,
    ptr::NonNull,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Pod,
    maps::{Map, MapData, MapType, PerCpuArray},
};
use fail2xdp_common::{
    AllowEntryV4, AllowEntryV6, BanEntry, BanEntryP6, BanEntryV6, BanMeta, Bucket, Config,
    JailName, PortList, Stats, map,
};

use super::EnforcerError;

/// Every map of the layout, in `fail2xdp_common::map::ALL` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapId {
    BansV4,
    BansV4Ent,
    BansV4Meta,
    BansV6,
    BansV6Ent,
    BansV6Meta,
    PfxV4,
    PfxV4Ent,
    PfxV4Meta,
    PfxV6,
    PfxV6Ent,
    PfxV6Meta,
    AllowV4,
    AllowV4Ent,
    AllowV6,
    AllowV6Ent,
    Ports,
    Config,
    Stats,
    Jails,
}

/// BPF_F_MMAPABLE in a map's flags.
const F_MMAPABLE: u32 = 1 << 10;

/// What a map must look like in the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    ty: MapType,
    key: usize,
    value: usize,
    mmapable: bool,
}

impl MapId {
    pub const ALL: [MapId; 20] = [
        MapId::BansV4,
        MapId::BansV4Ent,
        MapId::BansV4Meta,
        MapId::BansV6,
        MapId::BansV6Ent,
        MapId::BansV6Meta,
        MapId::PfxV4,
        MapId::PfxV4Ent,
        MapId::PfxV4Meta,
        MapId::PfxV6,
        MapId::PfxV6Ent,
        MapId::PfxV6Meta,
        MapId::AllowV4,
        MapId::AllowV4Ent,
        MapId::AllowV6,
        MapId::AllowV6Ent,
        MapId::Ports,
        MapId::Config,
        MapId::Stats,
        MapId::Jails,
    ];

    /// The kernel map name, static name in the object and pin file name.
    pub fn name(self) -> &'static str {
        map::ALL[self as usize]
    }

    fn shape(self) -> Shape {
        use MapId::*;
        let array = |value: usize| Shape {
            ty: MapType::Array,
            key: 4,
            value,
            mmapable: true,
        };
        match self {
            BansV4 | BansV6 | PfxV4 | PfxV6 | AllowV4 | AllowV6 => array(size_of::<Bucket>()),
            BansV4Ent | PfxV4Ent => array(size_of::<BanEntry>()),
            BansV6Ent => array(size_of::<BanEntryV6>()),
            PfxV6Ent => array(size_of::<BanEntryP6>()),
            AllowV4Ent => array(size_of::<AllowEntryV4>()),
            AllowV6Ent => array(size_of::<AllowEntryV6>()),
            BansV4Meta | BansV6Meta | PfxV4Meta | PfxV6Meta => array(size_of::<BanMeta>()),
            Ports => array(size_of::<PortList>()),
            Config => Shape {
                ty: MapType::Array,
                key: 4,
                value: size_of::<fail2xdp_common::Config>(),
                mmapable: false,
            },
            Stats => Shape {
                ty: MapType::PerCpuArray,
                key: 4,
                value: size_of::<fail2xdp_common::Stats>(),
                mmapable: false,
            },
            Jails => Shape {
                ty: MapType::Hash,
                key: 4,
                value: size_of::<JailName>(),
                mmapable: false,
            },
        }
    }
}

/// A shared read-write mapping of a whole mmapable array map. Elements lie
/// at a stride of their value size rounded up to 8 from a page-aligned
/// start, so every 8-byte word of an element can be accessed atomically.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    stride: usize,
    elems: u32,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomic
// word loads and stores; it lives until Drop unmaps it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, value_size: usize, elems: u32) -> io::Result<Self> {
        let stride = value_size.next_multiple_of(8);
        let len = (stride * elems as usize)
            .next_multiple_of(page_size())
            .max(page_size());
        // SAFETY: a fresh shared mapping of `len` bytes of the map; the
        // kernel refuses it unless the map is mmapable and `len` fits it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Mapping {
            ptr,
            len,
            stride,
            elems,
        })
    }

    pub fn elems(&self) -> u32 {
        self.elems
    }

    /// Word `w` of element `i`; `None` out of range.
    fn word(&self, i: u32, w: usize) -> Option<&AtomicU64> {
        if i >= self.elems || (w + 1) * 8 > self.stride {
            return None;
        }
        let off = i as usize * self.stride + w * 8;
        // SAFETY: off + 8 <= elems * stride <= len, and off is 8-aligned in
        // a page-aligned mapping; AtomicU64 has the layout of u64, and the
        // memory stays mapped for the lifetime of &self.
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() })
    }

    /// A copy of element `i` (`T` zeroed if out of range). Aligned 8-byte
    /// words are never read torn; the XDP program may change a word (a
    /// drop counter) between the reads of two words.
    pub fn read<T: Pod + Default>(&self, i: u32) -> T {
        if i >= self.elems || size_of::<T>() > self.stride {
            return T::default();
        }
        // SAFETY: element i lies within the mapping (i < elems, and T fits
        // its stride), 8-aligned; T is Pod, so any bytes are a value. A
        // volatile read, since the XDP program writes there concurrently.
        unsafe {
            std::ptr::read_volatile(self.ptr.as_ptr().add(i as usize * self.stride).cast::<T>())
        }
    }

    /// Asks the CPU to start loading element `i` into the cache (a batch
    /// touches buckets all over a large table; loads overlap this way).
    pub fn prefetch(&self, i: u32) {
        if i >= self.elems {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: a prefetch is only a hint: it reads nothing and cannot
            // fault; the address lies within the mapping anyway.
            unsafe {
                let p = self.ptr.as_ptr().add(i as usize * self.stride);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
            }
        }
    }

    /// Word `w` of element `i` (0 out of range).
    pub fn load(&self, i: u32, w: usize) -> u64 {
        self.word(i, w).map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// One atomic store: a reader sees the old or the new word. Release,
    /// so stores made before it are visible to whoever sees this one.
    pub fn store(&self, i: u32, w: usize, v: u64) {
        if let Some(a) = self.word(i, w) {
            a.store(v, Ordering::Release);
        }
    }

    /// Writes element `i` word by word, `last` word last.
    pub fn write<T: Pod>(&self, i: u32, v: &T, last: usize) {
        let n = size_of::<T>();
        let mut buf = [0u8; 64];
        if n > buf.len() {
            return;
        }
        // SAFETY: T is Pod, so its bytes may be read as plain bytes.
        unsafe { std::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), buf.as_mut_ptr(), n) };
        let words = self.stride / 8;
        let word = |w: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[w * 8..w * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        for w in (0..words).filter(|&w| w != last) {
            self.store(i, w, word(w));
        }
        self.store(i, last, word(last));
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Every pinned map of one instance, opened and checked.
pub(crate) struct Maps {
    data: Vec<Option<MapData>>,
    max_entries: [u32; MapId::ALL.len()],
    /// Mapped on first use: the kernel maps every page of an array map at
    /// mmap time, so a mapping costs the process RSS of the whole array
    /// (about 160 MiB at the default capacities) whether or not it is
    /// read. A dry run, or a process that only lists, maps none or few.
    mem: Vec<OnceLock<Mapping>>,
    stats: PerCpuArray<MapData, Stats>,
}

impl Maps {
    pub fn fd(&self, id: MapId) -> Result<BorrowedFd<'_>, EnforcerError> {
        match &self.data[id as usize] {
            Some(md) => Ok(md.fd().as_fd()),
            None => Err(EnforcerError::MapMismatch {
                map: id.name(),
                detail: "not a plain map".into(),
            }),
        }
    }

    pub fn max_entries(&self, id: MapId) -> u32 {
        self.max_entries[id as usize]
    }

    /// The memory of a mmapable map, mapped the first time it is asked for.
    pub fn mem(&self, id: MapId) -> Result<&Mapping, EnforcerError> {
        let slot = &self.mem[id as usize];
        if let Some(m) = slot.get() {
            return Ok(m);
        }
        let shape = id.shape();
        if !shape.mmapable {
            return Err(EnforcerError::MapMismatch {
                map: id.name(),
                detail: "not memory-mapped".into(),
            });
        }
        let m = Mapping::new(self.fd(id)?, shape.value, self.max_entries(id)).map_err(|e| {
            EnforcerError::Io {
                what: format!("mapping {} into memory", id.name()),
                source: e,
            }
        })?;
        // Two threads racing here both map; the loser's mapping is unmapped.
        Ok(slot.get_or_init(|| m))
    }

    pub fn stats(&self) -> &PerCpuArray<MapData, Stats> {
        &self.stats
    }

    pub fn config(&self) -> Result<Config, EnforcerError> {
        let fd = self.fd(MapId::Config)?;
        Ok(super::sys::lookup::<u32, Config>(fd, &0)
            .map_err(super::io_err("reading CONFIG"))?
            .unwrap_or(Config::EMPTY))
    }

    pub fn set_config(&self, cfg: &Config) -> Result<(), EnforcerError> {
        let fd = self.fd(MapId::Config)?;
        super::sys::update(fd, &0u32, cfg, super::sys::BPF_ANY)
            .map_err(super::io_err("writing CONFIG"))
    }
}

/// Opens the pin of `id` and checks its type, key and value size and
/// flags; returns it with its max_entries.
fn open_pinned(pin_dir: &Path, id: MapId) -> Result<(MapData, u32), EnforcerError> {
    let path = pin_dir.join(id.name());
    let md = MapData::from_pin(&path).map_err(|e| match e {
        aya::maps::MapError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::NotFound => {
            EnforcerError::NotPinned(pin_dir.to_path_buf())
        }
        e => EnforcerError::Io {
            what: format!("opening {}", path.display()),
            source: io::Error::other(e),
        },
    })?;
    let info = md.info().map_err(|e| EnforcerError::Io {
        what: format!("querying {}", path.display()),
        source: io::Error::other(e),
    })?;
    let want = id.shape();
    let got = Shape {
        ty: info.map_type().unwrap_or(MapType::Unspecified),
        key: info.key_size() as usize,
        value: info.value_size() as usize,
        mmapable: info.map_flags() & F_MMAPABLE != 0,
    };
    if got != want {
        return Err(EnforcerError::MapMismatch {
            map: id.name(),
            detail: format!(
                "type {:?} key {} value {}{}, expected {:?} key {} value {}{}",
                got.ty,
                got.key,
                got.value,
                if got.mmapable { " mmapable" } else { "" },
                want.ty,
                want.key,
                want.value,
                if want.mmapable { " mmapable" } else { "" },
            ),
        });
    }
    Ok((md, info.max_entries()))
}

/// Checks the shape of whichever of the maps are pinned under `pin_dir`
/// (before a load would reuse them).
pub(crate) fn check_pinned(pin_dir: &Path) -> Result<(), EnforcerError> {
    for id in MapId::ALL {
        if pin_dir.join(id.name()).exists() {
            open_pinned(pin_dir, id)?;
        }
    }
    Ok(())
}

pub(crate) fn open(pin_dir: &Path) -> Result<Maps, EnforcerError> {
    let mut data = Vec::with_capacity(MapId::ALL.len());
    let mut mem = Vec::with_capacity(MapId::ALL.len());
    let mut max_entries = [0u32; MapId::ALL.len()];
    let mut stats = None;
    for id in MapId::ALL {
        let (md, n) = open_pinned(pin_dir, id)?;
        max_entries[id as usize] = n;
        mem.push(OnceLock::new());
        if id == MapId::Stats {
            stats = Some(PerCpuArray::try_from(Map::PerCpuArray(md)).map_err(|e| {
                EnforcerError::MapMismatch {
                    map: map::STATS,
                    detail: e.to_string(),
                }
            })?);
            data.push(None);
        } else {
            data.push(Some(md));
        }
    }
    let stats = stats.ok_or(EnforcerError::MapMismatch {
        map: map::STATS,
        detail: "missing".into(),
    })?;
    Ok(Maps {
        data,
        max_entries,
        mem,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_name_list() {
        for (i, id) in MapId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(id.name(), map::ALL[i]);
            assert!(
                id.name().len() <= 15,
                "{} is too long for a map name",
                id.name()
            );
        }
        assert_eq!(MapId::Jails.name(), map::JAILS);
        assert_eq!(MapId::BansV4.name(), map::BANS_V4);
    }
}
