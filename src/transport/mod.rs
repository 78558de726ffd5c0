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
//! let (parent, child) = SyncSocket::pair()?;
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::{fcntl_getfd, fcntl_setfd, Errno, FdFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::schema::SyncMessage;
use crate::wire::{native, DecodeError, EncodeError, Limits, MAX_FDS_PER_RECORD};

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
    /// `MountPlease` prints `configs.Mount`; both shapes are received.
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
    #[error("peer sent an invalid record: {0}")]
    Decode(#[source] DecodeError),
    /// The local caller asked to send a message the codec refuses.
    #[error("refusing to send: {0}")]
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
    /// A control message that is neither `SCM_RIGHTS` nor a known fd-free
    /// kind (`SCM_CREDENTIALS`, `SCM_SECURITY`) arrived.
    #[error("unexpected control message (level {level}, type {kind})")]
    UnexpectedControl {
        /// `cmsg_level`.
        level: i32,
        /// `cmsg_type`.
        kind: i32,
    },
    /// The fd handed to [`SyncSocket::from_fd`] / [`SyncSocket::from_env`]
    /// is not an `AF_UNIX` `SOCK_SEQPACKET` socket (it has been closed).
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
    #[error("peer sent an invalid runc record: {0}")]
    RuncDecode(#[source] crate::wire::runc::RuncDecodeError),
    /// The local caller asked to send a message runc's wire cannot carry.
    #[cfg(feature = "runc-compat")]
    #[error("refusing to send on the runc wire: {0}")]
    RuncEncode(#[source] crate::wire::runc::RuncEncodeError),
    /// A system call failed.
    #[error("{op}: {source}")]
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
            | E::StdioFd { .. } => Origin::Local,
            E::UnexpectedControl { .. } | E::Io { .. } => Origin::Os,
            #[cfg(feature = "runc-compat")]
            E::RuncDecode(_) => Origin::Peer,
            #[cfg(feature = "runc-compat")]
            E::RuncEncode(_) => Origin::Local,
        }
    }

    fn io(op: &'static str, e: impl Into<io::Error>) -> Self {
        TransportError::Io {
            op,
            source: e.into(),
        }
    }
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
    let msg = native::decode(record, fds.len(), limits).map_err(TransportError::Decode)?;
    Ok(Received { msg, fd: fds.pop() })
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
/// All methods take `&self`; the type is `Send + Sync`. Each record is sent
/// and received atomically by the kernel, so concurrent callers never see
/// interleaved records.
pub struct SyncSocket {
    fd: OwnedFd,
    limits: Limits,
    peer_pidfd: Option<OwnedFd>,
    send_buf: Mutex<BytesMut>,
    recv_buf: Mutex<Vec<u8>>,
    write_shut: AtomicBool,
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

/// Locks `m`, or hands out a fresh value if another thread holds it (so a
/// caller with a deadline never waits on another caller's blocking call).
fn lock_or_fresh<T: Default>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, T> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        // The buffers are cleared before every use: a panic elsewhere
        // cannot leave them in a state that matters.
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(T::default()),
    }
}

impl SyncSocket {
    fn new(fd: OwnedFd) -> Self {
        SyncSocket {
            fd,
            limits: Limits::default(),
            peer_pidfd: None,
            send_buf: Mutex::new(BytesMut::new()),
            recv_buf: Mutex::new(Vec::new()),
            write_shut: AtomicBool::new(false),
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
    /// and the fd is closed). Sets close-on-exec.
    pub fn from_fd(fd: OwnedFd) -> Result<SyncSocket, TransportError> {
        let raw = fd.as_raw_fd();
        let not = |found: String| TransportError::NotSeqpacket { fd: raw, found };
        let domain = match rustix::net::sockopt::socket_domain(&fd) {
            Ok(d) => d,
            Err(Errno::NOTSOCK) => return Err(not("not a socket".into())),
            Err(e) => return Err(TransportError::io("getsockopt(SO_DOMAIN)", e)),
        };
        if domain != AddressFamily::UNIX {
            return Err(not(format!("address family {}", domain.as_raw())));
        }
        let ty = rustix::net::sockopt::socket_type(&fd)
            .map_err(|e| TransportError::io("getsockopt(SO_TYPE)", e))?;
        if ty != SocketType::SEQPACKET {
            let name = match ty {
                SocketType::STREAM => "SOCK_STREAM".to_string(),
                SocketType::DGRAM => "SOCK_DGRAM".to_string(),
                other => format!("socket type {}", other.as_raw()),
            };
            return Err(not(name));
        }
        set_cloexec(&fd)?;
        Ok(SyncSocket::new(fd))
    }

    /// The child's side of the hand-off: takes the fd named by
    /// `PROCSYNC_SYNC_FD` ([`ENV_SYNC_FD`]), removes the variable from the
    /// environment (so it does not leak into processes we start), checks the
    /// value (decimal digits only, greater than 2, an open fd, an `AF_UNIX`
    /// `SOCK_SEQPACKET` socket) and sets close-on-exec.
    ///
    /// Call it early, before starting threads: it edits the environment.
    pub fn from_env() -> Result<SyncSocket, TransportError> {
        let Some(value) = std::env::var_os(ENV_SYNC_FD) else {
            return Err(TransportError::Env {
                value: None,
                reason: "not set",
            });
        };
        // Removed whatever it holds: a bad value must not reach grandchildren either.
        std::env::remove_var(ENV_SYNC_FD);
        let shown = value.to_string_lossy().into_owned();
        let bad = |reason| TransportError::Env {
            value: Some(shown.clone()),
            reason,
        };
        let s = value.to_str().ok_or_else(|| bad("not UTF-8"))?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a decimal fd number"));
        }
        let n: RawFd = s.parse().map_err(|_| bad("fd number out of range"))?;
        if n <= 2 {
            return Err(bad("fd 0, 1 and 2 are stdio, not a sync socket"));
        }
        let fd = sys::claim_inherited_fd(n).map_err(|_| bad("not an open fd"))?;
        SyncSocket::from_fd(fd)
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
    /// let parent = parent.with_wire(Wire::Runc(MountShape::V1_2));
    /// let child = child.with_wire(Wire::Runc(MountShape::V1_2));
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
    /// sent before dying are still delivered first.
    pub fn set_peer_pidfd(&mut self, pidfd: OwnedFd) {
        self.peer_pidfd = Some(pidfd);
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
    /// (two `sendmsg(2)` calls, never interleaved with another sender's):
    /// see `docs/PROTOCOL.md`.
    ///
    /// Blocks while the peer's receive queue is full (a peer that stops
    /// reading), until the peer dies (with a pidfd set); see
    /// [`send_deadline`](Self::send_deadline) to bound that wait.
    pub fn send(
        &self,
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
        &self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        if self.write_shut.load(Ordering::Relaxed) {
            return Err(TransportError::WriteShutdown);
        }
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(shape) = self.wire {
            return self.send_runc(msg, fd, shape, deadline);
        }
        let mut guard = lock_or_fresh(&self.send_buf);
        let buf: &mut BytesMut = match &mut guard {
            Ok(g) => g,
            Err(fresh) => fresh,
        };
        buf.clear();
        native::encode(msg, fd.is_some(), buf, &self.limits).map_err(TransportError::Encode)?;
        self.send_raw(buf, fd, deadline)
    }

    /// Receives one message, blocking until it arrives (or the peer closes
    /// or, with a pidfd set, dies). See [`recv_deadline`](Self::recv_deadline).
    pub fn recv(&self) -> Result<Received, TransportError> {
        self.recv_deadline(None)
    }

    /// Receives one message, waiting at most until `deadline`
    /// ([`TransportError::Timeout`]; a deadline in the past still takes a
    /// record that is already there). The record is decoded and validated
    /// with the fds that came with it: HasFd must match, at most one fd.
    /// On every error every fd that arrived has been closed.
    ///
    /// On the runc wire (`Wire::Runc`) a HasFd message takes two records
    /// (the JSON one and the fd record, both within the same deadline); the
    /// fd record's name is checked and, for `MountFd`, becomes the source.
    /// After an error the conversation is over: a half-read message is not
    /// resumed.
    pub fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Received, TransportError> {
        #[cfg(feature = "runc-compat")]
        if let Wire::Runc(_) = self.wire {
            return self.recv_runc(deadline);
        }
        let mut guard = lock_or_fresh(&self.recv_buf);
        let buf: &mut Vec<u8> = match &mut guard {
            Ok(g) => g,
            Err(fresh) => fresh,
        };
        // Take up to SPARE_FDS extra fds so the codec reports the real count
        // (naming the message type) instead of a bare control truncation.
        let rec = self.recv_raw(buf, MAX_FDS_PER_RECORD, deadline)?;
        decode_received(&buf[..rec.len], rec.fds, &self.limits)
    }

    /// Closes the sending direction (`shutdown(SHUT_WR)`): the peer reads
    /// end-of-file after the records already sent. This is the parent's
    /// end-of-protocol signal (as runc's parent does); receiving still works.
    pub fn shutdown_write(&self) -> Result<(), TransportError> {
        match rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Write) {
            Ok(()) | Err(Errno::NOTCONN) => {
                self.write_shut.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(TransportError::io("shutdown", e)),
        }
    }

    /// Sends `bytes` as one raw record (no codec), with `fd` (if any) as one
    /// `SCM_RIGHTS` fd in the same record: the layer a second wire format
    /// (runc's JSON wire) builds on. Refuses an empty record and one larger
    /// than the limit before any system call.
    pub fn send_record(
        &self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        if self.write_shut.load(Ordering::Relaxed) {
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
        self.send_raw(bytes, fd, None)
    }

    /// Receives one raw record into `buf` (replacing its contents) with at
    /// most `max_fds` fds (clamped to [`MAX_RECV_FDS`]), waiting at most
    /// until `deadline`.
    ///
    /// `buf` grows to at most [`Limits::max_record`] bytes of capacity; a
    /// larger record is consumed and rejected ([`TransportError::Truncated`]).
    /// More fds than `max_fds` is [`TransportError::TooManyFds`] (or
    /// [`TransportError::ControlTruncated`] when they did not even fit the
    /// spare room); a zero-length read is [`TransportError::PeerClosed`].
    /// On every error every fd that arrived has been closed and `buf` is empty.
    pub fn recv_record(
        &self,
        buf: &mut Vec<u8>,
        max_fds: usize,
        deadline: Option<Instant>,
    ) -> Result<RawRecord, TransportError> {
        let max_fds = max_fds.min(MAX_RECV_FDS);
        let rec = self.recv_raw(buf, max_fds, deadline)?;
        if rec.fds.len() > max_fds {
            buf.clear();
            return Err(TransportError::TooManyFds {
                count: rec.fds.len(),
                max: max_fds,
            });
        }
        Ok(rec)
    }

    /// One record with up to `max_fds + SPARE_FDS` fds, fds not yet counted.
    fn recv_raw(
        &self,
        buf: &mut Vec<u8>,
        max_fds: usize,
        deadline: Option<Instant>,
    ) -> Result<RawRecord, TransportError> {
        let max = self.limits.max_record();
        // Taken at the first wait only: no clock read on the fast path.
        let mut start = None;
        // Without a deadline or a pidfd, block in recvmsg itself: one system
        // call per record. Otherwise poll first and never block in recvmsg.
        let polled = deadline.is_some() || self.peer_pidfd.is_some();
        let flags = if polled { libc::MSG_DONTWAIT } else { 0 };
        let ctrl_bytes = sys::ctrl_len(max_fds.min(MAX_RECV_FDS));
        let mut ctrl = sys::RecvCtrl::new();
        loop {
            if polled {
                self.wait(PollFlags::IN, deadline, &mut start)?;
            }
            let out = match sys::recvmsg(self.fd.as_fd(), buf, max, &mut ctrl, ctrl_bytes, flags) {
                Ok(out) => out,
                Err(e) => {
                    buf.clear();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Another reader took the record, or the fd is
                        // non-blocking: wait (honouring deadline and pidfd).
                        Some(libc::EAGAIN) => {
                            if !polled {
                                self.wait(PollFlags::IN, None, &mut start)?;
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
            let err = if out.len == 0 {
                Some(TransportError::PeerClosed)
            } else if out.flags & libc::MSG_TRUNC != 0 || out.len > max {
                Some(TransportError::Truncated { size: out.len, max })
            } else if out.flags & libc::MSG_CTRUNC != 0 {
                Some(TransportError::ControlTruncated)
            } else {
                out.unexpected
                    .map(|(level, kind)| TransportError::UnexpectedControl { level, kind })
            };
            if let Some(err) = err {
                buf.clear();
                return Err(err);
            }
            return Ok(RawRecord {
                len: out.len,
                fds: out.fds,
            });
        }
    }

    fn send_raw(
        &self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        // With a pidfd or a deadline, never block in sendmsg: a full socket
        // whose reader died, or stopped reading, must not hang us.
        let polled = self.peer_pidfd.is_some() || deadline.is_some();
        let flags = libc::MSG_NOSIGNAL | if polled { libc::MSG_DONTWAIT } else { 0 };
        // Taken at the first wait only: no clock read on the fast path.
        let mut start = None;
        loop {
            match sys::sendmsg(self.fd.as_fd(), bytes, fd, flags) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(TransportError::io(
                        "sendmsg",
                        io::Error::other(format!("short send: {n} of {} bytes", bytes.len())),
                    ))
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => match self.wait(PollFlags::OUT, deadline, &mut start) {
                        Err(TransportError::Timeout { waited }) => {
                            return Err(TransportError::SendTimeout { waited })
                        }
                        other => other?,
                    },
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
        &self,
        events: PollFlags,
        deadline: Option<Instant>,
        start: &mut Option<Instant>,
    ) -> Result<(), TransportError> {
        let start = *start.get_or_insert_with(Instant::now);
        loop {
            let timeout =
                deadline.map(|d| to_timespec(d.saturating_duration_since(Instant::now())));
            let mut pfds = [
                PollFd::new(&self.fd, events),
                PollFd::new(self.peer_pidfd.as_ref().unwrap_or(&self.fd), PollFlags::IN),
            ];
            let n = if self.peer_pidfd.is_some() { 2 } else { 1 };
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
