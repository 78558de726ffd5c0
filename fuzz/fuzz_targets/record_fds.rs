//! Fuzzes the transport's receive step with simulated fds: byte 0 picks how
//! many fds arrived, the rest is the record. See `procsync_fuzz::record_fds`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| procsync_fuzz::record_fds(data));
