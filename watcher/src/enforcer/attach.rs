//! Attaching the XDP program through pinned bpf_links, one per interface
//! (`link_<ifname>` in the pin directory). A pin outlives the agent, so a
//! stopped or crashed agent leaves enforcement in place; a restart swaps
//! the new program into the existing link atomically; `detach` unpins.
use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::Xdp;
use fail2xdp_common::{LINK_PIN_PREFIX, PROG_NAME, map};
use log::{info, warn};

use super::{
    Enforcer, EnforcerError, io_err, lock,
    netlink::{self, XdpAttached},
    sys,
};

/// How to attach: in the driver (native), in the generic skb path, or
/// native with a fallback to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    Native,
    Generic,
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

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachInfo {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachedMode,
    pub prog_id: u32,
    pub link_id: u32,
    /// The program replaced the one in an existing pinned link.
    pub replaced: bool,
}

/// One pinned link as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// From the pin name.
    pub iface: String,
    /// 0 when the device is gone (the link is defunct).
    pub ifindex: u32,
    pub mode: AttachedMode,
    pub prog_id: u32,
    pub link_id: u32,
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
    match netlink::xdp_mode(ifindex, prog_id) {
        Ok(XdpAttached::Driver) => AttachedMode::Native,
        Ok(XdpAttached::Generic) => AttachedMode::Generic,
        Ok(XdpAttached::Offload) => AttachedMode::Offload,
        Ok(XdpAttached::None) | Err(_) => AttachedMode::None,
    }
}

fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{iface}"))
}

impl Enforcer {
    /// Attaches (or, if `link_<iface>` is pinned, swaps in) the loaded program.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<AttachInfo, EnforcerError> {
        let idx = ifindex(iface)?;
        let pin = link_pin(&self.pin_dir, iface);
        // Field-level borrows: the lock guard and the program live together.
        let _l = lock::DirLock::exclusive(&self.dir)
            .map_err(io_err(format!("locking {}", self.pin_dir.display())))?;
        let ebpf = self.ebpf.as_mut().ok_or(EnforcerError::NotLoaded)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| EnforcerError::ObjectLacks(format!("program {PROG_NAME}")))?
            .try_into()?;
        let prog_id = prog.info()?.id();
        let prog_fd = prog.fd()?.as_fd();

        if pin.exists() {
            let link = sys::obj_get(&pin).map_err(io_err(format!("opening {}", pin.display())))?;
            let li = sys::link_info(link.as_fd())
                .map_err(io_err(format!("querying {}", pin.display())))?;
            if li.type_ == sys::BPF_LINK_TYPE_XDP && li.xdp_ifindex == idx {
                match sys::link_update(link.as_fd(), prog_fd) {
                    Ok(()) => {
                        let got = mode_of(idx, prog_id);
                        if !matches!(
                            (mode, got),
                            (XdpMode::Auto, _)
                                | (XdpMode::Native, AttachedMode::Native)
                                | (XdpMode::Generic, AttachedMode::Generic)
                        ) {
                            warn!(
                                "{iface}: kept the existing {got} attachment; `fail2xdp detach --iface {iface}` and restart to change the mode"
                            );
                        }
                        info!(
                            "{iface}: replaced the program in the pinned link (link {}, prog {prog_id}, {got})",
                            li.id
                        );
                        return Ok(AttachInfo {
                            iface: iface.into(),
                            ifindex: idx,
                            mode: got,
                            prog_id,
                            link_id: li.id,
                            replaced: true,
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
                    Err(e) => {
                        return Err(io_err(format!(
                            "{iface}: replacing the program in {}",
                            pin.display()
                        ))(e));
                    }
                }
            }
            // The device this link served is gone or was recreated.
            warn!(
                "{iface}: pinned link {} is stale (link ifindex {}, now {idx}); attaching afresh",
                li.id, li.xdp_ifindex
            );
            let _ = sys::link_detach(link.as_fd());
            std::fs::remove_file(&pin).map_err(io_err(format!("removing {}", pin.display())))?;
        }

        let create = |flags: u32| sys::xdp_link_create(prog_fd, idx, flags);
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
            let detail = if busy(&e) {
                format!(
                    "another XDP program is already attached ({e}); remove it first (`ip link set dev {iface} xdp off`, or `fail2xdp --pin-dir DIR detach` for another instance)"
                )
            } else {
                format!("attaching XDP in {got} mode: {e}")
            };
            EnforcerError::Interface { iface: iface.into(), detail }
        })?;
        // Until pinned, dropping `link` detaches: a failure here leaves nothing behind.
        sys::obj_pin(link.as_fd(), &pin).map_err(io_err(format!("pinning {}", pin.display())))?;
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
        })
    }
}

/// The links pinned under `pin_dir`, for `status`.
pub fn links(pin_dir: &Path) -> Result<Vec<LinkStatus>, EnforcerError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        r => r.map_err(io_err(format!("reading {}", pin_dir.display())))?,
    };
    for ent in rd {
        let ent = ent.map_err(io_err(format!("reading {}", pin_dir.display())))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some(iface) = name.strip_prefix(LINK_PIN_PREFIX) else {
            continue;
        };
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
        });
    }
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
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
            if let Some(i) = ent
                .file_name()
                .to_string_lossy()
                .strip_prefix(LINK_PIN_PREFIX)
            {
                v.push(i.to_string());
            }
        }
        v.sort();
        v
    } else {
        ifaces.to_vec()
    };
    for iface in targets {
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
                rep.detached.push(iface);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => rep.not_attached.push(iface),
            Err(e) => return Err(io_err(format!("opening {}", pin.display()))(e)),
        }
    }
    if ifaces.is_empty() {
        for m in map::ALL {
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

fn remove(p: &Path) -> Result<(), EnforcerError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", p.display()))(e))
        }
        _ => Ok(()),
    }
}
