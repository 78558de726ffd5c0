//! The child's side: attach a mount source received in a `MountFd` reply at
//! its destination.
//!
//! * [`MountSourceKind::OpenTree`] (a detached, possibly id-mapped tree):
//!   `move_mount(fd, "", AT_FDCWD, dest, MOVE_MOUNT_F_EMPTY_PATH)`;
//! * [`MountSourceKind::PlainOpen`] (an `O_PATH` fd):
//!   `mount("/proc/thread-self/fd/N", dest, NULL, MS_BIND[|MS_REC], NULL)`.
//!
//! [`attach`] takes the source by value and closes the fd as soon as the
//! mount is done (or has failed): holding one fd per mount until setup ends
//! made runc hit EMFILE with many id-mapped mounts (runc #5177). Flags other
//! than `MS_REC` (read-only, propagation, …) are the caller's next step, as
//! for any bind mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use super::mountfd::MountSource;
use super::sys;
use crate::schema::MountSourceKind;

/// Why a source could not be attached. All but `UnspecifiedKind` are OS
/// errors naming the destination and the call.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Misuse/peer: the source's kind is `Unspecified` (never valid on the wire).
    #[error("cannot attach a mount source of unspecified kind at {destination:?}")]
    UnspecifiedKind {
        /// The destination.
        destination: PathBuf,
    },
    /// Misuse: the destination path contains a NUL byte.
    #[error("destination {destination:?} contains a NUL byte")]
    BadDestination {
        /// The destination.
        destination: PathBuf,
    },
    /// OS: `move_mount` of an `OpenTree` source failed.
    #[error("move_mount of the detached source tree to {destination:?} failed: {err}")]
    MoveMount {
        /// The destination.
        destination: PathBuf,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: the bind mount of a `PlainOpen` source failed.
    #[error(
        "bind mount of {proc_path} to {destination:?} failed: {err}{}",
        bind_hint(err)
    )]
    Bind {
        /// The `/proc/thread-self/fd/N` path used as source.
        proc_path: String,
        /// The destination.
        destination: PathBuf,
        /// The OS error.
        #[source]
        err: io::Error,
    },
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOENT) => " (is /proc mounted, and does the destination exist?)",
        Some(libc::EINVAL) => {
            " (a plain source must be a path in this mount namespace: make it with \
             MountFdService::in_mount_namespace)"
        }
        _ => "",
    }
}

/// Attaches `source` at `destination` (which must exist) and closes the fd.
///
/// `recursive` is the request's `MS_REC`: it decides whether a `PlainOpen`
/// bind takes the submounts along. For `OpenTree` sources the parent already
/// decided that when it cloned the tree, so it is ignored there.
pub fn attach(source: MountSource, destination: &Path, recursive: bool) -> Result<(), AttachError> {
    let MountSource { fd, kind } = source;
    let dest = CString::new(destination.as_os_str().as_encoded_bytes()).map_err(|_| {
        AttachError::BadDestination {
            destination: destination.to_path_buf(),
        }
    })?;
    let result = match kind {
        MountSourceKind::OpenTree => {
            sys::move_mount_fd(fd.as_fd(), &dest).map_err(|err| AttachError::MoveMount {
                destination: destination.to_path_buf(),
                err,
            })
        }
        MountSourceKind::PlainOpen => {
            let proc_path = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
            let r = if recursive {
                rustix::mount::mount_bind_recursive(proc_path.as_str(), dest.as_c_str())
            } else {
                rustix::mount::mount_bind(proc_path.as_str(), dest.as_c_str())
            };
            r.map_err(|e| AttachError::Bind {
                proc_path,
                destination: destination.to_path_buf(),
                err: e.into(),
            })
        }
        MountSourceKind::Unspecified => Err(AttachError::UnspecifiedKind {
            destination: destination.to_path_buf(),
        }),
    };
    // Close now, success or not (runc #5177).
    drop(fd);
    result
}
