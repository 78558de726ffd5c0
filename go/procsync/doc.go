// Package procsync speaks procsync's native wire: the parent <-> child sync
// protocol a container runtime uses while it sets up a container (runc's
// libcontainer/sync.go), over a SOCK_SEQPACKET Unix socket.
//
// Layers, bottom up:
//
//   - Codec: [Encode] and [Decode] turn a [procsyncpb.SyncMessage] into the
//     bytes of one record, varint(len(body)) || body, and back, with the same
//     validation rules, in the same order, and the same stable error kinds
//     ([ErrorKind]) as every other implementation (the golden vectors in
//     tests/vectors/native.json hold them all to it).
//   - Transport: [SyncSocket] sends and receives one record per
//     sendmsg/recvmsg, with at most one fd as SCM_RIGHTS, deadlines, and
//     peer-death detection through a pidfd.
//   - State: [Machine] knows which message may follow which, for both roles
//     and the flows ([FlowInit], [FlowExec], [FlowExecNoReady]): the Rust
//     crate's machine, with the same state names, Broken and crossing-Error
//     rules, close rules and error kinds (tests/vectors/state.json, generated from the Rust
//     machine, holds both to it).
//   - Sessions: [Child] and [Parent] drive a whole exchange: the child asks
//     (MountPlease, Hooks, Ready, Seccomp), the parent answers through a
//     [Handler] and a [MountPolicy] ([AllowList] by default: only the
//     configured mounts, each once), behaving as the Rust sessions do.
//   - Mount sources: [PinSources] pins each configured bind source before
//     the child exists; the [PinnedSources] is the policy and its OpenPlain
//     and OpenTree serve the pinned objects, so a child that swaps a path
//     for a symlink is still served what was configured.
//
// The package is Linux-only where it touches the kernel; the codec and the
// state machine are pure Go.
package procsync
