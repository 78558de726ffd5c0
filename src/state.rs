//! The legal order of messages: a sans-IO state machine each side runs over
//! its own half of the conversation. No syscalls, no allocation; the state is
//! a `Copy` enum and every transition is a `match`.
//!
//! The child asks, the parent answers. A [`Machine`] is built for one
//! [`Role`] and one [`Flow`] and is told about every message the local side
//! is about to send ([`Machine::on_send`]), every message that arrives
//! ([`Machine::on_recv`]) and every close ([`Machine::on_close`],
//! [`Machine::on_peer_closed`]). It accepts exactly the orders runc's child
//! code produces and rejects everything else with a [`StateError`] that names
//! the state, what was expected, what came, the direction, and whether the
//! local caller or the peer is to blame.
//!
//! Both sides track the same conversation, so the states are the same for
//! the parent and the child; only who may send what differs. `(C)` marks a
//! message the child sends, `(P)` one the parent sends.
//!
//! ```text
//!            init                                                   exec
//!             |                                                       |
//!             v                                                       |
//!      +--------------+     MountPlease (C)     +--------------+      |
//!      |              |------------------------>|              |      |
//!      |   Mounting   |                         | AwaitMountFd |      |
//!      |              |<------------------------|              |      |
//!      +--------------+     MountFd (P)         +--------------+      |
//!             | Hooks (C)                                             |
//!             v                                                       |
//!    +----------------+                                               |
//!    | AwaitHooksDone |                                               |
//!    +----------------+                                               |
//!             | HooksDone (P)                                         |
//!             v                                                       |
//!      +--------------+                                               |
//!      | BeforeReady  |<----------------------------------------------+
//!      +--------------+
//!             | Ready (C)
//!             v
//!      +--------------+
//!      |   AwaitRun   |
//!      +--------------+
//!             | Run (P)
//!             v
//!      +--------------+       close (either side)        +--------+
//!      |   Running    |--------------------------------->|        |
//!      +--------------+                                  |        |
//!             | Seccomp (C)                              |        |
//!             v                                          |        |
//!   +------------------+                                 | Closed |
//!   | AwaitSeccompDone |                                 |        |
//!   +------------------+                                 |        |
//!             | SeccompDone (P)                          |        |
//!             v                                          |        |
//!      +--------------+       close (either side)        |        |
//!      | AfterSeccomp |--------------------------------->|        |
//!      +--------------+                                  +--------+
//!                                                            ^  ^
//!   any state above ------ Error (C) ---+                    |  |
//!   any Await* state ----- Error (P) ---+--> +--------+      |  |
//!   Broken --------- Error (local*) ----+    | Failed |------+  |
//!                                            +--------+ close   |
//!   a rejected incoming message -----------> +--------+         |
//!   (peer violation) from any state above    | Broken |---------+
//!                                            +--------+ close
//!
//!   * the parent only if a request was pending; see Violations.
//!
//!   exec-no-ready (runc before 1.2.0-rc.2) starts in Running.
//! ```
//!
//! Rules the diagram does not show:
//!
//! * **Error.** The child may send Error in every state before close. The
//!   parent may send Error only as the reply to a pending request (to tell
//!   the child why, say, a mount request was refused); a parent with nothing
//!   to answer closes instead. Error is terminal either way.
//! * **Crossing Error.** Once the local side has sent Error, the one message
//!   the peer may already have had in flight is accepted and ignored: a
//!   parent that replied Error may still receive the child's Error, and a
//!   child that sent Error while a request was pending may still receive the
//!   reply (or the parent's Error). Nothing else is accepted after Error.
//! * **Violations (Broken).** When [`Machine::on_recv`] rejects a message, the peer broke
//!   the protocol and the machine moves to [`State::Broken`]: the local side
//!   may send one Error explaining why (the parent only if a request was
//!   pending, as above) and must then close. A rejected [`Machine::on_send`]
//!   changes nothing: the message must not be sent, and the caller may go on.
//! * **Close.** Closing is orderly in `Running`, `AfterSeccomp`, `Failed` and
//!   `Broken`. Closing anywhere else is an error of the side that closed: a
//!   child closing before Ready ("child closed without Ready", as runc says),
//!   either side closing while a request is pending. The conversation
//!   normally ends with the child's close (its exec closes the socket); the
//!   parent closes its end once it has seen that EOF.
//! * **exec-no-ready.** [`Flow::ExecNoReady`] is the exec flow of runc
//!   before 1.2.0-rc.2: no Ready → Run, so it starts in `Running` (the
//!   child may hand over seccomp, then closes). Everything else is the
//!   same.
//! * **Kinds.** Every [`StateError`] has a stable [`StateErrorKind`]
//!   (`unexpected-message`, `unexpected-close`, `send-not-allowed`,
//!   `close-not-allowed`); the text is for people and not normative.
//! * **Mount policy.** The state machine only admits MountPlease before
//!   Hooks, so a mount policy ([`crate::policy`]) never sees a request after
//!   Hooks: the machine rejects it first.
//!
//! ```
//! use procsync::schema::MessageType as T;
//! use procsync::state::{Flow, Machine, Origin, Role, State};
//!
//! let mut parent = Machine::new(Role::Parent, Flow::Exec);
//! parent.on_recv(T::Ready)?;
//! parent.on_send(T::Run)?;
//! assert_eq!(parent.state(), State::Running);
//!
//! // A second Ready is the child's fault.
//! let err = parent.on_recv(T::Ready).unwrap_err();
//! assert_eq!(err.origin(), Origin::Peer);
//! assert_eq!(
//!     err.to_string(),
//!     "in state Running (exec, parent): expected Seccomp or Error from child, got Ready"
//! );
//! # Ok::<(), procsync::state::StateError>(())
//! ```

#![forbid(unsafe_code)]

use crate::schema::MessageType;
use std::fmt;

/// Which end of the sync socket a [`Machine`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The runtime process: answers requests.
    Parent,
    /// The container's init (or exec) process: sends requests.
    Child,
}

impl Role {
    /// Both roles.
    pub const ALL: [Role; 2] = [Role::Parent, Role::Child];

    /// The other end.
    pub const fn peer(self) -> Role {
        match self {
            Role::Parent => Role::Child,
            Role::Child => Role::Parent,
        }
    }

    /// `"parent"` or `"child"`, as used in errors.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Child => "child",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which conversation the child runs: creating a container or joining one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// `runc create`/`run`: mounts, hooks, Ready, optional seccomp.
    Init,
    /// `runc exec`: Ready, optional seccomp (runc ≥ 1.2.0-rc.2).
    Exec,
    /// `runc exec` as runc spoke it before 1.2.0-rc.2 (runc commit
    /// a853a8267 added Ready → Run): no Ready and no Run, only the optional
    /// Seccomp → SeccompDone, then the child's close. Starts in
    /// [`State::Running`]. See PROTOCOL.md §15 (compatibility profiles).
    ExecNoReady,
}

impl Flow {
    /// Every flow.
    pub const ALL: [Flow; 3] = [Flow::Init, Flow::Exec, Flow::ExecNoReady];

    /// `"init"`, `"exec"` or `"exec-no-ready"`, as used in errors and vectors.
    pub const fn name(self) -> &'static str {
        match self {
            Flow::Init => "init",
            Flow::Exec => "exec",
            Flow::ExecNoReady => "exec-no-ready",
        }
    }

    /// The state a conversation of this flow starts in.
    pub const fn initial_state(self) -> State {
        match self {
            Flow::Init => State::Mounting,
            Flow::Exec => State::BeforeReady,
            Flow::ExecNoReady => State::Running,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a conversation stands. The same for both roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Init only, before Hooks: the child may ask for mount fds or send Hooks.
    Mounting,
    /// A MountPlease is pending; the parent owes MountFd (or Error).
    AwaitMountFd,
    /// Hooks is pending; the parent owes HooksDone (or Error).
    AwaitHooksDone,
    /// The child's next request is Ready (start of the exec flow).
    BeforeReady,
    /// Ready is pending; the parent owes Run (or Error).
    AwaitRun,
    /// Run came; the child may hand over seccomp or close.
    Running,
    /// Seccomp is pending; the parent owes SeccompDone (or Error).
    AwaitSeccompDone,
    /// SeccompDone came; only the child's close (or Error) remains.
    AfterSeccomp,
    /// An Error was sent or received. Terminal.
    Failed,
    /// The peer broke the protocol; the local side may send one Error, then closes.
    Broken,
    /// The connection is closed. Terminal.
    Closed,
}

impl State {
    /// Every state, in diagram order.
    pub const ALL: [State; 11] = [
        State::Mounting,
        State::AwaitMountFd,
        State::AwaitHooksDone,
        State::BeforeReady,
        State::AwaitRun,
        State::Running,
        State::AwaitSeccompDone,
        State::AfterSeccomp,
        State::Failed,
        State::Broken,
        State::Closed,
    ];

    /// The state's name (`"AwaitHooksDone"`), as used in errors.
    pub const fn name(self) -> &'static str {
        match self {
            State::Mounting => "Mounting",
            State::AwaitMountFd => "AwaitMountFd",
            State::AwaitHooksDone => "AwaitHooksDone",
            State::BeforeReady => "BeforeReady",
            State::AwaitRun => "AwaitRun",
            State::Running => "Running",
            State::AwaitSeccompDone => "AwaitSeccompDone",
            State::AfterSeccomp => "AfterSeccomp",
            State::Failed => "Failed",
            State::Broken => "Broken",
            State::Closed => "Closed",
        }
    }

    /// The request this state waits on a reply for, if any. ([`State::Broken`]
    /// remembers its pending request in the [`Machine`], see [`Machine::pending`].)
    pub const fn awaited_request(self) -> Option<MessageType> {
        match self {
            State::AwaitMountFd => Some(MessageType::MountPlease),
            State::AwaitHooksDone => Some(MessageType::Hooks),
            State::AwaitRun => Some(MessageType::Ready),
            State::AwaitSeccompDone => Some(MessageType::Seccomp),
            _ => None,
        }
    }

    /// Whether no regular message can follow (`Failed`, `Broken`, `Closed`).
    pub const fn is_terminal(self) -> bool {
        matches!(self, State::Failed | State::Broken | State::Closed)
    }

    /// Whether either side may close here without breaking the protocol.
    pub const fn close_is_orderly(self) -> bool {
        matches!(
            self,
            State::Running | State::AfterSeccomp | State::Failed | State::Broken | State::Closed
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a message (or a close) goes, seen from the [`Machine`]'s side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The local side sends (or closes).
    Send,
    /// The peer sent (or closed).
    Recv,
}

/// Who caused a [`StateError`]: [`Origin::Local`] or [`Origin::Peer`] (the
/// state machine never reports [`Origin::Os`]).
pub use crate::Origin;

/// What a [`StateError`] is about: a message or a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A message of this type.
    Message(MessageType),
    /// The connection was (or would be) closed.
    Close,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Message(ty) => f.write_str(ty.name()),
            Event::Close => f.write_str("close"),
        }
    }
}

/// A small set of [`MessageType`]s (a bitset; `Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TypeSet(u16);

impl TypeSet {
    /// The empty set.
    pub const EMPTY: TypeSet = TypeSet(0);

    /// The set holding exactly `types`.
    pub const fn of(types: &[MessageType]) -> TypeSet {
        let mut set = TypeSet::EMPTY;
        let mut i = 0;
        while i < types.len() {
            set = set.with(types[i]);
            i += 1;
        }
        set
    }

    /// This set plus `ty`.
    pub const fn with(self, ty: MessageType) -> TypeSet {
        TypeSet(self.0 | Self::bit(ty))
    }

    /// Whether `ty` is in the set.
    pub const fn contains(self, ty: MessageType) -> bool {
        self.0 & Self::bit(ty) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many types the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The types in the set, in protocol order with Error last
    /// (MountPlease, MountFd, Hooks, HooksDone, Ready, Run, Seccomp,
    /// SeccompDone, Error).
    pub fn iter(self) -> impl Iterator<Item = MessageType> {
        const ORDER: [MessageType; 9] = [
            MessageType::MountPlease,
            MessageType::MountFd,
            MessageType::Hooks,
            MessageType::HooksDone,
            MessageType::Ready,
            MessageType::Run,
            MessageType::Seccomp,
            MessageType::SeccompDone,
            MessageType::Error,
        ];
        ORDER.into_iter().filter(move |&ty| self.contains(ty))
    }

    const fn bit(ty: MessageType) -> u16 {
        1 << (ty as i32 as u32 & 15)
    }
}

impl FromIterator<MessageType> for TypeSet {
    fn from_iter<I: IntoIterator<Item = MessageType>>(iter: I) -> Self {
        iter.into_iter().fold(TypeSet::EMPTY, TypeSet::with)
    }
}

impl fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// `"nothing"`, `"Run"`, `"Run or Error"`, `"MountPlease, Hooks or Error"`.
impl fmt::Display for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.len();
        if n == 0 {
            return f.write_str("nothing");
        }
        for (i, ty) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == n { " or " } else { ", " })?;
            }
            f.write_str(ty.name())?;
        }
        Ok(())
    }
}

/// A message or close the protocol does not allow at this point.
///
/// Carries everything needed to explain it: the [`Machine`]'s role, flow and
/// state, the direction, the set of types that would have been legal, what
/// came instead, and (through [`StateError::origin`]) who is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("in state {state} ({flow}, {role}): {}", Detail(self))]
pub struct StateError {
    role: Role,
    flow: Flow,
    state: State,
    direction: Direction,
    expected: TypeSet,
    got: Event,
    pending: Option<MessageType>,
}

impl StateError {
    /// The role of the [`Machine`] that rejected the event.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The flow of the [`Machine`] that rejected the event.
    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// The state the event came in.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the local side tried to send (or close), or the peer did.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The message types that would have been legal in this direction.
    pub fn expected(&self) -> TypeSet {
        self.expected
    }

    /// What came instead.
    pub fn got(&self) -> Event {
        self.got
    }

    /// The request that was pending, if any.
    pub fn pending(&self) -> Option<MessageType> {
        self.pending
    }

    /// Who caused it: [`Origin::Local`] for a rejected send or close (misuse;
    /// nothing was sent), [`Origin::Peer`] for a protocol violation.
    pub fn origin(&self) -> Origin {
        match self.direction {
            Direction::Send => Origin::Local,
            Direction::Recv => Origin::Peer,
        }
    }

    /// The stable kind of this rejection (PROTOCOL.md §9, *Reporting*).
    pub fn kind(&self) -> StateErrorKind {
        match (self.got, self.direction) {
            (Event::Message(_), Direction::Recv) => StateErrorKind::UnexpectedMessage,
            (Event::Close, Direction::Recv) => StateErrorKind::UnexpectedClose,
            (Event::Message(_), Direction::Send) => StateErrorKind::SendNotAllowed,
            (Event::Close, Direction::Send) => StateErrorKind::CloseNotAllowed,
        }
    }

    /// The role that sent (or closed): the local role for [`Direction::Send`].
    pub fn sender(&self) -> Role {
        match self.direction {
            Direction::Send => self.role,
            Direction::Recv => self.role.peer(),
        }
    }
}

/// A stable, language-neutral name for each [`StateError`]: what happened
/// and, with it, who caused it. The Go package uses the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateErrorKind {
    /// `unexpected-message`: a message arrived that the state does not
    /// allow from the peer (origin peer; the machine is Broken).
    UnexpectedMessage,
    /// `unexpected-close`: the peer closed where closing is not orderly
    /// (origin peer).
    UnexpectedClose,
    /// `send-not-allowed`: the local side tried to send a message the state
    /// does not allow it to send; nothing was sent (origin local).
    SendNotAllowed,
    /// `close-not-allowed`: the local side closes where closing is not
    /// orderly (origin local).
    CloseNotAllowed,
}

impl StateErrorKind {
    /// Every kind.
    pub const ALL: [StateErrorKind; 4] = [
        StateErrorKind::UnexpectedMessage,
        StateErrorKind::UnexpectedClose,
        StateErrorKind::SendNotAllowed,
        StateErrorKind::CloseNotAllowed,
    ];

    /// The stable name (`"unexpected-message"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            StateErrorKind::UnexpectedMessage => "unexpected-message",
            StateErrorKind::UnexpectedClose => "unexpected-close",
            StateErrorKind::SendNotAllowed => "send-not-allowed",
            StateErrorKind::CloseNotAllowed => "close-not-allowed",
        }
    }

    /// Who causes an error of this kind.
    pub const fn origin(self) -> Origin {
        match self {
            StateErrorKind::UnexpectedMessage | StateErrorKind::UnexpectedClose => Origin::Peer,
            StateErrorKind::SendNotAllowed | StateErrorKind::CloseNotAllowed => Origin::Local,
        }
    }
}

impl fmt::Display for StateErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of a [`StateError`]'s message after the state, written without
/// allocating.
struct Detail<'a>(&'a StateError);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        let sender = e.sender();
        let receiver = sender.peer();
        match (e.got, e.direction) {
            (Event::Message(ty), Direction::Recv) => {
                write!(f, "expected {} from {sender}, got {ty}", e.expected)
            }
            (Event::Message(ty), Direction::Send) if e.expected.is_empty() => {
                write!(f, "can send nothing to {receiver}, not {ty}")
            }
            (Event::Message(ty), Direction::Send) => {
                write!(f, "can send only {} to {receiver}, not {ty}", e.expected)
            }
            (Event::Close, dir) => {
                let verb = match dir {
                    Direction::Recv => "closed",
                    Direction::Send => "closing",
                };
                write!(f, "{sender} {verb} ")?;
                match e.pending {
                    Some(req) if dir == Direction::Recv => write!(f, "while {req} was pending")?,
                    Some(req) => write!(f, "while {req} is pending")?,
                    None if sender == Role::Child => f.write_str("without Ready")?,
                    None => f.write_str("before Run")?,
                }
                if dir == Direction::Recv && !e.expected.is_empty() {
                    write!(f, "; expected {} from {sender}", e.expected)?;
                }
                Ok(())
            }
        }
    }
}

/// The messages `sender` may send in a (non-terminal) conversation state.
const fn conversation_sends(state: State, sender: Role) -> TypeSet {
    use MessageType as T;
    let error = TypeSet::of(&[T::Error]);
    match (sender, state) {
        (Role::Child, State::Mounting) => TypeSet::of(&[T::MountPlease, T::Hooks, T::Error]),
        (Role::Child, State::BeforeReady) => TypeSet::of(&[T::Ready, T::Error]),
        (Role::Child, State::Running) => TypeSet::of(&[T::Seccomp, T::Error]),
        (
            Role::Child,
            State::AwaitMountFd
            | State::AwaitHooksDone
            | State::AwaitRun
            | State::AwaitSeccompDone
            | State::AfterSeccomp,
        ) => error,
        (Role::Parent, _) => match state.awaited_request() {
            // Each request has exactly one legal reply; Error is the other answer.
            Some(req) => match req.reply() {
                Some(reply) => error.with(reply),
                None => error,
            },
            None => TypeSet::EMPTY,
        },
        (Role::Child, State::Failed | State::Broken | State::Closed) => TypeSet::EMPTY,
    }
}

/// The state a legal message of type `ty` leads to from a conversation state.
const fn target(ty: MessageType) -> State {
    match ty {
        MessageType::MountPlease => State::AwaitMountFd,
        MessageType::MountFd => State::Mounting,
        MessageType::Hooks => State::AwaitHooksDone,
        MessageType::HooksDone => State::BeforeReady,
        MessageType::Ready => State::AwaitRun,
        MessageType::Run => State::Running,
        MessageType::Seccomp => State::AwaitSeccompDone,
        MessageType::SeccompDone => State::AfterSeccomp,
        MessageType::Error | MessageType::Unspecified => State::Failed,
    }
}

/// Where a [`Machine`] stands, with the data that belongs to that state
/// alone (the h2 stream style): nothing has to be reset by hand when the
/// state changes, because the data leaves with its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Inner {
    /// A conversation state (never `Failed`, `Broken` or `Closed`).
    Talking(State),
    /// An Error was sent (`by` = Local) or received (`by` = Peer);
    /// `crossing` is what the peer may still have had in flight when the
    /// local side sent it (accepted once).
    Failed { by: Origin, crossing: TypeSet },
    /// The peer broke the protocol while `pending` was awaiting its reply.
    Broken { pending: Option<MessageType> },
    /// Closed first by `by`; `failed_by` is who had sent the Error, if the
    /// conversation had failed before.
    Closed {
        by: Origin,
        failed_by: Option<Origin>,
    },
}

/// One side's view of the sync conversation: feed it every message sent and
/// received and every close; it says whether each is legal.
///
/// See the [module documentation](self) for the diagram and the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    role: Role,
    flow: Flow,
    inner: Inner,
}

impl Machine {
    /// A machine for `role` at the start of a `flow` conversation.
    pub const fn new(role: Role, flow: Flow) -> Machine {
        Machine {
            role,
            flow,
            inner: Inner::Talking(flow.initial_state()),
        }
    }

    /// The local role.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The flow.
    pub const fn flow(&self) -> Flow {
        self.flow
    }

    /// The current state.
    pub const fn state(&self) -> State {
        match self.inner {
            Inner::Talking(state) => state,
            Inner::Failed { .. } => State::Failed,
            Inner::Broken { .. } => State::Broken,
            Inner::Closed { .. } => State::Closed,
        }
    }

    /// The request waiting for its reply, if any (also in [`State::Broken`]).
    pub const fn pending(&self) -> Option<MessageType> {
        match self.inner {
            Inner::Talking(state) => state.awaited_request(),
            Inner::Broken { pending } => pending,
            Inner::Failed { .. } | Inner::Closed { .. } => None,
        }
    }

    /// The message types the local side may send now.
    pub const fn expected_send(&self) -> TypeSet {
        match self.inner {
            Inner::Talking(state) => conversation_sends(state, self.role),
            Inner::Broken { pending } => match (self.role, pending) {
                (Role::Child, _) | (Role::Parent, Some(_)) => TypeSet::of(&[MessageType::Error]),
                (Role::Parent, None) => TypeSet::EMPTY,
            },
            Inner::Failed { .. } | Inner::Closed { .. } => TypeSet::EMPTY,
        }
    }

    /// The message types the peer may send now (in [`State::Failed`]: what
    /// may still cross the local Error).
    pub const fn expected_recv(&self) -> TypeSet {
        match self.inner {
            Inner::Talking(state) => conversation_sends(state, self.role.peer()),
            Inner::Failed { crossing, .. } => crossing,
            Inner::Broken { .. } | Inner::Closed { .. } => TypeSet::EMPTY,
        }
    }

    /// Whether the conversation is over: `Failed`, `Broken` or `Closed`. What
    /// remains is closing (and, in `Broken`, possibly one Error).
    pub const fn is_finished(&self) -> bool {
        !matches!(self.inner, Inner::Talking(_))
    }

    /// Who sent the Error, once the conversation failed (also after close).
    pub const fn failed_by(&self) -> Option<Origin> {
        match self.inner {
            Inner::Failed { by, .. } => Some(by),
            Inner::Closed { failed_by, .. } => failed_by,
            Inner::Talking(_) | Inner::Broken { .. } => None,
        }
    }

    /// Who closed first, once closed.
    pub const fn closed_by(&self) -> Option<Origin> {
        match self.inner {
            Inner::Closed { by, .. } => Some(by),
            _ => None,
        }
    }

    /// The local side is about to send `ty`. On `Err` nothing changes and the
    /// message must not be sent (local misuse).
    pub fn on_send(&mut self, ty: MessageType) -> Result<(), StateError> {
        let allowed = self.expected_send();
        if !allowed.contains(ty) {
            return Err(self.error(Direction::Send, allowed, Event::Message(ty)));
        }
        self.advance(ty, Origin::Local);
        Ok(())
    }

    /// A message of type `ty` arrived. On `Err` the peer broke the protocol
    /// and the machine moves to [`State::Broken`] (from a conversation state).
    pub fn on_recv(&mut self, ty: MessageType) -> Result<(), StateError> {
        let allowed = self.expected_recv();
        if !allowed.contains(ty) {
            let err = self.error(Direction::Recv, allowed, Event::Message(ty));
            match &mut self.inner {
                // The one crossing message may no longer come.
                Inner::Failed { crossing, .. } => *crossing = TypeSet::EMPTY,
                Inner::Broken { .. } | Inner::Closed { .. } => {}
                Inner::Talking(state) => {
                    self.inner = Inner::Broken {
                        pending: state.awaited_request(),
                    }
                }
            }
            return Err(err);
        }
        self.advance(ty, Origin::Peer);
        Ok(())
    }

    /// Whether the local side may close now without breaking the protocol.
    pub fn check_close(&self) -> Result<(), StateError> {
        self.close_check(Direction::Send)
    }

    /// Whether the peer may close now without breaking the protocol: for the
    /// parent, "may the child close here?".
    pub fn check_peer_close(&self) -> Result<(), StateError> {
        self.close_check(Direction::Recv)
    }

    /// The local side closed. Always possible; see [`Machine::check_close`]
    /// for whether it is orderly. Idempotent.
    pub fn on_close(&mut self) {
        self.close(Origin::Local);
    }

    /// The peer closed (EOF). The machine is [`State::Closed`] afterwards
    /// either way; `Err` says the close broke the protocol (for example a
    /// child that closed without Ready, or while a request was pending).
    /// Closing an already closed machine is `Ok`.
    pub fn on_peer_closed(&mut self) -> Result<(), StateError> {
        let result = self.check_peer_close();
        self.close(Origin::Peer);
        result
    }

    fn close(&mut self, by: Origin) {
        if !matches!(self.inner, Inner::Closed { .. }) {
            self.inner = Inner::Closed {
                by,
                failed_by: self.failed_by(),
            };
        }
    }

    fn close_check(&self, direction: Direction) -> Result<(), StateError> {
        if self.state().close_is_orderly() {
            return Ok(());
        }
        let expected = match direction {
            Direction::Send => self.expected_send(),
            Direction::Recv => self.expected_recv(),
        };
        Err(self.error(direction, expected, Event::Close))
    }

    /// Applies a message `on_send`/`on_recv` found legal.
    fn advance(&mut self, ty: MessageType, by: Origin) {
        self.inner = match (self.inner, ty) {
            // A message that crossed our Error: accepted once, stay Failed.
            (Inner::Failed { by, .. }, _) => Inner::Failed {
                by,
                crossing: TypeSet::EMPTY,
            },
            (inner, MessageType::Error) => Inner::Failed {
                by,
                crossing: match (by, inner) {
                    (Origin::Local, Inner::Talking(state)) => {
                        conversation_sends(state, self.role.peer())
                    }
                    _ => TypeSet::EMPTY,
                },
            },
            (_, ty) => Inner::Talking(target(ty)),
        };
    }

    fn error(&self, direction: Direction, expected: TypeSet, got: Event) -> StateError {
        StateError {
            role: self.role,
            flow: self.flow,
            state: self.state(),
            direction,
            expected,
            got,
            pending: self.pending(),
        }
    }
}

/// The exec flow of a runc compatibility profile. It lives here rather than
/// in `wire::runc` so that the wire layer never imports the state machine.
#[cfg(feature = "runc-compat")]
impl crate::wire::runc::RuncProfile {
    /// The flow of `runc exec` in these versions: [`Flow::ExecNoReady`]
    /// before v1.2.0-rc.2, [`Flow::Exec`] from then on. (`runc create`/`run`
    /// is [`Flow::Init`] in every profile.)
    pub const fn exec_flow(self) -> Flow {
        use crate::wire::runc::RuncProfile;
        match self {
            RuncProfile::Seed | RuncProfile::V1_2Rc1 => Flow::ExecNoReady,
            _ => Flow::Exec,
        }
    }
}
