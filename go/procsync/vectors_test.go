package procsync

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The golden vectors are the contract every implementation of the native
// wire is held to; the Rust crate reads the very same file.
const vectorsPath = "../../tests/vectors/native.json"

type vector struct {
	Name      string          `json:"name"`
	Record    string          `json:"record"`
	Fds       int             `json:"fds"`
	Message   json.RawMessage `json:"message"`
	Error     string          `json:"error"`
	MaxRecord int             `json:"max_record"`
	Note      string          `json:"note"`
}

type vectorFile struct {
	Format           string   `json:"format"`
	DefaultMaxRecord int      `json:"default_max_record"`
	Valid            []vector `json:"valid"`
	DecodeOnly       []vector `json:"decode_only"`
	Invalid          []vector `json:"invalid"`
}

func loadVectors(tb testing.TB) *vectorFile {
	tb.Helper()
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		tb.Fatalf("read vectors: %v", err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		tb.Fatalf("parse vectors: %v", err)
	}
	if len(vf.Valid) == 0 || len(vf.Invalid) == 0 {
		tb.Fatalf("vector file has no vectors")
	}
	return &vf
}

func (v vector) bytes(tb testing.TB) []byte {
	tb.Helper()
	b, err := hex.DecodeString(v.Record)
	if err != nil {
		tb.Fatalf("%s: bad hex: %v", v.Name, err)
	}
	return b
}

func (v vector) message(tb testing.TB) *pb.SyncMessage {
	tb.Helper()
	m := &pb.SyncMessage{}
	if err := protojson.Unmarshal(v.Message, m); err != nil {
		tb.Fatalf("%s: proto3 JSON: %v", v.Name, err)
	}
	return m
}

func TestVectorsDefaultLimit(t *testing.T) {
	vf := loadVectors(t)
	if vf.DefaultMaxRecord != DefaultMaxRecord || DefaultLimits().MaxRecord() != DefaultMaxRecord {
		t.Fatalf("default max record: vectors %d, Go %d", vf.DefaultMaxRecord, DefaultMaxRecord)
	}
}

func TestVectorsValid(t *testing.T) {
	vf := loadVectors(t)
	for _, v := range vf.Valid {
		t.Run(v.Name, func(t *testing.T) {
			rec, want := v.bytes(t), v.message(t)
			got, err := Decode(rec, v.Fds, DefaultLimits())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decode: got %v, want %v", got, want)
			}
			enc, err := Encode(nil, want, v.Fds == 1, DefaultLimits())
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.Equal(enc, rec) {
				t.Fatalf("encode:\n got %x\nwant %x", enc, rec)
			}
			if n := EncodedLen(want, v.Fds == 1); n != len(rec) {
				t.Fatalf("EncodedLen %d, record %d", n, len(rec))
			}
			// Appending keeps what was there: one buffer, one record.
			prefix := []byte{0xaa, 0xbb}
			enc2, err := Encode(prefix, want, v.Fds == 1, DefaultLimits())
			if err != nil || !bytes.Equal(enc2[:2], prefix) || !bytes.Equal(enc2[2:], rec) {
				t.Fatalf("append encode: %x, %v", enc2, err)
			}
		})
	}
}

func TestVectorsDecodeOnly(t *testing.T) {
	vf := loadVectors(t)
	if len(vf.DecodeOnly) == 0 {
		t.Fatal("no decode_only vectors")
	}
	for _, v := range vf.DecodeOnly {
		t.Run(v.Name, func(t *testing.T) {
			got, err := Decode(v.bytes(t), v.Fds, DefaultLimits())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if want := v.message(t); !proto.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if len(got.ProtoReflect().GetUnknown()) != 0 {
				t.Fatalf("unknown fields kept: %x", got.ProtoReflect().GetUnknown())
			}
		})
	}
}

func TestVectorsInvalid(t *testing.T) {
	vf := loadVectors(t)
	for _, v := range vf.Invalid {
		t.Run(v.Name, func(t *testing.T) {
			lim := DefaultLimits()
			if v.MaxRecord != 0 {
				lim = NewLimits(v.MaxRecord)
			}
			msg, err := Decode(v.bytes(t), v.Fds, lim)
			if err == nil {
				t.Fatalf("decoded %v, want error %s", msg, v.Error)
			}
			var de *DecodeError
			if !errAs(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			if got := string(de.Kind()); got != v.Error {
				t.Fatalf("kind %q (%v), want %q", got, err, v.Error)
			}
			if k, ok := KindOf(err); !ok || string(k) != v.Error {
				t.Fatalf("KindOf: %q %v", k, ok)
			}
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
		})
	}
}
