//! The clocks bans are judged by: CLOCK_BOOTTIME for expiry (what the XDP
//! program compares with), CLOCK_REALTIME for when a ban was made. The
//! enforcer's own readings, so a test compares like with like.
pub use fail2xdp::enforcer::{boottime_ns, realtime_ns};
