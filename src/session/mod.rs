//! Sessions: the child's and the parent's side of a whole sync conversation
//! over a [`SyncSocket`](crate::transport::SyncSocket), with every message
//! checked by the state machine ([`crate::state`]) before it is sent and
//! after it arrives.
//!
//! * [`Child`] — the container's init (or exec) process: one method per
//!   request ([`Child::mount_source`], [`Child::hooks`], [`Child::ready`],
//!   [`Child::seccomp`]), each waiting for its reply, plus [`Child::fail`].
//! * [`Parent`] — the runtime: [`Parent::serve`] answers requests until
//!   the child closes, asking the mount policy ([`crate::policy`]) before a
//!   [`ParentHandler`] makes a mount source fd.
//!
//! Errors ([`SessionError`]) say who caused them ([`SessionError::origin`]):
//! the peer (violation, remote Error, close, bad record, timeout, death), the
//! local caller (misuse, a refusal or handler failure decided on this side)
//! or the OS. The parent sends Error only as the reply to a pending request:
//! a refused mount (`"mount request refused: …"`) or a failed handler
//! (`"<Request> failed in the parent: …"`). The child sends Error with
//! [`Child::fail`], never to a closed connection.
//!
//! How the parent makes a mount source fd is the handler's business (a
//! plain `open(O_PATH)`, `open_tree(2)`, an id-mapped mount made in a helper
//! user namespace); the session only carries the fd and its
//! [`MountSourceKind`].

// No I/O of its own: the kernel is reached through `transport` only. The
// single exception is `Child::from_env`, an `unsafe fn` forwarding
// `SyncSocket::from_env`'s contract (no unsafe block of its own).
#![deny(unsafe_code)]

mod child;
mod core;
mod error;
mod parent;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

pub use child::{Child, SeccompHandoff};
pub use core::{error_reply, TRUNCATION_MARK, UNSPECIFIED_ERROR};
pub use error::{error_chain, SessionError, SessionErrorKind, Step};
pub use parent::{
    refusal_text, ChildFd, HandlerError, Parent, ParentHandler, SeccompFd, ServeReport,
    DEFAULT_DEADLINE, REFUSAL_PREFIX,
};

use crate::schema::{MountSourceKind, SyncMessage};
use crate::state::{Direction, Role};

/// A mount source fd and how it was made (the child attaches the two kinds
/// differently: `move_mount(2)` for [`MountSourceKind::OpenTree`], a mount of
/// `/proc/self/fd/N` for [`MountSourceKind::PlainOpen`]).
#[derive(Debug)]
pub struct MountSource {
    /// The source fd (close-on-exec).
    pub fd: OwnedFd,
    /// How it was made.
    pub kind: MountSourceKind,
}

/// One message a session sent or received, as shown to an observer
/// ([`Child::with_observer`], [`Parent::with_observer`]).
#[derive(Debug, Clone, Copy)]
pub struct Traffic<'a> {
    /// The side that observed it.
    pub role: Role,
    /// [`Direction::Send`] (about to be sent) or [`Direction::Recv`] (just arrived).
    pub direction: Direction,
    /// The message.
    pub msg: &'a SyncMessage,
    /// The fd riding with it, if any.
    pub fd: Option<BorrowedFd<'a>>,
}

/// Copies fd number `fd` of the process behind `pidfd` into this process
/// (`pidfd_getfd(2)`, Linux 5.6; the copy is close-on-exec). Needs ptrace
/// access to that process (`PTRACE_MODE_ATTACH_REALCREDS`): a parent may
/// copy from its own child unless a security module forbids it.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    crate::transport::pidfd::get_fd(pidfd, fd)
}
