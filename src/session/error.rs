//! [`SessionError`]: why a session call failed, and who caused it.

use std::fmt;
use std::io;

use std::time::Duration;

use crate::policy::PolicyRefusal;
use crate::schema::{MessageType, MountSourceKind};
use crate::state::{State, StateError, TypeSet};
use crate::transport::TransportError;
use crate::Origin;

use super::parent::HandlerError;

/// What a session was doing when the transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Sending a message of this type.
    Send(MessageType),
    /// Waiting for one of these types from the peer.
    Recv(TypeSet),
    /// Shutting down the write side at the end of the conversation.
    Shutdown,
    /// Opening or using the peer's pidfd.
    Pidfd,
    /// Taking the sync socket named by `PROCSYNC_SYNC_FD`.
    FromEnv,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send(ty) => write!(f, "sending {ty}"),
            Step::Recv(set) => write!(f, "waiting for {set}"),
            Step::Shutdown => f.write_str("shutting down the sync socket"),
            Step::Pidfd => f.write_str("opening the peer's pidfd"),
            Step::FromEnv => f.write_str("taking the sync socket from the environment"),
        }
    }
}

/// Why a [`Child`](super::Child) or [`Parent`](super::Parent) call failed.
///
/// [`SessionError::origin`] says who caused it: the peer (a protocol
/// violation, a remote Error, an unexpected close, a bad record, a timeout or
/// death, a request the policy refuses, a reply that does not fit its
/// request), the local caller (misuse, a handler that failed or overran its
/// deadline), or the operating system. [`SessionError::kind`] gives a stable
/// name for each case (PROTOCOL.md §11). Every fd that came with a rejected
/// message has been closed.
///
/// `Display` describes this layer only; the cause, when there is one, is
/// [`source()`](std::error::Error::source) (print the chain to see all of it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent a message (or closed) where the protocol does not allow
    /// it. Nothing of that message was acted on.
    #[error("protocol violation by the {sender}", sender = .0.sender())]
    Violation(#[source] StateError),
    /// The local caller asked for something the protocol does not allow
    /// here (for example `ready()` twice); nothing was sent.
    #[error("not allowed by the protocol here")]
    Misuse(#[source] StateError),
    /// The peer sent Error: it gave up, and says why.
    #[error("the peer reported an error: {message}")]
    Remote {
        /// The peer's message, as it sent it.
        message: String,
    },
    /// The transport failed (closed, died, timed out, bad record, I/O).
    #[error("{step} in state {state}")]
    Transport {
        /// What the session was doing.
        step: Step,
        /// The conversation state at the time.
        state: State,
        /// The transport's error (its [`TransportError::origin`] is ours).
        #[source]
        source: TransportError,
    },
    /// The mount policy refused the child's MountPlease; the child was told
    /// with an Error reply and the parent opened nothing. The child asked
    /// for it: origin [`Origin::Peer`].
    #[error("refused a mount request")]
    MountRefused(#[source] PolicyRefusal),
    /// The parent's handler failed a request; the child was told with an
    /// Error reply.
    #[error("the handler failed {request}")]
    Handler {
        /// The request the handler was serving.
        request: MessageType,
        /// The handler's error.
        #[source]
        source: HandlerError,
    },
    /// The parent's handler returned after the instant by which the reply
    /// was due ([`ParentHandler::set_deadline`](super::ParentHandler::set_deadline));
    /// its result was discarded (an fd it made was closed) and the child was
    /// told with an Error reply.
    #[error("the handler overran its deadline for {request} by {overrun:?}")]
    HandlerOverran {
        /// The request the handler was serving.
        request: MessageType,
        /// How late the handler returned.
        overrun: Duration,
    },
    /// The parent's MountFd names a different source than the MountPlease
    /// asked for; its fd was closed.
    #[error("MountFd is for source {got:?}, but MountPlease asked for {requested:?}")]
    SourceMismatch {
        /// The source the child asked for.
        requested: String,
        /// The source the reply names.
        got: String,
    },
    /// The parent answered an id-mapped MountPlease with a source that
    /// cannot carry the mapping (a plain `O_PATH` fd, what a parent that
    /// does not know id-mapped mounts sends); its fd was closed. Attaching
    /// it would silently drop the mapping.
    #[error(
        "MountFd for {mount_source:?} is a {got:?} source, but the request asked for an \
         id-mapped mount (needs OpenTree)"
    )]
    SourceDowngraded {
        /// The source the child asked for.
        mount_source: String,
        /// The kind of source the parent sent.
        got: MountSourceKind,
    },
    /// The conversation is over on this connection (the named side closed
    /// it); nothing was written.
    #[error("the sync socket is closed (closed by the {by} side); nothing sent")]
    Closed {
        /// Which side closed: [`Origin::Peer`] when the peer closed
        /// (or shut down its sending side), [`Origin::Local`] when
        /// this side already finished.
        by: Origin,
    },
    /// A system call on the peer's pidfd failed.
    #[error("{step}")]
    Os {
        /// What the session was doing.
        step: Step,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A stable, language-neutral name for each [`SessionError`] case
/// ([`SessionError::kind`]); listed in PROTOCOL.md §11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// [`SessionError::Violation`]: `protocol-violation`.
    ProtocolViolation,
    /// [`SessionError::Misuse`]: `misuse`.
    Misuse,
    /// [`SessionError::Remote`]: `remote-error`.
    RemoteError,
    /// [`SessionError::Transport`]: `transport`.
    Transport,
    /// [`SessionError::MountRefused`]: `mount-refused`.
    MountRefused,
    /// [`SessionError::Handler`]: `handler-failed`.
    HandlerFailed,
    /// [`SessionError::HandlerOverran`]: `handler-overran`.
    HandlerOverran,
    /// [`SessionError::SourceMismatch`]: `source-mismatch`.
    SourceMismatch,
    /// [`SessionError::SourceDowngraded`]: `source-downgraded`.
    SourceDowngraded,
    /// [`SessionError::Closed`]: `closed`.
    Closed,
    /// [`SessionError::Os`]: `os`.
    Os,
}

impl SessionErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [SessionErrorKind; 11] = [
        SessionErrorKind::ProtocolViolation,
        SessionErrorKind::Misuse,
        SessionErrorKind::RemoteError,
        SessionErrorKind::Transport,
        SessionErrorKind::MountRefused,
        SessionErrorKind::HandlerFailed,
        SessionErrorKind::HandlerOverran,
        SessionErrorKind::SourceMismatch,
        SessionErrorKind::SourceDowngraded,
        SessionErrorKind::Closed,
        SessionErrorKind::Os,
    ];

    /// The stable kebab-case name (PROTOCOL.md §11).
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionErrorKind::ProtocolViolation => "protocol-violation",
            SessionErrorKind::Misuse => "misuse",
            SessionErrorKind::RemoteError => "remote-error",
            SessionErrorKind::Transport => "transport",
            SessionErrorKind::MountRefused => "mount-refused",
            SessionErrorKind::HandlerFailed => "handler-failed",
            SessionErrorKind::HandlerOverran => "handler-overran",
            SessionErrorKind::SourceMismatch => "source-mismatch",
            SessionErrorKind::SourceDowngraded => "source-downgraded",
            SessionErrorKind::Closed => "closed",
            SessionErrorKind::Os => "os",
        }
    }
}

impl fmt::Display for SessionErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SessionError {
    /// Who caused this error: [`Origin::Peer`], [`Origin::Local`] or [`Origin::Os`].
    pub fn origin(&self) -> Origin {
        match self {
            SessionError::Violation(_)
            | SessionError::Remote { .. }
            | SessionError::MountRefused(_)
            | SessionError::SourceMismatch { .. }
            | SessionError::SourceDowngraded { .. } => Origin::Peer,
            SessionError::Misuse(_)
            | SessionError::Handler { .. }
            | SessionError::HandlerOverran { .. } => Origin::Local,
            SessionError::Transport { source, .. } => source.origin(),
            SessionError::Closed { by } => *by,
            SessionError::Os { .. } => Origin::Os,
        }
    }

    /// The stable name of this case.
    pub fn kind(&self) -> SessionErrorKind {
        match self {
            SessionError::Violation(_) => SessionErrorKind::ProtocolViolation,
            SessionError::Misuse(_) => SessionErrorKind::Misuse,
            SessionError::Remote { .. } => SessionErrorKind::RemoteError,
            SessionError::Transport { .. } => SessionErrorKind::Transport,
            SessionError::MountRefused(_) => SessionErrorKind::MountRefused,
            SessionError::Handler { .. } => SessionErrorKind::HandlerFailed,
            SessionError::HandlerOverran { .. } => SessionErrorKind::HandlerOverran,
            SessionError::SourceMismatch { .. } => SessionErrorKind::SourceMismatch,
            SessionError::SourceDowngraded { .. } => SessionErrorKind::SourceDowngraded,
            SessionError::Closed { .. } => SessionErrorKind::Closed,
            SessionError::Os { .. } => SessionErrorKind::Os,
        }
    }

    /// The peer's message, for [`SessionError::Remote`].
    pub fn remote_message(&self) -> Option<&str> {
        match self {
            SessionError::Remote { message } => Some(message),
            _ => None,
        }
    }
}

/// `e`'s `Display` followed by every cause's, joined with `": "`: the whole
/// story of an error in one line (what the parent puts in an Error reply).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        s.push_str(": ");
        s.push_str(&c.to_string());
        next = c.source();
    }
    s
}
