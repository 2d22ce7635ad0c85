//! The two clocks a ban carries: CLOCK_BOOTTIME for expiry (what the XDP
//! program compares with bpf_ktime_get_boot_ns, immune to wall-clock jumps)
//! and CLOCK_REALTIME for when it was made.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fail2xdp_common::{EXPIRY_MASK, EXPIRY_NEVER};

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

/// Boot-time ns at which a ban of `ttl` starting at boot-time `now` ends;
/// `None` for a permanent ban. Saturates just below "never", so a huge ttl
/// is still a timed ban.
pub fn expiry(now: u64, ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| {
        now.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .min(EXPIRY_NEVER - 1)
    })
}

/// The expiry an entry's `expiry_ports` word holds: `None` = permanent.
pub fn expiry_of(expiry_ports: u64) -> Option<u64> {
    let e = expiry_ports & EXPIRY_MASK;
    (e != EXPIRY_NEVER).then_some(e)
}

/// Remaining time of a ban at boot-time `now`: `None` = permanent,
/// `Some(ZERO)` = expired.
pub fn remaining(expiry: Option<u64>, now: u64) -> Option<Duration> {
    expiry.map(|e| Duration::from_nanos(e.saturating_sub(now)))
}

/// Whether a ban with this expiry has ended at boot-time `now`, as the XDP
/// program decides it.
pub fn ended(expiry: Option<u64>, now: u64) -> bool {
    expiry.is_some_and(|e| now >= e)
}

/// The wall-clock time of a CLOCK_REALTIME ns count.
pub fn wall(realtime_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(realtime_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_math() {
        assert_eq!(expiry(5, None), None);
        assert_eq!(expiry(5, Some(Duration::from_nanos(10))), Some(15));
        assert_eq!(expiry(5, Some(Duration::MAX)), Some(EXPIRY_NEVER - 1));
        assert_eq!(remaining(None, 1), None);
        assert_eq!(remaining(Some(15), 5), Some(Duration::from_nanos(10)));
        assert_eq!(remaining(Some(15), 20), Some(Duration::ZERO));
        assert!(ended(Some(15), 15) && !ended(Some(15), 14) && !ended(None, u64::MAX));
        // The entry word rounds up and never reads as "never" for a timed ban.
        let w = fail2xdp_common::expiry_ports(expiry(5, Some(Duration::MAX)), 3);
        assert_eq!(w & 0xffff, 3);
        assert!(expiry_of(w).is_some());
        let w = fail2xdp_common::expiry_ports(Some(1_000_001), 0);
        assert!(expiry_of(w).is_some_and(|e| (1_000_001..1_000_001 + 65_536).contains(&e)));
        assert_eq!(expiry_of(fail2xdp_common::expiry_ports(None, 0)), None);
        assert!(boottime_ns() > 0 && realtime_ns() > boottime_ns());
    }
}
