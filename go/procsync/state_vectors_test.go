package procsync

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// tests/vectors/state.json is generated from the Rust state machine
// (tests/state_vectors.rs); it is the contract this package's Machine is
// held to: every reachable machine of every role and flow, reached by its
// path, must show the same observables, and every event from it must have
// the same outcome (accepted, or rejected with the same kind, origin,
// state, legal set and pending request; texts are not compared) and lead
// to the listed machine.
const stateVectorsPath = "../../tests/vectors/state.json"

type stateOutcome struct {
	Event string `json:"event"`
	Next  int    `json:"next"`
	State string `json:"state"`
	Error *struct {
		Kind     string   `json:"kind"`
		Origin   string   `json:"origin"`
		State    string   `json:"state"`
		Expected []string `json:"expected"`
		Pending  *string  `json:"pending"`
	} `json:"error"`
}

type stateMachineVector struct {
	Role       string         `json:"role"`
	Flow       string         `json:"flow"`
	ID         int            `json:"id"`
	Path       []string       `json:"path"`
	State      string         `json:"state"`
	Pending    *string        `json:"pending"`
	ExpectSend []string       `json:"expect_send"`
	ExpectRecv []string       `json:"expect_recv"`
	FailedBy   *string        `json:"failed_by"`
	ClosedBy   *string        `json:"closed_by"`
	Outcomes   []stateOutcome `json:"outcomes"`
}

type stateVectorFile struct {
	Format   string               `json:"format"`
	Events   []string             `json:"events"`
	Machines []stateMachineVector `json:"machines"`
}

func typeByName(tb testing.TB, name string) pb.MessageType {
	tb.Helper()
	for t := pb.MessageType(0); t <= TypeSeccompDone; t++ {
		if TypeName(t) == name {
			return t
		}
	}
	tb.Fatalf("unknown type %q", name)
	return 0
}

// applyEvent applies one event of the file's vocabulary to a copy of m.
func applyEvent(tb testing.TB, m Machine, ev string) (Machine, error) {
	tb.Helper()
	var err error
	switch dir, name, _ := strings.Cut(ev, " "); dir {
	case "send":
		err = m.OnSend(typeByName(tb, name))
	case "recv":
		err = m.OnRecv(typeByName(tb, name))
	case "close":
		err = m.CheckClose()
		m.OnClose()
	case "peer-close":
		err = m.OnPeerClosed()
	default:
		tb.Fatalf("unknown event %q", ev)
	}
	return m, err
}

func names(s TypeSet) []string {
	out := []string{}
	for _, t := range s.Types() {
		out = append(out, TypeName(t))
	}
	return out
}

func optOrigin(o Origin) string {
	if o == OriginNone {
		return "null"
	}
	return o.String()
}

// observe renders what the file lists for a machine.
func observe(m *Machine) string {
	pending := "null"
	if p, ok := m.Pending(); ok {
		pending = TypeName(p)
	}
	return fmt.Sprintf("%s pending=%s send=%v recv=%v failed_by=%s closed_by=%s", m.State(), pending,
		names(m.ExpectedSend()), names(m.ExpectedRecv()), optOrigin(m.FailedBy()), optOrigin(m.ClosedBy()))
}

func (v *stateMachineVector) observed() string {
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	return fmt.Sprintf("%s pending=%s send=%v recv=%v failed_by=%s closed_by=%s", v.State, str(v.Pending),
		v.ExpectSend, v.ExpectRecv, str(v.FailedBy), str(v.ClosedBy))
}

func TestStateVectors(t *testing.T) {
	raw, err := os.ReadFile(stateVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f stateVectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if f.Format != "procsync-state-vectors/2" || len(f.Events) != 22 {
		t.Fatalf("format %q, %d events", f.Format, len(f.Events))
	}
	outcomes := 0
	for _, role := range []Role{RoleParent, RoleChild} {
		for _, flow := range []Flow{FlowInit, FlowExec, FlowExecNoReady} {
			var group []*stateMachineVector
			for i := range f.Machines {
				if f.Machines[i].Role == role.String() && f.Machines[i].Flow == flow.String() {
					group = append(group, &f.Machines[i])
				}
			}
			if len(group) < 10 {
				t.Fatalf("%s %s: %d machines", role, flow, len(group))
			}
			seenStates := map[string]bool{}
			for id, v := range group {
				where := fmt.Sprintf("%s %s #%d (%v)", role, flow, id, v.Path)
				if v.ID != id {
					t.Fatalf("%s: id %d", where, v.ID)
				}
				m := *NewMachine(role, flow)
				for _, ev := range v.Path {
					m, _ = applyEvent(t, m, ev)
				}
				if got, want := observe(&m), v.observed(); got != want {
					t.Fatalf("%s: machine is %s, want %s", where, got, want)
				}
				seenStates[v.State] = true
				if len(v.Outcomes) != len(f.Events) {
					t.Fatalf("%s: %d outcomes", where, len(v.Outcomes))
				}
				for i, o := range v.Outcomes {
					if o.Event != f.Events[i] {
						t.Fatalf("%s: outcome %d is %q", where, i, o.Event)
					}
					next, err := applyEvent(t, m, o.Event)
					if got, want := observe(&next), group[o.Next].observed(); got != want {
						t.Errorf("%s %s: leads to %s, want %s", where, o.Event, got, want)
					}
					switch {
					case o.Error == nil && err != nil:
						t.Errorf("%s %s: rejected (%v), want accepted", where, o.Event, err)
					case o.Error != nil && err == nil:
						t.Errorf("%s %s: accepted, want %s", where, o.Event, o.Error.Kind)
					case o.Error != nil:
						pe := err.(*ProtocolError)
						pending := "null"
						if pe.Pending != 0 {
							pending = TypeName(pe.Pending)
						}
						wantPending := "null"
						if o.Error.Pending != nil {
							wantPending = *o.Error.Pending
						}
						got := fmt.Sprintf("%s origin=%s state=%s expected=%v pending=%s",
							pe.Kind(), pe.Origin(), pe.State, names(pe.Expected), pending)
						want := fmt.Sprintf("%s origin=%s state=%s expected=%v pending=%s",
							o.Error.Kind, o.Error.Origin, o.Error.State, o.Error.Expected, wantPending)
						if got != want || !slices.Equal(names(pe.Expected), o.Error.Expected) {
							t.Errorf("%s %s: got %s, want %s", where, o.Event, got, want)
						}
					}
					outcomes++
				}
			}
			for _, s := range AllStates() {
				initOnly := s == StateMounting || s == StateAwaitMountFd || s == StateAwaitHooksDone
				unreachable := (flow != FlowInit && initOnly) ||
					(flow == FlowExecNoReady && (s == StateBeforeReady || s == StateAwaitRun))
				if seenStates[s.String()] == unreachable {
					t.Errorf("%s %s: state %s listed=%v", role, flow, s, seenStates[s.String()])
				}
			}
		}
	}
	t.Logf("%d machines, %d outcomes", len(f.Machines), outcomes)
}
