package procsync

import (
	"fmt"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// FlagHasFd is flags bit 0: exactly one fd travels as SCM_RIGHTS in the
// same record. The encoder sets it itself from whether an fd is attached.
const FlagHasFd uint32 = 1

// KnownFlags is every flag bit this version knows; any other bit is rejected.
const KnownFlags = FlagHasFd

// mount(2) flag values used in [pb.Mount] Flags (Linux ABI, all arches).
const (
	MsRdonly     uint64 = 0x1
	MsNosuid     uint64 = 0x2
	MsNodev      uint64 = 0x4
	MsNoexec     uint64 = 0x8
	MsBind       uint64 = 0x1000
	MsRec        uint64 = 0x4000
	MsUnbindable uint64 = 1 << 17
	MsPrivate    uint64 = 1 << 18
	MsSlave      uint64 = 1 << 19
	MsShared     uint64 = 1 << 20
)

// Short aliases of the message types.
const (
	TypeError       = pb.MessageType_MESSAGE_TYPE_ERROR
	TypeReady       = pb.MessageType_MESSAGE_TYPE_READY
	TypeRun         = pb.MessageType_MESSAGE_TYPE_RUN
	TypeHooks       = pb.MessageType_MESSAGE_TYPE_HOOKS
	TypeHooksDone   = pb.MessageType_MESSAGE_TYPE_HOOKS_DONE
	TypeMountPlease = pb.MessageType_MESSAGE_TYPE_MOUNT_PLEASE
	TypeMountFd     = pb.MessageType_MESSAGE_TYPE_MOUNT_FD
	TypeSeccomp     = pb.MessageType_MESSAGE_TYPE_SECCOMP
	TypeSeccompDone = pb.MessageType_MESSAGE_TYPE_SECCOMP_DONE
)

// Short aliases of the mount source kinds.
const (
	SourceOpenTree  = pb.MountSourceKind_MOUNT_SOURCE_KIND_OPEN_TREE
	SourcePlainOpen = pb.MountSourceKind_MOUNT_SOURCE_KIND_PLAIN_OPEN
)

// AllTypes returns every valid (non-zero) message type, in wire-value
// order (a new slice each call: the caller may keep or change it).
func AllTypes() []pb.MessageType {
	return []pb.MessageType{
		TypeError, TypeReady, TypeRun, TypeHooks, TypeHooksDone,
		TypeMountPlease, TypeMountFd, TypeSeccomp, TypeSeccompDone,
	}
}

// TypeName is the short name used in errors and transcripts ("MountPlease").
func TypeName(t pb.MessageType) string {
	switch t {
	case pb.MessageType_MESSAGE_TYPE_UNSPECIFIED:
		return "Unspecified"
	case TypeError:
		return "Error"
	case TypeReady:
		return "Ready"
	case TypeRun:
		return "Run"
	case TypeHooks:
		return "Hooks"
	case TypeHooksDone:
		return "HooksDone"
	case TypeMountPlease:
		return "MountPlease"
	case TypeMountFd:
		return "MountFd"
	case TypeSeccomp:
		return "Seccomp"
	case TypeSeccompDone:
		return "SeccompDone"
	}
	return fmt.Sprintf("Unknown(%d)", int32(t))
}

// SourceKindName is the short name of a mount source kind used in
// transcripts ("open_tree", "plain-open", as runc spells them).
func SourceKindName(k pb.MountSourceKind) string {
	switch k {
	case pb.MountSourceKind_MOUNT_SOURCE_KIND_UNSPECIFIED:
		return "unspecified"
	case SourceOpenTree:
		return "open_tree"
	case SourcePlainOpen:
		return "plain-open"
	}
	return fmt.Sprintf("unknown(%d)", int32(k))
}

// Reply returns the reply a request expects; ok is false when t is not a
// request.
func Reply(t pb.MessageType) (reply pb.MessageType, ok bool) {
	switch t {
	case TypeReady:
		return TypeRun, true
	case TypeHooks:
		return TypeHooksDone, true
	case TypeMountPlease:
		return TypeMountFd, true
	case TypeSeccomp:
		return TypeSeccompDone, true
	}
	return 0, false
}

// IsRequest reports whether the child sends t to the parent as a request.
func IsRequest(t pb.MessageType) bool {
	_, ok := Reply(t)
	return ok
}

// NewMessage returns a message of type t with no payload and no flags.
func NewMessage(t pb.MessageType) *pb.SyncMessage { return &pb.SyncMessage{Type: t} }

// ErrorMessage returns an Error carrying msg.
func ErrorMessage(msg string) *pb.SyncMessage {
	return &pb.SyncMessage{Type: TypeError, Payload: &pb.SyncMessage_Error{Error: &pb.ErrorInfo{Message: msg}}}
}

// ReadyMessage returns a Ready (child: set-up done, waiting for Run).
func ReadyMessage() *pb.SyncMessage { return NewMessage(TypeReady) }

// RunMessage returns a Run (parent: reply to Ready).
func RunMessage() *pb.SyncMessage { return NewMessage(TypeRun) }

// HooksMessage returns a Hooks (child: run the hooks now).
func HooksMessage() *pb.SyncMessage { return NewMessage(TypeHooks) }

// HooksDoneMessage returns a HooksDone (parent: reply to Hooks).
func HooksDoneMessage() *pb.SyncMessage { return NewMessage(TypeHooksDone) }

// MountPleaseMessage returns a MountPlease asking for a source fd for m.
func MountPleaseMessage(m *pb.Mount) *pb.SyncMessage {
	return &pb.SyncMessage{Type: TypeMountPlease, Payload: &pb.SyncMessage_MountPlease{MountPlease: m}}
}

// MountFdMessage returns a MountFd reply for source; the fd travels beside
// the record.
func MountFdMessage(kind pb.MountSourceKind, source string) *pb.SyncMessage {
	return &pb.SyncMessage{Type: TypeMountFd, Payload: &pb.SyncMessage_MountFd{
		MountFd: &pb.MountFdInfo{Kind: kind, Source: source}}}
}

// SeccompAttachedMessage returns a Seccomp whose notify fd travels beside
// the record.
func SeccompAttachedMessage() *pb.SyncMessage {
	return &pb.SyncMessage{Type: TypeSeccomp, Payload: &pb.SyncMessage_Seccomp{Seccomp: &pb.SeccompInfo{
		Transfer: &pb.SeccompInfo_Attached{Attached: &pb.FdAttached{}}}}}
}

// SeccompChildFDMessage returns a Seccomp naming the child's fd number for
// the parent to copy with pidfd_getfd(2).
func SeccompChildFDMessage(fd int32) *pb.SyncMessage {
	return &pb.SyncMessage{Type: TypeSeccomp, Payload: &pb.SyncMessage_Seccomp{Seccomp: &pb.SeccompInfo{
		Transfer: &pb.SeccompInfo_ChildFd{ChildFd: fd}}}}
}

// SeccompDoneMessage returns a SeccompDone (parent: reply to Seccomp).
func SeccompDoneMessage() *pb.SyncMessage { return NewMessage(TypeSeccompDone) }

// BindMount returns a bind mount (MS_BIND) request of source at destination.
func BindMount(source, destination string) *pb.Mount {
	return &pb.Mount{Source: source, Destination: destination, Device: "bind", Flags: MsBind}
}

// Summary is a one-line human summary of msg's payload, for logs and
// transcripts.
func Summary(msg *pb.SyncMessage) string {
	switch p := msg.GetPayload().(type) {
	case *pb.SyncMessage_Error:
		return fmt.Sprintf("%q", p.Error.GetMessage())
	case *pb.SyncMessage_MountPlease:
		m := p.MountPlease
		s := m.GetSource() + " -> " + m.GetDestination()
		if idm := m.GetIdMapping(); idm != nil {
			if idm.GetUsernsPath() == "" {
				s += fmt.Sprintf(" idmap uid×%d gid×%d", len(idm.GetUidMappings()), len(idm.GetGidMappings()))
			} else {
				s += " idmap userns=" + idm.GetUsernsPath()
			}
			if idm.GetRecursive() {
				s += " recursive"
			}
		}
		return s
	case *pb.SyncMessage_MountFd:
		return SourceKindName(p.MountFd.GetKind()) + " " + p.MountFd.GetSource()
	case *pb.SyncMessage_Seccomp:
		switch t := p.Seccomp.GetTransfer().(type) {
		case *pb.SeccompInfo_Attached:
			return "fd attached"
		case *pb.SeccompInfo_ChildFd:
			return fmt.Sprintf("child fd %d", t.ChildFd)
		}
		return "no transfer"
	}
	return ""
}
