//! Shared harness for the integration tests: real packets between network
//! namespaces, and a real `fail2xdp` agent attached to one end.
//!
//! A test usually starts a [`Lab`] (namespaces, sender, receiver, agent):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let lab = fail2xdp_tests::Lab::start()?;     // panics if not root / no bpffs
//! lab.agent.ban("198.51.100.7", &[])?;         // the real CLI, this instance's pins
//! let banned = lab.syn("198.51.100.7", 25);
//! assert_eq!(lab.delivered(&banned, 10)?, 0);  // counted behind XDP on the receiving veth
//! assert_eq!(lab.delivered(&lab.syn("198.51.100.8", 25), 10)?, 10);
//! # Ok(()) }
//! ```
//!
//! or assembles the parts itself: [`NetnsPair`] (two namespaces and a veth,
//! torn down on Drop), [`Sender`] and [`Receiver`] (AF_PACKET on each end),
//! [`Agent`] (`fail2xdp run` attached to the receiving veth; detached and
//! unpinned on Drop).
//!
//! Frame-by-frame tests of the program (BPF_PROG_TEST_RUN) use an
//! [`Instance`]: the real enforcer's maps in a private pin dir and the
//! object's programs over them; [`packet::raw`] builds odd frames, [`bpf`]
//! holds the raw calls and hand-assembled helper programs, [`clock`] the
//! clocks bans are judged by and [`rng`] a seeded generator.
//!
//! Everything is uniquely named (pid + counter), so tests may run in
//! parallel, each with its own [`NetnsPair`] and [`Agent`] (own pin dir).
//! Only documentation addresses are used; the link itself is 192.0.2.0/24
//! and 2001:db8::/64 and carries the [`Receiver::settle`] marker, so tests
//! ban sources from 198.51.100.0/24, 203.0.113.0/24 and 2001:db8:1::/48 up.

mod agent;
pub mod bpf;
pub mod clock;
mod instance;
pub mod interrupted;
mod lab;
pub mod lapi;
pub mod mx;
mod netns;
pub mod packet;
mod preflight;
pub mod rng;
pub mod scrape;
mod stale;
mod traffic;
pub mod watch;
mod xdp_filter;

pub use agent::{Agent, AgentOptions, LinkInfo, fail2xdp_bin, find_ban};
pub use instance::{Instance, small_capacities};
pub use lab::Lab;
pub use netns::{Netns, NetnsPair, unique_name};
pub use packet::{ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP, IPPROTO_UDP, Probe, VlanTag, parse_l4};
pub use preflight::{check_privileges, require_privileges};
pub use traffic::{MARKER_PORT, Receiver, Sender};
pub use xdp_filter::XdpFilter;

/// `n` with thousands separators (1,000,000), for the benches' tables.
pub fn thousands(n: impl Into<u64>) -> String {
    let s = n.into().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
