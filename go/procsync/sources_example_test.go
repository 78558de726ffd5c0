//go:build linux

package procsync_test

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/procsync/procsync/go/procsync"
)

// Pinned sources serve the object a configured path named when they were
// pinned, whatever the path names when the child asks.
func ExamplePinSources() {
	dir, err := os.MkdirTemp("", "procsync-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	source := dir + "/volume"
	if err := os.Mkdir(source, 0o755); err != nil {
		panic(err)
	}
	var configured unix.Stat_t
	if err := unix.Stat(source, &configured); err != nil {
		panic(err)
	}
	mount := procsync.BindMount(source, "/data")

	// Configuration time, before the child exists.
	sources, err := procsync.PinSources(mount)
	if err != nil {
		panic(err)
	}
	defer sources.Close()

	// A hostile child swaps the source for a symlink to the host root.
	if err := os.Rename(source, source+".moved"); err != nil {
		panic(err)
	}
	if err := os.Symlink("/", source); err != nil {
		panic(err)
	}

	// The request: the handler serves the pinned object.
	if err := sources.Allow(mount); err != nil {
		panic(err)
	}
	f, kind, err := sources.OpenPlain(mount)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	var served unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &served); err != nil {
		panic(err)
	}
	fmt.Println(procsync.SourceKindName(kind), "fd of the configured directory:",
		served.Dev == configured.Dev && served.Ino == configured.Ino)

	// A second request for the same entry is refused, with a stable kind.
	_, _, err = sources.OpenPlain(mount)
	var se *procsync.SourceError
	if errors.As(err, &se) {
		fmt.Println(se.Kind(), se.Origin())
	}
	// Output:
	// plain-open fd of the configured directory: true
	// already-served peer
}
