//go:build linux

package procsync

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// fdMu serializes tests that count this process's open fds.
var fdMu sync.Mutex

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// noLeak runs f and fails when it leaves more (or fewer) fds open than it
// found, after closing what cleanup closes.
func noLeak(t *testing.T, f func()) {
	t.Helper()
	fdMu.Lock()
	defer fdMu.Unlock()
	before := countFDs(t)
	f()
	if after := countFDs(t); after != before {
		t.Fatalf("fd count %d before, %d after", before, after)
	}
}

func pair(t *testing.T) (*SyncSocket, *SyncSocket) {
	t.Helper()
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func pipeFDs(t *testing.T) (int, int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return p[0], p[1]
}

// rawSend writes rec on s with fds attached, bypassing all checks.
func rawSend(t *testing.T, s *SyncSocket, rec []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(s.Fd(), rec, oob, nil, 0); err != nil {
		t.Fatalf("raw sendmsg: %v", err)
	}
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

// timeNone is the zero deadline: wait as long as it takes.
var timeNone time.Time

func sameFile(t *testing.T, a *os.File, fd int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(fd, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestSocketRoundTripOneRecordPerSend(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	msgs := []*pb.SyncMessage{MountPleaseMessage(BindMount("/srv/a", "/a")), ReadyMessage(), ErrorMessage("x")}
	for _, m := range msgs {
		if err := a.Send(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Each Send is exactly one seqpacket record holding the whole frame.
	buf := make([]byte, 1024)
	for _, m := range msgs {
		n, _, _, _, err := unix.Recvmsg(b.Fd(), buf, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Encode(nil, m, false, DefaultLimits())
		if string(buf[:n]) != string(want) {
			t.Fatalf("record %x, want %x", buf[:n], want)
		}
	}
	if err := a.Send(HooksMessage(), nil); err != nil {
		t.Fatal(err)
	}
	got, f, err := b.Recv(soon())
	if err != nil || f != nil || !proto.Equal(got, HooksMessage()) {
		t.Fatalf("%v %v %v", got, f, err)
	}
}

func TestSocketFdTransfer(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		dir, err := os.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		if err := a.Send(MountFdMessage(SourcePlainOpen, "/srv/a"), dir); err != nil {
			t.Fatal(err)
		}
		msg, f, err := b.Recv(soon())
		if err != nil || f == nil {
			t.Fatalf("%v %v", f, err)
		}
		defer f.Close()
		if msg.GetFlags() != FlagHasFd || !sameFile(t, f, int(dir.Fd())) {
			t.Fatalf("flags %d, not the same file", msg.GetFlags())
		}
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Fatalf("received fd not close-on-exec: %d %v", fl, err)
		}
		// Sending an fd with a type that carries none is refused before
		// the syscall.
		if err := a.Send(ReadyMessage(), dir); err == nil {
			t.Fatal("Ready with an fd was sent")
		}
	})
}

func TestSocketRejectsAndClosesFds(t *testing.T) {
	ready := []byte{0x02, 0x08, 0x02}
	mountFd := []byte{0x0c, 0x08, 0x07, 0x10, 0x01, 0x62, 0x06, 0x08, 0x01, 0x12, 0x02, 0x2f, 0x73}
	cases := []struct {
		name  string
		rec   []byte
		nfds  int
		limit int
		kind  ErrorKind
	}{
		{"HasFd without fd", []byte{0x04, 0x08, 0x02, 0x10, 0x01}, 0, 0, KindMissingFd},
		{"MountFd without fd", append([]byte{}, mountFd...), 0, 0, KindMissingFd},
		{"fd without HasFd", ready, 1, 0, KindUnexpectedFd},
		{"two fds", mountFd, 2, 0, KindTooManyFds},
		{"more fds than the control buffer holds", mountFd, 20, 0, KindTooManyFds},
		{"truncated by the kernel", append(protoFrame(strings.Repeat("x", 200)), 0), 1, 64, KindTooLarge},
		{"garbage with fd", []byte{0xff, 0xff}, 1, 0, KindTruncatedLength},
		{"truncated record with fd", mountFd[:8], 1, 0, KindLengthMismatch},
		{"oversize for the receiver with fd", protoFrame(strings.Repeat("y", 100)), 1, 64, KindTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			noLeak(t, func() {
				a, b := pair(t)
				defer a.Close()
				defer b.Close()
				if c.limit != 0 {
					b.SetLimits(NewLimits(c.limit))
				}
				var fds []int
				for i := 0; i < c.nfds; i++ {
					r, w := pipeFDs(t)
					defer unix.Close(r)
					// Only the write end travels; after the receiver
					// closes it, the read end sees EOF.
					fds = append(fds, w)
				}
				rawSend(t, a, c.rec, fds...)
				for _, fd := range fds {
					unix.Close(fd)
				}
				_, f, err := b.Recv(soon())
				if f != nil {
					t.Fatal("got a file with an error")
				}
				wantKind(t, err, c.kind)
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("%T", err)
				}
				if c.kind == KindTooLarge && (de.Size != len(c.rec) || de.Max != c.limit) {
					t.Fatalf("too-large reports %d/%d, record is %d, limit %d", de.Size, de.Max, len(c.rec), c.limit)
				}
			})
		})
	}
}

// protoFrame is a framed Error record with message s (valid, any size).
func protoFrame(s string) []byte {
	rec, err := Encode(nil, ErrorMessage(s), false, NewLimits(MaxRecordCeiling))
	if err != nil {
		panic(err)
	}
	return rec
}

func TestSocketReceivedFdsAreReallyClosed(t *testing.T) {
	// The pipe's write end travels in a rejected record; once the receiver
	// has closed it (and the sender its copy), the read end reads EOF.
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	r, w := pipeFDs(t)
	defer unix.Close(r)
	rawSend(t, a, []byte{0x02, 0x08, 0x02}, w, w)
	unix.Close(w)
	_, _, err := b.Recv(soon())
	wantKind(t, err, KindTooManyFds)
	if err := unix.SetNonblock(r, true); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Read(r, make([]byte, 1))
	if n != 0 || err != nil {
		t.Fatalf("read end: %d %v (a received copy is still open)", n, err)
	}
}

func TestSocketZeroLengthReadsAsClosed(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		rawSend(t, a, nil)
		if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("got %v", err)
		}
		a.Close()
		if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("after close: %v", err)
		}
	})
}

func TestSocketSendChecksBeforeSyscall(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	a.SetLimits(NewLimits(32))
	err := a.Send(ErrorMessage(strings.Repeat("x", 64)), nil)
	wantKind(t, err, KindTooLarge)
	err = a.Send(&pb.SyncMessage{}, nil)
	wantKind(t, err, KindUnspecifiedType)
	if _, _, err := b.Recv(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("something was sent: %v", err)
	}
}

func TestSocketSendToClosedPeer(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	b.Close()
	// MSG_NOSIGNAL: an error, not SIGPIPE.
	if err := a.Send(ReadyMessage(), nil); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("got %v", err)
	}
	if err := b.Send(ReadyMessage(), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on closed: %v", err)
	}
	if _, _, err := b.Recv(time.Time{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("recv on closed: %v", err)
	}
}

func TestSocketShutdownWrite(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	if err := a.Send(RunMessage(), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.ShutdownWrite(); err != nil {
		t.Fatal(err)
	}
	if m, _, err := b.Recv(soon()); err != nil || m.GetType() != TypeRun {
		t.Fatalf("%v %v", m, err)
	}
	if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("got %v", err)
	}
	// The other direction still works.
	if err := b.Send(ReadyMessage(), nil); err != nil {
		t.Fatal(err)
	}
	if m, _, err := a.Recv(soon()); err != nil || m.GetType() != TypeReady {
		t.Fatalf("%v %v", m, err)
	}
}

func TestSocketPeerDied(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		cmd := exec.Command("/bin/sh", "-c", "read x; exit 0")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pidfd, err := PidfdOpen(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		defer pidfd.Close()
		b.SetPeerPidfd(int(pidfd.Fd()))
		// A record sent before the peer died is still delivered.
		if err := a.Send(ReadyMessage(), nil); err != nil {
			t.Fatal(err)
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		if m, _, err := b.Recv(soon()); err != nil || m.GetType() != TypeReady {
			t.Fatalf("%v %v", m, err)
		}
		start := time.Now()
		if _, _, err := b.Recv(time.Now().Add(10 * time.Second)); !errors.Is(err, ErrPeerDied) {
			t.Fatalf("got %v", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("peer death noticed only at the deadline")
		}
	})
}

func TestSocketRecvDeadline(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	start := time.Now()
	_, _, err := b.Recv(start.Add(100 * time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("returned after %v", d)
	}
}

func TestFromFDChecksType(t *testing.T) {
	noLeak(t, func() {
		r, w := pipeFDs(t)
		defer unix.Close(r)
		defer unix.Close(w)
		if _, err := FromFD(r); err == nil {
			t.Fatal("accepted a pipe")
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		if _, err := FromFD(fds[0]); err == nil || !strings.Contains(err.Error(), "SOCK_SEQPACKET") {
			t.Fatalf("accepted a stream socket: %v", err)
		}
		if _, err := FromFD(-1); err == nil {
			t.Fatal("accepted -1")
		}
	})
}

func TestFromEnv(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	// Make the fd inheritable, as it is in a child.
	if _, err := unix.FcntlInt(uintptr(b.Fd()), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSyncFD, strconv.Itoa(b.Fd()))
	s, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := os.LookupEnv(EnvSyncFD); ok {
		t.Fatal("env var not unset")
	}
	fl, _ := unix.FcntlInt(uintptr(s.Fd()), unix.F_GETFD, 0)
	if fl&unix.FD_CLOEXEC == 0 {
		t.Fatal("not close-on-exec")
	}
	for _, bad := range []string{"", "x", "-1", "+3", "03", "99999999999", "1000000"} {
		t.Setenv(EnvSyncFD, bad)
		if _, err := FromEnv(); err == nil {
			t.Fatalf("accepted %q", bad)
		}
		if _, ok := os.LookupEnv(EnvSyncFD); ok {
			t.Fatalf("%q: env var not unset", bad)
		}
	}
	r, w := pipeFDs(t)
	defer unix.Close(r)
	defer unix.Close(w)
	t.Setenv(EnvSyncFD, strconv.Itoa(r))
	if _, err := FromEnv(); err == nil {
		t.Fatal("accepted a pipe")
	}
	os.Unsetenv(EnvSyncFD)
	if _, err := FromEnv(); err == nil {
		t.Fatal("accepted a missing variable")
	}
}

func TestPassToChildEnv(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	cmd := exec.Command("/bin/true")
	cmd.Env = []string{"A=1", EnvSyncFD + "=9"}
	cmd.ExtraFiles = []*os.File{os.Stdin}
	if err := b.PassToChild(cmd); err != nil {
		t.Fatal(err)
	}
	if len(cmd.ExtraFiles) != 2 || !slicesEqual(cmd.Env, []string{"A=1", EnvSyncFD + "=4"}) {
		t.Fatalf("env %v, %d extra files", cmd.Env, len(cmd.ExtraFiles))
	}
	if !sameFile(t, cmd.ExtraFiles[1], b.Fd()) {
		t.Fatal("extra file is not the socket")
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestSocketNonBlockingFd(t *testing.T) {
	// An inherited fd may be non-blocking: a Recv without deadline must
	// still wait (poll) instead of failing with EAGAIN.
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	if err := unix.SetNonblock(b.Fd(), true); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		done <- a.Send(ReadyMessage(), nil)
	}()
	m, _, err := b.Recv(timeNone)
	if err != nil || m.GetType() != TypeReady {
		t.Fatalf("%v %v", m, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Sending on a full non-blocking socket waits for room.
	if err := unix.SetNonblock(a.Fd(), true); err != nil {
		t.Fatal(err)
	}
	big := ErrorMessage(strings.Repeat("z", 60000))
	sent := 0
	for {
		rec, _ := Encode(nil, big, false, DefaultLimits())
		if err := unix.Sendmsg(a.Fd(), rec, nil, nil, unix.MSG_DONTWAIT); err != nil {
			if err != unix.EAGAIN {
				t.Fatal(err)
			}
			break
		}
		sent++
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		for i := 0; i <= sent; i++ {
			if _, _, err := b.Recv(soon()); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	if err := a.Send(big, nil); err != nil {
		t.Fatalf("send on a full socket: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestParseControl(t *testing.T) {
	unknown := unix.UnixRights(9)
	(*unix.Cmsghdr)(unsafe.Pointer(&unknown[0])).Level = 99
	var oob []byte
	oob = append(oob, unix.UnixRights(5, 6)...)
	oob = append(oob, unix.UnixCredentials(&unix.Ucred{Pid: 1})...)
	oob = append(oob, unknown...)
	oob = append(oob, unix.UnixRights(7)...)
	fds, unexpected := parseControl(oob, nil)
	if !slices.Equal(fds, []int{5, 6, 7}) || unexpected == nil || unexpected.Level != 99 {
		t.Fatalf("fds %v, unexpected %+v", fds, unexpected)
	}
	// A header claiming less than a header stops the walk; what came
	// before is still found.
	bad := append(unix.UnixRights(3), make([]byte, unix.CmsgLen(0))...)
	fds, unexpected = parseControl(bad, nil)
	if !slices.Equal(fds, []int{3}) || unexpected == nil {
		t.Fatalf("fds %v, unexpected %+v", fds, unexpected)
	}
	// A header claiming more than the buffer holds yields the fds that fit.
	long := unix.UnixRights(4, 8)
	long = long[:unix.CmsgLen(4)]
	fds, _ = parseControl(long, nil)
	if !slices.Equal(fds, []int{4}) {
		t.Fatalf("fds %v", fds)
	}
	if fds, unexpected := parseControl(nil, nil); fds != nil || unexpected != nil {
		t.Fatal("empty control data")
	}
}
