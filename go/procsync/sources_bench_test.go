//go:build linux

package procsync

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// Source fds: served from a pinned fd against the path walk the package
// did before (open(O_PATH) / open_tree(AT_FDCWD, path) at request time);
// the fds are closed outside the timed part, 64 at a time. The source is five directories
// deep below the test's temporary directory. Run (pinned to one CPU):
//
//	taskset -c 0 go test -run '^$' -bench Source -benchtime 20000x
func benchSourceDir(b *testing.B) string {
	dir := b.TempDir() + "/var/lib/containers/volumes/data"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// walkPlain is what OpenPlain did before sources were pinned.
func walkPlain(req *pb.Mount) (*os.File, error) {
	fd, err := unix.Open(req.GetSource(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), req.GetSource()), nil
}

// walkTree is what OpenTree did before sources were pinned.
func walkTree(req *pb.Mount) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, req.GetSource(), unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), req.GetSource()), nil
}

// closeBatch closes the fds made so far with the timer stopped, every
// 64: closing a detached tree waits for an RCU grace period, which
// would swamp the open it follows.
func closeBatch(b *testing.B, files *[]*os.File, f *os.File, last bool) {
	*files = append(*files, f)
	if len(*files) < 64 && !last {
		return
	}
	b.StopTimer()
	for _, f := range *files {
		f.Close()
	}
	*files = (*files)[:0]
	b.StartTimer()
}

func benchWalk(b *testing.B, open func(*pb.Mount) (*os.File, error)) {
	req := BindMount(benchSourceDir(b), "/data")
	files := make([]*os.File, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := open(req)
		if err != nil {
			b.Fatal(err)
		}
		closeBatch(b, &files, f, i == b.N-1)
	}
}

// benchPinned serves the same configured entry again and again (its
// served mark is reset each time; the match against the configuration
// is part of the cost).
func benchPinned(b *testing.B, tree bool) {
	req := BindMount(benchSourceDir(b), "/data")
	p, err := PinSources(req)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	open := p.OpenPlain
	if tree {
		open = p.OpenTree
	}
	files := make([]*os.File, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, _, err := open(req)
		if err != nil {
			b.Fatal(err)
		}
		closeBatch(b, &files, f, i == b.N-1)
		p.mu.Lock()
		p.opened[0] = false
		p.mu.Unlock()
	}
}

func BenchmarkSourcePlainWalk(b *testing.B)   { benchWalk(b, walkPlain) }
func BenchmarkSourcePlainPinned(b *testing.B) { benchPinned(b, false) }

func BenchmarkSourceTreeWalk(b *testing.B) {
	requireRootB(b)
	benchWalk(b, walkTree)
}

func BenchmarkSourceTreePinned(b *testing.B) {
	requireRootB(b)
	benchPinned(b, true)
}

// BenchmarkSourcePin is the one-time cost per configured source.
func BenchmarkSourcePin(b *testing.B) {
	req := BindMount(benchSourceDir(b), "/data")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := PinSources(req)
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
}

func requireRootB(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("open_tree needs CAP_SYS_ADMIN")
	}
}
