package procsync

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

var allKinds = map[ErrorKind]bool{
	KindEmptyRecord: true, KindTruncatedLength: true, KindMalformedLength: true, KindLengthMismatch: true,
	KindTooLarge: true, KindMalformedBody: true, KindUnspecifiedType: true, KindUnknownType: true,
	KindReservedFlags: true, KindMissingFd: true, KindUnexpectedFd: true, KindTooManyFds: true,
	KindMissingPayload: true, KindUnexpectedPayload: true, KindInvalidValue: true,
}

// FuzzDecode feeds arbitrary records to the decoder. Invariants: no panic;
// a rejection is a *DecodeError with a known kind; an accepted message
// re-encodes (with the same fd attachment) to a canonical record that
// decodes to an equal message and re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	vf := loadVectors(f)
	for _, set := range [][]vector{vf.Valid, vf.DecodeOnly, vf.Invalid} {
		for _, v := range set {
			f.Add(v.bytes(f), uint8(v.Fds))
		}
	}
	f.Fuzz(func(t *testing.T, rec []byte, nfds uint8) {
		n := int(nfds % 4)
		lim := DefaultLimits()
		// The fast path agrees with proto.Unmarshal wherever it answers.
		if _, pl, k := readVarint(rec); k == "" && scanMessage(rec[pl:], syncMsgDesc, recursionLimit) == nil {
			want := &pb.SyncMessage{}
			if got, ok := fastDecode(rec[pl:]); ok && unmarshalOpts.Unmarshal(rec[pl:], want) == nil && !proto.Equal(got, want) {
				t.Fatalf("fast path %v, Unmarshal %v", got, want)
			}
		}
		msg, err := Decode(rec, n, lim)
		if err != nil {
			var de *DecodeError
			if !errAs(err, &de) || !allKinds[de.Kind()] || de.Error() == "" {
				t.Fatalf("bad rejection %T %v", err, err)
			}
			return
		}
		if n > 1 {
			t.Fatalf("accepted %d fds", n)
		}
		enc, err := Encode(nil, msg, n == 1, lim)
		if err != nil {
			// Canonical form can be a few bytes longer than the input
			// (a single unpacked repeated value becomes packed).
			if k, _ := KindOf(err); k == KindTooLarge && EncodedLen(msg, n == 1) > lim.MaxRecord() {
				return
			}
			t.Fatalf("decoded %v but cannot re-encode: %v", msg, err)
		}
		back, err := Decode(enc, n, lim)
		if err != nil {
			t.Fatalf("re-encoded record %x rejected: %v", enc, err)
		}
		if !proto.Equal(back, msg) {
			t.Fatalf("round trip changed the message: %v -> %v", msg, back)
		}
		again, err := Encode(nil, back, n == 1, lim)
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("encoding not canonical: %x vs %x (%v)", enc, again, err)
		}
	})
}
