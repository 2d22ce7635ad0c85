//! See `fail2xdp::fuzzing::crowdsec_stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: fail2xdp::fuzzing::prepare("crowdsec_stream"),
    |data: &[u8]| fail2xdp::fuzzing::crowdsec_stream(data)
);
