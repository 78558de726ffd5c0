//go:build linux

package procsync

import (
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// Source fds: served from a pinned fd against the path walk the package
// did before (open(O_PATH) / open_tree(AT_FDCWD, path) at request time);
// the fds are closed outside the timed part, 64 at a time. The source is
// nine components deep (five below the benchmark's temporary directory).
// Run (pinned to one CPU):
//
//	taskset -c 0 go test -run '^$' -bench Source -benchtime 20000x
//
// Besides ns/op each reports cpu-ns/op, the thread's CPU time.
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
func closeBatch(b *testing.B, c *cpuTimer, files *[]*os.File, f *os.File, last bool) {
	*files = append(*files, f)
	if len(*files) < 64 && !last {
		return
	}
	b.StopTimer()
	resume := c.pause()
	for _, f := range *files {
		f.Close()
	}
	*files = (*files)[:0]
	resume()
	b.StartTimer()
}

// threadCPU is the calling thread's CPU time (user + system).
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTimer reports the thread's CPU time per op as "cpu-ns/op" (the
// benchmark stays on one locked thread), which other load on the CPU
// does not inflate as it does wall time.
type cpuTimer struct {
	b       *testing.B
	start   time.Duration
	stopped time.Duration
}

func startCPU(b *testing.B) *cpuTimer {
	runtime.LockOSThread()
	b.ResetTimer()
	return &cpuTimer{b: b, start: threadCPU(b)}
}

func (c *cpuTimer) pause() func() {
	at := threadCPU(c.b)
	return func() { c.stopped += threadCPU(c.b) - at }
}

func (c *cpuTimer) report() {
	c.b.StopTimer()
	used := threadCPU(c.b) - c.start - c.stopped
	c.b.ReportMetric(float64(used.Nanoseconds())/float64(c.b.N), "cpu-ns/op")
	runtime.UnlockOSThread()
}

func benchWalk(b *testing.B, open func(*pb.Mount) (*os.File, error)) {
	req := BindMount(benchSourceDir(b), "/data")
	files := make([]*os.File, 0, 64)
	b.ReportAllocs()
	c := startCPU(b)
	for i := 0; i < b.N; i++ {
		f, err := open(req)
		if err != nil {
			b.Fatal(err)
		}
		closeBatch(b, c, &files, f, i == b.N-1)
	}
	c.report()
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
	c := startCPU(b)
	for i := 0; i < b.N; i++ {
		f, _, err := open(req)
		if err != nil {
			b.Fatal(err)
		}
		closeBatch(b, c, &files, f, i == b.N-1)
		p.mu.Lock()
		p.opened[0] = false
		p.mu.Unlock()
	}
	c.report()
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
