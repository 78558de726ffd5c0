//! The child's side: the container's init (or exec) process asking its
//! parent for mount source fds, hooks, Run and the seccomp hand-off.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::schema::{Mount, SyncMessage};
use crate::state::{Flow, Machine, Role, State};
use crate::transport::{Received, SyncSocket};

use super::core::{mount_reply, LinkCore};
use super::{MountSource, SessionError, Step, Traffic};

/// How the child hands its seccomp notify fd to the parent.
#[derive(Debug, Clone, Copy)]
pub enum SeccompHandoff<'a> {
    /// Send the fd itself, attached to the Seccomp record (`SCM_RIGHTS`).
    Attached(BorrowedFd<'a>),
    /// Send only the fd's number in this process; the parent copies it with
    /// `pidfd_getfd(2)`. runc does this because a seccomp filter may trap
    /// `sendmsg(2)`. Keep the fd open until [`Child::seccomp`] returns.
    ChildFd(RawFd),
}

/// The child's end of a sync conversation.
///
/// Each call sends one request and waits for its reply; every message goes
/// through a [`Machine`] first, so a call the protocol does not allow here
/// is refused locally ([`SessionError::Misuse`]) without sending anything.
/// A parent Error reply becomes [`SessionError::Remote`]; a parent that
/// closes or dies while a reply is owed ends the wait with an error, never
/// a hang.
///
/// ```no_run
/// use procsync::schema::Mount;
/// use procsync::session::Child;
/// use procsync::state::Flow;
///
/// // SAFETY: first thing in main: the inherited fd is ours, no other thread runs.
/// let mut child = unsafe { Child::from_env(Flow::Init) }?;
/// let source = child.mount_source(&Mount::bind("/srv/data", "/data"))?;
/// // ... attach source.fd at /data (move_mount or /proc/self/fd/N) ...
/// # drop(source);
/// child.hooks()?;
/// child.ready()?; // returns once the parent sent Run
/// child.close()?; // or exec: the socket is close-on-exec
/// # Ok::<(), procsync::session::SessionError>(())
/// ```
#[derive(Debug)]
pub struct Child {
    core: LinkCore,
    sock: SyncSocket,
}

impl Child {
    /// A child session for `flow` over `sock`, waiting without a deadline.
    pub fn new(sock: SyncSocket, flow: Flow) -> Self {
        let core = LinkCore::new(
            Machine::new(Role::Child, flow),
            None,
            sock.wire(),
            *sock.limits(),
        );
        Child { core, sock }
    }

    /// A child session over the socket named by `PROCSYNC_SYNC_FD`
    /// ([`SyncSocket::from_env`]; call it early, before starting threads).
    ///
    /// # Safety
    ///
    /// The contract of [`SyncSocket::from_env`]: the fd the variable names
    /// is this process's alone to take, and no other thread uses the
    /// environment during the call. Without those guarantees build the
    /// socket with [`SyncSocket::from_env_dup`] and use [`Child::new`].
    #[allow(unsafe_code)] // the one unsafe item of `session`: SyncSocket::from_env's contract
    pub unsafe fn from_env(flow: Flow) -> Result<Self, SessionError> {
        // SAFETY: the caller's contract is `SyncSocket::from_env`'s.
        let sock = unsafe { SyncSocket::from_env() }.map_err(|source| SessionError::Transport {
            step: Step::FromEnv,
            state: flow.initial_state(),
            source,
        })?;
        Ok(Child::new(sock, flow))
    }

    /// Waits at most `limit` for each reply, and for room to send each
    /// request ([`SessionError::Transport`] with a timeout otherwise).
    /// Without it a call waits until the reply comes or the parent closes.
    /// A limit too large to represent (`Duration::MAX`) is no limit.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.core.deadline = Some(limit);
        self
    }

    /// Registers the parent's pidfd: a wait ends as soon as the parent
    /// exits, even if another process still holds the parent's end.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Self {
        self.sock.set_peer_pidfd(pidfd);
        self
    }

    /// Calls `observer` with every message just before it is sent (after
    /// the state machine accepted it) and just after one arrives (before
    /// it is checked): for logs and transcripts.
    pub fn with_observer(mut self, observer: impl FnMut(&Traffic<'_>) + Send + 'static) -> Self {
        self.core.observer = Some(Box::new(observer));
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> State {
        self.core.machine.state()
    }

    /// The flow this session runs.
    pub fn flow(&self) -> Flow {
        self.core.machine.flow()
    }

    /// Sends `msg` (the state machine first).
    fn send(&mut self, msg: &SyncMessage, fd: Option<BorrowedFd<'_>>) -> Result<(), SessionError> {
        let ticket = self.core.begin_send(msg, fd)?;
        let deadline = self.core.deadline_from(Instant::now());
        let r = self.sock.send_deadline(msg, fd, deadline);
        self.core.end_send(ticket, r)
    }

    /// Sends a request and waits for its reply.
    fn request(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Received, SessionError> {
        self.send(msg, fd)?;
        self.core.begin_recv()?;
        let deadline = self.core.deadline_from(Instant::now());
        let r = self.sock.recv_deadline(deadline);
        self.core.end_recv_reply(r)
    }

    /// Asks the parent for a source fd for `mount` (MountPlease → MountFd).
    ///
    /// The reply must name the same source as the request
    /// ([`SessionError::SourceMismatch`] otherwise, and its fd is closed),
    /// and an id-mapped request (one with [`Mount::id_mapping`]) must be
    /// answered with an [`MountSourceKind::OpenTree`](crate::schema::MountSourceKind::OpenTree)
    /// source ([`SessionError::SourceDowngraded`] otherwise, fd closed):
    /// never a silent downgrade to an unmapped bind.
    /// Init flow only, before [`hooks`](Self::hooks).
    pub fn mount_source(&mut self, mount: &Mount) -> Result<MountSource, SessionError> {
        let rec = self.request(&SyncMessage::mount_please(mount.clone()), None)?;
        mount_reply(&self.core, mount, rec)
    }

    /// Asks the parent to run the hooks (Hooks → HooksDone). Init flow only.
    pub fn hooks(&mut self) -> Result<(), SessionError> {
        self.request(&SyncMessage::hooks(), None).map(drop)
    }

    /// Tells the parent set-up is done and waits for Run (Ready → Run).
    pub fn ready(&mut self) -> Result<(), SessionError> {
        self.request(&SyncMessage::ready(), None).map(drop)
    }

    /// Hands the seccomp notify fd to the parent and waits until it took it
    /// (Seccomp → SeccompDone). After Run.
    pub fn seccomp(&mut self, handoff: SeccompHandoff<'_>) -> Result<(), SessionError> {
        let (msg, fd) = handoff.message();
        self.request(&msg, fd).map(drop)
    }

    /// Tells the parent this side gives up, with `message` (Error). Error is
    /// terminal: the session accepts nothing afterwards. A message too long
    /// for one record is cut to fit, ending with
    /// [`TRUNCATION_MARK`](super::TRUNCATION_MARK).
    ///
    /// Never writes to a closed connection (runc issue #4171): if the parent
    /// has closed, or shut down its sending side (it will read no more),
    /// this returns [`SessionError::Closed`] and writes nothing.
    pub fn fail(&mut self, message: impl Into<String>) -> Result<(), SessionError> {
        self.core.check_fail()?;
        self.core.on_hung_up_check(self.sock.peer_hung_up())?;
        let msg = self.core.error_message(&message.into());
        self.send(&msg, None)
    }

    /// Closes the connection. Always closes; returns
    /// [`SessionError::Misuse`] if closing here breaks the protocol (before
    /// Ready, or while a reply is owed), so the caller knows the parent will
    /// see a violation.
    pub fn close(mut self) -> Result<(), SessionError> {
        self.core.close()
    }
}

impl SeccompHandoff<'_> {
    /// The Seccomp message and the fd riding with it.
    pub(crate) fn message(&self) -> (SyncMessage, Option<BorrowedFd<'_>>) {
        match *self {
            SeccompHandoff::Attached(fd) => (SyncMessage::seccomp_attached(), Some(fd)),
            SeccompHandoff::ChildFd(n) => (SyncMessage::seccomp_child_fd(n), None),
        }
    }
}
