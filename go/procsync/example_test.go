//go:build linux

package procsync_test

import (
	"encoding/hex"
	"fmt"

	"github.com/procsync/procsync/go/procsync"
)

func ExampleEncode() {
	rec, err := procsync.Encode(nil, procsync.ReadyMessage(), false, procsync.DefaultLimits())
	if err != nil {
		panic(err)
	}
	fmt.Println(hex.EncodeToString(rec))
	msg, err := procsync.Decode(rec, 0, procsync.DefaultLimits())
	fmt.Println(procsync.TypeName(msg.GetType()), err)

	_, err = procsync.Decode([]byte{0x04, 0x08, 0x02, 0x10, 0x01}, 0, procsync.DefaultLimits())
	kind, _ := procsync.KindOf(err)
	fmt.Println(kind)
	// Output:
	// 020802
	// Ready <nil>
	// missing-fd
}

// A parent serving one configured mount to a child. Here the child runs in
// a goroutine; in real use it is another process that got its end with
// PassToChild and opens it with FromEnv.
func ExampleParent_Serve() {
	parentEnd, childEnd, err := procsync.Pair()
	if err != nil {
		panic(err)
	}
	mount := procsync.BindMount("/", "/rootfs")
	// Pin the configured sources before the child exists: it is then
	// served what "/" is now, whatever it later does to the path.
	sources, err := procsync.PinSources(mount)
	if err != nil {
		panic(err)
	}
	defer sources.Close()

	done := make(chan error, 1)
	go func() {
		child := procsync.NewChild(childEnd, procsync.Options{Flow: procsync.FlowInit})
		f, kind, err := child.MountPlease(mount)
		if err != nil {
			done <- err
			return
		}
		fmt.Println("child got a", procsync.SourceKindName(kind), "fd for", f.Name())
		f.Close()
		if err := child.Hooks(); err != nil {
			done <- err
			return
		}
		if err := child.Ready(); err != nil {
			done <- err
			return
		}
		done <- child.Close()
	}()

	parent := procsync.NewParent(parentEnd, procsync.ParentOptions{
		Options: procsync.Options{Flow: procsync.FlowInit},
		Policy:  sources, // only the configured mounts, each once
	})
	err = parent.Serve(procsync.HandlerFuncs{
		MountFunc: sources.OpenPlain, // or sources.OpenTree (a detached clone)
		HooksFunc: func() error { fmt.Println("parent runs the hooks"); return nil },
	})
	fmt.Println("parent:", err, "child:", <-done)
	// Output:
	// child got a plain-open fd for procsync-received-fd
	// parent runs the hooks
	// parent: <nil> child: <nil>
}
