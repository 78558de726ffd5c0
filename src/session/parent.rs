//! The parent's side: runc's `parseSync` loop, driving a handler with one
//! method per request, behind the state machine and the mount policy.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::policy::{ConfiguredMounts, MountPolicy, PolicyRefusal};
use crate::schema::Mount;
use crate::state::{Flow, Machine, Role, State};
use crate::transport::SyncSocket;

use super::core::{call_handler, Action, LinkCore, ParentCore};
use super::{pidfd_getfd, MountSource, SessionError, Step, Traffic};

/// How long the parent waits for each message from the child by default:
/// 60 s, as runc's mount-source thread waits for a request.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The prefix of the Error reply to a MountPlease the policy refused.
pub const REFUSAL_PREFIX: &str = "mount request refused: ";

/// A [`ParentHandler`] method failed; the child gets an Error reply saying
/// so, and [`Parent::serve`] returns [`SessionError::Handler`].
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A failure described by `message` (one line).
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
        }
    }

    /// A failure described by `message`, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        HandlerError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The handler's own description (without the cause).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message and every cause, joined with `": "` (the text the child
    /// receives after the request name).
    pub fn chain(&self) -> String {
        super::error_chain(self)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for HandlerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<io::Error> for HandlerError {
    fn from(e: io::Error) -> Self {
        HandlerError::with_source("I/O error", e)
    }
}

impl From<rustix::io::Errno> for HandlerError {
    fn from(e: rustix::io::Errno) -> Self {
        HandlerError::with_source("system call failed", io::Error::from(e))
    }
}

/// The seccomp notify fd as the child handed it over.
#[derive(Debug)]
pub enum SeccompFd<'a> {
    /// The fd rode in the Seccomp record; it is ours (close-on-exec).
    Attached(OwnedFd),
    /// The child sent only its fd number; copy it with [`ChildFd::copy`].
    ChildFd(ChildFd<'a>),
}

impl SeccompFd<'_> {
    /// The notify fd, owned: the attached one, or a `pidfd_getfd(2)` copy
    /// of the child's.
    pub fn into_owned(self) -> Result<OwnedFd, HandlerError> {
        match self {
            SeccompFd::Attached(fd) => Ok(fd),
            SeccompFd::ChildFd(c) => c.copy(),
        }
    }
}

/// An fd number in the child's fd table, with the child's pidfd to copy it.
#[derive(Debug, Clone, Copy)]
pub struct ChildFd<'a> {
    number: RawFd,
    pidfd: Option<BorrowedFd<'a>>,
}

impl<'a> ChildFd<'a> {
    pub(crate) fn new(number: RawFd, pidfd: Option<BorrowedFd<'a>>) -> Self {
        ChildFd { number, pidfd }
    }

    /// The fd number in the child.
    pub fn number(&self) -> RawFd {
        self.number
    }

    /// Copies the child's fd into this process with `pidfd_getfd(2)`
    /// (close-on-exec). Needs the child's pidfd
    /// ([`Parent::with_child_process`] or [`Parent::with_peer_pidfd`]) and
    /// ptrace access to the child.
    pub fn copy(&self) -> Result<OwnedFd, HandlerError> {
        let pidfd = self.pidfd.ok_or_else(|| {
            HandlerError::new(
                "cannot copy the child's seccomp fd: the parent has no pidfd for the child",
            )
        })?;
        pidfd_getfd(pidfd, self.number).map_err(|e| {
            HandlerError::with_source(format!("pidfd_getfd of the child's fd {}", self.number), e)
        })
    }
}

/// What the parent does for each request, one method per request type
/// (runc's `parseSync` callback). An `Err` is sent to the child as the
/// Error reply to that request and ends [`Parent::serve`].
///
/// # Deadlines
///
/// Before each call the parent tells the handler, with
/// [`set_deadline`](Self::set_deadline), the instant by which the reply
/// must be sent (the request's arrival plus the parent's per-message
/// deadline). A handler that does blocking work (opening a path on a slow
/// filesystem, spawning a helper) must finish or give up by then, returning
/// an error. The parent cannot preempt a blocking handler: one that returns
/// late has its result discarded — the child gets an Error reply and
/// [`Parent::serve`] ends with [`SessionError::HandlerOverran`] — but the
/// parent waits for it to return.
pub trait ParentHandler {
    /// The instant by which the reply to the request about to be handled
    /// must be sent, or `None` when the parent has no deadline. Called
    /// before every other method. The default ignores it.
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        let _ = deadline;
    }

    /// Makes the source fd for an accepted MountPlease (the policy has
    /// already allowed it). The default serves no mounts.
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        Err(HandlerError::new(format!(
            "this parent serves no mount requests (asked for {:?})",
            req.source
        )))
    }

    /// Runs the hooks (before HooksDone). The default does nothing.
    fn hooks(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// The child is set up; last work before Run. The default does nothing.
    fn ready(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Takes the seccomp notify fd (before SeccompDone). The default refuses:
    /// a parent that does not run a seccomp agent must not pretend to.
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        drop(fd);
        Err(HandlerError::new("this parent takes no seccomp notify fd"))
    }
}

impl<H: ParentHandler + ?Sized> ParentHandler for &mut H {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        (**self).set_deadline(deadline);
    }
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        (**self).mount(req)
    }
    fn hooks(&mut self) -> Result<(), HandlerError> {
        (**self).hooks()
    }
    fn ready(&mut self) -> Result<(), HandlerError> {
        (**self).ready()
    }
    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        (**self).seccomp(fd)
    }
}

/// What a successful [`Parent::serve`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// MountFd replies sent.
    pub mounts: usize,
    /// Whether Hooks was served.
    pub hooks: bool,
    /// Whether Ready was served (Run sent).
    pub ready: bool,
    /// Whether the seccomp notify fd was taken (SeccompDone sent).
    pub seccomp: bool,
}

/// The parent's end of a sync conversation.
///
/// [`serve`](Self::serve) answers the child's requests until the child
/// closes. Every MountPlease goes through the state machine, then the mount
/// policy (by default only the container's configured mounts, each once),
/// then the handler. Each wait for the child is bounded by the deadline
/// ([`DEFAULT_DEADLINE`]) and, with the child's pidfd, by the child's life.
///
/// ```no_run
/// use procsync::schema::{Mount, MountSourceKind};
/// use procsync::session::{HandlerError, MountSource, Parent, ParentHandler};
/// use procsync::state::Flow;
/// use procsync::transport::SyncSocket;
///
/// struct OpenPath;
/// impl ParentHandler for OpenPath {
///     fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
///         use procsync::rustix::fs::{open, Mode, OFlags};
///         let fd = open(req.source.as_str(), OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
///         Ok(MountSource { fd, kind: MountSourceKind::PlainOpen })
///     }
/// }
///
/// let (sock, child_end) = SyncSocket::pair()?;
/// let mut cmd = std::process::Command::new("/usr/libexec/my-init");
/// child_end.pass_to_child(&mut cmd)?;
/// let child = cmd.spawn()?;
/// drop(child_end);
///
/// let mounts = [Mount::bind("/srv/data", "/data")];
/// let mut parent = Parent::new(sock, Flow::Init, mounts).with_child_process(&child)?;
/// let report = parent.serve(&mut OpenPath)?;
/// assert!(report.ready);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Parent {
    core: ParentCore,
    sock: SyncSocket,
    /// The child's pidfd, for `pidfd_getfd` (the socket holds a duplicate).
    pidfd: Option<OwnedFd>,
}

impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parent")
            .field("core", &self.core)
            .field("sock", &self.sock)
            .field("pidfd", &self.pidfd)
            .finish()
    }
}

impl Parent {
    /// A parent session for `flow` over `sock` that serves exactly the
    /// container's `configured_mounts`, each once ([`ConfiguredMounts`]),
    /// waiting at most [`DEFAULT_DEADLINE`] for each message.
    pub fn new(
        sock: SyncSocket,
        flow: Flow,
        configured_mounts: impl IntoIterator<Item = Mount>,
    ) -> Self {
        let link = LinkCore::new(
            Machine::new(Role::Parent, flow),
            Some(DEFAULT_DEADLINE),
            sock.wire(),
            *sock.limits(),
        );
        Parent {
            core: ParentCore::new(link, Box::new(ConfiguredMounts::new(configured_mounts))),
            sock,
            pidfd: None,
        }
    }

    /// Replaces the mount policy (for example with
    /// [`AllowAll`](crate::policy::AllowAll), runc's behaviour).
    pub fn with_policy(mut self, policy: impl MountPolicy + Send + 'static) -> Self {
        self.core.policy = Box::new(policy);
        self
    }

    /// Waits at most `limit` for each message from the child, and for room
    /// to send each reply (a child that stops reading its replies); the
    /// handler has until the same time after a request arrived to finish
    /// ([`ParentHandler::set_deadline`]). A limit too large to represent
    /// (`Duration::MAX`) is no limit.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.core.link.deadline = Some(limit);
        self
    }

    /// Waits for the child without a deadline (a pidfd still ends the wait
    /// when the child exits).
    pub fn without_deadline(mut self) -> Self {
        self.core.link.deadline = None;
        self
    }

    /// Registers the child's pidfd: every wait ends when the child exits,
    /// even if a grandchild still holds the child's end (runc issue #5087),
    /// and [`ChildFd::copy`] can copy the child's seccomp fd.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Result<Self, SessionError> {
        let dup = pidfd.try_clone().map_err(|source| SessionError::Os {
            step: Step::Pidfd,
            source,
        })?;
        self.sock.set_peer_pidfd(dup);
        self.pidfd = Some(pidfd);
        Ok(self)
    }

    /// Opens `child`'s pidfd and registers it ([`with_peer_pidfd`](Self::with_peer_pidfd)).
    pub fn with_child_process(self, child: &std::process::Child) -> Result<Self, SessionError> {
        let pidfd = crate::transport::pidfd::open(child).map_err(|source| SessionError::Os {
            step: Step::Pidfd,
            source,
        })?;
        self.with_peer_pidfd(pidfd)
    }

    /// Calls `observer` with every message just before it is sent (after
    /// the state machine accepted it) and just after one arrives (before
    /// it is checked): for logs and transcripts.
    pub fn with_observer(mut self, observer: impl FnMut(&Traffic<'_>) + Send + 'static) -> Self {
        self.core.link.observer = Some(Box::new(observer));
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> State {
        self.core.link.machine.state()
    }

    /// The per-message deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.core.link.deadline
    }

    /// Answers the child's requests until it closes (runc's `parseSync`).
    ///
    /// Returns `Ok` when the child closed in order (after Run, or after
    /// SeccompDone). Ends with an error — and sends the child an Error
    /// reply where the protocol allows one — when:
    ///
    /// * the child breaks the protocol or closes without Ready
    ///   ([`SessionError::Violation`]; the offending message is not acted
    ///   on, its fd is closed, no Error is sent since nothing is pending);
    /// * the child sends Error ([`SessionError::Remote`]);
    /// * the policy refuses a MountPlease (Error reply
    ///   `"mount request refused: …"`, [`SessionError::MountRefused`]);
    /// * a handler method fails (Error reply `"<Request> failed in the
    ///   parent: …"`, [`SessionError::Handler`]) or returns after the reply
    ///   was due ([`SessionError::HandlerOverran`]; this driver cannot
    ///   preempt a handler, so it waits for it to return);
    /// * the transport fails: deadline, child death, bad record, I/O
    ///   ([`SessionError::Transport`]).
    ///
    /// On every path the write side is shut down at the end (the child
    /// reads end-of-file after the last reply).
    pub fn serve(&mut self, handler: &mut impl ParentHandler) -> Result<ServeReport, SessionError> {
        self.core.start()?;
        loop {
            match self.core.poll() {
                Action::Recv => {
                    let deadline = self.core.recv_deadline(Instant::now());
                    let r = self.sock.recv_deadline(deadline);
                    self.core.on_recv(r, Instant::now());
                }
                Action::Handle(call) => {
                    let outcome = call_handler(handler, call, self.pidfd.as_ref().map(AsFd::as_fd));
                    self.core.on_handled(outcome, Instant::now());
                }
                Action::Send => {
                    let sent = self.core.begin_send().map(|ticket| {
                        let deadline = self.core.send_deadline(Instant::now());
                        let (msg, fd) = self.core.outgoing();
                        (ticket, self.sock.send_deadline(msg, fd, deadline))
                    });
                    self.core.on_sent(sent);
                }
                Action::Shutdown => {
                    let r = self.sock.shutdown_write();
                    self.core.on_shutdown(r);
                }
                Action::Done(r) => return r,
            }
        }
    }
}

/// The Error reply for a refused MountPlease: [`REFUSAL_PREFIX`] and the
/// refusal's one-line text (not repeated when the refusal already says it).
pub fn refusal_text(refusal: &PolicyRefusal) -> String {
    let text = refusal.to_string();
    if text.starts_with(REFUSAL_PREFIX) {
        text
    } else {
        format!("{REFUSAL_PREFIX}{text}")
    }
}
