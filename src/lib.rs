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
//! * [`session`] — the child's and the parent's whole conversation: thin
//!   drivers (blocking, and async with feature `tokio`) over one sans-IO
//!   session core;
//! * `runtime` (feature `runtime`, on by default) — the parent's mount-fd
//!   service (open_tree, id-mapped mounts, O_PATH binds), the fast
//!   user-namespace fd helper and the child's attach.
//!
//! Each layer imports only the ones above it in this list (`oci` uses
//! `schema`, `wire` and `policy`); the modules that do no I/O (`schema`,
//! `wire`, `state`, `policy`, `session`) forbid or deny `unsafe`, so the
//! kernel is reached only from `transport` and `runtime`. `ARCHITECTURE.md`
//! in the repository draws the whole map.
//!
//! `docs/PROTOCOL.md` is the normative specification of the wire.
//!
//! # Features
//!
//! * `runtime` (default) — the runtime layer. Without it
//!   (`default-features = false`) the crate is the protocol alone: no
//!   `CLONE_VM` helper, no helper pool, no namespace worker threads.
//! * `runc-compat` — runc's JSON sync wire (`wire::runc`,
//!   `transport::Wire::Runc`), for talking to a real runc.
//! * `tokio` — async sessions: `transport::tokio::AsyncSocket` and
//!   `session::tokio::{AsyncChild, AsyncParent}`, waiting through tokio's
//!   reactor, cancel safe at every await point.
//! * `oci` — `oci::MountPlan`: the mount requests and the mount policy of
//!   a container, built from its OCI bundle's `config.json` (the `oci-spec`
//!   crate, re-exported as `oci::oci_spec`).
//! * `tokio` — async sessions and socket (`session::tokio`,
//!   `transport::tokio`) on tokio's reactor and clock; no tokio type appears
//!   in their signatures.
//!
//! # Third-party types
//!
//! The crates whose types appear in procsync's public API are re-exported,
//! so a user needs no matching dependency of their own: [`bytes`] (the
//! codec's `BytesMut` buffers), [`prost`] (the [`schema`] types implement
//! `prost::Message`) and [`rustix`] (`HandlerError: From<rustix::io::Errno>`,
//! and the syscall wrappers the examples use).
//!
//! Linux only: building for any other target stops with a `compile_error!`.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "procsync supports Linux only: it speaks over AF_UNIX SOCK_SEQPACKET sockets \
     with SCM_RIGHTS and uses Linux-only system calls (pidfd_open, open_tree, \
     mount_setattr, ...). Build it for a *-linux-* target."
);

/// The `bytes` crate, whose `BytesMut` the codec encodes into
/// ([`wire::native::encode`]).
pub use bytes;
/// The `prost` crate: the [`schema`] types implement `prost::Message`.
pub use prost;
/// The `rustix` crate: `session::HandlerError` converts from
/// `rustix::io::Errno`, so a handler can use `?` on rustix calls.
pub use rustix;

#[cfg(feature = "oci")]
pub mod oci;
mod origin;
pub mod policy;
#[cfg(feature = "runtime")]
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
