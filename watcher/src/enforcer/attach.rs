//! Attaching the XDP program to an interface, one of two ways:
//!
//! - **directly**, through a pinned bpf_link (`link_<ifname>` in the pin
//!   directory) when nothing else runs there. A pin outlives the agent, so
//!   a stopped or crashed agent leaves enforcement in place; a restart
//!   swaps the new program into the existing link atomically;
//! - **into libxdp's dispatcher** when the interface already runs programs
//!   through it (xdp-filter, xdp-loader): fail2xdp joins as one more program
//!   with its own run priority (see multiprog.rs), pinned by libxdp's rules,
//!   and its program is also pinned as `ext_<ifname>` here so `status`,
//!   restarts and `detach` find it. A restart builds a dispatcher with the
//!   new program in the old one's place; `detach` one without it.
use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::{Extension, Xdp};
use fail2xdp_common::{DISPATCHED_PIN_PREFIX, LINK_PIN_PREFIX, PROG_NAME, map};
use log::{info, warn};

use super::{
    Enforcer, EnforcerError, io_err, lock,
    multiprog::{self, DispatchError, Member, OnIface, XdpLock},
    netlink::{self, XdpAttached},
    sys,
};

/// How to attach XDP: a library type, so callers map their own options to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (fast); fails where the driver cannot.
    #[default]
    Native,
    /// In the generic (skb) path: works everywhere, slower.
    Generic,
    /// Native where the driver can, else generic.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    Native,
    Generic,
    Offload,
    /// The kernel reports no XDP program (e.g. the device went away).
    None,
    /// The device lives in another network namespace than this process.
    Unknown,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
            AttachedMode::Offload => "offload",
            AttachedMode::None => "none",
            AttachedMode::Unknown => "unknown",
        })
    }
}

/// How the program sits on an interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Attachment {
    /// Its own XDP link.
    Direct,
    /// A member of libxdp's dispatcher: its slot in run order, its run
    /// priority, and the other members' names.
    Dispatcher {
        slot: usize,
        priority: u32,
        others: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachInfo {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
    pub prog_id: u32,
    pub link_id: u32,
    /// The program replaced an earlier one of this instance.
    pub replaced: bool,
    pub via: Attachment,
}

/// One attachment as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// From the pin name.
    pub iface: String,
    /// 0 when the device is gone (the link is defunct).
    pub ifindex: u32,
    pub mode: AttachedMode,
    pub prog_id: u32,
    pub link_id: u32,
    pub via: Attachment,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetachReport {
    pub detached: Vec<String>,
    pub not_attached: Vec<String>,
    /// Map pins and the pin directory were removed.
    pub removed_all: bool,
}

fn ifindex(iface: &str) -> Result<u32, EnforcerError> {
    let bad = |detail: &str| EnforcerError::Interface {
        iface: iface.to_string(),
        detail: detail.to_string(),
    };
    // The name becomes a pin file name: keep it to what the kernel allows.
    if iface.is_empty()
        || iface.len() >= libc::IFNAMSIZ
        || iface.contains(['/', '\0'])
        || iface.contains(char::is_whitespace)
    {
        return Err(bad("not a valid interface name"));
    }
    let c = CString::new(iface).map_err(|_| bad("not a valid interface name"))?;
    // SAFETY: NUL-terminated name, no other memory involved.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(bad("no such interface")),
        i => Ok(i),
    }
}

fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IFNAMSIZ];
    // SAFETY: the buffer has the IFNAMSIZ bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn mode_of(ifindex: u32, prog_id: u32) -> AttachedMode {
    attached(netlink::xdp_mode(ifindex, prog_id).unwrap_or(XdpAttached::None))
}

fn attached(m: XdpAttached) -> AttachedMode {
    match m {
        XdpAttached::Driver => AttachedMode::Native,
        XdpAttached::Generic => AttachedMode::Generic,
        XdpAttached::Offload => AttachedMode::Offload,
        XdpAttached::None => AttachedMode::None,
    }
}

fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{iface}"))
}

fn dispatched_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{DISPATCHED_PIN_PREFIX}{iface}"))
}

fn dispatch_err(iface: &str) -> impl FnOnce(DispatchError) -> EnforcerError {
    let iface = iface.to_string();
    move |source| EnforcerError::Dispatcher { iface, source }
}

fn matches_mode(want: XdpMode, got: AttachedMode) -> bool {
    matches!(
        (want, got),
        (XdpMode::Auto, _)
            | (XdpMode::Native, AttachedMode::Native)
            | (XdpMode::Generic, AttachedMode::Generic)
    )
}

impl Enforcer {
    /// Attaches the loaded program to `iface`: swaps it into this
    /// instance's pinned link or dispatcher slot there, else joins the
    /// libxdp dispatcher running there, else attaches it directly.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<AttachInfo, EnforcerError> {
        let idx = ifindex(iface)?;
        let pin = link_pin(&self.pin_dir, iface);
        // A second handle on the same open directory holds the same flock
        // while `self` is borrowed mutably below.
        let dir = self
            .dir
            .try_clone()
            .map_err(io_err(format!("opening {}", self.pin_dir.display())))?;
        let _l = lock::DirLock::exclusive(&dir)
            .map_err(io_err(format!("locking {}", self.pin_dir.display())))?;
        if self.ebpf.is_none() {
            return Err(EnforcerError::NotLoaded);
        }
        if pin.exists()
            && let Some(info) = self.swap_into_link(iface, idx, &pin, mode)?
        {
            return Ok(info);
        }
        let ext = dispatched_pin(&self.pin_dir, iface);
        let occupied = netlink::xdp_prog(idx)
            .map_err(io_err(format!("reading the XDP state of {iface}")))?
            .is_some();
        if occupied {
            let _xl = XdpLock::take().map_err(dispatch_err(iface))?;
            match multiprog::on_iface(idx).map_err(dispatch_err(iface))? {
                OnIface::Dispatcher(d) => return self.join_dispatcher(iface, d, mode, &ext),
                OnIface::Other { id, name } => {
                    let why = match multiprog::extensions_supported() {
                        Ok(false) => {
                            "; this kernel refuses extension (freplace) programs, so neither libxdp nor fail2xdp can run two XDP programs on one interface here"
                        }
                        _ => "",
                    };
                    return Err(EnforcerError::Interface {
                        iface: iface.into(),
                        detail: format!(
                            "another XDP program ({name}, id {id}) is attached, not through libxdp's dispatcher{why}; remove it first (`ip link set dev {iface} xdp off`, or `fail2xdp --pin-dir DIR detach` for another instance)"
                        ),
                    });
                }
                OnIface::Nothing => {}
            }
        }
        if ext.exists() {
            // The dispatcher we were in is gone: attach on our own.
            warn!(
                "{iface}: the libxdp dispatcher fail2xdp was part of is gone; attaching directly"
            );
            let _ = std::fs::remove_file(&ext);
        }
        self.attach_direct(iface, idx, &pin, mode)
    }

    /// Swaps the loaded program into the pinned link; `None` when the link
    /// is stale (removed, so the caller attaches afresh).
    fn swap_into_link(
        &mut self,
        iface: &str,
        idx: u32,
        pin: &Path,
        mode: XdpMode,
    ) -> Result<Option<AttachInfo>, EnforcerError> {
        let (prog_fd, prog_id) = self.xdp_prog()?;
        let link = sys::obj_get(pin).map_err(io_err(format!("opening {}", pin.display())))?;
        let li =
            sys::link_info(link.as_fd()).map_err(io_err(format!("querying {}", pin.display())))?;
        if li.type_ == sys::BPF_LINK_TYPE_XDP && li.xdp_ifindex == idx {
            match sys::link_update(link.as_fd(), prog_fd.as_fd()) {
                Ok(()) => {
                    let got = mode_of(idx, prog_id);
                    if !matches_mode(mode, got) {
                        warn!(
                            "{iface}: kept the existing {got} attachment; `fail2xdp detach --iface {iface}` and restart to change the mode"
                        );
                    }
                    info!(
                        "{iface}: replaced the program in the pinned link (link {}, prog {prog_id}, {got})",
                        li.id
                    );
                    return Ok(Some(AttachInfo {
                        iface: iface.into(),
                        ifindex: idx,
                        mode: got,
                        prog_id,
                        link_id: li.id,
                        replaced: true,
                        via: Attachment::Direct,
                    }));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
                Err(e) => {
                    return Err(EnforcerError::Attach {
                        iface: iface.into(),
                        what: format!("replacing the program in {}", pin.display()),
                        source: e,
                    });
                }
            }
        }
        // The device this link served is gone or was recreated.
        warn!(
            "{iface}: pinned link {} is stale (link ifindex {}, now {idx}); attaching afresh",
            li.id, li.xdp_ifindex
        );
        let _ = sys::link_detach(link.as_fd());
        std::fs::remove_file(pin).map_err(io_err(format!("removing {}", pin.display())))?;
        Ok(None)
    }

    /// The loaded XDP program's fd (a duplicate) and id.
    fn xdp_prog(&mut self) -> Result<(OwnedFd, u32), EnforcerError> {
        let ebpf = self.ebpf.as_mut().ok_or(EnforcerError::NotLoaded)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| EnforcerError::ObjectLacks(format!("program {PROG_NAME}")))?
            .try_into()?;
        let id = prog.info()?.id();
        let fd = prog
            .fd()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("duplicating the program fd"))?;
        Ok((fd, id))
    }

    fn attach_direct(
        &mut self,
        iface: &str,
        idx: u32,
        pin: &Path,
        mode: XdpMode,
    ) -> Result<AttachInfo, EnforcerError> {
        let (prog_fd, prog_id) = self.xdp_prog()?;
        let create = |flags: u32| sys::xdp_link_create(prog_fd.as_fd(), idx, flags);
        let busy = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST));
        let (res, got) = match mode {
            XdpMode::Generic => (create(sys::XDP_FLAGS_SKB_MODE), AttachedMode::Generic),
            XdpMode::Native | XdpMode::Auto => match create(sys::XDP_FLAGS_DRV_MODE) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                        || (mode == XdpMode::Auto && !busy(&e)) =>
                {
                    warn!(
                        "{iface}: native XDP not available ({e}); falling back to generic (skb) mode, which is slower"
                    );
                    (create(sys::XDP_FLAGS_SKB_MODE), AttachedMode::Generic)
                }
                r => (r, AttachedMode::Native),
            },
        };
        let link: OwnedFd = res.map_err(|e| {
            let what = if busy(&e) {
                "another XDP program is already attached; remove it first (`ip link set dev IFACE xdp off`, or `fail2xdp --pin-dir DIR detach` for another instance)".to_string()
            } else {
                format!("attaching XDP in {got} mode")
            };
            EnforcerError::Attach {
                iface: iface.into(),
                what,
                source: e,
            }
        })?;
        // Until pinned, dropping `link` detaches: a failure here leaves nothing behind.
        sys::obj_pin(link.as_fd(), pin).map_err(io_err(format!("pinning {}", pin.display())))?;
        let link_id = sys::link_info(link.as_fd()).map(|i| i.id).unwrap_or(0);
        info!(
            "{iface}: attached XDP in {got} mode (link {link_id}, prog {prog_id}), pinned at {}",
            pin.display()
        );
        Ok(AttachInfo {
            iface: iface.into(),
            ifindex: idx,
            mode: got,
            prog_id,
            link_id,
            replaced: false,
            via: Attachment::Direct,
        })
    }

    /// Joins dispatcher `d` (replacing this instance's earlier program in
    /// it, if there is one). Caller holds both locks.
    fn join_dispatcher(
        &mut self,
        iface: &str,
        d: multiprog::Dispatcher,
        mode: XdpMode,
        ext: &Path,
    ) -> Result<AttachInfo, EnforcerError> {
        let derr = dispatch_err(iface);
        let got = attached(d.mode);
        if !matches_mode(mode, got) {
            warn!("{iface}: joining libxdp's dispatcher in its {got} mode (asked for {mode:?})");
        }
        let previous = sys::obj_get(ext)
            .ok()
            .and_then(|fd| sys::prog_info(fd.as_fd(), 0).ok())
            .map(|(i, _)| i.id);
        let replaced = previous.is_some_and(|p| d.members.iter().any(|m| m.id == p));
        let mode_flags = d.mode_flags();
        let others: Vec<String> = d
            .members
            .iter()
            .filter(|m| Some(m.id) != previous)
            .map(|m| m.name.clone())
            .collect();
        // The program again, loaded as an extension of the new dispatcher.
        let mut obj = super::load::object(&self.pin_dir, None, true)?;
        let log = super::kernel_log::take(&mut obj, "dispatcher extension");
        let extp: &mut Extension = obj
            .program_mut(PROG_NAME)
            .ok_or_else(|| EnforcerError::ObjectLacks(format!("program {PROG_NAME}")))?
            .try_into()?;
        let members = d
            .members
            .iter()
            .filter(|m| Some(m.id) != previous)
            .map(Member::dup)
            .collect::<io::Result<Vec<_>>>()
            .map_err(io_err("duplicating a member fd"))?;
        let built = multiprog::build(d.ifindex, members, Some(extp)).map_err(derr)?;
        multiprog::install(&built, Some(&d), mode_flags).map_err(dispatch_err(iface))?;
        let slot = built.ours.ok_or(EnforcerError::NotLoaded)?;
        let (ours, link) = &built.order[slot];
        let _ = std::fs::remove_file(ext);
        sys::obj_pin(ours.prog.as_fd(), ext)
            .map_err(io_err(format!("pinning {}", ext.display())))?;
        // This copy is the one that runs on `iface`: keep its log reader.
        self.kernel_logs.extend(log);
        let link_id = sys::link_info(link.as_fd()).map(|i| i.id).unwrap_or(0);
        info!(
            "{iface}: {} libxdp's dispatcher (id {}) in slot {slot} at priority {} beside {}",
            if replaced {
                "replaced fail2xdp in"
            } else {
                "joined"
            },
            built.id,
            multiprog::RUN_PRIO,
            others.join(", ")
        );
        Ok(AttachInfo {
            iface: iface.into(),
            ifindex: d.ifindex,
            mode: got,
            prog_id: ours.id,
            link_id,
            replaced,
            via: Attachment::Dispatcher {
                slot,
                priority: multiprog::RUN_PRIO,
                others,
            },
        })
    }
}

/// The attachments of the instance pinned under `pin_dir`, for `status`.
pub fn links(pin_dir: &Path) -> Result<Vec<LinkStatus>, EnforcerError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        r => r.map_err(io_err(format!("reading {}", pin_dir.display())))?,
    };
    for ent in rd {
        let ent = ent.map_err(io_err(format!("reading {}", pin_dir.display())))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(iface) = name.strip_prefix(LINK_PIN_PREFIX) {
            let fd = sys::obj_get(&ent.path())
                .map_err(io_err(format!("opening {}", ent.path().display())))?;
            let li = sys::link_info(fd.as_fd())
                .map_err(io_err(format!("querying {}", ent.path().display())))?;
            // ifindexes are per network namespace: only trust one that names
            // the pinned interface here.
            let here = ifname(li.xdp_ifindex).is_some_and(|n| n == iface);
            let mode = if !here && li.xdp_ifindex != 0 {
                AttachedMode::Unknown
            } else if li.xdp_ifindex == 0 {
                AttachedMode::None
            } else {
                mode_of(li.xdp_ifindex, li.prog_id)
            };
            out.push(LinkStatus {
                iface: iface.to_string(),
                ifindex: li.xdp_ifindex,
                mode,
                prog_id: li.prog_id,
                link_id: li.id,
                via: Attachment::Direct,
            });
        } else if let Some(iface) = name.strip_prefix(DISPATCHED_PIN_PREFIX) {
            out.push(dispatched_status(&ent.path(), iface)?);
        }
    }
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
}

fn dispatched_status(pin: &Path, iface: &str) -> Result<LinkStatus, EnforcerError> {
    let fd = sys::obj_get(pin).map_err(io_err(format!("opening {}", pin.display())))?;
    let (pi, _) =
        sys::prog_info(fd.as_fd(), 0).map_err(io_err(format!("querying {}", pin.display())))?;
    let mut st = LinkStatus {
        iface: iface.to_string(),
        ifindex: 0,
        mode: AttachedMode::Unknown,
        prog_id: pi.id,
        link_id: 0,
        via: Attachment::Dispatcher {
            slot: 0,
            priority: multiprog::RUN_PRIO,
            others: Vec::new(),
        },
    };
    let Some(idx) = ifindex(iface).ok() else {
        return Ok(st);
    };
    st.ifindex = idx;
    let _xl = XdpLock::take().map_err(dispatch_err(iface))?;
    st.mode = AttachedMode::None;
    if let Ok(OnIface::Dispatcher(d)) = multiprog::on_iface(idx)
        && let Some((slot, link_id)) = multiprog::member_link_id(&d, pi.id)
    {
        st.mode = attached(d.mode);
        st.link_id = link_id;
        st.via = Attachment::Dispatcher {
            slot,
            priority: d.members[slot].prio,
            others: d
                .members
                .iter()
                .filter(|m| m.id != pi.id)
                .map(|m| m.name.clone())
                .collect(),
        };
    }
    Ok(st)
}

/// Detaches the links of `ifaces` (all links if empty, and then also removes
/// every map pin and the pin directory). Idempotent.
pub fn detach(pin_dir: &Path, ifaces: &[String]) -> Result<(), EnforcerError> {
    detach_report(pin_dir, ifaces).map(drop)
}

pub fn detach_report(pin_dir: &Path, ifaces: &[String]) -> Result<DetachReport, EnforcerError> {
    let mut rep = DetachReport::default();
    if !pin_dir.exists() {
        rep.not_attached = ifaces.to_vec();
        rep.removed_all = ifaces.is_empty();
        return Ok(rep);
    }
    let dir = lock::open_dir(pin_dir).map_err(io_err(format!("opening {}", pin_dir.display())))?;
    let _l =
        lock::DirLock::exclusive(&dir).map_err(io_err(format!("locking {}", pin_dir.display())))?;
    let targets: Vec<String> = if ifaces.is_empty() {
        let mut v = Vec::new();
        for ent in
            std::fs::read_dir(pin_dir).map_err(io_err(format!("reading {}", pin_dir.display())))?
        {
            let ent = ent.map_err(io_err(format!("reading {}", pin_dir.display())))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(i) = name
                .strip_prefix(LINK_PIN_PREFIX)
                .or_else(|| name.strip_prefix(DISPATCHED_PIN_PREFIX))
            {
                v.push(i.to_string());
            }
        }
        v.sort();
        v.dedup();
        v
    } else {
        ifaces.to_vec()
    };
    for iface in targets {
        let mut done = false;
        let pin = link_pin(pin_dir, &iface);
        match sys::obj_get(&pin) {
            Ok(fd) => {
                // Forced detach: works even while another process holds the link.
                match sys::link_detach(fd.as_fd()) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOLINK | libc::EINVAL)) => {}
                    Err(e) => return Err(io_err(format!("detaching {}", pin.display()))(e)),
                }
                remove(&pin)?;
                done = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("opening {}", pin.display()))(e)),
        }
        let ext = dispatched_pin(pin_dir, &iface);
        if ext.exists() {
            leave_dispatcher(&iface, &ext)?;
            remove(&ext)?;
            done = true;
        }
        if done {
            rep.detached.push(iface);
        } else {
            rep.not_attached.push(iface);
        }
    }
    if ifaces.is_empty() {
        for m in map::ALL.iter().chain(map::LEGACY.iter()) {
            remove(&pin_dir.join(m))?;
        }
        std::fs::remove_dir(pin_dir).map_err(io_err(format!(
            "removing {} (unknown files left in it?)",
            pin_dir.display()
        )))?;
        rep.removed_all = true;
    }
    Ok(rep)
}

/// Takes this instance's program (pinned at `ext`) out of the dispatcher on
/// `iface`; the other members keep running. Nothing to do if it is no
/// longer there.
fn leave_dispatcher(iface: &str, ext: &Path) -> Result<(), EnforcerError> {
    let ours = sys::obj_get(ext)
        .and_then(|fd| sys::prog_info(fd.as_fd(), 0))
        .map_err(io_err(format!("querying {}", ext.display())))?
        .0
        .id;
    let Ok(idx) = ifindex(iface) else {
        return Ok(());
    };
    let _xl = XdpLock::take().map_err(dispatch_err(iface))?;
    let OnIface::Dispatcher(d) = multiprog::on_iface(idx).map_err(dispatch_err(iface))? else {
        return Ok(());
    };
    if !d.members.iter().any(|m| m.id == ours) {
        return Ok(());
    }
    let rest = d
        .members
        .iter()
        .filter(|m| m.id != ours)
        .map(Member::dup)
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("duplicating a member fd"))?;
    if rest.is_empty() {
        multiprog::remove(&d).map_err(dispatch_err(iface))?;
    } else {
        let built = multiprog::build(idx, rest, None).map_err(dispatch_err(iface))?;
        multiprog::install(&built, Some(&d), d.mode_flags()).map_err(dispatch_err(iface))?;
    }
    info!("{iface}: left libxdp's dispatcher; its other programs keep running");
    Ok(())
}

fn remove(p: &Path) -> Result<(), EnforcerError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", p.display()))(e))
        }
        _ => Ok(()),
    }
}
