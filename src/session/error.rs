//! [`SessionError`]: why a session call failed, and who caused it.

use std::fmt;
use std::io;

use crate::policy::PolicyRefusal;
use crate::schema::MessageType;
use crate::state::{State, StateError, TypeSet};
use crate::transport::{Origin, TransportError};

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
/// death), the local caller (misuse, or a refusal this side decided), or the
/// operating system. Every fd that came with a rejected message has been
/// closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent a message (or closed) where the protocol does not allow
    /// it. Nothing of that message was acted on.
    #[error("protocol violation by the {sender}: {0}", sender = .0.sender())]
    Violation(#[source] StateError),
    /// The local caller asked for something the protocol does not allow
    /// here (for example `ready()` twice); nothing was sent.
    #[error("not allowed: {0}")]
    Misuse(#[source] StateError),
    /// The peer sent Error: it gave up, and says why.
    #[error("the peer reported an error: {message}")]
    Remote {
        /// The peer's message, as it sent it.
        message: String,
    },
    /// The transport failed (closed, died, timed out, bad record, I/O).
    #[error("{step} in state {state}: {source}")]
    Transport {
        /// What the session was doing.
        step: Step,
        /// The conversation state at the time.
        state: State,
        /// The transport's error (its [`TransportError::origin`] is ours).
        #[source]
        source: TransportError,
    },
    /// The mount policy refused a MountPlease; the child was told with an
    /// Error reply and the parent opened nothing.
    #[error("refused a mount request: {0}")]
    MountRefused(#[source] PolicyRefusal),
    /// The parent's handler failed a request; the child was told with an
    /// Error reply.
    #[error("the handler failed {request}: {source}")]
    Handler {
        /// The request the handler was serving.
        request: MessageType,
        /// The handler's error.
        #[source]
        source: HandlerError,
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
    /// The conversation is over on this connection (the named side closed
    /// it); nothing was written.
    #[error("the sync socket is closed (closed by the {} side); nothing sent", by)]
    Closed {
        /// Which side closed: [`Origin::Peer`] when the peer closed
        /// (or shut down its sending side), [`Origin::Local`] when
        /// this side already finished.
        by: Origin,
    },
    /// A system call on the peer's pidfd failed.
    #[error("{step}: {source}")]
    Os {
        /// What the session was doing.
        step: Step,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SessionError {
    /// Who caused this error: [`Origin::Peer`], [`Origin::Local`] or [`Origin::Os`].
    pub fn origin(&self) -> Origin {
        match self {
            SessionError::Violation(_)
            | SessionError::Remote { .. }
            | SessionError::SourceMismatch { .. } => Origin::Peer,
            SessionError::Misuse(_)
            | SessionError::MountRefused(_)
            | SessionError::Handler { .. } => Origin::Local,
            SessionError::Transport { source, .. } => source.origin(),
            SessionError::Closed { by } => *by,
            SessionError::Os { .. } => Origin::Os,
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
