package main

// runc's sync wire, written from its description (docs/fragments/runc-protocol.md):
// one SOCK_SEQPACKET record of JSON per message; with flags bit 0 (HasFd) a
// second record follows whose payload is the file's name and which carries
// exactly one SCM_RIGHTS fd.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

type syncType string

// runc's message types (the "type" key).
const (
	procError       syncType = "procError"
	procReady       syncType = "procReady"
	procRun         syncType = "procRun"
	procHooks       syncType = "procHooks"
	procHooksDone   syncType = "procHooksDone"
	procMountPlease syncType = "procMountPlease"
	procMountFd     syncType = "procMountFd"
	procSeccomp     syncType = "procSeccomp"
	procSeccompDone syncType = "procSeccompDone"
)

type syncFlags int

const syncFlagHasFd syncFlags = 1

// syncT is one JSON record. Field order is the wire's key order.
type syncT struct {
	Type  syncType         `json:"type"`
	Flags syncFlags        `json:"flags"`
	Arg   *json.RawMessage `json:"arg,omitempty"`
	File  *os.File         `json:"-"`
}

// initError is procError's argument; an empty message prints as {}.
type initError struct {
	Message string `json:"message,omitempty"`
}

func (e *initError) Error() string { return e.Message }

// mountSource is procMountFd's argument.
type mountSource struct {
	Type string `json:"type"`
}

const (
	mountSourceOpenTree  = "open_tree"
	mountSourcePlainOpen = "plain-open"
)

// IDMap is one id-map line (int64 in runc ≥ 1.2).
type IDMap struct {
	ContainerID int64 `json:"container_id"`
	HostID      int64 `json:"host_id"`
	Size        int64 `json:"size"`
}

// mountV12 is runc 1.2/1.3's configs.Mount JSON layout.
type mountV12 struct {
	Source           string             `json:"source"`
	Destination      string             `json:"destination"`
	Device           string             `json:"device"`
	Flags            int                `json:"flags"`
	ClearedFlags     int                `json:"cleared_flags"`
	PropagationFlags []int              `json:"propagation_flags"`
	Data             string             `json:"data"`
	Relabel          string             `json:"relabel"`
	RecAttr          *unix.MountAttr    `json:"rec_attr"`
	Extensions       int                `json:"extensions"`
	IDMapping        *mountIDMappingV12 `json:"id_mapping,omitempty"`
}

type mountIDMappingV12 struct {
	Recursive   bool    `json:"recursive"`
	UserNSPath  string  `json:"userns_path,omitempty"`
	UIDMappings []IDMap `json:"uid_mappings,omitempty"`
	GIDMappings []IDMap `json:"gid_mappings,omitempty"`
}

// mountV14 is runc ≥ 1.4's configs.Mount JSON layout (omitempty nearly everywhere).
type mountV14 struct {
	Source           string             `json:"source"`
	Destination      string             `json:"destination"`
	Device           string             `json:"device"`
	Flags            int                `json:"flags,omitempty"`
	ClearedFlags     int                `json:"cleared_flags,omitempty"`
	PropagationFlags []int              `json:"propagation_flags,omitempty"`
	Data             string             `json:"data,omitempty"`
	Relabel          string             `json:"relabel,omitempty"`
	RecAttr          *unix.MountAttr    `json:"rec_attr,omitempty"`
	Extensions       int                `json:"extensions,omitempty"`
	IDMapping        *mountIDMappingV14 `json:"id_mapping,omitempty"`
}

type mountIDMappingV14 struct {
	Recursive   bool    `json:"recursive,omitempty"`
	UserNSPath  string  `json:"userns_path,omitempty"`
	UIDMappings []IDMap `json:"uid_mappings,omitempty"`
	GIDMappings []IDMap `json:"gid_mappings,omitempty"`
}

// mountSeed is the configs.Mount JSON layout of runc commits ba0b5e269 up
// to (not including) 3b57e45cb: every field, and the id maps at the top
// level (Go int, omitempty), applied non-recursively.
type mountSeed struct {
	Source           string          `json:"source"`
	Destination      string          `json:"destination"`
	Device           string          `json:"device"`
	Flags            int             `json:"flags"`
	ClearedFlags     int             `json:"cleared_flags"`
	PropagationFlags []int           `json:"propagation_flags"`
	Data             string          `json:"data"`
	Relabel          string          `json:"relabel"`
	RecAttr          *unix.MountAttr `json:"rec_attr"`
	Extensions       int             `json:"extensions"`
	UIDMappings      []IDMap         `json:"uid_mappings,omitempty"`
	GIDMappings      []IDMap         `json:"gid_mappings,omitempty"`
}

// mountV15 is runc ≥ 1.5's configs.Mount JSON layout: v1.4's without
// relabel (json:"-").
type mountV15 struct {
	Source           string             `json:"source"`
	Destination      string             `json:"destination"`
	Device           string             `json:"device"`
	Flags            int                `json:"flags,omitempty"`
	ClearedFlags     int                `json:"cleared_flags,omitempty"`
	PropagationFlags []int              `json:"propagation_flags,omitempty"`
	Data             string             `json:"data,omitempty"`
	Relabel          string             `json:"-"`
	RecAttr          *unix.MountAttr    `json:"rec_attr,omitempty"`
	Extensions       int                `json:"extensions,omitempty"`
	IDMapping        *mountIDMappingV14 `json:"id_mapping,omitempty"`
}

// Profiles: the runc versions a peer imitates (PROTOCOL.md §15): the
// configs.Mount layout and whether runc exec has Ready/Run.
var profiles = map[string]struct {
	Shape       string
	ExecNoReady bool
}{
	"ba0b5e269":   {"ba0b5e269", true},
	"v1.2.0-rc.1": {"v1.2", true},
	"v1.2":        {"v1.2", false},
	"v1.4":        {"v1.4", false},
	"v1.5":        {"v1.5", false},
}

// mountSpec is a shape-neutral mount request; marshalMount prints it in
// any runc layout.
type mountSpec struct {
	Source, Destination, Device string
	Flags, ClearedFlags         int
	PropagationFlags            []int
	Data, Relabel               string
	RecAttr                     *unix.MountAttr
	Extensions                  int
	IDMapping                   *idMappingSpec
}

type idMappingSpec struct {
	Recursive   bool
	UserNSPath  string
	UIDMappings []IDMap
	GIDMappings []IDMap
}

// marshalMount prints m as runc ba0b5e269 ("ba0b5e269"), runc 1.2/1.3
// ("v1.2"), runc 1.4 ("v1.4") or runc ≥ 1.5 ("v1.5") does.
func marshalMount(m *mountSpec, shape string) ([]byte, error) {
	switch shape {
	case "ba0b5e269":
		out := mountSeed{
			Source: m.Source, Destination: m.Destination, Device: m.Device,
			Flags: m.Flags, ClearedFlags: m.ClearedFlags, PropagationFlags: m.PropagationFlags,
			Data: m.Data, Relabel: m.Relabel, RecAttr: m.RecAttr, Extensions: m.Extensions,
		}
		if idm := m.IDMapping; idm != nil {
			if idm.UserNSPath != "" || idm.Recursive {
				return nil, errors.New("the ba0b5e269 layout has no userns_path and no recursive id mapping")
			}
			out.UIDMappings, out.GIDMappings = idm.UIDMappings, idm.GIDMappings
		}
		return json.Marshal(out)
	case "v1.5":
		out := mountV15{
			Source: m.Source, Destination: m.Destination, Device: m.Device,
			Flags: m.Flags, ClearedFlags: m.ClearedFlags, PropagationFlags: m.PropagationFlags,
			Data: m.Data, Relabel: m.Relabel, RecAttr: m.RecAttr, Extensions: m.Extensions,
		}
		if idm := m.IDMapping; idm != nil {
			out.IDMapping = &mountIDMappingV14{idm.Recursive, idm.UserNSPath, idm.UIDMappings, idm.GIDMappings}
		}
		return json.Marshal(out)
	case "v1.2":
		out := mountV12{
			Source: m.Source, Destination: m.Destination, Device: m.Device,
			Flags: m.Flags, ClearedFlags: m.ClearedFlags, PropagationFlags: m.PropagationFlags,
			Data: m.Data, Relabel: m.Relabel, RecAttr: m.RecAttr, Extensions: m.Extensions,
		}
		if idm := m.IDMapping; idm != nil {
			out.IDMapping = &mountIDMappingV12{idm.Recursive, idm.UserNSPath, idm.UIDMappings, idm.GIDMappings}
		}
		return json.Marshal(out)
	case "v1.4":
		out := mountV14{
			Source: m.Source, Destination: m.Destination, Device: m.Device,
			Flags: m.Flags, ClearedFlags: m.ClearedFlags, PropagationFlags: m.PropagationFlags,
			Data: m.Data, Relabel: m.Relabel, RecAttr: m.RecAttr, Extensions: m.Extensions,
		}
		if idm := m.IDMapping; idm != nil {
			out.IDMapping = &mountIDMappingV14{idm.Recursive, idm.UserNSPath, idm.UIDMappings, idm.GIDMappings}
		}
		return json.Marshal(out)
	}
	return nil, fmt.Errorf("unknown mount shape %q", shape)
}

// unmarshalMount reads a mount in the given layout, as runc of that
// generation does (Go's encoding/json: unknown keys ignored).
func unmarshalMount(b []byte, shape string) (*mountSpec, error) {
	if shape == "ba0b5e269" {
		var in mountSeed
		if err := json.Unmarshal(b, &in); err != nil {
			return nil, err
		}
		m := &mountSpec{
			Source: in.Source, Destination: in.Destination, Device: in.Device,
			Flags: in.Flags, ClearedFlags: in.ClearedFlags, PropagationFlags: in.PropagationFlags,
			Data: in.Data, Relabel: in.Relabel, RecAttr: in.RecAttr, Extensions: in.Extensions,
		}
		if len(in.UIDMappings) > 0 || len(in.GIDMappings) > 0 {
			m.IDMapping = &idMappingSpec{UIDMappings: in.UIDMappings, GIDMappings: in.GIDMappings}
		}
		return m, nil
	}
	var in mountV12
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	m := &mountSpec{
		Source: in.Source, Destination: in.Destination, Device: in.Device,
		Flags: in.Flags, ClearedFlags: in.ClearedFlags, PropagationFlags: in.PropagationFlags,
		Data: in.Data, Relabel: in.Relabel, RecAttr: in.RecAttr, Extensions: in.Extensions,
	}
	if idm := in.IDMapping; idm != nil {
		m.IDMapping = &idMappingSpec{idm.Recursive, idm.UserNSPath, idm.UIDMappings, idm.GIDMappings}
	}
	return m, nil
}

// maxNameLen bounds the fd record: a name must be shorter than this.
const maxNameLen = 4096

// syncSocket is one end of the seqpacket socketpair.
type syncSocket struct {
	fd int
}

// newSyncSocket wraps fd and sets a receive timeout so that a dead peer
// fails the read instead of blocking forever.
func newSyncSocket(fd int, timeout time.Duration) (*syncSocket, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("fd %d is not a socket: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("fd %d is not a SOCK_SEQPACKET socket (type %d)", fd, typ)
	}
	if timeout > 0 {
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
	}
	return &syncSocket{fd: fd}, nil
}

func (s *syncSocket) Close() error { return unix.Close(s.fd) }

func retryEINTR[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}

// WritePacket sends one record; an empty one would read as EOF, so it is refused.
func (s *syncSocket) WritePacket(b []byte) error {
	if len(b) == 0 {
		return errors.New("refusing to send an empty record")
	}
	n, err := retryEINTR(func() (int, error) { return unix.Write(s.fd, b) })
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return nil
}

// ReadPacket peeks the record size with MSG_PEEK|MSG_TRUNC and reads it
// whole; a zero size is EOF.
func (s *syncSocket) ReadPacket() ([]byte, error) {
	size, err := retryEINTR(func() (int, error) {
		n, _, err := unix.Recvfrom(s.fd, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return n, err
	})
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return nil, errors.New("timed out waiting for the peer")
		}
		return nil, err
	}
	if size == 0 {
		return nil, io.EOF
	}
	buf := make([]byte, size)
	n, err := retryEINTR(func() (int, error) { return unix.Read(s.fd, buf) })
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, fmt.Errorf("record shrank from %d to %d bytes", size, n)
	}
	return buf, nil
}

// SendFile sends f's fd in its own record whose payload is name.
func (s *syncSocket) SendFile(name string, f *os.File) error {
	if name == "" || len(name) >= maxNameLen {
		return fmt.Errorf("sendfile: bad name length %d", len(name))
	}
	rights := unix.UnixRights(int(f.Fd()))
	_, err := retryEINTR(func() (struct{}, error) {
		return struct{}{}, unix.Sendmsg(s.fd, []byte(name), rights, nil, 0)
	})
	return err
}

// RecvFile receives the fd record: exactly one fd, a name under 4096 bytes.
// Every fd that arrived is closed on error.
func (s *syncSocket) RecvFile() (*os.File, error) {
	name := make([]byte, maxNameLen)
	oob := make([]byte, unix.CmsgSpace(4*8)) // room to see (and close) extra fds
	var n, oobn, rflags int
	_, err := retryEINTR(func() (struct{}, error) {
		var err error
		n, oobn, rflags, _, err = unix.Recvmsg(s.fd, name, oob, unix.MSG_CMSG_CLOEXEC)
		return struct{}{}, err
	})
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return nil, errors.New("timed out waiting for the fd record")
		}
		return nil, err
	}
	var fds []int
	if scms, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, scm := range scms {
			if got, err := unix.ParseUnixRights(&scm); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	fail := func(format string, args ...any) (*os.File, error) {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return nil, fmt.Errorf("recvfile: "+format, args...)
	}
	switch {
	case n == 0 && oobn == 0:
		return fail("peer closed the socket before the fd record")
	case rflags&unix.MSG_CTRUNC != 0:
		return fail("control data truncated (too many fds)")
	case len(fds) != 1:
		return fail("%d fds in the fd record, want exactly 1", len(fds))
	case n >= maxNameLen || rflags&unix.MSG_TRUNC != 0:
		return fail("name too long")
	case n == 0:
		return fail("empty name")
	}
	for _, c := range name[:n] {
		if c == 0 {
			return fail("name contains NUL")
		}
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// marshalSync prints one JSON record as runc's doWriteSync does: the
// argument marshalled on its own and embedded raw, HasFd set iff a file follows.
func marshalSync(t syncType, arg any, hasFd bool) ([]byte, error) {
	msg := syncT{Type: t}
	if arg != nil {
		raw, err := json.Marshal(arg)
		if err != nil {
			return nil, fmt.Errorf("marshal %s argument: %w", t, err)
		}
		rm := json.RawMessage(raw)
		msg.Arg = &rm
	}
	if hasFd {
		msg.Flags |= syncFlagHasFd
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", t, err)
	}
	return data, nil
}

// writeSync sends one message (and its file, if any) as runc's doWriteSync does.
func (s *syncSocket) writeSync(t syncType, arg any, file *os.File) error {
	data, err := marshalSync(t, arg, file != nil)
	if err != nil {
		return err
	}
	if err := s.WritePacket(data); err != nil {
		return fmt.Errorf("writing %s: %w", t, err)
	}
	if file != nil {
		if err := s.SendFile(file.Name(), file); err != nil {
			return fmt.Errorf("sending the file of %s: %w", t, err)
		}
	}
	return nil
}

// readSync reads one message; a procError becomes an *initError, HasFd
// pulls in the fd record.
func (s *syncSocket) readSync() (syncT, error) {
	var msg syncT
	packet, err := s.ReadPacket()
	if err != nil {
		return msg, err
	}
	if err := json.Unmarshal(packet, &msg); err != nil {
		return msg, fmt.Errorf("unmarshal sync %q: %w", packet, err)
	}
	if msg.Flags&^syncFlagHasFd != 0 {
		return msg, fmt.Errorf("%s: reserved flag bits %#x", msg.Type, int(msg.Flags))
	}
	if msg.Type == procError {
		if msg.Arg == nil {
			return msg, errors.New("procError without an argument")
		}
		var ie initError
		if err := json.Unmarshal(*msg.Arg, &ie); err != nil {
			return msg, fmt.Errorf("unmarshal procError: %w", err)
		}
		return msg, &ie
	}
	if msg.Flags&syncFlagHasFd != 0 {
		f, err := s.RecvFile()
		if err != nil {
			return msg, fmt.Errorf("receiving the file of %s: %w", msg.Type, err)
		}
		msg.File = f
	}
	return msg, nil
}

// expectSync reads a message of type want that carries no argument and no file.
func (s *syncSocket) expectSync(want syncType) error {
	msg, err := s.readSync()
	if err != nil {
		return err
	}
	if msg.File != nil {
		_ = msg.File.Close()
		return fmt.Errorf("%s carried an unexpected file", msg.Type)
	}
	if msg.Type != want {
		return fmt.Errorf("got %s, want %s", msg.Type, want)
	}
	if msg.Arg != nil {
		return fmt.Errorf("%s carried an unexpected argument %s", msg.Type, string(*msg.Arg))
	}
	return nil
}
