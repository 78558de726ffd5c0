package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// childConfig drives the child (runc init) side.
type childConfig struct {
	Mode      string       // "init", "exec" or "error"
	Mounts    []*mountSpec // init: one procMountPlease each
	Shape     string       // configs.Mount layout: "ba0b5e269", "v1.2", "v1.4" or "v1.5"
	NoReady   bool         // exec: runc before v1.2.0-rc.2, no procReady/procRun
	SeccompFd int          // >= 0: send procSeccomp with this fd number
	ErrorMsg  string       // error mode: procError's message (may be empty)
	Log       io.Writer    // transcript, one line per event
}

// runChild runs runc init's side of the sync protocol, then closes nothing:
// the caller closes the socket (which the parent reads as EOF).
func runChild(s *syncSocket, cfg childConfig) error {
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, "child: "+format+"\n", args...) }
	switch cfg.Mode {
	case "error":
		if err := s.writeSync(procError, &initError{Message: cfg.ErrorMsg}, nil); err != nil {
			return err
		}
		logf("sent procError %q", cfg.ErrorMsg)
		return nil
	case "init":
		for _, m := range cfg.Mounts {
			if err := childMount(s, m, cfg.Shape, logf); err != nil {
				return err
			}
		}
		if err := s.writeSync(procHooks, nil, nil); err != nil {
			return err
		}
		if err := s.expectSync(procHooksDone); err != nil {
			return fmt.Errorf("after procHooks: %w", err)
		}
		logf("hooks done")
	case "exec":
	default:
		return fmt.Errorf("unknown child mode %q", cfg.Mode)
	}
	if cfg.Mode == "exec" && cfg.NoReady {
		// runc's setns init before a853a8267: straight to seccomp and exec.
		logf("exec without ready")
	} else {
		if err := s.writeSync(procReady, nil, nil); err != nil {
			return err
		}
		if err := s.expectSync(procRun); err != nil {
			return fmt.Errorf("after procReady: %w", err)
		}
		logf("run")
	}
	if cfg.SeccompFd >= 0 {
		if err := s.writeSync(procSeccomp, cfg.SeccompFd, nil); err != nil {
			return err
		}
		if err := s.expectSync(procSeccompDone); err != nil {
			return fmt.Errorf("after procSeccomp: %w", err)
		}
		logf("seccomp fd %d handed over", cfg.SeccompFd)
	}
	return nil
}

// childMount asks for one mount source fd and checks the reply the way
// runc's child does: procMountFd with a file whose name is the source.
func childMount(s *syncSocket, m *mountSpec, shape string, logf func(string, ...any)) error {
	arg, err := marshalMount(m, shape)
	if err != nil {
		return err
	}
	if err := s.writeSync(procMountPlease, json.RawMessage(arg), nil); err != nil {
		return err
	}
	reply, err := s.readSync()
	if err != nil {
		return fmt.Errorf("after procMountPlease %s: %w", m.Source, err)
	}
	if reply.File != nil {
		defer reply.File.Close()
	}
	if reply.Type != procMountFd {
		return fmt.Errorf("got %s, want %s", reply.Type, procMountFd)
	}
	if reply.File == nil {
		return fmt.Errorf("%s without a file", reply.Type)
	}
	if reply.Arg == nil {
		return fmt.Errorf("%s without an argument", reply.Type)
	}
	var src mountSource
	if err := json.Unmarshal(*reply.Arg, &src); err != nil {
		return fmt.Errorf("unmarshal %s argument: %w", reply.Type, err)
	}
	if src.Type != mountSourceOpenTree && src.Type != mountSourcePlainOpen {
		return fmt.Errorf("unsupported mount source type %q", src.Type)
	}
	if got := reply.File.Name(); got != m.Source {
		return fmt.Errorf("mount source fd name %q does not match the requested source %q", got, m.Source)
	}
	// The fd must refer to the source (same inode; an open_tree clone keeps it).
	var want, got unix.Stat_t
	if err := unix.Stat(m.Source, &want); err != nil {
		return fmt.Errorf("stat %s: %w", m.Source, err)
	}
	if err := unix.Fstat(int(reply.File.Fd()), &got); err != nil {
		return fmt.Errorf("fstat mount fd: %w", err)
	}
	if got.Ino != want.Ino {
		return fmt.Errorf("mount fd for %s is inode %d, source is inode %d", m.Source, got.Ino, want.Ino)
	}
	logf("mountfd %s %s ok uid=%d", m.Source, src.Type, got.Uid)
	return nil
}

// parentConfig drives the parent (runc create/exec) side.
type parentConfig struct {
	ChildPid  int       // for pidfd_getfd on procSeccomp; 0: refuse procSeccomp
	FailOn    string    // a mount source the parent refuses with procError
	Misbehave string    // answer the first procMountPlease with a broken fd record (see misbehave)
	Shape     string    // configs.Mount layout of procMountPlease ("" = v1.2)
	NoReady   bool      // runc exec before v1.2.0-rc.2: procReady is an error (runc panicked)
	Log       io.Writer // transcript, one line per event
}

// parentResult is what the parent saw, for tests.
type parentResult struct {
	Transcript []string
	ChildError string // the procError message, if the child sent one
}

// runParent answers the child until EOF, as runc's parseSync loop does.
func runParent(s *syncSocket, cfg parentConfig) (*parentResult, error) {
	res := &parentResult{}
	logf := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		res.Transcript = append(res.Transcript, line)
		fmt.Fprintf(cfg.Log, "parent: %s\n", line)
	}
	for {
		msg, err := s.readSync()
		var ierr *initError
		switch {
		case errors.Is(err, io.EOF):
			logf("eof")
			return res, nil
		case errors.As(err, &ierr):
			res.ChildError = ierr.Message
			logf("procError %q", ierr.Message)
			return res, err
		case err != nil:
			return res, err
		}
		if msg.File != nil {
			_ = msg.File.Close()
			return res, fmt.Errorf("%s carried an unexpected file", msg.Type)
		}
		switch msg.Type {
		case procMountPlease:
			if msg.Arg == nil {
				return res, fmt.Errorf("%s without an argument", msg.Type)
			}
			m, err := unmarshalMount(*msg.Arg, cfg.Shape)
			if err != nil {
				return res, fmt.Errorf("unmarshal %s argument: %w", msg.Type, err)
			}
			logf("procMountPlease %s -> %s", m.Source, m.Destination)
			if err := parentMount(s, m, cfg, logf); err != nil {
				if !errors.Is(err, errMisbehaved) {
					_ = s.writeSync(procError, &initError{Message: err.Error()}, nil)
				}
				return res, err
			}
		case procHooks, procReady:
			if msg.Type == procReady && cfg.NoReady {
				// runc's setnsProcess before a853a8267: panic("unexpected procReady in setns").
				return res, fmt.Errorf("unexpected %s in setns", msg.Type)
			}
			if msg.Arg != nil {
				return res, fmt.Errorf("%s carried an unexpected argument", msg.Type)
			}
			reply := map[syncType]syncType{procHooks: procHooksDone, procReady: procRun}[msg.Type]
			logf("%s", msg.Type)
			if err := s.writeSync(reply, nil, nil); err != nil {
				return res, err
			}
		case procSeccomp:
			if msg.Arg == nil {
				return res, fmt.Errorf("%s without an argument", msg.Type)
			}
			var childFd int
			if err := json.Unmarshal(*msg.Arg, &childFd); err != nil {
				return res, fmt.Errorf("unmarshal %s argument: %w", msg.Type, err)
			}
			if err := copySeccompFd(cfg.ChildPid, childFd); err != nil {
				_ = s.writeSync(procError, &initError{Message: err.Error()}, nil)
				return res, err
			}
			logf("procSeccomp fd %d copied", childFd)
			if err := s.writeSync(procSeccompDone, nil, nil); err != nil {
				return res, err
			}
		default:
			return res, fmt.Errorf("unexpected sync message %q", msg.Type)
		}
	}
}

// parentMount makes the source fd: a plain O_PATH open for an ordinary bind
// mount, an open_tree(OPEN_TREE_CLONE) detached mount for an id-mapped one.
func parentMount(s *syncSocket, m *mountSpec, cfg parentConfig, logf func(string, ...any)) error {
	if m.Source == cfg.FailOn {
		return fmt.Errorf("refusing mount source %s", m.Source)
	}
	if cfg.Misbehave != "" {
		if err := misbehave(s, m.Source, cfg.Misbehave); err != nil {
			return err
		}
		logf("misbehaved: %s", cfg.Misbehave)
		return errMisbehaved
	}
	if !strings.HasPrefix(m.Source, "/") {
		return fmt.Errorf("mount source %q is not absolute", m.Source)
	}
	var (
		fd   int
		kind string
		err  error
	)
	if m.IDMapping != nil {
		flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
		if m.Flags&unix.MS_REC != 0 {
			flags |= unix.AT_RECURSIVE
		}
		fd, err = unix.OpenTree(unix.AT_FDCWD, m.Source, flags)
		kind = mountSourceOpenTree
		if err == nil {
			if ierr := applyIDMapping(fd, m.IDMapping); ierr != nil {
				_ = unix.Close(fd)
				return fmt.Errorf("id-map %s: %w", m.Source, ierr)
			}
		}
	} else {
		fd, err = unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		kind = mountSourcePlainOpen
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, m.Source, err)
	}
	f := os.NewFile(uintptr(fd), m.Source)
	defer f.Close()
	if err := s.writeSync(procMountFd, &mountSource{Type: kind}, f); err != nil {
		return err
	}
	logf("procMountFd %s %s", kind, m.Source)
	return nil
}

// applyIDMapping makes the detached mount fd id-mapped (MOUNT_ATTR_IDMAP)
// with the user namespace at userns_path, or with a user namespace made for
// the given ranges.
func applyIDMapping(fd int, idm *idMappingSpec) error {
	var (
		nsfd int
		err  error
	)
	if idm.UserNSPath != "" {
		nsfd, err = unix.Open(idm.UserNSPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	} else {
		nsfd, err = usernsForRanges(idm.UIDMappings, idm.GIDMappings)
	}
	if err != nil {
		return err
	}
	defer unix.Close(nsfd)
	flags := uint(unix.AT_EMPTY_PATH)
	if idm.Recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(nsfd)}
	if err := unix.MountSetattr(fd, "", flags, &attr); err != nil {
		return fmt.Errorf("mount_setattr(MOUNT_ATTR_IDMAP): %w", err)
	}
	return nil
}

// usernsForRanges returns an fd of a new user namespace with the given
// mappings. Like runc, it starts a process in that namespace which stops
// at exec under ptrace (so nothing runs in it), opens its namespace, and
// kills it.
func usernsForRanges(uids, gids []IDMap) (int, error) {
	conv := func(in []IDMap) []syscall.SysProcIDMap {
		var out []syscall.SysProcIDMap
		for _, m := range in {
			out = append(out, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
		}
		return out
	}
	// The ptrace relationship belongs to this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	proc, err := os.StartProcess("/proc/self/exe", []string{"runcpeer-userns"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: conv(uids), GidMappings: conv(gids),
			GidMappingsEnableSetgroups: false,
			Ptrace:                     true,
		},
	})
	if err != nil {
		return -1, fmt.Errorf("spawn user namespace: %w", err)
	}
	defer func() {
		_ = proc.Kill()
		_, _ = proc.Wait()
	}()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", proc.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open user namespace: %w", err)
	}
	return fd, nil
}

// copySeccompFd copies the child's fd number n with pidfd_getfd(2), as
// runc's parent does, and checks that it is a live fd.
func copySeccompFd(pid, n int) error {
	if pid <= 0 {
		return errors.New("procSeccomp: child pid unknown, cannot pidfd_getfd")
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, n, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd(%d, %d): %w", pid, n, err)
	}
	return unix.Close(fd)
}

// errMisbehaved ends the parent after a deliberately broken reply.
var errMisbehaved = errors.New("sent a broken reply on purpose")

// misbehaveModes are the broken procMountFd replies misbehave can send, for
// testing a receiver's checks over a real socket.
var misbehaveModes = []string{
	"no-fd-record",    // HasFd set, then end of stream instead of the fd record
	"fd-record-no-fd", // the fd record carries no fd
	"name-mismatch",   // the fd record is named after another file
	"long-name",       // the fd record's name is 4096 bytes
	"two-fds",         // the fd record carries two fds
	"fd-on-json",      // the JSON record itself carries an fd
	"not-json",        // the reply is not JSON
}

// misbehave answers a procMountPlease for source with a procMountFd that
// breaks one rule of the wire (mode is one of misbehaveModes).
func misbehave(s *syncSocket, source, mode string) error {
	f, err := os.Open(source)
	if err != nil {
		return err
	}
	defer f.Close()
	g, err := os.Open("/")
	if err != nil {
		return err
	}
	defer g.Close()
	header, err := marshalSync(procMountFd, &mountSource{Type: mountSourcePlainOpen}, true)
	if err != nil {
		return err
	}
	send := func(payload []byte, fds ...int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		_, err := retryEINTR(func() (struct{}, error) {
			return struct{}{}, unix.Sendmsg(s.fd, payload, oob, nil, 0)
		})
		return err
	}
	fd, fd2 := int(f.Fd()), int(g.Fd())
	switch mode {
	case "no-fd-record":
		return send(header)
	case "fd-record-no-fd":
		if err := send(header); err != nil {
			return err
		}
		return send([]byte(source))
	case "name-mismatch":
		if err := send(header); err != nil {
			return err
		}
		return send([]byte(source+"-other"), fd)
	case "long-name":
		if err := send(header); err != nil {
			return err
		}
		return send([]byte("/"+strings.Repeat("a", maxNameLen-1)), fd)
	case "two-fds":
		if err := send(header); err != nil {
			return err
		}
		return send([]byte(source), fd, fd2)
	case "fd-on-json":
		if err := send(header, fd2); err != nil {
			return err
		}
		return send([]byte(source), fd)
	case "not-json":
		return send([]byte("procMountFd"), fd)
	}
	return fmt.Errorf("unknown misbehave mode %q (want one of %s)", mode, strings.Join(misbehaveModes, ", "))
}
