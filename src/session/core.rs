//! The sans-IO session core shared by every driver — the blocking
//! [`Child`](super::Child) and [`Parent`](super::Parent) and, with the
//! `tokio` feature, the async ones — in the style of quinn-proto: the core
//! decides what to send, what a received message means and what to reply;
//! the drivers do the I/O (send, receive, shut down, call the handler) and
//! hand back what happened. No system calls and no clock reads here: every
//! instant comes in from the driver.
//!
//! The parent's conversation is a small loop each driver runs:
//!
//! ```text
//! loop {
//!     match core.poll() {
//!         Action::Recv         => core.on_recv(socket.recv(core.recv_deadline(now)), now),
//!         Action::Handle(call) => core.on_handled(handler(call), now),
//!         Action::Send         => core.on_sent(socket.send(core.outgoing(), deadline)),
//!         Action::Shutdown     => core.on_shutdown(socket.shutdown_write()),
//!         Action::Done(r)      => return r,
//!     }
//! }
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::policy::MountPolicy;
use crate::schema::{MessageType, Mount, MountSourceKind, SeccompTransfer, SyncMessage};
use crate::state::{Direction, Machine, State};
use crate::transport::{Received, TransportError, Wire};
use crate::wire::{native, DecodeError, Limits, ValidationError};
use crate::Origin;

use super::parent::{refusal_text, ChildFd, HandlerError, ParentHandler, SeccompFd, ServeReport};
use super::{error_chain, MountSource, SessionError, Step, Traffic};

/// What a truncated Error text ends with, so a reader sees it was cut.
pub const TRUNCATION_MARK: &str = " […truncated]";

/// A callback told about every message a session sends or receives.
pub(crate) type Observer = Box<dyn FnMut(&Traffic<'_>) + Send>;

/// `now + limit`, or `None` (no deadline) when that is past the end of
/// time: a deadline too far away to represent is no deadline.
pub(crate) fn deadline_after(now: Instant, limit: Option<Duration>) -> Option<Instant> {
    limit.and_then(|d| now.checked_add(d))
}

/// The state machine and the bookkeeping around it that both roles share:
/// the per-message deadline, the observer, whether the peer has closed, and
/// the wire and limits (for fitting Error texts).
pub(crate) struct LinkCore {
    pub(crate) machine: Machine,
    /// How long one receive, or one send into a full socket, may wait;
    /// `None` waits for ever.
    pub(crate) deadline: Option<Duration>,
    pub(crate) observer: Option<Observer>,
    /// The peer closed (or shut down its sending side): never write again.
    peer_closed: bool,
    wire: Wire,
    limits: Limits,
}

impl std::fmt::Debug for LinkCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCore")
            .field("machine", &self.machine)
            .field("deadline", &self.deadline)
            .field("observer", &self.observer.is_some())
            .field("peer_closed", &self.peer_closed)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

/// A send the machine has allowed; commit it with [`LinkCore::end_send`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(crate) struct SendTicket {
    ty: MessageType,
    next: Machine,
}

impl LinkCore {
    pub(crate) fn new(
        machine: Machine,
        deadline: Option<Duration>,
        wire: Wire,
        limits: Limits,
    ) -> Self {
        LinkCore {
            machine,
            deadline,
            observer: None,
            peer_closed: false,
            wire,
            limits,
        }
    }

    /// The deadline of a wait starting at `now`.
    pub(crate) fn deadline_from(&self, now: Instant) -> Option<Instant> {
        deadline_after(now, self.deadline)
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
            return Err(SessionError::Closed { by: Origin::Peer });
        }
        if self.machine.state() == State::Closed {
            return Err(SessionError::Closed {
                by: self.machine.closed_by().unwrap_or(Origin::Local),
            });
        }
        Ok(())
    }

    /// Before sending `msg` (with `fd`): the machine must allow it. The
    /// observer is told; the machine advances only in [`end_send`](Self::end_send).
    pub(crate) fn begin_send(
        &mut self,
        msg: &SyncMessage,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<SendTicket, SessionError> {
        self.check_open()?;
        let ty = msg.kind().unwrap_or(MessageType::Unspecified);
        let mut next = self.machine;
        next.on_send(ty).map_err(SessionError::Misuse)?;
        self.observe(Direction::Send, msg, fd);
        Ok(SendTicket { ty, next })
    }

    /// The transport's verdict on the send `ticket` allowed.
    pub(crate) fn end_send(
        &mut self,
        ticket: SendTicket,
        result: Result<(), TransportError>,
    ) -> Result<(), SessionError> {
        match result {
            Ok(()) => {
                self.machine = ticket.next;
                Ok(())
            }
            Err(TransportError::PeerClosed) => Err(self.peer_gone(Step::Send(ticket.ty))),
            Err(source) => Err(SessionError::Transport {
                step: Step::Send(ticket.ty),
                state: self.machine.state(),
                source,
            }),
        }
    }

    /// Before a receive: nothing more can come once the connection is over.
    pub(crate) fn begin_recv(&self) -> Result<(), SessionError> {
        if self.peer_closed || self.machine.state() == State::Closed {
            return Err(SessionError::Closed {
                by: self.machine.closed_by().unwrap_or(Origin::Peer),
            });
        }
        Ok(())
    }

    /// What a receive brought. `Ok(None)` is an orderly close by the peer; a
    /// close that breaks the protocol is [`SessionError::Violation`], a peer
    /// Error is [`SessionError::Remote`]. A rejected message's fd is closed.
    pub(crate) fn end_recv(
        &mut self,
        result: Result<Received, TransportError>,
    ) -> Result<Option<Received>, SessionError> {
        let rec = match result {
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
                    step: Step::Recv(self.machine.expected_recv()),
                    state: self.machine.state(),
                    source,
                })
            }
        };
        self.observe(Direction::Recv, &rec.msg, rec.fd.as_ref().map(AsFd::as_fd));
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

    /// [`end_recv`](Self::end_recv) for the reply to a pending request: a
    /// close is never orderly here.
    pub(crate) fn end_recv_reply(
        &mut self,
        result: Result<Received, TransportError>,
    ) -> Result<Received, SessionError> {
        let expected = self.machine.expected_recv();
        let state = self.machine.state();
        match self.end_recv(result)? {
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

    /// The Error message carrying `text`, cut to fit this link's record limit.
    pub(crate) fn error_message(&self, text: &str) -> SyncMessage {
        error_reply(text, self.wire, &self.limits)
    }

    /// Before `fail`: the connection must be open and Error allowed here
    /// (a terminal state refuses: that is the caller's misuse). The driver
    /// then checks, without blocking, whether the peer hung up.
    pub(crate) fn check_fail(&self) -> Result<(), SessionError> {
        self.check_open()?;
        let mut probe = self.machine;
        probe
            .on_send(MessageType::Error)
            .map_err(SessionError::Misuse)?;
        Ok(())
    }

    /// The result of the driver's non-blocking "did the peer hang up?"
    /// check before `fail` writes: a hung-up peer ends the conversation and
    /// nothing is written (runc issue #4171).
    pub(crate) fn on_hung_up_check(
        &mut self,
        hung_up: Result<bool, TransportError>,
    ) -> Result<(), SessionError> {
        match hung_up {
            Ok(false) => Ok(()),
            Ok(true) => {
                self.peer_closed = true;
                // Closed either way; whether it was orderly does not matter now.
                let _ = self.machine.on_peer_closed();
                Err(SessionError::Closed { by: Origin::Peer })
            }
            Err(source) => Err(SessionError::Transport {
                step: Step::Send(MessageType::Error),
                state: self.machine.state(),
                source,
            }),
        }
    }

    /// The local side closes: always; `Err` when that breaks the protocol.
    pub(crate) fn close(&mut self) -> Result<(), SessionError> {
        let orderly = self.machine.check_close();
        self.machine.on_close();
        orderly.map_err(SessionError::Misuse)
    }

    /// The conversation was abandoned mid-way (a cancelled async call): it
    /// is over, and every later call says so.
    #[allow(dead_code)] // used by the async driver (feature `tokio`)
    pub(crate) fn abandon(&mut self) {
        self.machine.on_close();
    }
}

/// The child's checks on a MountFd reply to `mount`: the same source, a
/// kind that can carry what was asked (an id-mapped request needs OpenTree),
/// and its fd. On every error the reply's fd is closed.
pub(crate) fn mount_reply(
    link: &LinkCore,
    mount: &Mount,
    rec: Received,
) -> Result<MountSource, SessionError> {
    // The machine accepted it and the codec validated it: a MountFd with
    // its info and exactly one fd.
    let info = rec.msg.mount_fd_info().cloned().unwrap_or_default();
    if info.source != mount.source {
        return Err(SessionError::SourceMismatch {
            requested: mount.source.clone(),
            got: info.source,
        });
    }
    let kind = MountSourceKind::try_from(info.kind).unwrap_or(MountSourceKind::Unspecified);
    // An id-mapped request needs a detached mount to carry the mapping: a
    // plain O_PATH fd (what a parent that does not know id-mapped mounts
    // sends) would silently drop it. `rec.fd` closes here.
    if mount.id_mapping.is_some() && kind != MountSourceKind::OpenTree {
        return Err(SessionError::SourceDowngraded {
            mount_source: mount.source.clone(),
            got: kind,
        });
    }
    match rec.fd {
        Some(fd) => Ok(MountSource { fd, kind }),
        // Unreachable past the codec (MountFd requires an fd); kept total.
        None => Err(SessionError::Transport {
            step: Step::Recv(link.machine.expected_recv()),
            state: link.machine.state(),
            source: TransportError::Decode(DecodeError::Invalid(ValidationError::MissingFd {
                ty: MessageType::MountFd,
            })),
        }),
    }
}

/// One request the parent's handler must serve, as the core hands it to a
/// driver ([`Action::Handle`]).
#[derive(Debug)]
pub(crate) enum Request {
    /// An accepted MountPlease (the policy allowed it).
    Mount(Box<Mount>),
    /// Hooks.
    Hooks,
    /// Ready.
    Ready,
    /// Seccomp, with the fd or the child's fd number.
    Seccomp(SeccompArg),
}

/// The seccomp fd as it arrived, before the driver lends it to a handler.
#[derive(Debug)]
pub(crate) enum SeccompArg {
    Attached(OwnedFd),
    ChildFd(RawFd),
}

impl SeccompArg {
    /// The handler's view; a child fd number is copied through `pidfd`.
    pub(crate) fn lend(self, pidfd: Option<BorrowedFd<'_>>) -> SeccompFd<'_> {
        match self {
            SeccompArg::Attached(fd) => SeccompFd::Attached(fd),
            SeccompArg::ChildFd(number) => SeccompFd::ChildFd(ChildFd::new(number, pidfd)),
        }
    }
}

/// A handler call the core asks a driver to make: tell the handler `due`
/// ([`ParentHandler::set_deadline`]), call it for `request`, and pass the
/// result to [`ParentCore::on_handled`].
#[derive(Debug)]
pub(crate) struct HandlerCall {
    pub(crate) request: Request,
    pub(crate) due: Option<Instant>,
}

/// What a handler produced: a mount source for a MountPlease, nothing for
/// the other requests.
pub(crate) type HandlerOutcome = Result<Option<MountSource>, HandlerError>;

/// Calls the blocking `handler` for `call`: the one dispatch every driver
/// that runs a [`ParentHandler`] uses.
pub(crate) fn call_handler<H: ParentHandler + ?Sized>(
    handler: &mut H,
    call: HandlerCall,
    pidfd: Option<BorrowedFd<'_>>,
) -> HandlerOutcome {
    handler.set_deadline(call.due);
    match call.request {
        Request::Mount(m) => handler.mount(&m).map(Some),
        Request::Hooks => handler.hooks().map(|()| None),
        Request::Ready => handler.ready().map(|()| None),
        Request::Seccomp(arg) => handler.seccomp(arg.lend(pidfd)).map(|()| None),
    }
}

/// What the parent's driver does next ([`ParentCore::poll`]).
#[derive(Debug)]
pub(crate) enum Action {
    /// Receive one message (deadline: [`ParentCore::recv_deadline`]) and
    /// pass the result to [`ParentCore::on_recv`].
    Recv,
    /// Run the handler and pass the result to [`ParentCore::on_handled`].
    Handle(HandlerCall),
    /// Send [`ParentCore::outgoing`] (deadline: [`ParentCore::send_deadline`])
    /// and pass the result to [`ParentCore::on_sent`].
    Send,
    /// Shut down the write side and pass the result to
    /// [`ParentCore::on_shutdown`].
    Shutdown,
    /// The conversation is over: `serve` returns this.
    Done(Result<ServeReport, SessionError>),
}

/// What follows a send.
#[derive(Debug)]
enum After {
    /// The reply to `request` went out: count it, receive the next request.
    Replied(MessageType),
    /// An Error reply went out (or could not): the conversation ends with
    /// this error.
    Fail(SessionError),
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per conversation, never moved in a hot loop
enum Phase {
    /// Not serving (before `start`, or after `Done`).
    Idle,
    Recv,
    /// The handler is to be called for `request` (taken by `poll`), the
    /// reply is due at `due`; `mount_source` is what a MountFd reply names.
    Handling {
        ty: MessageType,
        request: Option<Request>,
        due: Option<Instant>,
        mount_source: Option<String>,
    },
    /// A message to send (its fd owned until sent), then what follows.
    Sending {
        msg: SyncMessage,
        fd: Option<OwnedFd>,
        after: After,
    },
    Shutdown(Result<(), SessionError>),
    Done(Result<(), SessionError>),
}

/// The parent's conversation: runc's `parseSync` loop as a sans-IO machine
/// (state machine, mount policy, handler deadline, Error replies).
pub(crate) struct ParentCore {
    pub(crate) link: LinkCore,
    pub(crate) policy: Box<dyn MountPolicy + Send>,
    report: ServeReport,
    phase: Phase,
}

impl std::fmt::Debug for ParentCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentCore")
            .field("link", &self.link)
            .field("report", &self.report)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl ParentCore {
    pub(crate) fn new(link: LinkCore, policy: Box<dyn MountPolicy + Send>) -> Self {
        ParentCore {
            link,
            policy,
            report: ServeReport::default(),
            phase: Phase::Idle,
        }
    }

    /// Starts a `serve`: refused once the conversation is over.
    pub(crate) fn start(&mut self) -> Result<(), SessionError> {
        self.link.check_open()?;
        self.report = ServeReport::default();
        self.phase = Phase::Recv;
        Ok(())
    }

    /// Whether a `serve` is under way (started and not yet done).
    #[allow(dead_code)] // used by the async driver (feature `tokio`)
    pub(crate) fn serving(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// What the driver does next.
    pub(crate) fn poll(&mut self) -> Action {
        match &mut self.phase {
            Phase::Idle => Action::Done(Err(SessionError::Closed { by: Origin::Local })),
            Phase::Recv => Action::Recv,
            Phase::Handling { request, due, .. } => match request.take() {
                Some(request) => Action::Handle(HandlerCall { request, due: *due }),
                // Handed out already: the driver owes `on_handled`.
                None => unreachable!("poll() while a handler call is out"),
            },
            Phase::Sending { .. } => Action::Send,
            Phase::Shutdown(_) => Action::Shutdown,
            Phase::Done(_) => {
                let Phase::Done(r) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                    unreachable!()
                };
                Action::Done(r.map(|()| self.report))
            }
        }
    }

    /// The deadline of the receive [`Action::Recv`] asks for, starting `now`.
    pub(crate) fn recv_deadline(&self, now: Instant) -> Option<Instant> {
        self.link.deadline_from(now)
    }

    /// The deadline of the send [`Action::Send`] asks for, starting `now`.
    pub(crate) fn send_deadline(&self, now: Instant) -> Option<Instant> {
        self.link.deadline_from(now)
    }

    /// What [`Action::Send`] sends.
    pub(crate) fn outgoing(&self) -> (&SyncMessage, Option<BorrowedFd<'_>>) {
        match &self.phase {
            Phase::Sending { msg, fd, .. } => (msg, fd.as_ref().map(AsFd::as_fd)),
            _ => unreachable!("outgoing() outside Action::Send"),
        }
    }

    /// Checks the outgoing message against the machine (and tells the
    /// observer) just before the driver sends it.
    pub(crate) fn begin_send(&mut self) -> Result<SendTicket, SessionError> {
        let Phase::Sending { msg, fd, .. } = &self.phase else {
            unreachable!("begin_send() outside Action::Send")
        };
        self.link.begin_send(msg, fd.as_ref().map(AsFd::as_fd))
    }

    fn fail(&mut self, e: SessionError) {
        self.phase = Phase::Shutdown(Err(e));
    }

    /// Queues the Error reply `text`, after which the conversation ends with `e`.
    fn reply_error(&mut self, text: &str, e: SessionError) {
        let msg = self.link.error_message(text);
        self.phase = Phase::Sending {
            msg,
            fd: None,
            after: After::Fail(e),
        };
    }

    fn handler_failed(&mut self, request: MessageType, e: HandlerError) {
        let text = format!("{request} failed in the parent: {}", error_chain(&e));
        self.reply_error(&text, SessionError::Handler { request, source: e });
    }

    /// A receive finished at `now` with `result`.
    pub(crate) fn on_recv(&mut self, result: Result<Received, TransportError>, now: Instant) {
        let rec = match self.link.end_recv(result) {
            Ok(Some(rec)) => rec,
            Ok(None) => return self.phase = Phase::Shutdown(Ok(())),
            Err(e) => return self.fail(e),
        };
        // The reply is due one per-message deadline after the request arrived.
        let due = self.link.deadline_from(now);
        let ty = rec.msg.kind().unwrap_or(MessageType::Unspecified);
        let (request, mount_source) = match ty {
            MessageType::MountPlease => {
                let req = rec.msg.mount().cloned().unwrap_or_default();
                if let Err(refusal) = self.policy.check(&req) {
                    return self
                        .reply_error(&refusal_text(&refusal), SessionError::MountRefused(refusal));
                }
                let source = req.source.clone();
                (Request::Mount(Box::new(req)), Some(source))
            }
            MessageType::Hooks => (Request::Hooks, None),
            MessageType::Ready => (Request::Ready, None),
            MessageType::Seccomp => match (rec.msg.seccomp_transfer(), rec.fd) {
                (Some(SeccompTransfer::ChildFd(n)), _) => {
                    (Request::Seccomp(SeccompArg::ChildFd(n)), None)
                }
                (_, Some(fd)) => (Request::Seccomp(SeccompArg::Attached(fd)), None),
                // The codec guarantees an fd with Attached; kept total.
                (_, None) => {
                    let e =
                        HandlerError::new("Seccomp came with neither an fd nor a child fd number");
                    return self.handler_failed(ty, e);
                }
            },
            // The machine admits only the child's requests (and Error,
            // which `end_recv` turned into Remote).
            _ => {
                let e = HandlerError::new(format!("unexpected {ty} from the child"));
                return self.handler_failed(ty, e);
            }
        };
        self.phase = Phase::Handling {
            ty,
            request: Some(request),
            due,
            mount_source,
        };
    }

    /// The handler returned `outcome` at `now`. An error, or a result that
    /// came after the reply was due, is answered with an Error reply (a late
    /// result is dropped: an fd in it is closed).
    pub(crate) fn on_handled(&mut self, outcome: HandlerOutcome, now: Instant) {
        let Phase::Handling {
            ty,
            due,
            mount_source,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!("on_handled() without a handler call out")
        };
        let source = match outcome {
            Ok(source) => source,
            Err(e) => return self.handler_failed(ty, e),
        };
        if let Some(due) = due.filter(|due| now > *due) {
            drop(source);
            self.handler_overran(ty, now - due);
            return;
        }
        let (msg, fd) = match (ty, source) {
            (MessageType::MountPlease, Some(source)) => (
                SyncMessage::mount_fd(source.kind, mount_source.unwrap_or_default()),
                Some(source.fd),
            ),
            (MessageType::MountPlease, None) => {
                let e = HandlerError::new("the handler returned no mount source");
                return self.handler_failed(ty, e);
            }
            (MessageType::Hooks, _) => (SyncMessage::hooks_done(), None),
            (MessageType::Ready, _) => (SyncMessage::run(), None),
            (_, _) => (SyncMessage::seccomp_done(), None),
        };
        self.phase = Phase::Sending {
            msg,
            fd,
            after: After::Replied(ty),
        };
    }

    /// The handler did not return by `due` (the driver gave up waiting, or
    /// it returned late): the child gets an Error reply.
    pub(crate) fn handler_overran(&mut self, request: MessageType, overrun: Duration) {
        self.reply_error(
            &format!(
                "{request} failed in the parent: the handler overran its deadline by {overrun:?}"
            ),
            SessionError::HandlerOverran { request, overrun },
        );
    }

    /// The type of the request whose handler call is out, if one is.
    #[allow(dead_code)] // used by the async driver (feature `tokio`)
    pub(crate) fn handling(&self) -> Option<MessageType> {
        match &self.phase {
            Phase::Handling { ty, .. } => Some(*ty),
            _ => None,
        }
    }

    /// The driver gave up on a handler that did not return by `now`.
    #[allow(dead_code)] // used by the async driver (feature `tokio`)
    pub(crate) fn on_handler_timeout(&mut self, due: Instant, now: Instant) {
        if let Phase::Handling { ty, .. } = self.phase {
            self.handler_overran(ty, now.saturating_duration_since(due));
        }
    }

    /// The send of [`outgoing`](Self::outgoing) (allowed by `ticket`, or
    /// refused by the machine) finished with `result`.
    pub(crate) fn on_sent(
        &mut self,
        sent: Result<(SendTicket, Result<(), TransportError>), SessionError>,
    ) {
        let Phase::Sending { msg, after, .. } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!("on_sent() outside Action::Send")
        };
        let result = sent.and_then(|(ticket, r)| self.link.end_send(ticket, r));
        match (after, result) {
            (After::Replied(request), Ok(())) => {
                match request {
                    MessageType::MountPlease => self.report.mounts += 1,
                    MessageType::Hooks => self.report.hooks = true,
                    MessageType::Ready => self.report.ready = true,
                    _ => self.report.seccomp = true,
                }
                self.phase = Phase::Recv;
            }
            // This side cannot send what the handler produced (the codec
            // refuses it, for example a MountFd of kind Unspecified): the
            // child still gets an answer, an Error reply.
            (After::Replied(request), Err(e @ SessionError::Transport { .. }))
                if e.origin() == Origin::Local =>
            {
                let reply = msg.kind().unwrap_or(MessageType::Unspecified);
                let cause = std::error::Error::source(&e)
                    .map(error_chain)
                    .unwrap_or_default();
                self.reply_error(
                    &format!("{request} failed in the parent: cannot send {reply}: {cause}"),
                    e,
                );
            }
            (After::Replied(_), Err(e)) => self.fail(e),
            // Sending the Error reply is best effort: a child that already
            // closed or died cannot be told, and the refusal or failure is
            // the error that matters.
            (After::Fail(e), _) => self.fail(e),
        }
    }

    /// The write side was shut down (every path ends here).
    pub(crate) fn on_shutdown(&mut self, result: Result<(), TransportError>) {
        let Phase::Shutdown(outcome) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            unreachable!("on_shutdown() outside Action::Shutdown")
        };
        self.link.machine.on_close();
        self.phase = Phase::Done(match (outcome, result) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(source)) => Err(SessionError::Transport {
                step: Step::Shutdown,
                state: State::Closed,
                source,
            }),
            (Ok(()), Ok(())) => Ok(()),
        });
    }

    /// A `serve` was abandoned mid-way (its future dropped): the
    /// conversation is over; an fd waiting to be sent is closed.
    #[allow(dead_code)] // used by the async driver (feature `tokio`)
    pub(crate) fn abandon(&mut self) {
        self.phase = Phase::Idle;
        self.link.abandon();
    }
}

/// Whether `msg` (sent without an fd) fits one record of `wire` under `limits`,
/// as the wire's own encoder computes it.
#[cfg_attr(not(feature = "runc-compat"), allow(unused_variables, clippy::ptr_arg))]
fn fits(msg: &SyncMessage, wire: Wire, limits: &Limits, scratch: &mut Vec<u8>) -> bool {
    match wire {
        Wire::Native => native::encoded_len(msg, false) <= limits.max_record(),
        #[cfg(feature = "runc-compat")]
        Wire::Runc(shape) => {
            scratch.clear();
            crate::wire::runc::encode(msg, None, shape, limits, scratch).is_ok()
        }
    }
}

/// The text an Error carries when the caller gave none (an empty Error
/// is not valid on the native wire).
pub const UNSPECIFIED_ERROR: &str = "unspecified error";

/// An Error message carrying `text`, cut (at a UTF-8 boundary, ending with
/// [`TRUNCATION_MARK`]) so that its record fits `limits` on `wire`: a long
/// refusal or handler text built from a 4096-byte path, or any text under a
/// small record limit, still reaches the peer instead of failing to encode.
///
/// The rules are PROTOCOL §11's, the same in both languages: an empty text
/// becomes [`UNSPECIFIED_ERROR`]; a text whose record fits is sent as it
/// is; otherwise the longest prefix at a character boundary that fits
/// together with the mark, and the mark. A limit with no room for the mark
/// plus four bytes (one character of any size) gets the longest prefix
/// that fits without the mark: every limit has room for one character.
pub fn error_reply(text: &str, wire: Wire, limits: &Limits) -> SyncMessage {
    let text = if text.is_empty() {
        UNSPECIFIED_ERROR
    } else {
        text
    };
    let mut scratch = Vec::new();
    let msg = SyncMessage::error(text);
    if fits(&msg, wire, limits, &mut scratch) {
        return msg;
    }
    let room_for_mark = fits(
        &SyncMessage::error(format!("xxxx{TRUNCATION_MARK}")),
        wire,
        limits,
        &mut scratch,
    );
    let mark = if room_for_mark { TRUNCATION_MARK } else { "" };
    let with_cut = |cut: usize| {
        let mut t = String::with_capacity(cut + mark.len());
        t.push_str(&text[..cut]);
        t.push_str(mark);
        SyncMessage::error(t)
    };
    // The largest char-boundary prefix that fits with the mark. The encoded
    // size grows with the prefix, so binary search over byte offsets, each
    // rounded down to a char boundary.
    let (mut lo, mut hi) = (0usize, text.len());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(
            &with_cut(floor_char_boundary(text, mid)),
            wire,
            limits,
            &mut scratch,
        ) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let lo = floor_char_boundary(text, lo);
    let msg = with_cut(lo);
    if lo > 0 && fits(&msg, wire, limits, &mut scratch) {
        msg
    } else {
        // Not reachable: limits are at least 16 bytes, room for one
        // character of any size on either wire.
        SyncMessage::error("?")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(m: &SyncMessage) -> &str {
        m.error_message().unwrap()
    }

    #[test]
    fn short_texts_are_untouched_and_long_ones_cut_to_fit_at_char_boundaries() {
        let limits = Limits::with_max_record(128);
        assert_eq!(
            text_of(&error_reply("short", Wire::Native, &limits)),
            "short"
        );
        for unit in ["a", "é", "€", "𝄞", "a\u{0}\"\\é"] {
            let long = unit.repeat(5000);
            for max in [16, 17, 64, 100, 128, 4096, 65536] {
                let limits = Limits::with_max_record(max);
                let m = error_reply(&long, Wire::Native, &limits);
                let t = text_of(&m);
                assert!(native::encoded_len(&m, false) <= limits.max_record());
                assert!(!t.is_empty(), "{max}");
                if t != long && max >= 32 {
                    assert!(t.ends_with(TRUNCATION_MARK), "{max}: {t:?}");
                    let kept = &t[..t.len() - TRUNCATION_MARK.len()];
                    assert!(long.starts_with(kept));
                    // Maximal: one more character would not fit.
                    let next =
                        &long[..kept.len() + long[kept.len()..].chars().next().unwrap().len_utf8()];
                    let bigger = SyncMessage::error(format!("{next}{TRUNCATION_MARK}"));
                    assert!(native::encoded_len(&bigger, false) > limits.max_record());
                }
            }
        }
    }

    #[cfg(feature = "runc-compat")]
    #[test]
    fn runc_texts_are_cut_by_the_escaped_size() {
        use crate::wire::runc::{encode, MountShape};
        // Control characters expand sixfold in JSON (\u0001).
        let long = "\u{1}é/".repeat(20000);
        for max in [64, 200, 4096, 65536] {
            let limits = Limits::with_max_record(max);
            let wire = Wire::Runc(MountShape::V1_2);
            let m = error_reply(&long, wire, &limits);
            let mut out = Vec::new();
            let recs = encode(&m, None, MountShape::V1_2, &limits, &mut out).unwrap();
            assert!(recs.json.len() <= limits.max_record());
            assert!(!text_of(&m).is_empty(), "{max}");
            if max >= 200 {
                assert!(text_of(&m).ends_with(TRUNCATION_MARK), "{max}");
            }
        }
    }

    /// Under every limit, however small, the Error is one that can be sent
    /// (on main an empty text — not valid on the native wire — was the
    /// fallback below 22 bytes, so the peer got nothing); the mark is kept
    /// exactly while the record has room for it and four more bytes, and
    /// the cut is the longest that fits (PROTOCOL §11).
    #[test]
    fn every_limit_gets_a_sendable_error_cut_by_the_one_rule() {
        let long = "é/x€".repeat(2000);
        for max in 16..=200 {
            let limits = Limits::with_max_record(max);
            for text in [long.as_str(), "", "short"] {
                let m = error_reply(text, Wire::Native, &limits);
                let mut buf = bytes::BytesMut::new();
                native::encode(&m, false, &mut buf, &limits)
                    .unwrap_or_else(|e| panic!("limit {max}, {text:?}: {e}"));
                let t = text_of(&m);
                if text.is_empty() {
                    let unspecified = error_reply(UNSPECIFIED_ERROR, Wire::Native, &limits);
                    assert_eq!(t, text_of(&unspecified), "limit {max}");
                    continue;
                }
                if t == text {
                    continue;
                }
                let mark_fits = native::encoded_len(
                    &SyncMessage::error(format!("xxxx{TRUNCATION_MARK}")),
                    false,
                ) <= max;
                assert_eq!(
                    t.ends_with(TRUNCATION_MARK),
                    mark_fits,
                    "limit {max}: {t:?}"
                );
                let kept = t.strip_suffix(TRUNCATION_MARK).unwrap_or(t);
                assert!(!kept.is_empty() && text.starts_with(kept), "limit {max}");
                let next =
                    &text[..kept.len() + text[kept.len()..].chars().next().unwrap().len_utf8()];
                let mark = if mark_fits { TRUNCATION_MARK } else { "" };
                let bigger = SyncMessage::error(format!("{next}{mark}"));
                assert!(
                    native::encoded_len(&bigger, false) > max,
                    "limit {max}: not maximal"
                );
            }
        }
    }

    #[test]
    fn a_deadline_past_the_end_of_time_is_no_deadline() {
        let now = Instant::now();
        assert_eq!(deadline_after(now, Some(Duration::MAX)), None);
        assert_eq!(deadline_after(now, None), None);
        assert_eq!(
            deadline_after(now, Some(Duration::from_secs(1))),
            Some(now + Duration::from_secs(1))
        );
    }
}
