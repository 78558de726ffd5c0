//! The child's side: the container's init (or exec) process asking its
//! parent for mount source fds, hooks, Run and the seccomp hand-off.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::schema::{Mount, MountSourceKind, SyncMessage};
use crate::state::{Flow, Machine, Role, State};
use crate::transport::SyncSocket;

use super::link::Link;
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
    link: Link,
}

impl Child {
    /// A child session for `flow` over `sock`, waiting without a deadline.
    pub fn new(sock: SyncSocket, flow: Flow) -> Self {
        Child {
            link: Link::new(sock, Machine::new(Role::Child, flow), None),
        }
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
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.link.deadline = Some(limit);
        self
    }

    /// Registers the parent's pidfd: a wait ends as soon as the parent
    /// exits, even if another process still holds the parent's end.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Self {
        self.link.sock.set_peer_pidfd(pidfd);
        self
    }

    /// Calls `observer` with every message just before it is sent (after
    /// the state machine accepted it) and just after one arrives (before
    /// it is checked): for logs and transcripts.
    pub fn with_observer(mut self, observer: impl FnMut(&Traffic<'_>) + Send + 'static) -> Self {
        self.link.observer = Some(Box::new(observer));
        self
    }

    /// Where the conversation stands.
    pub fn state(&self) -> State {
        self.link.machine.state()
    }

    /// The flow this session runs.
    pub fn flow(&self) -> Flow {
        self.link.machine.flow()
    }

    /// Asks the parent for a source fd for `mount` (MountPlease → MountFd).
    ///
    /// The reply must name the same source as the request
    /// ([`SessionError::SourceMismatch`] otherwise, and its fd is closed).
    /// Init flow only, before [`hooks`](Self::hooks).
    pub fn mount_source(&mut self, mount: &Mount) -> Result<MountSource, SessionError> {
        self.link
            .send(&SyncMessage::mount_please(mount.clone()), None)?;
        let rec = self.link.recv_reply()?;
        // The machine accepted it and the codec validated it: a MountFd
        // with its info and exactly one fd.
        let info = rec.msg.mount_fd_info().cloned().unwrap_or_default();
        if info.source != mount.source {
            return Err(SessionError::SourceMismatch {
                requested: mount.source.clone(),
                got: info.source,
            });
        }
        let kind = MountSourceKind::try_from(info.kind).unwrap_or(MountSourceKind::Unspecified);
        match rec.fd {
            Some(fd) => Ok(MountSource { fd, kind }),
            // Unreachable past the codec (MountFd requires an fd); kept total.
            None => Err(SessionError::Transport {
                step: Step::Recv(self.link.machine.expected_recv()),
                state: self.state(),
                source: crate::transport::TransportError::Decode(
                    crate::wire::DecodeError::Invalid(crate::wire::ValidationError::MissingFd {
                        ty: crate::schema::MessageType::MountFd,
                    }),
                ),
            }),
        }
    }

    /// Asks the parent to run the hooks (Hooks → HooksDone). Init flow only.
    pub fn hooks(&mut self) -> Result<(), SessionError> {
        self.link.send(&SyncMessage::hooks(), None)?;
        self.link.recv_reply().map(drop)
    }

    /// Tells the parent set-up is done and waits for Run (Ready → Run).
    pub fn ready(&mut self) -> Result<(), SessionError> {
        self.link.send(&SyncMessage::ready(), None)?;
        self.link.recv_reply().map(drop)
    }

    /// Hands the seccomp notify fd to the parent and waits until it took it
    /// (Seccomp → SeccompDone). After Run.
    pub fn seccomp(&mut self, handoff: SeccompHandoff<'_>) -> Result<(), SessionError> {
        match handoff {
            SeccompHandoff::Attached(fd) => self
                .link
                .send(&SyncMessage::seccomp_attached(), Some(fd.as_fd()))?,
            SeccompHandoff::ChildFd(n) => {
                self.link.send(&SyncMessage::seccomp_child_fd(n), None)?
            }
        }
        self.link.recv_reply().map(drop)
    }

    /// Tells the parent this side gives up, with `message` (Error). Error is
    /// terminal: the session accepts nothing afterwards.
    ///
    /// Never writes to a closed connection (runc issue #4171): if the parent
    /// has closed, or shut down its sending side (it will read no more),
    /// this returns [`SessionError::Closed`] and writes nothing.
    pub fn fail(&mut self, message: impl Into<String>) -> Result<(), SessionError> {
        self.link.check_open()?;
        // Terminal states refuse first: that is the caller's misuse.
        let mut probe = self.link.machine;
        probe
            .on_send(crate::schema::MessageType::Error)
            .map_err(SessionError::Misuse)?;
        if self.link.peer_hung_up()? {
            self.link.peer_closed = true;
            // Closed either way; whether it was orderly does not matter now.
            let _ = self.link.machine.on_peer_closed();
            return Err(SessionError::Closed {
                by: crate::Origin::Peer,
            });
        }
        self.link.send(&SyncMessage::error(message), None)
    }

    /// Closes the connection. Always closes; returns
    /// [`SessionError::Misuse`] if closing here breaks the protocol (before
    /// Ready, or while a reply is owed), so the caller knows the parent will
    /// see a violation.
    pub fn close(mut self) -> Result<(), SessionError> {
        let orderly = self.link.machine.check_close();
        self.link.machine.on_close();
        drop(self);
        orderly.map_err(SessionError::Misuse)
    }
}
