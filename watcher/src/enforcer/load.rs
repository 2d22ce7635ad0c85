//! Loading the XDP object and creating or reusing the pinned maps.
use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

use aya::{EbpfLoader, programs::Xdp};
use fail2xdp_common::{LAYOUT_VERSION, PROG_NAME, capacity, map};
use log::{info, warn};

use super::{
    Enforcer, EnforcerError, io_err, lock,
    maps::{self, MapId},
    table::{buckets_for, entries_for},
};

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
    /// `n` slots in every ban and allowlist table and 64 jails: small maps
    /// for tests and fuzzing (every table's arrays are preallocated).
    pub fn small(n: u32) -> Self {
        Capacities {
            bans_v4: n,
            bans_v6: n,
            pfx_v4: n,
            pfx_v6: n,
            allow_v4: n,
            allow_v6: n,
            jails: 64,
        }
    }

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
    // SAFETY: statfs is plain data; all-zero is a valid value to overwrite.
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
            source: io::Error::other("not on a bpf filesystem (mount -t bpf bpf DIR)"),
        });
    }
    Ok(())
}

impl Capacities {
    /// The size each map is created with (CONFIG and STATS are fixed by
    /// the object).
    fn max_entries(&self, id: MapId) -> Option<u32> {
        use MapId::*;
        Some(match id {
            BansV4 => buckets_for(self.bans_v4),
            BansV4Ent | BansV4Meta => entries_for(self.bans_v4),
            BansV6 => buckets_for(self.bans_v6),
            BansV6Ent | BansV6Meta => entries_for(self.bans_v6),
            PfxV4 => buckets_for(self.pfx_v4),
            PfxV4Ent | PfxV4Meta => entries_for(self.pfx_v4),
            PfxV6 => buckets_for(self.pfx_v6),
            PfxV6Ent | PfxV6Meta => entries_for(self.pfx_v6),
            AllowV4 => buckets_for(self.allow_v4),
            AllowV4Ent => entries_for(self.allow_v4),
            AllowV6 => buckets_for(self.allow_v6),
            AllowV6Ent => entries_for(self.allow_v6),
            Ports => capacity::PORTS,
            Jails => self.jails.max(1),
            Config | Stats => return None,
        })
    }
}

/// Pins of the previous layout refuse to be reused: say what they are
/// instead of failing in the loader or, worse, reading them as new maps.
fn refuse_legacy(pin_dir: &Path) -> Result<(), EnforcerError> {
    for name in map::LEGACY {
        if pin_dir.join(name).exists() {
            return Err(EnforcerError::MapMismatch {
                map: name,
                detail: "a map of the open-addressing layout".into(),
            });
        }
    }
    maps::check_pinned(pin_dir)
}

/// The embedded object opened with its maps pinned under `pin_dir` (new
/// ones sized by `caps`), its programs not yet loaded. With `extension`,
/// the XDP entry point is to be loaded as an extension of another program
/// (libxdp's dispatcher) instead.
pub(super) fn object(
    pin_dir: &Path,
    caps: Option<&Capacities>,
    extension: bool,
) -> Result<aya::Ebpf, EnforcerError> {
    // Records the agent's logger would drop are not even written: the
    // level is fixed at load, before the verifier sees the program.
    let level = super::kernel_log::level();
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, true);
    for id in MapId::ALL {
        loader.map_pin_path(id.name(), pin_dir.join(id.name()));
        if let Some(n) = caps.and_then(|c| c.max_entries(id)) {
            loader.map_max_entries(id.name(), n);
        }
    }
    if extension {
        loader.extension(PROG_NAME);
    }
    let ebpf = loader
        .load(crate::EBPF_OBJECT)
        .map_err(|e| EnforcerError::Load(Box::new(e)))?;
    for id in MapId::ALL {
        if ebpf.map(id.name()).is_none() {
            return Err(EnforcerError::ObjectLacks(format!("map {}", id.name())));
        }
    }
    Ok(ebpf)
}

impl Enforcer {
    /// Opens the maps pinned by an earlier `load` (the CLI without agent).
    pub fn open(pin_dir: &Path) -> Result<Self, EnforcerError> {
        if !pin_dir.join(map::BANS_V4).exists() {
            return Err(EnforcerError::NotPinned(pin_dir.to_path_buf()));
        }
        refuse_legacy(pin_dir)?;
        let dir =
            lock::open_dir(pin_dir).map_err(io_err(format!("opening {}", pin_dir.display())))?;
        let maps = maps::open(pin_dir)?;
        let e = Enforcer {
            pin_dir: pin_dir.to_path_buf(),
            dir,
            maps,
            ebpf: None,
            kernel_logs: Vec::new(),
        };
        match e.maps.config()?.version {
            LAYOUT_VERSION => {}
            // Created but never set up (a crash right after creation).
            0 => e.repair()?,
            v => {
                return Err(EnforcerError::MapMismatch {
                    map: map::CONFIG,
                    detail: format!("layout version {v}, this agent writes {LAYOUT_VERSION}"),
                });
            }
        }
        Ok(e)
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
        // The loader would reuse a pin of another shape and fail in the
        // verifier with a cryptic message, or misread it: say what it is.
        refuse_legacy(pin_dir)?;
        let mut ebpf = object(pin_dir, Some(caps), false)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| EnforcerError::ObjectLacks(format!("program {PROG_NAME}")))?
            .try_into()?;
        prog.load()?;

        let dir =
            lock::open_dir(pin_dir).map_err(io_err(format!("opening {}", pin_dir.display())))?;
        let maps = maps::open(pin_dir)?;
        for id in MapId::ALL {
            if let Some(want) = caps.max_entries(id)
                && maps.max_entries(id) != want
            {
                warn!(
                    "pinned map {} keeps its size {} (configured {want}); `fail2xdp detach` and restart to resize",
                    id.name(),
                    maps.max_entries(id)
                );
            }
        }
        let e = Enforcer {
            pin_dir: pin_dir.to_path_buf(),
            dir,
            maps,
            ebpf: Some(ebpf),
            kernel_logs: Vec::new(),
        };
        e.repair()?;
        Ok(e)
    }
}
