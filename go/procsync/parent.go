//go:build linux

package procsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

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

// HandlerDeadline is implemented by a [Handler] that wants to know when
// its reply is due (PROTOCOL §11): before each Handler call the parent
// calls SetDeadline with the instant the request arrived plus the
// per-message timeout (zero: no deadline). A handler doing blocking work
// must finish or give up by then; one that returns later has its result
// discarded.
type HandlerDeadline interface {
	SetDeadline(due time.Time)
}

// HandlerError is a Handler method's failure, or its return after the
// reply was due (Overran > 0: its result was discarded, an fd it made
// closed); either way the child was sent an Error reply.
type HandlerError struct {
	Request pb.MessageType
	Err     error
	// Overran is how late the handler returned (zero when it failed).
	Overran time.Duration
}

// Kind returns [KindHandlerFailed], or [KindHandlerOverran] for a handler
// that returned after the reply was due.
func (e *HandlerError) Kind() ErrorKind {
	if e.Overran > 0 {
		return KindHandlerOverran
	}
	return KindHandlerFailed
}

// Origin is [OriginLocal]: this side's handler failed.
func (e *HandlerError) Origin() Origin { return OriginLocal }

func (e *HandlerError) Error() string {
	if e.Overran > 0 {
		return fmt.Sprintf("procsync: parent's %s handler overran its deadline by %v", TypeName(e.Request), e.Overran)
	}
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
	link
	policy MountPolicy
}

// NewParent starts the parent's side on sock (which the Parent then owns
// and closes at the end of Serve).
func NewParent(sock *SyncSocket, opts ParentOptions) *Parent {
	policy := opts.Policy
	if policy == nil {
		policy = NewAllowList(opts.Mounts...)
	}
	p := &Parent{policy: policy}
	p.init(sock, opts.Options, RoleParent, DefaultTimeout)
	return p
}

// Close closes the socket; it may be called from any goroutine. A Serve
// in progress then ends promptly with an error matching [ErrClosed].
func (p *Parent) Close() error { return p.sock.Close() }

// State returns the exchange's state.
func (p *Parent) State() State { return p.m.State() }

// Serve answers requests with h until the child closes its end after Run
// (nil), or something goes wrong: the child's Error (*RemoteError), a
// protocol violation including the child closing without Ready
// (*ProtocolError), a refused mount (*MountRefusedError), a handler
// failure (*HandlerError, also for a file the handler returned closed or a
// reply this side cannot encode), or a transport or decode failure, a
// timeout (no request in time, or no room for a reply in time: a child
// that stops reading; *SendTimeoutError) or peer death (*SessionError).
// The per-message deadline bounds every receive and every send, so a live
// child cannot hold Serve for ever. A refusal or handler failure is
// answered with an Error reply first ("mount request refused: ...",
// "<Request> failed in the parent: ...", cut to fit the record limit),
// best effort. Every exit shuts down the sending side and closes the
// socket, so a child still waiting reads EOF.
func (p *Parent) Serve(h Handler) error { return p.ServeContext(context.Background(), h) }

// ServeContext is [Parent.Serve] that also ends when ctx is done: every
// wait then ends promptly and Serve returns a *SessionError matching the
// context's error (errors.Is(err, context.Canceled)). The handler's own
// work is not interrupted; pass ctx to it yourself.
func (p *Parent) ServeContext(ctx context.Context, h Handler) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		p.m.OnClose()
		_ = p.sock.ShutdownWrite()
		_ = p.sock.Close()
	}()
	if p.m.State() == StateClosed {
		return ErrClosed
	}
	if p.setupErr != nil {
		return p.setupErr
	}
	for {
		msg, f, err := p.sock.RecvContext(ctx, p.deadline())
		due := p.deadline() // the reply is due one deadline after the request
		if err != nil {
			if errors.Is(err, ErrPeerClosed) {
				return p.peerClosedOrEnd(err)
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
				p.replyError(ctx, err.(*ProtocolError).Detail())
			}
			return err
		}
		p.trace(false, msg, f != nil)
		if ty == TypeError {
			closeFile(f)
			return &RemoteError{From: RoleChild, Message: msg.GetError().GetMessage()}
		}
		if err := p.serve(ctx, h, msg, f, due); err != nil {
			return err
		}
	}
}

// peerClosedOrEnd is the child's EOF: the end where the order allows it
// (nil), a *ProtocolError elsewhere.
func (p *Parent) peerClosedOrEnd(err error) error {
	if perr := p.m.OnPeerClosed(); perr != nil {
		pe := perr.(*ProtocolError)
		pe.Err = ErrPeerClosed
		return pe
	}
	return nil
}

// serve answers one request (f is the fd that came with it, if any).
func (p *Parent) serve(ctx context.Context, h Handler, msg *pb.SyncMessage, f *os.File, due time.Time) error {
	ty := msg.GetType()
	if hd, ok := h.(HandlerDeadline); ok && ty != TypeMountPlease {
		hd.SetDeadline(due)
	}
	var reply *pb.SyncMessage
	var replyFile *os.File
	var herr error
	switch ty {
	case TypeMountPlease:
		req := msg.GetMountPlease()
		if err := p.policy.Allow(req); err != nil {
			p.replyError(ctx, RefusalText(err))
			return &MountRefusedError{Mount: req, Reason: err.Error(), Err: err}
		}
		if hd, ok := h.(HandlerDeadline); ok {
			hd.SetDeadline(due)
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
		p.replyError(ctx, TypeName(ty)+" failed in the parent: "+herr.Error())
		return &HandlerError{Request: ty, Err: herr}
	}
	if late := time.Since(due); !due.IsZero() && late > 0 {
		// The reply was due already: the result is discarded.
		closeFile(replyFile)
		p.replyError(ctx, fmt.Sprintf("%s failed in the parent: the handler overran its deadline by %v", TypeName(ty), late))
		return &HandlerError{Request: ty, Err: os.ErrDeadlineExceeded, Overran: late}
	}
	err := p.reply(ctx, ty, reply, replyFile)
	closeFile(replyFile)
	var ee *EncodeError
	var te *TransportError
	if errors.As(err, &ee) || (errors.As(err, &te) && te.kind == KindBadFile) {
		// A reply this side cannot send because of what the handler gave
		// (an unknown kind, a file it already closed) still answers the
		// child: with an Error.
		p.replyError(ctx, fmt.Sprintf("%s failed in the parent: cannot send %s: %v", TypeName(ty), TypeName(reply.GetType()), err))
		return &HandlerError{Request: ty, Err: err}
	}
	return err
}

// reply sends the reply to request req (with f attached when not nil),
// checked against the state machine.
func (p *Parent) reply(ctx context.Context, req pb.MessageType, msg *pb.SyncMessage, f *os.File) error {
	op := "send " + TypeName(msg.GetType()) + " (reply to " + TypeName(req) + ")"
	if f == nil {
		return p.send(ctx, msg, -1, op)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return &TransportError{kind: KindBadFile, Op: op, Err: err}
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = p.send(ctx, msg, int(fd), op) }); err != nil {
		return &TransportError{kind: KindBadFile, Op: op, Err: err}
	}
	return serr
}

// replyError sends the Error reply to the pending request, its text cut
// to fit the record limit. Best effort: a child that already closed, died
// or stopped reading (bounded by the per-message deadline) cannot be
// told, and the caller's error (the refusal, the handler's failure) is the
// one that matters.
func (p *Parent) replyError(ctx context.Context, text string) {
	_ = p.sendError(ctx, text)
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

// Kind returns [KindMountRefused].
func (e *MountRefusedError) Kind() ErrorKind { return KindMountRefused }

// Origin is [OriginPeer]: the child asked for what it may not have.
func (e *MountRefusedError) Origin() Origin { return OriginPeer }

func (e *MountRefusedError) Error() string {
	return "procsync: refused a mount request: " + e.Reason
}

// Unwrap returns the policy's error.
func (e *MountRefusedError) Unwrap() error { return e.Err }

// HandlerFuncs adapts functions to a Handler. A nil function means the
// Rust crate's ParentHandler default: Mount serves no mounts (pass a
// [PinnedSources]' OpenPlain or OpenTree), Hooks and Ready do nothing,
// Seccomp refuses the fd (closing an attached one): a parent that runs no
// seccomp agent must
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
		return nil, 0, fmt.Errorf("this parent serves no mount requests (asked for %s)", strconv.Quote(req.GetSource()))
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
