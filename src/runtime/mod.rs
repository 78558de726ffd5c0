//! The runtime layer: the kernel work behind `MountPlease`/`MountFd`.
//!
//! * [`userns`] — user namespace fds with given id mappings (fast clone
//!   helper, reaped off the caller's path) and a cache keyed by mapping set;
//! * [`mountfd`] — the parent's side: turn a [`schema::Mount`] request into a
//!   source fd, served from the configured source **pinned** when the service
//!   was built ([`MountFdService::pinned`], [`PinnedSources`]) — an `O_PATH`
//!   fd for plain binds, `open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)` for id-mapped ones — optionally inside
//!   the container's mount namespace, with an optional deadline
//!   ([`MountFdService::make_source_until`]);
//! * [`handler`] — the ready-made [`ParentHandler`](crate::session::ParentHandler):
//!   `parent.serve(&mut service.handler())` serves MountPlease with the
//!   service, the session's mount policy still in force;
//! * [`attach`](mod@attach) — the child's side: attach a received source at
//!   its destination resolved inside the container root
//!   ([`attach_in_root`]) and close it at once.
//!
//! The child is untrusted (PROTOCOL.md §10): nothing it can write or mount
//! changes which host object the parent serves, and no symlink it plants in
//! the rootfs can redirect an attach outside the root.
//!
//! Needs root (or CAP_SYS_ADMIN plus CAP_SETUID/CAP_SETGID) and Linux ≥ 5.12
//! for id-mapped mounts (tmpfs ≥ 6.3), ≥ 5.6 for `openat2`. All `unsafe`
//! code is in `sys`.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use procsync::policy::ConfiguredMounts;
//! use procsync::runtime::{attach_in_root, MountFdService};
//! use procsync::schema::{IdMap, IdMapping, Mount};
//!
//! // Parent, before the child exists: pin the configured sources.
//! let ids = vec![IdMap::new(0, 100_000, 65_536)];
//! let data = Mount::bind("/srv/data", "/data")
//!     .recursive()
//!     .with_id_mapping(IdMapping::ranges(ids.clone(), ids).recursive(true));
//! let configured = ConfiguredMounts::new([data.clone()]);
//! let svc = MountFdService::pinned(&configured)?;
//!
//! // ... the child asks for `data` (the policy matched it) ...
//! let src = svc.make_source(&data)?;
//! // ... send SyncMessage::mount_fd(src.kind, &data.source) with src.fd attached ...
//!
//! // Child, on receipt, with the container's rootfs open as a directory:
//! let rootfs = std::fs::File::open("/run/container/rootfs")?;
//! attach_in_root(src, rootfs.as_fd(), std::path::Path::new("/data"), true)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`schema::Mount`]: crate::schema::Mount

pub mod attach;
pub mod handler;
pub mod mountfd;
mod sys;
pub mod userns;

pub use attach::{attach, attach_in_root, AttachError, AttachErrorKind};
pub use handler::{NoExtras, ServeMounts, DEADLINE_MARGIN};
pub use mountfd::{
    MountFdError, MountFdErrorKind, MountFdService, MountSource, PinnedSource, PinnedSources,
    Symlinks,
};
pub use userns::{UsernsCache, UsernsError, UsernsErrorKind, UsernsKey};
