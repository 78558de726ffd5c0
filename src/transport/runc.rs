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

use std::os::fd::{BorrowedFd, OwnedFd};

use crate::schema::{MessageType, SyncMessage};
use crate::wire::runc::{self, MountShape, RuncDecodeError, RuncHeader, MAX_FD_NAME_LEN};
use crate::wire::ValidationError;

use super::{recv_raw, send_bytes, Attempt, Received, SyncSocket, TransportError};

/// The runc wire's per-socket state: a message is up to two records, and a
/// single-attempt call ([`SyncSocket::try_send`], [`SyncSocket::try_recv`])
/// may stop between them, so what is half done is kept here and the next
/// call resumes it.
#[derive(Debug, Default)]
pub(super) struct RuncState {
    /// The reused encode buffer.
    send: Vec<u8>,
    /// The reused receive buffer.
    recv: Vec<u8>,
    /// The source of the last `MountPlease` sent: the name the `MountFd`
    /// reply's fd record must carry (runc's child checks the same).
    expected_source: Option<String>,
    /// The fd record of a message whose JSON record is out: its name and a
    /// duplicate of the fd.
    pub(super) pending_send: Option<(Vec<u8>, OwnedFd)>,
    /// A HasFd JSON record whose fd record has not arrived yet, and the
    /// name that fd record must carry (for `MountFd`).
    pending_recv: Option<(RuncHeader, Option<String>)>,
}

impl SyncSocket {
    /// [`SyncSocket::send_deadline`] / [`SyncSocket::try_send`] on the runc
    /// wire. A pending fd record of an earlier message goes first. With
    /// [`Attempt::Once`] the message is either not started
    /// ([`TransportError::WouldBlock`]) or committed: its JSON record is out
    /// and its fd record, if it does not fit yet, is kept pending. With a
    /// deadline that passes between the two records, the fd record is kept
    /// pending too (the error says the send timed out; the next send or
    /// receive sends it first).
    pub(super) fn send_runc(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        shape: MountShape,
        attempt: Attempt,
    ) -> Result<(), TransportError> {
        self.flush_runc(attempt)?;
        let mut buf = std::mem::take(&mut self.runc.send);
        let out = self.send_runc_in(msg, fd, shape, attempt, &mut buf);
        self.runc.send = buf;
        out
    }

    fn send_runc_in(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
        shape: MountShape,
        attempt: Attempt,
        buf: &mut Vec<u8>,
    ) -> Result<(), TransportError> {
        buf.clear();
        // runc names the fd record after the file; the one fd-carrying
        // message runc has, MountFd, names it after the mount source. Any
        // other message with an fd is refused by the encoder (with the
        // type's own reason), whatever name it gets here.
        let name = fd.map(|_| match msg.mount_fd_info() {
            Some(info) => info.source.as_str(),
            None => runc::type_name(msg.kind().unwrap_or(MessageType::Unspecified)),
        });
        let recs = runc::encode(msg, name, shape, &self.limits, buf)
            .map_err(TransportError::RuncEncode)?;
        // Both records obey the record limit; refuse before sending either.
        if let Some(name) = recs.fd_name {
            if name.len() > self.limits.max_record() {
                return Err(TransportError::RecordTooLarge {
                    size: name.len(),
                    max: self.limits.max_record(),
                });
            }
        }
        // The duplicate a pending fd record would need, made before anything
        // is sent so its failure leaves nothing half done.
        let dup = match (recs.fd_name, fd, attempt) {
            (Some(_), Some(fd), Attempt::Once) | (Some(_), Some(fd), Attempt::Until(Some(_))) => {
                Some(
                    fd.try_clone_to_owned()
                        .map_err(|e| TransportError::io("fcntl(F_DUPFD_CLOEXEC)", e))?,
                )
            }
            _ => None,
        };
        send_bytes(self.io(), recs.json, None, attempt)?;
        if let Some(m) = msg.mount() {
            self.runc.expected_source = Some(m.source.clone());
        }
        let Some(name) = recs.fd_name else {
            return Ok(());
        };
        match send_bytes(self.io(), name, fd, attempt) {
            Ok(()) => Ok(()),
            Err(e @ (TransportError::WouldBlock | TransportError::SendTimeout { .. })) => {
                if let Some(dup) = dup {
                    self.runc.pending_send = Some((name.to_vec(), dup));
                }
                match e {
                    // The message is committed: the rest goes out later.
                    TransportError::WouldBlock => Ok(()),
                    e => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a pending fd record ([`RuncState::pending_send`]), if any.
    pub(super) fn flush_runc(&mut self, attempt: Attempt) -> Result<(), TransportError> {
        let Some((name, fd)) = self.runc.pending_send.take() else {
            return Ok(());
        };
        match send_bytes(
            self.io(),
            &name,
            Some(std::os::fd::AsFd::as_fd(&fd)),
            attempt,
        ) {
            Ok(()) => Ok(()),
            Err(e @ (TransportError::WouldBlock | TransportError::SendTimeout { .. })) => {
                self.runc.pending_send = Some((name, fd));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// [`SyncSocket::recv_deadline`] / [`SyncSocket::try_recv`] on the runc
    /// wire; `Ok(None)` only for [`Attempt::Once`].
    pub(super) fn recv_runc(
        &mut self,
        attempt: Attempt,
    ) -> Result<Option<Received>, TransportError> {
        // A reply never comes before the request's fd record is out.
        match self.flush_runc(attempt) {
            Err(TransportError::WouldBlock) => return Ok(None),
            other => other?,
        }
        let mut buf = std::mem::take(&mut self.runc.recv);
        let out = self.recv_runc_in(attempt, &mut buf);
        self.runc.recv = buf;
        out
    }

    fn recv_runc_in(
        &mut self,
        attempt: Attempt,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Received>, TransportError> {
        let (header, expected) = match self.runc.pending_recv.take() {
            Some(pending) => pending,
            None => {
                // The JSON record carries no fd: room for SPARE_FDS anyway,
                // so a few stray fds are seen (and closed) rather than
                // dropped unseen.
                let Some(rec) = recv_raw(self.io(), buf, 0, attempt, &mut Vec::new())? else {
                    return Ok(None);
                };
                // The layout this socket speaks is the one a request must have.
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
                    return Ok(Some(Received { msg, fd: None }));
                }
                let expected = match ty {
                    MessageType::MountFd => self.runc.expected_source.take(),
                    _ => None,
                };
                (header, expected)
            }
        };
        let ty = header.message_type();
        let mut rec = match recv_raw(self.io(), buf, 1, attempt, &mut Vec::new()) {
            Ok(Some(rec)) => rec,
            // Not here yet (single attempt), or not before the deadline:
            // keep the header; the next receive resumes with the fd record.
            Ok(None) => {
                self.runc.pending_recv = Some((header, expected));
                return Ok(None);
            }
            Err(e @ TransportError::Timeout { .. }) => {
                self.runc.pending_recv = Some((header, expected));
                return Err(e);
            }
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
        Ok(Some(Received {
            msg,
            fd: rec.fds.pop(),
        }))
    }
}
