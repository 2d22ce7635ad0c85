//! See `fail2xdp::fuzzing::fail2ban_ini`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("fail2ban_ini"),
    |data: &[u8]| fail2xdp::fuzzing::fail2ban_ini(data)
);
