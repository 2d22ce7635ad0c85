//! See `fail2xdp::fuzzing::pyregex`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("pyregex"),
    |data: &[u8]| fail2xdp::fuzzing::pyregex(data)
);
