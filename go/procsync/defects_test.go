//go:build linux

package procsync

// Regression tests for the Go items of the hostile-input issue (12.9–12.15)
// and the child's reply check (11.4). Each failed on main before its fix.

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// 12.9: a receiver with SO_PASSCRED gets an SCM_CREDENTIALS message with
// every record; the control buffer must still hold the fd of a MountFd
// (it had room for 48 bytes: credentials took 32, the fd was dropped with
// MSG_CTRUNC).
func TestRecvWithPassCredKeepsTheFd(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		if err := unix.SetsockoptInt(b.Fd(), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open("/")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := a.Send(MountFdMessage(SourcePlainOpen, "/"), f); err != nil {
			t.Fatal(err)
		}
		m, got, err := b.Recv(soon())
		if err != nil || m.GetType() != TypeMountFd || got == nil {
			t.Fatalf("%v %v %v", m, got, err)
		}
		if !sameFile(t, got, int(f.Fd())) {
			t.Fatal("another file arrived")
		}
		got.Close()
	})
}

// 12.9: with SO_PASSPIDFD every record comes with an SCM_PIDFD message
// (cmsg type SCM_PIDFD = 4, not the option number 76): its pidfd is closed
// and the record accepted (it failed with an untyped "unexpected control
// message (level 1, type 4)" and leaked the pidfd). Also on a zero-length
// record (EOF).
func TestRecvWithPassPidfdClosesThePidfd(t *testing.T) {
	if unix.SCM_PIDFD != 4 || unix.SO_PASSPIDFD != 76 {
		t.Fatalf("SCM_PIDFD %d, SO_PASSPIDFD %d: not the kernel's values", unix.SCM_PIDFD, unix.SO_PASSPIDFD)
	}
	noLeak(t, func() {
		a, b := pair(t)
		defer b.Close()
		if err := unix.SetsockoptInt(b.Fd(), unix.SOL_SOCKET, unix.SO_PASSPIDFD, 1); err != nil {
			if err == unix.ENOPROTOOPT {
				t.Skip("kernel without SO_PASSPIDFD (Linux < 6.5)")
			}
			t.Fatal(err)
		}
		// The feature is real: a raw receive sees the pidfd message.
		rawSend(t, a, []byte{2, 8, 2}) // Ready
		oob := make([]byte, 256)
		_, oobn, _, _, err := unix.Recvmsg(b.Fd(), make([]byte, 64), oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 || msgs[0].Header.Type != unix.SCM_PIDFD {
			t.Fatalf("raw receive: %+v %v", msgs, err)
		}
		unix.Close(int(*(*int32)(unsafeData(msgs[0].Data))))

		f, err := os.Open("/")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := 0; i < 3; i++ {
			if err := a.Send(MountFdMessage(SourcePlainOpen, "/"), f); err != nil {
				t.Fatal(err)
			}
			m, got, err := b.Recv(soon())
			if err != nil || m.GetType() != TypeMountFd || got == nil {
				t.Fatalf("%v %v %v", m, got, err)
			}
			got.Close()
			if err := a.Send(ReadyMessage(), nil); err != nil {
				t.Fatal(err)
			}
			if m, _, err := b.Recv(soon()); err != nil || m.GetType() != TypeReady {
				t.Fatalf("%v %v", m, err)
			}
		}
		a.Close()
		if _, _, err := b.Recv(soon()); !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("EOF: %v", err)
		}
	})
}

// 12.10: Close from another goroutine ends a pending Recv promptly with
// ErrClosed, and the Recv never reads from a socket that reused the fd
// number (it returned another connection's record).
func TestCloseDuringPendingRecv(t *testing.T) {
	noLeak(t, func() {
		for i := 0; i < 50; i++ {
			a, b := pair(t)
			num := b.Fd()
			type result struct {
				m   *pb.SyncMessage
				err error
			}
			done := make(chan result, 1)
			go func() {
				m, f, err := b.Recv(time.Now().Add(5 * time.Second))
				closeFile(f)
				done <- result{m, err}
			}()
			time.Sleep(2 * time.Millisecond)
			start := time.Now()
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			// A new socket takes the lowest free number: the old one.
			c, d := pair(t)
			if err := d.Send(ReadyMessage(), nil); err != nil {
				t.Fatal(err)
			}
			r := <-done
			took := time.Since(start)
			if r.m != nil || !errors.Is(r.err, ErrClosed) {
				t.Fatalf("pending Recv got %v, %v (fds %d, %d, %d)", r.m, r.err, num, c.Fd(), d.Fd())
			}
			if k, _ := KindOf(r.err); k != KindClosed {
				t.Fatalf("kind %q", k)
			}
			if took > 100*time.Millisecond {
				t.Fatalf("pending Recv ended %v after Close", took)
			}
			if m, _, err := c.Recv(soon()); err != nil || m.GetType() != TypeReady {
				t.Fatalf("the new socket lost its record: %v %v", m, err)
			}
			a.Close()
			c.Close()
			d.Close()
		}
	})
}

// 12.11: an Error text is cut to fit the socket's record limit, at a
// UTF-8 boundary and marked; under small limits a refusal and a Child.Fail
// still arrive (they failed to encode and were dropped: the child saw
// EOF).
func TestErrorTextsFitTheRecordLimit(t *testing.T) {
	for _, lim := range []Limits{NewLimits(128), NewLimits(4096), DefaultLimits()} {
		noLeak(t, func() {
			// A refusal of a request with a long path.
			a, b := pair(t)
			done := make(chan error, 1)
			go func() {
				// A configured mount at the same destination: the refusal
				// names it too.
				n := min(lim.MaxRecord()/8, 4080)
				done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit, Limits: lim},
					Mounts: []*pb.Mount{BindMount("/other", "/d"+strings.Repeat("\x7f", n))}}).Serve(HandlerFuncs{})
			}()
			c := NewChild(b, Options{Flow: FlowInit, Limits: NewLimits(MaxRecordCeiling), Timeout: 5 * time.Second})
			// Control characters are legal in a path and quoted as \x7f:
			// the refusal is about twelve times as long as one path.
			n := min(lim.MaxRecord()/8, 4080)
			req := BindMount("/srv/"+strings.Repeat("\x7f", n), "/d"+strings.Repeat("\x7f", n))
			_, _, err := c.MountPlease(req)
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("limit %d: want the refusal, got %v", lim.MaxRecord(), err)
			}
			if full := 12 * n; full < lim.MaxRecord()-100 {
				// The longest refusal legal paths make (three quoted
				// 4 KiB paths, about 48 KiB) fits the default limit:
				// it arrives whole, unmarked.
				if strings.HasSuffix(re.Message, TruncationMark) || !strings.HasPrefix(re.Message, RefusalPrefix) ||
					len(re.Message) < full {
					t.Fatalf("limit %d: refusal of %d bytes changed: %.60q", lim.MaxRecord(), len(re.Message), re.Message)
				}
			} else {
				checkFitted(t, re.Message, lim)
			}
			var mr *MountRefusedError
			if err := <-done; !errors.As(err, &mr) {
				t.Fatalf("parent: %v", err)
			}
			c.Close()

			// Child.Fail with a text far over the limit.
			a, b = pair(t)
			go func() {
				done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit, Limits: NewLimits(MaxRecordCeiling)}}).Serve(HandlerFuncs{})
			}()
			c = NewChild(b, Options{Flow: FlowInit, Limits: lim})
			text := "set-up failed: " + strings.Repeat("ü", 70000)
			if err := c.Fail(text); err != nil {
				t.Fatalf("limit %d: Fail: %v", lim.MaxRecord(), err)
			}
			if err := <-done; !errors.As(err, &re) {
				t.Fatalf("limit %d: parent got %v", lim.MaxRecord(), err)
			}
			checkFitted(t, re.Message, lim)
			if !strings.HasPrefix(re.Message, "set-up failed: ü") {
				t.Fatalf("text %.40q", re.Message)
			}
			c.Close()
		})
	}
}

// checkFitted: msg is valid UTF-8, marked as cut, and its Error record is
// as large as the limit allows (at most 4 bytes of slack for the cut
// character and a varint boundary).
func checkFitted(t *testing.T, msg string, lim Limits) {
	t.Helper()
	if !utf8.ValidString(msg) || !strings.HasSuffix(msg, TruncationMark) {
		t.Fatalf("limit %d: not cut and marked: %.60q…%q", lim.MaxRecord(), msg, msg[max(0, len(msg)-20):])
	}
	n := EncodedLen(ErrorMessage(msg), false)
	if n > lim.MaxRecord() || n < lim.MaxRecord()-5 {
		t.Fatalf("limit %d: Error record of %d bytes", lim.MaxRecord(), n)
	}
}

func TestFitErrorText(t *testing.T) {
	for _, limit := range []int{16, 17, 20, 30, 127, 128, 129, 200, 16383, 16384, 16390, 65536, MaxRecordCeiling} {
		lim := NewLimits(limit)
		for _, s := range []string{"", "short", strings.Repeat("a", 300000), strings.Repeat("€", 100000), "x\xffy"} {
			got := FitErrorText(s, lim)
			if got == "" || !utf8.ValidString(got) {
				t.Fatalf("limit %d: %q", limit, got)
			}
			if n := EncodedLen(ErrorMessage(got), false); n > lim.MaxRecord() {
				t.Fatalf("limit %d: record of %d bytes", limit, n)
			}
			if _, err := Encode(nil, ErrorMessage(got), false, lim); err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if len(s) < 10 && got != strings.ToValidUTF8(s, "\uFFFD") && s != "" {
				t.Fatalf("short text changed: %q", got)
			}
		}
	}
}

// 12.12: PROCSYNC_SYNC_FD must name a number above 2, even when 0, 1 or 2
// is a seqpacket socket; leading zeros are refused. A refused fd stays
// open (FromEnv never closes what it rejected).
func TestFromEnvRefusesStdioNumbers(t *testing.T) {
	for _, v := range []string{"0", "1", "2", "00", "03", "007"} {
		if _, err := ParseSyncFD(v); err == nil {
			t.Fatalf("accepted %q", v)
		}
	}
	if fd, err := ParseSyncFD("3"); err != nil || fd != 3 {
		t.Fatalf("3: %d %v", fd, err)
	}
	// Put a seqpacket socket on fd 0 for the test's duration.
	saved, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Dup3(saved, 0, 0); err != nil {
			t.Fatal(err)
		}
		unix.Close(saved)
	}()
	a, b := pair(t)
	defer a.Close()
	defer b.Close()
	if err := unix.Dup3(b.Fd(), 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSyncFD, "0")
	s, err := FromEnv()
	if err == nil {
		s.Close()
		t.Fatal("accepted fd 0")
	}
	if k, _ := KindOf(err); k != KindEnvInvalid {
		t.Fatalf("kind %q: %v", k, err)
	}
	if _, err := unix.FcntlInt(0, unix.F_GETFD, 0); err != nil {
		t.Fatal("fd 0 was closed")
	}
}

// 12.13: a record of 32,000 empty id-mapping lines (64 KiB) is rejected
// without building 32,000 entries (3.4 MB, 53 bytes per record byte): the
// decoder allocates a small multiple of the record size. The other dense
// shapes are bounded too: packed propagation flags (one byte each on the
// wire, eight in memory) and runs of tiny unknown fields.
func TestDecodeMemoryOnDenseRecords(t *testing.T) {
	for _, limit := range []int{DefaultMaxRecord, MaxRecordCeiling} {
		for _, shape := range []struct {
			name  string
			rec   []byte
			bound int // bytes allocated per record byte, at most
		}{
			{"empty id-map lines", denseIDMapRecord(limit), 1},
			{"packed propagation flags", densePropagationRecord(limit), 10},
			{"tiny unknown fields", denseUnknownRecord(limit), 3},
		} {
			lim := NewLimits(limit)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			const runs = 5
			for i := 0; i < runs; i++ {
				_, _ = Decode(shape.rec, 0, lim)
			}
			runtime.ReadMemStats(&after)
			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			t.Logf("%s, %d-byte record: %d bytes allocated per decode (%.1f per record byte)",
				shape.name, len(shape.rec), perRun, float64(perRun)/float64(len(shape.rec)))
			if perRun > uint64(shape.bound*len(shape.rec)+64*1024) {
				t.Fatalf("%s, %d-byte record: %d bytes allocated per decode", shape.name, len(shape.rec), perRun)
			}
		}
		if _, err := Decode(denseIDMapRecord(limit), 0, NewLimits(limit)); !isKind(err, KindInvalidValue) {
			t.Fatalf("dense id-map record: %v", err)
		}
	}
}

// densePropagationRecord is a MountPlease with as many one-byte packed
// propagation flags as fit in limit bytes.
func densePropagationRecord(limit int) []byte {
	m := BindMount("/a", "/b")
	m.PropagationFlags = make([]uint64, limit-64)
	rec := encodeUnchecked(MountPleaseMessage(m))
	if len(rec) > limit {
		panic("dense record over the limit")
	}
	return rec
}

// denseUnknownRecord is a Ready followed by three-byte unknown varint
// fields (field 50, value 0) up to limit bytes.
func denseUnknownRecord(limit int) []byte {
	body := []byte{8, 2}
	for len(body)+3 < limit-4 {
		body = protowire.AppendTag(body, 50, protowire.VarintType)
		body = append(body, 0)
	}
	return frame(body)
}

// denseIDMapRecord is a MountPlease whose id mapping has as many empty uid
// lines (2 bytes each) as fit in limit bytes.
func denseIDMapRecord(limit int) []byte {
	m := BindMount("/a", "/b")
	m.IdMapping = &pb.IdMapping{GidMappings: []*pb.IdMap{{Size: 1}}}
	base := EncodedLen(MountPleaseMessage(m), false)
	n := (limit - base - 16) / 2
	m.IdMapping.UidMappings = make([]*pb.IdMap, n)
	for i := range m.IdMapping.UidMappings {
		m.IdMapping.UidMappings[i] = &pb.IdMap{}
	}
	rec := encodeUnchecked(MountPleaseMessage(m))
	if len(rec) > limit {
		panic("dense record over the limit")
	}
	return rec
}

// 12.13: capping the id-mapping lines gives the same verdict as building
// them all, also where an earlier rule fails, a merged second payload
// adds lines, or another payload member resets them.
func TestDecodeIDMapCapKeepsTheVerdict(t *testing.T) {
	lines := func(n int, size uint32) []*pb.IdMap {
		l := make([]*pb.IdMap, n)
		for i := range l {
			l[i] = &pb.IdMap{ContainerId: uint32(i) * 10, HostId: uint32(i) * 10, Size: size}
		}
		return l
	}
	mk := func(uid, gid []*pb.IdMap, src string) []byte {
		m := BindMount(src, "/b")
		m.IdMapping = &pb.IdMapping{UidMappings: uid, GidMappings: gid}
		return encodeUnchecked(MountPleaseMessage(m))
	}
	body := func(rec []byte) []byte { _, n, _ := readVarint(rec); return rec[n:] }
	frameOf := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return frame(b)
	}
	errRec := encodeUnchecked(ErrorMessage("x"))
	cases := []struct {
		name string
		rec  []byte
		want string
	}{
		{"uid over", mk(lines(400, 1), lines(1, 1), "/a"), "mount_please.id_mapping.uid_mappings: more than 340 lines"},
		{"gid over", mk(lines(3, 1), lines(500, 1), "/a"), "mount_please.id_mapping.gid_mappings: more than 340 lines"},
		{"uid bad first", mk(lines(3, 0), lines(500, 1), "/a"), "mount_please.id_mapping.uid_mappings: empty range"},
		{"source first", mk(lines(400, 1), lines(400, 1), "rel"), "mount_please.source: not an absolute path"},
		{"merged", frameOf(body(mk(lines(200, 1), lines(1, 1), "/a")), body(mk(lines(200, 1), nil, "/a"))), "mount_please.id_mapping.uid_mappings: more than 340 lines"},
		{"reset", frameOf(body(mk(lines(341, 1), lines(1, 1), "/a")), body(errRec)[2:], body(mk(lines(3, 1), lines(1, 1), "/a"))), ""},
	}
	for _, tc := range cases {
		_, err := Decode(tc.rec, 0, NewLimits(MaxRecordCeiling))
		var de *DecodeError
		switch {
		case tc.want == "" && err != nil:
			t.Fatalf("%s: %v", tc.name, err)
		case tc.want != "" && (!errors.As(err, &de) || de.Invalid == nil || de.Invalid.Field+": "+de.Invalid.Reason != tc.want):
			t.Fatalf("%s: got %v, want %s", tc.name, err, tc.want)
		}
	}
}

// 12.14: a zero-length record with fds is empty-record (§3's order: the
// empty check first), every fd closed; a receive whose deadline has
// already passed takes a record that is already queued.
func TestRecvCheckOrderAndPastDeadline(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		defer a.Close()
		defer b.Close()
		r, w := pipeFDs(t)
		fds := make([]int, 20)
		for i := range fds {
			fds[i] = r
		}
		rawSendEmpty(t, a, fds...)
		unix.Close(r)
		unix.Close(w)
		if _, _, err := b.Recv(soon()); !isKind(err, KindEmptyRecord) {
			t.Fatalf("zero-length record with 20 fds: %v", err)
		}
		rawSendEmpty(t, a, 1, 2)
		if _, _, err := b.Recv(soon()); !isKind(err, KindEmptyRecord) {
			t.Fatalf("zero-length record with 2 fds: %v", err)
		}
		if err := a.Send(ReadyMessage(), nil); err != nil {
			t.Fatal(err)
		}
		if m, _, err := b.Recv(time.Now().Add(-time.Second)); err != nil || m.GetType() != TypeReady {
			t.Fatalf("queued record with a past deadline: %v %v", m, err)
		}
		if _, _, err := b.Recv(time.Now().Add(-time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) || !isKind(err, KindTimeout) {
			t.Fatalf("nothing queued, past deadline: %v", err)
		}
	})
}

func isKind(err error, k ErrorKind) bool { got, ok := KindOf(err); return ok && got == k }

// 12.15: a handler returning a file it already closed: the child gets an
// Error reply (it got EOF), the parent a *HandlerError (it got an untyped
// error).
func TestHandlerReturningAClosedFile(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		done := make(chan error, 1)
		go func() {
			done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit},
				Mounts: []*pb.Mount{BindMount("/", "/r")}}).Serve(HandlerFuncs{
				MountFunc: func(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
					f, err := os.Open("/")
					if err != nil {
						return nil, 0, err
					}
					f.Close()
					return f, SourcePlainOpen, nil
				},
			})
		}()
		c := NewChild(b, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		_, _, err := c.MountPlease(BindMount("/", "/r"))
		var re *RemoteError
		if !errors.As(err, &re) || !strings.HasPrefix(re.Message, "MountPlease failed in the parent: cannot send MountFd: ") {
			t.Fatalf("child: %v", err)
		}
		var he *HandlerError
		if err := <-done; !errors.As(err, &he) || he.Request != TypeMountPlease || !isKind(err, KindHandlerFailed) {
			t.Fatalf("parent: %v", err)
		}
		c.Close()
	})
}

// 11.4: an id-mapped request answered with a PLAIN_OPEN source (an older
// parent drops the id-mapping fields it does not know) is a typed error of
// the parent's making, and the fd is closed: never a silent downgrade.
func TestChildRefusesADowngradedSource(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		done := make(chan error, 1)
		go func() {
			done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit}, Policy: AllowAll{}}).Serve(HandlerFuncs{
				MountFunc: openPlainForTest,
			})
		}()
		c := NewChild(b, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		m := BindMount("/", "/r")
		m.IdMapping = &pb.IdMapping{UidMappings: []*pb.IdMap{{HostId: 1000, Size: 1}}, GidMappings: []*pb.IdMap{{HostId: 1000, Size: 1}}}
		f, _, err := c.MountPlease(m)
		var me *MismatchError
		if f != nil || !errors.As(err, &me) || me.Kind() != KindSourceDowngraded || me.Origin() != OriginPeer {
			t.Fatalf("got %v, %v", f, err)
		}
		if err := c.Fail("id-mapped source refused"); err != nil {
			t.Fatal(err)
		}
		c.Close()
		var re *RemoteError
		if err := <-done; !errors.As(err, &re) {
			t.Fatalf("parent: %v", err)
		}
	})
}

// encodeUnchecked frames m without validating it or checking a limit.
func encodeUnchecked(m *pb.SyncMessage) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return frame(b)
}

func unsafeData(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }

// rawSendEmpty sends a zero-length record with fds attached (unix.Sendmsg
// would add a byte).
func rawSendEmpty(t *testing.T, s *SyncSocket, fds ...int) {
	t.Helper()
	oob := unix.UnixRights(fds...)
	msg := unix.Msghdr{Control: &oob[0]}
	msg.SetControllen(len(oob))
	if _, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(s.Fd()), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL); e != 0 {
		t.Fatalf("raw sendmsg: %v", e)
	}
}

// openPlainForTest serves req's source as an O_PATH fd of kind PLAIN_OPEN,
// walking the path (test parents only: real ones serve pinned sources).
func openPlainForTest(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	fd, err := unix.Open(req.GetSource(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	return os.NewFile(uintptr(fd), req.GetSource()), SourcePlainOpen, nil
}

// PROTOCOL §8: an O_PATH fd is not-seqpacket (it refuses getsockopt with
// EBADF, like a closed fd), and FromFD leaves every fd it rejects open.
func TestFromFDKinds(t *testing.T) {
	noLeak(t, func() {
		p, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p)
		r, w := pipeFDs(t)
		defer unix.Close(r)
		defer unix.Close(w)
		for _, fd := range []int{p, r} {
			if _, err := FromFD(fd); !isKind(err, KindNotSeqpacket) {
				t.Fatalf("fd %d: %v", fd, err)
			}
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Fatalf("fd %d closed", fd)
			}
		}
		t.Setenv(EnvSyncFD, "99999")
		if _, err := FromEnv(); !isKind(err, KindEnvInvalid) {
			t.Fatalf("unopened fd: %v", err)
		}
		os.Unsetenv(EnvSyncFD)
		if _, err := FromEnv(); !isKind(err, KindEnvNotSet) {
			t.Fatalf("unset: %v", err)
		}
		a, b := pair(t)
		defer b.Close()
		if err := a.ShutdownWrite(); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(ReadyMessage(), nil); !isKind(err, KindWriteShutdown) {
			t.Fatalf("send after shutdown: %v", err)
		}
		a.Close()
	})
}

// PROTOCOL §11: the per-message deadline bounds the parent's own work. A
// handler that returns after its reply was due has its result discarded
// (the fd it made is closed), the child gets an Error reply and Serve a
// *HandlerError of kind handler-overran; the handler was told the due
// time first.
func TestHandlerOverrunningItsDeadline(t *testing.T) {
	noLeak(t, func() {
		a, b := pair(t)
		const timeout = 100 * time.Millisecond
		h := &slowHandler{HandlerFuncs: HandlerFuncs{MountFunc: func(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
			time.Sleep(timeout + 50*time.Millisecond)
			return openPlainForTest(req)
		}}}
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit, Timeout: timeout},
				Mounts: []*pb.Mount{BindMount("/", "/r")}}).Serve(h)
		}()
		c := NewChild(b, Options{Flow: FlowInit, Timeout: 5 * time.Second})
		f, _, err := c.MountPlease(BindMount("/", "/r"))
		var re *RemoteError
		if f != nil || !errors.As(err, &re) || !strings.HasPrefix(re.Message, "MountPlease failed in the parent: the handler overran its deadline by ") {
			t.Fatalf("child: %v %v", f, err)
		}
		var he *HandlerError
		if err := <-done; !errors.As(err, &he) || !isKind(err, KindHandlerOverran) || he.Overran <= 0 {
			t.Fatalf("parent: %v", err)
		}
		if h.due.IsZero() || h.due.Before(start.Add(timeout)) || h.due.After(time.Now()) {
			t.Fatalf("handler told due %v (start %v)", h.due, start)
		}
		c.Close()
	})
}

type slowHandler struct {
	HandlerFuncs
	due time.Time
}

func (h *slowHandler) SetDeadline(due time.Time) { h.due = due }
