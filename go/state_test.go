package procsync

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The protocol written out independently of state.go's tables, as the
// legal sequences runc's child code produces.
var specLegal = map[string]State{
	// init: (MountPlease -> MountFd)* -> Hooks -> HooksDone -> Ready -> Run -> [Seccomp -> SeccompDone]
	"Mounts c2p MountPlease":         StateMountPending,
	"Mounts c2p Hooks":               StateHooksPending,
	"MountPending p2c MountFd":       StateMounts,
	"HooksPending p2c HooksDone":     StateBeforeReady,
	"BeforeReady c2p Ready":          StateReadyPending,
	"ReadyPending p2c Run":           StateRunning,
	"Running c2p Seccomp":            StateSeccompPending,
	"SeccompPending p2c SeccompDone": StateSeccompDone,
}

var allStates = []State{StateMounts, StateMountPending, StateHooksPending, StateBeforeReady,
	StateReadyPending, StateRunning, StateSeccompPending, StateSeccompDone, StateClosed, StateFailed}

func reachable(flow Flow, s State) bool {
	if flow == FlowExec {
		return s != StateMounts && s != StateMountPending && s != StateHooksPending
	}
	return true
}

func dirTag(d Direction) string {
	if d == ChildToParent {
		return "c2p"
	}
	return "p2c"
}

// specStep is the expected outcome of a message in the spec.
func specStep(s State, d Direction, ty pb.MessageType) (State, bool) {
	if s == StateClosed || s == StateFailed {
		return s, false // nothing after close or Error
	}
	pending := s == StateMountPending || s == StateHooksPending || s == StateReadyPending || s == StateSeccompPending
	if ty == TypeError {
		// The child may fail at any point; the parent only as a reply.
		if d == ChildToParent || pending {
			return StateFailed, true
		}
		return s, false
	}
	next, ok := specLegal[fmt.Sprintf("%s %s %s", s, dirTag(d), TypeName(ty))]
	return next, ok
}

func specClose(s State, d Direction) bool {
	switch s {
	case StateRunning, StateSeccompDone, StateFailed:
		return true
	case StateClosed:
		return d == ParentToChild
	}
	return false
}

func machineAt(role Role, flow Flow, s State) *Machine {
	m := NewMachine(role, flow)
	m.state = s
	return m
}

// Every (role, flow, state, direction, type): legal steps move to the
// spec's state; every other is a *ProtocolError naming the state, the
// expected set, what came, the direction and who caused it, and leaves
// the state alone.
func TestStateMachineExhaustive(t *testing.T) {
	types := append([]pb.MessageType{pb.MessageType_MESSAGE_TYPE_UNSPECIFIED, 42}, AllTypes...)
	checked := 0
	for _, role := range []Role{RoleParent, RoleChild} {
		for _, flow := range []Flow{FlowInit, FlowExec} {
			for _, s := range allStates {
				if !reachable(flow, s) {
					continue
				}
				for _, d := range []Direction{ChildToParent, ParentToChild} {
					var expected []pb.MessageType
					for _, ty := range AllTypes {
						if _, ok := specStep(s, d, ty); ok {
							expected = append(expected, ty)
						}
					}
					for _, ty := range types {
						checked++
						m := machineAt(role, flow, s)
						var err error
						if (d == ParentToChild) == (role == RoleParent) {
							err = m.OnSend(ty)
						} else {
							err = m.OnRecv(ty)
						}
						want, ok := specStep(s, d, ty)
						where := fmt.Sprintf("%s/%s/%s/%s/%s", role, flow, s, d, TypeName(ty))
						if ok {
							if err != nil || m.State() != want {
								t.Fatalf("%s: got %v, state %s; want state %s", where, err, m.State(), want)
							}
							continue
						}
						var pe *ProtocolError
						if !errors.As(err, &pe) {
							t.Fatalf("%s: got %v, want a *ProtocolError", where, err)
						}
						if m.State() != s || pe.State != s || pe.Direction != d || pe.Got != ty || pe.Role != role ||
							pe.Flow != flow || pe.Closed || !slices.Equal(pe.Expected, expected) {
							t.Fatalf("%s: bad error %+v (state now %s, expected %v)", where, pe, m.State(), expected)
						}
						if pe.ByPeer() != ((role == RoleParent) == (d == ChildToParent)) {
							t.Fatalf("%s: ByPeer %v", where, pe.ByPeer())
						}
						msg := pe.Error()
						if !strings.Contains(msg, s.String()) || !strings.Contains(msg, TypeName(ty)) || !strings.Contains(msg, d.String()) {
							t.Fatalf("%s: error text %q lacks state/type/direction", where, msg)
						}
					}
					// Closing.
					checked++
					m := machineAt(role, flow, s)
					var err error
					if (d == ParentToChild) == (role == RoleParent) {
						err = m.OnLocalClose()
					} else {
						err = m.OnPeerClosed()
					}
					if specClose(s, d) {
						if err != nil || m.State() != StateClosed {
							t.Fatalf("%s/%s/%s/%s close: %v", role, flow, s, d, err)
						}
					} else {
						var pe *ProtocolError
						if !errors.As(err, &pe) || !pe.Closed || pe.State != s || m.State() != s {
							t.Fatalf("%s/%s/%s/%s close: got %v", role, flow, s, d, err)
						}
					}
				}
			}
		}
	}
	if checked != 2*(10+7)*2*12 {
		t.Fatalf("checked %d cases", checked)
	}
}

func TestStateMachineNamedViolations(t *testing.T) {
	run := func(role Role, flow Flow, steps ...string) error {
		m := NewMachine(role, flow)
		for _, st := range steps {
			var d Direction
			name := st[4:]
			if strings.HasPrefix(st, "c2p ") {
				d = ChildToParent
			} else {
				d = ParentToChild
			}
			if name == "close" {
				if err := m.Close(d); err != nil {
					return err
				}
				continue
			}
			ty := TypeError
			for _, x := range AllTypes {
				if TypeName(x) == name {
					ty = x
				}
			}
			if err := m.Step(d, ty); err != nil {
				return err
			}
		}
		return nil
	}
	cases := []struct {
		name   string
		flow   Flow
		steps  []string
		reason string // "" = legal
	}{
		{"full init", FlowInit, []string{"c2p MountPlease", "p2c MountFd", "c2p MountPlease", "p2c MountFd", "c2p Hooks", "p2c HooksDone", "c2p Ready", "p2c Run", "c2p Seccomp", "p2c SeccompDone", "c2p close", "p2c close"}, ""},
		{"minimal init", FlowInit, []string{"c2p Hooks", "p2c HooksDone", "c2p Ready", "p2c Run", "c2p close"}, ""},
		{"exec", FlowExec, []string{"c2p Ready", "p2c Run", "c2p close"}, ""},
		{"refused mount", FlowInit, []string{"c2p MountPlease", "p2c Error", "c2p close"}, ""},
		{"child fails", FlowInit, []string{"c2p MountPlease", "c2p Error", "c2p close"}, ""},
		{"second Hooks", FlowInit, []string{"c2p Hooks", "p2c HooksDone", "c2p Hooks"}, ""},
		{"second Ready", FlowExec, []string{"c2p Ready", "p2c Run", "c2p Ready"}, ""},
		{"reply with no request", FlowInit, []string{"p2c MountFd"}, "no request is pending"},
		{"request while pending", FlowInit, []string{"c2p MountPlease", "c2p Hooks"}, "MountPlease is still waiting for its reply"},
		{"wrong reply", FlowInit, []string{"c2p MountPlease", "p2c HooksDone"}, "wrong reply to MountPlease"},
		{"MountPlease after Hooks", FlowInit, []string{"c2p Hooks", "p2c HooksDone", "c2p MountPlease"}, ""},
		{"MountPlease in exec", FlowExec, []string{"c2p MountPlease"}, ""},
		{"parent Error unprompted", FlowInit, []string{"p2c Error"}, "the parent may send Error only as the reply to a pending request"},
		{"after Error", FlowInit, []string{"c2p Error", "c2p Hooks"}, "exchange already failed with an Error"},
		{"after close", FlowExec, []string{"c2p Ready", "p2c Run", "c2p close", "c2p Seccomp"}, "exchange already closed"},
		{"closed without Ready", FlowInit, []string{"c2p Hooks", "p2c HooksDone", "c2p close"}, "child closed without Ready"},
		{"closed with Ready pending", FlowExec, []string{"c2p Ready", "c2p close"}, "child closed without Ready (Ready pending)"},
		{"closed with Seccomp pending", FlowExec, []string{"c2p Ready", "p2c Run", "c2p Seccomp", "c2p close"}, "child closed with Seccomp pending"},
		{"parent closes early", FlowExec, []string{"c2p Ready", "p2c close"}, "parent closed with Ready pending"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := run(RoleParent, c.flow, c.steps...)
			wantErr := c.reason != "" || strings.HasPrefix(c.name, "second") || strings.HasPrefix(c.name, "MountPlease")
			if !wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a protocol error", err)
			}
			if !strings.Contains(pe.Error(), c.reason) {
				t.Fatalf("error %q lacks %q", pe.Error(), c.reason)
			}
		})
	}
}
