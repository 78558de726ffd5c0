//! The one path every session message takes: the state machine first, then
//! the transport, with the observer told about each message.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::transport::Wire;

use crate::schema::{MessageType, SyncMessage};
use crate::state::{Direction, Machine, State};
use crate::transport::{Received, SyncSocket, TransportError};

use super::core::deadline_after;
use super::{SessionError, Step, Traffic};

/// A callback told about every message a session sends or receives.
pub(crate) type Observer = Box<dyn FnMut(&Traffic<'_>) + Send>;

/// A sync socket and the state machine guarding it.
pub(crate) struct Link {
    pub(crate) sock: SyncSocket,
    pub(crate) machine: Machine,
    /// How long one receive, or one send into a full socket, may wait;
    /// `None` waits for ever.
    pub(crate) deadline: Option<Duration>,
    pub(crate) observer: Option<Observer>,
    /// The peer closed (or shut down its sending side): never write again.
    pub(crate) peer_closed: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("sock", &self.sock)
            .field("machine", &self.machine)
            .field("deadline", &self.deadline)
            .field("observer", &self.observer.is_some())
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

impl Link {
    pub(crate) fn new(sock: SyncSocket, machine: Machine, deadline: Option<Duration>) -> Self {
        Link {
            sock,
            machine,
            deadline,
            observer: None,
            peer_closed: false,
        }
    }

    fn observe(&mut self, direction: Direction, msg: &SyncMessage, fd: Option<BorrowedFd<'_>>) {
        if let Some(obs) = &mut self.observer {
            obs(&Traffic {
                role: self.machine.role(),
                direction,
                msg,
                fd,
            });
        }
    }

    /// Refuses any write once the connection is over.
    pub(crate) fn check_open(&self) -> Result<(), SessionError> {
        if self.peer_closed {
            return Err(SessionError::Closed {
                by: crate::Origin::Peer,
            });
        }
        if self.machine.state() == State::Closed {
            return Err(SessionError::Closed {
                by: self.machine.closed_by().unwrap_or(crate::Origin::Local),
            });
        }
        Ok(())
    }

    /// Sends `msg` (with `fd`) if the state machine allows it. The machine
    /// advances only once the record is on its way.
    pub(crate) fn send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), SessionError> {
        self.check_open()?;
        let ty = msg.kind().unwrap_or(MessageType::Unspecified);
        let mut next = self.machine;
        next.on_send(ty).map_err(SessionError::Misuse)?;
        self.observe(Direction::Send, msg, fd);
        let deadline = deadline_after(Instant::now(), self.deadline);
        match self.sock.send_deadline(msg, fd, deadline) {
            Ok(()) => {
                self.machine = next;
                Ok(())
            }
            Err(TransportError::PeerClosed) => Err(self.peer_gone(Step::Send(ty))),
            Err(source) => Err(SessionError::Transport {
                step: Step::Send(ty),
                state: self.machine.state(),
                source,
            }),
        }
    }

    /// The Error reply carrying `text`, cut to fit this socket's record
    /// limit on its wire.
    pub(crate) fn error_message(&self, text: &str) -> SyncMessage {
        let wire: Wire = self.sock.wire();
        super::core::error_reply(text, wire, self.sock.limits())
    }

    /// Receives the next message. `Ok(None)` is an orderly close by the
    /// peer; a close that breaks the protocol is [`SessionError::Violation`].
    /// A peer Error is [`SessionError::Remote`].
    pub(crate) fn recv(&mut self) -> Result<Option<Received>, SessionError> {
        if self.peer_closed || self.machine.state() == State::Closed {
            return Err(SessionError::Closed {
                by: self.machine.closed_by().unwrap_or(crate::Origin::Peer),
            });
        }
        let expected = self.machine.expected_recv();
        let deadline = deadline_after(Instant::now(), self.deadline);
        let rec = match self.sock.recv_deadline(deadline) {
            Ok(rec) => rec,
            Err(TransportError::PeerClosed) => {
                self.peer_closed = true;
                return match self.machine.on_peer_closed() {
                    Ok(()) => Ok(None),
                    Err(e) => Err(SessionError::Violation(e)),
                };
            }
            // The peer process exited where its close is orderly (after Run):
            // its end closed with it, even if a process it started still
            // holds a copy, so this is the end of the conversation.
            Err(TransportError::PeerDied) if self.machine.check_peer_close().is_ok() => {
                self.peer_closed = true;
                let _ = self.machine.on_peer_closed();
                return Ok(None);
            }
            Err(source) => {
                return Err(SessionError::Transport {
                    step: Step::Recv(expected),
                    state: self.machine.state(),
                    source,
                })
            }
        };
        self.observe(
            Direction::Recv,
            &rec.msg,
            rec.fd.as_ref().map(std::os::fd::AsFd::as_fd),
        );
        let ty = rec.msg.kind().unwrap_or(MessageType::Unspecified);
        // On a violation `rec` (and its fd) is dropped here: nothing acts on it.
        self.machine.on_recv(ty).map_err(SessionError::Violation)?;
        if ty == MessageType::Error {
            return Err(SessionError::Remote {
                message: rec.msg.error_message().unwrap_or_default().to_string(),
            });
        }
        Ok(Some(rec))
    }

    /// Receives the reply to a pending request (a close is never orderly here).
    pub(crate) fn recv_reply(&mut self) -> Result<Received, SessionError> {
        let expected = self.machine.expected_recv();
        let state = self.machine.state();
        match self.recv()? {
            Some(rec) => Ok(rec),
            None => Err(SessionError::Transport {
                step: Step::Recv(expected),
                state,
                source: TransportError::PeerClosed,
            }),
        }
    }

    /// The peer closed while we sent: records it and explains it.
    fn peer_gone(&mut self, step: Step) -> SessionError {
        let state = self.machine.state();
        self.peer_closed = true;
        match self.machine.on_peer_closed() {
            Err(e) => SessionError::Violation(e),
            Ok(()) => SessionError::Transport {
                step,
                state,
                source: TransportError::PeerClosed,
            },
        }
    }

    /// Whether the peer has closed or shut down its sending side, without
    /// reading anything: `POLLHUP` or `POLLRDHUP` on the socket right now.
    pub(crate) fn peer_hung_up(&self) -> Result<bool, SessionError> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut pfd = [PollFd::new(&self.sock, PollFlags::RDHUP)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match rustix::event::poll(&mut pfd, Some(&zero)) {
                Ok(_) => {
                    let r = pfd[0].revents();
                    return Ok(r.intersects(PollFlags::HUP | PollFlags::RDHUP));
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(SessionError::Transport {
                        step: Step::Send(MessageType::Error),
                        state: self.machine.state(),
                        source: TransportError::Io {
                            op: "poll",
                            source: e.into(),
                        },
                    })
                }
            }
        }
    }
}
