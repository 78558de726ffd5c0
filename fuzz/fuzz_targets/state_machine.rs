//! Fuzzes the state machine with arbitrary event lists for both roles and
//! both flows against the reference grammar. See
//! `procsync_fuzz::state_machine`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| procsync_fuzz::state_machine(data));
