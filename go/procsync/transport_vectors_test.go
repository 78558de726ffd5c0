//go:build linux

package procsync

// The transport vectors (tests/vectors/transport.json, PROTOCOL §13): each
// record is sent over a real socketpair, with its fds, the sender's
// credentials and the receiver's socket options, and received with Recv.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

type transportVectors struct {
	Format           string `json:"format"`
	DefaultMaxRecord int    `json:"default_max_record"`
	ControlBuffer    struct {
		Fds int `json:"fds"`
	} `json:"control_buffer"`
	Vectors []transportVector `json:"vectors"`
}

type transportVector struct {
	Name         string `json:"name"`
	Record       string `json:"record"`
	RecordRepeat *struct {
		Hex   string `json:"hex"`
		Count int    `json:"count"`
	} `json:"record_repeat"`
	Fds               int      `json:"fds"`
	SenderCredentials bool     `json:"sender_credentials"`
	ReceiverOptions   []string `json:"receiver_options"`
	MaxRecord         int      `json:"max_record"`
	Expect            struct {
		Message json.RawMessage `json:"message"`
		Error   *struct {
			Kind   string `json:"kind"`
			Origin string `json:"origin"`
		} `json:"error"`
	} `json:"expect"`
	FdsKept int `json:"fds_kept"`
}

func (v *transportVector) record(t *testing.T) []byte {
	t.Helper()
	h := v.Record
	n := 1
	if v.RecordRepeat != nil {
		h, n = v.RecordRepeat.Hex, v.RecordRepeat.Count
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatalf("%s: %v", v.Name, err)
	}
	return []byte(strings.Repeat(string(b), n))
}

var socketOptions = map[string]int{
	"SO_PASSCRED":  unix.SO_PASSCRED,
	"SO_PASSPIDFD": unix.SO_PASSPIDFD,
	"SO_PASSSEC":   unix.SO_PASSSEC,
	"SO_TIMESTAMP": unix.SO_TIMESTAMP,
}

// sendRaw sends rec (possibly empty) in one sendmsg(2) with the control
// messages in oob.
func sendRaw(t *testing.T, fd int, rec, oob []byte) {
	t.Helper()
	var msg unix.Msghdr
	var iov unix.Iovec
	if len(rec) > 0 {
		iov.Base = &rec[0]
		iov.SetLen(len(rec))
		msg.Iov, msg.Iovlen = &iov, 1
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	if _, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_NOSIGNAL); e != 0 {
		t.Fatalf("sendmsg: %v", e)
	}
}

// originOf is the origin of the first error in err's chain that has one.
func originOf(err error) string {
	var o interface{ Origin() Origin }
	if errors.As(err, &o) {
		return o.Origin().String()
	}
	return "none"
}

func TestTransportVectors(t *testing.T) {
	raw, err := os.ReadFile("../../tests/vectors/transport.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf transportVectors
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	if vf.DefaultMaxRecord != DefaultMaxRecord || vf.ControlBuffer.Fds != MaxFdsPerRecord+SpareFds {
		t.Fatalf("vectors for max record %d and %d fds of control buffer; Go has %d and %d",
			vf.DefaultMaxRecord, vf.ControlBuffer.Fds, DefaultMaxRecord, MaxFdsPerRecord+SpareFds)
	}
	if len(vf.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	devNull, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	ran := 0
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			fdMu.Lock()
			defer fdMu.Unlock()
			a, b := pair(t)
			defer a.Close()
			defer b.Close()
			timestamps := false
			for _, o := range v.ReceiverOptions {
				opt, ok := socketOptions[o]
				if !ok {
					t.Fatalf("unknown option %s", o)
				}
				if err := unix.SetsockoptInt(b.Fd(), unix.SOL_SOCKET, opt, 1); err != nil {
					if o == "SO_PASSPIDFD" && err == unix.ENOPROTOOPT {
						t.Skipf("kernel without SO_PASSPIDFD (Linux < 6.5): %v", err)
					}
					t.Fatalf("setsockopt %s: %v", o, err)
				}
				timestamps = timestamps || o == "SO_TIMESTAMP"
			}
			if v.MaxRecord != 0 {
				b.SetLimits(NewLimits(v.MaxRecord))
			}
			var oob []byte
			if v.SenderCredentials {
				oob = append(oob, unix.UnixCredentials(&unix.Ucred{
					Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})...)
			}
			if v.Fds > 0 {
				fds := make([]int, v.Fds)
				for i := range fds {
					fds[i] = int(devNull.Fd())
				}
				oob = append(oob, unix.UnixRights(fds...)...)
			}
			before := countFDs(t)
			sendRaw(t, a.Fd(), v.record(t), oob)
			msg, f, err := b.Recv(soon())
			kept := countFDs(t) - before
			if kept != v.FdsKept || (f != nil) != (v.FdsKept == 1) {
				t.Fatalf("%d fds kept (file %v), want %d; err %v", kept, f, v.FdsKept, err)
			}
			closeFile(f)
			switch {
			case v.Expect.Error != nil:
				k, _ := KindOf(err)
				if err == nil || string(k) != v.Expect.Error.Kind || originOf(err) != v.Expect.Error.Origin {
					t.Fatalf("got %v (kind %q, origin %s), want %s/%s", err, k, originOf(err),
						v.Expect.Error.Kind, v.Expect.Error.Origin)
				}
			default:
				if err != nil {
					t.Fatalf("got %v", err)
				}
				want := &pb.SyncMessage{}
				if err := protojson.Unmarshal(v.Expect.Message, want); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(msg, want) {
					t.Fatalf("got %v, want %v", msg, want)
				}
			}
			if n := countFDs(t); n != before {
				t.Fatalf("%d fds open after releasing, %d before", n, before)
			}
			// The socket still carries the next record intact.
			if v.Expect.Error == nil || v.Expect.Error.Kind != "peer-closed" {
				sendRaw(t, a.Fd(), []byte{2, 8, 2}, nil)
				m, _, err := b.Recv(soon())
				if timestamps {
					if !isKind(err, KindUnexpectedControl) {
						t.Fatalf("next record: %v", err)
					}
				} else if err != nil || m.GetType() != TypeReady {
					t.Fatalf("next record: %v %v", m, err)
				}
			}
			ran++
		})
	}
	t.Logf("%d of %d vectors ran", ran, len(vf.Vectors))
}
