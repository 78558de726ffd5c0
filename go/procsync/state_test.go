package procsync

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The exhaustive contract is tests/vectors/state.json (state_vectors_test.go);
// these are the named situations of PROTOCOL.md §9, step by step, plus what
// the Rust machine cannot be given (an unknown type number).

type step struct {
	ev   string // "send T", "recv T", "close", "peer-close"
	fail string // "" = accepted; else the expected error's blame ("local"/"peer")
}

func runSteps(t *testing.T, role Role, flow Flow, steps []step) *Machine {
	t.Helper()
	m := *NewMachine(role, flow)
	for i, s := range steps {
		var err error
		m, err = applyEvent(t, m, s.ev)
		switch {
		case s.fail == "" && err != nil:
			t.Fatalf("step %d %s: %v", i, s.ev, err)
		case s.fail != "" && err == nil:
			t.Fatalf("step %d %s: accepted, want a %s error", i, s.ev, s.fail)
		case s.fail != "":
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Origin().String() != s.fail {
				t.Fatalf("step %d %s: %v, want blame %s", i, s.ev, err, s.fail)
			}
		}
	}
	return &m
}

func ok(evs ...string) []step {
	out := make([]step, len(evs))
	for i, e := range evs {
		out[i] = step{ev: e}
	}
	return out
}

func TestStateScenarios(t *testing.T) {
	cases := []struct {
		name  string
		role  Role
		flow  Flow
		steps []step
		final State
	}{
		{"full init, parent", RoleParent, FlowInit, ok("recv MountPlease", "send MountFd", "recv MountPlease", "send MountFd",
			"recv Hooks", "send HooksDone", "recv Ready", "send Run", "recv Seccomp", "send SeccompDone", "peer-close"), StateClosed},
		{"exec, child", RoleChild, FlowExec, ok("send Ready", "recv Run", "close"), StateClosed},
		{"refused mount: parent replies Error", RoleParent, FlowInit, ok("recv MountPlease", "send Error", "peer-close"), StateClosed},
		{"crossing: the child's Error after the parent's", RoleParent, FlowInit,
			append(ok("recv MountPlease", "send Error", "recv Error"), step{"recv Error", "peer"}), StateFailed},
		{"crossing: a MountFd after the child's Error", RoleChild, FlowInit,
			append(ok("send MountPlease", "send Error", "recv MountFd"), step{"recv MountFd", "peer"}), StateFailed},
		{"no crossing after an Error nothing can cross", RoleChild, FlowExec,
			[]step{{"send Error", ""}, {"recv Run", "peer"}}, StateFailed},
		{"violation: child may send one Error", RoleChild, FlowExec,
			[]step{{"send Ready", ""}, {"recv HooksDone", "peer"}, {"send Error", ""}, {"send Error", "local"}, {"close", ""}}, StateClosed},
		{"violation: parent without a pending request may not send Error", RoleParent, FlowExec,
			[]step{{"recv Run", "peer"}, {"send Error", "local"}, {"close", ""}}, StateClosed},
		{"parent Error only as a reply", RoleParent, FlowInit, []step{{"send Error", "local"}}, StateMounting},
		{"child closed without Ready", RoleParent, FlowInit, append(ok("recv Hooks", "send HooksDone"), step{"peer-close", "peer"}), StateClosed},
		{"parent closing while Ready is pending", RoleParent, FlowExec, append(ok("recv Ready"), step{"close", "local"}), StateClosed},
		{"MountPlease after Hooks", RoleParent, FlowInit, append(ok("recv Hooks", "send HooksDone"), step{"recv MountPlease", "peer"}), StateBroken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if m := runSteps(t, c.role, c.flow, c.steps); m.State() != c.final {
				t.Fatalf("final state %s, want %s", m.State(), c.final)
			}
		})
	}
}

func TestStateErrorText(t *testing.T) {
	m := NewMachine(RoleParent, FlowExec)
	if err := m.OnRecv(TypeReady); err != nil {
		t.Fatal(err)
	}
	if err := m.OnSend(TypeRun); err != nil {
		t.Fatal(err)
	}
	err := m.OnRecv(TypeReady)
	var pe *ProtocolError
	if !errors.As(err, &pe) || !pe.ByPeer() || pe.Sender() != RoleChild {
		t.Fatalf("got %v", err)
	}
	const want = "in state Running (exec, parent): expected Seccomp or Error from child, got Ready"
	if pe.Detail() != want || err.Error() != "procsync: protocol violation by the child: "+want {
		t.Fatalf("text %q", err.Error())
	}
	if m.State() != StateBroken {
		t.Fatalf("state %s", m.State())
	}
}

// An unknown type number is never legal, in either direction, and is
// named in the error.
func TestStateUnknownType(t *testing.T) {
	for _, role := range []Role{RoleParent, RoleChild} {
		m := NewMachine(role, FlowInit)
		err := m.OnSend(pb.MessageType(42))
		if err == nil || m.State() != StateMounting || !strings.Contains(err.Error(), "Unknown(42)") {
			t.Fatalf("%s send: %v, state %s", role, err, m.State())
		}
		if err := m.OnRecv(pb.MessageType(42)); err == nil || m.State() != StateBroken {
			t.Fatalf("%s recv: %v, state %s", role, err, m.State())
		}
	}
	if TypesOf(pb.MessageType(42), pb.MessageType(-1)) != 0 {
		t.Fatal("unknown types in a set")
	}
}

// runc before v1.2.0-rc.2 runs exec without Ready/Run; a newer child's
// Ready is a violation there, and each rejection has its stable kind.
func TestExecNoReadyAndKinds(t *testing.T) {
	m := runSteps(t, RoleParent, FlowExecNoReady, ok("recv Seccomp", "send SeccompDone", "peer-close"))
	if m.State() != StateClosed {
		t.Fatalf("state %s", m.State())
	}
	if FlowExecNoReady.String() != "exec-no-ready" || FlowExecNoReady.InitialState() != StateRunning {
		t.Fatalf("%s starts in %s", FlowExecNoReady, FlowExecNoReady.InitialState())
	}
	kindOf := func(role Role, flow Flow, ev string) StateErrorKind {
		_, err := applyEvent(t, *NewMachine(role, flow), ev)
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			t.Fatalf("%s %s %s: %v", role, flow, ev, err)
		}
		return pe.Kind()
	}
	for _, c := range []struct {
		role Role
		flow Flow
		ev   string
		want StateErrorKind
	}{
		{RoleParent, FlowExecNoReady, "recv Ready", StateErrUnexpectedMessage},
		{RoleParent, FlowExec, "recv Seccomp", StateErrUnexpectedMessage},
		{RoleParent, FlowExec, "peer-close", StateErrUnexpectedClose},
		{RoleChild, FlowExec, "send Run", StateErrSendNotAllowed},
		{RoleChild, FlowInit, "close", StateErrCloseNotAllowed},
	} {
		if got := kindOf(c.role, c.flow, c.ev); got != c.want {
			t.Errorf("%s %s %s: %s, want %s", c.role, c.flow, c.ev, got, c.want)
		}
	}
}
