//! The runtime layer: the kernel work behind `MountPlease`/`MountFd`.
//!
//! * [`userns`] — user namespace fds with given id mappings (fast clone
//!   helper, reaped off the caller's path) and a cache keyed by mapping set;
//! * [`mountfd`] — the parent's side: turn a [`schema::Mount`] request into a
//!   source fd (`open(O_PATH)` for plain binds, `open_tree(OPEN_TREE_CLONE)` +
//!   `mount_setattr(MOUNT_ATTR_IDMAP)` for id-mapped ones), optionally inside
//!   the container's mount namespace;
//! * [`attach`](mod@attach) — the child's side: attach a received source at its
//!   destination and close it at once.
//!
//! Needs root (or CAP_SYS_ADMIN plus CAP_SETUID/CAP_SETGID) and Linux ≥ 5.12
//! for id-mapped mounts (tmpfs ≥ 6.3). All `unsafe` code is in `sys`.
//!
//! [`schema::Mount`]: crate::schema::Mount

pub mod attach;
pub mod mountfd;
mod sys;
pub mod userns;

pub use attach::{attach, AttachError};
pub use mountfd::{MountFdError, MountFdService, MountSource};
pub use userns::{UsernsCache, UsernsError, UsernsKey};
