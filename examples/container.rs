//! `cargo run --features oci --example container -- BUNDLE_DIR` (root) — starts a real
//! container from an OCI bundle, with procsync carrying the set-up
//! conversation between the runtime and the container's init.
//!
//! The parent reads `config.json` with the `oci` feature (`oci::MountPlan`
//! for the mounts, the policy and the id maps; `oci::oci_spec` for the
//! process, root, hostname and namespaces), `clone3`s the init into new user, mount,
//! PID, UTS and IPC namespaces, writes its uid/gid maps and serves the
//! bundle's bind mounts — plain and id-mapped — over the sync socket, each
//! configured mount once and nothing else. The init (this program again,
//! re-executed as `init`) asks for each source, attaches it under the
//! rootfs without following symlinks, mounts a new `/proc`, pivots into
//! the rootfs, sets the hostname, sends Hooks and Ready, waits for Run,
//! optionally hands over a seccomp notify fd, and `execve`s the process
//! from `config.json`. The parent prints each step, waits for the
//! container's process and exits with its status.
//!
//! Flags: `--timings` (each step's time, both sides), `--seccomp-notify`,
//! `--request-extra HOST_PATH` (a hostile init asks for a mount outside
//! `config.json`; the start fails with the refusal on both sides).
//! `scripts/make-bundle.sh DIR` builds a bundle from what the machine has.

use std::process::ExitCode;

#[macro_use]
mod common;
#[path = "container/mod.rs"]
mod container;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if container::is_init(&args) {
        return container::init_main(&args[1..]);
    }
    container::runtime_main(&args)
}
