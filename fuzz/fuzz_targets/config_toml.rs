//! See `fail2xdp::fuzzing::config_toml`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("config_toml"),
    |data: &[u8]| fail2xdp::fuzzing::config_toml(data)
);
