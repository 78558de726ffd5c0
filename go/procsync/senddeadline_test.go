//go:build linux

package procsync

import (
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

// neverReadsRequests is how many MountPlease the never-reads child sends.
const neverReadsRequests = 5000

// neverReads is the never-reads child: it asks for many mounts (each a
// different source) and never reads a reply, so the parent's replies pile
// up in its receive queue until the parent's sends would block. It stays
// alive (blocked in its own send, or asleep) until the test kills it.
func neverReads(sock *SyncSocket) error {
	for i := range neverReadsRequests {
		n := strconv.Itoa(i)
		if err := sock.Send(MountPleaseMessage(BindMount("/srv/"+n, "/mnt/"+n)), nil); err != nil {
			break
		}
	}
	time.Sleep(20 * time.Second)
	return nil
}

// fill sends Ready records on s without waiting until the peer's receive
// queue takes no more, and returns how many went out.
func fill(t *testing.T, s *SyncSocket) int {
	t.Helper()
	for n := 0; n < 1<<20; n++ {
		err := s.SendDeadline(ReadyMessage(), nil, time.Now())
		if errors.Is(err, ErrSendTimeout) {
			if n == 0 {
				t.Fatal("not one record fitted")
			}
			return n
		}
		if err != nil {
			t.Fatalf("record %d: %v", n, err)
		}
	}
	t.Fatal("the socket never filled up")
	return 0
}

// drain receives exactly n Ready records without fds from s and then
// checks that nothing else is queued (want: the error the next Recv
// returns, os.ErrDeadlineExceeded or ErrPeerClosed).
func drain(t *testing.T, s *SyncSocket, n int, want error) {
	t.Helper()
	for i := range n {
		m, f, err := s.Recv(soon())
		if err != nil || m.GetType() != TypeReady || f != nil {
			closeFile(f)
			t.Fatalf("record %d of %d: %v %v (fd %v)", i, n, m, err, f != nil)
		}
	}
	m, f, err := s.Recv(time.Now().Add(50 * time.Millisecond))
	closeFile(f)
	if !errors.Is(err, want) {
		t.Fatalf("after the %d records: %v %v, want %v", n, m, err, want)
	}
}

// wantSendTimeout checks err is a send timeout for ty after about d.
func wantSendTimeout(t *testing.T, err error, ty pb.MessageType, d, took time.Duration) {
	t.Helper()
	var st *SendTimeoutError
	if !errors.As(err, &st) || !errors.Is(err, ErrSendTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) || !os.IsTimeout(st) {
		t.Fatalf("want a send timeout, got %v", err)
	}
	if st.Type != ty {
		t.Fatalf("timed out sending %s, want %s", TypeName(st.Type), TypeName(ty))
	}
	if took < d || took > d+2*time.Second {
		t.Fatalf("returned after %v, deadline %v", took, d)
	}
	if st.Waited <= 0 || st.Waited > took {
		t.Fatalf("Waited %v, took %v", st.Waited, took)
	}
}

func TestSendDeadlineToAPeerThatNeverReads(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		n := fill(t, a)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		const d = 200 * time.Millisecond
		start := time.Now()
		err = a.SendFDDeadline(MountFdMessage(SourcePlainOpen, "/x"), int(w.Fd()), start.Add(d))
		wantSendTimeout(t, err, TypeMountFd, d, time.Since(start))
		// The *os.File form too.
		start = time.Now()
		err = a.SendDeadline(MountFdMessage(SourcePlainOpen, "/y"), r, start.Add(d))
		wantSendTimeout(t, err, TypeMountFd, d, time.Since(start))
		// Nothing of either went out: exactly the n fillers are queued,
		// and no fd arrives.
		drain(t, b, n, os.ErrDeadlineExceeded)
		// With room again, the same call sends, even with a deadline
		// already past.
		if err := a.SendDeadline(MountFdMessage(SourcePlainOpen, "/z"), w, time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		m, got, err := b.Recv(soon())
		if err != nil || m.GetMountFd().GetSource() != "/z" || got == nil || !sameFile(t, got, int(w.Fd())) {
			t.Fatalf("%v %v", m, err)
		}
		got.Close()
	})
}

func TestSendWithoutDeadlineWaitsForRoom(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	n := fill(t, a)
	done := make(chan error, 1)
	go func() { done <- a.Send(RunMessage(), nil) }()
	select {
	case err := <-done:
		t.Fatalf("Send returned with the peer's queue full: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	drain(t, b, n, nil) // the Run may or may not be there yet
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send still blocked after the peer read everything")
	}
}

func TestSendDeadlinePeerDied(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		n := fill(t, a)
		cmd := exec.Command("/bin/sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pidfd, err := PidfdOpen(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		defer pidfd.Close()
		a.SetPeerPidfd(int(pidfd.Fd()))
		go func() {
			time.Sleep(100 * time.Millisecond)
			_ = cmd.Process.Kill()
		}()
		start := time.Now()
		err = a.SendDeadline(RunMessage(), nil, start.Add(10*time.Second))
		if !errors.Is(err, ErrPeerDied) || errors.Is(err, ErrSendTimeout) {
			t.Fatalf("got %v", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("peer death noticed only at the deadline")
		}
		_ = cmd.Wait()
		a.SetPeerPidfd(-1)
		drain(t, b, n, os.ErrDeadlineExceeded)
	})
}

func TestChildAppliesItsDeadlineToSends(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		n := fill(t, b)
		const d = 200 * time.Millisecond
		c := NewChild(b, Options{Flow: FlowInit, Timeout: d})
		start := time.Now()
		err := c.Hooks()
		took := time.Since(start)
		var se *SessionError
		if !errors.As(err, &se) || se.Role != RoleChild || se.State != StateMounting || se.Op != "send Hooks" {
			t.Fatalf("got %v", err)
		}
		wantSendTimeout(t, err, TypeHooks, d, took)
		if c.State() != StateMounting {
			t.Fatalf("state %s after a send that did not happen", c.State())
		}
		drain(t, a, n, os.ErrDeadlineExceeded)
		_ = c.Close()
	})
}

func TestParentBoundsItsErrorReply(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer b.Close()
		n := fill(t, a)
		if err := b.Send(MountPleaseMessage(BindMount("/srv/a", "/a")), nil); err != nil {
			t.Fatal(err)
		}
		const d = 200 * time.Millisecond
		start := time.Now()
		// No mounts configured: the request is refused, and the Error
		// reply finds no room.
		err := NewParent(a, ParentOptions{Options: Options{Flow: FlowInit, Timeout: d}}).Serve(newRecorder())
		took := time.Since(start)
		var mr *MountRefusedError
		if !errors.As(err, &mr) {
			t.Fatalf("got %v", err)
		}
		if took < d || took > d+2*time.Second {
			t.Fatalf("Serve returned after %v, deadline %v", took, d)
		}
		// The Error did not go out; Serve shut the socket down.
		drain(t, b, n, ErrPeerClosed)
	})
}

// TestParentServingAChildThatNeverReadsItsReplies mirrors the Rust test
// a_child_that_never_reads_its_replies_runs_into_the_send_deadline: a live
// child keeps asking for mounts and reads nothing; the parent's replies
// fill the socket and Serve ends at the per-message deadline of the send.
func TestParentServingAChildThatNeverReadsItsReplies(t *testing.T) {
	noLeak(t, func() {
		cp, sock := startChild(t, "never-reads", "")
		defer cp.pidfd.Close()
		// Long enough that a loaded machine cannot stretch the gap between
		// two of the child's requests past it (the receive deadline is
		// the same Timeout): only the send may run into it.
		const d = 1500 * time.Millisecond
		h := HandlerFuncs{MountFunc: func(*pb.Mount) (*os.File, pb.MountSourceKind, error) {
			fd, err := unix.Open("/dev/null", unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, 0, err
			}
			return os.NewFile(uintptr(fd), "/dev/null"), SourcePlainOpen, nil
		}}
		p := NewParent(sock, ParentOptions{
			Options: Options{Flow: FlowInit, Timeout: d, PeerPidfd: cp.pidfd},
			Policy:  AllowAll{},
		})
		type result struct {
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			err := p.Serve(h)
			done <- result{err, time.Since(start)}
		}()
		var r result
		hung := false
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			hung = true
		}
		alive := procState(t, cp.cmd.Process.Pid) != 'Z'
		// Killing the child ends a hung Serve through the pidfd.
		_ = cp.cmd.Process.Kill()
		if hung {
			r = <-done
			t.Fatalf("Serve blocked sending to a live child that reads nothing: %v", r.err)
		}
		err := cp.cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child: %v: %s", err, cp.stderr.String())
		}
		if !alive {
			t.Fatalf("the child died on its own: %s", cp.stderr.String())
		}
		var se *SessionError
		if !errors.As(r.err, &se) || se.Role != RoleParent || se.State != StateAwaitMountFd ||
			se.Op != "send MountFd (reply to MountPlease)" {
			t.Fatalf("got %v", r.err)
		}
		var st *SendTimeoutError
		if !errors.As(r.err, &st) || st.Type != TypeMountFd || !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v", r.err)
		}
		if r.took < d || r.took > d+5*time.Second {
			t.Fatalf("Serve took %v, deadline %v", r.took, d)
		}
		cp.pidfd.Close()
	})
}

// procState is the state letter of process pid (R, S, Z, ...).
func procState(t *testing.T, pid int) byte {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		t.Fatalf("odd /proc/%d/stat: %q", pid, s)
	}
	return s[i+2]
}
