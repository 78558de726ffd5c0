package procsync

import (
	"errors"
	"fmt"
	"os"
	"time"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// ErrorKind is the stable, language-neutral name of an error: the same
// kebab-case strings as the Rust crate's `kind().as_str()` in every layer
// (PROTOCOL §6 for the wire, §8 for the transport, §11 for sessions).
// Cross-language tests compare kinds, never message texts. Get one with
// [KindOf], or from the Kind method of the error types.
type ErrorKind string

// The wire kinds (PROTOCOL §6), in the order the decoder checks for them:
// a rejected record, on a *DecodeError, *EncodeError or *ValidationError.
const (
	KindEmptyRecord       ErrorKind = "empty-record"
	KindTruncatedLength   ErrorKind = "truncated-length"
	KindMalformedLength   ErrorKind = "malformed-length"
	KindLengthMismatch    ErrorKind = "length-mismatch"
	KindTooLarge          ErrorKind = "too-large"
	KindMalformedBody     ErrorKind = "malformed-body"
	KindUnspecifiedType   ErrorKind = "unspecified-type"
	KindUnknownType       ErrorKind = "unknown-type"
	KindReservedFlags     ErrorKind = "reserved-flags"
	KindMissingFd         ErrorKind = "missing-fd"
	KindUnexpectedFd      ErrorKind = "unexpected-fd"
	KindTooManyFds        ErrorKind = "too-many-fds"
	KindMissingPayload    ErrorKind = "missing-payload"
	KindUnexpectedPayload ErrorKind = "unexpected-payload"
	KindInvalidValue      ErrorKind = "invalid-value"
)

// The transport kinds (PROTOCOL §8), on a *[TransportError] (a rejected
// record is a *DecodeError with a wire kind).
const (
	// KindPeerClosed: the peer closed its end (EOF, EPIPE, ECONNRESET). Peer.
	KindPeerClosed ErrorKind = "peer-closed"
	// KindPeerDied: the peer process exited (its pidfd fired) and nothing
	// is left to read. Peer.
	KindPeerDied ErrorKind = "peer-died"
	// KindTimeout: no record arrived before the deadline. Peer.
	KindTimeout ErrorKind = "timeout"
	// KindSendTimeout: no room in the peer's receive queue before the
	// deadline; nothing sent (a *[SendTimeoutError]). Peer.
	KindSendTimeout ErrorKind = "send-timeout"
	// KindUnexpectedControl: a control message that is neither
	// SCM_RIGHTS, SCM_PIDFD, SCM_CREDENTIALS nor SCM_SECURITY. OS.
	KindUnexpectedControl ErrorKind = "unexpected-control"
	// KindNotSeqpacket: the fd handed over is not an AF_UNIX
	// SOCK_SEQPACKET socket (it is left open). Local.
	KindNotSeqpacket ErrorKind = "not-seqpacket"
	// KindEnvNotSet: PROCSYNC_SYNC_FD is not set. Local.
	KindEnvNotSet ErrorKind = "env-not-set"
	// KindEnvInvalid: PROCSYNC_SYNC_FD does not name a usable fd (not
	// decimal, leading zeros, 0–2, not open). Local.
	KindEnvInvalid ErrorKind = "env-invalid"
	// KindWriteShutdown: a send after [SyncSocket.ShutdownWrite]. Local.
	KindWriteShutdown ErrorKind = "write-shutdown"
	// KindIO: a system call failed. OS.
	KindIO ErrorKind = "io"
	// KindClosed: the local side already closed the socket or session, or
	// closed it while the call waited (Go only: a Rust socket cannot be
	// closed under a pending call). Local.
	KindClosed ErrorKind = "closed"
	// KindCanceled: the call's context was done while it waited; nothing
	// was sent or consumed (Go only). Local.
	KindCanceled ErrorKind = "canceled"
	// KindBadFile: the *os.File to attach was already closed (Go only).
	// Local.
	KindBadFile ErrorKind = "bad-file"
)

// The session kinds (PROTOCOL §11): the kinds of the session error types.
const (
	// KindProtocolViolation: the peer broke the message order (a
	// *ProtocolError with Origin OriginPeer). Peer.
	KindProtocolViolation ErrorKind = "protocol-violation"
	// KindMisuse: the local caller called out of order; nothing was sent
	// (a *ProtocolError with Origin OriginLocal). Local.
	KindMisuse ErrorKind = "misuse"
	// KindRemoteError: the peer sent Error (a *[RemoteError]). Peer.
	KindRemoteError ErrorKind = "remote-error"
	// KindTransport: the socket failed while the session waited or sent
	// (a *[SessionError]; its cause has the transport or wire kind).
	KindTransport ErrorKind = "transport"
	// KindMountRefused: the mount policy refused the child's request (a
	// *[MountRefusedError]). Peer.
	KindMountRefused ErrorKind = "mount-refused"
	// KindHandlerFailed: the parent's handler failed (a *[HandlerError]).
	// Local.
	KindHandlerFailed ErrorKind = "handler-failed"
	// KindHandlerOverran: the parent's handler returned after the reply
	// was due; its result was discarded and the child was sent Error (a
	// *[HandlerError] with Overran set). Local.
	KindHandlerOverran ErrorKind = "handler-overran"
	// KindSourceMismatch: a MountFd for another source than requested (a
	// *[MismatchError]). Peer.
	KindSourceMismatch ErrorKind = "source-mismatch"
	// KindSourceDowngraded: an id-mapped request answered by a source
	// without the id mapping (PLAIN_OPEN) — a *[MismatchError]. Peer.
	KindSourceDowngraded ErrorKind = "source-downgraded"
)

// String returns the stable name.
func (k ErrorKind) String() string { return string(k) }

// KindOf returns the [ErrorKind] of the first error in err's chain that has
// one (every error type of this package does). A *ProtocolError counts as
// the session kind [KindProtocolViolation] (the peer broke the order) or
// [KindMisuse] (the local caller did), as the Rust crate's SessionError
// reports it; its state-machine kind is [ProtocolError.Kind].
func KindOf(err error) (ErrorKind, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch x := e.(type) {
		case *ProtocolError:
			if x.Origin() == OriginPeer {
				return KindProtocolViolation, true
			}
			return KindMisuse, true
		case interface{ Kind() ErrorKind }:
			return x.Kind(), true
		}
	}
	return "", false
}

// TransportError is a failure of the sync socket itself (PROTOCOL §8):
// its Kind says which. The sentinels [ErrPeerClosed], [ErrPeerDied] and
// [ErrClosed] are TransportErrors too, and errors.Is matches every
// TransportError of the same kind against them. A cancelled context's
// error is its cause (errors.Is(err, context.Canceled) holds).
type TransportError struct {
	kind ErrorKind
	// Op is what the socket was doing ("recv", "send MountFd").
	Op string
	// Err is the cause (an OS error, the context's error, ...), or nil.
	Err error
}

// Kind returns the stable kind.
func (e *TransportError) Kind() ErrorKind { return e.kind }

// Origin is who caused it.
func (e *TransportError) Origin() Origin {
	switch e.kind {
	case KindPeerClosed, KindPeerDied, KindTimeout, KindSendTimeout:
		return OriginPeer
	case KindUnexpectedControl, KindIO:
		return OriginOS
	}
	return OriginLocal
}

// Unwrap returns the cause.
func (e *TransportError) Unwrap() error { return e.Err }

// Is reports whether target is a TransportError sentinel (no Op, no cause)
// of the same kind, or os.ErrDeadlineExceeded for a timeout.
func (e *TransportError) Is(target error) bool {
	if t, ok := target.(*TransportError); ok {
		return t.Op == "" && t.Err == nil && t.kind == e.kind
	}
	return e.kind == KindTimeout && target == os.ErrDeadlineExceeded
}

func (e *TransportError) Error() string {
	var what string
	switch e.kind {
	case KindPeerClosed:
		what = "peer closed the sync socket"
	case KindPeerDied:
		what = "peer process died"
	case KindClosed:
		what = "sync socket already closed"
	case KindTimeout:
		what = "no record from the peer before the deadline"
	case KindCanceled:
		what = "canceled"
	case KindBadFile:
		what = "the file to attach is not open"
	case KindWriteShutdown:
		what = "cannot send: this side already shut down writing"
	}
	s := "procsync: "
	if e.Op != "" {
		s += e.Op + ": "
	}
	switch {
	case what != "" && e.Err != nil:
		return s + what + ": " + e.Err.Error()
	case what != "":
		return s + what
	case e.Err != nil:
		return s + e.Err.Error()
	}
	return s + string(e.kind)
}

// Sentinel errors of the transport and the sessions. Match them with
// errors.Is; each is a *[TransportError] of its kind.
var (
	// ErrPeerClosed: the peer closed its end (EOF, EPIPE or ECONNRESET).
	ErrPeerClosed error = &TransportError{kind: KindPeerClosed}
	// ErrPeerDied: the peer process exited (its pidfd became readable) and
	// nothing is left to read.
	ErrPeerDied error = &TransportError{kind: KindPeerDied}
	// ErrClosed: the local side already closed the socket or session (or
	// closed it while the call waited).
	ErrClosed error = &TransportError{kind: KindClosed}
	// ErrSendTimeout: a send found no room in the peer's receive queue
	// before its deadline (the peer stopped reading); nothing was sent.
	// Every *SendTimeoutError matches it, and os.ErrDeadlineExceeded.
	ErrSendTimeout = errors.New("procsync: send timed out: the peer takes no records")
)

// SendTimeoutError is a send that found no room in the peer's receive
// queue until its deadline: the peer is alive but stopped reading (or
// keeps sending without reading the replies). The peer caused it. The
// record was not sent; no fd was passed. It matches [ErrSendTimeout] and
// os.ErrDeadlineExceeded with errors.Is, as a receive timeout matches the
// latter.
type SendTimeoutError struct {
	// Type is the message that was not sent.
	Type pb.MessageType
	// Waited is how long the send waited for room.
	Waited time.Duration
}

func (e *SendTimeoutError) Error() string {
	return fmt.Sprintf("procsync: send %s: the peer took no record for %v (its receive queue is full); not sent",
		TypeName(e.Type), e.Waited.Round(time.Millisecond))
}

// Is reports whether target is [ErrSendTimeout] or os.ErrDeadlineExceeded.
func (e *SendTimeoutError) Is(target error) bool {
	return target == ErrSendTimeout || target == os.ErrDeadlineExceeded
}

// Timeout reports true, as net.Error and os.IsTimeout expect.
func (e *SendTimeoutError) Timeout() bool { return true }

// Kind returns [KindSendTimeout].
func (e *SendTimeoutError) Kind() ErrorKind { return KindSendTimeout }

// Origin is [OriginPeer]: it stopped reading.
func (e *SendTimeoutError) Origin() Origin { return OriginPeer }

// ValidationError is a message that breaks a protocol rule. On receive the
// peer caused it (it arrives wrapped in a *DecodeError); on send the local
// caller did (wrapped in an *EncodeError).
type ValidationError struct {
	kind ErrorKind
	// Type is the message type (its raw value for unknown types).
	Type pb.MessageType
	// Flags is the flags word checked (reserved-flags, unexpected-fd).
	Flags uint32
	// Count is the number of fds that came (too-many-fds).
	Count int
	// Payload names the payload expected (missing-payload) or that came
	// (unexpected-payload): "error", "mount_please", "mount_fd", "seccomp".
	Payload string
	// Field is the offending field as a dotted path (invalid-value),
	// e.g. "mount_please.source".
	Field string
	// Reason says what is wrong with Field (invalid-value).
	Reason string
}

// Kind returns the stable kind of the rejection.
func (e *ValidationError) Kind() ErrorKind { return e.kind }

func (e *ValidationError) Error() string {
	ty := TypeName(e.Type)
	switch e.kind {
	case KindUnspecifiedType:
		return "message has no type"
	case KindUnknownType:
		return fmt.Sprintf("unknown message type %d", int32(e.Type))
	case KindReservedFlags:
		return fmt.Sprintf("%s: reserved flag bits set: %#x", ty, e.Flags)
	case KindMissingFd:
		return fmt.Sprintf("%s: expected an fd, got none", ty)
	case KindUnexpectedFd:
		return fmt.Sprintf("%s: unexpected fd (flags %#x)", ty, e.Flags)
	case KindTooManyFds:
		return fmt.Sprintf("%s: %d fds in one record, at most 1 allowed", ty, e.Count)
	case KindMissingPayload:
		return fmt.Sprintf("%s: missing %s payload", ty, e.Payload)
	case KindUnexpectedPayload:
		return fmt.Sprintf("%s: unexpected %s payload", ty, e.Payload)
	default:
		return fmt.Sprintf("%s: invalid %s: %s", ty, e.Field, e.Reason)
	}
}

// DecodeError is a received record that was rejected. The peer caused it.
type DecodeError struct {
	kind ErrorKind
	// Declared and Actual are the length prefix and the body length
	// (length-mismatch).
	Declared uint64
	Actual   int
	// Size and Max are the record size and the configured limit
	// (too-large; Size is a lower bound when the kernel truncated the record).
	Size, Max int
	// Detail describes a malformed body or a transport-level rejection.
	Detail string
	// Invalid is set when the message decoded but broke a protocol rule.
	Invalid *ValidationError
}

// Kind returns the stable kind of the rejection.
func (e *DecodeError) Kind() ErrorKind { return e.kind }

// Origin is [OriginPeer]: the peer sent the record.
func (e *DecodeError) Origin() Origin { return OriginPeer }

// Unwrap returns the validation error, if any.
func (e *DecodeError) Unwrap() error {
	if e.Invalid != nil {
		return e.Invalid
	}
	return nil
}

func (e *DecodeError) Error() string {
	var s string
	switch e.kind {
	case KindEmptyRecord:
		s = "empty record"
	case KindTruncatedLength:
		s = "truncated length prefix"
	case KindMalformedLength:
		s = "malformed length prefix"
	case KindLengthMismatch:
		s = fmt.Sprintf("length prefix says %d bytes but %d follow", e.Declared, e.Actual)
	case KindTooLarge:
		if e.Detail != "" {
			s = fmt.Sprintf("record exceeds the limit of %d bytes (%s)", e.Max, e.Detail)
		} else {
			s = fmt.Sprintf("record of %d bytes exceeds the limit of %d", e.Size, e.Max)
		}
	case KindMalformedBody:
		s = "malformed body: " + e.Detail
	default:
		if e.Invalid != nil {
			s = e.Invalid.Error()
		} else {
			s = string(e.kind) + ": " + e.Detail
		}
	}
	return "procsync: bad record from peer: " + s
}

// EncodeError is a message the local caller tried to send that the
// protocol does not allow; it is never sent.
type EncodeError struct {
	kind ErrorKind
	// Type is the message type.
	Type pb.MessageType
	// Size and Max are the record size and the limit (too-large).
	Size, Max int
	// Invalid is set when the message breaks a protocol rule.
	Invalid *ValidationError
}

// Kind returns the stable kind of the rejection.
func (e *EncodeError) Kind() ErrorKind { return e.kind }

// Origin is [OriginLocal]: the local caller asked to send it.
func (e *EncodeError) Origin() Origin { return OriginLocal }

// Unwrap returns the validation error, if any.
func (e *EncodeError) Unwrap() error {
	if e.Invalid != nil {
		return e.Invalid
	}
	return nil
}

func (e *EncodeError) Error() string {
	if e.Invalid != nil {
		return "procsync: refusing to send an invalid message: " + e.Invalid.Error()
	}
	return fmt.Sprintf("procsync: %s record of %d bytes exceeds the limit of %d", TypeName(e.Type), e.Size, e.Max)
}
