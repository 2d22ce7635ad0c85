//! The only writer of the pinned BPF maps: loads the XDP object, creates or
//! reuses the pinned maps, attaches and detaches the program, and writes
//! bans and the allowlist in an order a concurrent XDP reader can follow.
//!
//! Every mutating operation holds an flock on the pin directory, so the agent
//! and any number of CLI processes can share one instance's maps.
mod allow;
mod attach;
mod bans;
mod clock;
mod load;
mod lock;
mod netlink;
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

use aya::maps::{MapData, PerCpuArray};
use fail2xdp_common::Stats;

use crate::addr::AddrError;
pub use crate::addr::{IpNet, PortSet};
pub use allow::{AllowEntry, FROM_CONFIG};
pub use attach::{
    AttachInfo, AttachedMode, DetachReport, LinkStatus, XdpMode, detach, detach_report, links,
};
pub use clock::{boottime_ns, realtime_ns};
pub use load::Capacities;

/// One ban to write. `ttl: None` is permanent; an empty `ports` is every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRequest {
    pub net: IpNet,
    pub ttl: Option<Duration>,
    pub ports: PortSet,
    pub jail: String,
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
    /// The cause is part of the message (not a `source`), so callers that
    /// only print `to_string()` still say why.
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    #[error("loading the XDP object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the embedded XDP object lacks {0}")]
    ObjectLacks(String),
    #[error(
        "pinned map {map} was made by an incompatible version ({detail}); `fail2xdp detach` removes it (and its bans)"
    )]
    MapMismatch { map: &'static str, detail: String },
    #[error("interface {iface}: {detail}")]
    Interface { iface: String, detail: String },
    #[error("this handle was opened from pins only; attaching needs Enforcer::load")]
    NotLoaded,
    #[error("the prefix-length table of {0:?} is inconsistent and could not be rebuilt")]
    SlotTable(prefix::Which),
    #[error("the JAILS map is full; jail {0} gets no name in listings")]
    JailsFull(String),
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error(transparent)]
    Table(#[from] table::TableError),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EnforcerError {
    let what = what.into();
    move |err| EnforcerError::Io { what, err }
}

/// Handles to the pinned maps of one pin directory (and, after `load`, the
/// loaded program to attach).
pub struct Enforcer {
    pin_dir: PathBuf,
    /// The pin directory, opened for flock.
    dir: File,
    maps: Maps,
    ebpf: Option<aya::Ebpf>,
}

pub(crate) struct Maps {
    pub bans_v4: MapData,
    pub bans_v6: MapData,
    pub pfx_v4: MapData,
    pub pfx_v6: MapData,
    pub allow_v4: MapData,
    pub allow_v6: MapData,
    pub config: MapData,
    pub jails: MapData,
    pub bans_v4_ovf: MapData,
    pub bans_v6_ovf: MapData,
    pub pfx_v4_ovf: MapData,
    pub pfx_v6_ovf: MapData,
    pub allow_v4_ovf: MapData,
    pub allow_v6_ovf: MapData,
    pub stats: PerCpuArray<MapData, Stats>,
    /// max_entries of each map in `fail2xdp_common::map::ALL` order.
    pub capacity: [u32; 15],
}

impl Enforcer {
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Packet counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats, EnforcerError> {
        let per_cpu = self.maps.stats.get(&0, 0).map_err(|e| EnforcerError::Io {
            what: "reading STATS".into(),
            err: io::Error::other(e),
        })?;
        let mut total = Stats::default();
        for s in per_cpu.iter() {
            total.add(s);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn map_order_matches_capacity_index() {
        // load.rs and status rely on this order.
        assert_eq!(fail2xdp_common::map::ALL[0], fail2xdp_common::map::BANS_V4);
        assert_eq!(fail2xdp_common::map::ALL[8], fail2xdp_common::map::JAILS);
    }
}
