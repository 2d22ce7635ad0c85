//! libxdp's dispatcher protocol (xdp-tools `lib/libxdp/protocol.org`,
//! dispatcher version 2): when an interface already runs XDP programs
//! through libxdp's dispatcher (xdp-filter, xdp-loader), fail2xdp becomes
//! one more program in it instead of refusing or replacing it.
//!
//! The dispatcher is an XDP program attached without a link; its `prog0`..
//! `prog9` stubs are replaced by the member programs (freplace), in order of
//! run priority, and its read-only config says how many run, with which
//! priority, and on which return codes the next one runs. Changing the
//! members means building a new dispatcher with all of them, pinning it the
//! way libxdp does (`<bpffs>/xdp/dispatch-IFINDEX-ID/progN-{prog,link}`),
//! swapping it in with one atomic netlink replace, and unpinning the old
//! one; all under the flock on `<bpffs>/xdp` that libxdp takes too.
use std::{
    fs::{self, File},
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader, Pod,
    programs::{Extension, Xdp},
};

use super::{
    btf::Btf,
    netlink::{self, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XdpAttached},
    sys,
};

/// fail2xdp's run priority: before programs at libxdp's default (50) and
/// xdp-filter's (10), so a banned flood costs one lookup and nothing else.
pub const RUN_PRIO: u32 = 5;
/// On XDP_PASS the next program runs; a drop ends the chain.
const XDP_PASS: u32 = 2;
/// What an unreplaced stub returns; always in the chain-call bitmap.
const RETVAL: u32 = 31;
const MAX_PROGS: usize = 10;
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
/// BPF_F_RDONLY_PROG on the dispatcher's config map.
const F_RDONLY_PROG: u32 = 1 << 7;

/// `struct xdp_dispatcher_config`, version 2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conf {
    magic: u8,
    version: u8,
    num: u8,
    frags: u8,
    chain: [u32; MAX_PROGS],
    prios: [u32; MAX_PROGS],
    flags: [u32; MAX_PROGS],
}

// SAFETY: repr(C), integers only, no padding (4 bytes then u32 arrays).
unsafe impl Pod for Conf {}

const _: () = assert!(size_of::<Conf>() == 124);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("loading libxdp's dispatcher object {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("loading libxdp's dispatcher program")]
    Program(#[from] aya::programs::ProgramError),
}

fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> DispatchError {
    let what = what.into();
    move |source| DispatchError::Io { what, source }
}

/// libxdp's directory under bpffs: `$LIBXDP_BPFFS/xdp`, by default
/// `/sys/fs/bpf/xdp`.
pub fn libxdp_dir() -> PathBuf {
    let root = std::env::var_os("LIBXDP_BPFFS")
        .map_or_else(|| PathBuf::from("/sys/fs/bpf"), PathBuf::from);
    root.join("xdp")
}

/// libxdp's lock: an flock on its directory, held while dispatchers and
/// their pins change.
pub struct XdpLock(File);

impl XdpLock {
    pub fn take() -> Result<Self, DispatchError> {
        let dir = libxdp_dir();
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let f = super::lock::open_dir(&dir).map_err(io(format!("opening {}", dir.display())))?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(XdpLock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io(format!("locking {}", dir.display()))(e));
            }
        }
    }
}

impl Drop for XdpLock {
    fn drop(&mut self) {
        // SAFETY: as in `take`; closing the fd would release it as well.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// One program in a dispatcher.
#[derive(Debug)]
pub struct Member {
    pub prog: OwnedFd,
    pub id: u32,
    pub name: String,
    pub prio: u32,
    /// Chain-call bitmap without the stub bit.
    pub chain: u32,
    pub flags: u32,
}

impl Member {
    /// The same member, with its own fd.
    pub fn dup(&self) -> io::Result<Member> {
        Ok(Member {
            prog: self.prog.try_clone()?,
            id: self.id,
            name: self.name.clone(),
            prio: self.prio,
            chain: self.chain,
            flags: self.flags,
        })
    }

    /// fail2xdp's own program, loaded as an extension.
    pub fn ours(prog: OwnedFd) -> Result<Self, DispatchError> {
        let (info, _) = sys::prog_info(prog.as_fd(), 0).map_err(io("querying our program"))?;
        Ok(Member {
            id: info.id,
            name: info.name(),
            prog,
            prio: RUN_PRIO,
            chain: 1 << XDP_PASS,
            flags: 0,
        })
    }
}

/// A dispatcher attached to an interface, with its members.
#[derive(Debug)]
pub struct Dispatcher {
    pub fd: OwnedFd,
    pub id: u32,
    pub ifindex: u32,
    pub mode: XdpAttached,
    pub members: Vec<Member>,
}

impl Dispatcher {
    fn pin_dir(&self) -> PathBuf {
        pin_dir(self.ifindex, self.id)
    }

    /// The mode flags to attach its replacement with.
    pub fn mode_flags(&self) -> u32 {
        match self.mode {
            XdpAttached::Generic => XDP_FLAGS_SKB_MODE,
            _ => XDP_FLAGS_DRV_MODE,
        }
    }
}

fn pin_dir(ifindex: u32, id: u32) -> PathBuf {
    libxdp_dir().join(format!("dispatch-{ifindex}-{id}"))
}

/// What runs on an interface.
#[derive(Debug)]
pub enum OnIface {
    Nothing,
    Dispatcher(Dispatcher),
    /// A program that is not libxdp's dispatcher.
    Other {
        id: u32,
        name: String,
    },
}

/// Reads what is attached to `ifindex`. Caller holds [`XdpLock`] (the
/// member pins are read under it, as libxdp does).
pub fn on_iface(ifindex: u32) -> Result<OnIface, DispatchError> {
    let Some((mode, id)) = netlink::xdp_prog(ifindex).map_err(io("reading the interface"))? else {
        return Ok(OnIface::Nothing);
    };
    let fd = sys::prog_fd_by_id(id).map_err(io(format!("opening program {id}")))?;
    let (info, maps) =
        sys::prog_info(fd.as_fd(), 2).map_err(io(format!("querying program {id}")))?;
    let name = info.name();
    if name != "xdp_dispatcher" {
        return Ok(OnIface::Other { id, name });
    }
    if info.nr_map_ids != 1 {
        return Ok(OnIface::Other { id, name });
    }
    let conf = read_conf(&fd, maps[0])?;
    let dir = pin_dir(ifindex, id);
    if !dir.is_dir() {
        return Err(DispatchError::Refused(format!(
            "its pins are not under {} (is LIBXDP_BPFFS the same as for the tool that loaded it?)",
            dir.display()
        )));
    }
    let mut members = Vec::new();
    for i in 0..(conf.num as usize).min(MAX_PROGS) {
        let pin = dir.join(format!("prog{i}-prog"));
        let prog = sys::obj_get(&pin).map_err(io(format!("opening {}", pin.display())))?;
        let (pi, _) =
            sys::prog_info(prog.as_fd(), 0).map_err(io(format!("querying {}", pin.display())))?;
        members.push(Member {
            id: pi.id,
            name: pi.name(),
            prog,
            prio: conf.prios[i],
            chain: conf.chain[i] & !(1 << RETVAL),
            flags: conf.flags[i],
        });
    }
    Ok(OnIface::Dispatcher(Dispatcher {
        fd,
        id,
        ifindex,
        mode,
        members,
    }))
}

/// The config of dispatcher `prog` from its one map, checked to be a
/// version this code implements.
fn read_conf(prog: &OwnedFd, map_id: u32) -> Result<Conf, DispatchError> {
    let map = sys::map_fd_by_id(map_id).map_err(io("opening the dispatcher's config map"))?;
    let mi = sys::map_info(map.as_fd()).map_err(io("querying the dispatcher's config map"))?;
    if mi.key_size != 4 || mi.max_entries != 1 || mi.map_flags & F_RDONLY_PROG == 0 {
        return Err(DispatchError::Refused(
            "its config map is not a dispatcher's".into(),
        ));
    }
    if mi.value_size as usize != size_of::<Conf>() {
        return Err(DispatchError::Refused(format!(
            "its config has {} bytes; this fail2xdp knows dispatcher version {VERSION} ({} bytes)",
            mi.value_size,
            size_of::<Conf>()
        )));
    }
    let conf: Conf = sys::lookup::<u32, Conf>(map.as_fd(), &0)
        .map_err(io("reading the dispatcher's config"))?
        .ok_or_else(|| DispatchError::Refused("its config is empty".into()))?;
    let version = if conf.magic == MAGIC {
        u32::from(conf.version)
    } else {
        let raw = sys::prog_btf(prog.as_fd()).map_err(io("reading the dispatcher's BTF"))?;
        Btf::parse(&raw)
            .and_then(|b| b.declared_uint("xdp_metadata", "dispatcher_version"))
            .unwrap_or(0)
    };
    if version != u32::from(VERSION) {
        return Err(DispatchError::Refused(format!(
            "dispatcher version {version}; this fail2xdp follows version {VERSION} of libxdp's protocol"
        )));
    }
    Ok(conf)
}

/// Where libxdp's precompiled dispatcher object is: `$LIBXDP_OBJECT_PATH`,
/// then the places distributions install it.
fn dispatcher_object() -> Result<PathBuf, DispatchError> {
    let triple = format!("/usr/lib/{}-linux-gnu/bpf", std::env::consts::ARCH);
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBXDP_OBJECT_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            triple.as_str(),
            "/usr/lib/bpf",
            "/usr/local/lib/bpf",
            "/usr/lib64/bpf",
        ]
        .map(PathBuf::from),
    );
    dirs.iter()
        .map(|d| d.join("xdp-dispatcher.o"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            DispatchError::Refused(
                "libxdp's xdp-dispatcher.o was not found (install libxdp, or set LIBXDP_OBJECT_PATH)"
                    .into(),
            )
        })
}

/// Whether this kernel loads extension (freplace) programs at all, by
/// libxdp's own test: its dispatcher object's `xdp_pass` as an extension
/// of the dispatcher's first slot. Kernels that refuse them (EPERM under
/// some lockdown setups) leave libxdp without its dispatcher too: it
/// attaches a lone program directly instead.
pub fn extensions_supported() -> Result<bool, DispatchError> {
    let path = dispatcher_object()?;
    let mut obj = EbpfLoader::new()
        .extension("xdp_pass")
        .load_file(&path)
        .map_err(|e| DispatchError::Load {
            path: path.clone(),
            source: Box::new(e),
        })?;
    let target = {
        let disp: &mut Xdp = obj
            .program_mut("xdp_dispatcher")
            .ok_or_else(|| {
                DispatchError::Refused(format!("{} has no xdp_dispatcher", path.display()))
            })?
            .try_into()?;
        disp.load()?;
        disp.fd()?
            .try_clone()
            .map_err(io("duplicating the dispatcher fd"))?
    };
    let ext: &mut Extension = obj
        .program_mut("xdp_pass")
        .ok_or_else(|| DispatchError::Refused(format!("{} has no xdp_pass", path.display())))?
        .try_into()?;
    match ext.load(target, "prog0") {
        Ok(()) => Ok(true),
        Err(aya::programs::ProgramError::LoadError { io_error, .. })
            if matches!(
                io_error.raw_os_error(),
                Some(libc::EPERM | libc::EINVAL | libc::EOPNOTSUPP | libc::EACCES)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A freshly built dispatcher, all members linked and pinned, not yet
/// attached.
pub struct Built {
    _obj: aya::Ebpf,
    fd: OwnedFd,
    pub id: u32,
    ifindex: u32,
    /// The members in run order, each with its link.
    pub order: Vec<(Member, OwnedFd)>,
    /// Where in `order` the program given as `ours` went.
    pub ours: Option<usize>,
}

impl Built {
    fn unpin(&self) {
        let _ = remove_pins(&pin_dir(self.ifindex, self.id), self.order.len());
    }
}

/// Builds a dispatcher for `members` (any order; sorted by priority, then
/// name, as libxdp sorts) on `ifindex`. `ours`, if given, is loaded as an
/// extension of the new dispatcher's slot and joins the members.
pub fn build(
    ifindex: u32,
    mut members: Vec<Member>,
    ours: Option<&mut Extension>,
) -> Result<Built, DispatchError> {
    let n = members.len() + usize::from(ours.is_some());
    if n == 0 || n > MAX_PROGS {
        return Err(DispatchError::Refused(format!(
            "a dispatcher runs 1 to {MAX_PROGS} programs, not {n}"
        )));
    }
    // Where ours goes: same key as every member.
    let our_key = (RUN_PRIO, "fail2xdp".to_string());
    members.sort_by(|a, b| (a.prio, &a.name).cmp(&(b.prio, &b.name)));
    let our_slot = ours
        .as_ref()
        .map(|_| members.partition_point(|m| (m.prio, m.name.clone()) <= our_key));
    let mut conf = Conf {
        magic: MAGIC,
        version: VERSION,
        num: n as u8,
        // fail2xdp is not written for multi-buffer frames.
        frags: 0,
        ..Conf::default()
    };
    let mut slots: Vec<(u32, u32, u32)> =
        members.iter().map(|m| (m.chain, m.prio, m.flags)).collect();
    if let Some(s) = our_slot {
        slots.insert(s, (1 << XDP_PASS, RUN_PRIO, 0));
    }
    for (i, (chain, prio, flags)) in slots.iter().enumerate() {
        conf.chain[i] = chain | 1 << RETVAL;
        conf.prios[i] = *prio;
        conf.flags[i] = *flags;
    }
    let path = dispatcher_object()?;
    let mut obj = EbpfLoader::new()
        .override_global("conf", &conf, true)
        .load_file(&path)
        .map_err(|e| DispatchError::Load {
            path: path.clone(),
            source: Box::new(e),
        })?;
    let disp: &mut Xdp = obj
        .program_mut("xdp_dispatcher")
        .ok_or_else(|| DispatchError::Refused(format!("{} has no xdp_dispatcher", path.display())))?
        .try_into()?;
    disp.load()?;
    let disp_fd = disp.fd()?;
    let fd = disp_fd
        .as_fd()
        .try_clone_to_owned()
        .map_err(io("duplicating the dispatcher fd"))?;
    let (info, _) = sys::prog_info(fd.as_fd(), 0).map_err(io("querying the new dispatcher"))?;
    let btf = sys::prog_btf(fd.as_fd())
        .ok()
        .and_then(|raw| Btf::parse(&raw))
        .ok_or_else(|| DispatchError::Refused("the new dispatcher has no readable BTF".into()))?;
    let func = |i: usize| {
        if n == 1 {
            "xdp_dispatcher".to_string()
        } else {
            format!("prog{i}")
        }
    };
    if let (Some(ext), Some(s)) = (ours, our_slot) {
        let target = disp_fd
            .try_clone()
            .map_err(io("duplicating the dispatcher fd"))?;
        ext.load(target, &func(s))?;
        let prog = ext
            .fd()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(io("duplicating our program fd"))?;
        members.insert(s, Member::ours(prog)?);
    }
    let mut order = Vec::with_capacity(n);
    for (i, m) in members.into_iter().enumerate() {
        let f = func(i);
        let id = btf
            .func_id(&f)
            .ok_or_else(|| DispatchError::Refused(format!("the new dispatcher lacks {f}")))?;
        let link = sys::freplace_link(m.prog.as_fd(), fd.as_fd(), id)
            .map_err(io(format!("linking {} into the dispatcher", m.name)))?;
        order.push((m, link));
    }
    let built = Built {
        _obj: obj,
        fd,
        id: info.id,
        ifindex,
        order,
        ours: our_slot,
    };
    let dir = pin_dir(ifindex, built.id);
    let pinned = (|| -> io::Result<()> {
        fs::create_dir(&dir)?;
        for (i, (m, link)) in built.order.iter().enumerate() {
            sys::obj_pin(link.as_fd(), &dir.join(format!("prog{i}-link")))?;
            sys::obj_pin(m.prog.as_fd(), &dir.join(format!("prog{i}-prog")))?;
        }
        Ok(())
    })();
    if let Err(e) = pinned {
        built.unpin();
        return Err(io(format!("pinning under {}", dir.display()))(e));
    }
    Ok(built)
}

/// Swaps `new` in for `old` on the interface (or attaches it where nothing
/// runs), then unpins `old`. On failure `new` is unpinned and `old` stays.
pub fn install(
    new: &Built,
    old: Option<&Dispatcher>,
    mode_flags: u32,
) -> Result<(), DispatchError> {
    let r = netlink::xdp_set(
        new.ifindex,
        Some(new.fd.as_fd()),
        old.map(|o| o.fd.as_fd()),
        mode_flags,
    );
    if let Err(e) = r {
        new.unpin();
        return Err(io("swapping the dispatcher in")(e));
    }
    if let Some(o) = old {
        remove_pins(&o.pin_dir(), o.members.len())
            .map_err(io(format!("unpinning {}", o.pin_dir().display())))?;
    }
    Ok(())
}

/// Detaches `old` from the interface (its last member is leaving) and
/// unpins it.
pub fn remove(old: &Dispatcher) -> Result<(), DispatchError> {
    netlink::xdp_set(old.ifindex, None, Some(old.fd.as_fd()), old.mode_flags())
        .map_err(io("detaching the dispatcher"))?;
    remove_pins(&old.pin_dir(), old.members.len())
        .map_err(io(format!("unpinning {}", old.pin_dir().display())))
}

fn remove_pins(dir: &Path, n: usize) -> io::Result<()> {
    for i in 0..n {
        for suffix in ["link", "prog"] {
            match fs::remove_file(dir.join(format!("prog{i}-{suffix}"))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The link id of the member with program id `prog` in `d`, from its pin.
pub fn member_link_id(d: &Dispatcher, prog: u32) -> Option<(usize, u32)> {
    let i = d.members.iter().position(|m| m.id == prog)?;
    let link = sys::obj_get(&d.pin_dir().join(format!("prog{i}-link"))).ok()?;
    Some((i, sys::link_info(link.as_fd()).ok()?.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_layout_is_libxdps() {
        let c = Conf {
            magic: MAGIC,
            version: VERSION,
            num: 2,
            ..Conf::default()
        };
        // SAFETY: Conf is Pod; reading its bytes is fine.
        let b =
            unsafe { std::slice::from_raw_parts((&raw const c).cast::<u8>(), size_of::<Conf>()) };
        assert_eq!(&b[..4], &[236, 2, 2, 0]);
        assert_eq!(std::mem::offset_of!(Conf, prios), 44);
        assert_eq!(std::mem::offset_of!(Conf, flags), 84);
    }

    #[test]
    fn libxdp_dir_follows_its_variable() {
        // Read without changing the environment of other tests.
        let want = std::env::var_os("LIBXDP_BPFFS")
            .map_or_else(|| PathBuf::from("/sys/fs/bpf"), PathBuf::from)
            .join("xdp");
        assert_eq!(libxdp_dir(), want);
    }
}
