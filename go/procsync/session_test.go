//go:build linux

package procsync

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The session tests run the child side in a real process: the test binary
// re-executed with envChild naming the scenario (see TestMain).
const (
	envChild = "PROCSYNC_GO_TEST_CHILD"
	envDir   = "PROCSYNC_GO_TEST_DIR"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envBenchPeer); mode != "" {
		if err := runBenchPeer(mode); err != nil {
			fmt.Fprintln(os.Stderr, "bench peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if scenario := os.Getenv(envChild); scenario != "" {
		if err := runChildScenario(scenario); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func sameDir(f *os.File, path string) error {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return err
	}
	if err := unix.Stat(path, &b); err != nil {
		return err
	}
	if a.Dev != b.Dev || a.Ino != b.Ino {
		return fmt.Errorf("fd is %d:%d, %s is %d:%d", a.Dev, a.Ino, path, b.Dev, b.Ino)
	}
	return nil
}

func runChildScenario(scenario string) error {
	sock, err := FromEnv()
	if err != nil {
		return err
	}
	if scenario == "never-reads" {
		return neverReads(sock)
	}
	dir := os.Getenv(envDir)
	flow := FlowInit
	if strings.HasPrefix(scenario, "exec") {
		flow = FlowExec
	}
	c := NewChild(sock, Options{Flow: flow, Timeout: 10 * time.Second})
	switch scenario {
	case "init-full":
		for _, sub := range []string{"a", "b"} {
			f, kind, err := c.MountPlease(BindMount(dir+"/"+sub, "/"+sub))
			if err != nil {
				return err
			}
			if kind != SourcePlainOpen {
				return fmt.Errorf("kind %s", SourceKindName(kind))
			}
			if err := sameDir(f, dir+"/"+sub); err != nil {
				return err
			}
			f.Close()
		}
		if err := c.Hooks(); err != nil {
			return err
		}
		if err := c.Ready(); err != nil {
			return err
		}
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		defer r.Close()
		defer w.Close()
		if err := c.Seccomp(w); err != nil {
			return err
		}
		return c.Close()
	case "exec-child-fd":
		if err := c.Ready(); err != nil {
			return err
		}
		if err := c.SeccompChildFD(7); err != nil {
			return err
		}
		return c.Close()
	case "refused":
		_, _, err := c.MountPlease(BindMount(dir+"/a", "/elsewhere"))
		var re *RemoteError
		if !errors.As(err, &re) || re.From != RoleParent || re.Pending != TypeMountPlease {
			return fmt.Errorf("want a refusal, got %v", err)
		}
		if err := c.Fail("must not be sendable"); err == nil {
			return errors.New("Fail after the parent's Error was allowed")
		}
		return c.Close()
	case "twice":
		f, _, err := c.MountPlease(BindMount(dir+"/a", "/a"))
		if err != nil {
			return err
		}
		f.Close()
		_, _, err = c.MountPlease(BindMount(dir+"/a", "/a"))
		var re *RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Message, "already served") {
			return fmt.Errorf("want a refusal, got %v", err)
		}
		return c.Close()
	case "fail":
		if err := c.Hooks(); err != nil {
			return err
		}
		if err := c.Fail("cannot pivot_root: boom"); err != nil {
			return err
		}
		if err := c.Close(); err != nil {
			return err
		}
		if err := c.Fail("after close"); !errors.Is(err, ErrClosed) {
			return fmt.Errorf("Fail after Close: %v", err)
		}
		return nil
	case "close-early":
		if err := c.Hooks(); err != nil {
			return err
		}
		var pe *ProtocolError
		if err := c.Close(); !errors.As(err, &pe) || pe.ByPeer() {
			return fmt.Errorf("early Close: %v", err)
		}
		return nil
	case "hooks-refused":
		err := c.Hooks()
		var re *RemoteError
		if !errors.As(err, &re) || re.Message != "Hooks failed in the parent: hook exited 1" {
			return fmt.Errorf("want hook failure, got %v", err)
		}
		return c.Close()
	case "orphan", "orphan-after-run":
		if scenario == "orphan-after-run" {
			if err := c.Hooks(); err != nil {
				return err
			}
			if err := c.Ready(); err != nil {
				return err
			}
		}
		// Hand the socket to a grandchild that outlives us: the parent
		// never reads EOF and must notice our death through the pidfd.
		if _, err := unix.FcntlInt(uintptr(sock.Fd()), unix.F_SETFD, 0); err != nil {
			return err
		}
		cmd := exec.Command("/bin/sleep", "30")
		if err := cmd.Start(); err != nil {
			return err
		}
		fmt.Println(cmd.Process.Pid)
		os.Exit(0)
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

type childProc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	pidfd  *os.File
}

func startChild(t *testing.T, scenario, dir string) (*childProc, *SyncSocket) {
	t.Helper()
	parent, child, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	cp := &childProc{cmd: exec.Command(os.Args[0], "-test.run=^$")}
	// GORACE: a race-enabled child would otherwise sleep 1 s at exit.
	cp.cmd.Env = append(os.Environ(), envChild+"="+scenario, envDir+"="+dir, "GORACE=atexit_sleep_ms=0")
	cp.cmd.Stdout, cp.cmd.Stderr = &cp.stdout, &cp.stderr
	if err := child.PassToChild(cp.cmd); err != nil {
		t.Fatal(err)
	}
	if err := cp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	if cp.pidfd, err = PidfdOpen(cp.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.pidfd.Close() })
	return cp, parent
}

func (cp *childProc) wait(t *testing.T, wantOK bool) {
	t.Helper()
	err := cp.cmd.Wait()
	if wantOK && err != nil {
		t.Fatalf("child: %v: %s", err, cp.stderr.String())
	}
	if !wantOK && err == nil {
		t.Fatalf("child succeeded: %s", cp.stderr.String())
	}
}

func mountDirs(t *testing.T) string {
	dir := t.TempDir()
	for _, sub := range []string{"a", "b"} {
		if err := os.Mkdir(dir+"/"+sub, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type recorder struct {
	HandlerFuncs
	calls []string
}

func newRecorder() *recorder {
	r := &recorder{}
	r.HooksFunc = func() error { r.calls = append(r.calls, "hooks"); return nil }
	r.ReadyFunc = func() error { r.calls = append(r.calls, "ready"); return nil }
	r.MountFunc = func(m *pb.Mount) (*os.File, pb.MountSourceKind, error) {
		r.calls = append(r.calls, "mount "+m.GetDestination())
		return pinAndOpen(m)
	}
	r.SeccompFunc = func(req SeccompRequest) error {
		if req.File != nil {
			r.calls = append(r.calls, "seccomp fd")
			req.File.Close()
		} else {
			r.calls = append(r.calls, "seccomp child fd "+strconv.Itoa(int(req.ChildFD)))
		}
		return nil
	}
	return r
}

func TestSessionInitAcrossProcesses(t *testing.T) {
	noLeak(t, func() {
		dir := mountDirs(t)
		cp, sock := startChild(t, "init-full", dir)
		rec := newRecorder()
		p := NewParent(sock, ParentOptions{
			Options: Options{Flow: FlowInit, PeerPidfd: cp.pidfd, Timeout: 10 * time.Second},
			Mounts:  []*pb.Mount{BindMount(dir+"/a", "/a"), BindMount(dir+"/b", "/b")},
		})
		if err := p.Serve(rec); err != nil {
			t.Fatalf("serve: %v (child: %s)", err, cp.stderr.String())
		}
		cp.wait(t, true)
		want := "mount /a|mount /b|hooks|ready|seccomp fd"
		if got := strings.Join(rec.calls, "|"); got != want {
			t.Fatalf("calls %q, want %q", got, want)
		}
		if p.State() != StateClosed {
			t.Fatalf("state %s", p.State())
		}
		cp.pidfd.Close()
	})
}

func TestSessionExecChildFD(t *testing.T) {
	cp, sock := startChild(t, "exec-child-fd", "")
	rec := newRecorder()
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowExec, PeerPidfd: cp.pidfd}}).Serve(rec)
	if err != nil {
		t.Fatal(err, cp.stderr.String())
	}
	cp.wait(t, true)
	if got := strings.Join(rec.calls, "|"); got != "ready|seccomp child fd 7" {
		t.Fatal(got)
	}
}

func TestSessionMountRefused(t *testing.T) {
	dir := mountDirs(t)
	cp, sock := startChild(t, "refused", dir)
	rec := newRecorder()
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit},
		Mounts: []*pb.Mount{BindMount(dir+"/a", "/a")}}).Serve(rec)
	var mr *MountRefusedError
	if !errors.As(err, &mr) || mr.Mount.GetDestination() != "/elsewhere" || mr.Reason != `"`+dir+`/a" -> "/elsewhere" is not one of the container's configured mounts` {
		t.Fatalf("got %v", err)
	}
	cp.wait(t, true)
	if len(rec.calls) != 0 {
		t.Fatalf("handler called: %v", rec.calls)
	}
}

func TestSessionMountServedOnce(t *testing.T) {
	dir := mountDirs(t)
	cp, sock := startChild(t, "twice", dir)
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit},
		Mounts: []*pb.Mount{BindMount(dir+"/a", "/a")}}).Serve(newRecorder())
	var mr *MountRefusedError
	if !errors.As(err, &mr) || mr.Reason != `"`+dir+`/a" -> "/a" was already served (configured mount #0); each configured mount is served once` {
		t.Fatalf("got %v", err)
	}
	cp.wait(t, true)
}

func TestSessionChildFails(t *testing.T) {
	cp, sock := startChild(t, "fail", "")
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit}}).Serve(newRecorder())
	var re *RemoteError
	if !errors.As(err, &re) || re.From != RoleChild || re.Message != "cannot pivot_root: boom" {
		t.Fatalf("got %v", err)
	}
	cp.wait(t, true)
}

func TestSessionChildClosesWithoutReady(t *testing.T) {
	cp, sock := startChild(t, "close-early", "")
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit}}).Serve(newRecorder())
	var pe *ProtocolError
	if !errors.As(err, &pe) || !pe.ByPeer() || !strings.Contains(pe.Error(), "child closed without Ready") ||
		!errors.Is(err, ErrPeerClosed) {
		t.Fatalf("got %v", err)
	}
	cp.wait(t, true)
}

func TestSessionHandlerFailure(t *testing.T) {
	cp, sock := startChild(t, "hooks-refused", "")
	h := newRecorder()
	h.HooksFunc = func() error { return errors.New("hook exited 1") }
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit}}).Serve(h)
	var he *HandlerError
	if !errors.As(err, &he) || he.Request != TypeHooks {
		t.Fatalf("got %v", err)
	}
	cp.wait(t, true)
}

func TestSessionPeerDied(t *testing.T) {
	cp, sock := startChild(t, "orphan", "")
	start := time.Now()
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit, PeerPidfd: cp.pidfd}}).Serve(newRecorder())
	cp.wait(t, true)
	if pid, perr := strconv.Atoi(strings.TrimSpace(cp.stdout.String())); perr == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	var se *SessionError
	if !errors.As(err, &se) || !errors.Is(err, ErrPeerDied) {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("death noticed too late")
	}
}

// After Run the child's close is orderly; its death (seen through the
// pidfd while a grandchild still holds the socket) is that close.
func TestSessionPeerDiedAfterRunIsTheEnd(t *testing.T) {
	cp, sock := startChild(t, "orphan-after-run", "")
	start := time.Now()
	err := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit, PeerPidfd: cp.pidfd}}).Serve(newRecorder())
	cp.wait(t, true)
	if pid, perr := strconv.Atoi(strings.TrimSpace(cp.stdout.String())); perr == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("got %v, want the orderly end", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("death noticed too late")
	}
}

func TestSessionTimeout(t *testing.T) {
	a, b := pair(t)
	defer b.Close()
	err := NewParent(a, ParentOptions{Options: Options{Flow: FlowExec, Timeout: 50 * time.Millisecond}}).Serve(newRecorder())
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	// Serve shut the socket down: the child side reads EOF.
	if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("child side: %v", err)
	}
}

func TestSessionPeerProtocolViolation(t *testing.T) {
	// A child that sends a reply type is rejected by the parent, and the
	// child reads EOF afterwards.
	a, b := pair(t)
	defer b.Close()
	if err := b.Send(RunMessage(), nil); err != nil {
		t.Fatal(err)
	}
	err := NewParent(a, ParentOptions{Options: Options{Flow: FlowExec}}).Serve(newRecorder())
	var pe *ProtocolError
	if !errors.As(err, &pe) || !pe.ByPeer() || pe.Got != TypeRun {
		t.Fatalf("got %v", err)
	}
	if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("child side: %v", err)
	}
}

func TestChildOutOfOrderSendsNothing(t *testing.T) {
	a, b := pair(t)
	defer b.Close()
	c := NewChild(a, Options{Flow: FlowExec})
	var pe *ProtocolError
	if err := c.Hooks(); !errors.As(err, &pe) || pe.ByPeer() {
		t.Fatalf("got %v", err)
	}
	if _, _, err := c.MountPlease(BindMount("/a", "/a")); !errors.As(err, &pe) {
		t.Fatalf("got %v", err)
	}
	if _, _, err := b.Recv(time.Now().Add(20 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("something was sent: %v", err)
	}
	c.Close()
}

func TestChildRejectsMismatchedMountFd(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer b.Close()
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			_, _, _ = b.Recv(soon())
			f, _ := os.Open("/")
			_ = b.Send(MountFdMessage(SourcePlainOpen, "/other"), f)
			f.Close()
		}()
		c := NewChild(a, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		_, _, err := c.MountPlease(BindMount("/srv", "/srv"))
		var me *MismatchError
		if !errors.As(err, &me) || me.Got != "/other" {
			t.Fatalf("got %v", err)
		}
		_ = c.Fail("bad reply")
		c.Close()
	})
}

func TestAllowList(t *testing.T) {
	a := BindMount("/srv/a", "/a")
	p := NewAllowList(a, BindMount("/srv/b", "/b"), BindMount("/srv/b", "/b"))
	if err := p.Allow(BindMount("/srv/a", "/a")); err != nil {
		t.Fatal(err)
	}
	var pr *PolicyRefusal
	if err := p.Allow(a); !errors.As(err, &pr) || pr.Kind != RefusalAlreadyServed || pr.Index != 0 ||
		err.Error() != `"/srv/a" -> "/a" was already served (configured mount #0); each configured mount is served once` {
		t.Fatalf("second /a: %v", err)
	}
	// Listed twice: served twice.
	for i := 0; i < 2; i++ {
		if err := p.Allow(BindMount("/srv/b", "/b")); err != nil {
			t.Fatal(i, err)
		}
	}
	// Every field counts.
	for _, m := range []*pb.Mount{
		BindMount("/srv/a", "/b"),
		{Source: "/srv/a", Destination: "/a", Device: "bind", Flags: MsBind | MsRec},
		{Source: "/srv/a", Destination: "/a", Device: "bind", Flags: MsBind, RecAttr: &pb.MountAttr{AttrSet: 1}},
	} {
		q := NewAllowList(BindMount("/srv/a", "/a"))
		if err := q.Allow(m); err == nil {
			t.Fatalf("served %v", m)
		}
	}
	// extensions and relabel are not compared.
	q := NewAllowList(BindMount("/srv/a", "/a"))
	if err := q.Allow(&pb.Mount{Source: "/srv/a", Destination: "/a", Device: "bind", Flags: MsBind, Relabel: "Z", Extensions: 1}); err != nil {
		t.Fatal(err)
	}
	// The nearest configured mount at the same destination names the field.
	q = NewAllowList(BindMount("/srv/a", "/a"))
	err := q.Allow(&pb.Mount{Source: "/srv/a", Destination: "/a", Device: "bind", Flags: MsBind | MsRec})
	if !errors.As(err, &pr) || pr.Kind != RefusalNotConfigured || err.Error() !=
		`"/srv/a" -> "/a" is not one of the container's configured mounts (the configured mount at "/a" differs in flags)` {
		t.Fatalf("got %v", err)
	}
	if got := RefusalText(err); got != RefusalPrefix+err.Error() || RefusalText(Denied("no")) != "mount request refused: no" {
		t.Fatalf("refusal text %q", got)
	}
	// An empty rec_attr or id_mapping means the same as none.
	q = NewAllowList(BindMount("/srv/a", "/a"))
	m := BindMount("/srv/a", "/a")
	m.RecAttr = &pb.MountAttr{}
	m.IdMapping = &pb.IdMapping{}
	if err := q.Allow(m); err != nil {
		t.Fatal(err)
	}
	if m.RecAttr == nil {
		t.Fatal("request modified")
	}
	if err := NewAllowList().Allow(a); err == nil {
		t.Fatal("empty list served a mount")
	}
}

// A parent that breaks the protocol (a wrong reply) leaves the child
// Broken: the reply's fd is closed, nothing acts on it, and the child may
// still send one Error explaining why before it closes (orderly then).
func TestChildMayExplainAViolationWithOneError(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer b.Close()
		c := NewChild(a, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		done := make(chan *pb.SyncMessage, 1)
		go func() {
			_, _, _ = b.Recv(soon())
			f, _ := os.Open("/")
			_ = b.Send(MountFdMessage(SourcePlainOpen, "/srv"), f) // answers Hooks with MountFd
			f.Close()
			m, _, _ := b.Recv(soon())
			done <- m
		}()
		var pe *ProtocolError
		if err := c.Hooks(); !errors.As(err, &pe) || !pe.ByPeer() || c.State() != StateBroken ||
			pe.Detail() != "in state AwaitHooksDone (init, child): expected HooksDone or Error from parent, got MountFd" {
			t.Fatalf("got %v, state %s", err, c.State())
		}
		if err := c.Fail(pe.Detail()); err != nil {
			t.Fatal(err)
		}
		if m := <-done; m.GetType() != TypeError || m.GetError().GetMessage() != pe.Detail() {
			t.Fatalf("parent got %v", m)
		}
		if err := c.Fail("again"); !errors.As(err, &pe) || pe.ByPeer() {
			t.Fatalf("second Error: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close after Error: %v", err)
		}
	})
}

// Fail never writes to a connection the parent has shut down (runc
// #4171): it reports the close instead.
func TestChildFailDoesNotWriteToAClosedParent(t *testing.T) {
	a, b := pair(t)
	c := NewChild(a, Options{Flow: FlowExec})
	if err := b.ShutdownWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.Fail("too late"); !errors.Is(err, ErrPeerClosed) || c.State() != StateClosed {
		t.Fatalf("got %v, state %s", err, c.State())
	}
	if _, _, err := b.Recv(time.Now().Add(20 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("something was written: %v", err)
	}
	b.Close()
	c.Close()
}

// A handler failure is answered with "<Request> failed in the parent: ...",
// as the Rust parent words it.
func TestParentHandlerFailureText(t *testing.T) {
	a, b := pair(t)
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowExec}}).Serve(HandlerFuncs{
			ReadyFunc: func() error { return errors.New("cgroup: EBUSY") },
		})
	}()
	c := NewChild(b, Options{Flow: FlowExec, Timeout: 5 * time.Second})
	var re *RemoteError
	if err := c.Ready(); !errors.As(err, &re) || re.Message != "Ready failed in the parent: cgroup: EBUSY" {
		t.Fatalf("got %v", err)
	}
	var he *HandlerError
	if err := <-done; !errors.As(err, &he) || he.Request != TypeReady {
		t.Fatalf("parent: %v", err)
	}
	if c.State() != StateFailed {
		t.Fatalf("state %s", c.State())
	}
	c.Close()
}

// HandlerFuncs' defaults are the Rust ParentHandler's: no mounts served,
// no seccomp fd taken (the attached one is closed), each answered with an
// Error reply.
func TestHandlerFuncsDefaultsRefuse(t *testing.T) {
	noLeak(t, func() {
		for _, tc := range []struct {
			flow Flow
			want string
			run  func(c *Child) error
		}{
			{FlowInit, `MountPlease failed in the parent: this parent serves no mount requests (asked for "/srv")`,
				func(c *Child) error { _, _, err := c.MountPlease(BindMount("/srv", "/srv")); return err }},
			{FlowExec, "Seccomp failed in the parent: this parent takes no seccomp notify fd",
				func(c *Child) error {
					if err := c.Ready(); err != nil {
						return err
					}
					r, w, err := os.Pipe()
					if err != nil {
						return err
					}
					defer r.Close()
					defer w.Close()
					return c.Seccomp(w)
				}},
		} {
			a, b := pair(t)
			done := make(chan error, 1)
			go func() {
				done <- NewParent(a, ParentOptions{Options: Options{Flow: tc.flow},
					Mounts: []*pb.Mount{BindMount("/srv", "/srv")}}).Serve(HandlerFuncs{})
			}()
			c := NewChild(b, Options{Flow: tc.flow, Timeout: 5 * time.Second})
			var re *RemoteError
			if err := tc.run(c); !errors.As(err, &re) || re.Message != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			var he *HandlerError
			if err := <-done; !errors.As(err, &he) {
				t.Fatalf("parent: %v", err)
			}
			c.Close()
		}
	})
}

// A reply the parent's own codec refuses (a MountFd of an unspecified
// kind) still answers the child: with an Error naming the cause, as the
// Rust parent does; the handler's fd is closed.
func TestParentReplyItCannotSendBecomesAnError(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		done := make(chan error, 1)
		go func() {
			done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit},
				Mounts: []*pb.Mount{BindMount("/", "/r")}}).Serve(HandlerFuncs{
				MountFunc: func(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
					f, err := os.Open("/")
					return f, pb.MountSourceKind_MOUNT_SOURCE_KIND_UNSPECIFIED, err
				},
			})
		}()
		c := NewChild(b, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		var re *RemoteError
		_, _, err := c.MountPlease(BindMount("/", "/r"))
		if !errors.As(err, &re) || !strings.HasPrefix(re.Message, "MountPlease failed in the parent: cannot send MountFd: ") {
			t.Fatalf("got %v", err)
		}
		var he *HandlerError
		var ee *EncodeError
		if err := <-done; !errors.As(err, &he) || !errors.As(err, &ee) {
			t.Fatalf("parent: %v", err)
		}
		c.Close()
	})
}
