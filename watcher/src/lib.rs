//! fail2xdp: mail-log watcher that bans abusive clients in an XDP program.
//!
//! One-way data flow: `source` (lines) -> `agent::matcher`, the match stage
//! (filters, timestamps) -> `agent::engine` (jails count failures) ->
//! [`ban::BanService`] (guard, length, merge, record, event) -> `enforcer`
//! (the pinned BPF maps) -> the XDP program. Every other origin of bans
//! (the CLI's `ban` and `ban --file`, the bans restored at start, CrowdSec
//! decisions from `crowdsec`'s bouncer) enters the same ban service, and
//! `crowdsec`'s decision source subscribes to its jail bans. `state` keeps why each ban exists across restarts;
//! `control` is the agent's socket; `status` is what `status` and `explain`
//! show, built the same way whether or not the agent runs. The binary's
//! `cli.rs` and `cmd/` are the only code that knows the command line.

pub mod addr;
pub mod agent;
pub mod ban;
pub mod blocklist;
pub mod census;
pub mod closer;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod enforcer;
pub mod fail2ban;
pub mod filter;
pub mod framing;
/// Entry points of the fuzz targets in fuzz/ (feature `fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod instance;
pub mod jail;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod privs;
pub mod source;
pub mod state;
pub mod status;
#[cfg(test)]
mod testrng;
pub mod timestamp;

/// The XDP object built from ebpf/ by build.rs, embedded so one binary carries its data plane.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fail2xdp.bpf.o"));

/// An error and its causes on one line, `outer: inner: innermost`, for logs
/// (error types give their cause through `source()` only, never in their
/// own message, so nothing is said twice).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
