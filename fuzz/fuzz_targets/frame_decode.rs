//! Fuzzes the native frame decoder: byte 0 picks the fd count, the rest is a
//! record. See `procsync_fuzz::frame_decode` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| procsync_fuzz::frame_decode(data));
