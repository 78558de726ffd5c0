// Command runcpeer speaks runc's sync protocol (libcontainer/sync.go, runc ≥
// 1.2) over an inherited SOCK_SEQPACKET fd, as either side, so procsync's
// runc-compatible mode can be tested against an independent peer. It is
// written from the wire description, not from procsync's code.
//
//	runcpeer child  [-fd N] -mode init|exec|error [-mount SRC:DST]... [-profile ba0b5e269|v1.2.0-rc.1|v1.2|v1.4|v1.5]
//	                [-idmap-userns PATH] [-idmap-range C:H:N] [-seccomp-fd N] [-error-msg S]
//	runcpeer parent [-fd N] [-child-pid PID] [-fail-on SRC] [-misbehave MODE] [-profile P] [-mode init|exec]
//	runcpeer gen-vectors [-o FILE]
//
// The socket fd comes from -fd, else from $_LIBCONTAINER_SYNCPIPE (runc's
// variable). Each side prints a transcript line per event on stdout.
// Exit status: 0 done, 1 protocol or system error, 3 the peer sent procError.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: runcpeer child|parent|gen-vectors [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "child":
		err = mainChild(os.Args[2:])
	case "parent":
		err = mainParent(os.Args[2:])
	case "gen-vectors":
		err = mainGen(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "runcpeer: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "runcpeer %s: %v\n", os.Args[1], err)
		var ierr *initError
		if errors.As(err, &ierr) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

func socketFromFlags(fd int, timeout time.Duration) (*syncSocket, error) {
	if fd < 0 {
		env := os.Getenv("_LIBCONTAINER_SYNCPIPE")
		if env == "" {
			return nil, errors.New("no socket: pass -fd or set _LIBCONTAINER_SYNCPIPE")
		}
		n, err := strconv.Atoi(env)
		if err != nil {
			return nil, fmt.Errorf("bad _LIBCONTAINER_SYNCPIPE %q: %w", env, err)
		}
		fd = n
	}
	return newSyncSocket(fd, timeout)
}

func parseIDMap(s string) (IDMap, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return IDMap{}, fmt.Errorf("id map %q: want CONTAINER:HOST:SIZE", s)
	}
	var v [3]int64
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return IDMap{}, fmt.Errorf("id map %q: %w", s, err)
		}
		v[i] = n
	}
	return IDMap{ContainerID: v[0], HostID: v[1], Size: v[2]}, nil
}

func mainChild(args []string) error {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	fd := fs.Int("fd", -1, "sync socket fd (default: $_LIBCONTAINER_SYNCPIPE)")
	mode := fs.String("mode", "init", "init, exec or error")
	shape := fs.String("shape", "", "configs.Mount layout: ba0b5e269, v1.2, v1.4 or v1.5 (default: the profile's)")
	profile := fs.String("profile", "v1.2", "runc versions to imitate: ba0b5e269, v1.2.0-rc.1, v1.2, v1.4 or v1.5")
	userns := fs.String("idmap-userns", "", "make every mount id-mapped with this user namespace path")
	seccompFd := fs.Int("seccomp-fd", -1, "send procSeccomp with this fd number")
	errMsg := fs.String("error-msg", "", "error mode: the procError message")
	timeout := fs.Duration("timeout", 10*time.Second, "give up waiting for the parent after this long")
	var mounts, ranges stringList
	fs.Var(&mounts, "mount", "SRC:DST bind mount to request (repeatable)")
	fs.Var(&ranges, "idmap-range", "C:H:N id range for every mount's uid and gid map (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var idm *idMappingSpec
	if *userns != "" || len(ranges) > 0 {
		idm = &idMappingSpec{Recursive: true, UserNSPath: *userns}
		for _, r := range ranges {
			m, err := parseIDMap(r)
			if err != nil {
				return err
			}
			idm.UIDMappings = append(idm.UIDMappings, m)
			idm.GIDMappings = append(idm.GIDMappings, m)
		}
	}
	prof, ok := profiles[*profile]
	if !ok {
		return fmt.Errorf("unknown profile %q", *profile)
	}
	if *shape == "" {
		*shape = prof.Shape
	}
	if idm != nil && *shape == "ba0b5e269" {
		// The seed applied id maps non-recursively only.
		idm.Recursive = false
	}
	cfg := childConfig{Mode: *mode, Shape: *shape, NoReady: prof.ExecNoReady, SeccompFd: *seccompFd, ErrorMsg: *errMsg, Log: os.Stdout}
	for _, m := range mounts {
		src, dst, ok := strings.Cut(m, ":")
		if !ok {
			return fmt.Errorf("-mount %q: want SRC:DST", m)
		}
		cfg.Mounts = append(cfg.Mounts, &mountSpec{
			Source: src, Destination: dst, Device: "bind",
			Flags: unix.MS_BIND | unix.MS_REC, IDMapping: idm,
		})
	}
	s, err := socketFromFlags(*fd, *timeout)
	if err != nil {
		return err
	}
	defer s.Close()
	return runChild(s, cfg)
}

func mainParent(args []string) error {
	fs := flag.NewFlagSet("parent", flag.ContinueOnError)
	fd := fs.Int("fd", -1, "sync socket fd (default: $_LIBCONTAINER_SYNCPIPE)")
	pid := fs.Int("child-pid", 0, "the child's pid, for pidfd_getfd on procSeccomp")
	failOn := fs.String("fail-on", "", "answer a procMountPlease for this source with procError")
	misbehave := fs.String("misbehave", "", "answer the first procMountPlease with a broken reply: "+strings.Join(misbehaveModes, ", "))
	timeout := fs.Duration("timeout", 10*time.Second, "give up waiting for the child after this long")
	profile := fs.String("profile", "v1.2", "runc versions to imitate: ba0b5e269, v1.2.0-rc.1, v1.2, v1.4 or v1.5")
	mode := fs.String("mode", "init", "init or exec (exec in a profile before v1.2.0-rc.2 refuses procReady)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	prof, ok := profiles[*profile]
	if !ok {
		return fmt.Errorf("unknown profile %q", *profile)
	}
	s, err := socketFromFlags(*fd, *timeout)
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = runParent(s, parentConfig{ChildPid: *pid, FailOn: *failOn, Misbehave: *misbehave, Log: os.Stdout,
		Shape: prof.Shape, NoReady: *mode == "exec" && prof.ExecNoReady})
	return err
}
