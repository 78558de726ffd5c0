//go:build linux

package procsync

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// EnvSyncFD is the environment variable that tells a child which of its fds
// is the sync socket (a decimal fd number greater than 2, no leading zeros).
const EnvSyncFD = "PROCSYNC_SYNC_FD"

// SpareFds is how many fds beyond [MaxFdsPerRecord] the receive control
// buffer has room for, as in the Rust crate: a peer sending a few fds too
// many is counted exactly (too-many-fds) and every one is closed, instead
// of the kernel dropping the excess silently.
const SpareFds = 4

// recvOobSize is the receive control buffer: the fds a record may carry
// plus SpareFds, one SCM_CREDENTIALS (a receiver with SO_PASSCRED gets one
// with every record) and one SCM_PIDFD (SO_PASSPIDFD), as PROTOCOL §8 asks.
var recvOobSize = unix.CmsgSpace((MaxFdsPerRecord+SpareFds)*4) +
	unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4)

// SyncSocket is one end of a SOCK_SEQPACKET Unix socket carrying sync
// records: one record per sendmsg(2)/recvmsg(2), at most one fd per record
// as SCM_RIGHTS.
//
// Every wait goes through Go's netpoller: a goroutine blocked in Recv or
// Send holds no OS thread, and [SyncSocket.Close] or a cancelled context
// ends it promptly from any goroutine. One goroutine may Send while another
// Recvs; two concurrent Sends or two concurrent Recvs are not allowed.
// Close may be called at any time, from any goroutine: a pending call then
// fails with [ErrClosed], and the fd number is released only after it
// returned (it can never act on a number the kernel reused).
type SyncSocket struct {
	fd     int      // the socket's number; valid while file is open
	file   *os.File // owns fd; registered with the netpoller
	rc     syscall.RawConn
	limits Limits

	closed   atomic.Bool
	shutWr   atomic.Bool // ShutdownWrite was called
	peerDead atomic.Bool
	peerMu   sync.Mutex
	peer     *peerWatch

	// Receive state, reused by every Recv (one Recv at a time).
	recvBuf  []byte
	oobBuf   []byte
	rmsg     unix.Msghdr
	riov     unix.Iovec
	rn       int
	roobn    int
	rflags   int
	rerr     unix.Errno
	recvFn   func(uintptr) bool
	recvDone bool

	// Send state, reused by every Send (one Send at a time).
	sendBuf  []byte
	sendOob  []byte
	smsg     unix.Msghdr
	siov     unix.Iovec
	sn       int
	serr     unix.Errno
	sendFn   func(uintptr) bool
	sendDone bool

	waitStart time.Time // when the current wait began (send timeouts)
	// The deadlines last set on file, and whether a wake moved them since.
	lastRD, lastWD   time.Time
	staleRD, staleWD atomic.Bool
	recvTry          func(uintptr)
	sendTry          func(uintptr)

	closeOnce sync.Once
	passedMu  sync.Mutex
	passed    []*os.File
}

// peerWatch ends the socket's waits when the peer process exits: one
// goroutine waits (in the netpoller) on an epoll set holding a duplicate of
// the peer's pidfd, and on the exit wakes every pending wait.
type peerWatch struct {
	ep   *os.File // epoll fd holding pidfd; registered with the netpoller
	pfd  int      // our duplicate of the peer's pidfd
	done chan struct{}
}

// Pair returns the two connected ends of a new sync socket (close-on-exec).
// Hand one to the child with [SyncSocket.PassToChild].
func Pair() (parent, child *SyncSocket, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &TransportError{kind: KindIO, Op: "socketpair", Err: os.NewSyscallError("socketpair", err)}
	}
	if parent, err = newSocket(fds[0]); err != nil {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
		return nil, nil, err
	}
	if child, err = newSocket(fds[1]); err != nil {
		_ = parent.Close()
		_ = unix.Close(fds[1])
		return nil, nil, err
	}
	return parent, child, nil
}

// newSocket takes ownership of fd (on success): it is made non-blocking
// and registered with the netpoller. Every syscall on it passes
// MSG_DONTWAIT anyway, so a duplicate made blocking again
// (PassToChild) changes nothing here.
func newSocket(fd int) (*SyncSocket, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, &TransportError{kind: KindIO, Op: "fcntl(O_NONBLOCK)", Err: os.NewSyscallError("fcntl", err)}
	}
	f := os.NewFile(uintptr(fd), "procsync-sync-socket")
	rc, err := f.SyscallConn()
	if err != nil {
		// Not reachable: SyscallConn fails only for a nil *os.File.
		return nil, &TransportError{kind: KindIO, Op: "register with the netpoller", Err: err}
	}
	s := &SyncSocket{fd: fd, file: f, rc: rc, limits: DefaultLimits()}
	s.recvFn = s.doRecv
	s.sendFn = s.doSend
	s.recvTry = func(fd uintptr) { s.doRecv(fd) }
	s.sendTry = func(fd uintptr) { s.doSend(fd) }
	return s, nil
}

// FromFD wraps fd, which must be an AF_UNIX SOCK_SEQPACKET socket. On
// success the SyncSocket owns fd; on error the caller still does (FromFD
// never closes an fd it rejected).
func FromFD(fd int) (*SyncSocket, error) {
	if fd < 0 {
		return nil, &TransportError{kind: KindNotSeqpacket, Op: "from fd", Err: fmt.Errorf("invalid fd %d", fd)}
	}
	ty, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		if err == unix.EBADF {
			// An open O_PATH fd refuses getsockopt with EBADF too: it is
			// not a socket we can use (PROTOCOL §8).
			if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); ferr == nil {
				return nil, &TransportError{kind: KindNotSeqpacket, Op: "from fd", Err: fmt.Errorf("fd %d is an O_PATH fd, not a socket", fd)}
			}
			return nil, &TransportError{kind: KindIO, Op: "from fd", Err: fmt.Errorf("fd %d: %w", fd, os.NewSyscallError("getsockopt(SO_TYPE)", err))}
		}
		return nil, &TransportError{kind: KindNotSeqpacket, Op: "from fd", Err: fmt.Errorf("fd %d is not a socket: %w", fd, os.NewSyscallError("getsockopt(SO_TYPE)", err))}
	}
	if ty != unix.SOCK_SEQPACKET {
		return nil, &TransportError{kind: KindNotSeqpacket, Op: "from fd", Err: fmt.Errorf("fd %d is a socket of type %d, not SOCK_SEQPACKET", fd, ty)}
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, &TransportError{kind: KindIO, Op: "from fd", Err: fmt.Errorf("fd %d: %w", fd, os.NewSyscallError("getsockopt(SO_DOMAIN)", err))}
	}
	if dom != unix.AF_UNIX {
		return nil, &TransportError{kind: KindNotSeqpacket, Op: "from fd", Err: fmt.Errorf("fd %d is a socket of family %d, not AF_UNIX", fd, dom)}
	}
	return newSocket(fd)
}

// FromEnv returns the sync socket a parent handed to this process with
// [SyncSocket.PassToChild]: it reads [EnvSyncFD], unsets it (whatever its
// value, so it does not leak to processes this one starts), checks the fd
// is a seqpacket Unix socket numbered above 2 and marks it close-on-exec.
// An fd it rejects stays open and the caller's.
func FromEnv() (*SyncSocket, error) {
	v, ok := os.LookupEnv(EnvSyncFD)
	if !ok {
		return nil, &TransportError{kind: KindEnvNotSet, Op: "from env", Err: fmt.Errorf("%s is not set", EnvSyncFD)}
	}
	if err := os.Unsetenv(EnvSyncFD); err != nil {
		return nil, &TransportError{kind: KindIO, Op: "from env", Err: fmt.Errorf("unset %s: %w", EnvSyncFD, err)}
	}
	fd, err := ParseSyncFD(v)
	if err != nil {
		return nil, &TransportError{kind: KindEnvInvalid, Op: "from env", Err: fmt.Errorf("%s=%q: %w", EnvSyncFD, v, err)}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, &TransportError{kind: KindEnvInvalid, Op: "from env", Err: fmt.Errorf("%s=%d: %w", EnvSyncFD, fd, os.NewSyscallError("fcntl(F_GETFD)", err))}
	}
	s, err := FromFD(fd)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return s, nil
}

// ParseSyncFD parses a [EnvSyncFD] value as PROTOCOL §8 fixes it: decimal
// ASCII digits only (no sign, no spaces, no leading zeros), a number
// greater than 2 (0–2 are stdio) and at most 2^31-1.
func ParseSyncFD(v string) (int, error) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, errors.New("not a decimal fd number")
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, errors.New("leading zeros are not allowed")
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd > math.MaxInt32 {
		return 0, errors.New("fd number out of range")
	}
	if fd <= 2 {
		return 0, fmt.Errorf("fd %d is stdio, the sync socket must be numbered above 2", fd)
	}
	return fd, nil
}

// PassToChild arranges for cmd's process to inherit this end of the socket:
// a duplicate goes into cmd.ExtraFiles and [EnvSyncFD] in cmd.Env is set
// to the fd number the child will see (3 + its index in ExtraFiles;
// cmd.Env is seeded from os.Environ() when nil, and any earlier
// [EnvSyncFD] entry is replaced). The child gets the socket in blocking
// mode, as a fresh socketpair is. After cmd.Start, Close this end in the
// parent: the duplicate is closed with it.
func (s *SyncSocket) PassToChild(cmd *exec.Cmd) error {
	var dup int
	var derr error
	if err := s.control(func(fd int) {
		dup, derr = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return err
	}
	if derr != nil {
		return &TransportError{kind: KindIO, Op: "pass to child", Err: os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)}
	}
	// The duplicate shares the file description: clear O_NONBLOCK for the
	// child (this end's syscalls all pass MSG_DONTWAIT).
	if err := unix.SetNonblock(dup, false); err != nil {
		_ = unix.Close(dup)
		return &TransportError{kind: KindIO, Op: "pass to child", Err: os.NewSyscallError("fcntl", err)}
	}
	f := os.NewFile(uintptr(dup), "procsync-sync-socket")
	s.passedMu.Lock()
	s.passed = append(s.passed, f)
	s.passedMu.Unlock()
	childFD := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	kept := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvSyncFD+"=") {
			kept = append(kept, kv)
		}
	}
	cmd.Env = append(kept, EnvSyncFD+"="+strconv.Itoa(childFD))
	return nil
}

// SetLimits sets the limits records are checked against (both directions).
// Not while a call is pending.
func (s *SyncSocket) SetLimits(l Limits) { s.limits = l; s.recvBuf = nil }

// Limits returns the limits in force.
func (s *SyncSocket) Limits() Limits { return s.limits }

// SetPeerPidfd makes every wait of Recv and Send watch the peer process
// through a pidfd (see [PidfdOpen]): when the peer exits with nothing left
// to read, they fail with [ErrPeerDied] instead of waiting. The pidfd is
// watched through the netpoller (no OS thread is held). The socket keeps
// its own duplicate; the caller still owns pidfd. Pass -1 to stop
// watching. Not while a call is pending.
func (s *SyncSocket) SetPeerPidfd(pidfd int) error {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	if s.peer != nil {
		s.peer.stop()
		s.peer = nil
	}
	s.peerDead.Store(false)
	if pidfd < 0 {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	w, err := newPeerWatch(pidfd)
	if err != nil {
		return err
	}
	s.peer = w
	go s.watchPeer(w)
	return nil
}

func newPeerWatch(pidfd int) (*peerWatch, error) {
	dup, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, &TransportError{kind: KindIO, Op: "watch peer", Err: os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		_ = unix.Close(dup)
		return nil, &TransportError{kind: KindIO, Op: "watch peer", Err: os.NewSyscallError("epoll_create1", err)}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(dup)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, dup, &ev); err != nil {
		_ = unix.Close(dup)
		_ = unix.Close(ep)
		return nil, &TransportError{kind: KindIO, Op: "watch peer", Err: os.NewSyscallError("epoll_ctl (is it a pidfd?)", err)}
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		_ = unix.Close(dup)
		_ = unix.Close(ep)
		return nil, &TransportError{kind: KindIO, Op: "watch peer", Err: os.NewSyscallError("fcntl", err)}
	}
	return &peerWatch{ep: os.NewFile(uintptr(ep), "procsync-peer-watch"), pfd: dup, done: make(chan struct{})}, nil
}

// stop ends the watcher goroutine and releases its fds.
func (w *peerWatch) stop() {
	_ = w.ep.Close() // wakes the watcher's pending wait
	<-w.done
	_ = unix.Close(w.pfd)
}

// watchPeer waits for the peer's pidfd to become readable (the peer
// exited), then marks the peer dead and wakes every pending wait.
func (s *SyncSocket) watchPeer(w *peerWatch) {
	defer close(w.done)
	rc, err := w.ep.SyscallConn()
	if err != nil {
		return
	}
	var events [1]unix.EpollEvent
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events[:], 0)
			if err == unix.EINTR {
				continue
			}
			return n > 0 || err != nil
		}
	})
	if err != nil {
		return // stopped
	}
	s.peerDead.Store(true)
	s.wake()
}

// wake ends every pending wait on the socket; each then finds out why
// (closed, peer dead, context done) or waits again.
func (s *SyncSocket) wake() {
	s.staleRD.Store(true)
	s.staleWD.Store(true)
	past := time.Unix(1, 0)
	_ = s.file.SetReadDeadline(past)
	_ = s.file.SetWriteDeadline(past)
}

// Fd returns the socket's file descriptor number (still owned by s; valid
// only until Close). The fd is in non-blocking mode (the netpoller needs
// it): a blocking recvmsg(2) of one's own on it returns EAGAIN.
func (s *SyncSocket) Fd() int { return s.fd }

// control runs f with the socket's fd, kept open while f runs.
func (s *SyncSocket) control(f func(fd int)) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := s.rc.Control(func(fd uintptr) { f(int(fd)) }); err != nil {
		if s.closed.Load() {
			return ErrClosed
		}
		return &TransportError{kind: KindIO, Op: "control", Err: err}
	}
	return nil
}

// Close closes the socket (and any duplicate made by PassToChild, and the
// peer watch). It may be called from any goroutine while a Send or Recv is
// pending: that call ends promptly with [ErrClosed], and the fd number is
// released only once no call uses it. Later calls return nil.
func (s *SyncSocket) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.passedMu.Lock()
		for _, f := range s.passed {
			_ = f.Close()
		}
		s.passed = nil
		s.passedMu.Unlock()
		// os.File.Close wakes pending waits (ErrFileClosing) and closes
		// the fd once the last of them has returned.
		if e := s.file.Close(); e != nil {
			err = &TransportError{kind: KindIO, Op: "close", Err: e}
		}
		s.peerMu.Lock()
		if s.peer != nil {
			s.peer.stop()
			s.peer = nil
		}
		s.peerMu.Unlock()
	})
	return err
}

// ShutdownWrite shuts down the sending direction: the peer reads EOF
// (ErrPeerClosed) after the records already sent.
func (s *SyncSocket) ShutdownWrite() error {
	var serr error
	if err := s.control(func(fd int) { serr = unix.Shutdown(fd, unix.SHUT_WR) }); err != nil {
		return err
	}
	if serr != nil {
		return &TransportError{kind: KindIO, Op: "shutdown", Err: os.NewSyscallError("shutdown", serr)}
	}
	s.shutWr.Store(true)
	return nil
}

// PeerHungUp reports, without reading or blocking, whether the peer closed
// or shut down its sending side (POLLHUP or POLLRDHUP right now).
func (s *SyncSocket) PeerHungUp() (bool, error) {
	var revents int16
	var perr error
	if err := s.control(func(fd int) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		for {
			_, perr = unix.Poll(pfd, 0)
			if perr != unix.EINTR {
				break
			}
		}
		revents = pfd[0].Revents
	}); err != nil {
		return false, err
	}
	if perr != nil {
		return false, &TransportError{kind: KindIO, Op: "poll", Err: os.NewSyscallError("poll", perr)}
	}
	return revents&(unix.POLLHUP|unix.POLLRDHUP) != 0, nil
}

// Send sends msg as one record, with f attached as SCM_RIGHTS when f is
// not nil (HasFd is set exactly then). f stays open and owned by the
// caller. It waits as long as the peer's receive queue is full (until the
// peer dies, with a peer pidfd set); [SyncSocket.SendDeadline] bounds that
// wait.
func (s *SyncSocket) Send(msg *pb.SyncMessage, f *os.File) error {
	return s.SendContext(context.Background(), msg, f, time.Time{})
}

// SendDeadline is [SyncSocket.Send] waiting at most until deadline (zero:
// no deadline) for room in the peer's receive queue. A live peer that never
// reads cannot block the sender past the deadline: the send then fails with
// a *[SendTimeoutError] (errors.Is matches [ErrSendTimeout] and
// os.ErrDeadlineExceeded) and nothing was sent. A deadline already past
// still sends when there is room.
func (s *SyncSocket) SendDeadline(msg *pb.SyncMessage, f *os.File, deadline time.Time) error {
	return s.SendContext(context.Background(), msg, f, deadline)
}

// SendContext is [SyncSocket.SendDeadline] that also ends its wait for
// room when ctx is done: it then fails with a *[TransportError] of kind
// [KindCanceled] matching ctx's error (context.Canceled or
// context.DeadlineExceeded) with errors.Is, and nothing was sent.
func (s *SyncSocket) SendContext(ctx context.Context, msg *pb.SyncMessage, f *os.File, deadline time.Time) error {
	if f == nil {
		return s.sendFD(ctx, msg, -1, deadline)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return &TransportError{kind: KindBadFile, Op: "send " + TypeName(msg.GetType()), Err: err}
	}
	var sendErr error
	if err := rc.Control(func(fd uintptr) { sendErr = s.sendFD(ctx, msg, int(fd), deadline) }); err != nil {
		// f was already closed: the caller's mistake.
		return &TransportError{kind: KindBadFile, Op: "send " + TypeName(msg.GetType()), Err: err}
	}
	return sendErr
}

// SendFD is Send with a raw fd; fd < 0 means none. The record is
// validated and size-checked before the syscall (an *EncodeError, nothing
// sent) and goes out in exactly one sendmsg(2). EINTR is retried;
// EPIPE/ECONNRESET yield [ErrPeerClosed].
func (s *SyncSocket) SendFD(msg *pb.SyncMessage, fd int) error {
	return s.sendFD(context.Background(), msg, fd, time.Time{})
}

// SendFDDeadline is [SyncSocket.SendFD] with the deadline of
// [SyncSocket.SendDeadline]: sendmsg(2) never blocks (MSG_DONTWAIT); while
// the peer's receive queue is full it waits in the netpoller for room, the
// peer pidfd ([ErrPeerDied]) and the deadline (a *[SendTimeoutError],
// nothing sent).
func (s *SyncSocket) SendFDDeadline(msg *pb.SyncMessage, fd int, deadline time.Time) error {
	return s.sendFD(context.Background(), msg, fd, deadline)
}

// SendFDContext is [SyncSocket.SendFDDeadline] that also ends its wait
// when ctx is done (see [SyncSocket.SendContext]).
func (s *SyncSocket) SendFDContext(ctx context.Context, msg *pb.SyncMessage, fd int, deadline time.Time) error {
	return s.sendFD(ctx, msg, fd, deadline)
}

func (s *SyncSocket) sendFD(ctx context.Context, msg *pb.SyncMessage, fd int, deadline time.Time) error {
	if s.closed.Load() {
		return ErrClosed
	}
	buf, err := Encode(s.sendBuf[:0], msg, fd >= 0, s.limits)
	if err != nil {
		return err
	}
	s.sendBuf = buf[:0]
	s.siov.Base = unsafe.SliceData(buf)
	s.siov.SetLen(len(buf))
	s.smsg = unix.Msghdr{Iov: &s.siov, Iovlen: 1}
	if fd >= 0 {
		if s.sendOob == nil {
			s.sendOob = make([]byte, unix.CmsgSpace(4))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&s.sendOob[0]))
			h.Level = unix.SOL_SOCKET
			h.Type = unix.SCM_RIGHTS
			h.SetLen(unix.CmsgLen(4))
		}
		*(*int32)(unsafe.Pointer(&s.sendOob[unix.CmsgLen(0)])) = int32(fd)
		s.smsg.Control = &s.sendOob[0]
		s.smsg.SetControllen(len(s.sendOob))
	}
	werr := s.wait(ctx, true, deadline)
	n, errno := s.sn, s.serr
	s.smsg = unix.Msghdr{}
	s.siov = unix.Iovec{}
	switch {
	case werr == errWaitPeerDied:
		return &TransportError{kind: KindPeerDied, Op: "send " + TypeName(msg.GetType())}
	case werr == errWaitDeadline:
		return &SendTimeoutError{Type: msg.GetType(), Waited: time.Since(s.waitStart)}
	case werr != nil:
		return s.waitError("send "+TypeName(msg.GetType()), werr)
	case errno == 0:
		if n != len(buf) {
			return &TransportError{kind: KindIO, Op: "send " + TypeName(msg.GetType()), Err: fmt.Errorf("short send of %d of %d bytes", n, len(buf))}
		}
		return nil
	case errno == unix.EPIPE && s.shutWr.Load():
		return &TransportError{kind: KindWriteShutdown, Op: "send " + TypeName(msg.GetType())}
	case errno == unix.EPIPE || errno == unix.ECONNRESET:
		return &TransportError{kind: KindPeerClosed, Op: "send " + TypeName(msg.GetType())}
	default:
		return &TransportError{kind: KindIO, Op: "send " + TypeName(msg.GetType()), Err: os.NewSyscallError("sendmsg", errno)}
	}
}

// doSend is the netpoller callback of a send: one non-blocking sendmsg(2);
// false asks the netpoller to wait for room.
//
// Both callbacks use RawSyscall: with MSG_DONTWAIT the call never sleeps,
// so the scheduler need not be told (entersyscall/exitsyscall). That is
// more than the ~100 ns of bookkeeping: while this process waits in the
// netpoller every P is idle and Go's sysmon thread goes to sleep, and the
// next entersyscall wakes it again (a futex wake, then 20 µs polling) —
// with both peers on one CPU those extra context switches were about a
// third of a round trip (docs/BENCHMARKS.md, Go).
func (s *SyncSocket) doSend(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.smsg)),
			unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.sn, s.serr, s.sendDone = int(n), e, true
		return true
	}
}

// doRecv is the netpoller callback of a receive: one non-blocking
// recvmsg(2); false asks the netpoller to wait for a record.
func (s *SyncSocket) doRecv(fd uintptr) bool {
	s.rmsg.SetControllen(len(s.oobBuf))
	s.rmsg.Flags = 0
	for {
		// MSG_TRUNC in: the kernel returns the record's real length even
		// when it does not fit.
		n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.rmsg)),
			unix.MSG_CMSG_CLOEXEC|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.rn, s.rerr, s.recvDone = int(n), e, true
		s.roobn, s.rflags = int(s.rmsg.Controllen), int(s.rmsg.Flags)
		return true
	}
}

// Reasons a wait ended without the operation completing.
var (
	errWaitDeadline = errors.New("deadline")
	errWaitPeerDied = errors.New("peer died")
)

// wait runs the send (write) or receive callback until it completes, and
// returns nil then. Otherwise it returns errWaitDeadline, errWaitPeerDied
// (a receive first tries once more: a record sent before the death is
// still delivered), [ErrClosed], ctx's error wrapped by the caller, or an
// OS error. The first attempt happens before any deadline is checked, so
// a deadline already past still takes a queued record or free room.
func (s *SyncSocket) wait(ctx context.Context, write bool, deadline time.Time) error {
	op, setDeadline, done := s.rc.Read, s.file.SetReadDeadline, &s.recvDone
	fn, try := s.recvFn, s.recvTry
	last, stale := &s.lastRD, &s.staleRD
	if write {
		op, setDeadline, done = s.rc.Write, s.file.SetWriteDeadline, &s.sendDone
		fn, try = s.sendFn, s.sendTry
		last, stale = &s.lastWD, &s.staleWD
	}
	*done = false
	// tryOnce is one attempt without waiting (the netpoller refuses to
	// call fn at all once the deadline has passed).
	tryOnce := func() (bool, error) {
		if err := s.rc.Control(try); err != nil {
			return false, s.closedOr(err)
		}
		return *done, nil
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, s.wake)
		defer stop()
	}
	started := false
	for {
		// The file's deadline is set only when it changed or a wake
		// moved it (a zero deadline stays set: no timer work per call).
		if stale.Swap(false) || !deadline.Equal(*last) {
			if err := setDeadline(deadline); err != nil {
				return s.closedOr(err)
			}
			*last = deadline
		}
		// Checked after the deadline is set: a wake (peer death, ctx)
		// that came before is seen here, one that comes after ends the
		// wait below. Either way a queued record is still taken.
		if s.peerDead.Load() || ctx.Err() != nil {
			if ok, err := tryOnce(); ok || err != nil {
				return err
			}
			if s.peerDead.Load() {
				return errWaitPeerDied
			}
			return &TransportError{kind: KindCanceled, Err: context.Cause(ctx)}
		}
		if !started {
			started = true
			s.waitStart = time.Now()
		}
		// The netpoller calls fn at once (the first attempt), and again
		// each time the socket turns ready.
		err := op(fn)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return s.closedOr(err)
		}
		if s.closed.Load() {
			return ErrClosed
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			if ok, err := tryOnce(); ok || err != nil {
				return err
			}
			return errWaitDeadline
		}
		// Woken for the peer or ctx (checked at the top of the loop), or
		// by a wake meant for an earlier call: wait again.
		stale.Store(true)
	}
}

// closedOr maps a netpoller error to ErrClosed when the socket was closed.
func (s *SyncSocket) closedOr(err error) error {
	if s.closed.Load() || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return &TransportError{kind: KindIO, Err: err}
}

// waitError is a wait's error with op in it (a copy: err may be one of the
// shared sentinels).
func (s *SyncSocket) waitError(op string, err error) error {
	if te, ok := err.(*TransportError); ok {
		c := *te
		c.Op = op
		return &c
	}
	return err
}

// Recv waits for one record until deadline (zero: no deadline) and returns
// the validated message and the fd that came with it (nil when none; the
// caller owns it, close-on-exec).
//
// A record already queued is taken even when the deadline has passed.
// Every fd that arrives with a rejected record is closed. Errors:
// [ErrPeerClosed] on EOF; [ErrPeerDied] when the peer pidfd fired and
// nothing is left to read; os.ErrDeadlineExceeded (wrapped) on timeout;
// [ErrClosed] when the socket is (or gets) closed; a *DecodeError for a
// bad record (too-large when it exceeds the limit — it is consumed and
// discarded —, too-many-fds when more fds came than allowed or than the
// control buffer holds, empty-record for a zero-length record with fds);
// otherwise a *[TransportError] (an unexpected control message, an OS
// error).
func (s *SyncSocket) Recv(deadline time.Time) (*pb.SyncMessage, *os.File, error) {
	return s.RecvContext(context.Background(), deadline)
}

// RecvContext is [SyncSocket.Recv] that also ends its wait when ctx is
// done: it then fails with a *[TransportError] of kind [KindCanceled]
// matching ctx's error with errors.Is; no record was consumed.
func (s *SyncSocket) RecvContext(ctx context.Context, deadline time.Time) (*pb.SyncMessage, *os.File, error) {
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	if len(s.recvBuf) != s.limits.MaxRecord() {
		s.recvBuf = make([]byte, s.limits.MaxRecord())
	}
	if s.oobBuf == nil {
		s.oobBuf = make([]byte, recvOobSize)
	}
	s.riov.Base = &s.recvBuf[0]
	s.riov.SetLen(len(s.recvBuf))
	s.rmsg = unix.Msghdr{Iov: &s.riov, Iovlen: 1, Control: &s.oobBuf[0]}
	werr := s.wait(ctx, false, deadline)
	switch {
	case werr == errWaitPeerDied:
		return nil, nil, ErrPeerDied
	case werr == errWaitDeadline:
		return nil, nil, &TransportError{kind: KindTimeout, Op: "recv"}
	case werr != nil:
		return nil, nil, s.waitError("recv", werr)
	}
	n, errno := s.rn, s.rerr
	switch {
	case errno == unix.ECONNRESET:
		return nil, nil, &TransportError{kind: KindPeerClosed, Op: "recv"}
	case errno != 0:
		return nil, nil, &TransportError{kind: KindIO, Op: "recv", Err: os.NewSyscallError("recvmsg", errno)}
	}
	return s.finishRecv(s.recvBuf[:min(n, len(s.recvBuf))], n, s.oobBuf[:s.roobn], s.rflags)
}

// finishRecv turns what recvmsg returned (record holds the first bytes
// of a record of size bytes) into a message; every fd that arrived is
// closed unless it is handed to the caller. The checks run in PROTOCOL
// §3's order: an empty record first, then the size, then the control data.
func (s *SyncSocket) finishRecv(record []byte, size int, oob []byte, rflags int) (*pb.SyncMessage, *os.File, error) {
	var fdArr [MaxFdsPerRecord + SpareFds]int
	fds, unexpected := parseControl(oob, fdArr[:0])
	fail := func(err error) (*pb.SyncMessage, *os.File, error) {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, nil, err
	}
	if size == 0 {
		if len(fds) > 0 || rflags&unix.MSG_CTRUNC != 0 {
			return fail(&DecodeError{kind: KindEmptyRecord})
		}
		return nil, nil, ErrPeerClosed
	}
	limit := s.limits.MaxRecord()
	if rflags&unix.MSG_TRUNC != 0 || size > limit {
		return fail(&DecodeError{kind: KindTooLarge, Size: size, Max: limit})
	}
	if rflags&unix.MSG_CTRUNC != 0 {
		return fail(&DecodeError{kind: KindTooManyFds, Detail: fmt.Sprintf(
			"control data truncated by the kernel (MSG_CTRUNC), %d fds arrived", len(fds))})
	}
	if unexpected != nil {
		return fail(&TransportError{kind: KindUnexpectedControl, Op: "recv",
			Err: fmt.Errorf("unexpected control message (level %d, type %d)", unexpected.Level, unexpected.Type)})
	}
	msg, err := Decode(record, len(fds), s.limits)
	if err != nil {
		return fail(err)
	}
	if len(fds) == 1 {
		return msg, os.NewFile(uintptr(fds[0]), "procsync-received-fd"), nil
	}
	return msg, nil, nil
}

// parseControl appends to fds every fd the kernel installed: those of
// every SCM_RIGHTS message and the SCM_PIDFD one (SO_PASSPIDFD), which it
// closes at once (PROTOCOL §8). It returns the header of the first control
// message that is neither of those nor a known fd-free kind (credentials,
// security label). fds inside a message it does not know are not
// collected: the kernel installs fds only for SCM_RIGHTS and SCM_PIDFD.
func parseControl(oob []byte, fds []int) ([]int, *unix.Cmsghdr) {
	var unexpected *unix.Cmsghdr
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			// A header the kernel would not write. If it claims more
			// than the buffer holds, take the fds that fit: they are
			// installed and must be closed.
			if len(oob) >= unix.SizeofCmsghdr {
				hh := *(*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
				if hh.Level == unix.SOL_SOCKET && hh.Type == unix.SCM_RIGHTS && int(hh.Len) > len(oob) {
					fds = appendFds(fds, oob[unix.CmsgLen(0):])
				}
			}
			if unexpected == nil {
				unexpected = &unix.Cmsghdr{Level: -1, Type: -1}
			}
			break
		}
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS:
			fds = appendFds(fds, data)
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_PIDFD:
			var pidfds [1]int
			for _, fd := range appendFds(pidfds[:0], data) {
				_ = unix.Close(fd)
			}
		case h.Level == unix.SOL_SOCKET && (h.Type == unix.SCM_CREDENTIALS || h.Type == unix.SCM_SECURITY):
		default:
			if unexpected == nil {
				hh := h
				unexpected = &hh
			}
		}
		oob = rest
	}
	return fds, unexpected
}

func appendFds(fds []int, data []byte) []int {
	for len(data) >= 4 {
		fds = append(fds, int(*(*int32)(unsafe.Pointer(&data[0]))))
		data = data[4:]
	}
	return fds
}

// PidfdOpen returns a pidfd for process pid (close-on-exec), for
// [SyncSocket.SetPeerPidfd] and the sessions' PeerPidfd option.
func PidfdOpen(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, &TransportError{kind: KindIO, Op: "pidfd_open", Err: os.NewSyscallError("pidfd_open", err)}
	}
	return os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), nil
}
