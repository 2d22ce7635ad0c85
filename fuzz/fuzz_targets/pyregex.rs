//! See `fail2xdp::fuzzing::pyregex`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fail2xdp::fuzzing::pyregex(data));
