//! OWNER H2: addresses and prefixes, the ban safety guard (loopback, allowlist, prefix limit), port sets and durations.
