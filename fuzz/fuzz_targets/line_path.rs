//! See `fail2xdp::fuzzing::line_path`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("line_path"),
    |data: &[u8]| fail2xdp::fuzzing::line_path(data)
);
