//! The sync socket: one `AF_UNIX` `SOCK_SEQPACKET` socket between the
//! runtime (parent) and its container `init` (child), the only messaging
//! code that talks to the kernel.
//!
//! Rules (docs/PROTOCOL.md §8):
//!
//! * one record per message, written with exactly one `sendmsg(2)`
//!   (`MSG_NOSIGNAL`), never a zero-length record (it reads as end-of-file);
//! * an fd rides in the *same* record as one `SCM_RIGHTS` control message,
//!   and the HasFd flag is set iff it does;
//! * the receiver always uses `MSG_CMSG_CLOEXEC`, takes ownership of every fd
//!   the kernel installed (even when the control buffer was truncated), and
//!   closes them all on every error path;
//! * a zero-length read is end-of-file ([`TransportError::PeerClosed`]);
//!   `shutdown(SHUT_WR)` is the end-of-protocol signal;
//! * records are bounded by [`Limits::max_record`] on both sides; a larger
//!   incoming record is consumed and rejected without allocating for it;
//! * the child finds its end in `PROCSYNC_SYNC_FD` ([`ENV_SYNC_FD`]).
//!
//! No wait is unbounded unless the caller asks for it: [`SyncSocket::recv_deadline`]
//! takes a deadline, and a peer pidfd ([`SyncSocket::set_peer_pidfd`]) ends
//! any wait when the peer process exits, even if another process (a
//! grandchild that inherited the socket) still holds the peer's end open —
//! the hang of runc issue #5087.
//!
//! ```
//! use procsync::schema::{Mount, MountSourceKind, SyncMessage};
//! use procsync::transport::SyncSocket;
//!
//! let (mut parent, mut child) = SyncSocket::pair()?;
//! child.send(&SyncMessage::mount_please(Mount::bind("/src", "/dst")), None)?;
//! let req = parent.recv()?;
//! assert_eq!(req.msg.mount().unwrap().source, "/src");
//!
//! let file = std::fs::File::open("/dev/null")?;
//! let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/src");
//! parent.send(&reply, Some(std::os::fd::AsFd::as_fd(&file)))?;
//! let got = child.recv()?;
//! assert!(got.msg.has_fd() && got.fd.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "runc-compat")]
mod runc;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{fcntl_getfd, fcntl_setfd, Errno, FdFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::schema::SyncMessage;
use crate::wire::{native, DecodeError, EncodeError, ErrorKind, Limits, MAX_FDS_PER_RECORD};

pub mod pidfd;

/// The environment variable that tells the child which fd number is its end
/// of the sync socket (decimal, greater than 2).
pub const ENV_SYNC_FD: &str = "PROCSYNC_SYNC_FD";

/// The most fds [`SyncSocket::recv_record`] accepts in one record; a larger
/// `max_fds` is clamped to this.
pub const MAX_RECV_FDS: usize = 16;

/// Extra fd slots in every receive control buffer beyond what is allowed, so
/// a peer that sends a few fds too many is seen (and all of them closed)
/// rather than having the kernel silently discard the excess.
pub const SPARE_FDS: usize = 4;

/// Which wire format a [`SyncSocket`] speaks ([`SyncSocket::with_wire`]).
/// Both carry the same [`SyncMessage`]s under the same validation, so every
/// layer above the socket works unchanged on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wire {
    /// procsync's own framing: one record per message, the fd in it.
    #[default]
    Native,
    /// runc's JSON sync wire (runc ≥ 1.2): a JSON record per message, an fd
    /// in a second record named after the file. The shape says how a sent
    /// `MountPlease` prints `configs.Mount` and which layout a received one
    /// must have (PROTOCOL.md §15).
    #[cfg(feature = "runc-compat")]
    Runc(crate::wire::runc::MountShape),
}

/// Who caused a [`TransportError`].
pub use crate::Origin;

/// Why a transport operation failed. [`TransportError::origin`] says who
/// caused it. Every fd that arrived with a rejected record has been closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer closed its end (a zero-length read, `EPIPE` or `ECONNRESET`).
    #[error("peer closed the sync socket")]
    PeerClosed,
    /// The peer process exited (its pidfd became readable) while we waited.
    #[error("peer process exited while we waited for it")]
    PeerDied,
    /// No record arrived before the deadline.
    #[error("no record from the peer within {waited:?}")]
    Timeout {
        /// How long the call waited.
        waited: Duration,
    },
    /// The peer's receive queue stayed full until the deadline (it stopped
    /// reading); the record was not sent.
    #[error("the peer took no record for {waited:?} (its receive queue is full); not sent")]
    SendTimeout {
        /// How long the call waited.
        waited: Duration,
    },
    /// The peer sent a record the codec rejects.
    #[error("peer sent an invalid record")]
    Decode(#[source] DecodeError),
    /// The local caller asked to send a message the codec refuses.
    #[error("refusing to send the message")]
    Encode(#[source] EncodeError),
    /// The peer sent a record larger than the limit; it was consumed and
    /// discarded (`MSG_TRUNC`).
    #[error("peer sent a {size}-byte record, limit is {max}; discarded")]
    Truncated {
        /// The record's real size.
        size: usize,
        /// The receive limit.
        max: usize,
    },
    /// The peer attached more fds than the control buffer holds
    /// (`MSG_CTRUNC`); the kernel dropped the excess and we closed the rest.
    #[error("peer sent more fds than the control buffer holds; all closed")]
    ControlTruncated,
    /// The peer attached more fds than the caller allows in one record.
    #[error("peer sent {count} fds in one record, at most {max} allowed; all closed")]
    TooManyFds {
        /// How many arrived.
        count: usize,
        /// How many the caller allowed.
        max: usize,
    },
    /// A control message other than `SCM_RIGHTS`, `SCM_CREDENTIALS`,
    /// `SCM_SECURITY` and `SCM_PIDFD` arrived (e.g. `SCM_TIMESTAMP` because
    /// the receiver set `SO_TIMESTAMP`); the record's fds are closed.
    #[error("unexpected control message (level {level}, type {kind})")]
    UnexpectedControl {
        /// `cmsg_level`.
        level: i32,
        /// `cmsg_type`.
        kind: i32,
    },
    /// The fd handed to [`SyncSocket::from_fd`] / [`SyncSocket::from_env`]
    /// is not an `AF_UNIX` `SOCK_SEQPACKET` socket (an owned fd has been
    /// closed; [`SyncSocket::from_env_dup`] leaves the named fd alone).
    #[error("fd {fd} is not an AF_UNIX SOCK_SEQPACKET socket: {found}")]
    NotSeqpacket {
        /// The fd number.
        fd: RawFd,
        /// What it is instead.
        found: String,
    },
    /// `PROCSYNC_SYNC_FD` is missing or does not name a usable fd.
    #[error("{ENV_SYNC_FD}={value:?}: {reason}")]
    Env {
        /// The variable's value, if it was set.
        value: Option<String>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`SyncSocket::send_record`] was given more bytes than the limit.
    #[error("refusing to send a {size}-byte record, limit is {max}")]
    RecordTooLarge {
        /// The record's size.
        size: usize,
        /// The send limit.
        max: usize,
    },
    /// [`SyncSocket::send_record`] was given no bytes: a zero-length record
    /// would read as end-of-file.
    #[error("refusing to send an empty record (it reads as end-of-file)")]
    EmptyRecord,
    /// A send after [`SyncSocket::shutdown_write`].
    #[error("cannot send: this side already shut down writing")]
    WriteShutdown,
    /// [`SyncSocket::try_send`] / [`SyncSocket::try_flush`]: the socket has
    /// no room for the record right now; nothing was sent.
    #[error("the socket has no room for the record right now; nothing sent")]
    WouldBlock,
    /// [`SyncSocket::pass_to_child`] on a socket numbered 0, 1 or 2, which
    /// the child's stdio would replace.
    #[error("cannot pass fd {fd} to a child: 0, 1 and 2 are its stdio")]
    StdioFd {
        /// The socket's fd number.
        fd: RawFd,
    },
    /// The peer sent a record runc's wire rejects (JSON, or the fd record
    /// that follows a HasFd message); every fd that came with it is closed.
    #[cfg(feature = "runc-compat")]
    #[error("peer sent an invalid runc record")]
    RuncDecode(#[source] crate::wire::runc::RuncDecodeError),
    /// The local caller asked to send a message runc's wire cannot carry.
    #[cfg(feature = "runc-compat")]
    #[error("refusing to send the message on the runc wire")]
    RuncEncode(#[source] crate::wire::runc::RuncEncodeError),
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// The operation (`"sendmsg"`, `"recvmsg"`, `"poll"`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// Who caused this error.
    pub fn origin(&self) -> Origin {
        use TransportError as E;
        match self {
            E::PeerClosed
            | E::PeerDied
            | E::Timeout { .. }
            | E::SendTimeout { .. }
            | E::Decode(_)
            | E::Truncated { .. }
            | E::ControlTruncated
            | E::TooManyFds { .. } => Origin::Peer,
            E::Encode(_)
            | E::NotSeqpacket { .. }
            | E::Env { .. }
            | E::RecordTooLarge { .. }
            | E::EmptyRecord
            | E::WriteShutdown
            | E::WouldBlock
            | E::StdioFd { .. } => Origin::Local,
            E::UnexpectedControl { .. } | E::Io { .. } => Origin::Os,
            #[cfg(feature = "runc-compat")]
            E::RuncDecode(_) => Origin::Peer,
            #[cfg(feature = "runc-compat")]
            E::RuncEncode(_) => Origin::Local,
        }
    }

    /// The stable, language-neutral kind of this error (docs/PROTOCOL.md
    /// §8, "Transport error kinds"). A record the codec or the record layer
    /// rejects has the wire's kind ([`TransportErrorKind::Wire`]): a
    /// too-large record is `too-large` whether the kernel truncated it or
    /// the decoder measured it, and more fds than the control buffer holds
    /// is `too-many-fds` like any other excess.
    pub fn kind(&self) -> TransportErrorKind {
        use TransportError as E;
        use TransportErrorKind as K;
        match self {
            E::PeerClosed => K::PeerClosed,
            E::PeerDied => K::PeerDied,
            E::Timeout { .. } => K::Timeout,
            E::SendTimeout { .. } => K::SendTimeout,
            E::Decode(e) => K::Wire(e.kind()),
            E::Encode(EncodeError::Invalid(v)) => K::Wire(v.kind()),
            E::Encode(EncodeError::TooLarge { .. }) => K::Wire(ErrorKind::TooLarge),
            E::Truncated { .. } | E::RecordTooLarge { .. } => K::Wire(ErrorKind::TooLarge),
            E::ControlTruncated | E::TooManyFds { .. } => K::Wire(ErrorKind::TooManyFds),
            E::EmptyRecord => K::Wire(ErrorKind::EmptyRecord),
            E::UnexpectedControl { .. } => K::UnexpectedControl,
            E::NotSeqpacket { .. } => K::NotSeqpacket,
            E::Env { value: None, .. } => K::EnvNotSet,
            E::Env { value: Some(_), .. } => K::EnvInvalid,
            E::WriteShutdown => K::WriteShutdown,
            E::WouldBlock => K::WouldBlock,
            E::StdioFd { .. } => K::StdioFd,
            E::Io { .. } => K::Io,
            #[cfg(feature = "runc-compat")]
            E::RuncDecode(e) => match e.kind() {
                crate::wire::runc::RuncErrorKind::Wire(w) => K::Wire(w),
                k => K::Runc(k),
            },
            #[cfg(feature = "runc-compat")]
            E::RuncEncode(e) => match e.kind() {
                crate::wire::runc::RuncErrorKind::Wire(w) => K::Wire(w),
                k => K::Runc(k),
            },
        }
    }

    fn io(op: &'static str, e: impl Into<io::Error>) -> Self {
        TransportError::Io {
            op,
            source: e.into(),
        }
    }
}

/// The stable, language-neutral name of a [`TransportError`]
/// ([`TransportError::kind`]), listed with its origin in docs/PROTOCOL.md
/// §8. The Go package reports the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// A record the native codec or the record layer rejects (peer), or a
    /// message the local caller may not send (local): the wire's kind
    /// (`empty-record`, `too-large`, `too-many-fds`, `missing-fd`, ...).
    Wire(ErrorKind),
    /// A runc-wire kind that has no native equivalent (`fd-name-mismatch`,
    /// `wrong-type`, ...); shared kinds are reported as [`Self::Wire`].
    #[cfg(feature = "runc-compat")]
    Runc(crate::wire::runc::RuncErrorKind),
    /// `peer-closed`: end-of-file, `EPIPE` or `ECONNRESET`.
    PeerClosed,
    /// `peer-died`: the peer's pidfd reported its exit during a wait.
    PeerDied,
    /// `timeout`: no record before the deadline.
    Timeout,
    /// `send-timeout`: no room in the peer's queue before the deadline.
    SendTimeout,
    /// `would-block`: a single-attempt call found no room; nothing sent.
    WouldBlock,
    /// `unexpected-control`: a control message the protocol does not know.
    UnexpectedControl,
    /// `not-seqpacket`: the fd handed over is not an `AF_UNIX` `SOCK_SEQPACKET` socket.
    NotSeqpacket,
    /// `env-not-set`: `PROCSYNC_SYNC_FD` is not set.
    EnvNotSet,
    /// `env-invalid`: `PROCSYNC_SYNC_FD` does not name a usable fd.
    EnvInvalid,
    /// `write-shutdown`: a send after `shutdown_write`.
    WriteShutdown,
    /// `stdio-fd`: the socket to pass to a child is numbered 0, 1 or 2.
    StdioFd,
    /// `io`: a system call failed.
    Io,
}

impl TransportErrorKind {
    /// The stable name (`"peer-closed"`, or the wire's name for [`Self::Wire`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            TransportErrorKind::Wire(k) => k.as_str(),
            #[cfg(feature = "runc-compat")]
            TransportErrorKind::Runc(k) => k.as_str(),
            TransportErrorKind::PeerClosed => "peer-closed",
            TransportErrorKind::PeerDied => "peer-died",
            TransportErrorKind::Timeout => "timeout",
            TransportErrorKind::SendTimeout => "send-timeout",
            TransportErrorKind::WouldBlock => "would-block",
            TransportErrorKind::UnexpectedControl => "unexpected-control",
            TransportErrorKind::NotSeqpacket => "not-seqpacket",
            TransportErrorKind::EnvNotSet => "env-not-set",
            TransportErrorKind::EnvInvalid => "env-invalid",
            TransportErrorKind::WriteShutdown => "write-shutdown",
            TransportErrorKind::StdioFd => "stdio-fd",
            TransportErrorKind::Io => "io",
        }
    }
}

impl std::fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deadline `after` from now, saturating: `None` (no deadline) when it
/// lies beyond what [`Instant`] can represent, instead of the panic of
/// `Instant::now() + Duration::MAX`. A deadline past the end of time is no
/// deadline.
pub fn deadline_after(after: Duration) -> Option<Instant> {
    Instant::now().checked_add(after)
}

/// The sans-IO half of [`SyncSocket::recv`]: decodes and validates one
/// native record that arrived with `fds`, taking ownership of them. On
/// success the message's fd (if any) moves into [`Received`]; on every error
/// every fd in `fds` is closed before this returns. Public so the receive
/// path can be tested and fuzzed without sockets.
pub fn decode_received(
    record: &[u8],
    mut fds: Vec<OwnedFd>,
    limits: &Limits,
) -> Result<Received, TransportError> {
    let mut out = Received {
        msg: SyncMessage::default(),
        fd: None,
    };
    decode_received_into(record, &mut fds, limits, &mut out)?;
    Ok(out)
}

/// [`decode_received`] into `out` (a default message and no fd), so the
/// receive path builds the message where it returns it: `Received` is
/// large, and every move is a copy. `fds` is left empty (its allocation is
/// reused): the message's fd moved into `out`, every other one closed.
#[inline]
fn decode_received_into(
    record: &[u8],
    fds: &mut Vec<OwnedFd>,
    limits: &Limits,
    out: &mut Received,
) -> Result<(), TransportError> {
    let res = native::decode_into(record, fds.len(), limits, &mut out.msg);
    if res.is_ok() {
        // A valid message came with at most one fd.
        out.fd = fds.pop();
    }
    fds.clear();
    res.map_err(TransportError::Decode)
}

/// One message received by [`SyncSocket::recv`], with the fd that rode in
/// its record (present iff `msg.has_fd()`). The fd is close-on-exec.
#[derive(Debug)]
pub struct Received {
    /// The validated message.
    pub msg: SyncMessage,
    /// The attached fd, owned by the caller.
    pub fd: Option<OwnedFd>,
}

/// One raw record received by [`SyncSocket::recv_record`]: its bytes are
/// in the caller's buffer, its fds (close-on-exec) here.
#[derive(Debug)]
pub struct RawRecord {
    /// The record's length in bytes (equals the buffer's length).
    pub len: usize,
    /// The fds that rode in the record, at most the `max_fds` asked for.
    pub fds: Vec<OwnedFd>,
}

/// One end of the sync socket: an owned `AF_UNIX` `SOCK_SEQPACKET` fd plus
/// the limits, an optional peer pidfd, and reused encode/receive buffers.
///
/// The conversation is strictly one owner's: sending and receiving take
/// `&mut self`, so no lock is taken on any path and the buffers are reused
/// without contention. (To wait on the socket from an event loop, use the
/// single-attempt [`try_send`](Self::try_send) and
/// [`try_recv`](Self::try_recv) with its [`AsFd`] readiness.)
pub struct SyncSocket {
    fd: OwnedFd,
    limits: Limits,
    peer_pidfd: Option<OwnedFd>,
    send_buf: BytesMut,
    recv_buf: Vec<u8>,
    /// The received fds' Vec, reused (always empty between receives).
    recv_fds: Vec<OwnedFd>,
    write_shut: bool,
    wire: Wire,
    #[cfg(feature = "runc-compat")]
    runc: runc::RuncState,
}

impl std::fmt::Debug for SyncSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("limits", &self.limits)
            .field("wire", &self.wire)
            .field(
                "peer_pidfd",
                &self.peer_pidfd.as_ref().map(AsRawFd::as_raw_fd),
            )
            .finish()
    }
}

/// What [`SyncSocket::from_env`] and its variants do with the variable and
/// the fd it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EnvClaim {
    /// Take ownership of the fd; remove the variable.
    TakeAndRemove,
    /// Take ownership of the fd; leave the variable.
    Take,
    /// Duplicate the fd; leave the fd and the variable alone.
    Dup,
}

impl SyncSocket {
    fn new(fd: OwnedFd) -> Self {
        SyncSocket {
            fd,
            limits: Limits::default(),
            peer_pidfd: None,
            send_buf: BytesMut::new(),
            recv_buf: Vec::new(),
            recv_fds: Vec::new(),
            write_shut: false,
            wire: Wire::Native,
            #[cfg(feature = "runc-compat")]
            runc: runc::RuncState::default(),
        }
    }

    /// A connected pair of sync sockets, both close-on-exec. Give one to the
    /// child with [`pass_to_child`](Self::pass_to_child) and drop it in the
    /// parent after spawning.
    pub fn pair() -> Result<(SyncSocket, SyncSocket), TransportError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| TransportError::io("socketpair", e))?;
        Ok((SyncSocket::new(a), SyncSocket::new(b)))
    }

    /// Wraps an existing fd after checking that it is an `AF_UNIX`
    /// `SOCK_SEQPACKET` socket ([`TransportError::NotSeqpacket`] otherwise,
    /// also for an `O_PATH` fd, and the fd is closed). Sets close-on-exec.
    pub fn from_fd(fd: OwnedFd) -> Result<SyncSocket, TransportError> {
        check_seqpacket(fd.as_fd())?;
        set_cloexec(&fd)?;
        Ok(SyncSocket::new(fd))
    }

    /// The child's side of the hand-off (docs/PROTOCOL.md §8): takes the fd
    /// named by `PROCSYNC_SYNC_FD` ([`ENV_SYNC_FD`]), removes the variable
    /// from the environment (so it does not leak into processes we start),
    /// checks the value (canonical decimal: digits only, no leading zero,
    /// greater than 2; an open fd; an `AF_UNIX` `SOCK_SEQPACKET` socket)
    /// and sets close-on-exec. An fd that is open but not such a socket is
    /// closed.
    ///
    /// # Safety
    ///
    /// * The fd the variable names, if open, was handed to this process for
    ///   this purpose and nothing else in the process owns or uses it (no
    ///   `File`, `OwnedFd` or other `SyncSocket` holds that number): this
    ///   call takes ownership of it and may close it.
    /// * No other thread reads or writes the environment during the call
    ///   (removing a variable races with `getenv` in other threads; the
    ///   reason `std::env::remove_var` is `unsafe` in edition 2024). Call it
    ///   early in `main`, before starting threads.
    ///
    /// [`from_env_dup`](Self::from_env_dup) is the safe variant: it never
    /// takes, closes or edits anything it does not own.
    pub unsafe fn from_env() -> Result<SyncSocket, TransportError> {
        // SAFETY: the caller's contract is this mode's.
        unsafe { from_env_impl(EnvClaim::TakeAndRemove) }
    }

    /// [`from_env`](Self::from_env) without touching the environment: the
    /// variable stays set (for a caller that manages its environment
    /// itself, or has more threads).
    ///
    /// # Safety
    ///
    /// The fd the variable names, if open, was handed to this process for
    /// this purpose and nothing else in the process owns or uses it: this
    /// call takes ownership of it and may close it.
    pub unsafe fn from_env_keep_var() -> Result<SyncSocket, TransportError> {
        // SAFETY: the caller's contract is this mode's.
        unsafe { from_env_impl(EnvClaim::Take) }
    }

    /// The safe variant of [`from_env`](Self::from_env): checks the same
    /// value and socket, but takes ownership of nothing it has not verified
    /// — it duplicates the named fd (`F_DUPFD_CLOEXEC`) and wraps the
    /// duplicate, and it leaves the environment and the named fd untouched
    /// (never closed, whatever it is). The original stays open, and
    /// inheritable if it was: close it yourself if you own it (the peer
    /// reads end-of-file only once every copy is closed), and do not `exec`
    /// while it is still open and inheritable.
    pub fn from_env_dup() -> Result<SyncSocket, TransportError> {
        // SAFETY: with `EnvClaim::Dup` nothing is taken or closed and the
        // environment is only read.
        unsafe { from_env_impl(EnvClaim::Dup) }
    }

    /// Makes this socket available to the child `cmd` will spawn: sets
    /// `PROCSYNC_SYNC_FD` in its environment and clears close-on-exec on
    /// this fd in that child only (in a `pre_exec` hook, after `fork`), so
    /// no other child inherits it and no other fd is made inheritable.
    ///
    /// Keep `self` open until `spawn` returns, then drop it in the parent
    /// (otherwise the parent's copy keeps the child's peer end alive and the
    /// parent never sees end-of-file). If the fd number no longer names this
    /// socket at spawn time, the spawn fails with `EBADF`. One sync socket
    /// per child: a second call on the same `cmd` replaces the variable.
    pub fn pass_to_child(&self, cmd: &mut Command) -> Result<(), TransportError> {
        let raw = self.fd.as_raw_fd();
        if raw <= 2 {
            return Err(TransportError::StdioFd { fd: raw });
        }
        let st = rustix::fs::fstat(&self.fd).map_err(|e| TransportError::io("fstat", e))?;
        cmd.env(ENV_SYNC_FD, raw.to_string());
        sys::keep_fd_in_child(cmd, raw, st.st_dev as u64, st.st_ino as u64);
        Ok(())
    }

    /// Replaces the limits (maximum record size) used for sending and receiving.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Selects the wire format [`send`](Self::send), [`recv`](Self::recv)
    /// and [`recv_deadline`](Self::recv_deadline) speak (default
    /// [`Wire::Native`]). Both ends must agree; the raw record layer
    /// ([`send_record`](Self::send_record)) is the same for both.
    ///
    /// ```
    /// # #[cfg(feature = "runc-compat")] {
    /// use std::os::fd::AsFd;
    /// use procsync::schema::{Mount, MountSourceKind, SyncMessage};
    /// use procsync::transport::{SyncSocket, Wire};
    /// use procsync::wire::runc::MountShape;
    ///
    /// let (parent, child) = SyncSocket::pair()?;
    /// let mut parent = parent.with_wire(Wire::Runc(MountShape::V1_2));
    /// let mut child = child.with_wire(Wire::Runc(MountShape::V1_2));
    ///
    /// // The child asks for a mount source: one JSON record.
    /// child.send(&SyncMessage::mount_please(Mount::bind("/tmp", "/data")), None)?;
    /// let req = parent.recv()?;
    /// let src = req.msg.mount().unwrap().source.clone();
    ///
    /// // The parent answers: a JSON record, then a record named "/tmp" carrying the fd.
    /// let dir = std::fs::File::open(&src)?;
    /// parent.send(&SyncMessage::mount_fd(MountSourceKind::PlainOpen, src.as_str()), Some(dir.as_fd()))?;
    /// let reply = child.recv()?; // name checked against the request's source
    /// assert_eq!(reply.msg.mount_fd_info().unwrap().source, "/tmp");
    /// assert!(reply.fd.is_some());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// The wire format in use.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Registers the peer process's pidfd: from now on every wait (receive,
    /// or a send blocked on a full socket) ends with
    /// [`TransportError::PeerDied`] once the peer exits, even if another
    /// process still holds the peer's end of the socket. Records the peer
    /// sent before dying are still delivered first. [`pidfd::open`] makes
    /// one for a child process.
    pub fn set_peer_pidfd(&mut self, pidfd: OwnedFd) {
        self.peer_pidfd = Some(pidfd);
    }

    /// The registered peer pidfd, if any (for [`pidfd::get_fd`]).
    pub fn peer_pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.peer_pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Sends `msg` as one record, with `fd` (if any) in the same record.
    ///
    /// The codec sets HasFd iff `fd` is `Some` and refuses (locally, before
    /// any system call) a message that is invalid or larger than the limit.
    /// Exactly one `sendmsg(2)`, with `MSG_NOSIGNAL`; `EINTR` is retried,
    /// `EPIPE`/`ECONNRESET` is [`TransportError::PeerClosed`]. The encode
    /// buffer is reused: no allocation once it has grown to the record size.
    ///
    /// On the runc wire (`Wire::Runc`, feature `runc-compat`) the message is
    /// runc's JSON record and, with an fd, a second record named after it
    /// (two `sendmsg(2)` calls): see `docs/PROTOCOL.md`.
    ///
    /// Blocks while the peer's receive queue is full (a peer that stops
    /// reading), until the peer dies (with a pidfd set); see
    /// [`send_deadline`](Self::send_deadline) to bound that wait.
    pub fn send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        self.send_deadline(msg, fd, None)
    }

    /// [`send`](Self::send), waiting at most until `deadline` for room in
    /// the peer's receive queue ([`TransportError::SendTimeout`]; nothing
    /// was sent). A live peer that never reads cannot block the sender past
    /// the deadline.
    pub fn send_deadline(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        if self.write_shut {
            return Err(TransportError::WriteShutdown);
        }
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(shape) = self.wire {
            return self.send_runc(msg, fd, shape, Attempt::Until(deadline));
        }
        self.send_buf.clear();
        native::encode(msg, fd.is_some(), &mut self.send_buf, &self.limits)
            .map_err(TransportError::Encode)?;
        send_bytes(self.io(), &self.send_buf, fd, Attempt::Until(deadline))
    }

    /// One attempt to send `msg` without waiting: either the whole message
    /// is handed to the kernel, or [`TransportError::WouldBlock`] and
    /// nothing was sent (a seqpacket record is all-or-nothing). For event
    /// loops: wait for the socket to be writable ([`AsFd`]) and try again.
    ///
    /// Dropping the caller at any point loses nothing: a message is either
    /// sent entirely or not at all. On the runc wire a message with an fd
    /// is two records; once the first is out the message counts as sent and
    /// the second (with a duplicate of the fd) is kept until it fits:
    /// [`try_flush`](Self::try_flush) sends it, and every other send or
    /// receive on this socket sends it first ([`has_pending_send`](Self::has_pending_send)).
    pub fn try_send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        if self.write_shut {
            return Err(TransportError::WriteShutdown);
        }
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(shape) = self.wire {
            return self.send_runc(msg, fd, shape, Attempt::Once);
        }
        self.send_buf.clear();
        native::encode(msg, fd.is_some(), &mut self.send_buf, &self.limits)
            .map_err(TransportError::Encode)?;
        send_bytes(self.io(), &self.send_buf, fd, Attempt::Once)
    }

    /// Whether part of a message is still waiting to be sent (only on the
    /// runc wire, after [`try_send`](Self::try_send) sent the first of its
    /// two records).
    pub fn has_pending_send(&self) -> bool {
        #[cfg(feature = "runc-compat")]
        if self.runc.pending_send.is_some() {
            return true;
        }
        false
    }

    /// Sends what [`try_send`](Self::try_send) left pending, without
    /// waiting: `Ok` once nothing is pending (also when nothing was),
    /// [`TransportError::WouldBlock`] when it still does not fit.
    pub fn try_flush(&mut self) -> Result<(), TransportError> {
        #[cfg(feature = "runc-compat")]
        if self.runc.pending_send.is_some() {
            return self.flush_runc(Attempt::Once);
        }
        Ok(())
    }

    /// Receives one message, blocking until it arrives (or the peer closes
    /// or, with a pidfd set, dies). See [`recv_deadline`](Self::recv_deadline).
    pub fn recv(&mut self) -> Result<Received, TransportError> {
        self.recv_deadline(None)
    }

    /// Receives one message, waiting at most until `deadline`
    /// ([`TransportError::Timeout`]; a deadline in the past still takes a
    /// record that is already queued). The record is decoded and validated
    /// with the fds that came with it: HasFd must match, at most one fd.
    /// On every error every fd that arrived has been closed.
    ///
    /// On the runc wire (`Wire::Runc`) a HasFd message takes two records
    /// (the JSON one and the fd record, both within the same deadline); the
    /// fd record's name is checked and, for `MountFd`, becomes the source.
    /// A timeout between the two keeps the first: the next receive resumes
    /// with the fd record. After any other error the conversation is over.
    pub fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<Received, TransportError> {
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(_) = self.wire {
            return self
                .recv_runc(Attempt::Until(deadline))
                .and_then(|r| r.ok_or(TransportError::WouldBlock));
        }
        self.recv_native_record(Attempt::Until(deadline))
    }

    /// One attempt to receive a message without waiting: `Ok(None)` when no
    /// record is queued. For event loops: wait for the socket to be
    /// readable ([`AsFd`]) and try again.
    ///
    /// Dropping the caller at any point loses nothing: a record is taken
    /// from the kernel whole, with its fds, inside this call. On the runc
    /// wire, when the JSON record of a HasFd message has arrived but its fd
    /// record has not, the first is kept and `Ok(None)` returned; the next
    /// receive of any kind resumes with the fd record.
    pub fn try_recv(&mut self) -> Result<Option<Received>, TransportError> {
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(_) = self.wire {
            return self.recv_runc(Attempt::Once);
        }
        self.recv_native(Attempt::Once)
    }

    // (A bounded receive never returns `Ok(None)`: it waits instead. The
    // `WouldBlock` in its place only avoids a panic path.)
    fn recv_native(&mut self, attempt: Attempt) -> Result<Option<Received>, TransportError> {
        match self.recv_native_record(attempt) {
            Ok(rec) => Ok(Some(rec)),
            Err(TransportError::WouldBlock) if matches!(attempt, Attempt::Once) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One native message; `WouldBlock` when a single attempt found none.
    /// The message is built straight into the result (no re-wrapping on
    /// the blocking path: `Received` is large, and each move is a copy).
    fn recv_native_record(&mut self, attempt: Attempt) -> Result<Received, TransportError> {
        let mut buf = std::mem::take(&mut self.recv_buf);
        let mut fds = std::mem::take(&mut self.recv_fds);
        // The result is built first and the codec decodes into it: one
        // copy is left, at the return.
        let mut ret = Ok(Received {
            msg: SyncMessage::default(),
            fd: None,
        });
        // Room for SPARE_FDS extra fds so the codec reports the real count
        // (naming the message type) instead of a bare control truncation.
        let res = match (
            &mut ret,
            recv_raw(self.io(), &mut buf, MAX_FDS_PER_RECORD, attempt, &mut fds),
        ) {
            (Ok(out), Ok(Some(mut rec))) => {
                let res = decode_received_into(&buf[..rec.len], &mut rec.fds, &self.limits, out);
                // Emptied above: keep its allocation for the next record.
                self.recv_fds = rec.fds;
                res
            }
            (_, Ok(_)) => Err(TransportError::WouldBlock),
            (_, Err(e)) => Err(e),
        };
        self.recv_buf = buf;
        if let Err(e) = res {
            ret = Err(e);
        }
        ret
    }

    /// Closes the sending direction (`shutdown(SHUT_WR)`): the peer reads
    /// end-of-file after the records already sent. This is the parent's
    /// end-of-protocol signal (as runc's parent does); receiving still works.
    pub fn shutdown_write(&mut self) -> Result<(), TransportError> {
        match rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Write) {
            Ok(()) | Err(Errno::NOTCONN) => {
                self.write_shut = true;
                Ok(())
            }
            Err(e) => Err(TransportError::io("shutdown", e)),
        }
    }

    /// Whether the peer has closed its end or shut down its sending side,
    /// without reading anything and without waiting (`POLLHUP`/`POLLRDHUP`
    /// on the socket right now). Records the peer sent before are still
    /// queued and readable.
    pub fn peer_hung_up(&self) -> Result<bool, TransportError> {
        let mut pfd = [PollFd::new(&self.fd, PollFlags::RDHUP)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match rustix::event::poll(&mut pfd, Some(&zero)) {
                Ok(_) => {
                    return Ok(pfd[0]
                        .revents()
                        .intersects(PollFlags::HUP | PollFlags::RDHUP))
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(TransportError::io("poll", e)),
            }
        }
    }

    /// Sends `bytes` as one raw record (no codec), with `fd` (if any) as one
    /// `SCM_RIGHTS` fd in the same record, waiting at most until `deadline`
    /// for room ([`TransportError::SendTimeout`], nothing sent; `None`
    /// waits until there is room or, with a pidfd set, the peer dies): the
    /// layer a second wire format (runc's JSON wire) builds on. Refuses an
    /// empty record and one larger than the limit before any system call.
    pub fn send_record(
        &mut self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        self.check_record(bytes)?;
        send_bytes(self.io(), bytes, fd, Attempt::Until(deadline))
    }

    /// [`send_record`](Self::send_record) as one attempt without waiting
    /// ([`TransportError::WouldBlock`]: nothing sent).
    pub fn try_send_record(
        &mut self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        self.check_record(bytes)?;
        send_bytes(self.io(), bytes, fd, Attempt::Once)
    }

    fn check_record(&self, bytes: &[u8]) -> Result<(), TransportError> {
        if self.write_shut {
            return Err(TransportError::WriteShutdown);
        }
        if bytes.is_empty() {
            return Err(TransportError::EmptyRecord);
        }
        if bytes.len() > self.limits.max_record() {
            return Err(TransportError::RecordTooLarge {
                size: bytes.len(),
                max: self.limits.max_record(),
            });
        }
        Ok(())
    }

    /// Receives one raw record into `buf` (replacing its contents) with at
    /// most `max_fds` fds (clamped to [`MAX_RECV_FDS`]), waiting at most
    /// until `deadline`.
    ///
    /// `buf` grows to at most [`Limits::max_record`] bytes of capacity; a
    /// larger record is consumed and rejected ([`TransportError::Truncated`]).
    /// More fds than `max_fds` is [`TransportError::TooManyFds`] (or
    /// [`TransportError::ControlTruncated`] when they did not even fit the
    /// spare room); a zero-length read is [`TransportError::PeerClosed`]
    /// (with fds, `empty-record`). On every error every fd that arrived has
    /// been closed and `buf` is empty.
    pub fn recv_record(
        &mut self,
        buf: &mut Vec<u8>,
        max_fds: usize,
        deadline: Option<Instant>,
    ) -> Result<RawRecord, TransportError> {
        self.recv_record_inner(buf, max_fds, Attempt::Until(deadline))
            .and_then(|r| r.ok_or(TransportError::WouldBlock))
    }

    /// [`recv_record`](Self::recv_record) as one attempt without waiting:
    /// `Ok(None)` when no record is queued.
    pub fn try_recv_record(
        &mut self,
        buf: &mut Vec<u8>,
        max_fds: usize,
    ) -> Result<Option<RawRecord>, TransportError> {
        self.recv_record_inner(buf, max_fds, Attempt::Once)
    }

    fn recv_record_inner(
        &mut self,
        buf: &mut Vec<u8>,
        max_fds: usize,
        attempt: Attempt,
    ) -> Result<Option<RawRecord>, TransportError> {
        let max_fds = max_fds.min(MAX_RECV_FDS);
        let Some(rec) = recv_raw(self.io(), buf, max_fds, attempt, &mut Vec::new())? else {
            return Ok(None);
        };
        if rec.fds.len() > max_fds {
            buf.clear();
            return Err(TransportError::TooManyFds {
                count: rec.fds.len(),
                max: max_fds,
            });
        }
        Ok(Some(rec))
    }

    /// The socket, pidfd and limit, borrowed apart from the buffers.
    fn io(&self) -> Io<'_> {
        Io {
            fd: self.fd.as_fd(),
            peer_pidfd: self.peer_pidfd.as_ref().map(AsFd::as_fd),
            max: self.limits.max_record(),
        }
    }
}

/// How long a send or receive may wait.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// One non-blocking attempt (`try_*`).
    Once,
    /// Wait until the deadline (`None`: no deadline).
    Until(Option<Instant>),
}

/// What the record layer needs of a socket, borrowed apart from its buffers.
#[derive(Clone, Copy)]
struct Io<'a> {
    fd: BorrowedFd<'a>,
    peer_pidfd: Option<BorrowedFd<'a>>,
    max: usize,
}

/// One record with up to `max_fds + SPARE_FDS` fds, fds not yet counted;
/// `Ok(None)` only for [`Attempt::Once`] with nothing queued. The record's
/// `fds` is the (empty) Vec passed in as `fds`, taken: a caller may reuse
/// its allocation.
///
/// Checks, in this order (docs/PROTOCOL.md §8): a zero-length record is
/// end-of-file ([`TransportError::PeerClosed`]) unless fds came with it or
/// the control data was truncated (`empty-record`); `MSG_TRUNC` or a size
/// above the limit is [`TransportError::Truncated`]; `MSG_CTRUNC` is
/// [`TransportError::ControlTruncated`]; then an unknown control message.
fn recv_raw(
    io: Io<'_>,
    buf: &mut Vec<u8>,
    max_fds: usize,
    attempt: Attempt,
    fds: &mut Vec<OwnedFd>,
) -> Result<Option<RawRecord>, TransportError> {
    let max = io.max;
    // Taken at the first wait only: no clock read on the fast path.
    let mut start = None;
    // Without a deadline or a pidfd, block in recvmsg itself: one system
    // call per record. Otherwise poll first and never block in recvmsg.
    let (polled, deadline) = match attempt {
        Attempt::Once => (false, None),
        Attempt::Until(d) => (d.is_some() || io.peer_pidfd.is_some(), d),
    };
    let nonblocking = polled || matches!(attempt, Attempt::Once);
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let ctrl_bytes = sys::ctrl_len(max_fds.min(MAX_RECV_FDS));
    let mut ctrl = sys::RecvCtrl::new();
    loop {
        if polled {
            wait(io, PollFlags::IN, deadline, &mut start)?;
        }
        let out = match sys::recvmsg(io.fd, buf, max, &mut ctrl, ctrl_bytes, flags, fds) {
            Ok(out) => out,
            Err(e) => {
                buf.clear();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        if let Attempt::Once = attempt {
                            return Ok(None);
                        }
                        // The fd is non-blocking (someone set O_NONBLOCK):
                        // wait, honouring deadline and pidfd.
                        if !polled {
                            wait(io, PollFlags::IN, None, &mut start)?;
                        }
                        continue;
                    }
                    Some(libc::ECONNRESET) => return Err(TransportError::PeerClosed),
                    _ => return Err(TransportError::io("recvmsg", e)),
                }
            }
        };
        // From here on `out.fds` owns every installed fd: each early
        // return below drops (closes) them.
        let ctrunc = out.flags & libc::MSG_CTRUNC != 0;
        let err = if out.len == 0 {
            // A real end-of-file carries no fds; an empty record that does
            // is the peer's violation (§3 rule 1), whatever else is wrong.
            Some(if out.fds.is_empty() && !ctrunc {
                TransportError::PeerClosed
            } else {
                TransportError::Decode(DecodeError::Empty)
            })
        } else if out.flags & libc::MSG_TRUNC != 0 || out.len > max {
            Some(TransportError::Truncated { size: out.len, max })
        } else if ctrunc {
            Some(TransportError::ControlTruncated)
        } else {
            out.unexpected
                .map(|(level, kind)| TransportError::UnexpectedControl { level, kind })
        };
        if let Some(err) = err {
            buf.clear();
            return Err(err);
        }
        return Ok(Some(RawRecord {
            len: out.len,
            fds: out.fds,
        }));
    }
}

/// Sends `bytes` as one record with `fd`; with [`Attempt::Once`], a full
/// socket is [`TransportError::WouldBlock`] (nothing sent).
fn send_bytes(
    io: Io<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
    attempt: Attempt,
) -> Result<(), TransportError> {
    // With a pidfd or a deadline, never block in sendmsg: a full socket
    // whose reader died, or stopped reading, must not hang us.
    let (polled, deadline) = match attempt {
        Attempt::Once => (false, None),
        Attempt::Until(d) => (d.is_some() || io.peer_pidfd.is_some(), d),
    };
    let nonblocking = polled || matches!(attempt, Attempt::Once);
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // Taken at the first wait only: no clock read on the fast path.
    let mut start = None;
    loop {
        match sys::sendmsg(io.fd, bytes, fd, flags) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(TransportError::io(
                    "sendmsg",
                    io::Error::other(format!("short send: {n} of {} bytes", bytes.len())),
                ))
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    if let Attempt::Once = attempt {
                        return Err(TransportError::WouldBlock);
                    }
                    match wait(io, PollFlags::OUT, deadline, &mut start) {
                        Err(TransportError::Timeout { waited }) => {
                            return Err(TransportError::SendTimeout { waited })
                        }
                        other => other?,
                    }
                }
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                    return Err(TransportError::PeerClosed)
                }
                _ => return Err(TransportError::io("sendmsg", e)),
            },
        }
    }
}

/// Waits until the socket is ready for `events`, the peer pidfd (if any)
/// reports the peer's exit, or `deadline` passes. `EINTR` restarts the
/// wait with the remaining time.
fn wait(
    io: Io<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    start: &mut Option<Instant>,
) -> Result<(), TransportError> {
    let start = *start.get_or_insert_with(Instant::now);
    loop {
        let timeout = deadline.map(|d| to_timespec(d.saturating_duration_since(Instant::now())));
        let mut pfds = [
            PollFd::from_borrowed_fd(io.fd, events),
            PollFd::from_borrowed_fd(io.peer_pidfd.unwrap_or(io.fd), PollFlags::IN),
        ];
        let n = if io.peer_pidfd.is_some() { 2 } else { 1 };
        match rustix::event::poll(&mut pfds[..n], timeout.as_ref()) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(TransportError::io("poll", e)),
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(TransportError::Timeout {
                        waited: start.elapsed(),
                    });
                }
            }
            Ok(_) => {
                // Socket first: records the peer sent before it died
                // are still delivered (and HUP/ERR surface from recvmsg).
                if !pfds[0].revents().is_empty() {
                    return Ok(());
                }
                if n == 2 && !pfds[1].revents().is_empty() {
                    return Err(TransportError::PeerDied);
                }
            }
        }
    }
}

/// Checks that `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket.
fn check_seqpacket(fd: BorrowedFd<'_>) -> Result<(), TransportError> {
    let raw = fd.as_raw_fd();
    let not = |found: String| TransportError::NotSeqpacket { fd: raw, found };
    let domain = match rustix::net::sockopt::socket_domain(fd) {
        Ok(d) => d,
        Err(Errno::NOTSOCK) => return Err(not("not a socket".into())),
        // getsockopt on an O_PATH fd fails with EBADF: it is open, but
        // only as a path, so certainly not a socket we can use.
        Err(Errno::BADF)
            if rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::PATH)) =>
        {
            return Err(not("not a socket (an O_PATH fd)".into()))
        }
        Err(e) => return Err(TransportError::io("getsockopt(SO_DOMAIN)", e)),
    };
    if domain != AddressFamily::UNIX {
        return Err(not(format!("address family {}", domain.as_raw())));
    }
    let ty = rustix::net::sockopt::socket_type(fd)
        .map_err(|e| TransportError::io("getsockopt(SO_TYPE)", e))?;
    if ty != SocketType::SEQPACKET {
        let name = match ty {
            SocketType::STREAM => "SOCK_STREAM".to_string(),
            SocketType::DGRAM => "SOCK_DGRAM".to_string(),
            other => format!("socket type {}", other.as_raw()),
        };
        return Err(not(name));
    }
    Ok(())
}

/// Parses a `PROCSYNC_SYNC_FD` value: canonical decimal (digits only, no
/// leading zero), greater than 2 (docs/PROTOCOL.md §8).
fn parse_env_fd(value: &std::ffi::OsStr) -> Result<RawFd, TransportError> {
    let shown = value.to_string_lossy().into_owned();
    let bad = |reason| TransportError::Env {
        value: Some(shown.clone()),
        reason,
    };
    let s = value.to_str().ok_or_else(|| bad("not UTF-8"))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a decimal fd number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad("not a canonical decimal fd number (leading zero)"));
    }
    let n: RawFd = s.parse().map_err(|_| bad("fd number out of range"))?;
    if n <= 2 {
        return Err(bad("fd 0, 1 and 2 are stdio, not a sync socket"));
    }
    Ok(n)
}

/// The hand-off of [`SyncSocket::from_env`] and its variants.
///
/// # Safety
///
/// With [`EnvClaim::TakeAndRemove`] the contract of
/// [`SyncSocket::from_env`], with [`EnvClaim::Take`] that of
/// [`SyncSocket::from_env_keep_var`]; none with [`EnvClaim::Dup`].
unsafe fn from_env_impl(claim: EnvClaim) -> Result<SyncSocket, TransportError> {
    let Some(value) = std::env::var_os(ENV_SYNC_FD) else {
        return Err(TransportError::Env {
            value: None,
            reason: "not set",
        });
    };
    if claim == EnvClaim::TakeAndRemove {
        // Removed whatever it holds: a bad value must not reach grandchildren
        // either. The caller promised no other thread uses the environment.
        std::env::remove_var(ENV_SYNC_FD);
    }
    let n = parse_env_fd(&value)?;
    let bad = |reason| TransportError::Env {
        value: Some(value.to_string_lossy().into_owned()),
        reason,
    };
    let fd = match claim {
        EnvClaim::Dup => sys::dup_inherited_fd(n).map_err(|_| bad("not an open fd"))?,
        // SAFETY: the caller's contract: the fd, if open, is ours alone.
        EnvClaim::Take | EnvClaim::TakeAndRemove => {
            unsafe { sys::claim_inherited_fd(n) }.map_err(|_| bad("not an open fd"))?
        }
    };
    SyncSocket::from_fd(fd)
}

fn to_timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

fn set_cloexec(fd: &OwnedFd) -> Result<(), TransportError> {
    let flags = fcntl_getfd(fd).map_err(|e| TransportError::io("fcntl(F_GETFD)", e))?;
    if !flags.contains(FdFlags::CLOEXEC) {
        fcntl_setfd(fd, flags | FdFlags::CLOEXEC)
            .map_err(|e| TransportError::io("fcntl(F_SETFD)", e))?;
    }
    Ok(())
}

impl AsFd for SyncSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SyncSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<SyncSocket> for OwnedFd {
    /// The socket's fd (the peer pidfd, if any, is closed).
    fn from(s: SyncSocket) -> OwnedFd {
        s.fd
    }
}
