//! [`AsyncSocket`]: the sync socket for tokio (feature `tokio`).
//!
//! The same `SOCK_SEQPACKET` socket, records, fds, limits and validation as
//! [`SyncSocket`] — every system call and every check is `SyncSocket`'s own,
//! made as a single non-blocking attempt — with the waiting done by tokio's
//! reactor ([`AsyncFd`]) instead of `poll(2)`: a task waiting for its peer
//! holds no thread. Deadlines use tokio's clock; a peer pidfd
//! ([`AsyncSocket::with_peer_pidfd`]) ends any wait when the peer process
//! exits, through the same reactor.
//!
//! # Cancellation safety
//!
//! Every future here waits only for readiness, then makes one attempt that
//! either moves a whole record or nothing (a seqpacket record is sent and
//! received atomically by the kernel). Dropping a [`send`](AsyncSocket::send)
//! or [`recv`](AsyncSocket::recv) future at any await point therefore sends
//! or consumes nothing: no half-message, no leaked fd (a received fd is
//! owned by the [`Received`] the moment it exists), and the conversation is
//! intact. The runc wire (two records per fd-carrying message) is not
//! offered here for that reason: [`AsyncSocket::new`] refuses it.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::Poll;
use std::time::Instant;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::schema::SyncMessage;
use crate::wire::Limits;

use super::{Received, SyncSocket, TransportError, Wire};

/// One end of the sync socket, driven by tokio. See the
/// [module documentation](self) for cancellation safety.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use procsync::schema::SyncMessage;
/// use procsync::transport::{tokio::AsyncSocket, SyncSocket};
///
/// let (a, b) = SyncSocket::pair()?;
/// let (mut a, mut b) = (AsyncSocket::new(a)?, AsyncSocket::new(b)?);
/// a.send(&SyncMessage::ready(), None).await?;
/// assert_eq!(b.recv().await?.msg, SyncMessage::ready());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncSocket {
    io: AsyncFd<SyncSocket>,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io { op, source }
}

impl AsyncSocket {
    /// Registers `sock` with the current tokio runtime's reactor.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as tokio's `AsyncFd` does).
    ///
    /// # Errors
    ///
    /// [`TransportError::Io`] when the reactor refuses the fd, or (kind
    /// `Unsupported`) for a socket on the runc wire: the async socket speaks
    /// the native wire only, since runc's two-record messages could be cut
    /// in half by a cancelled future. The socket keeps its limits.
    pub fn new(sock: SyncSocket) -> Result<Self, TransportError> {
        if sock.wire() != Wire::Native {
            return Err(TransportError::Io {
                op: "AsyncSocket::new",
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the async socket speaks the native wire only",
                ),
            });
        }
        // SAFETY: a SyncSocket owns its fd (an OwnedFd it closes only when
        // dropped) and always returns that same fd from as_raw_fd, so the fd
        // stays open and the same for as long as the AsyncFd owns it.
        let io = unsafe {
            AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| io_err("epoll_ctl")(e.into_parts().1))?;
        Ok(AsyncSocket { io, pidfd: None })
    }

    /// Registers the peer process's pidfd: from now on every wait ends with
    /// [`TransportError::PeerDied`] once the peer exits, even if another
    /// process still holds the peer's end. Records the peer sent before
    /// dying are still delivered first.
    pub fn with_peer_pidfd(mut self, pidfd: OwnedFd) -> Result<Self, TransportError> {
        // SAFETY: an OwnedFd owns its fd and always returns it from
        // as_raw_fd; it is closed only when the AsyncFd drops it.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|e| io_err("epoll_ctl")(e.into_parts().1))?;
        self.pidfd = Some(pidfd);
        Ok(self)
    }

    /// The blocking socket underneath.
    pub fn get_ref(&self) -> &SyncSocket {
        self.io.get_ref()
    }

    /// Deregisters from the reactor and returns the blocking socket (the
    /// peer pidfd, if any, is closed).
    pub fn into_inner(self) -> SyncSocket {
        self.io.into_inner()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.io.get_ref().limits()
    }

    /// Makes `attempt` (one non-blocking try: `Ok(None)` is "not ready,
    /// nothing done") until it succeeds or fails, waiting in between for the
    /// reactor to report the socket ready for `interest` — or the peer's
    /// death. `optimistic` tries once before the first wait.
    async fn attempt<R>(
        &mut self,
        interest: Interest,
        optimistic: bool,
        mut attempt: impl FnMut(&SyncSocket) -> Result<Option<R>, TransportError>,
    ) -> Result<R, TransportError> {
        if optimistic {
            if let Some(r) = attempt(self.io.get_ref())? {
                return Ok(r);
            }
        }
        let (io, pidfd) = (&self.io, &self.pidfd);
        loop {
            let mut guard = poll_fn(|cx| {
                // Socket first: records the peer sent before it died are
                // still delivered (and its close surfaces from recvmsg).
                let r = if interest.is_readable() {
                    io.poll_read_ready(cx)
                } else {
                    io.poll_write_ready(cx)
                };
                if let Poll::Ready(r) = r {
                    return Poll::Ready(r.map_err(io_err("epoll_wait")));
                }
                if let Some(p) = pidfd {
                    if let Poll::Ready(r) = p.poll_read_ready(cx) {
                        r.map_err(io_err("epoll_wait"))?.retain_ready();
                        return Poll::Ready(Err(TransportError::PeerDied));
                    }
                }
                Poll::Pending
            })
            .await?;
            // `try_io` clears exactly the readiness this guard saw when the
            // attempt finds nothing to do (no lost wake-up).
            let r = guard.try_io(|fd| match attempt(fd.get_ref()) {
                Ok(Some(r)) => Ok(Ok(r)),
                Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Ok(Err(e)),
            });
            if let Ok(Ok(r)) = r {
                return r;
            }
        }
    }

    /// Sends `msg` as one record with `fd` (if any), waiting (without a
    /// thread) while the peer's receive queue is full. Same codec, checks and
    /// errors as [`SyncSocket::send`].
    ///
    /// Cancel safe: dropped at its await point it has sent nothing.
    pub async fn send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        // A socket with room (the usual case) sends at once.
        self.attempt(Interest::WRITABLE, true, |s| {
            try_send(s, msg, fd).map(|sent| sent.then_some(()))
        })
        .await
    }

    /// [`send`](Self::send), waiting at most until `deadline`
    /// ([`TransportError::SendTimeout`]; nothing was sent). `None` waits
    /// without a deadline.
    pub async fn send_deadline(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        let Some(deadline) = deadline else {
            return self.send(msg, fd).await;
        };
        let start = Instant::now();
        match ::tokio::time::timeout_at(deadline.into(), self.send(msg, fd)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::SendTimeout {
                waited: start.elapsed(),
            }),
        }
    }

    /// Receives one message: decoded and validated with the fds that came
    /// with it, exactly as [`SyncSocket::recv`] (same limits, same errors,
    /// every fd closed on every error path).
    ///
    /// Cancel safe: dropped at its await point it has consumed nothing.
    pub async fn recv(&mut self) -> Result<Received, TransportError> {
        self.attempt(Interest::READABLE, false, try_recv).await
    }

    /// [`recv`](Self::recv), waiting at most until `deadline`
    /// ([`TransportError::Timeout`]; a record already queued is still
    /// taken). `None` waits without a deadline.
    pub async fn recv_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Received, TransportError> {
        let Some(deadline) = deadline else {
            return self.recv().await;
        };
        let start = Instant::now();
        match ::tokio::time::timeout_at(deadline.into(), self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                waited: start.elapsed(),
            }),
        }
    }

    /// Closes the sending direction (`shutdown(SHUT_WR)`), as
    /// [`SyncSocket::shutdown_write`]. Never waits.
    pub fn shutdown_write(&self) -> Result<(), TransportError> {
        self.io.get_ref().shutdown_write()
    }
}

impl AsFd for AsyncSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// One non-blocking attempt to send: `Ok(false)` when the peer's queue is
/// full (nothing sent).
fn try_send(
    sock: &SyncSocket,
    msg: &SyncMessage,
    fd: Option<BorrowedFd<'_>>,
) -> Result<bool, TransportError> {
    // A deadline of "now" makes SyncSocket try exactly once without
    // blocking (MSG_DONTWAIT) and report a full queue as SendTimeout.
    match sock.send_deadline(msg, fd, Some(Instant::now())) {
        Ok(()) => Ok(true),
        Err(TransportError::SendTimeout { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One non-blocking attempt to receive: `Ok(None)` when no record is queued
/// (nothing consumed).
fn try_recv(sock: &SyncSocket) -> Result<Option<Received>, TransportError> {
    // A deadline of "now" takes a queued record and never blocks.
    match sock.recv_deadline(Some(Instant::now())) {
        Ok(rec) => Ok(Some(rec)),
        Err(TransportError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
