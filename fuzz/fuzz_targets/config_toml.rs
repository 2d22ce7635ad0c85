//! See `fail2xdp::fuzzing::config_toml`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fail2xdp::fuzzing::config_toml(data));
