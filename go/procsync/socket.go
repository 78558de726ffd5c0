//go:build linux

package procsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// EnvSyncFD is the environment variable that tells a child which of its fds
// is the sync socket (a decimal fd number).
const EnvSyncFD = "PROCSYNC_SYNC_FD"

// recvFdRoom is how many fds the receive control buffer has room for. A
// record may carry one; room for more lets the receiver see (and close, and
// report as too-many-fds) what a misbehaving peer sent instead of having
// the kernel drop it silently.
const recvFdRoom = 8

// SyncSocket is one end of a SOCK_SEQPACKET Unix socket carrying sync
// records: one record per sendmsg(2)/recvmsg(2), at most one fd per record
// as SCM_RIGHTS.
//
// One goroutine may Send while another Recvs; two concurrent Sends or two
// concurrent Recvs are not allowed, and Close must not race with either.
type SyncSocket struct {
	fd        int
	limits    Limits
	peerPidfd int

	recvBuf []byte
	oobBuf  []byte
	sendBuf []byte

	closeOnce sync.Once
	closed    atomic.Bool
	passed    []*os.File
}

// Pair returns the two connected ends of a new sync socket (close-on-exec).
// Hand one to the child with [SyncSocket.PassToChild].
func Pair() (parent, child *SyncSocket, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return newSocket(fds[0]), newSocket(fds[1]), nil
}

func newSocket(fd int) *SyncSocket {
	return &SyncSocket{fd: fd, limits: DefaultLimits(), peerPidfd: -1}
}

// FromFD wraps fd, which must be an AF_UNIX SOCK_SEQPACKET socket. On
// success the SyncSocket owns fd; on error the caller still does.
func FromFD(fd int) (*SyncSocket, error) {
	if fd < 0 {
		return nil, fmt.Errorf("procsync: invalid fd %d", fd)
	}
	ty, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("procsync: fd %d is not a usable socket: %w", fd, os.NewSyscallError("getsockopt(SO_TYPE)", err))
	}
	if ty != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("procsync: fd %d is a socket of type %d, not SOCK_SEQPACKET", fd, ty)
	}
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("procsync: fd %d: %w", fd, os.NewSyscallError("getsockopt(SO_DOMAIN)", err))
	}
	if dom != unix.AF_UNIX {
		return nil, fmt.Errorf("procsync: fd %d is a socket of family %d, not AF_UNIX", fd, dom)
	}
	return newSocket(fd), nil
}

// FromEnv returns the sync socket a parent handed to this process with
// [SyncSocket.PassToChild]: it reads [EnvSyncFD], unsets it (so it does
// not leak to processes this one starts), checks the fd is a seqpacket
// Unix socket and marks it close-on-exec.
func FromEnv() (*SyncSocket, error) {
	v, ok := os.LookupEnv(EnvSyncFD)
	if !ok {
		return nil, fmt.Errorf("procsync: %s is not set", EnvSyncFD)
	}
	if err := os.Unsetenv(EnvSyncFD); err != nil {
		return nil, fmt.Errorf("procsync: unset %s: %w", EnvSyncFD, err)
	}
	fd, err := parseFD(v)
	if err != nil {
		return nil, fmt.Errorf("procsync: %s=%q: %w", EnvSyncFD, v, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("procsync: %s=%d: %w", EnvSyncFD, fd, os.NewSyscallError("fcntl(F_GETFD)", err))
	}
	s, err := FromFD(fd)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return s, nil
}

func parseFD(v string) (int, error) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" || (len(v) > 1 && v[0] == '0') {
		return 0, errors.New("not a decimal fd number")
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd > math.MaxInt32 {
		return 0, errors.New("fd number out of range")
	}
	return fd, nil
}

// PassToChild arranges for cmd's process to inherit this end of the socket:
// a duplicate goes into cmd.ExtraFiles and [EnvSyncFD] in cmd.Env is set
// to the fd number the child will see (3 + its index in ExtraFiles;
// cmd.Env is seeded from os.Environ() when nil, and any earlier
// [EnvSyncFD] entry is replaced). After cmd.Start, Close this end in the
// parent: the duplicate is closed with it.
func (s *SyncSocket) PassToChild(cmd *exec.Cmd) error {
	if s.closed.Load() {
		return ErrClosed
	}
	dup, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)
	}
	f := os.NewFile(uintptr(dup), "procsync-sync-socket")
	s.passed = append(s.passed, f)
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
func (s *SyncSocket) SetLimits(l Limits) { s.limits = l; s.recvBuf = nil }

// Limits returns the limits in force.
func (s *SyncSocket) Limits() Limits { return s.limits }

// SetPeerPidfd makes Recv (and a blocked Send) watch the peer process
// through a pidfd (see [PidfdOpen]): when the peer exits with nothing left
// to read, they fail with [ErrPeerDied] instead of waiting. The socket does
// not own pidfd; pass -1 to stop watching.
func (s *SyncSocket) SetPeerPidfd(pidfd int) { s.peerPidfd = pidfd }

// Fd returns the socket's file descriptor (still owned by s).
func (s *SyncSocket) Fd() int { return s.fd }

// Close closes the socket (and any duplicate made by PassToChild). Later
// calls return nil.
func (s *SyncSocket) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		for _, f := range s.passed {
			_ = f.Close()
		}
		s.passed = nil
		if e := unix.Close(s.fd); e != nil {
			err = os.NewSyscallError("close", e)
		}
	})
	return err
}

// ShutdownWrite shuts down the sending direction: the peer reads EOF
// (ErrPeerClosed) after the records already sent.
func (s *SyncSocket) ShutdownWrite() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := unix.Shutdown(s.fd, unix.SHUT_WR); err != nil {
		return os.NewSyscallError("shutdown", err)
	}
	return nil
}

// Send sends msg as one record, with f attached as SCM_RIGHTS when f is
// not nil (HasFd is set exactly then). f stays open and owned by the
// caller. It waits as long as the peer's receive queue is full (until the
// peer dies, with a peer pidfd set); [SyncSocket.SendDeadline] bounds that
// wait.
func (s *SyncSocket) Send(msg *pb.SyncMessage, f *os.File) error {
	return s.SendDeadline(msg, f, time.Time{})
}

// SendDeadline is [SyncSocket.Send] waiting at most until deadline (zero:
// no deadline) for room in the peer's receive queue. A live peer that never
// reads cannot block the sender past the deadline: the send then fails with
// a *[SendTimeoutError] (errors.Is matches [ErrSendTimeout] and
// os.ErrDeadlineExceeded) and nothing was sent. A deadline already past
// still sends when there is room.
func (s *SyncSocket) SendDeadline(msg *pb.SyncMessage, f *os.File, deadline time.Time) error {
	if f == nil {
		return s.SendFDDeadline(msg, -1, deadline)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("procsync: send %s: attached file: %w", TypeName(msg.GetType()), err)
	}
	var sendErr error
	if err := rc.Control(func(fd uintptr) { sendErr = s.SendFDDeadline(msg, int(fd), deadline) }); err != nil {
		return fmt.Errorf("procsync: send %s: attached file: %w", TypeName(msg.GetType()), err)
	}
	runtime.KeepAlive(f)
	return sendErr
}

// SendFD is Send with a raw fd; fd < 0 means none. The record is
// validated and size-checked before the syscall (an *EncodeError, nothing
// sent) and goes out in exactly one sendmsg(2). EINTR is retried;
// EPIPE/ECONNRESET yield [ErrPeerClosed].
func (s *SyncSocket) SendFD(msg *pb.SyncMessage, fd int) error {
	return s.SendFDDeadline(msg, fd, time.Time{})
}

// SendFDDeadline is [SyncSocket.SendFD] with the deadline of
// [SyncSocket.SendDeadline]: sendmsg(2) never blocks (MSG_DONTWAIT); while
// the peer's receive queue is full it waits in poll(2) for room, the peer
// pidfd ([ErrPeerDied]) and the deadline (a *[SendTimeoutError], nothing
// sent).
func (s *SyncSocket) SendFDDeadline(msg *pb.SyncMessage, fd int, deadline time.Time) error {
	if s.closed.Load() {
		return ErrClosed
	}
	buf, err := Encode(s.sendBuf[:0], msg, fd >= 0, s.limits)
	if err != nil {
		return err
	}
	s.sendBuf = buf[:0]
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	var start time.Time
	for {
		n, err := unix.SendmsgN(s.fd, buf, oob, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			if n != len(buf) {
				return fmt.Errorf("procsync: send %s: short send of %d of %d bytes", TypeName(msg.GetType()), n, len(buf))
			}
			return nil
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if start.IsZero() {
				start = time.Now()
			}
			switch err := s.wait(unix.POLLOUT, deadline); {
			case err == nil:
			case err == errPeerGone:
				return fmt.Errorf("procsync: send %s: %w", TypeName(msg.GetType()), ErrPeerDied)
			case err == os.ErrDeadlineExceeded:
				return &SendTimeoutError{Type: msg.GetType(), Waited: time.Since(start)}
			default:
				return fmt.Errorf("procsync: send %s: %w", TypeName(msg.GetType()), err)
			}
		case err == unix.EPIPE || err == unix.ECONNRESET:
			return fmt.Errorf("procsync: send %s: %w", TypeName(msg.GetType()), ErrPeerClosed)
		default:
			return fmt.Errorf("procsync: send %s: %w", TypeName(msg.GetType()), os.NewSyscallError("sendmsg", err))
		}
	}
}

// errPeerGone is what wait reports when only the peer's pidfd fired.
var errPeerGone = errors.New("peer pidfd readable")

// wait polls the socket for events (and the peer pidfd) until deadline
// (zero: no deadline). It returns nil when the socket is ready,
// errPeerGone when only the pidfd fired, or a deadline error.
func (s *SyncSocket) wait(events int16, deadline time.Time) error {
	pfds := []unix.PollFd{{Fd: int32(s.fd), Events: events}}
	if s.peerPidfd >= 0 {
		pfds = append(pfds, unix.PollFd{Fd: int32(s.peerPidfd), Events: unix.POLLIN})
	}
	for {
		timeout := -1
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			ms := (left + time.Millisecond - 1) / time.Millisecond
			timeout = int(min(ms, math.MaxInt32))
		}
		n, err := unix.Poll(pfds, timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n == 0 {
			continue // re-checks the deadline
		}
		if pfds[0].Revents != 0 {
			return nil
		}
		if len(pfds) > 1 && pfds[1].Revents != 0 {
			return errPeerGone
		}
	}
}

// Recv waits for one record until deadline (zero: no deadline) and returns
// the validated message and the fd that came with it (nil when none; the
// caller owns it, close-on-exec).
//
// Every fd that arrives with a rejected record is closed. Errors:
// [ErrPeerClosed] on EOF; [ErrPeerDied] when the peer pidfd fired and
// nothing is left to read; os.ErrDeadlineExceeded (wrapped) on timeout; a
// *DecodeError for a bad record (too-large when it exceeds the limit — it
// is consumed and discarded —, too-many-fds when the kernel truncated the
// control data); otherwise an OS error (including an unexpected control
// message).
func (s *SyncSocket) Recv(deadline time.Time) (*pb.SyncMessage, *os.File, error) {
	if s.closed.Load() {
		return nil, nil, ErrClosed
	}
	if len(s.recvBuf) != s.limits.MaxRecord() {
		s.recvBuf = make([]byte, s.limits.MaxRecord())
	}
	if s.oobBuf == nil {
		s.oobBuf = make([]byte, unix.CmsgSpace(recvFdRoom*4))
	}
	// Without a deadline or a peer to watch, one blocking recvmsg does
	// (falling back to poll when the fd turns out to be non-blocking).
	blocking := deadline.IsZero() && s.peerPidfd < 0
	peerGone := false
	for {
		if !blocking && !peerGone {
			switch err := s.wait(unix.POLLIN, deadline); {
			case err == errPeerGone:
				// Read once more without waiting: a record the peer sent
				// before it died is still delivered.
				peerGone = true
			case err != nil:
				return nil, nil, fmt.Errorf("procsync: recv: %w", err)
			}
		}
		// MSG_TRUNC in: the kernel returns the record's real length even
		// when it does not fit.
		flags := unix.MSG_CMSG_CLOEXEC | unix.MSG_TRUNC
		if !blocking {
			flags |= unix.MSG_DONTWAIT
		}
		n, oobn, rflags, _, err := unix.Recvmsg(s.fd, s.recvBuf, s.oobBuf, flags)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if peerGone {
				return nil, nil, ErrPeerDied
			}
			blocking = false
			continue
		case err == unix.ECONNRESET:
			return nil, nil, ErrPeerClosed
		case err != nil:
			return nil, nil, fmt.Errorf("procsync: recv: %w", os.NewSyscallError("recvmsg", err))
		}
		return s.finishRecv(s.recvBuf[:min(n, len(s.recvBuf))], n, s.oobBuf[:oobn], rflags)
	}
}

// finishRecv turns what recvmsg returned (record holds the first bytes
// of a record of size bytes) into a message; every fd that arrived is
// closed unless it is handed to the caller.
func (s *SyncSocket) finishRecv(record []byte, size int, oob []byte, rflags int) (*pb.SyncMessage, *os.File, error) {
	fds, unexpected := parseControl(oob)
	fail := func(err error) (*pb.SyncMessage, *os.File, error) {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, nil, err
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
		return fail(fmt.Errorf("procsync: recv: unexpected control message (level %d, type %d)",
			unexpected.Level, unexpected.Type))
	}
	if len(record) == 0 {
		if len(fds) > 0 {
			return fail(&DecodeError{kind: KindEmptyRecord})
		}
		return nil, nil, ErrPeerClosed
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

// parseControl returns every fd in every SCM_RIGHTS message of oob, and
// the header of the first control message that is neither SCM_RIGHTS nor
// a known fd-free kind (credentials, security label). It walks the buffer
// itself, leniently: whatever fds arrived must be found so they can be
// closed, even behind a malformed header.
func parseControl(oob []byte) (fds []int, unexpected *unix.Cmsghdr) {
	hdrLen := unix.CmsgLen(0)
	for off := 0; off+hdrLen <= len(oob); {
		h := readCmsghdr(oob[off:])
		if int(h.Len) < hdrLen {
			if unexpected == nil {
				unexpected = &unix.Cmsghdr{Level: -1, Type: -1}
			}
			break
		}
		end := min(off+int(h.Len), len(oob))
		data := oob[off+hdrLen : end]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS:
			for len(data) >= 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data))))
				data = data[4:]
			}
		case h.Level == unix.SOL_SOCKET && (h.Type == unix.SCM_CREDENTIALS || h.Type == unix.SCM_SECURITY):
		default:
			if unexpected == nil {
				hh := h
				unexpected = &hh
			}
		}
		off += unix.CmsgSpace(int(h.Len) - hdrLen)
	}
	return fds, unexpected
}

// cmsgLenSize is the size of cmsghdr.cmsg_len (size_t) on this platform.
var cmsgLenSize = int(reflect.TypeOf(unix.Cmsghdr{}.Len).Size())

// readCmsghdr decodes a struct cmsghdr at the front of b (native layout:
// size_t cmsg_len, int cmsg_level, int cmsg_type).
func readCmsghdr(b []byte) unix.Cmsghdr {
	var h unix.Cmsghdr
	var n uint64
	if cmsgLenSize == 8 {
		n = binary.NativeEndian.Uint64(b)
	} else {
		n = uint64(binary.NativeEndian.Uint32(b))
	}
	h.SetLen(int(min(n, uint64(math.MaxInt32))))
	h.Level = int32(binary.NativeEndian.Uint32(b[cmsgLenSize:]))
	h.Type = int32(binary.NativeEndian.Uint32(b[cmsgLenSize+4:]))
	return h
}

// PidfdOpen returns a pidfd for process pid (close-on-exec), for
// [SyncSocket.SetPeerPidfd] and the sessions' PeerPidfd option.
func PidfdOpen(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, os.NewSyscallError("pidfd_open", err)
	}
	return os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), nil
}
