//! fail2xdp: mail-log watcher that bans abusive clients in an XDP program.
//!
//! One-way data flow: `source` (lines) -> `filter` (failures) -> `jail`
//! (ban decisions) -> `enforcer` (pinned BPF maps) -> the XDP program.
//! `state` keeps ban metadata across restarts; `control` serves the CLI.

pub mod addr;
pub mod agent;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod enforcer;
pub mod fail2ban;
pub mod filter;
pub mod jail;
pub mod source;
pub mod state;
#[cfg(test)]
mod testrng;
pub mod timestamp;

/// The XDP object built from ebpf/ by build.rs, embedded so one binary carries its data plane.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fail2xdp.bpf.o"));
