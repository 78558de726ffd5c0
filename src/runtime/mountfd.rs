//! The parent's mount-fd service: turns a [`Mount`] request (the payload of a
//! `MountPlease`) into a mount source fd for the `MountFd` reply.
//!
//! # Where the source comes from
//!
//! The child is hostile (PROTOCOL.md §10): it may be able to write the trees
//! around a configured source, and with [`MountFdService::in_mount_namespace`]
//! it owns the mount namespace the source is resolved in. So the service
//! never decides on a path string and walks it again later:
//!
//! * **Pinned** ([`MountFdService::pinned`], [`PinnedSources`]): every
//!   configured bind source is resolved once, when the service is built —
//!   before the child exists — with `openat2(O_PATH | O_NOFOLLOW,
//!   RESOLVE_NO_MAGICLINKS [| RESOLVE_NO_SYMLINKS])` ([`Symlinks`]), and kept as an fd with
//!   its dev/ino/type. A request is served from that fd: a duplicate for a
//!   plain bind, `open_tree(pin, "", AT_EMPTY_PATH | OPEN_TREE_CLONE …)` for
//!   an id-mapped one. Whatever the child does to the path afterwards, it
//!   gets the configured object. This is the mode to use.
//! * **Resolved at request time** ([`MountFdService::new`],
//!   [`MountFdService::in_mount_namespace`]): the source path is resolved
//!   when the request arrives, with the same `openat2` rules (no magic links,
//!   the last component never followed, by default no symlink at all:
//!   [`Symlinks`]). This refuses symlink and `/proc` magic-link tricks but not
//!   a directory renamed or mounted into place by someone who can write the
//!   path: it trusts the directories above the source.
//!
//! # What is made
//!
//! * plain bind (no id mapping): an `O_PATH` fd of the source —
//!   [`MountSourceKind::PlainOpen`]; the child mounts `/proc/thread-self/fd/N`;
//! * id-mapped bind: `open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE |
//!   OPEN_TREE_CLOEXEC [| AT_RECURSIVE only if MS_REC])`, then
//!   `mount_setattr(MOUNT_ATTR_IDMAP)` with a user namespace fd (from the
//!   [`UsernsCache`] for explicit ranges, or `userns_path`, which must be a
//!   user-namespace nsfs file and is opened without blocking),
//!   `AT_RECURSIVE` when `id_mapping.recursive` —
//!   [`MountSourceKind::OpenTree`]; the child uses `move_mount`.
//!
//! # Bounded time
//!
//! [`MountFdService::make_source_until`] gives up at a deadline: work that
//! can block (a path walk through a hung automount or NFS export, opening a
//! `userns_path`) runs on a thread the call can abandon; the late result's
//! fd is closed when that thread finishes. Serving from a pin with explicit
//! ranges walks no path and runs inline.

use crate::Origin;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::mount::OpenTreeFlags;

use super::sys;
use super::userns::{UsernsCache, UsernsError};
use crate::policy::ConfiguredMounts;
use crate::schema::{ms, Mount, MountSourceKind};
use crate::wire::validate::validate_id_mapping;

pub use crate::session::MountSource;

/// The step of making a source fd that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Resolving the source: `openat2(source, O_PATH | O_NOFOLLOW,
    /// RESOLVE_NO_MAGICLINKS …)`.
    OpenPath,
    /// Duplicating a pinned source's fd for a plain bind.
    Dup,
    /// `open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE …)` for an id-mapped bind.
    OpenTree,
    /// Opening `id_mapping.userns_path`.
    OpenUserns,
    /// `mount_setattr(MOUNT_ATTR_IDMAP)`.
    SetIdmap,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::OpenPath => "openat2(O_PATH)",
            Step::Dup => "dup(pinned source)",
            Step::OpenTree => "open_tree(OPEN_TREE_CLONE)",
            Step::OpenUserns => "open(userns_path)",
            Step::SetIdmap => "mount_setattr(MOUNT_ATTR_IDMAP)",
        })
    }
}

/// Which symlinks resolving a source path may follow. Magic links
/// (`/proc/PID/fd/N`, `/proc/PID/root`, …) are never followed, and neither
/// is a symlink as the last component: a source that is a symlink is refused
/// (configure the path it leads to).
///
/// Pinning ([`MountFdService::pinned`]) uses [`FollowBeforeLast`](Self::FollowBeforeLast):
/// it runs before the child exists, on the trusted configuration.
/// Request-time resolution defaults to [`Refuse`](Self::Refuse): the path is
/// walked while the child runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Symlinks {
    /// No symlink anywhere in the path (`RESOLVE_NO_SYMLINKS`). The default
    /// for request-time resolution.
    #[default]
    Refuse,
    /// Symlinks before the last component are followed (a host layout such as
    /// `/var/run -> /run`). Used for pinning; at request time only for paths
    /// no one untrusted can write.
    FollowBeforeLast,
}

impl Symlinks {
    fn resolve_flags(self) -> ResolveFlags {
        match self {
            Symlinks::Refuse => ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
            Symlinks::FollowBeforeLast => ResolveFlags::NO_MAGICLINKS,
        }
    }
}

/// The stable name of a [`MountFdError`] (PROTOCOL.md §14), for logs, metrics
/// and cross-language tests; `Display` prints the same kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountFdErrorKind {
    /// [`MountFdError::NotBind`].
    NotBind,
    /// [`MountFdError::InvalidRequest`].
    InvalidRequest,
    /// [`MountFdError::NotPinned`].
    NotPinned,
    /// [`MountFdError::Symlink`].
    Symlink,
    /// [`MountFdError::Userns`].
    Userns,
    /// [`MountFdError::NotUserNamespace`].
    NotUserNamespace,
    /// [`MountFdError::Os`].
    Os,
    /// [`MountFdError::TimedOut`].
    TimedOut,
    /// [`MountFdError::Pin`].
    Pin,
    /// [`MountFdError::MountNamespace`].
    MountNamespace,
    /// [`MountFdError::Worker`].
    Worker,
}

impl MountFdErrorKind {
    /// The kind's stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            MountFdErrorKind::NotBind => "not-bind",
            MountFdErrorKind::InvalidRequest => "invalid-request",
            MountFdErrorKind::NotPinned => "not-pinned",
            MountFdErrorKind::Symlink => "symlink",
            MountFdErrorKind::Userns => "userns",
            MountFdErrorKind::NotUserNamespace => "not-user-namespace",
            MountFdErrorKind::Os => "os",
            MountFdErrorKind::TimedOut => "timed-out",
            MountFdErrorKind::Pin => "pin",
            MountFdErrorKind::MountNamespace => "mount-namespace",
            MountFdErrorKind::Worker => "worker",
        }
    }
}

impl std::fmt::Display for MountFdErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a mount source fd could not be made. Request errors come from the
/// peer's `MountPlease` (or the caller building it); `Os` errors name the
/// source and the failing step; `Pin`, `MountNamespace` and `Worker` errors
/// are this process's own setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountFdError {
    /// Request: not a bind mount. Only bind mounts have a source fd to make.
    #[error(
        "mount request for {source_path:?} at {destination:?} (device {device:?}) is not a bind mount \
         (MS_BIND unset): only bind mounts get a source fd"
    )]
    NotBind {
        /// The request's source.
        source_path: String,
        /// The request's destination.
        destination: String,
        /// The request's device (fs type).
        device: String,
    },
    /// Request: a field is malformed (empty or relative source, bad id mapping).
    #[error("invalid mount request for source {source_path:?}: {field}: {reason}")]
    InvalidRequest {
        /// The request's source.
        source_path: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Request: a pinned service was asked for a source it did not pin
    /// (only configured bind sources are pinned, and only those are served).
    #[error("source {source_path:?} is not one of the sources pinned when the service was built")]
    NotPinned {
        /// The request's source.
        source_path: String,
    },
    /// Request: resolving the source at request time met a symlink or magic
    /// link the resolution rules ([`Symlinks`]) refuse, or the source itself
    /// is a symlink. Nothing was opened past it.
    #[error(
        "source {source_path:?} is or passes through a symlink or magic link, which is not followed"
    )]
    Symlink {
        /// The request's source.
        source_path: String,
    },
    /// Request or OS: the id mapping's user namespace could not be made.
    #[error("id mapping for source {source_path:?}")]
    Userns {
        /// The request's source.
        source_path: String,
        /// The underlying error.
        #[source]
        err: UsernsError,
    },
    /// Request: `userns_path` is not a user namespace file.
    #[error("id mapping for source {source_path:?}: userns_path {path:?} is not a user namespace")]
    NotUserNamespace {
        /// The request's source.
        source_path: String,
        /// The path given.
        path: String,
    },
    /// OS: a step failed for this source.
    #[error("{step} for source {source_path:?} failed{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Os {
        /// The request's source (or the userns path for [`Step::OpenUserns`]).
        source_path: String,
        /// The failing step.
        step: Step,
        /// The OS error.
        #[source]
        err: io::Error,
        /// A likely cause, when there is a well-known one.
        hint: Option<&'static str>,
    },
    /// OS: the work did not finish by the deadline (a hung automount or NFS
    /// export, say). It goes on in an abandoned thread; whatever it produces
    /// is closed when it finishes.
    #[error("making the source {source_path:?} did not finish within {waited:?}")]
    TimedOut {
        /// The request's source.
        source_path: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// Local: a configured bind source could not be pinned when the service
    /// was built.
    #[error("pinning the configured source {source_path:?} failed{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Pin {
        /// The configured source.
        source_path: String,
        /// The OS error (ELOOP for a symlink the rules refuse).
        #[source]
        err: io::Error,
        /// A likely cause, when there is a well-known one.
        hint: Option<&'static str>,
    },
    /// Local: joining the target mount namespace failed.
    #[error("joining mount namespace {path:?} for the mount-fd worker failed")]
    MountNamespace {
        /// The namespace path.
        path: PathBuf,
        /// The OS error.
        #[source]
        err: io::Error,
    },
    /// Local: the mount-fd worker thread could not be started or has gone.
    #[error("mount-fd worker: {0}")]
    Worker(&'static str),
}

impl MountFdError {
    /// Who caused this error: [`Origin::Peer`] for the request (the peer's
    /// `MountPlease`), [`Origin::Os`] when the kernel refused a step for a
    /// well-formed request or did not answer in time, [`Origin::Local`] for
    /// this process's own setup (pinning, the mount-namespace worker).
    pub fn origin(&self) -> Origin {
        match self {
            MountFdError::NotBind { .. }
            | MountFdError::InvalidRequest { .. }
            | MountFdError::NotPinned { .. }
            | MountFdError::Symlink { .. }
            | MountFdError::NotUserNamespace { .. } => Origin::Peer,
            MountFdError::Userns { err, .. } if err.is_invalid_mapping() => Origin::Peer,
            MountFdError::Userns { .. }
            | MountFdError::Os { .. }
            | MountFdError::TimedOut { .. } => Origin::Os,
            MountFdError::Pin { .. }
            | MountFdError::MountNamespace { .. }
            | MountFdError::Worker(_) => Origin::Local,
        }
    }

    /// The error's stable kind (PROTOCOL.md §14).
    pub fn kind(&self) -> MountFdErrorKind {
        match self {
            MountFdError::NotBind { .. } => MountFdErrorKind::NotBind,
            MountFdError::InvalidRequest { .. } => MountFdErrorKind::InvalidRequest,
            MountFdError::NotPinned { .. } => MountFdErrorKind::NotPinned,
            MountFdError::Symlink { .. } => MountFdErrorKind::Symlink,
            MountFdError::Userns { .. } => MountFdErrorKind::Userns,
            MountFdError::NotUserNamespace { .. } => MountFdErrorKind::NotUserNamespace,
            MountFdError::Os { .. } => MountFdErrorKind::Os,
            MountFdError::TimedOut { .. } => MountFdErrorKind::TimedOut,
            MountFdError::Pin { .. } => MountFdErrorKind::Pin,
            MountFdError::MountNamespace { .. } => MountFdErrorKind::MountNamespace,
            MountFdError::Worker(_) => MountFdErrorKind::Worker,
        }
    }

    /// The OS error code, when the kernel refused a step.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MountFdError::Os { err, .. }
            | MountFdError::Pin { err, .. }
            | MountFdError::MountNamespace { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

const IDMAP_EINVAL_HINT: &str =
    "the filesystem may not support id-mapped mounts (needs Linux >= 5.12; tmpfs >= 6.3)";
const PIN_ELOOP_HINT: &str = "the path is or passes through a symlink or magic link; \
     configure the path it leads to, or allow symlinks before the last component with Symlinks::FollowBeforeLast";

/// Checks a request and returns the source as a C string.
fn check_request(req: &Mount) -> Result<CString, MountFdError> {
    let invalid = |field, reason| MountFdError::InvalidRequest {
        source_path: req.source.clone(),
        field,
        reason,
    };
    if !req.is_bind() {
        return Err(MountFdError::NotBind {
            source_path: req.source.clone(),
            destination: req.destination.clone(),
            device: req.device.clone(),
        });
    }
    if req.source.is_empty() {
        return Err(invalid("source", "empty"));
    }
    if !req.source.starts_with('/') {
        return Err(invalid("source", "not an absolute path"));
    }
    if let Some(idm) = &req.id_mapping {
        validate_id_mapping(idm).map_err(|(field, reason)| invalid(field, reason))?;
    }
    CString::new(req.source.as_str()).map_err(|_| invalid("source", "contains NUL"))
}

/// How many times a resolution is retried when the kernel reports a
/// concurrent rename or mount (`EAGAIN`) before giving up with it.
const RESOLVE_RETRIES: usize = 32;

/// `openat2(AT_FDCWD, path, O_PATH | O_NOFOLLOW | O_CLOEXEC, resolve)`: an
/// `O_PATH` fd of the object at `path` (a symlink as the last component is
/// opened as itself, never followed), and its `fstat`.
fn resolve_o_path(path: &CString, symlinks: Symlinks) -> io::Result<(OwnedFd, rustix::fs::Stat)> {
    let mut tries = 0;
    let fd = loop {
        match rustix::fs::openat2(
            rustix::fs::CWD,
            path.as_c_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            symlinks.resolve_flags(),
        ) {
            Err(rustix::io::Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
            Err(rustix::io::Errno::INTR) => {}
            r => break r?,
        }
    };
    let st = rustix::fs::fstat(&fd)?;
    Ok((fd, st))
}

/// A configured bind source resolved once and held: the object every request
/// for this source is served from.
#[derive(Debug)]
pub struct PinnedSource {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    is_dir: bool,
}

impl PinnedSource {
    /// The pinned `O_PATH` fd (owned by the pin; duplicate it to keep it).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `st_dev` of the pinned object.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `st_ino` of the pinned object.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Whether the pinned object is a directory (otherwise a file, device,
    /// FIFO or socket: bind mounts take any of these).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }
}

/// The configured bind sources, each resolved once and pinned as an
/// `O_PATH` fd with its dev/ino — built before the child exists, so nothing
/// the child does to the paths later changes what is served.
///
/// Each distinct `source` of a bind mount (`MS_BIND`) is resolved with
/// `openat2(O_PATH | O_NOFOLLOW, RESOLVE_NO_MAGICLINKS [|
/// RESOLVE_NO_SYMLINKS])` per [`Symlinks`]; a source that is itself a
/// symlink is refused. Other mounts (proc, tmpfs, …) have no source to pin
/// and are skipped. The pins hold one fd each until dropped.
#[derive(Debug, Default)]
pub struct PinnedSources {
    by_source: HashMap<String, Arc<PinnedSource>>,
}

impl PinnedSources {
    /// Pins every bind source of `mounts` in the calling thread's mount
    /// namespace. Fails on the first source that cannot be pinned (and pins
    /// nothing then): a configuration naming a missing source, a symlink, or
    /// a relative path is an error before the container starts, not a
    /// refusal later.
    pub fn pin(mounts: &[Mount], symlinks: Symlinks) -> Result<PinnedSources, MountFdError> {
        let mut by_source = HashMap::new();
        for m in mounts.iter().filter(|m| m.is_bind()) {
            if by_source.contains_key(&m.source) {
                continue;
            }
            let pin_err = |err: io::Error, hint| MountFdError::Pin {
                source_path: m.source.clone(),
                err,
                hint,
            };
            if !m.source.starts_with('/') {
                return Err(pin_err(
                    io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"),
                    None,
                ));
            }
            let path = CString::new(m.source.as_str()).map_err(|_| {
                pin_err(
                    io::Error::new(io::ErrorKind::InvalidInput, "contains NUL"),
                    None,
                )
            })?;
            let (fd, st) = resolve_o_path(&path, symlinks).map_err(|e| {
                let hint = (e.raw_os_error() == Some(libc::ELOOP)).then_some(PIN_ELOOP_HINT);
                pin_err(e, hint)
            })?;
            let ty = FileType::from_raw_mode(st.st_mode);
            if ty == FileType::Symlink {
                return Err(pin_err(
                    io::Error::from_raw_os_error(libc::ELOOP),
                    Some(PIN_ELOOP_HINT),
                ));
            }
            let pinned = PinnedSource {
                fd,
                dev: st.st_dev,
                ino: st.st_ino,
                is_dir: ty == FileType::Directory,
            };
            by_source.insert(m.source.clone(), Arc::new(pinned));
        }
        Ok(PinnedSources { by_source })
    }

    /// The pin for a configured source path, if it was pinned.
    pub fn get(&self, source: &str) -> Option<&PinnedSource> {
        self.by_source.get(source).map(|p| &**p)
    }

    /// How many distinct sources are pinned.
    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }
}

/// Opens `userns_path` without blocking and checks it is a user namespace.
///
/// The path comes from the configuration (the policy compared it), so it is
/// resolved as given — namespace files are reached through `/proc` magic
/// links. It is first opened `O_PATH` (which never opens a FIFO or device),
/// must be on nsfs, and is then reopened `O_RDONLY | O_NONBLOCK | O_NOCTTY`
/// through that fd for `mount_setattr`, which takes only a real open.
fn open_userns_path(source: &str, path: &str) -> Result<OwnedFd, MountFdError> {
    let os = |e: io::Error| MountFdError::Os {
        source_path: path.to_string(),
        step: Step::OpenUserns,
        err: e,
        hint: None,
    };
    let not_userns = || MountFdError::NotUserNamespace {
        source_path: source.to_string(),
        path: path.to_string(),
    };
    let p = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| os(e.into()))?;
    let fs = rustix::fs::fstatfs(&p).map_err(|e| os(e.into()))?;
    // The two types differ between targets (i64, u32, c_long).
    #[allow(clippy::unnecessary_cast)]
    let nsfs = fs.f_type as i64 == libc::NSFS_MAGIC as i64;
    if !nsfs {
        return Err(not_userns());
    }
    let fd = rustix::fs::open(
        format!("/proc/thread-self/fd/{}", p.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| os(e.into()))?;
    match sys::ns_get_nstype(fd.as_fd()) {
        Ok(t) if t == libc::CLONE_NEWUSER => Ok(fd),
        _ => Err(not_userns()),
    }
}

/// Resolves the user namespace fd of an id-mapped request in the caller's
/// namespaces: from the cache for ranges, by opening `userns_path` otherwise.
fn userns_fd(req: &Mount, cache: &UsernsCache) -> Result<Option<OwnedFd>, MountFdError> {
    let Some(idm) = &req.id_mapping else {
        return Ok(None);
    };
    if idm.userns_path.is_empty() {
        return cache
            .get(&idm.uid_mappings, &idm.gid_mappings)
            .map(Some)
            .map_err(|err| MountFdError::Userns {
                source_path: req.source.clone(),
                err,
            });
    }
    open_userns_path(&req.source, &idm.userns_path).map(Some)
}

/// What a request is served from.
#[derive(Clone)]
enum Target {
    /// The pin made when the service was built.
    Pinned(Arc<PinnedSource>),
    /// The path, resolved now under these rules.
    Path(CString, Symlinks),
}

/// The object a source is made from: a pin, or the fd just resolved.
enum Object<'a> {
    Pinned(BorrowedFd<'a>),
    Fresh(OwnedFd),
}

impl Object<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Object::Pinned(fd) => *fd,
            Object::Fresh(fd) => fd.as_fd(),
        }
    }
}

/// Makes the source fd in the calling thread's mount namespace.
fn make_here(
    req: &Mount,
    target: &Target,
    userns: Option<OwnedFd>,
) -> Result<MountSource, MountFdError> {
    let os = |step, e: io::Error, hint| MountFdError::Os {
        source_path: req.source.clone(),
        step,
        err: e,
        hint,
    };
    let object = match target {
        Target::Pinned(pin) => Object::Pinned(pin.fd.as_fd()),
        Target::Path(path, symlinks) => {
            let (fd, st) = resolve_o_path(path, *symlinks).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    MountFdError::Symlink {
                        source_path: req.source.clone(),
                    }
                } else {
                    os(Step::OpenPath, e, None)
                }
            })?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(MountFdError::Symlink {
                    source_path: req.source.clone(),
                });
            }
            Object::Fresh(fd)
        }
    };
    let Some(userns) = userns else {
        let fd = match object {
            Object::Fresh(fd) => fd,
            Object::Pinned(pin) => rustix::io::fcntl_dupfd_cloexec(pin, 0)
                .map_err(|e| os(Step::Dup, e.into(), None))?,
        };
        return Ok(MountSource {
            fd,
            kind: MountSourceKind::PlainOpen,
        });
    };
    let mut flags = OpenTreeFlags::AT_EMPTY_PATH
        | OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_NO_AUTOMOUNT;
    if req.flags & ms::REC != 0 {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(object.as_fd(), c"", flags)
        .map_err(|e| os(Step::OpenTree, e.into(), None))?;
    let recursive = req.id_mapping.as_ref().is_some_and(|m| m.recursive);
    sys::mount_setattr_idmap(tree.as_fd(), userns.as_fd(), recursive).map_err(|e| {
        let hint = (e.raw_os_error() == Some(libc::EINVAL)).then_some(IDMAP_EINVAL_HINT);
        os(Step::SetIdmap, e, hint)
    })?;
    // The userns fd closes here; the mount holds its own reference.
    Ok(MountSource {
        fd: tree,
        kind: MountSourceKind::OpenTree,
    })
}

/// Runs `work` on a fresh thread and waits for it until `deadline`. On
/// timeout the thread is abandoned: its result, sent to a dropped receiver,
/// is dropped (and any fd in it closed) when the work finally finishes.
fn run_abandonable<T: Send + 'static>(
    source: &str,
    deadline: Instant,
    work: impl FnOnce() -> Result<T, MountFdError> + Send + 'static,
) -> Result<T, MountFdError> {
    let start = Instant::now();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("procsync-mountfd-call".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|_| MountFdError::Worker("cannot spawn a thread for the request"))?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(MountFdError::TimedOut {
            source_path: source.to_string(),
            waited: start.elapsed(),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(MountFdError::Worker("the request's thread died"))
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The live thread of a [`Worker`].
struct WorkerThread {
    tx: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
    generation: u64,
}

/// A thread inside the target mount namespace running jobs in order. When a
/// job misses its deadline the thread is abandoned (it may be stuck in the
/// kernel) and the next job starts a new one from the kept namespace fd.
struct Worker {
    ns: OwnedFd,
    path: PathBuf,
    current: Mutex<(Option<WorkerThread>, u64)>,
}

impl Worker {
    fn start(path: PathBuf, ns: OwnedFd) -> Result<Worker, MountFdError> {
        let w = Worker {
            ns,
            path,
            current: Mutex::new((None, 0)),
        };
        let mut cur = w.current.lock().unwrap_or_else(|p| p.into_inner());
        let t = w.spawn(cur.1)?;
        *cur = (Some(t), 1);
        drop(cur);
        Ok(w)
    }

    fn spawn(&self, generation: u64) -> Result<WorkerThread, MountFdError> {
        let ns = self
            .ns
            .try_clone()
            .map_err(|err| MountFdError::MountNamespace {
                path: self.path.clone(),
                err,
            })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("procsync-mountfd".into())
            .spawn(move || {
                let joined = sys::unshare_fs().and_then(|()| {
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Mount),
                    )
                    .map_err(io::Error::from)
                });
                drop(ns);
                let ok = joined.is_ok();
                let _ = ready_tx.send(joined);
                if !ok {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .map_err(|_| MountFdError::Worker("cannot spawn the worker thread"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(WorkerThread {
                tx,
                thread,
                generation,
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(MountFdError::MountNamespace {
                    path: self.path.clone(),
                    err,
                })
            }
            Err(_) => {
                let _ = thread.join();
                Err(MountFdError::Worker("worker thread died while starting"))
            }
        }
    }

    /// Runs `work` in the namespace; waits until `deadline` if one is given.
    fn run<T: Send + 'static>(
        &self,
        source: &str,
        deadline: Option<Instant>,
        work: impl FnOnce() -> Result<T, MountFdError> + Send + 'static,
    ) -> Result<T, MountFdError> {
        let start = Instant::now();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = reply_tx.send(work());
        });
        let generation = {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.0.is_none() {
                let g = cur.1;
                cur.0 = Some(self.spawn(g)?);
                cur.1 += 1;
            }
            let t = cur.0.as_ref().ok_or(MountFdError::Worker("no worker"))?;
            t.tx.send(job)
                .map_err(|_| MountFdError::Worker("worker thread has exited"))?;
            t.generation
        };
        let Some(deadline) = deadline else {
            return reply_rx
                .recv()
                .map_err(|_| MountFdError::Worker("worker thread dropped the request"))?;
        };
        match reply_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread may be stuck in the kernel: let it go (never
                // joined); the next request starts a fresh one.
                let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
                if cur.0.as_ref().is_some_and(|t| t.generation == generation) {
                    cur.0 = None;
                }
                Err(MountFdError::TimedOut {
                    source_path: source.to_string(),
                    waited: start.elapsed(),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(MountFdError::Worker("worker thread dropped the request"))
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let cur = self.current.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cur.0.take() {
            // Closing the channel ends the worker's loop.
            drop(t.tx);
            let _ = t.thread.join();
        }
    }
}

/// Makes mount source fds for `MountPlease` requests; one call per request
/// ([`make_source`](MountFdService::make_source),
/// [`make_source_until`](MountFdService::make_source_until)). Thread-safe
/// (`&self`).
pub struct MountFdService {
    cache: Arc<UsernsCache>,
    pins: Option<PinnedSources>,
    symlinks: Symlinks,
    worker: Option<Worker>,
}

impl std::fmt::Debug for MountFdService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountFdService")
            .field("cached_userns", &self.cache.len())
            .field("pinned", &self.pins.as_ref().map(PinnedSources::len))
            .field("symlinks", &self.symlinks)
            .field("in_mount_namespace", &self.worker.is_some())
            .finish()
    }
}

impl Default for MountFdService {
    fn default() -> Self {
        Self::new()
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd, MountFdError> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        MountFdError::MountNamespace {
            path: path.to_path_buf(),
            err: e.into(),
        }
    })
}

impl MountFdService {
    /// A service that resolves each request's source path when the request
    /// arrives, in the caller's mount namespace, with its own user namespace
    /// cache. Prefer [`pinned`](Self::pinned): this one trusts the
    /// directories above every source (see the module docs).
    pub fn new() -> Self {
        Self::with_cache(Default::default())
    }

    /// Like [`new`](Self::new), sharing `cache`.
    pub fn with_cache(cache: Arc<UsernsCache>) -> Self {
        MountFdService {
            cache,
            pins: None,
            symlinks: Symlinks::default(),
            worker: None,
        }
    }

    /// A service that serves only the configured bind sources, each pinned
    /// now in the caller's mount namespace ([`PinnedSources`];
    /// [`Symlinks::FollowBeforeLast`]: the configuration is trusted at this
    /// point, magic links and a symlink as the last component are still
    /// refused). Build it before the child exists; a request for any other
    /// source is refused ([`MountFdError::NotPinned`]).
    pub fn pinned(configured: &ConfiguredMounts) -> Result<Self, MountFdError> {
        Self::pinned_with(
            configured.mounts(),
            Symlinks::FollowBeforeLast,
            Arc::default(),
        )
    }

    /// [`pinned`](Self::pinned) with the symlink rule and cache given.
    pub fn pinned_with(
        mounts: &[Mount],
        symlinks: Symlinks,
        cache: Arc<UsernsCache>,
    ) -> Result<Self, MountFdError> {
        Ok(Self::from_pins(
            PinnedSources::pin(mounts, symlinks)?,
            cache,
        ))
    }

    /// A service serving exactly `pins`.
    pub fn from_pins(pins: PinnedSources, cache: Arc<UsernsCache>) -> Self {
        MountFdService {
            cache,
            pins: Some(pins),
            symlinks: Symlinks::default(),
            worker: None,
        }
    }

    /// A service resolving sources at request time inside the mount
    /// namespace at `ns_path` (e.g. `/proc/PID/ns/mnt` of the container's
    /// init), as runc does so that sources made by earlier mounts inside the
    /// container rootfs resolve. The child owns that namespace: prefer
    /// [`in_mount_namespace_pinned`](Self::in_mount_namespace_pinned).
    ///
    /// Starts a worker thread that does `unshare(CLONE_FS)` and
    /// `setns(CLONE_NEWNS)` and then serves requests; it stops when the service
    /// is dropped. Needs CAP_SYS_ADMIN and CAP_SYS_CHROOT.
    pub fn in_mount_namespace(
        ns_path: impl AsRef<Path>,
        cache: Arc<UsernsCache>,
    ) -> Result<Self, MountFdError> {
        let path = ns_path.as_ref().to_path_buf();
        let ns = open_ns(&path)?;
        Ok(MountFdService {
            cache,
            pins: None,
            symlinks: Symlinks::default(),
            worker: Some(Worker::start(path, ns)?),
        })
    }

    /// A service whose worker joins the mount namespace at `ns_path` and pins
    /// the bind sources of `mounts` there, now; requests are served from the
    /// pins (id-mapped clones are made by the worker, in that namespace).
    /// Build it right after the child's namespace exists and before the child
    /// runs anything it does not trust: later mounts or renames in the
    /// namespace do not change what is served.
    pub fn in_mount_namespace_pinned(
        ns_path: impl AsRef<Path>,
        mounts: &[Mount],
        symlinks: Symlinks,
        cache: Arc<UsernsCache>,
    ) -> Result<Self, MountFdError> {
        let path = ns_path.as_ref().to_path_buf();
        let ns = open_ns(&path)?;
        let worker = Worker::start(path, ns)?;
        let mounts = mounts.to_vec();
        let pins = worker.run("", None, move || PinnedSources::pin(&mounts, symlinks))?;
        Ok(MountFdService {
            cache,
            pins: Some(pins),
            symlinks,
            worker: Some(worker),
        })
    }

    /// Which symlinks request-time resolution may follow (default
    /// [`Symlinks::Refuse`]). Pinned services resolved theirs when built.
    pub fn with_symlinks(mut self, symlinks: Symlinks) -> Self {
        self.symlinks = symlinks;
        self
    }

    /// The user namespace cache this service uses for id-mapping ranges.
    pub fn userns_cache(&self) -> &UsernsCache {
        &self.cache
    }

    /// The pinned sources, for a pinned service.
    pub fn pinned_sources(&self) -> Option<&PinnedSources> {
        self.pins.as_ref()
    }

    /// Makes the source fd for one `MountPlease` request; the reply to send is
    /// `SyncMessage::mount_fd(src.kind, &req.source)` with `src.fd` attached.
    ///
    /// Only bind mounts (`MS_BIND`) qualify. Without an id mapping the source
    /// is an `O_PATH` fd ([`MountSourceKind::PlainOpen`]); with one, it is
    /// cloned with `open_tree` and id-mapped ([`MountSourceKind::OpenTree`]).
    /// Waits as long as the kernel takes; see
    /// [`make_source_until`](Self::make_source_until).
    pub fn make_source(&self, req: &Mount) -> Result<MountSource, MountFdError> {
        self.make_source_until(req, None)
    }

    /// [`make_source`](Self::make_source), giving up at `deadline` with
    /// [`MountFdError::TimedOut`].
    ///
    /// Work that can block — resolving a path (a hung automount or NFS
    /// export), opening `userns_path`, anything on the mount-namespace worker
    /// — runs on a thread this call abandons at the deadline; whatever that
    /// thread produces later is closed. A plain source from a pin is a `dup`
    /// and an id-mapped one from a pin with ranges walks no path: both run
    /// inline. A worker abandoned at a deadline is replaced by a fresh one
    /// for the next request.
    pub fn make_source_until(
        &self,
        req: &Mount,
        deadline: Option<Instant>,
    ) -> Result<MountSource, MountFdError> {
        let source = check_request(req)?;
        let target = match &self.pins {
            Some(pins) => match pins.by_source.get(&req.source) {
                Some(pin) => Target::Pinned(Arc::clone(pin)),
                None => {
                    return Err(MountFdError::NotPinned {
                        source_path: req.source.clone(),
                    })
                }
            },
            None => Target::Path(source, self.symlinks),
        };
        let by_path = req
            .id_mapping
            .as_ref()
            .is_some_and(|m| !m.userns_path.is_empty());
        let userns = match deadline {
            Some(deadline) if by_path => {
                let (r, cache) = (req.clone(), Arc::clone(&self.cache));
                run_abandonable(&req.source, deadline, move || userns_fd(&r, &cache))?
            }
            _ => userns_fd(req, &self.cache)?,
        };
        if let Some(worker) = &self.worker {
            if userns.is_some() || matches!(target, Target::Path(..)) {
                let r = req.clone();
                return worker.run(&req.source, deadline, move || {
                    make_here(&r, &target, userns)
                });
            }
            // A plain source from a pin: a dup, in any namespace.
        }
        match (deadline, &target) {
            (Some(deadline), Target::Path(..)) => {
                let r = req.clone();
                run_abandonable(&req.source, deadline, move || {
                    make_here(&r, &target, userns)
                })
            }
            _ => make_here(req, &target, userns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{IdMap, IdMapping};

    #[test]
    fn non_bind_and_relative_sources_are_refused_before_any_syscall() {
        let svc = MountFdService::new();
        let tmpfs = Mount {
            source: "tmpfs".into(),
            destination: "/tmp".into(),
            device: "tmpfs".into(),
            ..Default::default()
        };
        let e = svc.make_source(&tmpfs).unwrap_err();
        assert!(matches!(e, MountFdError::NotBind { .. }), "{e}");
        assert!(e.to_string().contains("not a bind mount"), "{e}");
        let rel = Mount::bind("relative/dir", "/mnt");
        let e = svc.make_source(&rel).unwrap_err();
        assert!(
            matches!(
                e,
                MountFdError::InvalidRequest {
                    field: "source",
                    ..
                }
            ),
            "{e}"
        );
        let both = Mount::bind("/tmp", "/mnt").with_id_mapping(IdMapping {
            userns_path: "/proc/self/ns/user".into(),
            uid_mappings: vec![IdMap::new(0, 1, 1)],
            ..Default::default()
        });
        let e = svc.make_source(&both).unwrap_err();
        assert!(matches!(e, MountFdError::InvalidRequest { .. }), "{e}");
    }
}
