//go:build linux

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/procsync/procsync/go/procsync"
)

// The test binary doubles as the peer program: with envAsMain set it runs
// main with its arguments.
const envAsMain = "PROCSYNC_PEER_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envAsMain) != "" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type peerRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	code           int
}

func (p *peerRun) lines() []string { return strings.Split(strings.TrimSpace(p.stdout.String()), "\n") }

// runPair runs a Go parent peer and a Go child peer connected by a fresh
// sync socket, each taking it from PROCSYNC_SYNC_FD.
func runPair(t *testing.T, parentArgs, childArgs []string) (parent, child *peerRun) {
	return runPairAttr(t, nil, parentArgs, childArgs)
}

// runPairAttr is runPair with the parent peer started with attr.
func runPairAttr(t *testing.T, attr *syscall.SysProcAttr, parentArgs, childArgs []string) (parent, child *peerRun) {
	t.Helper()
	ps, cs, err := procsync.Pair()
	if err != nil {
		t.Fatal(err)
	}
	start := func(s *procsync.SyncSocket, args []string, attr *syscall.SysProcAttr) *peerRun {
		p := &peerRun{cmd: exec.Command(os.Args[0], append([]string{"-fd-env"}, args...)...)}
		p.cmd.SysProcAttr = attr
		p.cmd.Env = append(os.Environ(), envAsMain+"=1", "GORACE=atexit_sleep_ms=0")
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		if err := s.PassToChild(p.cmd); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		return p
	}
	child = start(cs, childArgs, nil)
	parent = start(ps, append(parentArgs, "-peer-pid", strconv.Itoa(child.cmd.Process.Pid)), attr)
	for _, p := range []*peerRun{parent, child} {
		err := p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if err != nil && p.code < 0 {
			t.Fatalf("peer: %v", err)
		}
	}
	t.Logf("parent (exit %d):\n%s%s", parent.code, parent.stdout.String(), parent.stderr.String())
	t.Logf("child (exit %d):\n%s%s", child.code, child.stdout.String(), child.stderr.String())
	return parent, child
}

func expectLines(t *testing.T, who string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s transcript has %d lines, want %d:\n%s", who, len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !regexp.MustCompile("^" + want[i] + "$").MatchString(got[i]) {
			t.Fatalf("%s line %d: %q does not match %q", who, i+1, got[i], want[i])
		}
	}
}

func dirs(t *testing.T) (string, string) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

func TestPeerInitFull(t *testing.T) {
	a, b := dirs(t)
	mounts := []string{"-mount", a + ":/a", "-mount", b + ":/b"}
	parent, child := runPair(t,
		append([]string{"-role", "parent", "-flow", "init"}, mounts...),
		append([]string{"-role", "child", "-flow", "init", "-seccomp", "attached"}, mounts...))
	if parent.code != 0 || child.code != 0 {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	q := regexp.QuoteMeta
	expectLines(t, "child", child.lines(),
		"send MountPlease source="+q(a)+" destination=/a device=bind flags=0x1000",
		"recv MountFd kind=plain-open source="+q(a)+" fd=1",
		"verify source="+q(a)+" fd-target="+q(a)+` dev:ino=\d+:\d+ ok`,
		"send MountPlease source="+q(b)+" destination=/b device=bind flags=0x1000",
		"recv MountFd kind=plain-open source="+q(b)+" fd=1",
		"verify source="+q(b)+" fd-target="+q(b)+` dev:ino=\d+:\d+ ok`,
		"send Hooks", "recv HooksDone", "send Ready", "recv Run",
		"send Seccomp transfer=attached fd=1", "recv SeccompDone", "close", "done")
	expectLines(t, "parent", parent.lines(),
		"recv MountPlease source="+q(a)+" destination=/a device=bind flags=0x1000",
		"send MountFd kind=plain-open source="+q(a)+" fd=1",
		"recv MountPlease source="+q(b)+" destination=/b device=bind flags=0x1000",
		"send MountFd kind=plain-open source="+q(b)+" fd=1",
		"recv Hooks", "send HooksDone", "recv Ready", "send Run",
		"recv Seccomp transfer=attached fd=1", "seccomp fd ok mode=010000", "send SeccompDone", "done")
}

func TestPeerExec(t *testing.T) {
	parent, child := runPair(t,
		[]string{"-role", "parent", "-flow", "exec"},
		[]string{"-role", "child", "-flow", "exec", "-seccomp", "child-fd"})
	if parent.code != 0 || child.code != 0 {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	expectLines(t, "child", child.lines(), "send Ready", "recv Run", "send Seccomp child-fd=2", "recv SeccompDone", "close", "done")
	expectLines(t, "parent", parent.lines(), "recv Ready", "send Run", "recv Seccomp child-fd=2", "seccomp child-fd=2 copied mode=010000 ok", "send SeccompDone", "done")
}

func TestPeerRequestUnlisted(t *testing.T) {
	a, b := dirs(t)
	parent, child := runPair(t,
		[]string{"-role", "parent", "-mount", a + ":/a"},
		[]string{"-role", "child", "-mount", a + ":/a", "-request-unlisted", b + ":/b"})
	if parent.code != exitRefused || child.code != 0 {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	pl, cl := parent.lines(), child.lines()
	if !strings.HasPrefix(pl[len(pl)-1], "refuse MountPlease source="+b) || !strings.Contains(pl[len(pl)-1], "is not one of the container's configured mounts") {
		t.Fatalf("parent: %q", pl[len(pl)-1])
	}
	if cl[len(cl)-3] != "recv Error message="+strconv.Quote(`mount request refused: "`+b+`" -> "/b" is not one of the container's configured mounts`) ||
		!strings.HasPrefix(cl[len(cl)-2], "refused source="+b) || cl[len(cl)-1] != "done" {
		t.Fatalf("child: %q", cl)
	}
}

func TestPeerFailWith(t *testing.T) {
	parent, child := runPair(t,
		[]string{"-role", "parent"},
		[]string{"-role", "child", "-fail-with", "cannot set up rootfs"})
	if parent.code != exitRemote || child.code != 0 {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	expectLines(t, "parent", parent.lines(), `recv Error message="cannot set up rootfs"`, `child-failed message="cannot set up rootfs"`)
	expectLines(t, "child", child.lines(), `send Error message="cannot set up rootfs"`, "done")
}

// The parent sees the death either when it replies (EPIPE: a close while
// Hooks was pending) or when it reads next (EOF before Ready).
func TestPeerChildDies(t *testing.T) {
	parent, child := runPair(t,
		[]string{"-role", "parent"},
		[]string{"-role", "child", "-die-after", "Hooks"})
	if parent.code != exitFail || child.code != exitDied {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	if s := parent.stderr.String(); !strings.Contains(s, "child closed without Ready") && !strings.Contains(s, "child closed while Hooks was pending") {
		t.Fatalf("parent stderr: %s", s)
	}
}

func TestPeerParentDies(t *testing.T) {
	parent, child := runPair(t,
		[]string{"-role", "parent", "-die-after", "Hooks"},
		[]string{"-role", "child"})
	if parent.code != exitDied || child.code != exitFail {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	if s := child.stderr.String(); !strings.Contains(s, "parent closed while Hooks was pending") {
		t.Fatalf("child stderr: %s", s)
	}
}

func TestPeerUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-role", "x", "-fd-env"},
		{"-role", "child"},
		{"-role", "child", "-fd-env", "-fd", "3"},
		{"-role", "parent", "-fd-env", "-fail-with", "x"},
		{"-role", "child", "-fd-env", "-die-after", "Nope"},
		{"-role", "child", "-fd-env", "-mount", "nocolon"},
	} {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), envAsMain+"=1")
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != exitUsage {
			t.Fatalf("%v: exit %d: %s", args, cmd.ProcessState.ExitCode(), out)
		}
	}
}

func TestPeerOpenTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("open_tree(OPEN_TREE_CLONE) needs root (CAP_SYS_ADMIN); CI runs as root")
	}
	a, _ := dirs(t)
	// The parent runs in a private mount namespace of its own; the
	// detached clone never touches the host's mount table anyway.
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	parent, child := runPairAttr(t, attr,
		[]string{"-role", "parent", "-open-tree", "-mount", a + ":/a"},
		[]string{"-role", "child", "-mount", a + ":/a"})
	if parent.code != 0 || child.code != 0 {
		t.Fatalf("exit codes parent %d child %d", parent.code, child.code)
	}
	cl := child.lines()
	if cl[1] != "recv MountFd kind=open_tree source="+a+" fd=1" || !strings.HasPrefix(cl[2], "verify source="+a) || !strings.HasSuffix(cl[2], " ok") {
		t.Fatalf("child: %q", cl)
	}
}
