package procsync

import (
	"fmt"
	"strings"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// This file is the message order of docs/PROTOCOL.md §9, the same machine
// as the Rust crate's state module (state names, transitions, the Broken
// and crossing-Error rules, the close rules and the error kinds are
// identical; tests/vectors/state.json holds both to it).

// Role is which end of the exchange a process plays.
type Role int

// The two roles.
const (
	// RoleParent: the runtime; answers requests.
	RoleParent Role = iota
	// RoleChild: the container's init (or exec'd) process; makes requests.
	RoleChild
)

// Peer returns the other end.
func (r Role) Peer() Role { return 1 - r }

func (r Role) String() string {
	if r == RoleParent {
		return "parent"
	}
	return "child"
}

// Flow is which exchange runs: runc's init (a new container) or exec (a
// process joining one). Both peers agree on it out of band.
type Flow int

// The flows.
const (
	// FlowInit: (MountPlease -> MountFd)* -> Hooks -> HooksDone -> Ready ->
	// Run -> [Seccomp -> SeccompDone] -> close.
	FlowInit Flow = iota
	// FlowExec: Ready -> Run -> [Seccomp -> SeccompDone] -> close (runc ≥
	// 1.2.0-rc.2).
	FlowExec
	// FlowExecNoReady: [Seccomp -> SeccompDone] -> close, the exec flow of
	// runc before 1.2.0-rc.2 (runc commit a853a8267 added Ready -> Run).
	// It starts in StateRunning. PROTOCOL.md §15 (compatibility profiles).
	FlowExecNoReady
)

// String returns "init", "exec" or "exec-no-ready", as the Rust crate
// spells them.
func (f Flow) String() string {
	switch f {
	case FlowInit:
		return "init"
	case FlowExec:
		return "exec"
	case FlowExecNoReady:
		return "exec-no-ready"
	}
	return fmt.Sprintf("Flow(%d)", int(f))
}

// InitialState is the state a conversation of this flow starts in.
func (f Flow) InitialState() State {
	switch f {
	case FlowExec:
		return StateBeforeReady
	case FlowExecNoReady:
		return StateRunning
	}
	return StateMounting
}

// State is where an exchange stands; the same for both roles.
type State int

// The states, in diagram order (PROTOCOL.md §9).
const (
	// StateMounting: init only, before Hooks: the child may ask for mount
	// fds or send Hooks.
	StateMounting State = iota
	// StateAwaitMountFd: a MountPlease is pending; the parent owes MountFd
	// (or Error).
	StateAwaitMountFd
	// StateAwaitHooksDone: Hooks is pending; the parent owes HooksDone (or
	// Error).
	StateAwaitHooksDone
	// StateBeforeReady: the child's next request is Ready (start of the
	// exec flow).
	StateBeforeReady
	// StateAwaitRun: Ready is pending; the parent owes Run (or Error).
	StateAwaitRun
	// StateRunning: Run came; the child may hand over seccomp or close.
	StateRunning
	// StateAwaitSeccompDone: Seccomp is pending; the parent owes
	// SeccompDone (or Error).
	StateAwaitSeccompDone
	// StateAfterSeccomp: SeccompDone came; only the child's close (or
	// Error) remains.
	StateAfterSeccomp
	// StateFailed: an Error was sent or received. Terminal.
	StateFailed
	// StateBroken: the peer broke the protocol; the local side may send one
	// Error, then closes.
	StateBroken
	// StateClosed: the connection is closed. Terminal.
	StateClosed
)

// AllStates returns every state, in diagram order (a new slice each call,
// so a caller cannot change the package's view of the states).
func AllStates() []State {
	return []State{StateMounting, StateAwaitMountFd, StateAwaitHooksDone, StateBeforeReady,
		StateAwaitRun, StateRunning, StateAwaitSeccompDone, StateAfterSeccomp, StateFailed, StateBroken,
		StateClosed}
}

var stateNames = [...]string{"Mounting", "AwaitMountFd", "AwaitHooksDone", "BeforeReady", "AwaitRun",
	"Running", "AwaitSeccompDone", "AfterSeccomp", "Failed", "Broken", "Closed"}

// String returns the state's name ("AwaitHooksDone"), as the Rust crate
// spells it.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// AwaitedRequest returns the request this state waits on a reply for.
// (Broken remembers its pending request in the Machine: see
// [Machine.Pending].)
func (s State) AwaitedRequest() (pb.MessageType, bool) {
	switch s {
	case StateAwaitMountFd:
		return TypeMountPlease, true
	case StateAwaitHooksDone:
		return TypeHooks, true
	case StateAwaitRun:
		return TypeReady, true
	case StateAwaitSeccompDone:
		return TypeSeccomp, true
	}
	return 0, false
}

// IsTerminal reports whether no regular message can follow (Failed,
// Broken, Closed).
func (s State) IsTerminal() bool {
	return s == StateFailed || s == StateBroken || s == StateClosed
}

// CloseIsOrderly reports whether either side may close here without
// breaking the protocol (Running, AfterSeccomp, Failed, Broken; Closed is
// already closed).
func (s State) CloseIsOrderly() bool {
	switch s {
	case StateRunning, StateAfterSeccomp, StateFailed, StateBroken, StateClosed:
		return true
	}
	return false
}

// Direction is which way a message (or a close) goes, seen from the
// Machine's side.
type Direction int

// The two directions.
const (
	// DirSend: the local side sends (or closes).
	DirSend Direction = iota
	// DirRecv: the peer sent (or closed).
	DirRecv
)

func (d Direction) String() string {
	if d == DirSend {
		return "send"
	}
	return "recv"
}

// Origin is who caused something: the local side or the peer.
type Origin int

// The origins; the zero value means "nobody (yet)".
const (
	OriginNone Origin = iota
	// OriginLocal: the local caller (misuse: nothing was sent), or the
	// local side sent the Error / closed first.
	OriginLocal
	// OriginPeer: the peer (a protocol violation), or the peer sent the
	// Error / closed first.
	OriginPeer
	// OriginOS: the operating system (a failed system call).
	OriginOS
)

func (o Origin) String() string {
	switch o {
	case OriginLocal:
		return "local"
	case OriginPeer:
		return "peer"
	case OriginOS:
		return "os"
	}
	return "none"
}

// TypeSet is a small set of message types (a bitset).
type TypeSet uint16

// typeOrder is the order sets are listed in: protocol order, Error last.
var typeOrder = [...]pb.MessageType{TypeMountPlease, TypeMountFd, TypeHooks, TypeHooksDone,
	TypeReady, TypeRun, TypeSeccomp, TypeSeccompDone, TypeError}

func typeBit(t pb.MessageType) TypeSet {
	if t < 0 || t > TypeSeccompDone {
		return 0
	}
	return 1 << uint(t)
}

// TypesOf returns the set holding exactly types.
func TypesOf(types ...pb.MessageType) TypeSet {
	var s TypeSet
	for _, t := range types {
		s = s.With(t)
	}
	return s
}

// With returns the set plus t.
func (s TypeSet) With(t pb.MessageType) TypeSet { return s | typeBit(t) }

// Contains reports whether t is in the set (never for an unknown type).
func (s TypeSet) Contains(t pb.MessageType) bool {
	b := typeBit(t)
	return b != 0 && s&b != 0
}

// Types lists the set in protocol order with Error last (MountPlease,
// MountFd, Hooks, HooksDone, Ready, Run, Seccomp, SeccompDone, Error).
func (s TypeSet) Types() []pb.MessageType {
	var out []pb.MessageType
	for _, t := range typeOrder {
		if s.Contains(t) {
			out = append(out, t)
		}
	}
	return out
}

// String renders the set as "nothing", "Run", "Run or Error",
// "MountPlease, Hooks or Error".
func (s TypeSet) String() string {
	types := s.Types()
	if len(types) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, t := range types {
		if i > 0 {
			if i+1 == len(types) {
				b.WriteString(" or ")
			} else {
				b.WriteString(", ")
			}
		}
		b.WriteString(TypeName(t))
	}
	return b.String()
}

// StateErrorKind is the stable, language-neutral name of a [ProtocolError]
// (PROTOCOL.md §9, Reporting): the same names as the Rust crate's
// state::StateErrorKind.
type StateErrorKind string

// The state machine's error kinds.
const (
	// StateErrUnexpectedMessage: a message arrived that the state does not
	// allow from the peer (origin peer; the machine is Broken).
	StateErrUnexpectedMessage StateErrorKind = "unexpected-message"
	// StateErrUnexpectedClose: the peer closed where closing is not orderly
	// (origin peer).
	StateErrUnexpectedClose StateErrorKind = "unexpected-close"
	// StateErrSendNotAllowed: the local side tried to send a message the
	// state does not allow; nothing was sent (origin local).
	StateErrSendNotAllowed StateErrorKind = "send-not-allowed"
	// StateErrCloseNotAllowed: the local side closes where closing is not
	// orderly (origin local).
	StateErrCloseNotAllowed StateErrorKind = "close-not-allowed"
)

func (k StateErrorKind) String() string { return string(k) }

// ProtocolError is a message or close the protocol does not allow where it
// happened. [ProtocolError.Origin] says who caused it: the peer (it
// arrived: a protocol violation) or the local caller (it was about to be
// sent, and was not).
type ProtocolError struct {
	// Role and Flow are the rejecting Machine's.
	Role Role
	Flow Flow
	// State is the state the event came in.
	State State
	// Direction is whether the local side tried to send (or close), or the
	// peer did.
	Direction Direction
	// Expected is the set of types that would have been legal in
	// Direction.
	Expected TypeSet
	// Got is the offending message's type (zero when Closed).
	Got pb.MessageType
	// Closed: the offending event is a close.
	Closed bool
	// Pending is the request that was pending (zero when none).
	Pending pb.MessageType
	// Err is the underlying event, if any (ErrPeerClosed for a close seen
	// on the socket).
	Err error
}

// Unwrap returns the underlying event, if any.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Origin is who caused it: OriginLocal for a rejected send or close
// (misuse; nothing was sent), OriginPeer for a protocol violation.
func (e *ProtocolError) Origin() Origin {
	if e.Direction == DirSend {
		return OriginLocal
	}
	return OriginPeer
}

// Kind is the stable kind of the rejection.
func (e *ProtocolError) Kind() StateErrorKind {
	switch {
	case e.Direction == DirRecv && e.Closed:
		return StateErrUnexpectedClose
	case e.Direction == DirRecv:
		return StateErrUnexpectedMessage
	case e.Closed:
		return StateErrCloseNotAllowed
	}
	return StateErrSendNotAllowed
}

// ByPeer reports whether the peer caused the error.
func (e *ProtocolError) ByPeer() bool { return e.Direction == DirRecv }

// Sender is the role that sent (or closed).
func (e *ProtocolError) Sender() Role {
	if e.Direction == DirSend {
		return e.Role
	}
	return e.Role.Peer()
}

// Detail describes the rejection for people, e.g. "in state
// AwaitHooksDone (init, child): expected HooksDone or Error from parent,
// got Ready" (the Rust crate words it the same way today, but the wording
// is not part of the contract: compare [ProtocolError.Kind] and the
// fields).
func (e *ProtocolError) Detail() string {
	var b strings.Builder
	fmt.Fprintf(&b, "in state %s (%s, %s): ", e.State, e.Flow, e.Role)
	sender := e.Sender()
	receiver := sender.Peer()
	switch {
	case !e.Closed && e.Direction == DirRecv:
		fmt.Fprintf(&b, "expected %s from %s, got %s", e.Expected, sender, TypeName(e.Got))
	case !e.Closed && e.Expected == 0:
		fmt.Fprintf(&b, "can send nothing to %s, not %s", receiver, TypeName(e.Got))
	case !e.Closed:
		fmt.Fprintf(&b, "can send only %s to %s, not %s", e.Expected, receiver, TypeName(e.Got))
	default:
		verb := "closing"
		if e.Direction == DirRecv {
			verb = "closed"
		}
		fmt.Fprintf(&b, "%s %s ", sender, verb)
		switch {
		case e.Pending != 0 && e.Direction == DirRecv:
			fmt.Fprintf(&b, "while %s was pending", TypeName(e.Pending))
		case e.Pending != 0:
			fmt.Fprintf(&b, "while %s is pending", TypeName(e.Pending))
		case sender == RoleChild:
			b.WriteString("without Ready")
		default:
			b.WriteString("before Run")
		}
		if e.Direction == DirRecv && e.Expected != 0 {
			fmt.Fprintf(&b, "; expected %s from %s", e.Expected, sender)
		}
	}
	return b.String()
}

// Error is "procsync: protocol violation by the <sender>: <Detail>" for the
// peer's fault and "procsync: not allowed: <Detail>" for the local
// caller's, as the Rust sessions word them.
func (e *ProtocolError) Error() string {
	if e.Direction == DirRecv {
		return "procsync: protocol violation by the " + e.Sender().String() + ": " + e.Detail()
	}
	return "procsync: not allowed: " + e.Detail()
}

// conversationSends is what sender may send in a (non-terminal)
// conversation state.
func conversationSends(s State, sender Role) TypeSet {
	errSet := TypesOf(TypeError)
	if sender == RoleParent {
		req, ok := s.AwaitedRequest()
		if !ok {
			return 0
		}
		reply, _ := Reply(req)
		return errSet.With(reply)
	}
	switch s {
	case StateMounting:
		return TypesOf(TypeMountPlease, TypeHooks, TypeError)
	case StateBeforeReady:
		return TypesOf(TypeReady, TypeError)
	case StateRunning:
		return TypesOf(TypeSeccomp, TypeError)
	case StateAwaitMountFd, StateAwaitHooksDone, StateAwaitRun, StateAwaitSeccompDone, StateAfterSeccomp:
		return errSet
	}
	return 0
}

// target is the state a legal message of type t leads to from a
// conversation state.
func target(t pb.MessageType) State {
	switch t {
	case TypeMountPlease:
		return StateAwaitMountFd
	case TypeMountFd:
		return StateMounting
	case TypeHooks:
		return StateAwaitHooksDone
	case TypeHooksDone:
		return StateBeforeReady
	case TypeReady:
		return StateAwaitRun
	case TypeRun:
		return StateRunning
	case TypeSeccomp:
		return StateAwaitSeccompDone
	case TypeSeccompDone:
		return StateAfterSeccomp
	}
	return StateFailed
}

// Machine is one side's view of the conversation: feed it every message
// sent and received and every close; it says whether each is legal. It is
// a plain value: copying it (m2 := *m) snapshots the conversation.
//
// Rules beyond the transition table (PROTOCOL.md §9):
//   - Error: the child may send it in every state before close; the parent
//     only as the reply to a pending request. Error is terminal (Failed).
//   - Crossing Error: after the local side's Error, exactly one message the
//     peer was allowed to send in the state where the local Error was sent
//     is accepted and ignored; nothing after it.
//   - Broken: a rejected incoming message moves the machine to Broken; the
//     local side may then send one Error (the parent only if a request was
//     pending) and must close. A rejected send changes nothing.
//   - Close: orderly only in Running, AfterSeccomp, Failed and Broken.
type Machine struct {
	role  Role
	flow  Flow
	state State
	// brokenPending: in Broken, the request that was pending when the peer
	// broke the protocol (0: none).
	brokenPending pb.MessageType
	// crossing: in Failed after a local Error, what the peer may still
	// have had in flight.
	crossing TypeSet
	failedBy Origin
	closedBy Origin
}

// NewMachine returns a machine for role at the start of a flow
// conversation.
func NewMachine(role Role, flow Flow) *Machine {
	return &Machine{role: role, flow: flow, state: flow.InitialState()}
}

// Role returns the local role.
func (m *Machine) Role() Role { return m.role }

// Flow returns the flow.
func (m *Machine) Flow() Flow { return m.flow }

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Pending returns the request waiting for its reply, if any (also in
// Broken).
func (m *Machine) Pending() (pb.MessageType, bool) {
	if m.state == StateBroken {
		return m.brokenPending, m.brokenPending != 0
	}
	return m.state.AwaitedRequest()
}

// ExpectedSend is the set of types the local side may send now.
func (m *Machine) ExpectedSend() TypeSet {
	switch m.state {
	case StateBroken:
		if m.role == RoleChild || m.brokenPending != 0 {
			return TypesOf(TypeError)
		}
		return 0
	case StateFailed, StateClosed:
		return 0
	}
	return conversationSends(m.state, m.role)
}

// ExpectedRecv is the set of types the peer may send now (in Failed: what
// may still cross the local Error).
func (m *Machine) ExpectedRecv() TypeSet {
	switch m.state {
	case StateFailed:
		return m.crossing
	case StateBroken, StateClosed:
		return 0
	}
	return conversationSends(m.state, m.role.Peer())
}

// Done reports whether the conversation is over (Failed, Broken or
// Closed): what remains is closing (and, in Broken, possibly one Error).
func (m *Machine) Done() bool { return m.state.IsTerminal() }

// FailedBy is who sent the Error, once the conversation failed.
func (m *Machine) FailedBy() Origin { return m.failedBy }

// ClosedBy is who closed first, once closed.
func (m *Machine) ClosedBy() Origin { return m.closedBy }

// CheckSend reports whether the local side may send ty now, without
// changing anything.
func (m *Machine) CheckSend(ty pb.MessageType) error {
	if allowed := m.ExpectedSend(); !allowed.Contains(ty) {
		return m.newError(DirSend, allowed, ty, false)
	}
	return nil
}

// OnSend applies a message the local side is about to send. On error
// nothing changes and the message must not be sent (local misuse).
func (m *Machine) OnSend(ty pb.MessageType) error {
	if err := m.CheckSend(ty); err != nil {
		return err
	}
	m.advance(ty, OriginLocal)
	return nil
}

// OnRecv applies a message that arrived. On error the peer broke the
// protocol and the machine moves to Broken (from a conversation state; in
// Failed the one crossing message is no longer accepted).
func (m *Machine) OnRecv(ty pb.MessageType) error {
	allowed := m.ExpectedRecv()
	if !allowed.Contains(ty) {
		err := m.newError(DirRecv, allowed, ty, false)
		switch m.state {
		case StateFailed:
			m.crossing = 0
		case StateBroken, StateClosed:
		default:
			m.brokenPending, _ = m.state.AwaitedRequest()
			m.state = StateBroken
		}
		return err
	}
	m.advance(ty, OriginPeer)
	return nil
}

// CheckClose reports whether the local side may close now without
// breaking the protocol.
func (m *Machine) CheckClose() error { return m.closeCheck(DirSend) }

// CheckPeerClose reports whether the peer may close now without breaking
// the protocol.
func (m *Machine) CheckPeerClose() error { return m.closeCheck(DirRecv) }

// OnClose applies the local side closing. Always possible (see
// [Machine.CheckClose] for whether it is orderly); idempotent.
func (m *Machine) OnClose() { m.close(OriginLocal) }

// OnPeerClosed applies the peer closing (EOF). The machine is Closed
// afterwards either way; the error says the close broke the protocol (a
// child that closed without Ready, or while a request was pending).
// Closing an already closed machine is not an error.
func (m *Machine) OnPeerClosed() error {
	err := m.CheckPeerClose()
	m.close(OriginPeer)
	return err
}

func (m *Machine) close(by Origin) {
	if m.state != StateClosed {
		m.state = StateClosed
		m.closedBy = by
		m.brokenPending = 0
		m.crossing = 0
	}
}

func (m *Machine) closeCheck(dir Direction) error {
	if m.state.CloseIsOrderly() {
		return nil
	}
	expected := m.ExpectedSend()
	if dir == DirRecv {
		expected = m.ExpectedRecv()
	}
	return m.newError(dir, expected, 0, true)
}

func (m *Machine) advance(ty pb.MessageType, by Origin) {
	switch {
	case m.state == StateFailed:
		// A message that crossed our Error: accepted once, stay Failed.
		m.crossing = 0
	case ty == TypeError:
		m.crossing = 0
		if by == OriginLocal && m.state != StateBroken {
			m.crossing = conversationSends(m.state, m.role.Peer())
		}
		m.brokenPending = 0
		m.failedBy = by
		m.state = StateFailed
	default:
		m.state = target(ty)
	}
}

func (m *Machine) newError(dir Direction, expected TypeSet, got pb.MessageType, closed bool) *ProtocolError {
	pending, _ := m.Pending()
	return &ProtocolError{Role: m.role, Flow: m.flow, State: m.state, Direction: dir,
		Expected: expected, Got: got, Closed: closed, Pending: pending}
}
