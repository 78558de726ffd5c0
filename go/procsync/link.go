//go:build linux

package procsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// DefaultTimeout is how long a parent waits for each message from the child,
// and for room to send each reply, by default (runc's mount-source thread
// waits as long for a request). A child waits without a limit by default,
// as in the Rust crate: its parent is expected to outlive it (set
// PeerPidfd to end the wait when it dies).
const DefaultTimeout = 60 * time.Second

// TruncationMark ends an Error text that was cut to fit the peer's record
// limit (PROTOCOL §11): the text is cut at a UTF-8 boundary and the mark
// appended, so the reader sees that something is missing.
const TruncationMark = " […truncated]"

// Options configure a [Child] or [Parent] session.
type Options struct {
	// Flow is the exchange to run (init or exec).
	Flow Flow
	// Timeout bounds the wait for each message from the peer, and the
	// wait for room to send each message to it (a peer that is alive but
	// stops reading fills the socket; the send then fails with a
	// *[SendTimeoutError] and nothing is sent). Zero means the role's
	// default: [DefaultTimeout] for a [Parent], no limit for a [Child]; a
	// negative value means no limit.
	Timeout time.Duration
	// PeerPidfd, when set, is a pidfd of the peer process (see
	// [PidfdOpen]); a wait fails with [ErrPeerDied] once the peer exited
	// with nothing left to read. The session does not close it.
	PeerPidfd *os.File
	// Limits are the record limits; the zero value means the defaults.
	Limits Limits
	// Trace, when set, is called after each message is sent (sent true)
	// or received and accepted by the state machine; HasFd in msg's
	// flags says whether an fd travelled with it. For logs and
	// transcripts; it must not keep msg.
	Trace func(sent bool, msg *pb.SyncMessage)
}

// link is what both sides of a session share (as the Rust crate's Link):
// the socket, the options, the state machine, and the one way to send and
// receive a message through the order check, with the per-message
// deadline and the context.
type link struct {
	// mu is held by every call of the session; Close takes it after
	// closing the socket (which ends a pending call).
	mu   sync.Mutex
	sock *SyncSocket
	opts Options
	m    *Machine
	// def is the role's default per-message timeout.
	def time.Duration
	// setupErr is a failure applying the options (watching the peer's
	// pidfd); every call reports it.
	setupErr error
}

func (l *link) init(sock *SyncSocket, opts Options, role Role, def time.Duration) {
	l.sock, l.opts, l.m, l.def = sock, opts, NewMachine(role, opts.Flow), def
	sock.SetLimits(opts.Limits)
	if opts.PeerPidfd != nil {
		rc, err := opts.PeerPidfd.SyscallConn()
		if err == nil {
			var serr error
			err = rc.Control(func(fd uintptr) { serr = sock.SetPeerPidfd(int(fd)) })
			if err == nil {
				err = serr
			}
		}
		if err != nil {
			l.setupErr = &SessionError{Role: role, State: l.m.State(), Op: "watch the peer's pidfd", Err: err}
		}
	}
}

func (l *link) trace(sent bool, msg *pb.SyncMessage, fd bool) {
	if l.opts.Trace == nil {
		return
	}
	if sent {
		// Show what went on the wire: HasFd set from the attachment.
		w := wireMessage(msg, msg.GetFlags()&^FlagHasFd)
		if fd {
			w.Flags |= FlagHasFd
		}
		msg = w
	}
	l.opts.Trace(sent, msg)
}

// deadline is when the current wait ends (zero: never).
func (l *link) deadline() time.Time {
	t := l.opts.Timeout
	if t == 0 {
		t = l.def
	}
	if t <= 0 {
		return time.Time{}
	}
	return time.Now().Add(t)
}

// send checks msg against the order, sends it (with fd when >= 0) within
// the per-message deadline and advances the state. A codec refusal
// (*EncodeError) is returned as is; a peer that closed is reported by
// peerClosed; any other failure is a *SessionError.
func (l *link) send(ctx context.Context, msg *pb.SyncMessage, fd int, op string) error {
	ty := msg.GetType()
	if err := l.m.CheckSend(ty); err != nil {
		return err
	}
	if err := l.sock.SendFDContext(ctx, msg, fd, l.deadline()); err != nil {
		var ee *EncodeError
		if errors.As(err, &ee) {
			return err
		}
		if errors.Is(err, ErrPeerClosed) {
			return l.peerClosed(op, err)
		}
		return &SessionError{Role: l.m.Role(), State: l.m.State(), Op: op, Err: err}
	}
	_ = l.m.OnSend(ty)
	l.trace(true, msg, fd >= 0)
	return nil
}

// recv waits for the next message within the per-message deadline and
// checks it against the order. A message the order rejects is not acted
// on: its fd is closed and the *ProtocolError returned.
func (l *link) recv(ctx context.Context, op string) (*pb.SyncMessage, *os.File, error) {
	msg, f, err := l.sock.RecvContext(ctx, l.deadline())
	if err != nil {
		if errors.Is(err, ErrPeerClosed) {
			return nil, nil, l.peerClosed(op, err)
		}
		return nil, nil, &SessionError{Role: l.m.Role(), State: l.m.State(), Op: op, Err: err}
	}
	if err := l.m.OnRecv(msg.GetType()); err != nil {
		closeFile(f)
		return nil, nil, err
	}
	l.trace(false, msg, f != nil)
	return msg, f, nil
}

// peerClosed records that the peer closed while op ran: a
// *ProtocolError when the order did not allow it, else a *SessionError
// wrapping err (ErrPeerClosed).
func (l *link) peerClosed(op string, err error) error {
	state := l.m.State()
	if perr := l.m.OnPeerClosed(); perr != nil {
		pe := perr.(*ProtocolError)
		pe.Err = ErrPeerClosed
		return pe
	}
	return &SessionError{Role: l.m.Role(), State: state, Op: op, Err: err}
}

// sendError sends an Error with text fitted to the peer's record limit.
func (l *link) sendError(ctx context.Context, text string) error {
	return l.send(ctx, ErrorMessage(FitErrorText(text, l.sock.Limits())), -1, "send Error")
}

// RemoteError is an Error message the peer sent: it gave up, and says why.
type RemoteError struct {
	// From is the role that sent it.
	From Role
	// Message is the peer's text.
	Message string
	// Pending is the request it answered (zero when none was pending).
	Pending pb.MessageType
}

func (e *RemoteError) Error() string {
	if e.Pending != 0 {
		return fmt.Sprintf("procsync: %s refused %s: %s", e.From, TypeName(e.Pending), e.Message)
	}
	return fmt.Sprintf("procsync: %s failed: %s", e.From, e.Message)
}

// Kind returns [KindRemoteError].
func (e *RemoteError) Kind() ErrorKind { return KindRemoteError }

// Origin is [OriginPeer].
func (e *RemoteError) Origin() Origin { return OriginPeer }

// MismatchError is a MountFd reply that does not fit the MountPlease it
// answers: for another source than requested ([KindSourceMismatch]), or a
// PLAIN_OPEN source for an id-mapped request ([KindSourceDowngraded]: the
// fd is not id-mapped, as an older parent that drops the id-mapping fields
// would answer). The fd was closed; the parent caused it.
type MismatchError struct {
	// Requested and Got are the sources asked for and answered.
	Requested, Got string
	// Kind of source the parent sent (set for a downgrade).
	SourceKind pb.MountSourceKind
	downgraded bool
}

func (e *MismatchError) Error() string {
	if e.downgraded {
		return fmt.Sprintf("procsync: parent answered the id-mapped request for %q with a %s source (no id mapping)",
			e.Requested, SourceKindName(e.SourceKind))
	}
	return fmt.Sprintf("procsync: parent's MountFd is for %q, requested %q", e.Got, e.Requested)
}

// Kind returns [KindSourceMismatch] or [KindSourceDowngraded].
func (e *MismatchError) Kind() ErrorKind {
	if e.downgraded {
		return KindSourceDowngraded
	}
	return KindSourceMismatch
}

// Origin is [OriginPeer].
func (e *MismatchError) Origin() Origin { return OriginPeer }

// SessionError is a transport or decode failure while a session waited for,
// or sent, a message; Err says which (ErrPeerClosed, ErrPeerDied, a
// timeout — errors.Is(err, os.ErrDeadlineExceeded) —, a *SendTimeoutError
// for a send, a *DecodeError, [ErrClosed], a cancelled context —
// errors.Is(err, context.Canceled) —, an OS error, ...). Its kind is
// [KindTransport]; KindOf(e.Err) gives the cause's.
type SessionError struct {
	Role  Role
	State State
	// Op is what the session was doing ("recv", "send MountFd").
	Op  string
	Err error
}

func (e *SessionError) Error() string {
	return fmt.Sprintf("procsync: %s in state %s: %s: %v", e.Role, e.State, e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *SessionError) Unwrap() error { return e.Err }

// Kind returns [KindTransport].
func (e *SessionError) Kind() ErrorKind { return KindTransport }

// Origin is the cause's origin (OriginOS when it has none).
func (e *SessionError) Origin() Origin {
	var o interface{ Origin() Origin }
	if errors.As(e.Err, &o) {
		return o.Origin()
	}
	return OriginOS
}

// FitErrorText makes s the text of an Error message whose record fits lim
// (PROTOCOL §11): valid UTF-8 (invalid bytes become U+FFFD), not empty
// ("unspecified error"), and, when the record would exceed the limit, cut
// at a UTF-8 boundary with [TruncationMark] appended. Under a limit too
// small even for the mark, the cut text goes without it.
func FitErrorText(s string, lim Limits) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if s == "" {
		s = "unspecified error"
	}
	limit := lim.MaxRecord()
	if errorRecordLen(len(s)) <= limit {
		return s
	}
	mark := TruncationMark
	if errorRecordLen(len(mark)+utf8.UTFMax) > limit {
		mark = "" // a limit this small has no room for the mark
	}
	// The largest cut whose record fits (the record grows with the text).
	cut := len(s)
	for cut > 0 && errorRecordLen(cut+len(mark)) > limit {
		cut = max(cut-max(errorRecordLen(cut+len(mark))-limit, 1), 0)
	}
	// The step may overshoot where the varints got shorter.
	for cut < len(s) && errorRecordLen(cut+1+len(mark)) <= limit {
		cut++
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut == 0 {
		return "?" // not reachable: every limit has room for one character
	}
	return s[:cut] + mark
}

// errorRecordLen is the size of the record of an Error message whose text
// has n bytes.
func errorRecordLen(n int) int {
	info := 1 + sizeVarint(n) + n           // ErrorInfo.message
	body := 2 + 1 + sizeVarint(info) + info // type, then the error payload
	return sizeVarint(body) + body
}

func sizeVarint(n int) int {
	s := 1
	for n >= 0x80 {
		n >>= 7
		s++
	}
	return s
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}
