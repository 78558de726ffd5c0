//! The ready-made parent handler: serve MountPlease with a
//! [`MountFdService`] in one line, behind the session's state machine and
//! mount policy.
//!
//! ```no_run
//! use procsync::runtime::MountFdService;
//! use procsync::schema::Mount;
//! use procsync::session::Parent;
//! use procsync::state::Flow;
//! use procsync::transport::SyncSocket;
//!
//! # let (sock, _child_end) = SyncSocket::pair()?;
//! let mounts = vec![Mount::bind("/srv/data", "/data")];
//! let service = MountFdService::new();
//! // Only the configured mounts are served, each once, never after Hooks;
//! // every accepted request becomes an O_PATH or open_tree source fd.
//! Parent::new(sock, Flow::Init, mounts).serve(&mut service.handler())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To run hooks or take the seccomp fd as well, wrap your own handler:
//! `service.with_handler(my_handler)` answers MountPlease with the service
//! and everything else with `my_handler`.

use crate::schema::Mount;
use crate::session::{HandlerError, MountSource, ParentHandler, SeccompFd};

use super::mountfd::MountFdService;

/// A [`ParentHandler`] that answers MountPlease with a [`MountFdService`]
/// and every other request with an inner handler (by default
/// [`NoExtras`]: hooks and ready succeed, seccomp is refused).
///
/// The policy check happens in [`Parent::serve`](crate::session::Parent::serve)
/// before [`mount`](ParentHandler::mount) is called, so the service only ever
/// opens what the container's configuration allows. A [`MountFdError`]
/// reaches the child as the Error reply (its text names the source and the
/// failing step) and the caller as [`SessionError::Handler`] with the
/// error as its source.
///
/// [`MountFdError`]: super::MountFdError
/// [`SessionError::Handler`]: crate::session::SessionError::Handler
#[derive(Debug)]
pub struct ServeMounts<'s, H = NoExtras> {
    service: &'s MountFdService,
    inner: H,
}

/// The inner handler of [`MountFdService::handler`]: the trait's defaults
/// (hooks and ready succeed, seccomp is refused, mounts go to the service).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExtras;

impl ParentHandler for NoExtras {}

impl MountFdService {
    /// A handler serving MountPlease with this service; other requests get
    /// the [`ParentHandler`] defaults.
    pub fn handler(&self) -> ServeMounts<'_, NoExtras> {
        self.with_handler(NoExtras)
    }

    /// A handler serving MountPlease with this service and delegating Hooks,
    /// Ready and Seccomp to `inner`.
    pub fn with_handler<H: ParentHandler>(&self, inner: H) -> ServeMounts<'_, H> {
        ServeMounts {
            service: self,
            inner,
        }
    }
}

impl<H: ParentHandler> ServeMounts<'_, H> {
    /// The inner handler back.
    pub fn into_inner(self) -> H {
        self.inner
    }
}

impl<H: ParentHandler> ParentHandler for ServeMounts<'_, H> {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        self.service
            .make_source(req)
            .map_err(|e| HandlerError::with_source("cannot make the mount source", e))
    }

    fn hooks(&mut self) -> Result<(), HandlerError> {
        self.inner.hooks()
    }

    fn ready(&mut self) -> Result<(), HandlerError> {
        self.inner.ready()
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        self.inner.seccomp(fd)
    }
}
