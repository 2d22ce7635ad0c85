//! The only writer of the pinned BPF maps: loads the XDP object, creates or
//! reuses the pinned maps, attaches and detaches the program (directly, or
//! as one more program in libxdp's dispatcher when one runs there), and
//! writes bans and the allowlist in an order a concurrent XDP reader can
//! follow.
//!
//! Every mutating operation holds an flock on the pin directory, so the agent
//! and any number of CLI processes can share one instance's maps.
mod allow;
mod attach;
mod bans;
mod btf;
mod clock;
mod kernel_log;
mod load;
mod lock;
pub mod maps;
mod multiprog;
pub(crate) mod netlink;
mod ports;
pub mod prefix;
pub mod report;
mod sys;
pub mod table;

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use fail2xdp_common::Stats;

use crate::addr::AddrError;
pub use crate::addr::{IpNet, PortSet};
pub use allow::{AllowEntry, FROM_CONFIG};
pub use attach::{
    AttachInfo, AttachedMode, Attachment, DetachReport, LinkStatus, XdpMode, detach, detach_report,
    links,
};
pub use clock::{boottime_ns, realtime_ns};
pub use kernel_log::KernelLog;
pub use load::Capacities;

/// Whether this kernel can run several XDP programs on one interface
/// through libxdp's dispatcher (it must load extension programs; libxdp's
/// dispatcher object must be installed).
pub fn dispatcher_supported() -> Result<bool, EnforcerError> {
    multiprog::extensions_supported().map_err(|source| EnforcerError::Dispatcher {
        iface: "-".into(),
        source,
    })
}
pub use maps::MapId;

/// How a ban is written over one already in force on the same network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Keep the later expiry and the wider port scope, the drop counter,
    /// and the label of whichever ban lasts longer (the new one on a tie).
    #[default]
    Merge,
    /// Write the ban as given (the drop counter stays).
    Replace,
}

/// One ban to write. `ttl: None` is permanent; an empty `ports` is every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRequest {
    pub net: IpNet,
    pub ttl: Option<Duration>,
    pub ports: PortSet,
    /// The label shown for the ban (a jail name, `manual`, `file:NAME`, ...),
    /// at most 32 bytes.
    pub jail: String,
    pub mode: WriteMode,
}

/// A ban as it is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanState {
    /// `None` = permanent.
    pub remaining: Option<Duration>,
    pub ports: PortSet,
    pub label: String,
}

/// What [`Enforcer::ban_batch`] did with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanOutcome {
    /// The unexpired ban on the same network before, if there was one.
    pub before: Option<BanState>,
    /// What is in force now.
    pub now: BanState,
}

/// A ban as read back from the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo {
    pub net: IpNet,
    pub jail: String,
    /// `None` = permanent; `Some(ZERO)` with `expired` once it ran out.
    pub remaining: Option<Duration>,
    pub expired: bool,
    pub created: SystemTime,
    pub ports: PortSet,
    pub drops: u64,
}

/// What the XDP program reads of the exact-ban table to judge one source:
/// the buckets (64-byte cache lines) it reads, and whether it finds a ban
/// there (then it also reads the ban's entry, one more line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupCost {
    pub banned: bool,
    pub buckets: u32,
}

/// Entries and capacity of one map, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapFill {
    pub map: String,
    pub entries: usize,
    pub capacity: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error(
        "no fail2xdp maps are pinned under {0} (start `fail2xdp run`, or ban something, to create them)"
    )]
    NotPinned(PathBuf),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("loading the XDP object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("XDP program")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the embedded XDP object lacks {0}")]
    ObjectLacks(String),
    #[error(
        "pinned map {map} was made by an incompatible version ({detail}); `fail2xdp detach` removes it (and its bans)"
    )]
    MapMismatch { map: &'static str, detail: String },
    #[error("interface {iface}: {detail}")]
    Interface { iface: String, detail: String },
    #[error("interface {iface}: {what}")]
    Attach {
        iface: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("this handle was opened from pins only; attaching needs Enforcer::load")]
    NotLoaded,
    #[error("the prefix-length table of {0:?} is inconsistent and could not be rebuilt")]
    SlotTable(prefix::Which),
    #[error("the JAILS map is full; label {0} gets no name in listings")]
    JailsFull(String),
    #[error("label {0:?} is longer than 32 bytes")]
    LabelTooLong(String),
    #[error("every port set id is in use ({0} distinct port sets)")]
    PortsFull(u32),
    #[error("interface {iface}: libxdp's dispatcher")]
    Dispatcher {
        iface: String,
        #[source]
        source: multiprog::DispatchError,
    },
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(transparent)]
    Table(#[from] table::TableError),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EnforcerError {
    let what = what.into();
    move |source| EnforcerError::Io { what, source }
}

/// Handles to the pinned maps of one pin directory (and, after `load`, the
/// loaded program to attach).
pub struct Enforcer {
    pin_dir: PathBuf,
    /// The pin directory, opened for flock.
    dir: File,
    maps: maps::Maps,
    ebpf: Option<aya::Ebpf>,
    /// Log readers of the extension copies attached to dispatchers, kept
    /// for [`Enforcer::take_kernel_logs`].
    kernel_logs: Vec<KernelLog>,
}

impl Enforcer {
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Packet counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats, EnforcerError> {
        let per_cpu = self
            .maps
            .stats()
            .get(&0, 0)
            .map_err(|e| io_err("reading STATS")(io::Error::other(e)))?;
        let mut total = Stats::default();
        for s in per_cpu.iter() {
            total.add(s);
        }
        Ok(total)
    }
}
