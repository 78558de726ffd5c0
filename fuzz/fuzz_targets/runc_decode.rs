//! Fuzzes runc's JSON sync wire decoder and its fd-record checks: byte 0
//! picks the fd count, the rest is the JSON record, then (after `0xff`) the
//! fd record's name and (after another `0xff`) the expected name. See
//! `procsync_fuzz::runc_decode` for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| procsync_fuzz::runc_decode(data));
