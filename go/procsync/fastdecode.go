package procsync

import (
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// The decoder's fast path. The Go protobuf runtime allocates each message,
// each oneof wrapper and each string on its own (five allocations for a
// MountPlease, four for a MountFd). Records in the canonical form every
// encoder writes — known fields only, each at most once, in field-number
// order, no sub-message but the payload (and the seccomp transfer) — are
// decoded here instead into one block holding the message, its wrapper and
// its payload, with every string in one shared buffer: two allocations.
// Anything else (unknown fields, repeats that merge, id mappings, rec_attr,
// propagation flags) falls back to proto.Unmarshal, and the results are the
// same (TestFastDecodeEqualsUnmarshal, FuzzDecode).

type mountPleaseBlock struct {
	msg pb.SyncMessage
	p   pb.SyncMessage_MountPlease
	m   pb.Mount
}

type mountFdBlock struct {
	msg pb.SyncMessage
	p   pb.SyncMessage_MountFd
	m   pb.MountFdInfo
}

type errorBlock struct {
	msg pb.SyncMessage
	p   pb.SyncMessage_Error
	m   pb.ErrorInfo
}

type seccompBlock struct {
	msg pb.SyncMessage
	p   pb.SyncMessage_Seccomp
	m   pb.SeccompInfo
	fd  pb.SeccompInfo_ChildFd
	at  pb.SeccompInfo_Attached
	fa  pb.FdAttached
}

// fastField is one field of a canonical record: its number and either its
// varint value or its bytes.
type fastField struct {
	num protowire.Number
	v   uint64
	b   []byte
}

// fastFields reads up to len(out) fields of b in strictly increasing
// field-number order: only the fields whose bit is set in known, each
// length-delimited when its bit is set in bytesFields and a varint
// otherwise. It fails (ok false) on anything else. b has passed
// scanMessage.
func fastFields(b []byte, bytesFields uint16, known uint16, out []fastField) (int, bool) {
	n := 0
	last := protowire.Number(0)
	for len(b) > 0 {
		num, wt, tl := protowire.ConsumeTag(b)
		if tl < 0 || num <= last || num > 15 || known&(1<<num) == 0 || n == len(out) {
			return 0, false
		}
		b = b[tl:]
		last = num
		if bytesFields&(1<<num) != 0 {
			if wt != protowire.BytesType {
				return 0, false
			}
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return 0, false
			}
			out[n] = fastField{num: num, b: v}
			b = b[l:]
		} else {
			if wt != protowire.VarintType {
				return 0, false
			}
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return 0, false
			}
			out[n] = fastField{num: num, v: v}
			b = b[l:]
		}
		n++
	}
	return n, true
}

// stringsOf copies the bytes of fs into one buffer, for takeString to
// hand out as strings in the same order (all sharing the buffer).
func stringsOf(fs []fastField) []byte {
	total := 0
	for _, f := range fs {
		total += len(f.b)
	}
	if total == 0 {
		return nil
	}
	buf := make([]byte, 0, total)
	for _, f := range fs {
		buf = append(buf, f.b...)
	}
	return buf
}

// takeString returns the next len(b) bytes of *buf as a string.
func takeString(buf *[]byte, b []byte) string {
	if len(b) == 0 {
		return ""
	}
	s := unsafe.String(&(*buf)[0], len(b))
	*buf = (*buf)[len(b):]
	return s
}

// fastDecode decodes a canonical body, or reports false.
func fastDecode(body []byte) (*pb.SyncMessage, bool) {
	var top [3]fastField
	// type (1) and flags (2) are varints; the payloads 10-13 messages.
	n, ok := fastFields(body, 1<<10|1<<11|1<<12|1<<13, 1<<1|1<<2|1<<10|1<<11|1<<12|1<<13, top[:])
	if !ok {
		return nil, false
	}
	var ty pb.MessageType
	var flags uint32
	var payload *fastField
	for i := range top[:n] {
		f := &top[i]
		switch f.num {
		case 1:
			if f.v > 0x7fffffff {
				return nil, false
			}
			ty = pb.MessageType(f.v)
		case 2:
			if f.v > 0xffffffff {
				return nil, false
			}
			flags = uint32(f.v)
		default:
			payload = f
		}
	}
	if payload == nil {
		m := &pb.SyncMessage{Type: ty, Flags: flags}
		return m, true
	}
	switch payload.num {
	case 10: // ErrorInfo: message (1)
		var fs [1]fastField
		k, ok := fastFields(payload.b, 1<<1, 1<<1, fs[:])
		if !ok {
			return nil, false
		}
		blk := &errorBlock{}
		buf := stringsOf(fs[:k])
		if k == 1 {
			blk.m.Message = takeString(&buf, fs[0].b)
		}
		blk.p.Error = &blk.m
		blk.msg.Type, blk.msg.Flags, blk.msg.Payload = ty, flags, &blk.p
		return &blk.msg, true
	case 11: // Mount: strings 1, 2, 3, 7, 11; varints 4, 5, 10
		var fs [8]fastField
		k, ok := fastFields(payload.b, 1<<1|1<<2|1<<3|1<<7|1<<11, 1<<1|1<<2|1<<3|1<<4|1<<5|1<<7|1<<10|1<<11, fs[:])
		if !ok {
			return nil, false
		}
		blk := &mountPleaseBlock{}
		var strs [5]fastField
		ns := 0
		for _, f := range fs[:k] {
			if f.num == 1 || f.num == 2 || f.num == 3 || f.num == 7 || f.num == 11 {
				strs[ns] = f
				ns++
			}
		}
		buf := stringsOf(strs[:ns])
		m := &blk.m
		for _, f := range fs[:k] {
			switch f.num {
			case 1:
				m.Source = takeString(&buf, f.b)
			case 2:
				m.Destination = takeString(&buf, f.b)
			case 3:
				m.Device = takeString(&buf, f.b)
			case 4:
				m.Flags = f.v
			case 5:
				m.ClearedFlags = f.v
			case 7:
				m.Data = takeString(&buf, f.b)
			case 10:
				if f.v > 0xffffffff {
					return nil, false
				}
				m.Extensions = uint32(f.v)
			case 11:
				m.Relabel = takeString(&buf, f.b)
			}
		}
		blk.p.MountPlease = m
		blk.msg.Type, blk.msg.Flags, blk.msg.Payload = ty, flags, &blk.p
		return &blk.msg, true
	case 12: // MountFdInfo: kind (1), source (2)
		var fs [2]fastField
		k, ok := fastFields(payload.b, 1<<2, 1<<1|1<<2, fs[:])
		if !ok {
			return nil, false
		}
		blk := &mountFdBlock{}
		var strs [1]fastField
		ns := 0
		for _, f := range fs[:k] {
			if f.num == 2 {
				strs[0] = f
				ns = 1
			}
		}
		buf := stringsOf(strs[:ns])
		for _, f := range fs[:k] {
			switch f.num {
			case 1:
				if f.v > 0x7fffffff {
					return nil, false
				}
				blk.m.Kind = pb.MountSourceKind(f.v)
			case 2:
				blk.m.Source = takeString(&buf, f.b)
			}
		}
		blk.p.MountFd = &blk.m
		blk.msg.Type, blk.msg.Flags, blk.msg.Payload = ty, flags, &blk.p
		return &blk.msg, true
	case 13: // SeccompInfo: attached (1, empty message) or child_fd (2)
		var fs [1]fastField
		k, ok := fastFields(payload.b, 1<<1, 1<<1|1<<2, fs[:])
		if !ok {
			return nil, false
		}
		blk := &seccompBlock{}
		if k == 1 {
			switch fs[0].num {
			case 1:
				if len(fs[0].b) != 0 {
					return nil, false
				}
				blk.at.Attached = &blk.fa
				blk.m.Transfer = &blk.at
			case 2:
				// int32 on the wire: a negative value is sign-extended
				// to 64 bits; truncation gives protobuf's result.
				blk.fd.ChildFd = int32(fs[0].v)
				blk.m.Transfer = &blk.fd
			}
		}
		blk.p.Seccomp = &blk.m
		blk.msg.Type, blk.msg.Flags, blk.msg.Payload = ty, flags, &blk.p
		return &blk.msg, true
	}
	return nil, false
}
