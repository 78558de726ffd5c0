//go:build linux

package procsync

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// DefaultTimeout is how long a parent waits for each message from the child,
// and for room to send each reply, by default (runc's mount-source thread
// waits as long for a request). A child waits without a limit by default,
// as in the Rust crate: its parent is expected to outlive it (set
// PeerPidfd to end the wait when it dies).
const DefaultTimeout = 60 * time.Second

// maxErrorText caps the text of an Error a session sends on its own.
const maxErrorText = 4096

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

func (o *Options) trace(sent bool, msg *pb.SyncMessage, fd bool) {
	if o.Trace == nil {
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
	o.Trace(sent, msg)
}

// deadline is when the current wait ends (zero: never); zero Timeout
// means def.
func (o *Options) deadline(def time.Duration) time.Time {
	t := o.Timeout
	if t == 0 {
		t = def
	}
	if t <= 0 {
		return time.Time{}
	}
	return time.Now().Add(t)
}

func (o *Options) apply(s *SyncSocket) {
	s.SetLimits(o.Limits)
	if o.PeerPidfd != nil {
		s.SetPeerPidfd(int(o.PeerPidfd.Fd()))
	}
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

// MismatchError is a MountFd reply for a different source than requested.
// The parent caused it.
type MismatchError struct {
	Requested, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("procsync: parent's MountFd is for %q, requested %q", e.Got, e.Requested)
}

// SessionError is a transport or decode failure while a session waited for,
// or sent, a message; Err says which (ErrPeerClosed, ErrPeerDied,
// os.ErrDeadlineExceeded for a receive, a *SendTimeoutError for a send —
// it matches os.ErrDeadlineExceeded too —, a *DecodeError, an OS error,
// ...).
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

// errorText makes err's text fit an Error message: non-empty, valid UTF-8,
// at most maxErrorText bytes.
func errorText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if s == "" {
		s = "unspecified error"
	}
	return s
}

// Child is the child's side of an exchange: it makes the requests and
// waits for each reply. Methods must be called in protocol order (a call
// out of order is a *ProtocolError and sends nothing).
type Child struct {
	sock   *SyncSocket
	opts   Options
	m      *Machine
	closed bool
}

// NewChild starts the child's side on sock (which the Child then owns).
func NewChild(sock *SyncSocket, opts Options) *Child {
	opts.apply(sock)
	return &Child{sock: sock, opts: opts, m: NewMachine(RoleChild, opts.Flow)}
}

// State returns the exchange's state.
func (c *Child) State() State { return c.m.State() }

func (c *Child) request(msg *pb.SyncMessage, fd int) (*pb.SyncMessage, *os.File, error) {
	if err := c.checkOpen(); err != nil {
		return nil, nil, err
	}
	ty := msg.GetType()
	if err := c.m.CheckSend(ty); err != nil {
		return nil, nil, err
	}
	if err := c.sock.SendFDDeadline(msg, fd, c.opts.deadline(-1)); err != nil {
		if errors.Is(err, ErrPeerClosed) {
			return nil, nil, c.peerGone("send "+TypeName(ty), err)
		}
		return nil, nil, &SessionError{Role: RoleChild, State: c.m.State(), Op: "send " + TypeName(ty), Err: err}
	}
	_ = c.m.OnSend(ty)
	c.opts.trace(true, msg, fd >= 0)
	reply, f, err := c.sock.Recv(c.opts.deadline(-1))
	if err != nil {
		if errors.Is(err, ErrPeerClosed) {
			return nil, nil, c.peerGone("wait for the reply to "+TypeName(ty), err)
		}
		return nil, nil, &SessionError{Role: RoleChild, State: c.m.State(), Op: "wait for the reply to " + TypeName(ty), Err: err}
	}
	if err := c.m.OnRecv(reply.GetType()); err != nil {
		// Broken: nothing acts on the reply; its fd is closed. The caller
		// may still Fail (one Error) and must Close.
		closeFile(f)
		return nil, nil, err
	}
	c.opts.trace(false, reply, f != nil)
	if reply.GetType() == TypeError {
		closeFile(f)
		return nil, nil, &RemoteError{From: RoleParent, Message: reply.GetError().GetMessage(), Pending: ty}
	}
	return reply, f, nil
}

// checkOpen refuses any write once the connection is over.
func (c *Child) checkOpen() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.m.State() == StateClosed && c.m.ClosedBy() == OriginPeer:
		return fmt.Errorf("procsync: nothing sent: %w", ErrPeerClosed)
	case c.m.State() == StateClosed:
		return ErrClosed
	}
	return nil
}

// peerGone records that the parent closed while op ran and explains it: a
// close while a request is pending is the parent's protocol violation.
func (c *Child) peerGone(op string, err error) error {
	state := c.m.State()
	if perr := c.m.OnPeerClosed(); perr != nil {
		pe := perr.(*ProtocolError)
		pe.Err = ErrPeerClosed
		return pe
	}
	return &SessionError{Role: RoleChild, State: state, Op: op, Err: err}
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

// MountPlease asks the parent for a source fd for mount and returns it
// (close-on-exec, owned by the caller) with how it was made. A refusal
// arrives as a *RemoteError.
func (c *Child) MountPlease(mount *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	reply, f, err := c.request(MountPleaseMessage(mount), -1)
	if err != nil {
		return nil, 0, err
	}
	info := reply.GetMountFd()
	if info.GetSource() != mount.GetSource() {
		closeFile(f)
		return nil, 0, &MismatchError{Requested: mount.GetSource(), Got: info.GetSource()}
	}
	return f, info.GetKind(), nil
}

// Hooks asks the parent to run the hooks and waits until it has.
func (c *Child) Hooks() error {
	_, _, err := c.request(HooksMessage(), -1)
	return err
}

// Ready tells the parent set-up is done and waits for Run.
func (c *Child) Ready() error {
	_, _, err := c.request(ReadyMessage(), -1)
	return err
}

// Seccomp hands the seccomp notify fd to the parent (attached to the
// record) and waits for SeccompDone. f stays owned by the caller.
func (c *Child) Seccomp(f *os.File) error {
	if f == nil {
		return errors.New("procsync: Seccomp: nil notify fd")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var reqErr error
	if err := rc.Control(func(fd uintptr) { _, _, reqErr = c.request(SeccompAttachedMessage(), int(fd)) }); err != nil {
		return err
	}
	return reqErr
}

// SeccompChildFD tells the parent the number of the notify fd in this
// process, for it to copy with pidfd_getfd(2) (runc does this on purpose:
// a seccomp filter may trap sendmsg), and waits for SeccompDone.
func (c *Child) SeccompChildFD(fd int32) error {
	_, _, err := c.request(SeccompChildFDMessage(fd), -1)
	return err
}

// Fail sends an Error with msg (trimmed to fit): the exchange ends. It
// is allowed in every state before close, also after the parent broke the
// protocol (Broken: one Error explaining why). It never writes to a closed
// connection (runc issue #4171): when the parent has closed or shut down
// its sending side it writes nothing and returns an error wrapping
// ErrPeerClosed. After Close it fails with ErrClosed, after an Error with a
// *ProtocolError.
func (c *Child) Fail(msg string) error {
	if err := c.checkOpen(); err != nil {
		return err
	}
	if err := c.m.CheckSend(TypeError); err != nil {
		return err
	}
	hungUp, err := peerHungUp(c.sock)
	if err != nil {
		return &SessionError{Role: RoleChild, State: c.m.State(), Op: "send Error", Err: err}
	}
	if hungUp {
		_ = c.m.OnPeerClosed() // closed either way; orderly or not does not matter now
		return fmt.Errorf("procsync: Error not sent: %w", ErrPeerClosed)
	}
	m := ErrorMessage(errorText(msg))
	if err := c.sock.SendFDDeadline(m, -1, c.opts.deadline(-1)); err != nil {
		if errors.Is(err, ErrPeerClosed) {
			return c.peerGone("send Error", err)
		}
		return &SessionError{Role: RoleChild, State: c.m.State(), Op: "send Error", Err: err}
	}
	_ = c.m.OnSend(TypeError)
	c.opts.trace(true, m, false)
	return nil
}

// peerHungUp reports, without reading or blocking, whether the peer closed
// or shut down its sending side (POLLHUP or POLLRDHUP right now).
func peerHungUp(s *SyncSocket) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(s.Fd()), Events: unix.POLLRDHUP}}
	for {
		_, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		return pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0, nil
	}
}

// Close ends the child's side and closes the socket. Closing where the
// protocol does not allow it (before Run, or with a request pending,
// without a Fail first) returns a *ProtocolError after the socket is
// closed anyway, so the caller knows the parent sees a violation.
func (c *Child) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	perr := c.m.CheckClose()
	c.m.OnClose()
	if err := c.sock.Close(); err != nil {
		return err
	}
	return perr
}

// SeccompRequest is the child's seccomp hand-over as a Handler sees it.
type SeccompRequest struct {
	// File is the notify fd when it was attached (owned by the handler).
	File *os.File
	// ChildFD is the fd number in the child otherwise (copy it with
	// pidfd_getfd(2)); -1 when File is set.
	ChildFD int32
}

// Handler answers the child's requests in a [Parent.Serve] loop. A
// returned error is sent to the child as an Error reply and ends Serve
// with a *HandlerError.
type Handler interface {
	// Mount returns a source fd for an allowed mount request and how it
	// was made. The parent closes the file after sending it.
	Mount(req *pb.Mount) (*os.File, pb.MountSourceKind, error)
	// Hooks runs the hooks.
	Hooks() error
	// Ready is called when the child is set up, before Run is sent.
	Ready() error
	// Seccomp takes the child's seccomp notify fd.
	Seccomp(req SeccompRequest) error
}

// HandlerError is a Handler method's failure; it was also sent to the child
// as an Error reply.
type HandlerError struct {
	Request pb.MessageType
	Err     error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("procsync: parent's %s handler failed: %v", TypeName(e.Request), e.Err)
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// ParentOptions configure a [Parent].
type ParentOptions struct {
	Options
	// Mounts is the set the default policy serves (each once); ignored
	// when Policy is set.
	Mounts []*pb.Mount
	// Policy decides which mounts are served; nil means
	// NewAllowList(Mounts...).
	Policy MountPolicy
}

// Parent is the parent's side of an exchange: [Parent.Serve] answers the
// child's requests until the child closes.
type Parent struct {
	sock   *SyncSocket
	opts   ParentOptions
	policy MountPolicy
	m      *Machine
}

// NewParent starts the parent's side on sock (which the Parent then owns
// and closes at the end of Serve).
func NewParent(sock *SyncSocket, opts ParentOptions) *Parent {
	opts.apply(sock)
	policy := opts.Policy
	if policy == nil {
		policy = NewAllowList(opts.Mounts...)
	}
	return &Parent{sock: sock, opts: opts, policy: policy, m: NewMachine(RoleParent, opts.Flow)}
}

// State returns the exchange's state.
func (p *Parent) State() State { return p.m.State() }

// Serve answers requests with h until the child closes its end after Run
// (nil), or something goes wrong: the child's Error (*RemoteError), a
// protocol violation including the child closing without Ready
// (*ProtocolError), a refused mount (*MountRefusedError), a handler
// failure (*HandlerError), or a transport or decode failure, a timeout
// (no request in time, or no room for a reply in time: a child that stops
// reading; *SendTimeoutError) or peer death (*SessionError). The
// per-message deadline bounds every receive and every send, so a live
// child cannot hold Serve for ever. A refusal or handler failure is answered
// with an Error reply first ("mount request refused: ...", "<Request>
// failed in the parent: ..."), best effort. Every exit shuts down the
// sending side and closes the socket, so a child still waiting reads EOF.
func (p *Parent) Serve(h Handler) error {
	defer func() {
		p.m.OnClose()
		_ = p.sock.ShutdownWrite()
		_ = p.sock.Close()
	}()
	if p.m.State() == StateClosed {
		return ErrClosed
	}
	for {
		msg, f, err := p.sock.Recv(p.opts.deadline(DefaultTimeout))
		if err != nil {
			if errors.Is(err, ErrPeerClosed) {
				if perr := p.m.OnPeerClosed(); perr != nil {
					pe := perr.(*ProtocolError)
					pe.Err = ErrPeerClosed
					return pe
				}
				return nil
			}
			// The child exited where its close is orderly (after Run): its
			// end closed with it, even if a process it started still holds
			// a copy, so this is the end of the conversation.
			if errors.Is(err, ErrPeerDied) && p.m.CheckPeerClose() == nil {
				_ = p.m.OnPeerClosed()
				return nil
			}
			return &SessionError{Role: RoleParent, State: p.m.State(), Op: "recv", Err: err}
		}
		ty := msg.GetType()
		if err := p.m.OnRecv(ty); err != nil {
			// Broken: the message is not acted on and its fd is closed.
			// The parent may explain only if a request was pending.
			closeFile(f)
			if p.m.ExpectedSend().Contains(TypeError) {
				p.replyError(err.(*ProtocolError).Detail())
			}
			return err
		}
		p.opts.trace(false, msg, f != nil)
		if ty == TypeError {
			closeFile(f)
			return &RemoteError{From: RoleChild, Message: msg.GetError().GetMessage()}
		}
		if err := p.serve(h, msg, f); err != nil {
			return err
		}
	}
}

// serve answers one request (f is the fd that came with it, if any).
func (p *Parent) serve(h Handler, msg *pb.SyncMessage, f *os.File) error {
	ty := msg.GetType()
	var reply *pb.SyncMessage
	var replyFile *os.File
	var herr error
	switch ty {
	case TypeMountPlease:
		req := msg.GetMountPlease()
		if err := p.policy.Allow(req); err != nil {
			p.replyError(RefusalText(err))
			return &MountRefusedError{Mount: req, Reason: err.Error(), Err: err}
		}
		var kind pb.MountSourceKind
		replyFile, kind, herr = h.Mount(req)
		if herr == nil && replyFile == nil {
			herr = errors.New("the Mount handler returned no file")
		}
		reply = MountFdMessage(kind, req.GetSource())
	case TypeHooks:
		herr = h.Hooks()
		reply = HooksDoneMessage()
	case TypeReady:
		herr = h.Ready()
		reply = RunMessage()
	case TypeSeccomp:
		req := SeccompRequest{File: f, ChildFD: -1}
		if t, ok := msg.GetSeccomp().GetTransfer().(*pb.SeccompInfo_ChildFd); ok {
			req.ChildFD = t.ChildFd
		}
		herr = h.Seccomp(req)
		reply = SeccompDoneMessage()
	default:
		// The machine admits only the child's requests (and Error).
		closeFile(f)
		herr = fmt.Errorf("unexpected %s from the child", TypeName(ty))
	}
	if herr != nil {
		closeFile(replyFile)
		p.replyError(TypeName(ty) + " failed in the parent: " + herr.Error())
		return &HandlerError{Request: ty, Err: herr}
	}
	err := p.reply(ty, reply, replyFile)
	closeFile(replyFile)
	var ee *EncodeError
	if errors.As(err, &ee) {
		// A reply this side cannot encode (e.g. an unknown kind from the
		// handler) still answers the child: with an Error.
		p.replyError(fmt.Sprintf("%s failed in the parent: cannot send %s: %v", TypeName(ty), TypeName(reply.GetType()), err))
		return &HandlerError{Request: ty, Err: err}
	}
	return err
}

// reply sends the reply to request req, checked against the state machine.
func (p *Parent) reply(req pb.MessageType, msg *pb.SyncMessage, f *os.File) error {
	ty := msg.GetType()
	if err := p.m.CheckSend(ty); err != nil {
		return err
	}
	if err := p.sock.SendDeadline(msg, f, p.opts.deadline(DefaultTimeout)); err != nil {
		var ee *EncodeError
		if errors.As(err, &ee) {
			return err
		}
		state := p.m.State()
		if errors.Is(err, ErrPeerClosed) {
			if perr := p.m.OnPeerClosed(); perr != nil {
				pe := perr.(*ProtocolError)
				pe.Err = ErrPeerClosed
				return pe
			}
		}
		return &SessionError{Role: RoleParent, State: state, Op: "send " + TypeName(ty) + " (reply to " + TypeName(req) + ")", Err: err}
	}
	_ = p.m.OnSend(ty)
	p.opts.trace(true, msg, f != nil)
	return nil
}

// replyError sends the Error reply to the pending request. Best effort: a
// child that already closed, died or stopped reading (bounded by the
// per-message deadline) cannot be told, and the caller's error (the
// refusal, the handler's failure) is the one that matters.
func (p *Parent) replyError(text string) {
	m := ErrorMessage(errorText(text))
	if p.m.CheckSend(TypeError) != nil || p.sock.SendDeadline(m, nil, p.opts.deadline(DefaultTimeout)) != nil {
		return
	}
	_ = p.m.OnSend(TypeError)
	p.opts.trace(true, m, false)
}

// MountRefusedError is a mount request the policy refused; the child got
// an Error reply saying so ([RefusalText]) and the parent opened nothing.
type MountRefusedError struct {
	Mount *pb.Mount
	// Reason is the refusal's text (the Error reply without RefusalPrefix).
	Reason string
	// Err is the policy's error (a *PolicyRefusal for AllowList).
	Err error
}

func (e *MountRefusedError) Error() string {
	return "procsync: refused a mount request: " + e.Reason
}

// Unwrap returns the policy's error.
func (e *MountRefusedError) Unwrap() error { return e.Err }

// HandlerFuncs adapts functions to a Handler. A nil function means the
// Rust crate's ParentHandler default: Mount serves no mounts (pass a
// [PinnedSources]' OpenPlain or OpenTree), Hooks and Ready do nothing,
// Seccomp refuses the fd (closing an attached one): a parent that runs no seccomp agent must
// not pretend to take the fd. A refusal reaches the child as
// "<Request> failed in the parent: ...".
type HandlerFuncs struct {
	MountFunc   func(req *pb.Mount) (*os.File, pb.MountSourceKind, error)
	HooksFunc   func() error
	ReadyFunc   func() error
	SeccompFunc func(req SeccompRequest) error
}

// Mount implements Handler.
func (h HandlerFuncs) Mount(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	if h.MountFunc == nil {
		return nil, 0, fmt.Errorf("this parent serves no mount requests (asked for %s)", rustQuote(req.GetSource()))
	}
	return h.MountFunc(req)
}

// Hooks implements Handler.
func (h HandlerFuncs) Hooks() error {
	if h.HooksFunc == nil {
		return nil
	}
	return h.HooksFunc()
}

// Ready implements Handler.
func (h HandlerFuncs) Ready() error {
	if h.ReadyFunc == nil {
		return nil
	}
	return h.ReadyFunc()
}

// Seccomp implements Handler.
func (h HandlerFuncs) Seccomp(req SeccompRequest) error {
	if h.SeccompFunc == nil {
		closeFile(req.File)
		return errors.New("this parent takes no seccomp notify fd")
	}
	return h.SeccompFunc(req)
}
