//go:build linux

package procsync

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The transport benchmark mirrors the Rust one (benches/transport.rs): one
// MountPlease answered by a MountFd carrying one fd, between two processes
// pinned to the same CPU, through SyncSocket and through a bare
// sendmsg/recvmsg loop moving the same bytes and fd. Besides ns/op it
// reports cpu-ns/op: this process's (getrusage) plus the peer's CPU time per round trip
// (the peer's from /proc/<pid>/schedstat). Run:
//
//	go test -run '^$' -bench MountRoundTrip -benchtime 20000x
const (
	envBenchPeer = "PROCSYNC_GO_BENCH_PEER"
	envBenchCPU  = "PROCSYNC_GO_BENCH_CPU"
	benchSource  = "/var/lib/containers/storage/overlay/3f1c9a/merged"
)

func benchRequest() *pb.SyncMessage {
	m := BindMount(benchSource, "/data")
	m.Flags |= MsRec
	return MountPleaseMessage(m)
}

func benchReply() *pb.SyncMessage { return MountFdMessage(SourceOpenTree, benchSource) }

// pinThread pins the caller to cpu. Under `taskset -c N` (every thread
// already on one CPU, as the figures in docs/BENCHMARKS.md are taken) it
// does nothing: a goroutine that waits in the netpoller must not be locked
// to a thread (the wake-up would then hop through a second thread).
// Otherwise it locks the goroutine to its thread and pins that thread.
func pinThread(cpu int) error {
	var cur unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cur); err == nil && cur.Count() == 1 && cur.IsSet(cpu) {
		return nil
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

// runBenchPeer is the peer process: answer every MountPlease with a
// MountFd and one fd until EOF.
func runBenchPeer(mode string) error {
	if cpu, err := strconv.Atoi(os.Getenv(envBenchCPU)); err == nil {
		if err := pinThread(cpu); err != nil {
			return err
		}
	}
	sock, err := FromEnv()
	if err != nil {
		return err
	}
	defer sock.Close()
	f, err := os.Open("/dev/null")
	if err != nil {
		return err
	}
	defer f.Close()
	reply := benchReply()
	if mode == "procsync" {
		for {
			if _, _, err := sock.Recv(timeNone); err != nil {
				if errors.Is(err, ErrPeerClosed) {
					return nil
				}
				return err
			}
			if err := sock.Send(reply, f); err != nil {
				return err
			}
		}
	}
	rec, err := Encode(nil, reply, true, DefaultLimits())
	if err != nil {
		return err
	}
	// The bare loop blocks in the kernel, as a plain socket does.
	if err := unix.SetNonblock(sock.Fd(), false); err != nil {
		return err
	}
	buf := make([]byte, DefaultMaxRecord)
	oob := unix.UnixRights(int(f.Fd()))
	for {
		n, _, _, _, err := unix.Recvmsg(sock.Fd(), buf, nil, 0)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := unix.Sendmsg(sock.Fd(), rec, oob, nil, 0); err != nil {
			return err
		}
	}
}

type benchPeer struct {
	cmd  *exec.Cmd
	sock *SyncSocket
}

func spawnBenchPeer(b *testing.B, mode string, cpu int) *benchPeer {
	b.Helper()
	mine, theirs, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envBenchPeer+"="+mode, envBenchCPU+"="+strconv.Itoa(cpu))
	cmd.Stderr = os.Stderr
	if err := theirs.PassToChild(cmd); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	theirs.Close()
	return &benchPeer{cmd: cmd, sock: mine}
}

func (p *benchPeer) finish(b *testing.B) {
	p.sock.Close()
	if err := p.cmd.Wait(); err != nil {
		b.Fatalf("peer: %v", err)
	}
}

// cpuNs is the first field of a schedstat file: nanoseconds on CPU.
func cpuNs(path string) uint64 {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseUint(f[0], 10, 64)
	return n
}

// firstAllowedCPU is the lowest CPU this thread may run on.
func firstAllowedCPU() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, err
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if set.IsSet(cpu) {
			return cpu, nil
		}
	}
	return 0, errors.New("empty CPU affinity set")
}

// benchRoundTrips pins this thread, spawns a peer on the same CPU and
// measures rt per iteration, reporting cpu-ns/op besides ns/op.
func benchRoundTrips(b *testing.B, mode string, rt func(p *benchPeer)) {
	defer runtime.UnlockOSThread()
	cpu, err := firstAllowedCPU()
	if err != nil {
		b.Fatal(err)
	}
	if err := pinThread(cpu); err != nil {
		b.Fatal(err)
	}
	p := spawnBenchPeer(b, mode, cpu)
	defer p.finish(b)
	for i := 0; i < 200; i++ {
		rt(p)
	}
	peerStat := fmt.Sprintf("/proc/%d/schedstat", p.cmd.Process.Pid)
	// This process's CPU time (every thread: the benchmark goroutine is not
	// locked to one when the process is pinned with taskset, so a
	// thread's own counter could be another thread's at the end).
	self0, peer0 := processCPU(), cpuNs(peerStat)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rt(p)
	}
	b.StopTimer()
	self1, peer1 := processCPU(), cpuNs(peerStat)
	b.ReportMetric((float64(self1-self0)+float64(peer1-peer0))/float64(b.N), "cpu-ns/op")
}

func BenchmarkMountRoundTripSameCPU(b *testing.B) {
	req := benchRequest()
	b.Run("procsync", func(b *testing.B) {
		benchRoundTrips(b, "procsync", func(p *benchPeer) {
			if err := p.sock.Send(req, nil); err != nil {
				b.Fatal(err)
			}
			_, f, err := p.sock.Recv(timeNone)
			if err != nil || f == nil {
				b.Fatalf("%v %v", f, err)
			}
			f.Close()
		})
	})
	b.Run("raw_sendmsg_recvmsg", func(b *testing.B) {
		rec, err := Encode(nil, req, false, DefaultLimits())
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, DefaultMaxRecord)
		oob := make([]byte, unix.CmsgSpace(4))
		blocking := false
		benchRoundTrips(b, "raw", func(p *benchPeer) {
			if !blocking {
				// The bare loop blocks in the kernel, as a plain socket does.
				if err := unix.SetNonblock(p.sock.Fd(), false); err != nil {
					b.Fatal(err)
				}
				blocking = true
			}
			if err := unix.Sendmsg(p.sock.Fd(), rec, nil, nil, 0); err != nil {
				b.Fatal(err)
			}
			_, oobn, _, _, err := unix.Recvmsg(p.sock.Fd(), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(msgs) != 1 {
				b.Fatalf("%v %v", msgs, err)
			}
			fds, err := unix.ParseUnixRights(&msgs[0])
			if err != nil || len(fds) != 1 {
				b.Fatal(err)
			}
			unix.Close(fds[0])
		})
	})
}

// BenchmarkMountRoundTripOneThread runs both ends in one goroutine: no
// context switch, so what is measured is procsync's user-space and syscall
// cost alone.
func BenchmarkMountRoundTripOneThread(b *testing.B) {
	a, c, err := Pair()
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	defer c.Close()
	f, err := os.Open("/dev/null")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	req, rep := benchRequest(), benchReply()
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := a.Send(req, nil); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.Recv(timeNone); err != nil {
			b.Fatal(err)
		}
		if err := c.Send(rep, f); err != nil {
			b.Fatal(err)
		}
		_, got, err := a.Recv(timeNone)
		if err != nil || got == nil {
			b.Fatal(err)
		}
		got.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is this process's user and system CPU time in nanoseconds
// (all threads): less disturbed than wall time by other load on the CPU.
func processCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkCodecMountRoundTrip is the codec alone: encode and decode the
// request and the reply.
func BenchmarkCodecMountRoundTrip(b *testing.B) {
	req, rep := benchRequest(), benchReply()
	lim := DefaultLimits()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = Encode(buf[:0], req, false, lim); err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(buf, 0, lim); err != nil {
			b.Fatal(err)
		}
		if buf, err = Encode(buf[:0], rep, true, lim); err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(buf, 1, lim); err != nil {
			b.Fatal(err)
		}
	}
}
