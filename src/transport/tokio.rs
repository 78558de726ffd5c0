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
//! intact. On the runc wire (two records per fd-carrying message) the
//! socket keeps a half-sent or half-received message and finishes it with
//! the next call (see [`SyncSocket::try_send`] and [`SyncSocket::try_recv`]).

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::Poll;
use std::time::Instant;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::schema::SyncMessage;
use crate::wire::Limits;

use super::{Received, SyncSocket, TransportError};

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
    /// [`TransportError::Io`] when the reactor refuses the fd. The socket
    /// keeps its wire and limits.
    pub fn new(sock: SyncSocket) -> Result<Self, TransportError> {
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

    /// The wire format in use.
    pub fn wire(&self) -> super::Wire {
        self.io.get_ref().wire()
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
        mut attempt: impl FnMut(&mut SyncSocket) -> Result<Option<R>, TransportError>,
    ) -> Result<R, TransportError> {
        if optimistic {
            if let Some(r) = attempt(self.io.get_mut())? {
                return Ok(r);
            }
        }
        let (io, pidfd) = (&mut self.io, &self.pidfd);
        poll_fn(|cx| loop {
            let ready = if interest.is_readable() {
                io.poll_read_ready_mut(cx)
            } else {
                io.poll_write_ready_mut(cx)
            };
            match ready {
                Poll::Ready(Ok(mut guard)) => {
                    // `try_io` clears exactly the readiness this guard saw
                    // when the attempt finds nothing to do (no lost wake-up).
                    let r = guard.try_io(|fd| match attempt(fd.get_mut()) {
                        Ok(Some(r)) => Ok(Ok(r)),
                        Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                        Err(e) => Ok(Err(e)),
                    });
                    match r {
                        Ok(Ok(r)) => return Poll::Ready(r),
                        Ok(Err(e)) => return Poll::Ready(Err(io_err("try_io")(e))),
                        Err(_would_block) => continue,
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_err("epoll_wait")(e))),
                Poll::Pending => {
                    // Socket first: records the peer sent before it died
                    // are still delivered (and its close surfaces from
                    // recvmsg); only a quiet socket reports the death.
                    if let Some(p) = pidfd {
                        if let Poll::Ready(r) = p.poll_read_ready(cx) {
                            r.map_err(io_err("epoll_wait"))?.retain_ready();
                            return Poll::Ready(Err(TransportError::PeerDied));
                        }
                    }
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Sends `msg` with `fd` (if any), waiting (without a thread) while the
    /// peer's receive queue is full. Same codec, checks and errors as
    /// [`SyncSocket::send`].
    ///
    /// Cancel safe: dropped before the message left it has sent nothing. On
    /// the runc wire a message with an fd is two records; once the first is
    /// out the message counts as sent, and if the future is dropped while
    /// the second waits for room, the socket keeps it and sends it before
    /// anything else ([`SyncSocket::try_send`]).
    pub async fn send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), TransportError> {
        // A socket with room (the usual case) sends at once.
        self.attempt(Interest::WRITABLE, true, |s| {
            would_block_is_none(s.try_send(msg, fd))
        })
        .await?;
        while self.io.get_ref().has_pending_send() {
            self.attempt(Interest::WRITABLE, true, |s| {
                would_block_is_none(s.try_flush())
            })
            .await?;
        }
        Ok(())
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
        self.attempt(Interest::READABLE, false, SyncSocket::try_recv)
            .await
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
    pub fn shutdown_write(&mut self) -> Result<(), TransportError> {
        self.io.get_mut().shutdown_write()
    }
}

impl AsFd for AsyncSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// [`TransportError::WouldBlock`] (nothing done) as `Ok(None)`.
fn would_block_is_none(r: Result<(), TransportError>) -> Result<Option<()>, TransportError> {
    match r {
        Ok(()) => Ok(Some(())),
        Err(TransportError::WouldBlock) => Ok(None),
        Err(e) => Err(e),
    }
}
