//go:build linux

package procsync

import (
	"context"
	"errors"
	"os"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// Child is the child's side of an exchange: it makes the requests and
// waits for each reply. Methods must be called in protocol order (a call
// out of order is a *ProtocolError and sends nothing). Every call that
// waits has a Context variant: a done context ends the wait promptly with
// a *SessionError matching the context's error; the conversation is then
// broken (Close it). Close may be called from another goroutine to end a
// pending call.
type Child struct {
	link
	closed bool
}

// NewChild starts the child's side on sock (which the Child then owns).
func NewChild(sock *SyncSocket, opts Options) *Child {
	c := &Child{}
	c.init(sock, opts, RoleChild, -1)
	return c
}

// State returns the exchange's state.
func (c *Child) State() State { return c.m.State() }

func (c *Child) request(ctx context.Context, msg *pb.SyncMessage, fd int) (*pb.SyncMessage, *os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkOpen(); err != nil {
		return nil, nil, err
	}
	ty := msg.GetType()
	if err := c.send(ctx, msg, fd, "send "+TypeName(ty)); err != nil {
		return nil, nil, err
	}
	reply, f, err := c.recv(ctx, "wait for the reply to "+TypeName(ty))
	if err != nil {
		// Broken on a violation: nothing acts on the reply. The caller
		// may still Fail (one Error) and must Close.
		return nil, nil, err
	}
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
	case c.setupErr != nil:
		return c.setupErr
	case c.m.State() == StateClosed && c.m.ClosedBy() == OriginPeer:
		return &TransportError{kind: KindPeerClosed, Op: "nothing sent"}
	case c.m.State() == StateClosed:
		return ErrClosed
	}
	return nil
}

// MountPlease asks the parent for a source fd for mount and returns it
// (close-on-exec, owned by the caller) with how it was made. A refusal
// arrives as a *RemoteError. The reply must fit the request: a MountFd
// for another source, or a PLAIN_OPEN source for an id-mapped request (an
// fd without the id mapping: a silent downgrade), is a *MismatchError
// (origin peer) and the fd is closed.
func (c *Child) MountPlease(mount *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	return c.MountPleaseContext(context.Background(), mount)
}

// MountPleaseContext is [Child.MountPlease] with a context for its waits.
func (c *Child) MountPleaseContext(ctx context.Context, mount *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	reply, f, err := c.request(ctx, MountPleaseMessage(mount), -1)
	if err != nil {
		return nil, 0, err
	}
	info := reply.GetMountFd()
	if info.GetSource() != mount.GetSource() {
		closeFile(f)
		return nil, 0, &MismatchError{Requested: mount.GetSource(), Got: info.GetSource(), SourceKind: info.GetKind()}
	}
	if mount.GetIdMapping() != nil && info.GetKind() != SourceOpenTree {
		closeFile(f)
		return nil, 0, &MismatchError{Requested: mount.GetSource(), Got: info.GetSource(), SourceKind: info.GetKind(), downgraded: true}
	}
	return f, info.GetKind(), nil
}

// Hooks asks the parent to run the hooks and waits until it has.
func (c *Child) Hooks() error { return c.HooksContext(context.Background()) }

// HooksContext is [Child.Hooks] with a context for its waits.
func (c *Child) HooksContext(ctx context.Context) error {
	_, _, err := c.request(ctx, HooksMessage(), -1)
	return err
}

// Ready tells the parent set-up is done and waits for Run.
func (c *Child) Ready() error { return c.ReadyContext(context.Background()) }

// ReadyContext is [Child.Ready] with a context for its waits.
func (c *Child) ReadyContext(ctx context.Context) error {
	_, _, err := c.request(ctx, ReadyMessage(), -1)
	return err
}

// Seccomp hands the seccomp notify fd to the parent (attached to the
// record) and waits for SeccompDone. f stays owned by the caller.
func (c *Child) Seccomp(f *os.File) error { return c.SeccompContext(context.Background(), f) }

// SeccompContext is [Child.Seccomp] with a context for its waits.
func (c *Child) SeccompContext(ctx context.Context, f *os.File) error {
	if f == nil {
		return &TransportError{kind: KindBadFile, Op: "Seccomp", Err: errors.New("nil notify fd")}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return &TransportError{kind: KindBadFile, Op: "Seccomp", Err: err}
	}
	var reqErr error
	if err := rc.Control(func(fd uintptr) { _, _, reqErr = c.request(ctx, SeccompAttachedMessage(), int(fd)) }); err != nil {
		return &TransportError{kind: KindBadFile, Op: "Seccomp", Err: err}
	}
	return reqErr
}

// SeccompChildFD tells the parent the number of the notify fd in this
// process, for it to copy with pidfd_getfd(2) (runc does this on purpose:
// a seccomp filter may trap sendmsg), and waits for SeccompDone.
func (c *Child) SeccompChildFD(fd int32) error {
	return c.SeccompChildFDContext(context.Background(), fd)
}

// SeccompChildFDContext is [Child.SeccompChildFD] with a context for its
// waits.
func (c *Child) SeccompChildFDContext(ctx context.Context, fd int32) error {
	_, _, err := c.request(ctx, SeccompChildFDMessage(fd), -1)
	return err
}

// Fail sends an Error with msg (cut to fit the record limit, marked with
// [TruncationMark]): the exchange ends. It is allowed in every state
// before close, also after the parent broke the protocol (Broken: one
// Error explaining why). It never writes to a closed connection (runc
// issue #4171): when the parent has closed or shut down its sending side
// it writes nothing and returns an error wrapping ErrPeerClosed. After
// Close it fails with ErrClosed, after an Error with a *ProtocolError.
func (c *Child) Fail(msg string) error { return c.FailContext(context.Background(), msg) }

// FailContext is [Child.Fail] with a context for its wait for room.
func (c *Child) FailContext(ctx context.Context, msg string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkOpen(); err != nil {
		return err
	}
	if err := c.m.CheckSend(TypeError); err != nil {
		return err
	}
	hungUp, err := c.sock.PeerHungUp()
	if err != nil {
		return &SessionError{Role: RoleChild, State: c.m.State(), Op: "send Error", Err: err}
	}
	if hungUp {
		_ = c.m.OnPeerClosed() // closed either way; orderly or not does not matter now
		return &TransportError{kind: KindPeerClosed, Op: "Error not sent"}
	}
	return c.sendError(ctx, msg)
}

// Close ends the child's side and closes the socket. Closing where the
// protocol does not allow it (before Run, or with a request pending,
// without a Fail first) returns a *ProtocolError after the socket is
// closed anyway, so the caller knows the parent sees a violation. Close
// may be called from another goroutine while a call waits: the socket is
// closed first, which ends that call promptly (its error matches
// [ErrClosed]); Close returns after it.
func (c *Child) Close() error {
	serr := c.sock.Close() // first: wakes a pending call, which holds mu
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	perr := c.m.CheckClose()
	c.m.OnClose()
	if serr != nil {
		return serr
	}
	return perr
}
