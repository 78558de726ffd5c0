//! [`Wire::Runc`](super::Wire::Runc): runc's JSON sync wire on the same
//! socket, record layer and deadlines as the native wire, so every layer
//! above [`SyncSocket`] (the state machine, sessions) runs unchanged.
//!
//! Sending a message is one JSON record, then — only for a message with an
//! fd — a second record whose payload is the fd's name and which carries
//! exactly one `SCM_RIGHTS` fd (for `MountFd` the name is the mount source).
//! Receiving reads the JSON record (any fd on it is `unexpected-fd`, all
//! closed), decodes it and, if HasFd is set, reads the fd record within the
//! same deadline and checks it: exactly one fd, a name of 1–4095 bytes
//! without NUL and, for `MountFd`, equal to the source of the last
//! `MountPlease` this socket sent. The codec is [`crate::wire::runc`]; no
//! `unsafe` here (the syscalls are in `sys.rs`).

use std::os::fd::BorrowedFd;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use crate::schema::{MessageType, SyncMessage};
use crate::wire::runc::{self, MountShape, RuncDecodeError, MAX_FD_NAME_LEN};
use crate::wire::ValidationError;

use super::{Received, SyncSocket, TransportError};

/// The runc wire's per-socket state: its message is up to two records, so
/// senders and receivers each hold a lock across both.
#[derive(Debug, Default)]
pub(super) struct RuncState {
    /// Serializes JSON + fd record pairs; holds the reused encode buffer.
    send: Mutex<Vec<u8>>,
    /// Serializes two-record receives; holds the reused receive buffer.
    recv: Mutex<Vec<u8>>,
    /// The source of the last `MountPlease` sent: the name the `MountFd`
    /// reply's fd record must carry (runc's child checks the same).
    expected_source: Mutex<Option<String>>,
}

/// Locks `m`, waiting at most until `deadline` ([`TransportError::Timeout`]).
/// A poisoned lock is taken over: the buffers are cleared before every use.
fn lock_until<T>(
    m: &Mutex<T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'_, T>, TransportError> {
    let start = Instant::now();
    loop {
        match m.try_lock() {
            Ok(g) => return Ok(g),
            Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
        match deadline {
            None => return Ok(m.lock().unwrap_or_else(PoisonError::into_inner)),
            Some(d) if Instant::now() >= d => {
                return Err(TransportError::Timeout {
                    waited: start.elapsed(),
                })
            }
            // Another thread is between the two records of a message.
            Some(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SyncSocket {
    /// [`SyncSocket::send_deadline`] on the runc wire. If the deadline
    /// passes between the JSON record and the fd record, the message is half
    /// sent: the conversation is over either way (the error ends it).
    pub(super) fn send_runc(
        &self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        shape: MountShape,
        deadline: Option<Instant>,
    ) -> Result<(), TransportError> {
        let mut buf = lock(&self.runc.send);
        buf.clear();
        // runc names the fd record after the file; the one fd-carrying
        // message runc has, MountFd, names it after the mount source. Any
        // other message with an fd is refused by the encoder (with the
        // type's own reason), whatever name it gets here.
        let name = fd.map(|_| match msg.mount_fd_info() {
            Some(info) => info.source.as_str(),
            None => runc::type_name(msg.kind().unwrap_or(MessageType::Unspecified)),
        });
        let recs = runc::encode(msg, name, shape, &self.limits, &mut buf)
            .map_err(TransportError::RuncEncode)?;
        if let Some(name) = recs.fd_name {
            // Both records obey the record limit; refuse before sending either.
            if name.len() > self.limits.max_record() {
                return Err(TransportError::RecordTooLarge {
                    size: name.len(),
                    max: self.limits.max_record(),
                });
            }
        }
        if let Some(m) = msg.mount() {
            *lock(&self.runc.expected_source) = Some(m.source.clone());
        }
        self.send_raw(recs.json, None, deadline)?;
        if let Some(name) = recs.fd_name {
            self.send_raw(name, fd, deadline)?;
        }
        Ok(())
    }

    /// [`SyncSocket::recv_deadline`] on the runc wire.
    pub(super) fn recv_runc(&self, deadline: Option<Instant>) -> Result<Received, TransportError> {
        let mut buf = lock_until(&self.runc.recv, deadline)?;
        let buf: &mut Vec<u8> = &mut buf;
        // The JSON record carries no fd: room for SPARE_FDS anyway, so a
        // few stray fds are seen (and closed) rather than dropped unseen.
        let rec = self.recv_raw(buf, 0, deadline)?;
        let shape = match self.wire {
            super::Wire::Runc(shape) => shape,
            super::Wire::Native => MountShape::default(),
        };
        let header = runc::decode(&buf[..rec.len], shape, &self.limits)
            .map_err(TransportError::RuncDecode)?;
        let ty = header.message_type();
        if !rec.fds.is_empty() {
            // `rec.fds` is dropped (closed) with the error.
            return Err(TransportError::RuncDecode(
                ValidationError::UnexpectedFd {
                    ty,
                    flags: header.message().flags,
                }
                .into(),
            ));
        }
        if !header.has_fd() {
            let msg = header.finish(None).map_err(TransportError::RuncDecode)?;
            return Ok(Received { msg, fd: None });
        }
        let expected = match ty {
            MessageType::MountFd => lock(&self.runc.expected_source).take(),
            _ => None,
        };
        let mut rec = match self.recv_raw(buf, 1, deadline) {
            Ok(rec) => rec,
            // HasFd promised a second record; end-of-file instead is the
            // peer's violation, not an orderly close.
            Err(TransportError::PeerClosed) => {
                return Err(TransportError::RuncDecode(
                    ValidationError::MissingFd { ty }.into(),
                ))
            }
            Err(TransportError::Truncated { size, .. }) if size > MAX_FD_NAME_LEN => {
                return Err(TransportError::RuncDecode(RuncDecodeError::FdNameTooLong {
                    len: size,
                }))
            }
            Err(e) => return Err(e),
        };
        let name = runc::decode_fd_record(&buf[..rec.len], rec.fds.len(), expected.as_deref())
            .map_err(TransportError::RuncDecode)?;
        let msg = header
            .finish(Some(name))
            .map_err(TransportError::RuncDecode)?;
        Ok(Received {
            msg,
            fd: rec.fds.pop(),
        })
    }
}
