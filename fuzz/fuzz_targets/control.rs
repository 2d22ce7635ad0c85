//! See `fail2xdp::fuzzing::control`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("control"),
    |data: &[u8]| fail2xdp::fuzzing::control(data)
);
