//! See `fail2xdp::fuzzing::ban_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fail2xdp::fuzzing::ban_file(data));
