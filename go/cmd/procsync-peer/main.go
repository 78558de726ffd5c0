//go:build linux

// Command procsync-peer plays one side of a procsync exchange over an
// inherited sync socket, for interoperability tests between
// implementations. It prints a line-oriented transcript on stdout:
//
//	send MountPlease source=/x destination=/x device=bind flags=0x1000
//	recv MountFd kind=plain-open source=/x fd=1
//	verify source=/x fd-target=/x dev:ino=2049:1234 ok
//	send Hooks
//	...
//	done
//
// The parent prints "seccomp fd ok mode=M" for an attached notify fd, and
// for a child fd number "seccomp child-fd=N copied mode=M ok" when it has
// the child's pidfd (-peer-pid; copied with pidfd_getfd(2)) or
// "seccomp child-fd=N" otherwise.
//
// Exit status: 0 the flow went as instructed; 1 failure (message on
// stderr); 2 usage error; 3 died on purpose (-die-after); parent only: 4 a
// mount request was refused by the policy, 5 the child sent an Error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/procsync/procsync/go/procsync"
	pb "github.com/procsync/procsync/go/procsyncpb"
)

const (
	exitOK      = 0
	exitFail    = 1
	exitUsage   = 2
	exitDied    = 3
	exitRefused = 4
	exitRemote  = 5
)

type mountList []*pb.Mount

func (m *mountList) String() string { return fmt.Sprint(len(*m)) }

func (m *mountList) Set(v string) error {
	mt, err := parseMount(v)
	if err != nil {
		return err
	}
	*m = append(*m, mt)
	return nil
}

// parseMount reads SRC:DST as a bind mount request (device "bind",
// flags MS_BIND), the shape both sides must agree on to match.
func parseMount(v string) (*pb.Mount, error) {
	src, dst, ok := strings.Cut(v, ":")
	if !ok || src == "" || dst == "" {
		return nil, fmt.Errorf("want SRC:DST, got %q", v)
	}
	return procsync.BindMount(src, dst), nil
}

type config struct {
	maxRecord       int
	role, flow      string
	fdEnv           bool
	fd              int
	mounts          mountList
	failWith        string
	requestUnlisted string
	dieAfter        string
	seccomp         string
	openTree        bool
	peerPid         int
	timeout         time.Duration
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var c config
	fs := flag.NewFlagSet("procsync-peer", flag.ContinueOnError)
	fs.StringVar(&c.role, "role", "", "parent or child")
	fs.StringVar(&c.flow, "flow", "init", "init or exec")
	fs.BoolVar(&c.fdEnv, "fd-env", false, "take the sync socket from $"+procsync.EnvSyncFD)
	fs.IntVar(&c.fd, "fd", -1, "take the sync socket from this fd number")
	fs.Var(&c.mounts, "mount", "SRC:DST bind mount (repeatable): the child requests each in order; the parent serves each once")
	fs.StringVar(&c.failWith, "fail-with", "", "child: send an Error with this message after the mount requests, then close")
	fs.StringVar(&c.requestUnlisted, "request-unlisted", "", "child: after the listed mounts, request SRC:DST and expect the parent to refuse it")
	fs.StringVar(&c.dieAfter, "die-after", "", "exit abruptly (status 3) right after sending or receiving this message type (e.g. Hooks, MountFd), or at 'start'")
	fs.StringVar(&c.seccomp, "seccomp", "none", "child: none, attached (send a notify fd) or child-fd (send an fd number) after Run")
	fs.BoolVar(&c.openTree, "open-tree", false, "parent: make mount fds with open_tree(OPEN_TREE_CLONE) instead of O_PATH (needs CAP_SYS_ADMIN)")
	fs.IntVar(&c.peerPid, "peer-pid", 0, "watch this peer process with a pidfd: its death ends a wait")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "per-message timeout")
	fs.IntVar(&c.maxRecord, "max-record", 0, "record limit in bytes (0: the default)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := c.check(); err != nil {
		fmt.Fprintln(os.Stderr, "procsync-peer:", err)
		fs.Usage()
		return exitUsage
	}
	code, err := c.run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "procsync-peer (%s): %v\n", c.role, err)
	}
	return code
}

func (c *config) check() error {
	switch {
	case fsArgs(c.role, "parent", "child"):
		return errors.New("-role must be parent or child")
	case fsArgs(c.flow, "init", "exec"):
		return errors.New("-flow must be init or exec")
	case c.fdEnv == (c.fd >= 0):
		return errors.New("give exactly one of -fd-env and -fd N")
	case fsArgs(c.seccomp, "none", "attached", "child-fd"):
		return errors.New("-seccomp must be none, attached or child-fd")
	case c.flow == "exec" && len(c.mounts) > 0 && c.role == "child":
		return errors.New("the exec flow has no mount requests")
	case c.role == "parent" && (c.failWith != "" || c.requestUnlisted != "" || c.seccomp != "none"):
		return errors.New("-fail-with, -request-unlisted and -seccomp are child options")
	case c.role == "child" && c.openTree:
		return errors.New("-open-tree is a parent option")
	}
	if c.requestUnlisted != "" {
		if _, err := parseMount(c.requestUnlisted); err != nil {
			return fmt.Errorf("-request-unlisted: %w", err)
		}
	}
	if c.dieAfter != "" && c.dieAfter != "start" {
		ok := false
		for _, t := range procsync.AllTypes() {
			ok = ok || procsync.TypeName(t) == c.dieAfter
		}
		if !ok {
			return fmt.Errorf("-die-after: unknown step %q", c.dieAfter)
		}
	}
	return nil
}

// fsArgs reports whether v is none of allowed.
func fsArgs(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return false
		}
	}
	return true
}

func say(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}

// describe renders a message as transcript fields.
func describe(msg *pb.SyncMessage) string {
	parts := []string{procsync.TypeName(msg.GetType())}
	switch p := msg.GetPayload().(type) {
	case *pb.SyncMessage_Error:
		parts = append(parts, "message="+strconv.Quote(p.Error.GetMessage()))
	case *pb.SyncMessage_MountPlease:
		m := p.MountPlease
		parts = append(parts, "source="+m.GetSource(), "destination="+m.GetDestination(),
			"device="+m.GetDevice(), fmt.Sprintf("flags=%#x", m.GetFlags()))
	case *pb.SyncMessage_MountFd:
		parts = append(parts, "kind="+procsync.SourceKindName(p.MountFd.GetKind()), "source="+p.MountFd.GetSource())
	case *pb.SyncMessage_Seccomp:
		if t, ok := p.Seccomp.GetTransfer().(*pb.SeccompInfo_ChildFd); ok {
			parts = append(parts, fmt.Sprintf("child-fd=%d", t.ChildFd))
		} else {
			parts = append(parts, "transfer=attached")
		}
	}
	if msg.GetFlags()&procsync.FlagHasFd != 0 {
		parts = append(parts, "fd=1")
	}
	return strings.Join(parts, " ")
}

func (c *config) options() (procsync.Options, func(), error) {
	opts := procsync.Options{Timeout: c.timeout}
	if c.maxRecord > 0 {
		opts.Limits = procsync.NewLimits(c.maxRecord)
	}
	if c.flow == "exec" {
		opts.Flow = procsync.FlowExec
	}
	opts.Trace = func(sent bool, msg *pb.SyncMessage) {
		dir := "recv"
		if sent {
			dir = "send"
		}
		say("%s %s", dir, describe(msg))
		if c.dieAfter == procsync.TypeName(msg.GetType()) {
			say("die-after %s", c.dieAfter)
			os.Exit(exitDied)
		}
	}
	cleanup := func() {}
	if c.peerPid > 0 {
		pidfd, err := procsync.PidfdOpen(c.peerPid)
		if err != nil {
			return opts, cleanup, err
		}
		opts.PeerPidfd = pidfd
		cleanup = func() { pidfd.Close() }
	}
	return opts, cleanup, nil
}

func (c *config) socket() (*procsync.SyncSocket, error) {
	if c.fdEnv {
		return procsync.FromEnv()
	}
	s, err := procsync.FromFD(c.fd)
	if err == nil {
		unix.CloseOnExec(c.fd)
	}
	return s, err
}

func (c *config) run() (int, error) {
	sock, err := c.socket()
	if err != nil {
		return exitFail, err
	}
	if c.dieAfter == "start" {
		say("die-after start")
		os.Exit(exitDied)
	}
	opts, cleanup, err := c.options()
	defer cleanup()
	if err != nil {
		sock.Close()
		return exitFail, err
	}
	if c.role == "parent" {
		return c.runParent(sock, opts)
	}
	return c.runChild(sock, opts)
}

func (c *config) runParent(sock *procsync.SyncSocket, opts procsync.Options) (int, error) {
	// Pin the configured sources before the first request: the child is
	// served the objects they name now, whatever it does to the paths.
	srcs, err := procsync.PinSources(c.mounts...)
	if err != nil {
		sock.Close()
		return exitFail, err
	}
	defer srcs.Close()
	mount := srcs.OpenPlain
	if c.openTree {
		mount = srcs.OpenTree
	}
	h := procsync.HandlerFuncs{
		MountFunc: mount,
		SeccompFunc: func(req procsync.SeccompRequest) error {
			if req.File == nil {
				if opts.PeerPidfd == nil {
					say("seccomp child-fd=%d", req.ChildFD)
					return nil
				}
				// With the child's pidfd, take the fd as runc does.
				fd, err := unix.PidfdGetfd(int(opts.PeerPidfd.Fd()), int(req.ChildFD), 0)
				if err != nil {
					return fmt.Errorf("pidfd_getfd of the child's fd %d: %w", req.ChildFD, err)
				}
				defer unix.Close(fd)
				var st unix.Stat_t
				if err := unix.Fstat(fd, &st); err != nil {
					return fmt.Errorf("seccomp fd: %w", err)
				}
				say("seccomp child-fd=%d copied mode=%#o ok", req.ChildFD, st.Mode&unix.S_IFMT)
				return nil
			}
			defer req.File.Close()
			var st unix.Stat_t
			if err := unix.Fstat(int(req.File.Fd()), &st); err != nil {
				return fmt.Errorf("seccomp fd: %w", err)
			}
			say("seccomp fd ok mode=%#o", st.Mode&unix.S_IFMT)
			return nil
		},
	}
	p := procsync.NewParent(sock, procsync.ParentOptions{Options: opts, Policy: srcs})
	err = p.Serve(h)
	var refused *procsync.MountRefusedError
	var remote *procsync.RemoteError
	switch {
	case err == nil:
		say("done")
		return exitOK, nil
	case errors.As(err, &refused):
		kind := "unknown"
		var pr *procsync.PolicyRefusal
		if errors.As(refused.Err, &pr) {
			kind = pr.Kind.String()
		}
		say("refuse MountPlease source=%s destination=%s kind=%s reason=%s", refused.Mount.GetSource(),
			refused.Mount.GetDestination(), kind, strconv.Quote(refused.Reason))
		return exitRefused, err
	case errors.As(err, &remote):
		say("child-failed message=%s", strconv.Quote(remote.Message))
		return exitRemote, err
	}
	return exitFail, err
}

// verify proves f refers to the directory at path: fstat(f) and stat(path)
// give the same device and inode.
func verify(f *os.File, path string) error {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return fmt.Errorf("fstat received fd: %w", err)
	}
	if err := unix.Stat(path, &b); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if a.Dev != b.Dev || a.Ino != b.Ino || a.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("received fd (%s, dev:ino %d:%d) is not the directory %s (dev:ino %d:%d)",
			target, a.Dev, a.Ino, path, b.Dev, b.Ino)
	}
	say("verify source=%s fd-target=%s dev:ino=%d:%d ok", path, target, a.Dev, a.Ino)
	return nil
}

func (c *config) runChild(sock *procsync.SyncSocket, opts procsync.Options) (int, error) {
	ch := procsync.NewChild(sock, opts)
	fail := func(err error) (int, error) {
		var remote *procsync.RemoteError
		if !errors.As(err, &remote) {
			// Tell the parent why we give up, when the protocol allows.
			_ = ch.Fail(err.Error())
		}
		_ = ch.Close()
		return exitFail, err
	}
	for _, m := range c.mounts {
		f, _, err := ch.MountPlease(m)
		if err != nil {
			return fail(err)
		}
		err = verify(f, m.GetSource())
		f.Close()
		if err != nil {
			return fail(err)
		}
	}
	if c.requestUnlisted != "" {
		m, _ := parseMount(c.requestUnlisted)
		f, _, err := ch.MountPlease(m)
		var remote *procsync.RemoteError
		switch {
		case err == nil:
			f.Close()
			return fail(fmt.Errorf("parent served unlisted mount %s:%s", m.GetSource(), m.GetDestination()))
		case !errors.As(err, &remote):
			return fail(err)
		}
		say("refused source=%s message=%s", m.GetSource(), strconv.Quote(remote.Message))
		if err := ch.Close(); err != nil {
			return exitFail, err
		}
		say("done")
		return exitOK, nil
	}
	if c.failWith != "" {
		if err := ch.Fail(c.failWith); err != nil {
			return exitFail, err
		}
		if err := ch.Close(); err != nil {
			return exitFail, err
		}
		say("done")
		return exitOK, nil
	}
	if c.flow == "init" {
		if err := ch.Hooks(); err != nil {
			return fail(err)
		}
	}
	if err := ch.Ready(); err != nil {
		return fail(err)
	}
	switch c.seccomp {
	case "attached":
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		err = ch.Seccomp(w)
		r.Close()
		w.Close()
		if err != nil {
			return fail(err)
		}
	case "child-fd":
		if err := ch.SeccompChildFD(int32(os.Stderr.Fd())); err != nil {
			return fail(err)
		}
	}
	if err := ch.Close(); err != nil {
		return exitFail, err
	}
	say("close")
	say("done")
	return exitOK, nil
}
