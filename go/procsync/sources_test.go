//go:build linux

package procsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The attack tests run the hostile child in a real process: the test
// binary re-executed with envAttack naming the attack, in a private mount
// namespace (CLONE_NEWNS, everything made private by os/exec), so the
// mounts it makes are its own. init dispatches before TestMain.
const (
	envAttack     = "PROCSYNC_GO_ATTACK"
	envAttackDir  = "PROCSYNC_GO_ATTACK_DIR"
	envAttackMode = "PROCSYNC_GO_ATTACK_MODE" // plain or tree
	envAttackWant = "PROCSYNC_GO_ATTACK_WANT" // dev:ino of the configured object
	envAttackArg  = "PROCSYNC_GO_ATTACK_ARG"  // per attack (an fd number, a count)
)

func init() {
	if attack := os.Getenv(envAttack); attack != "" {
		run := runAttacker
		if name, ok := strings.CutPrefix(attack, "ns:"); ok {
			attack, run = name, runInNamespace
		}
		if err := run(attack); err != nil {
			fmt.Fprintln(os.Stderr, "attacker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// pinAndOpen pins m's source and serves it at once: for tests whose
// parent has no configuration step before the child exists.
func pinAndOpen(m *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	s, err := PinSources(m)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	return s.OpenPlain(m)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (private mount namespaces, open_tree); CI runs it as root")
	}
}

// attackMount is the configured mount for source in mode: a plain bind
// (served with OpenPlain) or a recursive one (served with OpenTree).
func attackMount(source, mode string) *pb.Mount {
	m := BindMount(source, "/data")
	if mode == "tree" {
		m.Flags |= MsRec
	}
	return m
}

func devIno(st *unix.Stat_t) string { return fmt.Sprintf("%d:%d", st.Dev, st.Ino) }

func statPath(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return devIno(&st)
}

// runAttacker is the hostile child: it changes what the configured path
// names, then asks for the configured mount and checks that every fd it
// gets is the configured object (a typed refusal would also do: it
// reports it and exits 0, and the parent checks the error's type).
func runAttacker(attack string) error {
	sock, err := FromEnv()
	if err != nil {
		return err
	}
	dir, mode, want, arg := os.Getenv(envAttackDir), os.Getenv(envAttackMode), os.Getenv(envAttackWant), os.Getenv(envAttackArg)
	src := dir + "/cfg/src"
	n := 1
	// swapIn puts target (a symlink's text) where the configured source was.
	swapIn := func(path, target string) error {
		if err := os.Rename(path, path+".orig"); err != nil {
			return err
		}
		return os.Symlink(target, path)
	}
	var stop func()
	switch attack {
	case "final-swap":
		err = swapIn(src, dir+"/evil")
	case "dir-swap":
		src = dir + "/cfg/mid/src"
		err = swapIn(dir+"/cfg/mid", dir+"/evil")
	case "fd-magic":
		// "self" is resolved by whoever walks the path: the parent.
		err = swapIn(src, "/proc/self/fd/"+arg)
	case "root-magic":
		// A tmpfs only this mount namespace sees, reached from the host
		// through /proc/<our pid>/root.
		if err = unix.Mount("tmpfs", dir+"/evilmnt", "tmpfs", 0, "size=64k"); err == nil {
			if err = os.Mkdir(dir+"/evilmnt/x", 0o755); err == nil {
				err = swapIn(src, fmt.Sprintf("/proc/%d/root%s/evilmnt/x", os.Getpid(), dir))
			}
		}
	case "fifo-swap":
		if err = os.Rename(src, src+".orig"); err == nil {
			err = unix.Mkfifo(src, 0o600)
		}
	case "fifo-source":
		src = dir + "/fifo"
	case "bounded":
		// The parent's handler blocks: it must answer with an Error in time.
		c := NewChild(sock, Options{Flow: FlowInit, Timeout: 20 * time.Second})
		defer c.Close()
		_, _, err := c.MountPlease(BindMount(dir, "/a"))
		var re *RemoteError
		if !errors.As(err, &re) || !strings.HasPrefix(re.Message, "MountPlease failed in the parent: ") {
			return fmt.Errorf("want an Error reply, got %v", err)
		}
		return nil
	case "race":
		// Swap the source and a symlink to elsewhere back and forth
		// (renameat2(RENAME_EXCHANGE)) while the requests run.
		if n, err = strconv.Atoi(arg); err != nil {
			return err
		}
		if err = os.Symlink(dir+"/evil", dir+"/cfg/alt"); err != nil {
			return err
		}
		var done atomic.Bool
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			for !done.Load() {
				_ = unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dir+"/cfg/alt", unix.RENAME_EXCHANGE)
			}
		}()
		stop = func() { done.Store(true); <-finished }
	default:
		return fmt.Errorf("unknown attack %q", attack)
	}
	if err != nil {
		return err
	}
	c := NewChild(sock, Options{Flow: FlowInit, Timeout: 20 * time.Second})
	defer c.Close()
	var bad []string
	for i := 0; i < n; i++ {
		f, _, err := c.MountPlease(attackMount(src, mode))
		if err != nil {
			var re *RemoteError
			if errors.As(err, &re) {
				fmt.Println("refused:", re.Message)
				return nil
			}
			return err
		}
		var st unix.Stat_t
		err = unix.Fstat(int(f.Fd()), &st)
		f.Close()
		if err != nil {
			return err
		}
		if got := devIno(&st); got != want {
			bad = append(bad, fmt.Sprintf("#%d %s (mode %#o)", i, got, st.Mode&unix.S_IFMT))
		}
	}
	if stop != nil {
		stop()
	}
	if len(bad) > 0 {
		return fmt.Errorf("served %d of %d requests with an object that is not the configured %s: %s",
			len(bad), n, want, strings.Join(bad, ", "))
	}
	if err := c.Hooks(); err != nil {
		return err
	}
	if err := c.Ready(); err != nil {
		return err
	}
	return c.Close()
}

// attackLayout makes dir/cfg/src (the configured source, a directory with
// a marker), dir/cfg/mid/src (another), dir/evil and dir/evil/src (what
// the attacker points at), dir/evilmnt (its mount point), dir/secret and
// dir/fifo.
func attackLayout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"cfg/src", "cfg/mid/src", "evil/src", "evilmnt"} {
		if err := os.MkdirAll(dir+"/"+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"cfg/src/marker", "secret"} {
		if err := os.WriteFile(dir+"/"+f, []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(dir+"/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runAttack configures and pins the source, starts the attacker and
// serves it; the attacker must get the configured object (dev/ino
// checked) or a typed error, and no fd may leak.
func runAttack(t *testing.T, attack, mode string, n int) {
	requireRoot(t)
	noLeak(t, func() {
		dir := attackLayout(t)
		source := dir + "/cfg/src"
		switch attack {
		case "dir-swap":
			source = dir + "/cfg/mid/src"
		case "fifo-source":
			source = dir + "/fifo"
		}
		mounts := make([]*pb.Mount, n)
		for i := range mounts {
			mounts[i] = attackMount(source, mode)
		}
		// Configuration time: the child does not exist yet.
		srcs, err := PinSources(mounts...)
		if err != nil {
			t.Fatal(err)
		}
		defer srcs.Close()
		want := statPath(t, source)

		arg := strconv.Itoa(n)
		if attack == "fd-magic" {
			secret, err := os.Open(dir + "/secret")
			if err != nil {
				t.Fatal(err)
			}
			defer secret.Close()
			arg = strconv.Itoa(int(secret.Fd()))
		}
		a, parentEnd := startAttacker(t, attack, dir, envAttackMode+"="+mode, envAttackWant+"="+want, envAttackArg+"="+arg)
		serve := srcs.OpenPlain
		if mode == "tree" {
			serve = srcs.OpenTree
		}
		p := NewParent(parentEnd, ParentOptions{Options: Options{Flow: FlowInit, Timeout: 20 * time.Second}, Policy: srcs})
		serveErr := p.Serve(HandlerFuncs{MountFunc: serve})
		a.wait(t)
		var se *SourceError
		if serveErr != nil && !errors.As(serveErr, &se) {
			t.Fatalf("Serve: %v (want nil or a *SourceError)", serveErr)
		}
		if serveErr != nil {
			t.Logf("typed refusal %s: %v", se.Kind(), serveErr)
		}
		if len(srcs.Unserved()) != 0 && serveErr == nil {
			t.Fatalf("unserved: %v", srcs.Unserved())
		}
	})
}

type attacker struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// startAttacker starts the hostile child for attack in a private mount
// namespace, with the child's end of a fresh socket pair; it returns the
// parent's end.
func startAttacker(t *testing.T, attack, dir string, env ...string) (*attacker, *SyncSocket) {
	t.Helper()
	parentEnd, childEnd, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{cmd: exec.Command(os.Args[0], "-test.run=^$")}
	a.cmd.Env = append(append(os.Environ(), envAttack+"="+attack, envAttackDir+"="+dir, "GORACE=atexit_sleep_ms=0"), env...)
	a.cmd.Stdout, a.cmd.Stderr = &a.stdout, &a.stderr
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if err := childEnd.PassToChild(a.cmd); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close()
	return a, parentEnd
}

func (a *attacker) wait(t *testing.T) {
	t.Helper()
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("attacker: %v: %s", err, a.stderr.String())
	}
	if out := a.stdout.String(); out != "" {
		t.Logf("attacker: %s", out)
	}
}

func TestAttackFinalComponentSwap(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "final-swap", mode, 1) })
	}
}

func TestAttackIntermediateDirectorySwap(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "dir-swap", mode, 1) })
	}
}

func TestAttackSelfFdMagicLink(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "fd-magic", mode, 1) })
	}
}

func TestAttackPidRootMagicLink(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "root-magic", mode, 1) })
	}
}

func TestAttackFIFOSwap(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "fifo-swap", mode, 1) })
	}
}

// A FIFO configured as a source is pinned and served without opening it
// for reading (nothing blocks).
func TestFIFOSource(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "fifo-source", mode, 1) })
	}
}

// The swap races the requests: 200 requests while the attacker exchanges
// the source and a symlink as fast as it can.
func TestAttackSwapRacingRequests(t *testing.T) {
	for _, mode := range []string{"plain", "tree"} {
		t.Run(mode, func(t *testing.T) { runAttack(t, "race", mode, 200) })
	}
}

func sourceErrorKind(t *testing.T, err error) SourceErrorKind {
	t.Helper()
	var se *SourceError
	if !errors.As(err, &se) {
		t.Fatalf("want a *SourceError, got %T %v", err, err)
	}
	return se.Kind()
}

// Magic links are refused when the set is built, whether named directly or
// reached through a symlink, with either option; nothing stays open.
func TestPinRefusesMagicLinks(t *testing.T) {
	noLeak(t, func() {
		dir := t.TempDir()
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fdLink := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
		if err := os.Symlink(fdLink, dir+"/to-fd"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/proc/self/root/tmp", dir+"/to-root"); err != nil {
			t.Fatal(err)
		}
		for _, src := range []string{fdLink, "/proc/self/root", fmt.Sprintf("/proc/%d/root/tmp", os.Getpid()),
			fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()), "/proc/thread-self/cwd", dir + "/to-fd", dir + "/to-root"} {
			for _, o := range []PinOptions{{}, {RefuseSymlinks: true}} {
				p, err := o.Pin(context.Background(), BindMount(dir, "/ok"), BindMount(src, "/data"))
				if p != nil {
					p.Close()
					t.Fatalf("%s pinned", src)
				}
				var se *SourceError
				if !errors.As(err, &se) || se.Kind() != SourceErrPin || !errors.Is(err, unix.ELOOP) {
					t.Fatalf("%s %+v: %v", src, o, err)
				}
				if se.Index != 1 || se.Op != "pin" || se.Origin() != OriginLocal {
					t.Errorf("%s: %+v", src, se)
				}
			}
		}
	})
}

// A symlink as the last component is always refused; symlinks above it
// are followed unless RefuseSymlinks.
func TestPinSymlinks(t *testing.T) {
	noLeak(t, func() {
		dir := t.TempDir()
		if err := os.MkdirAll(dir+"/real/src", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir+"/real/src", dir+"/last"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("real", dir+"/mid"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			src    string
			refuse bool
			ok     bool
		}{
			{dir + "/last", false, false},
			{dir + "/last", true, false},
			{dir + "/mid/src", false, true},
			{dir + "/mid/src", true, false},
			{dir + "/real/src", true, true},
		} {
			m := BindMount(c.src, "/data")
			p, err := PinOptions{RefuseSymlinks: c.refuse}.Pin(context.Background(), m)
			if !c.ok {
				var se *SourceError
				if p != nil || !errors.As(err, &se) || se.Kind() != SourceErrPin || !errors.Is(err, unix.ELOOP) {
					t.Errorf("%s refuse=%v: %v", c.src, c.refuse, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s refuse=%v: %v", c.src, c.refuse, err)
			}
			f, _, err := p.OpenPlain(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameDir(f, dir+"/real/src"); err != nil {
				t.Errorf("%s: %v", c.src, err)
			}
			f.Close()
			p.Close()
		}
	})
}

// The rules the policy applies, applied again by the opener, with typed
// errors; Allow words refusals as AllowList does.
func TestPinnedSourcesMatching(t *testing.T) {
	noLeak(t, func() {
		dir := t.TempDir()
		a := BindMount(dir, "/a")
		rec := BindMount(dir, "/rec")
		rec.Flags |= MsRec
		tmpfs := &pb.Mount{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs"}
		p, err := PinSources(a, a, tmpfs, rec)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if len(p.pins) != 1 {
			t.Errorf("one source, %d pins", len(p.pins))
		}
		al := NewAllowList(a, a, tmpfs, rec)
		other := BindMount("/etc", "/a")
		if got, want := p.Allow(other), al.Allow(other); got == nil || got.Error() != want.Error() {
			t.Errorf("Allow: %v, AllowList: %v", got, want)
		}
		for i := 0; i < 2; i++ {
			f, kind, err := p.OpenPlain(a)
			if err != nil || kind != SourcePlainOpen {
				t.Fatal(kind, err)
			}
			if err := sameDir(f, dir); err != nil {
				t.Error(err)
			}
			f.Close()
		}
		for _, c := range []struct {
			req  *pb.Mount
			kind SourceErrorKind
			org  Origin
		}{
			{a, SourceErrAlreadyServed, OriginPeer},
			{other, SourceErrNotConfigured, OriginPeer},
			{tmpfs, SourceErrNotBind, OriginPeer},
		} {
			_, _, err := p.OpenPlain(c.req)
			var se *SourceError
			if !errors.As(err, &se) || se.Kind() != c.kind || se.Origin() != c.org {
				t.Errorf("%v: %v", c.req, err)
			}
		}
		if u := p.Unserved(); len(u) != 2 || u[0] != tmpfs || u[1] != rec {
			t.Errorf("unserved %v", u)
		}
		p.Close()
		_, _, err = p.OpenTree(rec)
		if k := sourceErrorKind(t, err); k != SourceErrClosed {
			t.Errorf("after Close: %s", k)
		}
		p.Close()
		for _, bad := range []string{"", "relative/path", "/a\x00b"} {
			_, err := PinSources(BindMount(bad, "/x"))
			if k := sourceErrorKind(t, err); k != SourceErrPin || !errors.Is(err, errNotAbsolute) {
				t.Errorf("%q: %s %v", bad, k, err)
			}
		}
		_, err = PinSources(BindMount(dir+"/missing", "/x"))
		if k := sourceErrorKind(t, err); k != SourceErrPin || !errors.Is(err, unix.ENOENT) {
			t.Errorf("missing: %s %v", k, err)
		}
	})
}

// OpenTree clones recursively only for MS_REC.
func TestPinnedOpenTreeRecursion(t *testing.T) {
	requireRoot(t)
	inMountNamespace(t, "tree-recursion")
}

// inMountNamespace runs the test scenario in a re-executed child in a
// private mount namespace (for tests that mount), and fails with its
// output unless it exits 0.
func inMountNamespace(t *testing.T, scenario string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envAttack+"=ns:"+scenario, envAttackDir+"="+t.TempDir(), "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", scenario, err, out)
	}
	t.Logf("%s", out)
}

// A handler that blocks in the kernel (here: a FIFO opened for reading,
// the userns_path case) does not hold Serve: the child gets an Error in
// time, Serve a typed timeout, and the fd the open makes once it
// completes is closed.
func TestBoundedMountAnswersInTime(t *testing.T) {
	noLeak(t, func() {
		dir := t.TempDir()
		fifo := dir + "/fifo"
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		m := BindMount(dir, "/a")
		returned := make(chan struct{})
		blocking := func(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
			defer close(returned)
			f, err := os.OpenFile(fifo, os.O_RDONLY, 0) // blocks until a writer opens
			return f, SourcePlainOpen, err
		}
		a, sock := startAttacker(t, "bounded", dir)
		p := NewParent(sock, ParentOptions{Options: Options{Flow: FlowInit, Timeout: 10 * time.Second}, Mounts: []*pb.Mount{m}})
		start := time.Now()
		err := p.Serve(HandlerFuncs{MountFunc: BoundedMount(200*time.Millisecond, blocking)})
		took := time.Since(start)
		a.wait(t)
		var he *HandlerError
		if !errors.As(err, &he) || sourceErrorKind(t, err) != SourceErrTimedOut ||
			!errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Serve: %v", err)
		}
		if took > 5*time.Second {
			t.Errorf("Serve took %v", took)
		}
		// Release the blocked open: its fd must be closed, not leaked.
		before := countFDs(t)
		w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		<-returned // the late fd exists now; MountWithin must close it
		for deadline := time.Now().Add(5 * time.Second); countFDs(t) != before+1; {
			if time.Now().After(deadline) {
				t.Fatalf("the late fd was not closed: %d fds, want %d", countFDs(t), before+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// A context already done: nothing runs.
func TestMountWithinDoneContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	_, _, err := MountWithin(ctx, BindMount("/", "/x"), func(*pb.Mount) (*os.File, pb.MountSourceKind, error) {
		called = true
		return nil, 0, nil
	})
	var se *SourceError
	if called || sourceErrorKind(t, err) != SourceErrTimedOut || !errors.Is(err, context.Canceled) ||
		!errors.As(err, &se) || se.Origin() != OriginOS || !se.Timeout() {
		t.Fatalf("called %v, %v", called, err)
	}
}

// A source below a hung FUSE server (a mount whose daemon never answers,
// like a hung NFS export or automount): Pin gives up at its deadline with
// a typed error instead of hanging.
func TestPinHungFilesystem(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse:", err)
	}
	inMountNamespace(t, "pin-hung-fuse")
}

func nsFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// runInNamespace runs a scenario that mounts, in the private mount
// namespace of a re-executed child.
func runInNamespace(scenario string) error {
	dir := os.Getenv(envAttackDir)
	switch scenario {
	case "tree-recursion":
		// dir/src with a tmpfs on dir/src/sub: a recursive clone holds the
		// tmpfs, a plain one shows the directory below it.
		if err := os.MkdirAll(dir+"/src/sub", 0o755); err != nil {
			return err
		}
		var under unix.Stat_t
		if err := unix.Stat(dir+"/src/sub", &under); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", dir+"/src/sub", "tmpfs", 0, "size=64k"); err != nil {
			return err
		}
		var over unix.Stat_t
		if err := unix.Stat(dir+"/src/sub", &over); err != nil {
			return err
		}
		plain := BindMount(dir+"/src", "/p")
		rec := BindMount(dir+"/src", "/r")
		rec.Flags |= MsRec
		before := nsFDs()
		p, err := PinSources(plain, rec)
		if err != nil {
			return err
		}
		for _, c := range []struct {
			m    *pb.Mount
			want uint64
		}{{plain, under.Dev}, {rec, over.Dev}} {
			f, kind, err := p.OpenTree(c.m)
			if err != nil {
				return err
			}
			var st unix.Stat_t
			err = unix.Fstatat(int(f.Fd()), "sub", &st, 0)
			f.Close()
			if err != nil {
				return err
			}
			if kind != SourceOpenTree || st.Dev != c.want {
				return fmt.Errorf("MS_REC %v: kind %v, sub on dev %d, want %d", c.m.GetFlags()&MsRec != 0, kind, st.Dev, c.want)
			}
		}
		p.Close()
		if after := nsFDs(); after != before {
			return fmt.Errorf("fds %d before, %d after", before, after)
		}
		return nil
	case "pin-hung-fuse":
		before := nsFDs()
		fuse, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		mnt := dir + "/fuse"
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return err
		}
		// Nobody reads the device: INIT and every lookup wait for ever.
		opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fuse)
		if err := unix.Mount("hung", mnt, "fuse", unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
			unix.Close(fuse)
			fmt.Println("skip: cannot mount fuse:", err)
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		p, err := PinOptions{}.Pin(ctx, BindMount(dir, "/ok"), BindMount(mnt+"/x", "/data"))
		took := time.Since(start)
		var se *SourceError
		if p != nil || !errors.As(err, &se) || se.Kind() != SourceErrTimedOut || se.Index != 1 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("Pin: %v", err)
		}
		if took > 3*time.Second {
			return fmt.Errorf("Pin took %v", took)
		}
		// Abort the connection: the blocked lookup fails and its goroutine ends.
		unix.Close(fuse)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		for deadline := time.Now().Add(5 * time.Second); nsFDs() != before; {
			if time.Now().After(deadline) {
				return fmt.Errorf("fds %d before, %d after", before, nsFDs())
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Printf("timed out after %v: %v\n", took.Round(time.Millisecond), err)
		return nil
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

func TestRefusalKindNames(t *testing.T) {
	for k, want := range map[RefusalKind]string{RefusalNotConfigured: "not-configured",
		RefusalAlreadyServed: "already-served", RefusalDenied: "denied", 7: "RefusalKind(7)"} {
		if k.String() != want {
			t.Errorf("%d: %s", int(k), k)
		}
	}
	if Denied("x").Origin() != OriginPeer {
		t.Error("origin")
	}
}

// What the child can reach from the fd it is served: ".." from an
// OpenPlain fd of a directory is the host directory above the source (the
// fd is the host object itself), while the root of an OpenTree clone is a
// detached mount's root, where ".." stays.
func TestServedFdDotDot(t *testing.T) {
	requireRoot(t)
	noLeak(t, func() {
		dir := t.TempDir()
		if err := os.MkdirAll(dir+"/above/src", 0o755); err != nil {
			t.Fatal(err)
		}
		m := BindMount(dir+"/above/src", "/data")
		p, err := PinSources(m, m)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		for _, c := range []struct {
			open MountFunc
			want string
		}{{p.OpenPlain, dir + "/above"}, {p.OpenTree, dir + "/above/src"}} {
			f, kind, err := c.open(m)
			if err != nil {
				t.Fatal(err)
			}
			up, err := unix.Openat(int(f.Fd()), "..", unix.O_PATH|unix.O_CLOEXEC, 0)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			err = unix.Fstat(up, &st)
			unix.Close(up)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := devIno(&st), statPath(t, c.want); got != want {
				t.Errorf("%s: \"..\" is %s, want %s (%s)", SourceKindName(kind), got, want, c.want)
			}
		}
	})
}
