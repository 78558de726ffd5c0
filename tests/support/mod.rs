//! What the integration tests (and the benches) share: fd counting
//! ([`fds`]), the process-wide lock tests take while they count fds or
//! children ([`serial`]), bounded waits for child processes ([`proc`]), the
//! counting global allocator ([`alloc`]) and the peer-process dispatch with
//! one role variable ([`peer`]).
//!
//! A test includes it with `mod support;` (a bench with
//! `#[path = "../tests/support/mod.rs"] mod support;`). `checks.rs` (the
//! fuzz checks, shared with `fuzz/`) and `package.rs` (packaged-crate
//! detection) sit beside it and are included on their own by the tests that
//! need them.
#![allow(dead_code, unused_imports)]

pub mod alloc;
pub mod fds;
pub mod peer;
pub mod proc;

use std::sync::{Mutex, MutexGuard};

pub use fds::fd_count;

static SERIAL: Mutex<()> = Mutex::new(());

/// The process-wide lock of this test binary: a test that counts fds or
/// child processes, or spawns peers that must not inherit another test's
/// fds, holds it throughout. A panicking holder does not poison it for the
/// other tests.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
