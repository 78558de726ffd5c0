//! The child's side: attach a mount source received in a `MountFd` reply at
//! its destination.
//!
//! Two calls:
//!
//! * [`attach_in_root`] — the safe one. The destination is resolved inside
//!   the container's root (a dirfd) with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`, so a symlink planted in the rootfs (absolute,
//!   `..`-laden or a `/proc` magic link) can never lead the mount out of the
//!   root (the CVE-2021-30465 class), and the mount goes onto that resolved
//!   fd, not onto a path walked again.
//! * [`attach`] — path-based: the kernel walks `destination` as given,
//!   following symlinks. It trusts its destination: use it only where no
//!   one untrusted can write any directory on the path.
//!
//! How each kind is attached:
//!
//! * [`MountSourceKind::OpenTree`] (a detached, possibly id-mapped tree):
//!   `move_mount(fd, "", target, …, MOVE_MOUNT_F_EMPTY_PATH [|
//!   MOVE_MOUNT_T_EMPTY_PATH])`;
//! * [`MountSourceKind::PlainOpen`] (an `O_PATH` fd):
//!   `mount("/proc/thread-self/fd/N", target, NULL, MS_BIND[|MS_REC], NULL)`,
//!   the target being `/proc/thread-self/fd/T` of the resolved destination
//!   for [`attach_in_root`].
//!
//! Both take the source by value and close the fd as soon as the mount is
//! done (or has failed): holding one fd per mount until setup ends made runc
//! hit EMFILE with many id-mapped mounts (runc #5177). Flags other than
//! `MS_REC` (read-only, propagation, …) are the caller's next step, as for
//! any bind mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::MoveMountFlags;

use super::mountfd::MountSource;
use crate::schema::MountSourceKind;
use crate::Origin;

/// The stable name of an [`AttachError`] (PROTOCOL.md §14); `Display`
/// prints the same kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachErrorKind {
    /// [`AttachError::UnspecifiedKind`].
    UnspecifiedKind,
    /// [`AttachError::BadDestination`].
    BadDestination,
    /// [`AttachError::ResolveDestination`].
    ResolveDestination,
    /// [`AttachError::MoveMount`].
    MoveMount,
    /// [`AttachError::Bind`].
    Bind,
}

impl AttachErrorKind {
    /// The kind's stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachErrorKind::UnspecifiedKind => "unspecified-kind",
            AttachErrorKind::BadDestination => "bad-destination",
            AttachErrorKind::ResolveDestination => "resolve-destination",
            AttachErrorKind::MoveMount => "move-mount",
            AttachErrorKind::Bind => "bind",
        }
    }
}

impl std::fmt::Display for AttachErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a source could not be attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Peer: the source's kind is `Unspecified` (never valid on the wire).
    #[error("cannot attach a mount source of unspecified kind at {destination:?}")]
    UnspecifiedKind {
        /// The destination.
        destination: PathBuf,
    },
    /// Local: the destination path contains a NUL byte.
    #[error("destination {destination:?} contains a NUL byte")]
    BadDestination {
        /// The destination.
        destination: PathBuf,
    },
    /// OS: resolving the destination inside the root
    /// (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`) failed — it does
    /// not exist, or passes through a magic link.
    #[error("resolving destination {destination:?} inside the container root failed")]
    ResolveDestination {
        /// The destination.
        destination: PathBuf,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: `move_mount` of an `OpenTree` source failed.
    #[error("move_mount of the detached source tree to {destination:?} failed")]
    MoveMount {
        /// The destination.
        destination: PathBuf,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// OS: the bind mount of a `PlainOpen` source failed.
    #[error(
        "bind mount of {proc_path} to {destination:?} failed{}",
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

impl AttachError {
    /// Who caused this error: [`Origin::Peer`] for a source of unspecified
    /// kind (the parent sent it), [`Origin::Local`] for a bad destination
    /// argument, [`Origin::Os`] when the kernel refused.
    pub fn origin(&self) -> Origin {
        match self {
            AttachError::UnspecifiedKind { .. } => Origin::Peer,
            AttachError::BadDestination { .. } => Origin::Local,
            AttachError::ResolveDestination { .. }
            | AttachError::MoveMount { .. }
            | AttachError::Bind { .. } => Origin::Os,
        }
    }

    /// The error's stable kind (PROTOCOL.md §14).
    pub fn kind(&self) -> AttachErrorKind {
        match self {
            AttachError::UnspecifiedKind { .. } => AttachErrorKind::UnspecifiedKind,
            AttachError::BadDestination { .. } => AttachErrorKind::BadDestination,
            AttachError::ResolveDestination { .. } => AttachErrorKind::ResolveDestination,
            AttachError::MoveMount { .. } => AttachErrorKind::MoveMount,
            AttachError::Bind { .. } => AttachErrorKind::Bind,
        }
    }
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

/// Where a source goes: a path walked by the kernel, or a resolved fd.
enum Target<'a> {
    Path(&'a CString),
    Fd(BorrowedFd<'a>),
}

/// Mounts `fd` (of `kind`) on `target`; the caller closes `fd`.
fn mount_on(
    fd: &OwnedFd,
    kind: MountSourceKind,
    target: Target<'_>,
    destination: &Path,
    recursive: bool,
) -> Result<(), AttachError> {
    match kind {
        MountSourceKind::OpenTree => {
            let r = match target {
                Target::Path(dest) => rustix::mount::move_mount(
                    fd.as_fd(),
                    c"",
                    rustix::fs::CWD,
                    dest.as_c_str(),
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                ),
                Target::Fd(t) => rustix::mount::move_mount(
                    fd.as_fd(),
                    c"",
                    t,
                    c"",
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
                        | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
                ),
            };
            r.map_err(|e| AttachError::MoveMount {
                destination: destination.to_path_buf(),
                err: e.into(),
            })
        }
        MountSourceKind::PlainOpen => {
            let proc_path = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
            let target = match target {
                Target::Path(dest) => dest.clone(),
                // The magic link names exactly the resolved object: mount(2)
                // follows it without walking the destination path again.
                Target::Fd(t) => CString::new(format!("/proc/thread-self/fd/{}", t.as_raw_fd()))
                    .expect("no NUL in a formatted fd path"),
            };
            let r = if recursive {
                rustix::mount::mount_bind_recursive(proc_path.as_str(), target.as_c_str())
            } else {
                rustix::mount::mount_bind(proc_path.as_str(), target.as_c_str())
            };
            r.map_err(|e| AttachError::Bind {
                proc_path,
                destination: destination.to_path_buf(),
                err: e.into(),
            })
        }
        _ => Err(AttachError::UnspecifiedKind {
            destination: destination.to_path_buf(),
        }),
    }
}

/// Attaches `source` at `destination` (which must exist) and closes the fd.
///
/// The kernel walks `destination` as given and follows every symlink on it:
/// this call **trusts its destination**. For a destination inside a rootfs
/// the container (or its image) can write, use [`attach_in_root`].
///
/// `recursive` is the request's `MS_REC`: it decides whether a `PlainOpen`
/// bind takes the submounts along. For `OpenTree` sources the parent already
/// decided that when it cloned the tree, so it is ignored there.
pub fn attach(source: MountSource, destination: &Path, recursive: bool) -> Result<(), AttachError> {
    let MountSource { fd, kind } = source;
    let result = match CString::new(destination.as_os_str().as_encoded_bytes()) {
        Ok(dest) => mount_on(&fd, kind, Target::Path(&dest), destination, recursive),
        Err(_) => Err(AttachError::BadDestination {
            destination: destination.to_path_buf(),
        }),
    };
    // Close now, success or not (runc #5177).
    drop(fd);
    result
}

/// How many times resolving the destination is retried when the kernel
/// reports a concurrent rename or mount (`EAGAIN` under `RESOLVE_IN_ROOT`).
const RESOLVE_RETRIES: usize = 32;

/// Attaches `source` at `destination` resolved **inside** `root` (the
/// container's rootfs, as a directory fd), then closes the source fd.
///
/// `destination` is taken relative to `root` whether or not it starts with
/// `/`. It is resolved with `openat2(root, destination, O_PATH | O_CLOEXEC,
/// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks on the way are
/// followed as if `root` were `/` (`..` stops at `root`), magic links are
/// refused, and the mount goes onto the object found — nothing is walked
/// twice, so a rename racing this call cannot redirect the mount outside
/// the root. The destination must exist.
///
/// `recursive` is the request's `MS_REC` (see [`attach`]).
pub fn attach_in_root(
    source: MountSource,
    root: BorrowedFd<'_>,
    destination: &Path,
    recursive: bool,
) -> Result<(), AttachError> {
    let MountSource { fd, kind } = source;
    let result = resolve_in_root(root, destination).and_then(|target| {
        mount_on(
            &fd,
            kind,
            Target::Fd(target.as_fd()),
            destination,
            recursive,
        )
    });
    // Close now, success or not (runc #5177).
    drop(fd);
    result
}

fn resolve_in_root(root: BorrowedFd<'_>, destination: &Path) -> Result<OwnedFd, AttachError> {
    let dest = CString::new(destination.as_os_str().as_encoded_bytes()).map_err(|_| {
        AttachError::BadDestination {
            destination: destination.to_path_buf(),
        }
    })?;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root,
            dest.as_c_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(AttachError::ResolveDestination {
                    destination: destination.to_path_buf(),
                    err: e.into(),
                })
            }
        }
    }
}
