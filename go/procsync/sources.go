//go:build linux

package procsync

import (
	"os"

	"golang.org/x/sys/unix"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// OpenPlain is a Mount handler building block: an O_PATH fd of
// req.Source (kind plain-open).
func OpenPlain(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	fd, err := unix.Open(req.GetSource(), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, &os.PathError{Op: "open", Path: req.GetSource(), Err: err}
	}
	return os.NewFile(uintptr(fd), req.GetSource()), SourcePlainOpen, nil
}

// OpenTree is a Mount handler building block: a detached clone of the
// mount at req.Source from open_tree(OPEN_TREE_CLONE), recursive when the
// request has MS_REC (kind open_tree). It needs CAP_SYS_ADMIN; id mapping
// is left to the caller (mount_setattr on the returned fd).
func OpenTree(req *pb.Mount) (*os.File, pb.MountSourceKind, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if req.GetFlags()&MsRec != 0 {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, req.GetSource(), flags)
	if err != nil {
		return nil, 0, &os.PathError{Op: "open_tree", Path: req.GetSource(), Err: err}
	}
	return os.NewFile(uintptr(fd), req.GetSource()), SourceOpenTree, nil
}
