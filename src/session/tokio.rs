//! Async sessions on tokio (feature `tokio`): [`AsyncChild`] and
//! [`AsyncParent`], the same conversations as [`Child`](super::Child) and
//! [`Parent`](super::Parent) — the same sans-IO core decides every message,
//! every check, every Error reply — driven over an
//! [`AsyncSocket`], so one runtime
//! with a few worker threads serves thousands of children.
//!
//! Deadlines run on tokio's clock; a registered pidfd ends any wait when the
//! peer exits (through the reactor, no thread). Handlers are async
//! ([`AsyncParentHandler`]); a blocking [`ParentHandler`] — for example a
//! [`runtime::MountFdService`](crate::runtime::MountFdService) handler — runs
//! on tokio's blocking pool through [`BlockingHandler`], never on a worker.
//!
//! # Cancellation
//!
//! Every method is safe to cancel (drop its future) at any await point: no
//! half-message is ever sent or consumed, no fd leaks, and the conversation
//! is either intact or clearly over:
//!
//! * a request ([`AsyncChild::mount_source`], `hooks`, `ready`, `seccomp`)
//!   dropped before its request left is intact (nothing was sent); dropped
//!   after, while the reply is owed, it ends the conversation: the session
//!   shuts down its sending side and every later call returns
//!   [`SessionError::Closed`] (the parent sees the child close while a reply
//!   was pending, a violation by the child);
//! * [`AsyncChild::fail`] is intact if dropped (it has one await point,
//!   before its Error leaves);
//! * [`AsyncParent::serve`] dropped at any point ends the conversation: the
//!   write side is shut down (the child reads end-of-file), an fd waiting to
//!   be sent is closed, and later calls return [`SessionError::Closed`]. A
//!   handler running on the blocking pool finishes on its own; what it
//!   returns is dropped (its fds closed).

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::policy::{ConfiguredMounts, MountPolicy};
use crate::schema::{Mount, SyncMessage};
use crate::state::{Flow, Machine, Role, State};
use crate::transport::tokio::AsyncSocket;
use crate::transport::{Received, SyncSocket};

use super::core::{
    mount_reply, Action, HandlerCall, HandlerOutcome, LinkCore, ParentCore, Request,
};
use super::{
    HandlerError, MountSource, ParentHandler, SeccompFd, SeccompHandoff, ServeReport, SessionError,
    Step, Traffic, DEFAULT_DEADLINE,
};

/// What the async parent does for each request: [`ParentHandler`] with
/// async methods. Each future must be `Send` (so a serve can be spawned);
/// it may be dropped at any await point (the parent gives up on a handler
/// that has not answered when the reply is due, see
/// [`set_deadline`](Self::set_deadline)), so keep a handler's own state
/// consistent across its awaits.
pub trait AsyncParentHandler: Send {
    /// The instant by which the reply to the next request must be sent.
    /// The parent stops waiting for the handler then, answers the child
    /// with an Error and ends the conversation
    /// ([`SessionError::HandlerOverran`]). The default ignores it.
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        let _ = deadline;
    }

    /// Makes the source fd for an accepted MountPlease. The default serves
    /// no mounts.
    fn mount(
        &mut self,
        req: &Mount,
    ) -> impl Future<Output = Result<MountSource, HandlerError>> + Send {
        let text = format!(
            "this parent serves no mount requests (asked for {:?})",
            req.source
        );
        async move { Err(HandlerError::new(text)) }
    }

    /// Runs the hooks (before HooksDone). The default does nothing.
    fn hooks(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// The child is set up; last work before Run. The default does nothing.
    fn ready(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }

    /// Takes the seccomp notify fd (before SeccompDone). The default refuses.
    fn seccomp<'a>(
        &'a mut self,
        fd: SeccompFd<'a>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        drop(fd);
        async { Err(HandlerError::new("this parent takes no seccomp notify fd")) }
    }
}

/// Runs a blocking [`ParentHandler`] on tokio's blocking thread pool
/// (`spawn_blocking`), one call at a time, so a handler that opens files,
/// makes id-mapped mounts or runs hooks never blocks a runtime worker.
///
/// The handler gets the reply's deadline through
/// [`ParentHandler::set_deadline`] before each call, as under the blocking
/// [`Parent`](super::Parent). If it overruns, the parent answers the child
/// at the deadline anyway; the call goes on on its pool thread, its result
/// is dropped when it returns, and this wrapper has no handler any more
/// (later calls fail; the conversation is over anyway).
/// [`into_inner`](Self::into_inner) gives the handler back otherwise.
///
/// A seccomp fd the child sent by number is copied (`pidfd_getfd`) before
/// the call, so the handler gets [`SeccompFd::Attached`] with the copy.
///
/// A [`runtime::MountFdService`](crate::runtime::MountFdService) is shared
/// with an `Arc`:
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Instant;
/// use procsync::runtime::MountFdService;
/// use procsync::schema::Mount;
/// use procsync::session::{HandlerError, MountSource, ParentHandler};
/// use procsync::session::tokio::BlockingHandler;
///
/// struct Mounts {
///     service: Arc<MountFdService>,
///     deadline: Option<Instant>,
/// }
///
/// impl ParentHandler for Mounts {
///     fn set_deadline(&mut self, deadline: Option<Instant>) {
///         self.deadline = deadline;
///     }
///     fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
///         let mut h = self.service.handler();
///         h.set_deadline(self.deadline);
///         h.mount(req)
///     }
/// }
///
/// let service = Arc::new(MountFdService::new());
/// let handler = BlockingHandler::new(Mounts { service, deadline: None });
/// # drop(handler);
/// ```
#[derive(Debug)]
pub struct BlockingHandler<H> {
    inner: Option<H>,
    deadline: Option<Instant>,
}

impl<H: ParentHandler + Send + 'static> BlockingHandler<H> {
    /// Wraps `handler`.
    pub fn new(handler: H) -> Self {
        BlockingHandler {
            inner: Some(handler),
            deadline: None,
        }
    }

    /// The handler back, unless a call that overran still holds it.
    pub fn into_inner(self) -> Option<H> {
        self.inner
    }

    /// Runs `f` on the handler on the blocking pool.
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut H) -> Result<R, HandlerError> + Send + 'static,
    ) -> Result<R, HandlerError> {
        let Some(mut h) = self.inner.take() else {
            return Err(HandlerError::new(
                "the blocking handler is still running a call that overran its deadline",
            ));
        };
        let deadline = self.deadline;
        let join = ::tokio::task::spawn_blocking(move || {
            h.set_deadline(deadline);
            let r = f(&mut h);
            (h, r)
        });
        match join.await {
            Ok((h, r)) => {
                self.inner = Some(h);
                r
            }
            Err(e) => Err(HandlerError::with_source(
                "the blocking handler panicked",
                e,
            )),
        }
    }
}

impl<H: ParentHandler + Send + 'static> AsyncParentHandler for BlockingHandler<H> {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn mount(
        &mut self,
        req: &Mount,
    ) -> impl Future<Output = Result<MountSource, HandlerError>> + Send {
        let req = req.clone();
        self.run(move |h| h.mount(&req))
    }

    fn hooks(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.run(|h| h.hooks())
    }

    fn ready(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.run(|h| h.ready())
    }

    fn seccomp<'a>(
        &'a mut self,
        fd: SeccompFd<'a>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let fd = fd.into_owned();
        async move {
            let fd = fd?;
            self.run(move |h| h.seccomp(SeccompFd::Attached(fd))).await
        }
    }
}

/// Calls the async `handler` for `call`.
async fn call_async_handler<H: AsyncParentHandler + ?Sized>(
    handler: &mut H,
    call: HandlerCall,
    pidfd: Option<BorrowedFd<'_>>,
) -> HandlerOutcome {
    handler.set_deadline(call.due);
    match call.request {
        Request::Mount(m) => handler.mount(&m).await.map(Some),
        Request::Hooks => handler.hooks().await.map(|()| None),
        Request::Ready => handler.ready().await.map(|()| None),
        Request::Seccomp(arg) => handler.seccomp(arg.lend(pidfd)).await.map(|()| None),
    }
}

fn async_socket(sock: SyncSocket) -> Result<AsyncSocket, SessionError> {
    AsyncSocket::new(sock).map_err(|source| SessionError::Transport {
        step: Step::Pidfd,
        state: State::Closed,
        source,
    })
}

/// The child's end of a sync conversation, async: [`Child`](super::Child)'s
/// methods as futures (see the [module documentation](self) for what
/// cancelling each does).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use procsync::schema::Mount;
/// use procsync::session::tokio::AsyncChild;
/// use procsync::state::Flow;
/// use procsync::transport::SyncSocket;
///
/// let mut child = AsyncChild::new(SyncSocket::from_env_dup()?, Flow::Init)?;
/// let source = child.mount_source(&Mount::bind("/srv/data", "/data")).await?;
/// # drop(source);
/// child.hooks().await?;
/// child.ready().await?;
/// child.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncChild {
    core: LinkCore,
    sock: AsyncSocket,
}

/// Ends the conversation if a request future is dropped while its reply is
/// owed.
struct Owed<'a> {
    child: &'a mut AsyncChild,
    armed: bool,
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.child.core.abandon();
            let _ = self.child.sock.shutdown_write();
        }
    }
}

impl AsyncChild {
    /// A child session for `flow` over `sock` (registered with the current
    /// runtime's reactor), waiting without a deadline.
    pub fn new(sock: SyncSocket, flow: Flow) -> Result<Self, SessionError> {
        let core = LinkCore::new(
            Machine::new(Role::Child, flow),
            None,
            sock.wire(),
            *sock.limits(),
        );
        Ok(AsyncChild {
            core,
            sock: async_socket(sock)?,
        })
    }

    /// Waits at most `limit` for each reply and for room to send each
    /// request; a limit too large to represent is no limit.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.core.deadline = Some(limit);
        self
    }

    /// Registers the parent's pidfd: a wait ends as soon as the parent exits.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Result<Self, SessionError> {
        self.sock = self
            .sock
            .with_peer_pidfd(pidfd)
            .map_err(|source| SessionError::Transport {
                step: Step::Pidfd,
                state: self.core.machine.state(),
                source,
            })?;
        Ok(self)
    }

    /// Calls `observer` with every message sent and received.
    pub fn with_observer(mut self, observer: impl FnMut(&Traffic<'_>) + Send + 'static) -> Self {
        self.core.observer = Some(Box::new(observer));
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> State {
        self.core.machine.state()
    }

    /// Sends `msg` (the state machine first). Cancel safe: nothing is sent
    /// if dropped.
    async fn send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), SessionError> {
        let ticket = self.core.begin_send(msg, fd)?;
        let deadline = self.core.deadline_from(Instant::now());
        let r = self.sock.send_deadline(msg, fd, deadline).await;
        self.core.end_send(ticket, r)
    }

    /// Sends a request and waits for its reply.
    async fn request(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Received, SessionError> {
        self.send(msg, fd).await?;
        self.core.begin_recv()?;
        let deadline = self.core.deadline_from(Instant::now());
        // From here the reply is owed: a drop ends the conversation.
        let mut owed = Owed {
            child: self,
            armed: true,
        };
        let r = owed.child.sock.recv_deadline(deadline).await;
        owed.armed = false;
        owed.child.core.end_recv_reply(r)
    }

    /// Asks the parent for a source fd for `mount` (MountPlease → MountFd),
    /// with [`Child::mount_source`](super::Child::mount_source)'s checks.
    pub async fn mount_source(&mut self, mount: &Mount) -> Result<MountSource, SessionError> {
        let rec = self
            .request(&SyncMessage::mount_please(mount.clone()), None)
            .await?;
        mount_reply(&self.core, mount, rec)
    }

    /// Asks the parent to run the hooks (Hooks → HooksDone).
    pub async fn hooks(&mut self) -> Result<(), SessionError> {
        self.request(&SyncMessage::hooks(), None).await.map(drop)
    }

    /// Tells the parent set-up is done and waits for Run (Ready → Run).
    pub async fn ready(&mut self) -> Result<(), SessionError> {
        self.request(&SyncMessage::ready(), None).await.map(drop)
    }

    /// Hands the seccomp notify fd to the parent and waits until it took it
    /// (Seccomp → SeccompDone).
    pub async fn seccomp(&mut self, handoff: SeccompHandoff<'_>) -> Result<(), SessionError> {
        let (msg, fd) = handoff.message();
        self.request(&msg, fd).await.map(drop)
    }

    /// Tells the parent this side gives up (Error), as
    /// [`Child::fail`](super::Child::fail): never to a closed connection,
    /// a text too long for one record cut to fit.
    pub async fn fail(&mut self, message: impl Into<String>) -> Result<(), SessionError> {
        self.core.check_fail()?;
        self.core
            .on_hung_up_check(self.sock.get_ref().peer_hung_up())?;
        let msg = self.core.error_message(&message.into());
        self.send(&msg, None).await
    }

    /// Closes the connection; [`SessionError::Misuse`] if that breaks the
    /// protocol.
    pub fn close(mut self) -> Result<(), SessionError> {
        self.core.close()
    }
}

/// The parent's end of a sync conversation, async: [`Parent`](super::Parent)
/// driven by tokio, with an [`AsyncParentHandler`]. Every wait for the
/// child is bounded by the deadline ([`DEFAULT_DEADLINE`]) and, with the
/// child's pidfd, by the child's life; so is the handler: at the deadline
/// the parent answers the child with Error whether or not the handler
/// returned.
pub struct AsyncParent {
    core: ParentCore,
    sock: AsyncSocket,
    pidfd: Option<OwnedFd>,
}

impl std::fmt::Debug for AsyncParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncParent")
            .field("core", &self.core)
            .field("sock", &self.sock)
            .field("pidfd", &self.pidfd)
            .finish()
    }
}

/// Ends the conversation if `serve` is dropped before it is done.
struct Serving<'a> {
    parent: &'a mut AsyncParent,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        if self.parent.core.serving() {
            self.parent.core.abandon();
            let _ = self.parent.sock.shutdown_write();
        }
    }
}

impl AsyncParent {
    /// A parent session for `flow` over `sock` (registered with the current
    /// runtime's reactor) serving exactly `configured_mounts`,
    /// each once, waiting at most [`DEFAULT_DEADLINE`] for each message.
    pub fn new(
        sock: SyncSocket,
        flow: Flow,
        configured_mounts: impl IntoIterator<Item = Mount>,
    ) -> Result<Self, SessionError> {
        let link = LinkCore::new(
            Machine::new(Role::Parent, flow),
            Some(DEFAULT_DEADLINE),
            sock.wire(),
            *sock.limits(),
        );
        Ok(AsyncParent {
            core: ParentCore::new(link, Box::new(ConfiguredMounts::new(configured_mounts))),
            sock: async_socket(sock)?,
            pidfd: None,
        })
    }

    /// Replaces the mount policy.
    pub fn with_policy(mut self, policy: impl MountPolicy + Send + 'static) -> Self {
        self.core.policy = Box::new(policy);
        self
    }

    /// Waits at most `limit` for each message and each send, and gives the
    /// handler until `limit` after a request arrived; a limit too large to
    /// represent is no limit.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.core.link.deadline = Some(limit);
        self
    }

    /// No deadline (a pidfd still ends the wait when the child exits).
    pub fn without_deadline(mut self) -> Self {
        self.core.link.deadline = None;
        self
    }

    /// Registers the child's pidfd: every wait ends when the child exits,
    /// even if a grandchild holds the child's end, and the child's seccomp
    /// fd can be copied.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Result<Self, SessionError> {
        let dup = pidfd.try_clone().map_err(|source| SessionError::Os {
            step: Step::Pidfd,
            source,
        })?;
        self.sock = self
            .sock
            .with_peer_pidfd(dup)
            .map_err(|source| SessionError::Transport {
                step: Step::Pidfd,
                state: self.core.link.machine.state(),
                source,
            })?;
        self.pidfd = Some(pidfd);
        Ok(self)
    }

    /// Opens `child`'s pidfd and registers it.
    pub fn with_child_process(self, child: &std::process::Child) -> Result<Self, SessionError> {
        let pidfd = crate::transport::pidfd::open(child).map_err(|source| SessionError::Os {
            step: Step::Pidfd,
            source,
        })?;
        self.with_peer_pidfd(pidfd)
    }

    /// Calls `observer` with every message sent and received.
    pub fn with_observer(mut self, observer: impl FnMut(&Traffic<'_>) + Send + 'static) -> Self {
        self.core.link.observer = Some(Box::new(observer));
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> State {
        self.core.link.machine.state()
    }

    /// Answers the child's requests until it closes, exactly as
    /// [`Parent::serve`](super::Parent::serve), except that a handler still
    /// running when the reply is due is abandoned: the child gets an Error
    /// reply at the deadline and this returns
    /// [`SessionError::HandlerOverran`].
    ///
    /// Cancel safe in the sense of the [module documentation](self):
    /// dropped, it ends the conversation cleanly.
    pub async fn serve<H: AsyncParentHandler + ?Sized>(
        &mut self,
        handler: &mut H,
    ) -> Result<ServeReport, SessionError> {
        self.core.start()?;
        let g = Serving { parent: self };
        loop {
            match g.parent.core.poll() {
                Action::Recv => {
                    let deadline = g.parent.core.recv_deadline(Instant::now());
                    let r = g.parent.sock.recv_deadline(deadline).await;
                    g.parent.core.on_recv(r, Instant::now());
                }
                Action::Handle(call) => {
                    let due = call.due;
                    let pidfd = g.parent.pidfd.as_ref().map(AsFd::as_fd);
                    let handled = call_async_handler(handler, call, pidfd);
                    match due {
                        None => {
                            let outcome = handled.await;
                            g.parent.core.on_handled(outcome, Instant::now());
                        }
                        Some(due) => match ::tokio::time::timeout_at(due.into(), handled).await {
                            Ok(outcome) => g.parent.core.on_handled(outcome, Instant::now()),
                            Err(_) => g.parent.core.on_handler_timeout(due, Instant::now()),
                        },
                    }
                }
                Action::Send => {
                    let parent = &mut *g.parent;
                    let sent = match parent.core.begin_send() {
                        Ok(ticket) => {
                            let deadline = parent.core.send_deadline(Instant::now());
                            let (msg, fd) = parent.core.outgoing();
                            Ok((ticket, parent.sock.send_deadline(msg, fd, deadline).await))
                        }
                        Err(e) => Err(e),
                    };
                    parent.core.on_sent(sent);
                }
                Action::Shutdown => {
                    let r = g.parent.sock.shutdown_write();
                    g.parent.core.on_shutdown(r);
                }
                Action::Done(r) => return r,
            }
        }
    }
}
