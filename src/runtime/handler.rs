//! The ready-made parent handler: serve MountPlease with a
//! [`MountFdService`] in one line, behind the session's state machine and
//! mount policy.
//!
//! ```no_run
//! use procsync::policy::ConfiguredMounts;
//! use procsync::runtime::MountFdService;
//! use procsync::schema::Mount;
//! use procsync::session::Parent;
//! use procsync::state::Flow;
//! use procsync::transport::SyncSocket;
//!
//! # let (sock, _child_end) = SyncSocket::pair()?;
//! let mounts = vec![Mount::bind("/srv/data", "/data")];
//! // Before the child exists: pin what the configuration names.
//! let service = MountFdService::pinned(&ConfiguredMounts::new(mounts.clone()))?;
//! // Only the configured mounts are served, each once, never after Hooks;
//! // every accepted request is served from its pinned source, and no
//! // request's work outlives the parent's per-message deadline.
//! Parent::new(sock, Flow::Init, mounts).serve(&mut service.handler())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To run hooks or take the seccomp fd as well, wrap your own handler:
//! `service.with_handler(my_handler)` answers MountPlease with the service
//! and everything else with `my_handler`.

use std::time::{Duration, Instant};

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
/// The parent's deadline ([`ParentHandler::set_deadline`]) bounds the
/// service's work: MountPlease is served with
/// [`MountFdService::make_source_until`], giving up a little before the
/// reply is due ([`DEADLINE_MARGIN`]) so that the child is told why, and
/// the inner handler is told the same deadline.
///
/// [`MountFdError`]: super::MountFdError
/// [`SessionError::Handler`]: crate::session::SessionError::Handler
#[derive(Debug)]
pub struct ServeMounts<'s, H = NoExtras> {
    service: &'s MountFdService,
    inner: H,
    deadline: Option<Instant>,
}

/// How long before the reply is due [`ServeMounts`] gives up on a mount
/// source, leaving time to send the Error reply that says why.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

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
            deadline: None,
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
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.inner.set_deadline(deadline);
    }

    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        let until = self
            .deadline
            .map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d));
        self.service
            .make_source_until(req, until)
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
