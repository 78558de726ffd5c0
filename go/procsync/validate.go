package procsync

import (
	"strings"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// MaxIDMapLines is the kernel's limit on lines in uid_map/gid_map
// (UID_GID_MAP_MAX_EXTENTS).
const MaxIDMapLines = 340

// PathMax is PATH_MAX: a path (without its NUL) must be shorter than this.
const PathMax = 4096

// Validate checks msg as it would travel with nfds fds in its record and
// returns its type.
//
// Order of checks (the first failure wins, so every implementation reports
// the same kind): type, flags, fd count versus HasFd, payload presence and
// shape, whether the type may carry an fd, then field values.
func Validate(msg *pb.SyncMessage, nfds int) (pb.MessageType, error) {
	if ve := validateWithFlags(msg, msg.GetFlags(), nfds); ve != nil {
		return msg.GetType(), ve
	}
	return msg.GetType(), nil
}

func payloadName(p any) string {
	switch p.(type) {
	case *pb.SyncMessage_Error:
		return "error"
	case *pb.SyncMessage_MountPlease:
		return "mount_please"
	case *pb.SyncMessage_MountFd:
		return "mount_fd"
	case *pb.SyncMessage_Seccomp:
		return "seccomp"
	}
	return ""
}

// validateWithFlags is Validate as if msg's flags were flags (the encoder
// sets HasFd itself). It returns nil or a *ValidationError.
func validateWithFlags(msg *pb.SyncMessage, flags uint32, nfds int) *ValidationError {
	ty := msg.GetType()
	switch {
	case ty == pb.MessageType_MESSAGE_TYPE_UNSPECIFIED:
		return &ValidationError{kind: KindUnspecifiedType, Type: ty}
	case ty < 0 || ty > TypeSeccompDone:
		return &ValidationError{kind: KindUnknownType, Type: ty}
	}
	if flags&^KnownFlags != 0 {
		return &ValidationError{kind: KindReservedFlags, Type: ty, Flags: flags}
	}
	hasFd := flags&FlagHasFd != 0
	if nfds > MaxFdsPerRecord {
		return &ValidationError{kind: KindTooManyFds, Type: ty, Count: nfds}
	}
	if hasFd && nfds == 0 {
		return &ValidationError{kind: KindMissingFd, Type: ty}
	}
	if !hasFd && nfds > 0 {
		return &ValidationError{kind: KindUnexpectedFd, Type: ty, Flags: flags}
	}

	// Payload presence and shape.
	var expected string
	switch ty {
	case TypeError:
		expected = "error"
	case TypeMountPlease:
		expected = "mount_please"
	case TypeMountFd:
		expected = "mount_fd"
	case TypeSeccomp:
		expected = "seccomp"
	}
	got := payloadName(msg.GetPayload())
	switch {
	case got == "" && expected != "":
		return &ValidationError{kind: KindMissingPayload, Type: ty, Payload: expected}
	case got != "" && got != expected:
		return &ValidationError{kind: KindUnexpectedPayload, Type: ty, Payload: got}
	}

	// Which types carry an fd.
	fdRequired := false
	switch p := msg.GetPayload().(type) {
	case *pb.SyncMessage_MountFd:
		fdRequired = true
	case *pb.SyncMessage_Seccomp:
		_, fdRequired = p.Seccomp.GetTransfer().(*pb.SeccompInfo_Attached)
	}
	if fdRequired && !hasFd {
		return &ValidationError{kind: KindMissingFd, Type: ty}
	}
	if !fdRequired && hasFd {
		return &ValidationError{kind: KindUnexpectedFd, Type: ty, Flags: flags}
	}

	invalid := func(field, reason string) *ValidationError {
		return &ValidationError{kind: KindInvalidValue, Type: ty, Field: field, Reason: reason}
	}
	switch p := msg.GetPayload().(type) {
	case *pb.SyncMessage_Error:
		if p.Error.GetMessage() == "" {
			return invalid("error.message", "empty")
		}
	case *pb.SyncMessage_MountPlease:
		if field, reason := ValidateMount(p.MountPlease); field != "" {
			return invalid(field, reason)
		}
	case *pb.SyncMessage_MountFd:
		switch k := p.MountFd.GetKind(); k {
		case SourceOpenTree, SourcePlainOpen:
		case pb.MountSourceKind_MOUNT_SOURCE_KIND_UNSPECIFIED:
			return invalid("mount_fd.kind", "unspecified")
		default:
			return invalid("mount_fd.kind", "unknown kind")
		}
		if r := checkAbsPath(p.MountFd.GetSource()); r != "" {
			return invalid("mount_fd.source", r)
		}
	case *pb.SyncMessage_Seccomp:
		switch t := p.Seccomp.GetTransfer().(type) {
		case nil:
			return invalid("seccomp.transfer", "unset")
		case *pb.SeccompInfo_ChildFd:
			if t.ChildFd < 0 {
				return invalid("seccomp.child_fd", "negative")
			}
		}
	}
	return nil
}

func checkNoNul(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return "contains NUL"
	}
	return ""
}

func checkAbsPath(s string) string {
	switch {
	case s == "":
		return "empty"
	case s[0] != '/':
		return "not an absolute path"
	case len(s) >= PathMax:
		return "longer than PATH_MAX"
	}
	return checkNoNul(s)
}

// ValidateMount checks a MountPlease payload; on failure it returns the
// offending field (a dotted path) and the reason, otherwise two empty
// strings.
func ValidateMount(m *pb.Mount) (field, reason string) {
	if r := checkAbsPath(m.GetSource()); r != "" {
		return "mount_please.source", r
	}
	if r := checkAbsPath(m.GetDestination()); r != "" {
		return "mount_please.destination", r
	}
	if r := checkNoNul(m.GetDevice()); r != "" {
		return "mount_please.device", r
	}
	if r := checkNoNul(m.GetData()); r != "" {
		return "mount_please.data", r
	}
	if r := checkNoNul(m.GetRelabel()); r != "" {
		return "mount_please.relabel", r
	}
	if idm := m.GetIdMapping(); idm != nil {
		return validateIDMapping(idm)
	}
	return "", ""
}

func validateIDMapping(idm *pb.IdMapping) (field, reason string) {
	uid, gid := idm.GetUidMappings(), idm.GetGidMappings()
	if idm.GetUsernsPath() != "" {
		if len(uid) > 0 || len(gid) > 0 {
			return "mount_please.id_mapping", "both userns_path and id ranges set"
		}
		if r := checkAbsPath(idm.GetUsernsPath()); r != "" {
			return "mount_please.id_mapping.userns_path", r
		}
		return "", ""
	}
	if len(uid) == 0 {
		return "mount_please.id_mapping.uid_mappings", "empty"
	}
	if len(gid) == 0 {
		return "mount_please.id_mapping.gid_mappings", "empty"
	}
	if r := checkRanges(uid); r != "" {
		return "mount_please.id_mapping.uid_mappings", r
	}
	if r := checkRanges(gid); r != "" {
		return "mount_please.id_mapping.gid_mappings", r
	}
	return "", ""
}

// checkRanges checks one side's id-map lines the way the kernel does: at
// most 340 lines, no empty range, no range past 2^32, no overlap on either
// side.
func checkRanges(maps []*pb.IdMap) string {
	if len(maps) > MaxIDMapLines {
		return "more than 340 lines"
	}
	for _, m := range maps {
		if m.GetSize() == 0 {
			return "empty range"
		}
		if uint64(m.GetContainerId())+uint64(m.GetSize()) > 1<<32 ||
			uint64(m.GetHostId())+uint64(m.GetSize()) > 1<<32 {
			return "range overflows u32"
		}
	}
	overlaps := func(a, b, n, m uint32) bool {
		return uint64(a) < uint64(b)+uint64(m) && uint64(b) < uint64(a)+uint64(n)
	}
	for i, x := range maps {
		for _, y := range maps[i+1:] {
			if overlaps(x.GetContainerId(), y.GetContainerId(), x.GetSize(), y.GetSize()) {
				return "overlapping container ranges"
			}
			if overlaps(x.GetHostId(), y.GetHostId(), x.GetSize(), y.GetSize()) {
				return "overlapping host ranges"
			}
		}
	}
	return ""
}
