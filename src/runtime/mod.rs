//! The runtime layer: the kernel work behind `MountPlease`/`MountFd`.
//!
//! * [`userns`] — user namespace fds with given id mappings (fast clone
//!   helper, reaped off the caller's path) and a cache keyed by mapping set;
//! * [`mountfd`] — the parent's side: turn a [`schema::Mount`] request into a
//!   source fd (`open(O_PATH)` for plain binds, `open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)` for id-mapped ones), optionally inside
//!   the container's mount namespace;
//! * [`handler`] — the ready-made [`ParentHandler`](crate::session::ParentHandler):
//!   `parent.serve(&mut service.handler())` serves MountPlease with the
//!   service, the session's mount policy still in force;
//! * [`attach`](mod@attach) — the child's side: attach a received source at its
//!   destination and close it at once.
//!
//! Needs root (or CAP_SYS_ADMIN plus CAP_SETUID/CAP_SETGID) and Linux ≥ 5.12
//! for id-mapped mounts (tmpfs ≥ 6.3). All `unsafe` code is in `sys`.
//!
//! ```no_run
//! use procsync::runtime::{attach, MountFdService};
//! use procsync::schema::{IdMap, IdMapping, Mount};
//!
//! // Parent: the child (container init, pid `child`) asked for this mount.
//! # let child = 1;
//! let svc = MountFdService::in_mount_namespace(
//!     format!("/proc/{child}/ns/mnt"),
//!     Default::default(),
//! )?;
//! let ids = vec![IdMap::new(0, 100_000, 65_536)];
//! let req = Mount::bind("/srv/data", "/data")
//!     .recursive()
//!     .with_id_mapping(IdMapping::ranges(ids.clone(), ids).recursive(true));
//! let src = svc.make_source(&req)?;
//! // ... send SyncMessage::mount_fd(src.kind, &req.source) with src.fd attached ...
//!
//! // Child, on receipt (fd and kind from the MountFd record):
//! attach(src, std::path::Path::new("/rootfs/data"), true)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`schema::Mount`]: crate::schema::Mount

pub mod attach;
pub mod handler;
pub mod mountfd;
mod sys;
pub mod userns;

pub use attach::{attach, AttachError};
pub use handler::{NoExtras, ServeMounts};
pub use mountfd::{MountFdError, MountFdService, MountSource};
pub use userns::{UsernsCache, UsernsError, UsernsKey};
