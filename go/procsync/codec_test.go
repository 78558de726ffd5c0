package procsync

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frame prefixes body with its varint length, bypassing validation.
func frame(body []byte) []byte {
	return append(protowire.AppendVarint(nil, uint64(len(body))), body...)
}

func wantKind(t *testing.T, err error, kind ErrorKind) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", kind)
	}
	if k, ok := KindOf(err); !ok || k != kind {
		t.Fatalf("error %v has kind %q, want %q", err, k, kind)
	}
}

func TestEncodeSetsHasFdFromAttachment(t *testing.T) {
	// A caller cannot announce an fd it does not send, nor hide one.
	m := ReadyMessage()
	m.Flags = FlagHasFd
	got, err := Encode(nil, m, false, DefaultLimits())
	if err != nil || !bytes.Equal(got, []byte{0x02, 0x08, 0x02}) {
		t.Fatalf("got %x, %v", got, err)
	}
	if m.Flags != FlagHasFd {
		t.Fatal("Encode modified the caller's message")
	}
	_, err = Encode(nil, ReadyMessage(), true, DefaultLimits())
	wantKind(t, err, KindUnexpectedFd)
	_, err = Encode(nil, MountFdMessage(SourcePlainOpen, "/a"), false, DefaultLimits())
	wantKind(t, err, KindMissingFd)
	enc, err := Encode(nil, MountFdMessage(SourcePlainOpen, "/srv/a"), true, DefaultLimits())
	if err != nil || hex.EncodeToString(enc) != "1008071001620a080212062f7372762f61" {
		t.Fatalf("got %x, %v", enc, err)
	}
}

func TestEncodeRejectsInvalidWithoutWriting(t *testing.T) {
	cases := []struct {
		msg  *pb.SyncMessage
		kind ErrorKind
	}{
		{&pb.SyncMessage{}, KindUnspecifiedType},
		{nil, KindUnspecifiedType},
		{&pb.SyncMessage{Type: 42}, KindUnknownType},
		{&pb.SyncMessage{Type: TypeReady, Flags: 4}, KindReservedFlags},
		{NewMessage(TypeMountPlease), KindMissingPayload},
		{&pb.SyncMessage{Type: TypeRun, Payload: ErrorMessage("x").Payload}, KindUnexpectedPayload},
		{ErrorMessage(""), KindInvalidValue},
		{ErrorMessage("bad \xff utf-8"), KindInvalidValue},
		{MountPleaseMessage(BindMount("rel", "/d")), KindInvalidValue},
		{SeccompChildFDMessage(-1), KindInvalidValue},
		{&pb.SyncMessage{Type: TypeSeccomp, Payload: &pb.SyncMessage_Seccomp{}}, KindInvalidValue},
	}
	for _, c := range cases {
		dst := []byte{1, 2, 3}
		out, err := Encode(dst, c.msg, false, DefaultLimits())
		wantKind(t, err, c.kind)
		var ee *EncodeError
		if !errAs(err, &ee) {
			t.Fatalf("%T is not an *EncodeError", err)
		}
		if !bytes.Equal(out, []byte{1, 2, 3}) {
			t.Fatalf("%s: dst changed to %x", c.kind, out)
		}
	}
}

func TestEncodeTooLarge(t *testing.T) {
	msg := ErrorMessage(strings.Repeat("x", 100))
	n := EncodedLen(msg, false)
	if _, err := Encode(nil, msg, false, NewLimits(n)); err != nil {
		t.Fatalf("record of exactly the limit: %v", err)
	}
	_, err := Encode(nil, msg, false, NewLimits(n-1))
	wantKind(t, err, KindTooLarge)
	if _, err := Decode(frame(mustHex(t, "0801")), 0, DefaultLimits()); err == nil {
		// (sanity: helper frames bodies)
		t.Fatal("Error without payload decoded")
	}
}

func TestLimitsClamp(t *testing.T) {
	if NewLimits(1).MaxRecord() != 16 || NewLimits(1<<30).MaxRecord() != MaxRecordCeiling ||
		NewLimits(1000).MaxRecord() != 1000 || (Limits{}).MaxRecord() != DefaultMaxRecord {
		t.Fatal("limits not clamped like the reference")
	}
}

// The Go protobuf runtime is laxer than the reference decoder in ways that
// would change the error kind; the pre-scan restores the reference's
// behaviour.
func TestDecodeStrictLikeReference(t *testing.T) {
	groups := func(depth int) []byte {
		b := []byte{0x08, 0x02} // Ready
		for i := 0; i < depth; i++ {
			b = protowire.AppendTag(b, 50, protowire.StartGroupType)
		}
		for i := 0; i < depth; i++ {
			b = protowire.AppendTag(b, 50, protowire.EndGroupType)
		}
		return frame(b)
	}
	cases := []struct {
		name string
		rec  []byte
		kind ErrorKind // "" means valid
	}{
		{"type as length-delimited", frame(mustHex(t, "0a00")), KindMalformedBody},
		{"flags as fixed32", frame(mustHex(t, "0802"+"1501000000")), KindMalformedBody},
		{"mount_please as varint", frame(mustHex(t, "0806"+"5801")), KindMalformedBody},
		{"nested wrong wire type", frame(mustHex(t, "08065a02"+"0d00")), KindMalformedBody},
		{"error message not UTF-8", frame(mustHex(t, "08015203"+"0a01ff")), KindMalformedBody},
		{"field number zero", frame(mustHex(t, "0802"+"0001")), KindMalformedBody},
		{"wire type 6", frame(mustHex(t, "0802"+"0e")), KindMalformedBody},
		{"lone end group", frame(mustHex(t, "0802"+"9403")), KindMalformedBody},
		{"mismatched end group", frame(mustHex(t, "0802"+"9303"+"9c03")), KindMalformedBody},
		{"key above 32 bits", frame(mustHex(t, "0802"+"8080808010"+"00")), KindMalformedBody},
		{"unknown group", groups(1), ""},
		{"100 nested unknown groups", groups(100), ""},
		{"101 nested unknown groups", groups(101), KindMalformedBody},
		{"unpacked propagation flags", frame(mustHex(t, "0806"+"5a17"+"0a022f73"+"12022f64"+"1a0462696e64"+"208020"+"3002"+"3004"+"3a00")), ""},
		{"packed varint truncated", frame(mustHex(t, "08065a0b0a022f7312022f64320180")), KindMalformedBody},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := Decode(c.rec, 0, DefaultLimits())
			if c.kind == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if len(msg.ProtoReflect().GetUnknown()) != 0 {
					t.Fatal("unknown fields kept")
				}
				return
			}
			wantKind(t, err, c.kind)
		})
	}
}

func TestUnknownFieldsNeverReencoded(t *testing.T) {
	// Mount with an unknown field 40 inside: decodes, and re-encodes
	// without it (as the reference does, which drops unknown fields).
	rec := frame(mustHex(t, "08065a14"+"0a022f73"+"12022f64"+"1a0462696e64"+"208020"+"c00201"))
	msg, err := Decode(rec, 0, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	enc, err := Encode(nil, msg, false, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := frame(mustHex(t, "08065a11"+"0a022f73"+"12022f64"+"1a0462696e64"+"208020"))
	if !bytes.Equal(enc, want) {
		t.Fatalf("got %x want %x", enc, want)
	}
	// A caller-built message carrying unknown fields is not altered but
	// is sent without them.
	m := MountPleaseMessage(BindMount("/s", "/d"))
	m.GetMountPlease().ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 40, protowire.VarintType), 1))
	enc, err = Encode(nil, m, false, DefaultLimits())
	if err != nil || !bytes.Equal(enc, want) {
		t.Fatalf("got %x, %v", enc, err)
	}
	if len(m.GetMountPlease().ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("Encode modified the caller's message")
	}
}

func TestValidateOrder(t *testing.T) {
	// Several faults at once: the first check in the documented order wins.
	m := &pb.SyncMessage{Type: TypeReady, Flags: 2 | FlagHasFd, Payload: ErrorMessage("").Payload}
	if _, err := Validate(m, 3); err == nil {
		t.Fatal("accepted")
	} else {
		wantKind(t, err, KindReservedFlags)
	}
	m.Flags = FlagHasFd
	_, err := Validate(m, 3)
	wantKind(t, err, KindTooManyFds)
	_, err = Validate(m, 1)
	wantKind(t, err, KindUnexpectedPayload)
	m.Payload = nil
	_, err = Validate(m, 1)
	wantKind(t, err, KindUnexpectedFd)
	if ty, err := Validate(ReadyMessage(), 0); err != nil || ty != TypeReady {
		t.Fatal(ty, err)
	}
}

func TestRoundTripHelpers(t *testing.T) {
	for _, m := range []*pb.SyncMessage{
		ReadyMessage(), RunMessage(), HooksMessage(), HooksDoneMessage(), SeccompDoneMessage(),
		ErrorMessage("boom"), MountPleaseMessage(BindMount("/a", "/b")), SeccompChildFDMessage(5),
	} {
		enc, err := Encode(nil, m, false, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", TypeName(m.GetType()), err)
		}
		back, err := Decode(enc, 0, DefaultLimits())
		if err != nil || !proto.Equal(back, m) {
			t.Fatalf("%s: %v %v", TypeName(m.GetType()), back, err)
		}
	}
	for _, m := range []*pb.SyncMessage{MountFdMessage(SourceOpenTree, "/x"), SeccompAttachedMessage()} {
		enc, err := Encode(nil, m, true, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(enc, 1, DefaultLimits())
		if err != nil || back.GetFlags() != FlagHasFd || back.GetType() != m.GetType() {
			t.Fatalf("%v %v", back, err)
		}
	}
}

func TestUnknownFieldsStrippedAtEveryDepth(t *testing.T) {
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 15, protowire.VarintType), 7)
	build := func() []*pb.SyncMessage {
		idm := &pb.IdMapping{UidMappings: []*pb.IdMap{{Size: 1}}, GidMappings: []*pb.IdMap{{Size: 1}}}
		m := BindMount("/s", "/d")
		m.IdMapping = idm
		m.RecAttr = &pb.MountAttr{AttrSet: 1}
		return []*pb.SyncMessage{
			MountPleaseMessage(m), ErrorMessage("e"), SeccompAttachedMessage(), MountFdMessage(SourceOpenTree, "/s"),
		}
	}
	clean := build()
	dirty := build()
	setters := []func(){
		func() {
			dirty[0].GetMountPlease().GetIdMapping().GetGidMappings()[0].ProtoReflect().SetUnknown(unknown)
		},
		func() { dirty[0].GetMountPlease().GetRecAttr().ProtoReflect().SetUnknown(unknown) },
		func() { dirty[1].GetError().ProtoReflect().SetUnknown(unknown) },
		func() { dirty[2].GetSeccomp().GetAttached().ProtoReflect().SetUnknown(unknown) },
		func() { dirty[3].GetMountFd().ProtoReflect().SetUnknown(unknown) },
	}
	for _, set := range setters {
		set()
	}
	for i := range clean {
		fd := i >= 2
		want, err := Encode(nil, clean[i], fd, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		got, err := Encode(nil, dirty[i], fd, DefaultLimits())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d: %x vs %x (%v)", i, got, want, err)
		}
		if EncodedLen(dirty[i], fd) != len(want) {
			t.Fatalf("%d: EncodedLen counts unknown fields", i)
		}
	}
}

// The decoder's fast path gives exactly what proto.Unmarshal gives, on
// every vector and on canonical encodings of varied messages; it handles
// the canonical ones and leaves the others to Unmarshal.
func TestFastDecodeEqualsUnmarshal(t *testing.T) {
	vf := loadVectors(t)
	var bodies [][]byte
	for _, set := range [][]vector{vf.Valid, vf.DecodeOnly, vf.Invalid} {
		for _, v := range set {
			rec := v.bytes(t)
			if _, n, k := readVarint(rec); k == "" {
				bodies = append(bodies, rec[n:])
			}
		}
	}
	m := BindMount("/a", "/b")
	m.Device, m.Data, m.Relabel, m.Extensions, m.ClearedFlags = "dev", "mode=0755", "z", 3, 1<<40
	for _, msg := range []*pb.SyncMessage{
		MountPleaseMessage(m), MountFdMessage(SourceOpenTree, "/x"), ErrorMessage("é"),
		SeccompChildFDMessage(5), SeccompChildFDMessage(-1), SeccompAttachedMessage(), ReadyMessage(),
		{Type: TypeRun, Flags: 1 << 31}, {},
	} {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fastDecode(b); !ok {
			t.Fatalf("canonical %v not on the fast path", msg)
		}
		bodies = append(bodies, b)
	}
	fast := 0
	for _, b := range bodies {
		if scanMessage(b, syncMsgDesc, recursionLimit) != nil {
			continue
		}
		want := &pb.SyncMessage{}
		if err := unmarshalOpts.Unmarshal(b, want); err != nil {
			continue
		}
		got, ok := fastDecode(b)
		if !ok {
			continue
		}
		fast++
		if !proto.Equal(got, want) {
			t.Fatalf("body %x: fast %v, Unmarshal %v", b, got, want)
		}
	}
	t.Logf("%d of %d bodies on the fast path", fast, len(bodies))
}
