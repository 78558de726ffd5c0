//! Fuzzes the transport's control-message handling with real `cmsghdr`
//! layouts written by the kernel: receiver options, fds in one or more
//! `SCM_RIGHTS` messages, the record and the limit come from the input.
//! See `procsync_fuzz::control_messages`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| procsync_fuzz::control_messages(data));
