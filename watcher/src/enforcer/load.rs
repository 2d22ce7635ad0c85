//! Loading the XDP object and creating or reusing the pinned maps.
use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{Map, MapData, MapType, PerCpuArray},
    programs::Xdp,
};
use fail2xdp_common::{
    AllowValue, BanValue, Config, JailName, PROG_NAME, PfxKeyV4, PfxKeyV6, SlotA4, SlotA6, SlotP4,
    SlotP6, SlotV4, SlotV6, Stats, capacity, map,
};
use log::{info, warn};

use super::{Enforcer, EnforcerError, Maps, io_err, lock, table::slots_for};

/// Sizes the maps get when they are first created (pinned maps keep theirs).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacities {
    pub bans_v4: u32,
    pub bans_v6: u32,
    pub pfx_v4: u32,
    pub pfx_v6: u32,
    pub allow_v4: u32,
    pub allow_v6: u32,
    pub jails: u32,
}

impl Capacities {
    /// Every size with its configuration key, for validation and messages.
    pub fn named(&self) -> [(&'static str, u32); 7] {
        [
            ("bans_v4", self.bans_v4),
            ("bans_v6", self.bans_v6),
            ("pfx_v4", self.pfx_v4),
            ("pfx_v6", self.pfx_v6),
            ("allow_v4", self.allow_v4),
            ("allow_v6", self.allow_v6),
            ("jails", self.jails),
        ]
    }
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            bans_v4: capacity::BANS_V4,
            bans_v6: capacity::BANS_V6,
            pfx_v4: capacity::PFX_V4,
            pfx_v6: capacity::PFX_V6,
            allow_v4: capacity::ALLOW_V4,
            allow_v6: capacity::ALLOW_V6,
            jails: capacity::JAILS,
        }
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn is_bpffs(p: &Path) -> io::Result<bool> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes only into `st`.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a bpffs, mounting /sys/fs/bpf if needed.
pub(crate) fn ensure_pin_dir(pin_dir: &Path) -> Result<(), EnforcerError> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root)
        && !is_bpffs(root).map_err(io_err(format!("statfs {BPFFS_ROOT}")))?
    {
        info!("mounting bpffs at {BPFFS_ROOT}");
        let (src, dst, ty) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: constant NUL-terminated strings, no data argument.
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) } != 0
        {
            return Err(io_err(format!("mounting bpffs at {BPFFS_ROOT}"))(
                io::Error::last_os_error(),
            ));
        }
    }
    std::fs::create_dir_all(pin_dir).map_err(io_err(format!("creating {}", pin_dir.display())))?;
    if !is_bpffs(pin_dir).map_err(io_err(format!("statfs {}", pin_dir.display())))? {
        return Err(EnforcerError::Io {
            what: format!("pin directory {}", pin_dir.display()),
            err: io::Error::other("not on a bpf filesystem (mount -t bpf bpf DIR)"),
        });
    }
    Ok(())
}

/// Expected kernel shape of each map, in `map::ALL` order.
fn expected(name: &str) -> (MapType, usize, usize) {
    match name {
        map::BANS_V4 => (MapType::Array, 4, size_of::<SlotV4>()),
        map::BANS_V6 => (MapType::Array, 4, size_of::<SlotV6>()),
        map::PFX_V4 => (MapType::Array, 4, size_of::<SlotP4>()),
        map::PFX_V6 => (MapType::Array, 4, size_of::<SlotP6>()),
        map::BANS_V4_OVF => (MapType::Hash, 4, size_of::<BanValue>()),
        map::BANS_V6_OVF => (MapType::Hash, 16, size_of::<BanValue>()),
        map::PFX_V4_OVF => (MapType::Hash, size_of::<PfxKeyV4>(), size_of::<BanValue>()),
        map::PFX_V6_OVF => (MapType::Hash, size_of::<PfxKeyV6>(), size_of::<BanValue>()),
        map::ALLOW_V4 => (MapType::Array, 4, size_of::<SlotA4>()),
        map::ALLOW_V6 => (MapType::Array, 4, size_of::<SlotA6>()),
        map::ALLOW_V4_OVF => (
            MapType::Hash,
            size_of::<PfxKeyV4>(),
            size_of::<AllowValue>(),
        ),
        map::ALLOW_V6_OVF => (
            MapType::Hash,
            size_of::<PfxKeyV6>(),
            size_of::<AllowValue>(),
        ),
        map::CONFIG => (MapType::Array, 4, size_of::<Config>()),
        map::STATS => (MapType::PerCpuArray, 4, size_of::<Stats>()),
        _ => (MapType::Hash, 4, size_of::<JailName>()),
    }
}

fn open_pinned(pin_dir: &Path, name: &'static str) -> Result<(MapData, u32), EnforcerError> {
    let path = pin_dir.join(name);
    let md = MapData::from_pin(&path).map_err(|e| match e {
        aya::maps::MapError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::NotFound => {
            EnforcerError::NotPinned(pin_dir.to_path_buf())
        }
        e => EnforcerError::Io {
            what: format!("opening {}", path.display()),
            err: io::Error::other(e),
        },
    })?;
    let info = md.info().map_err(|e| EnforcerError::Io {
        what: format!("querying {}", path.display()),
        err: io::Error::other(e),
    })?;
    let (ty, k, v) = expected(name);
    let got_ty = info.map_type().ok();
    if got_ty != Some(ty) || info.key_size() as usize != k || info.value_size() as usize != v {
        return Err(EnforcerError::MapMismatch {
            map: name,
            detail: format!(
                "type {:?} key {} value {}, expected {:?} key {k} value {v}",
                got_ty,
                info.key_size(),
                info.value_size(),
                ty
            ),
        });
    }
    Ok((md, info.max_entries()))
}

fn open_maps(pin_dir: &Path) -> Result<Maps, EnforcerError> {
    let mut capacity = [0u32; 15];
    let mut get = |i: usize| -> Result<MapData, EnforcerError> {
        let (md, cap) = open_pinned(pin_dir, map::ALL[i])?;
        capacity[i] = cap;
        Ok(md)
    };
    let (bans_v4, bans_v6, pfx_v4, pfx_v6) = (get(0)?, get(1)?, get(2)?, get(3)?);
    let (allow_v4, allow_v6, config) = (get(4)?, get(5)?, get(6)?);
    let stats_md = get(7)?;
    let jails = get(8)?;
    let (bans_v4_ovf, bans_v6_ovf, pfx_v4_ovf, pfx_v6_ovf) =
        (get(9)?, get(10)?, get(11)?, get(12)?);
    let (allow_v4_ovf, allow_v6_ovf) = (get(13)?, get(14)?);
    let stats = PerCpuArray::try_from(Map::PerCpuArray(stats_md)).map_err(|e| {
        EnforcerError::MapMismatch {
            map: map::STATS,
            detail: e.to_string(),
        }
    })?;
    Ok(Maps {
        bans_v4,
        bans_v6,
        pfx_v4,
        pfx_v6,
        allow_v4,
        allow_v6,
        config,
        jails,
        bans_v4_ovf,
        bans_v6_ovf,
        pfx_v4_ovf,
        pfx_v6_ovf,
        allow_v4_ovf,
        allow_v6_ovf,
        stats,
        capacity,
    })
}

impl Enforcer {
    /// Opens the maps pinned by an earlier `load` (the CLI without agent).
    pub fn open(pin_dir: &Path) -> Result<Self, EnforcerError> {
        if !pin_dir.join(map::BANS_V4).exists() {
            return Err(EnforcerError::NotPinned(pin_dir.to_path_buf()));
        }
        let dir =
            lock::open_dir(pin_dir).map_err(io_err(format!("opening {}", pin_dir.display())))?;
        let maps = open_maps(pin_dir)?;
        Ok(Enforcer {
            pin_dir: pin_dir.to_path_buf(),
            dir,
            maps,
            ebpf: None,
        })
    }

    /// `open`, or `load` with default capacities when nothing is pinned yet,
    /// so bans can be staged before the program is first attached.
    pub fn open_or_create(pin_dir: &Path) -> Result<Self, EnforcerError> {
        match Self::open(pin_dir) {
            Err(EnforcerError::NotPinned(_)) => {
                info!(
                    "creating the pinned maps under {} with default capacities",
                    pin_dir.display()
                );
                Self::load(pin_dir, &Capacities::default())
            }
            r => r,
        }
    }

    /// Loads the embedded XDP object (verifier included), reusing maps pinned
    /// under `pin_dir` or creating and pinning them with `caps`.
    pub fn load(pin_dir: &Path, caps: &Capacities) -> Result<Self, EnforcerError> {
        ensure_pin_dir(pin_dir)?;
        let paths: Vec<(&'static str, PathBuf)> =
            map::ALL.iter().map(|&n| (n, pin_dir.join(n))).collect();
        // The loader would reuse a pin of another shape and fail in the
        // verifier with a cryptic message (e.g. hash-map pins of an older
        // version where the ban tables are arrays now): say what it is.
        for (name, path) in &paths {
            if path.exists() {
                open_pinned(pin_dir, name)?;
            }
        }
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        for (name, cap) in [
            (map::BANS_V4, slots_for(caps.bans_v4)),
            (map::BANS_V6, slots_for(caps.bans_v6)),
            (map::PFX_V4, slots_for(caps.pfx_v4)),
            (map::PFX_V6, slots_for(caps.pfx_v6)),
            (map::ALLOW_V4, slots_for(caps.allow_v4)),
            (map::ALLOW_V6, slots_for(caps.allow_v6)),
            (map::JAILS, caps.jails),
        ] {
            loader.map_max_entries(name, cap.max(1));
        }
        let mut ebpf = loader
            .load(crate::EBPF_OBJECT)
            .map_err(|e| EnforcerError::Load(Box::new(e)))?;
        for name in map::ALL {
            if ebpf.map(name).is_none() {
                return Err(EnforcerError::ObjectLacks(format!("map {name}")));
            }
        }
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| EnforcerError::ObjectLacks(format!("program {PROG_NAME}")))?
            .try_into()?;
        prog.load()?;

        let dir =
            lock::open_dir(pin_dir).map_err(io_err(format!("opening {}", pin_dir.display())))?;
        let maps = open_maps(pin_dir)?;
        for (i, name) in map::ALL.iter().enumerate() {
            let want = match *name {
                map::CONFIG | map::STATS => continue,
                map::BANS_V4_OVF
                | map::BANS_V6_OVF
                | map::PFX_V4_OVF
                | map::PFX_V6_OVF
                | map::ALLOW_V4_OVF
                | map::ALLOW_V6_OVF => continue,
                map::BANS_V4 => slots_for(caps.bans_v4),
                map::BANS_V6 => slots_for(caps.bans_v6),
                map::PFX_V4 => slots_for(caps.pfx_v4),
                map::PFX_V6 => slots_for(caps.pfx_v6),
                map::ALLOW_V4 => slots_for(caps.allow_v4),
                map::ALLOW_V6 => slots_for(caps.allow_v6),
                _ => caps.jails,
            };
            if maps.capacity[i] != want.max(1) {
                warn!(
                    "pinned map {name} keeps its capacity {} (configured {want}); `fail2xdp detach` and restart to resize",
                    maps.capacity[i]
                );
            }
        }
        let e = Enforcer {
            pin_dir: pin_dir.to_path_buf(),
            dir,
            maps,
            ebpf: Some(ebpf),
        };
        e.repair()?;
        Ok(e)
    }
}
