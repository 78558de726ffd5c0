//! # procsync
//!
//! The parent ⇄ child *sync protocol* a container runtime speaks while it sets
//! up a container — runc's `libcontainer/sync.go`, as a Rust crate with a
//! strict wire, a sans-IO state machine and a Go twin.
//!
//! The child (the runtime's `init`) asks the parent for mount source fds,
//! hooks, readiness and the seccomp hand-off; the parent answers. Layers,
//! bottom up:
//!
//! * [`schema`] — the message types, generated from `proto/` at build time;
//! * [`wire`] — record encoding/decoding and validation (sans-IO);
//! * [`transport`] — the seqpacket sync socket (records, fds, deadlines);
//! * [`state`] — the legal order of messages, a sans-IO state machine per side;
//! * [`policy`] — which mount requests the parent serves;
//! * [`runtime`] — the parent's mount-fd service (open_tree, id-mapped mounts,
//!   O_PATH binds), the fast user-namespace fd helper and the child's attach.
//!
//! `docs/PROTOCOL.md` is the normative specification of the wire.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod origin;
pub mod policy;
pub mod runtime;
pub mod schema;
pub mod session;
pub mod state;
pub mod transport;
pub mod wire;

pub use origin::Origin;

/// Compiles and runs the README's code examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
