//go:build linux

package procsync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// SourceErrorKind is the stable, kebab-case name of why a mount source
// could not be pinned or served (a *[SourceError]). The names are the
// Rust crate's (policy::PolicyRefusalKind, runtime::MountFdErrorKind)
// where the case exists in both.
type SourceErrorKind string

// The kinds. Origin() on the error says who caused it.
const (
	// SourceErrNotConfigured: the request matches no configured entry
	// (see [MountMatches]). The child asked for it.
	SourceErrNotConfigured SourceErrorKind = "not-configured"
	// SourceErrAlreadyServed: every matching entry was served already.
	// The child asked for it.
	SourceErrAlreadyServed SourceErrorKind = "already-served"
	// SourceErrNotBind: the request's flags lack MS_BIND; only bind
	// mounts have a source fd. The child asked for it.
	SourceErrNotBind SourceErrorKind = "not-bind"
	// SourceErrPin: a configured bind source could not be pinned: not an
	// absolute path, missing, a symlink (refused as the last component
	// always, above it with PinOptions.RefuseSymlinks), a
	// magic link on the path (never followed), ... Err is the cause
	// (unix.ELOOP for a refused link). The configuration caused it.
	SourceErrPin SourceErrorKind = "pin"
	// SourceErrChanged: the object an fd was made for is not the pinned
	// one (dev/ino differ).
	SourceErrChanged SourceErrorKind = "source-changed"
	// SourceErrTimedOut: resolving or opening did not finish before the
	// deadline; the late fd is closed when it arrives.
	SourceErrTimedOut SourceErrorKind = "timed-out"
	// SourceErrClosed: the [PinnedSources] was closed.
	SourceErrClosed SourceErrorKind = "closed"
	// SourceErrOS: a system call failed (Err is the errno).
	SourceErrOS SourceErrorKind = "os"
)

// String returns the stable name.
func (k SourceErrorKind) String() string { return string(k) }

// SourceError is why a mount source could not be pinned or served.
// errors.As gets it from a *HandlerError; Kind says why, Unwrap gives
// the errno (errors.Is(err, unix.ELOOP)) or the context's error.
type SourceError struct {
	kind SourceErrorKind
	// Op is the step that failed: "pin" (resolving a configured source),
	// "match" (finding the configured entry for a request), "dup",
	// "open_tree", "fstat", or "mount" (a [BoundedMount] handler).
	Op string
	// Source is the configured or requested source path.
	Source string
	// Index is the configured entry involved, or -1.
	Index int
	// Err is the cause, or nil.
	Err error
	// hint is a likely cause, when there is a well-known one.
	hint string
}

// Kind returns the stable kind.
func (e *SourceError) Kind() SourceErrorKind { return e.kind }

// Origin says who caused it: the peer for requests the configuration
// does not cover, the local side for a configuration that cannot be
// pinned or a closed set, the OS for failed calls and timeouts.
func (e *SourceError) Origin() Origin {
	switch e.kind {
	case SourceErrNotConfigured, SourceErrAlreadyServed, SourceErrNotBind:
		return OriginPeer
	case SourceErrPin, SourceErrClosed:
		return OriginLocal
	}
	return OriginOS
}

// Unwrap returns the cause.
func (e *SourceError) Unwrap() error { return e.Err }

// Is makes a timed-out error match os.ErrDeadlineExceeded, as the
// transport's timeouts do.
func (e *SourceError) Is(target error) bool {
	return e.kind == SourceErrTimedOut && target == os.ErrDeadlineExceeded
}

// Timeout reports whether it is a timeout, as net.Error and os.IsTimeout
// expect.
func (e *SourceError) Timeout() bool { return e.kind == SourceErrTimedOut }

func (e *SourceError) Error() string {
	var what string
	switch e.kind {
	case SourceErrNotConfigured:
		what = "not one of the configured mounts"
	case SourceErrAlreadyServed:
		what = fmt.Sprintf("already served (configured mount #%d); each configured mount is served once", e.Index)
	case SourceErrNotBind:
		what = "not a bind mount (MS_BIND unset): only bind mounts get a source fd"
	case SourceErrPin:
		what = "cannot pin the configured source"
	case SourceErrChanged:
		what = "the object is not the pinned one"
	case SourceErrTimedOut:
		what = "did not finish in time"
	case SourceErrClosed:
		what = "the pinned sources are closed"
	default:
		what = "failed"
	}
	s := fmt.Sprintf("procsync: mount source %s: %s: %s", strconv.Quote(e.Source), e.Op, what)
	if e.Err != nil && e.kind != SourceErrTimedOut {
		s += ": " + e.Err.Error()
	}
	if e.hint != "" {
		s += " (" + e.hint + ")"
	}
	return s
}

// MountFunc is a Mount handler: it returns a source fd for an allowed
// request and how it was made ([HandlerFuncs].MountFunc).
type MountFunc = func(req *pb.Mount) (*os.File, pb.MountSourceKind, error)

// pinned is one pinned object: an O_PATH fd and what it was.
type pinned struct {
	fd       int
	dev, ino uint64
	mode     uint32
}

// PinnedSources is the container's configured mounts with each bind
// source pinned: an O_PATH fd of the object the path named when the set
// was built. It is a [MountPolicy] (the [AllowList] rules and refusal
// texts: only configured mounts, each entry once) and its OpenPlain and
// OpenTree methods are Mount handlers that serve the pinned object of the
// matching entry. Use one per container, built before the child starts,
// and Close it when the conversation is over. It is safe for concurrent
// use.
//
// Threat model: the parent's configuration and the host paths outside
// every tree the container can write are trusted; the child is not, nor
// is anything it can write (its rootfs, a volume, a directory above a
// configured source that it shares with the host) or its timing. A
// handler that opens the request's path at request time serves whatever
// the child swapped in there: a symlink to "/", to "/proc/self/fd/N"
// (the parent's own fd) or to "/proc/<its pid>/root/..." (its own mount
// namespace). PinnedSources resolves each source once, before the child
// exists, refusing magic links and a symlink as the source, and never
// walks the path again: whatever the child does to it, it is served the
// object that was configured, or a *[SourceError].
//
// The pinned fds are close-on-exec; a child forked without exec inherits
// them, so start the child with exec (os/exec does).
type PinnedSources struct {
	allow *AllowList

	mu     sync.Mutex
	mounts []*pb.Mount
	pinOf  []int // index into pins; -1 for a mount that is not a bind mount
	pins   []pinned
	opened []bool
	closed bool
}

// PinOptions say how configured sources are resolved. Magic links
// (/proc/<pid>/fd/N, /proc/<pid>/root, ...) are never followed, and a
// source that is itself a symlink is refused: configure the path the
// link leads to. Symlinks before the last component are followed by
// default (a host layout such as /var/run -> /run): the configuration is
// trusted and pinning runs before the child exists — the Rust crate's
// Symlinks::FollowBeforeLast, which its pinned services use.
type PinOptions struct {
	// RefuseSymlinks refuses any symlink on the path
	// (RESOLVE_NO_SYMLINKS), for sources below a tree the container may
	// have written before (the Rust crate's Symlinks::Refuse).
	RefuseSymlinks bool
}

// PinSources pins mounts with the default options, giving up after
// [DefaultTimeout] (a source on a hung NFS or FUSE server).
func PinSources(mounts ...*pb.Mount) (*PinnedSources, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return PinOptions{}.Pin(ctx, mounts...)
}

// Pin resolves the source of each bind mount (flags with MS_BIND) once —
// a source configured several times is pinned once — with
// openat2(O_PATH | O_NOFOLLOW | O_CLOEXEC, RESOLVE_NO_MAGICLINKS [|
// RESOLVE_NO_SYMLINKS if RefuseSymlinks]) and records its dev/ino/type;
// other mounts are kept (a request for one is matched, then refused as
// not-bind). A source that cannot be pinned fails the whole set with a
// *[SourceError] and nothing stays open. When ctx ends first, Pin returns a timed-out error;
// a resolution still blocked in the kernel closes its fd when it returns.
func (o PinOptions) Pin(ctx context.Context, mounts ...*pb.Mount) (*PinnedSources, error) {
	mounts = slices.Clone(mounts) // the caller's slice may change later
	p := &PinnedSources{
		allow:  NewAllowList(mounts...),
		mounts: mounts,
		pinOf:  make([]int, len(mounts)),
		opened: make([]bool, len(mounts)),
	}
	bySource := make(map[string]int)
	for i, m := range mounts {
		p.pinOf[i] = -1
		if m.GetFlags()&MsBind == 0 {
			continue
		}
		if j, ok := bySource[m.GetSource()]; ok {
			p.pinOf[i] = j
			continue
		}
		pin, err := o.pin(ctx, m.GetSource(), i)
		if err != nil {
			p.Close()
			return nil, err
		}
		bySource[m.GetSource()] = len(p.pins)
		p.pinOf[i] = len(p.pins)
		p.pins = append(p.pins, pin)
	}
	return p, nil
}

var errNotAbsolute = errors.New("not an absolute path")

func (o PinOptions) pin(ctx context.Context, path string, i int) (pinned, error) {
	fail := func(kind SourceErrorKind, err error, hint string) (pinned, error) {
		return pinned{}, &SourceError{kind: kind, Op: "pin", Source: path, Index: i, Err: err, hint: hint}
	}
	if !filepath.IsAbs(path) || strings.IndexByte(path, 0) >= 0 {
		return fail(SourceErrPin, errNotAbsolute, "")
	}
	// O_NOFOLLOW: a trailing symlink or magic link is opened as itself
	// (and refused below), never followed.
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS}
	if o.RefuseSymlinks {
		how.Resolve |= unix.RESOLVE_NO_SYMLINKS
	}
	fd, err := boundedFd(ctx, func() (int, error) { return openat2(path, how) })
	switch {
	case err == nil:
	case errors.Is(err, unix.ELOOP):
		hint := "a magic link on the path: never followed"
		if o.RefuseSymlinks {
			hint = "a symlink or magic link on the path: not followed; configure the path it leads to"
		}
		return fail(SourceErrPin, err, hint)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fail(SourceErrTimedOut, err, "")
	default:
		return fail(SourceErrPin, err, "")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fail(SourceErrPin, os.NewSyscallError("fstat", err), "")
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return fail(SourceErrPin, unix.ELOOP, "the source is a symlink or magic link: not followed; configure the path it leads to")
	}
	return pinned{fd: fd, dev: st.Dev, ino: st.Ino, mode: st.Mode}, nil
}

func openat2(path string, how unix.OpenHow) (int, error) {
	for {
		fd, err := unix.Openat2(unix.AT_FDCWD, path, &how)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, os.NewSyscallError("openat2", err)
		}
		return fd, nil
	}
}

// Allow implements [MountPolicy] with the [AllowList] rules: a refusal
// is a *[PolicyRefusal].
func (p *PinnedSources) Allow(req *pb.Mount) error { return p.allow.Allow(req) }

// Unserved returns the configured mounts no fd was made for so far, in
// configuration order.
func (p *PinnedSources) Unserved() []*pb.Mount {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*pb.Mount
	for i, m := range p.mounts {
		if !p.opened[i] {
			out = append(out, m)
		}
	}
	return out
}

// Close closes the pinned fds; later opens fail with kind closed. It
// waits for an open in progress. Closing twice is harmless.
func (p *PinnedSources) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var first error
	for _, pin := range p.pins {
		if err := unix.Close(pin.fd); err != nil && first == nil {
			first = os.NewSyscallError("close", err)
		}
	}
	p.pins = nil
	return first
}

// match finds the entry that serves req: the first configured mount that
// matches it and has not been served (the entry [AllowList] allowed for
// the same request). Called with p.mu held.
func (p *PinnedSources) match(req *pb.Mount) (int, error) {
	fail := func(kind SourceErrorKind, i int) (int, error) {
		return -1, &SourceError{kind: kind, Op: "match", Source: req.GetSource(), Index: i}
	}
	if p.closed {
		return fail(SourceErrClosed, -1)
	}
	last := -1
	for i, m := range p.mounts {
		if !MountMatches(m, req) {
			continue
		}
		if !p.opened[i] {
			if p.pinOf[i] < 0 {
				return fail(SourceErrNotBind, i)
			}
			return i, nil
		}
		last = i
	}
	if last >= 0 {
		return fail(SourceErrAlreadyServed, last)
	}
	return fail(SourceErrNotConfigured, -1)
}

// OpenPlain is a Mount handler: an O_PATH fd of the pinned source of the
// configured entry matching req (a dup of the pinned fd: the same object
// whatever the path names now), kind plain-open. Errors are
// *[SourceError]s. It makes no system call that can block.
//
// The fd is the host object itself: from a directory's fd, ".." resolves
// to the host directory above it, with the holder's credentials. A
// child that runs as host root can therefore reach the host tree
// through it; [PinnedSources.OpenTree]'s detached clone confines ".." to
// the source.
func (p *PinnedSources) OpenPlain(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, err := p.match(req)
	if err != nil {
		return nil, 0, err
	}
	fd, err := unix.FcntlInt(uintptr(p.pins[p.pinOf[i]].fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, 0, &SourceError{kind: SourceErrOS, Op: "dup", Source: req.GetSource(), Index: i,
			Err: os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err)}
	}
	p.opened[i] = true
	return os.NewFile(uintptr(fd), req.GetSource()), SourcePlainOpen, nil
}

// OpenTree is a Mount handler: a detached clone of the pinned source of
// the configured entry matching req, open_tree(pinned, "", AT_EMPTY_PATH
// | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), with AT_RECURSIVE only when the
// request has MS_REC; kind open-tree. The clone's root is checked to be
// the pinned object (dev/ino). It needs CAP_SYS_ADMIN; id mapping is left
// to the caller (mount_setattr on the returned fd). Errors are
// *[SourceError]s. It walks no path.
func (p *PinnedSources) OpenTree(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, err := p.match(req)
	if err != nil {
		return nil, 0, err
	}
	src := &p.pins[p.pinOf[i]]
	fail := func(kind SourceErrorKind, op string, err error) (*os.File, pb.MountSourceKind, error) {
		return nil, 0, &SourceError{kind: kind, Op: op, Source: req.GetSource(), Index: i, Err: err}
	}
	flags := uint(unix.AT_EMPTY_PATH | unix.AT_NO_AUTOMOUNT | unix.AT_SYMLINK_NOFOLLOW |
		unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if req.GetFlags()&MsRec != 0 {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(src.fd, "", flags)
	if err != nil {
		return fail(SourceErrOS, "open_tree", os.NewSyscallError("open_tree", err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fail(SourceErrOS, "fstat", os.NewSyscallError("fstat", err))
	}
	if st.Dev != src.dev || st.Ino != src.ino {
		unix.Close(fd)
		return fail(SourceErrChanged, "open_tree", fmt.Errorf("got %d:%d, pinned %d:%d", st.Dev, st.Ino, src.dev, src.ino))
	}
	p.opened[i] = true
	return os.NewFile(uintptr(fd), req.GetSource()), SourceOpenTree, nil
}

// MountWithin runs mount(req) in its own goroutine and returns its
// result, or — when ctx is done first — a *[SourceError] of kind
// timed-out (Op "mount") wrapping ctx's error. A file mount returns late
// is closed when it arrives. This bounds a handler that may block in the
// kernel (a path on a hung NFS, FUSE or automount, a FIFO opened without
// O_NONBLOCK) so the parent answers within its deadline; the goroutine,
// and the OS thread blocked in the call, stay until the call returns.
func MountWithin(ctx context.Context, req *pb.Mount, mount MountFunc) (*os.File, pb.MountSourceKind, error) {
	type result struct {
		f    *os.File
		kind pb.MountSourceKind
		err  error
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, &SourceError{kind: SourceErrTimedOut, Op: "mount", Source: req.GetSource(), Index: -1, Err: err}
	}
	done := make(chan result)
	abandoned := make(chan struct{})
	go func() {
		var r result
		r.f, r.kind, r.err = mount(req)
		select {
		case done <- r:
		case <-abandoned:
			closeFile(r.f)
		}
	}()
	select {
	case r := <-done:
		return r.f, r.kind, r.err
	case <-ctx.Done():
		close(abandoned)
		return nil, 0, &SourceError{kind: SourceErrTimedOut, Op: "mount", Source: req.GetSource(), Index: -1, Err: ctx.Err()}
	}
}

// BoundedMount returns a Mount handler that runs mount through
// [MountWithin] with a timeout: the parent replies Error ("MountPlease
// failed in the parent: ...") instead of hanging when mount blocks.
// Choose a timeout below the session's per-message deadline.
func BoundedMount(timeout time.Duration, mount MountFunc) MountFunc {
	return func(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return MountWithin(ctx, req, mount)
	}
}

// boundedFd runs open in its own goroutine when ctx can end, and returns
// ctx's error when it ends first; an fd open returns late is closed.
func boundedFd(ctx context.Context, open func() (int, error)) (int, error) {
	if ctx.Done() == nil {
		return open()
	}
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	type result struct {
		fd  int
		err error
	}
	done := make(chan result)
	abandoned := make(chan struct{})
	go func() {
		var r result
		r.fd, r.err = open()
		select {
		case done <- r:
		case <-abandoned:
			if r.err == nil {
				unix.Close(r.fd)
			}
		}
	}()
	select {
	case r := <-done:
		return r.fd, r.err
	case <-ctx.Done():
		close(abandoned)
		return -1, ctx.Err()
	}
}
