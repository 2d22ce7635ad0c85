//! See `fail2xdp::fuzzing::ban_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("ban_file"),
    |data: &[u8]| fail2xdp::fuzzing::ban_file(data)
);
