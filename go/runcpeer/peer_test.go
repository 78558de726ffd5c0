package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const vectorsPath = "../../tests/vectors/runc.json"

// TestMain lets the test binary act as the runcpeer command, so the
// cross-process test runs parent and child as real processes.
func TestMain(m *testing.M) {
	if args := os.Getenv("RUNCPEER_TEST_ARGS"); args != "" {
		os.Args = append([]string{"runcpeer"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestVectorsFileIsUpToDate(t *testing.T) {
	want, err := renderVectors()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("RUNCPEER_UPDATE_VECTORS") == "1" {
		if err := os.WriteFile(vectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run `go run . gen-vectors -o %s` in go/runcpeer", vectorsPath, vectorsPath)
	}
}

// Every valid record is in Go's canonical form for its shape: unmarshalling
// it into runc's structs and marshalling again gives the same bytes.
func TestValidVectorsAreGoCanonical(t *testing.T) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Valid) == 0 || len(vf.Invalid) == 0 {
		t.Fatal("empty vector sets")
	}
	for _, v := range vf.Valid {
		var msg syncT
		if err := json.Unmarshal([]byte(v.Record), &msg); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		var arg any
		if msg.Arg != nil {
			switch msg.Type {
			case procError:
				arg = new(initError)
			case procMountFd:
				arg = new(mountSource)
			case procSeccomp:
				arg = new(int)
			case procMountPlease:
				switch v.Shape {
				case "ba0b5e269":
					arg = new(mountSeed)
				case "v1.2":
					arg = new(mountV12)
				case "v1.4":
					arg = new(mountV14)
				default:
					arg = new(mountV15)
				}
			default:
				t.Fatalf("%s: unexpected argument", v.Name)
			}
			if err := json.Unmarshal(*msg.Arg, arg); err != nil {
				t.Fatalf("%s: argument: %v", v.Name, err)
			}
		}
		again, err := marshalSync(msg.Type, arg, msg.Flags&syncFlagHasFd != 0)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != v.Record {
			t.Errorf("%s: not canonical:\n got %s\nwant %s", v.Name, again, v.Record)
		}
		if (v.FdRecord != nil) != (msg.Flags&syncFlagHasFd != 0) {
			t.Errorf("%s: fd_record and HasFd disagree", v.Name)
		}
	}
}

func socketpair(t *testing.T) (*syncSocket, *syncSocket) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newSyncSocket(fds[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newSyncSocket(fds[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

var pollerWarm sync.Once

// countFds counts this process's open fds. The first call first makes the
// Go runtime open its netpoller fds (epoll, eventfd), which it does lazily.
func countFds(t *testing.T) int {
	t.Helper()
	pollerWarm.Do(func() {
		if r, w, err := os.Pipe(); err == nil {
			r.Close()
			w.Close()
		}
	})
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

type childOutcome struct {
	err error
	log bytes.Buffer
}

// runPair runs the child in a goroutine against the parent in this one.
func runPair(t *testing.T, ccfg childConfig, pcfg parentConfig) (*parentResult, error, *childOutcome) {
	t.Helper()
	parentEnd, childEnd := socketpair(t)
	out := &childOutcome{}
	ccfg.Log = &out.log
	done := make(chan struct{})
	go func() {
		defer close(done)
		out.err = runChild(childEnd, ccfg)
		childEnd.Close() // the parent reads EOF
	}()
	var plog bytes.Buffer
	pcfg.Log = &plog
	res, perr := runParent(parentEnd, pcfg)
	parentEnd.Close()
	<-done
	t.Logf("parent:\n%s\nchild:\n%s", plog.String(), out.log.String())
	return res, perr, out
}

func tempDirs(t *testing.T, n int) []string {
	var dirs []string
	for i := 0; i < n; i++ {
		dirs = append(dirs, t.TempDir())
	}
	return dirs
}

func TestInitFlowBothShapes(t *testing.T) {
	for _, shape := range []string{"v1.2", "v1.4"} {
		t.Run(shape, func(t *testing.T) {
			before := countFds(t)
			dirs := tempDirs(t, 2)
			seccomp, err := os.Open("/dev/null")
			if err != nil {
				t.Fatal(err)
			}
			defer seccomp.Close()
			var mounts []*mountSpec
			for i, d := range dirs {
				mounts = append(mounts, &mountSpec{Source: d, Destination: "/m" + string(rune('0'+i)), Device: "bind", Flags: unix.MS_BIND})
			}
			res, perr, child := runPair(t,
				childConfig{Mode: "init", Mounts: mounts, Shape: shape, SeccompFd: int(seccomp.Fd())},
				parentConfig{ChildPid: os.Getpid()})
			if perr != nil || child.err != nil {
				t.Fatalf("parent: %v, child: %v", perr, child.err)
			}
			want := []string{
				"procMountPlease " + dirs[0] + " -> /m0", "procMountFd plain-open " + dirs[0],
				"procMountPlease " + dirs[1] + " -> /m1", "procMountFd plain-open " + dirs[1],
				"procHooks", "procReady", "procSeccomp fd " + itoa(int(seccomp.Fd())) + " copied", "eof",
			}
			if strings.Join(res.Transcript, "\n") != strings.Join(want, "\n") {
				t.Fatalf("transcript:\n%s\nwant:\n%s", strings.Join(res.Transcript, "\n"), strings.Join(want, "\n"))
			}
			for _, d := range dirs {
				if !strings.Contains(child.log.String(), "mountfd "+d+" plain-open ok uid=") {
					t.Errorf("child did not check the fd of %s", d)
				}
			}
			seccomp.Close()
			if after := countFds(t); after != before {
				t.Errorf("fd leak: %d fds before, %d after", before, after)
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestExecFlow(t *testing.T) {
	res, perr, child := runPair(t, childConfig{Mode: "exec", SeccompFd: -1}, parentConfig{})
	if perr != nil || child.err != nil {
		t.Fatalf("parent: %v, child: %v", perr, child.err)
	}
	if got := strings.Join(res.Transcript, ","); got != "procReady,eof" {
		t.Fatalf("transcript %q", got)
	}
}

func TestChildSendsProcError(t *testing.T) {
	for _, msg := range []string{"container init failed: <boom> & \"more\"", ""} {
		res, perr, child := runPair(t, childConfig{Mode: "error", ErrorMsg: msg, SeccompFd: -1}, parentConfig{})
		if child.err != nil {
			t.Fatal(child.err)
		}
		var ierr *initError
		if !errors.As(perr, &ierr) || ierr.Message != msg || res.ChildError != msg {
			t.Fatalf("parent error %v (%q), want initError %q", perr, res.ChildError, msg)
		}
	}
}

func TestParentRefusesAMount(t *testing.T) {
	dir := t.TempDir()
	_, perr, child := runPair(t,
		childConfig{Mode: "init", Shape: "v1.4", SeccompFd: -1, Mounts: []*mountSpec{{Source: dir, Destination: "/x", Device: "bind", Flags: unix.MS_BIND}}},
		parentConfig{FailOn: dir})
	var ierr *initError
	if perr == nil || !errors.As(child.err, &ierr) || !strings.Contains(ierr.Message, "refusing mount source") {
		t.Fatalf("parent: %v, child: %v", perr, child.err)
	}
}

// A hostile parent: wrong fd names and extra fds are refused and every
// received fd is closed.
func TestChildRejectsBadFdRecords(t *testing.T) {
	dir := t.TempDir()
	m := &mountSpec{Source: dir, Destination: "/x", Device: "bind", Flags: unix.MS_BIND}
	cases := []struct {
		name string
		send func(s *syncSocket, a, b *os.File) error
		want string
	}{
		{"name mismatch", func(s *syncSocket, a, _ *os.File) error {
			return s.SendFile("/etc", a)
		}, "does not match the requested source"},
		{"two fds", func(s *syncSocket, a, b *os.File) error {
			return unix.Sendmsg(s.fd, []byte(dir), unix.UnixRights(int(a.Fd()), int(b.Fd())), nil, 0)
		}, "2 fds"},
		{"no fd", func(s *syncSocket, _, _ *os.File) error {
			return s.WritePacket([]byte(dir))
		}, "0 fds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parentEnd, childEnd := socketpair(t)
			defer parentEnd.Close()
			a, _ := os.Open(dir)
			b, _ := os.Open(dir)
			defer a.Close()
			defer b.Close()
			before := countFds(t)
			errc := make(chan error, 1)
			go func() { errc <- childMount(childEnd, m, "v1.2", func(string, ...any) {}) }()
			if _, err := parentEnd.readSync(); err != nil {
				t.Fatal(err)
			}
			hdr, _ := marshalSync(procMountFd, &mountSource{mountSourcePlainOpen}, true)
			if err := parentEnd.WritePacket(hdr); err != nil {
				t.Fatal(err)
			}
			if err := c.send(parentEnd, a, b); err != nil {
				t.Fatal(err)
			}
			err := <-errc
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("child error %v, want %q", err, c.want)
			}
			if after := countFds(t); after != before {
				t.Errorf("fd leak: %d fds before, %d after", before, after)
			}
			childEnd.Close()
		})
	}
}

// Parent and child as separate processes, the socket inherited as fd 3 via
// $_LIBCONTAINER_SYNCPIPE, as runc hands it to runc init. As root the parent
// runs in a private mount namespace and also serves an id-mapped request
// with open_tree(OPEN_TREE_CLONE), and copies the child's seccomp fd with
// pidfd_getfd.
func TestCrossProcess(t *testing.T) {
	root := os.Geteuid() == 0
	if !root {
		t.Log("not root: no id-mapped mounts, no pidfd_getfd")
		crossProcess(t, nil, "plain-open", itoa(os.Geteuid()))
		return
	}
	t.Run("idmap ranges", func(t *testing.T) {
		// root's directory seen through the id-mapped mount: 0 -> 100000.
		crossProcess(t, []string{"-idmap-range", "0:100000:65536", "-seccomp-fd", "0"}, "open_tree", "100000")
	})
	t.Run("idmap userns_path", func(t *testing.T) {
		nsfd, err := usernsForRanges([]IDMap{{0, 200000, 65536}}, []IDMap{{0, 200000, 65536}})
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(nsfd)
		path := "/proc/" + itoa(os.Getpid()) + "/fd/" + itoa(nsfd)
		crossProcess(t, []string{"-idmap-userns", path}, "open_tree", "200000")
	})
}

func crossProcess(t *testing.T, extra []string, kind, uid string) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parentEnd := os.NewFile(uintptr(fds[0]), "parent-end")
	childEnd := os.NewFile(uintptr(fds[1]), "child-end")
	dir := t.TempDir()
	childArgs := append([]string{"child", "-mode", "init", "-shape", "v1.4", "-mount", dir + ":/data"}, extra...)
	cmd := func(args []string, sock *os.File) *exec.Cmd {
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), "RUNCPEER_TEST_ARGS="+strings.Join(args, "\x1f"), "_LIBCONTAINER_SYNCPIPE=3")
		c.ExtraFiles = []*os.File{sock}
		return c
	}
	child := cmd(childArgs, childEnd)
	var childOut, parentOut bytes.Buffer
	child.Stdout, child.Stderr = &childOut, &childOut
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childEnd.Close()
	parent := cmd([]string{"parent", "-child-pid", itoa(child.Process.Pid)}, parentEnd)
	parent.Stdout, parent.Stderr = &parentOut, &parentOut
	if os.Geteuid() == 0 {
		parent.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	perr := parent.Run()
	parentEnd.Close()
	cerr := child.Wait()
	t.Logf("parent:\n%s\nchild:\n%s", parentOut.String(), childOut.String())
	if perr != nil || cerr != nil {
		t.Fatalf("parent: %v, child: %v", perr, cerr)
	}
	if want := "mountfd " + dir + " " + kind + " ok uid=" + uid; !strings.Contains(childOut.String(), want) {
		t.Errorf("child output lacks %q", want)
	}
	for _, a := range extra {
		if a == "-seccomp-fd" && !strings.Contains(parentOut.String(), "procSeccomp fd 0 copied") {
			t.Error("parent did not copy the seccomp fd")
		}
	}
	if !strings.Contains(parentOut.String(), "parent: eof") {
		t.Error("parent did not see the child close the socket")
	}
}

// goJSONAccepts reports whether runc's own reader gets past encoding/json
// with record: the syncT, then the argument into its runc type.
func goJSONAccepts(record []byte) bool {
	var msg syncT
	if err := json.Unmarshal(record, &msg); err != nil {
		return false
	}
	if msg.Arg == nil {
		return true
	}
	var arg any
	switch msg.Type {
	case procError:
		arg = new(initError)
	case procMountFd:
		arg = new(mountSource)
	case procSeccomp:
		arg = new(int)
	case procMountPlease:
		arg = new(mountV12)
	default:
		return true // runc rejects an unexpected argument later, not in encoding/json
	}
	return json.Unmarshal(*msg.Arg, arg) == nil
}

// Pins down where procsync is stricter than Go's encoding/json (the list in
// docs/fragments/runc-protocol.md): the JSON-level invalid vectors that Go
// accepts are exactly these; every other malformed-body, wrong-type and
// number-out-of-range vector is refused by Go too.
func TestStricterThanGoOnlyWhereDocumented(t *testing.T) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	jsonLevel := map[string]bool{
		"malformed-body": true, "wrong-type": true, "number-out-of-range": true, "too-deep": true,
		"duplicate-field": true, "noncanonical-key": true, "missing-field": true, "unknown-field": true,
	}
	want := map[string]bool{
		"invalid UTF-8":              true, // Go substitutes U+FFFD
		"lone surrogate":             true, // Go substitutes U+FFFD
		"nesting deeper than 16":     true, // Go allows 10000 levels
		"missing type":               true, // Go leaves "" (runc then fails the type check)
		"null type":                  true,
		"missing flags":              true, // Go leaves 0
		"duplicate type":             true, // Go keeps the last
		"duplicate mount source":     true,
		"key in the wrong case":      true, // Go folds case
		"rec_attr key in lower case": true,
		"key folded with long s":     true,
		// In range for Go's int/int64 but not for the schema (or the kernel).
		"seccomp fd beyond int32":  true,
		"mount flags negative":     true,
		"extensions beyond uint32": true,
		"host_id beyond uint32":    true,
		"container_id negative":    true,
		// Keys outside the selected configs.Mount layout: Go ignores them.
		"seed id maps in the v1.2 layout":    true,
		"seed id maps in the v1.4 layout":    true,
		"id_mapping in the ba0b5e269 layout": true,
		"relabel in the v1.5 layout":         true,
		"unknown mount key":                  true,
		"unknown id_mapping key":             true,
	}
	got := map[string]bool{}
	for _, v := range vf.Invalid {
		if !jsonLevel[v.Kind] || v.RecordHex == "" && v.Record == "" {
			continue
		}
		rec := []byte(v.Record)
		if v.RecordHex != "" {
			if rec, err = hex.DecodeString(v.RecordHex); err != nil {
				t.Fatal(err)
			}
		}
		if goJSONAccepts(rec) {
			got[v.Name] = true
		}
	}
	for name := range want {
		if want[name] && !got[name] {
			t.Errorf("%q: Go rejects it too; drop it from the documented differences", name)
		}
	}
	for name := range got {
		if !want[name] {
			t.Errorf("%q: Go accepts it; document the difference", name)
		}
	}
}
