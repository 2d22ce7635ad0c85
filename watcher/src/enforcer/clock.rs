//! The two clocks a ban carries: CLOCK_BOOTTIME for expiry (what the XDP
//! program compares with bpf_ktime_get_boot_ns, immune to wall-clock jumps)
//! and CLOCK_REALTIME for when it was made.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fail2xdp_common::EXPIRES_NEVER;

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(r, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

pub fn boottime_ns() -> u64 {
    now_ns(libc::CLOCK_BOOTTIME)
}

pub fn realtime_ns() -> u64 {
    now_ns(libc::CLOCK_REALTIME)
}

/// `expires_ns` for a ban of `ttl` starting at boot-time `now`.
pub fn expiry(now: u64, ttl: Option<Duration>) -> u64 {
    match ttl {
        None => EXPIRES_NEVER,
        // Saturate below EXPIRES_NEVER so a huge ttl is still a timed ban.
        Some(d) => now
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .min(EXPIRES_NEVER - 1),
    }
}

/// Remaining time of a ban at boot-time `now`: `None` = permanent,
/// `Some(ZERO)` = expired.
pub fn remaining(expires_ns: u64, now: u64) -> Option<Duration> {
    (expires_ns != EXPIRES_NEVER).then(|| Duration::from_nanos(expires_ns.saturating_sub(now)))
}

pub fn system_time(realtime_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(realtime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_math() {
        assert_eq!(expiry(5, None), EXPIRES_NEVER);
        assert_eq!(expiry(5, Some(Duration::from_nanos(10))), 15);
        assert_eq!(expiry(5, Some(Duration::MAX)), EXPIRES_NEVER - 1);
        assert_eq!(remaining(EXPIRES_NEVER, 1), None);
        assert_eq!(remaining(15, 5), Some(Duration::from_nanos(10)));
        assert_eq!(remaining(15, 20), Some(Duration::ZERO));
        assert!(boottime_ns() > 0 && realtime_ns() > boottime_ns());
    }
}
