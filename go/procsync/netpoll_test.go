//go:build linux

package procsync

// Waits go through Go's netpoller: a blocked wait holds no OS thread, and a
// done context or Close from another goroutine ends it promptly.

import (
	"bufio"
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// osThreads is this process's thread count (/proc/self/status Threads).
func osThreads(t testing.TB) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// 1,000 sessions in one process: while every parent waits for its child's
// first request (and every child, later, for its replies) the process runs
// on a handful of OS threads; each conversation completes with real fds
// and none leaks.
func TestThousandConcurrentSessionsFewThreads(t *testing.T) {
	const n = 1000
	noLeak(t, func() {
		goroutines := runtime.NumGoroutine()
		before := osThreads(t)
		pidfd, err := PidfdOpen(os.Getpid()) // watched by every parent: never fires
		if err != nil {
			t.Fatal(err)
		}
		defer pidfd.Close()
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for i := 0; i < n; i++ {
			a, b := pair(t)
			wg.Add(2)
			go func() {
				defer wg.Done()
				p := NewParent(a, ParentOptions{Options: Options{Flow: FlowInit, PeerPidfd: pidfd, Timeout: time.Minute},
					Mounts: []*pb.Mount{BindMount("/", "/r")}})
				errs <- p.ServeContext(context.Background(), HandlerFuncs{MountFunc: openPlainForTest})
			}()
			go func() {
				defer wg.Done()
				c := NewChild(b, Options{Flow: FlowInit})
				<-start
				f, _, err := c.MountPleaseContext(context.Background(), BindMount("/", "/r"))
				if err == nil {
					f.Close()
					err = c.HooksContext(context.Background())
				}
				if err == nil {
					err = c.ReadyContext(context.Background())
				}
				if cerr := c.Close(); err == nil {
					err = cerr
				}
				errs <- err
			}()
		}
		// Every parent is now blocked in a receive (give them time to get
		// there), and every child waits on a channel.
		time.Sleep(500 * time.Millisecond)
		blocked := osThreads(t)
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("OS threads: %d before, %d with %d parents blocked in a receive, GOMAXPROCS %d",
			before, blocked, n, runtime.GOMAXPROCS(0))
		// A wait that held an OS thread would need n threads; the Go
		// runtime may still start a few dozen while 2n goroutines set up
		// their sockets under load (threads, once started, stay), so the
		// bound is a tenth of n, far below one thread per wait.
		if blocked > before+runtime.GOMAXPROCS(0)+n/10 {
			t.Fatalf("%d OS threads with %d blocked receives (%d before)", blocked, n, before)
		}
		// Every peer watcher ended with its socket.
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > goroutines {
			t.Fatalf("%d goroutines left, %d before", g, goroutines)
		}
	})
}

// cancelWithin checks that a call, blocked, returns within 10 ms of its
// cancel (or close) with an error matched by want. setup makes a fresh
// blocked call, its cancel and a cleanup. A wait that depends on a timer
// or a poll timeout fails every time; scheduling noise on a loaded machine
// does not, so a slow ending is tried twice more before it counts.
func cancelWithin(t *testing.T, name string, setup func() (call func() error, cancel, cleanup func()), want func(error) bool) {
	t.Helper()
	limit := 10 * time.Millisecond
	if raceEnabled {
		limit = 50 * time.Millisecond
	}
	var took time.Duration
	for try := 0; try < 3; try++ {
		call, cancel, cleanup := setup()
		done := make(chan error, 1)
		go func() { done <- call() }()
		time.Sleep(20 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("%s returned before the cancel: %v", name, err)
		default:
		}
		start := time.Now()
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waits 5 s after the cancel", name)
		}
		took = time.Since(start)
		cleanup()
		if !want(err) {
			t.Fatalf("%s: got %v", name, err)
		}
		t.Logf("%s ended %v after the cancel", name, took)
		if took <= limit {
			return
		}
	}
	t.Fatalf("%s ended %v after the cancel", name, took)
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) && isKindIn(err, KindCanceled)
}

// isKindIn: some error in err's chain has kind k.
func isKindIn(err error, k ErrorKind) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if kk, ok := e.(interface{ Kind() ErrorKind }); ok && kk.Kind() == k {
			return true
		}
	}
	return false
}

func TestCancelEndsWaitsPromptly(t *testing.T) {
	noLeak(t, func() {
		// A socket receive; nothing is consumed by the cancelled call.
		cancelWithin(t, "RecvContext", func() (func() error, func(), func()) {
			a, b := pair(t)
			ctx, cancel := context.WithCancel(context.Background())
			return func() error { _, _, err := b.RecvContext(ctx, time.Time{}); return err }, cancel, func() {
				if err := a.Send(ReadyMessage(), nil); err != nil {
					t.Fatal(err)
				}
				if m, _, err := b.Recv(soon()); err != nil || m.GetType() != TypeReady {
					t.Fatalf("%v %v", m, err)
				}
				a.Close()
				b.Close()
			}
		}, isCanceled)

		// A send waiting for room.
		cancelWithin(t, "SendContext", func() (func() error, func(), func()) {
			a, b := pair(t)
			fill(t, a)
			ctx, cancel := context.WithCancel(context.Background())
			return func() error { return a.SendContext(ctx, ReadyMessage(), nil, time.Time{}) }, cancel,
				func() { a.Close(); b.Close() }
		}, isCanceled)

		// Close from another goroutine, for a send and a receive.
		isClosed := func(err error) bool { return errors.Is(err, ErrClosed) && isKindIn(err, KindClosed) }
		cancelWithin(t, "Send then Close", func() (func() error, func(), func()) {
			a, b := pair(t)
			fill(t, a)
			return func() error { return a.Send(ReadyMessage(), nil) }, func() { a.Close() }, func() { b.Close() }
		}, isClosed)
		cancelWithin(t, "Recv then Close", func() (func() error, func(), func()) {
			a, b := pair(t)
			return func() error { _, _, err := b.Recv(time.Time{}); return err }, func() { b.Close() }, func() { a.Close() }
		}, isClosed)

		// A parent serving, a child waiting for a reply.
		cancelWithin(t, "ServeContext", func() (func() error, func(), func()) {
			a, b := pair(t)
			ctx, cancel := context.WithCancel(context.Background())
			p := NewParent(a, ParentOptions{Options: Options{Flow: FlowInit}})
			return func() error { return p.ServeContext(ctx, HandlerFuncs{}) }, cancel, func() { b.Close() }
		}, func(err error) bool {
			var se *SessionError
			return isCanceled(err) && errors.As(err, &se) && se.Role == RoleParent
		})
		cancelWithin(t, "ReadyContext", func() (func() error, func(), func()) {
			a, b := pair(t)
			ctx, cancel := context.WithCancel(context.Background())
			ch := NewChild(b, Options{Flow: FlowExec})
			return func() error { return ch.ReadyContext(ctx) }, cancel, func() { ch.Close(); a.Close() }
		}, isCanceled)

		// Close on the child or the parent from another goroutine ends
		// its pending call.
		cancelWithin(t, "Hooks then Child.Close", func() (func() error, func(), func()) {
			a, b := pair(t)
			ch := NewChild(b, Options{Flow: FlowInit})
			return func() error { return ch.Hooks() }, func() { go ch.Close() }, func() { ch.Close(); a.Close() }
		}, isClosed)
		cancelWithin(t, "Serve then Parent.Close", func() (func() error, func(), func()) {
			a, b := pair(t)
			p := NewParent(a, ParentOptions{Options: Options{Flow: FlowInit}})
			return func() error { return p.Serve(HandlerFuncs{}) }, func() { p.Close() }, func() { b.Close() }
		}, isClosed)

		// A context with a deadline ends the wait at that deadline.
		a, b := pair(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := b.RecvContext(ctx, time.Time{})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
			t.Fatalf("%v after %v", err, time.Since(start))
		}
		a.Close()
		b.Close()
	})
}

// A context that is already done still takes a queued record, as a past
// deadline does: the first attempt comes before any wait.
func TestDoneContextTakesAQueuedRecord(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	if err := a.Send(ReadyMessage(), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if m, _, err := b.RecvContext(ctx, time.Time{}); err != nil || m.GetType() != TypeReady {
		t.Fatalf("%v %v", m, err)
	}
	if _, _, err := b.RecvContext(ctx, time.Time{}); !isCanceled(err) {
		t.Fatalf("%v", err)
	}
}
