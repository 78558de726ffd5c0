//! The parent's mount-fd service: turns a [`Mount`] request (the payload of a
//! `MountPlease`) into a mount source fd for the `MountFd` reply.
//!
//! * plain bind (no id mapping): `open(source, O_PATH | O_CLOEXEC)` —
//!   [`MountSourceKind::PlainOpen`]; the child mounts `/proc/thread-self/fd/N`;
//! * id-mapped bind: `open_tree(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
//!   [| AT_RECURSIVE if MS_REC])`, then `mount_setattr(MOUNT_ATTR_IDMAP)` with
//!   a user namespace fd (from the [`UsernsCache`] for explicit ranges, or
//!   opened from `userns_path`), `AT_RECURSIVE` when `id_mapping.recursive` —
//!   [`MountSourceKind::OpenTree`]; the child uses `move_mount`.
//!
//! Sources are made on demand, as runc does since it moved this into Go: with
//! [`MountFdService::in_mount_namespace`] a worker thread that has joined the
//! container's mount namespace resolves the sources, so a source created by
//! an earlier mount inside the container's rootfs is found and mount
//! propagation is that of the container. User namespace fds (ranges and
//! `userns_path`) are always resolved in the caller's namespaces.

use crate::Origin;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use rustix::fs::{Mode, OFlags};

use super::sys;
use super::userns::{UsernsCache, UsernsError};
use crate::schema::{ms, Mount, MountSourceKind};
use crate::wire::validate::validate_id_mapping;

pub use crate::session::MountSource;

/// The step of making a source fd that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `open(source, O_PATH | O_CLOEXEC)` for a plain bind.
    OpenPath,
    /// `open_tree(source, OPEN_TREE_CLONE)` for an id-mapped bind.
    OpenTree,
    /// Opening `id_mapping.userns_path`.
    OpenUserns,
    /// `mount_setattr(MOUNT_ATTR_IDMAP)`.
    SetIdmap,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::OpenPath => "open(O_PATH)",
            Step::OpenTree => "open_tree(OPEN_TREE_CLONE)",
            Step::OpenUserns => "open(userns_path)",
            Step::SetIdmap => "mount_setattr(MOUNT_ATTR_IDMAP)",
        })
    }
}

/// Why a mount source fd could not be made. Request errors come from the
/// peer's `MountPlease` (or the caller building it); `Os` errors name the
/// source and the failing step; `Worker` errors are local setup problems.
#[derive(Debug, thiserror::Error)]
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
    /// Request or OS: the id mapping's user namespace could not be made.
    #[error("id mapping for source {source_path:?}: {err}")]
    Userns {
        /// The request's source.
        source_path: String,
        /// The underlying error.
        #[source]
        err: UsernsError,
    },
    /// Request: `userns_path` opened, but it is not a user namespace.
    #[error("id mapping for source {source_path:?}: userns_path {path:?} is not a user namespace")]
    NotUserNamespace {
        /// The request's source.
        source_path: String,
        /// The path given.
        path: String,
    },
    /// OS: a step failed for this source.
    #[error("{step} for source {source_path:?} failed: {err}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
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
    /// Local: joining the target mount namespace failed.
    #[error("joining mount namespace {path:?} for the mount-fd worker failed: {err}")]
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
    /// well-formed request, [`Origin::Local`] for this process's own setup
    /// (the mount-namespace worker).
    pub fn origin(&self) -> Origin {
        match self {
            MountFdError::NotBind { .. }
            | MountFdError::InvalidRequest { .. }
            | MountFdError::NotUserNamespace { .. } => Origin::Peer,
            MountFdError::Userns { err, .. } if err.is_invalid_mapping() => Origin::Peer,
            MountFdError::Userns { .. } | MountFdError::Os { .. } => Origin::Os,
            MountFdError::MountNamespace { .. } | MountFdError::Worker(_) => Origin::Local,
        }
    }

    /// The OS error code, when the kernel refused a step.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MountFdError::Os { err, .. } | MountFdError::MountNamespace { err, .. } => {
                err.raw_os_error()
            }
            _ => None,
        }
    }
}

const IDMAP_EINVAL_HINT: &str =
    "the filesystem may not support id-mapped mounts (needs Linux >= 5.12; tmpfs >= 6.3)";

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
    let path = &idm.userns_path;
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| MountFdError::Os {
        source_path: path.clone(),
        step: Step::OpenUserns,
        err: e.into(),
        hint: None,
    })?;
    match sys::ns_get_nstype(fd.as_fd()) {
        Ok(t) if t == libc::CLONE_NEWUSER => Ok(Some(fd)),
        _ => Err(MountFdError::NotUserNamespace {
            source_path: req.source.clone(),
            path: path.clone(),
        }),
    }
}

/// Makes the source fd in the calling thread's mount namespace.
fn make_here(
    req: &Mount,
    source: &CString,
    userns: Option<OwnedFd>,
) -> Result<MountSource, MountFdError> {
    let os = |step, e: io::Error, hint| MountFdError::Os {
        source_path: req.source.clone(),
        step,
        err: e,
        hint,
    };
    let Some(userns) = userns else {
        let fd = rustix::fs::open(
            source.as_c_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| os(Step::OpenPath, e.into(), None))?;
        return Ok(MountSource {
            fd,
            kind: MountSourceKind::PlainOpen,
        });
    };
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if req.flags & ms::REC != 0 {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let tree = sys::open_tree(source, flags).map_err(|e| os(Step::OpenTree, e, None))?;
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

type Reply = Result<MountSource, MountFdError>;

struct Job {
    req: Mount,
    source: CString,
    userns: Option<OwnedFd>,
    reply: mpsc::SyncSender<Reply>,
}

struct Worker {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Option<JoinHandle<()>>,
}

/// Makes mount source fds for `MountPlease` requests; one call per request
/// ([`make_source`](MountFdService::make_source)). Thread-safe (`&self`).
pub struct MountFdService {
    cache: std::sync::Arc<UsernsCache>,
    worker: Option<Worker>,
}

impl std::fmt::Debug for MountFdService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountFdService")
            .field("cached_userns", &self.cache.len())
            .field("in_mount_namespace", &self.worker.is_some())
            .finish()
    }
}

impl Default for MountFdService {
    fn default() -> Self {
        Self::new()
    }
}

impl MountFdService {
    /// A service resolving sources in the caller's mount namespace, with its own
    /// user namespace cache.
    pub fn new() -> Self {
        Self::with_cache(Default::default())
    }

    /// A service resolving sources in the caller's mount namespace, sharing `cache`.
    pub fn with_cache(cache: std::sync::Arc<UsernsCache>) -> Self {
        MountFdService {
            cache,
            worker: None,
        }
    }

    /// A service resolving sources inside the mount namespace at `ns_path`
    /// (e.g. `/proc/PID/ns/mnt` of the container's init), as runc does so that
    /// sources made by earlier mounts inside the container rootfs resolve.
    ///
    /// Starts a worker thread that does `unshare(CLONE_FS)` and
    /// `setns(CLONE_NEWNS)` and then serves requests; it stops when the service
    /// is dropped. Needs CAP_SYS_ADMIN and CAP_SYS_CHROOT.
    pub fn in_mount_namespace(
        ns_path: impl AsRef<Path>,
        cache: std::sync::Arc<UsernsCache>,
    ) -> Result<Self, MountFdError> {
        let path = ns_path.as_ref().to_path_buf();
        let ns = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
            |e| MountFdError::MountNamespace {
                path: path.clone(),
                err: e.into(),
            },
        )?;
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
                    let r = make_here(&job.req, &job.source, job.userns);
                    let _ = job.reply.send(r);
                }
            })
            .map_err(|_| MountFdError::Worker("cannot spawn the worker thread"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(MountFdService {
                cache,
                worker: Some(Worker {
                    tx: Mutex::new(Some(tx)),
                    thread: Some(thread),
                }),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(MountFdError::MountNamespace { path, err })
            }
            Err(_) => {
                let _ = thread.join();
                Err(MountFdError::Worker("worker thread died while starting"))
            }
        }
    }

    /// The user namespace cache this service uses for id-mapping ranges.
    pub fn userns_cache(&self) -> &UsernsCache {
        &self.cache
    }

    /// Makes the source fd for one `MountPlease` request; the reply to send is
    /// `SyncMessage::mount_fd(src.kind, &req.source)` with `src.fd` attached.
    ///
    /// Only bind mounts (`MS_BIND`) qualify. Without an id mapping the source
    /// is opened `O_PATH` ([`MountSourceKind::PlainOpen`]); with one, it is
    /// cloned with `open_tree` and id-mapped ([`MountSourceKind::OpenTree`]).
    pub fn make_source(&self, req: &Mount) -> Result<MountSource, MountFdError> {
        let source = check_request(req)?;
        let userns = userns_fd(req, &self.cache)?;
        let Some(worker) = &self.worker else {
            return make_here(req, &source, userns);
        };
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job = Job {
            req: req.clone(),
            source,
            userns,
            reply: reply_tx,
        };
        {
            let tx = worker.tx.lock().unwrap_or_else(|p| p.into_inner());
            let tx = tx
                .as_ref()
                .ok_or(MountFdError::Worker("service shut down"))?;
            tx.send(job)
                .map_err(|_| MountFdError::Worker("worker thread has exited"))?;
        }
        reply_rx
            .recv()
            .map_err(|_| MountFdError::Worker("worker thread dropped the request"))?
    }
}

impl Drop for MountFdService {
    fn drop(&mut self) {
        if let Some(w) = &mut self.worker {
            // Closing the channel ends the worker's loop.
            w.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
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
