package procsync

import (
	"fmt"
	"strings"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// Role is which end of the exchange a process plays.
type Role int

// The two roles.
const (
	// RoleParent: the runtime; answers requests.
	RoleParent Role = iota
	// RoleChild: the container's init (or exec'd) process; makes requests.
	RoleChild
)

func (r Role) String() string {
	if r == RoleParent {
		return "parent"
	}
	return "child"
}

// Flow is which exchange runs: runc's init (a new container) or exec (a
// process joining one).
type Flow int

// The two flows.
const (
	// FlowInit: (MountPlease -> MountFd)* -> Hooks -> HooksDone -> Ready ->
	// Run -> [Seccomp -> SeccompDone] -> close.
	FlowInit Flow = iota
	// FlowExec: Ready -> Run -> [Seccomp -> SeccompDone] -> close.
	FlowExec
)

func (f Flow) String() string {
	if f == FlowInit {
		return "init"
	}
	return "exec"
}

// Direction is who sent a message (or closed).
type Direction int

// The two directions.
const (
	ChildToParent Direction = iota
	ParentToChild
)

func (d Direction) String() string {
	if d == ChildToParent {
		return "child->parent"
	}
	return "parent->child"
}

// State is where an exchange stands.
type State int

// The states, in protocol order.
const (
	// StateMounts: init flow start; the child may ask for mounts or the hooks.
	StateMounts State = iota
	// StateMountPending: a MountPlease awaits its MountFd.
	StateMountPending
	// StateHooksPending: a Hooks awaits its HooksDone.
	StateHooksPending
	// StateBeforeReady: hooks done (init) or exec flow start; the child
	// sends Ready next.
	StateBeforeReady
	// StateReadyPending: a Ready awaits its Run.
	StateReadyPending
	// StateRunning: Run sent; the child may hand over seccomp, or close.
	StateRunning
	// StateSeccompPending: a Seccomp awaits its SeccompDone.
	StateSeccompPending
	// StateSeccompDone: all done; the child closes next.
	StateSeccompDone
	// StateClosed: the exchange ended normally (terminal).
	StateClosed
	// StateFailed: an Error was sent (terminal).
	StateFailed
)

var stateNames = [...]string{"Mounts", "MountPending", "HooksPending", "BeforeReady", "ReadyPending",
	"Running", "SeccompPending", "SeccompDone", "Closed", "Failed"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// pending returns the request a state waits on a reply for.
func (s State) pending() (pb.MessageType, bool) {
	switch s {
	case StateMountPending:
		return TypeMountPlease, true
	case StateHooksPending:
		return TypeHooks, true
	case StateReadyPending:
		return TypeReady, true
	case StateSeccompPending:
		return TypeSeccomp, true
	}
	return 0, false
}

// transitions lists, per state and direction, each legal message and the
// state it leads to. Error is handled apart: the child may send it in any
// state before the end, the parent only as the reply to a pending request.
var transitions = map[State]map[Direction]map[pb.MessageType]State{
	StateMounts:         {ChildToParent: {TypeMountPlease: StateMountPending, TypeHooks: StateHooksPending}},
	StateMountPending:   {ParentToChild: {TypeMountFd: StateMounts}},
	StateHooksPending:   {ParentToChild: {TypeHooksDone: StateBeforeReady}},
	StateBeforeReady:    {ChildToParent: {TypeReady: StateReadyPending}},
	StateReadyPending:   {ParentToChild: {TypeRun: StateRunning}},
	StateRunning:        {ChildToParent: {TypeSeccomp: StateSeccompPending}},
	StateSeccompPending: {ParentToChild: {TypeSeccompDone: StateSeccompDone}},
}

// Legal reports whether a message of type ty going in direction dir is
// allowed in state s, and the state it leads to.
func Legal(s State, dir Direction, ty pb.MessageType) (State, bool) {
	if s == StateClosed || s == StateFailed {
		return s, false
	}
	if ty == TypeError {
		if dir == ChildToParent {
			return StateFailed, true
		}
		if _, ok := s.pending(); ok {
			return StateFailed, true
		}
		return s, false
	}
	next, ok := transitions[s][dir][ty]
	return next, ok
}

// Expected lists the message types allowed in state s in direction dir.
func Expected(s State, dir Direction) []pb.MessageType {
	var out []pb.MessageType
	for _, t := range AllTypes {
		if _, ok := Legal(s, dir, t); ok {
			out = append(out, t)
		}
	}
	return out
}

// closeLegal reports whether the side sending in dir may close in s.
func closeLegal(s State, dir Direction) bool {
	switch s {
	case StateRunning, StateSeccompDone, StateFailed:
		return true
	case StateClosed:
		return dir == ParentToChild // the parent shuts down after the child closed
	}
	return false
}

// ProtocolError is a message or close that the protocol does not allow
// where it happened. ByPeer says who caused it: the peer (it arrived) or
// the local caller (it was about to be sent, and was not).
type ProtocolError struct {
	Role      Role
	Flow      Flow
	State     State
	Direction Direction
	// Got is the offending message's type (zero when Closed).
	Got pb.MessageType
	// Closed: the offending event is the sender closing its end.
	Closed bool
	// Expected is what was allowed instead (in Direction).
	Expected []pb.MessageType
	// Reason is a short summary ("child closed without Ready").
	Reason string
	// Err is the underlying event, if any (ErrPeerClosed for a close seen
	// on the socket).
	Err error
}

// Unwrap returns the underlying event, if any.
func (e *ProtocolError) Unwrap() error { return e.Err }

// ByPeer reports whether the peer caused the error (rather than the local
// caller).
func (e *ProtocolError) ByPeer() bool {
	return (e.Role == RoleParent) == (e.Direction == ChildToParent)
}

func (e *ProtocolError) Error() string {
	var b strings.Builder
	who := "peer"
	if !e.ByPeer() {
		who = "local caller"
	}
	fmt.Fprintf(&b, "procsync: protocol violation by %s (%s, %s flow, state %s): ", who, e.Role, e.Flow, e.State)
	if e.Reason != "" {
		b.WriteString(e.Reason + ": ")
	}
	if e.Closed {
		fmt.Fprintf(&b, "%s close", e.Direction)
	} else {
		fmt.Fprintf(&b, "%s %s", e.Direction, TypeName(e.Got))
	}
	names := make([]string, len(e.Expected))
	for i, t := range e.Expected {
		names[i] = TypeName(t)
	}
	if len(names) == 0 {
		b.WriteString("; nothing is allowed")
	} else {
		fmt.Fprintf(&b, "; expected one of {%s}", strings.Join(names, ", "))
	}
	if closeLegal(e.State, e.Direction) {
		b.WriteString(" or close")
	}
	return b.String()
}

// Machine tracks one exchange from one role's point of view and rejects
// every message or close that breaks the protocol. Both roles run the same
// machine over the same stream: what one side sends, the other receives.
type Machine struct {
	role  Role
	flow  Flow
	state State
}

// NewMachine returns a machine at the start of flow.
func NewMachine(role Role, flow Flow) *Machine {
	s := StateMounts
	if flow == FlowExec {
		s = StateBeforeReady
	}
	return &Machine{role: role, flow: flow, state: s}
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Role returns the machine's role.
func (m *Machine) Role() Role { return m.role }

// Flow returns the machine's flow.
func (m *Machine) Flow() Flow { return m.flow }

// Pending returns the request awaiting a reply, if any.
func (m *Machine) Pending() (pb.MessageType, bool) { return m.state.pending() }

// Done reports whether the exchange reached a terminal state.
func (m *Machine) Done() bool { return m.state == StateClosed || m.state == StateFailed }

func (m *Machine) sendDir() Direction {
	if m.role == RoleParent {
		return ParentToChild
	}
	return ChildToParent
}

// Check reports whether a message of type ty in direction dir is legal now,
// without changing state.
func (m *Machine) Check(dir Direction, ty pb.MessageType) error {
	if _, ok := Legal(m.state, dir, ty); ok {
		return nil
	}
	e := &ProtocolError{Role: m.role, Flow: m.flow, State: m.state, Direction: dir, Got: ty,
		Expected: Expected(m.state, dir)}
	switch p, pending := m.state.pending(); {
	case m.state == StateClosed:
		e.Reason = "exchange already closed"
	case m.state == StateFailed:
		e.Reason = "exchange already failed with an Error"
	case ty == TypeError && dir == ParentToChild:
		e.Reason = "the parent may send Error only as the reply to a pending request"
	case pending && dir == ChildToParent:
		e.Reason = TypeName(p) + " is still waiting for its reply"
	case !pending && dir == ParentToChild:
		e.Reason = "no request is pending"
	case pending:
		e.Reason = "wrong reply to " + TypeName(p)
	}
	return e
}

// Step applies a message of type ty going in direction dir, or returns a
// *ProtocolError (and leaves the state alone).
func (m *Machine) Step(dir Direction, ty pb.MessageType) error {
	if err := m.Check(dir, ty); err != nil {
		return err
	}
	m.state, _ = Legal(m.state, dir, ty)
	return nil
}

// OnSend applies a message this role is about to send.
func (m *Machine) OnSend(ty pb.MessageType) error { return m.Step(m.sendDir(), ty) }

// OnRecv applies a message this role received.
func (m *Machine) OnRecv(ty pb.MessageType) error { return m.Step(1-m.sendDir(), ty) }

// Close applies the end of the sending side in direction dir. The child may
// close after Run (with no request pending) or after an Error; closing
// earlier is an error ("child closed without Ready", or with a request
// pending). The parent may close once the child is done.
func (m *Machine) Close(dir Direction) error {
	if closeLegal(m.state, dir) {
		m.state = StateClosed
		return nil
	}
	e := &ProtocolError{Role: m.role, Flow: m.flow, State: m.state, Direction: dir, Closed: true,
		Expected: Expected(m.state, dir)}
	p, pending := m.state.pending()
	switch {
	case m.state == StateClosed:
		e.Reason = "exchange already closed"
	case dir == ChildToParent && m.state <= StateReadyPending:
		e.Reason = "child closed without Ready"
		if pending {
			e.Reason += " (" + TypeName(p) + " pending)"
		}
	case dir == ChildToParent:
		e.Reason = "child closed with " + TypeName(p) + " pending"
	case pending:
		e.Reason = "parent closed with " + TypeName(p) + " pending"
	default:
		e.Reason = "parent closed before Run"
	}
	return e
}

// OnPeerClosed applies the peer closing its end.
func (m *Machine) OnPeerClosed() error { return m.Close(1 - m.sendDir()) }

// OnLocalClose applies this role closing its end.
func (m *Machine) OnLocalClose() error { return m.Close(m.sendDir()) }
