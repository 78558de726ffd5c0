//go:build linux

package procsync

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// goKinds is every ErrorKind constant of the package.
var goKinds = []ErrorKind{
	KindEmptyRecord, KindTruncatedLength, KindMalformedLength, KindLengthMismatch, KindTooLarge,
	KindMalformedBody, KindUnspecifiedType, KindUnknownType, KindReservedFlags, KindMissingFd,
	KindUnexpectedFd, KindTooManyFds, KindMissingPayload, KindUnexpectedPayload, KindInvalidValue,
	KindPeerClosed, KindPeerDied, KindTimeout, KindSendTimeout, KindUnexpectedControl,
	KindNotSeqpacket, KindEnvNotSet, KindEnvInvalid, KindWriteShutdown, KindIO, KindClosed,
	KindCanceled, KindBadFile,
	KindProtocolViolation, KindMisuse, KindRemoteError, KindTransport, KindMountRefused,
	KindHandlerFailed, KindHandlerOverran, KindSourceMismatch, KindSourceDowngraded,
}

// rustOnly are Rust kinds the Go package cannot produce: a send that
// makes a single attempt (would-block), passing fd 0–2 to a child (Go's
// PassToChild always duplicates above 2), a session failure of the OS outside the socket (Go reports those as the
// transport's io).
var rustOnly = map[string]bool{"would-block": true, "stdio-fd": true, "os": true}

// The Go package exposes the Rust crate's kind names (13.1): every kind
// `as_str` names in the wire, transport and session error kinds, read from
// the Rust sources, is a Go ErrorKind (or listed in rustOnly, with why).
func TestErrorKindsMatchRust(t *testing.T) {
	have := map[string]bool{}
	for _, k := range goKinds {
		if have[string(k)] {
			t.Fatalf("duplicate kind %q", k)
		}
		have[string(k)] = true
	}
	re := regexp.MustCompile(`(?m)^\s*(?:ErrorKind|TransportErrorKind|SessionErrorKind)::[A-Za-z]+ => "([a-z-]+)",`)
	for _, file := range []string{"../../src/wire/mod.rs", "../../src/transport/mod.rs", "../../src/session/error.rs"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		found := re.FindAllStringSubmatch(string(src), -1)
		if len(found) == 0 && !strings.Contains(file, "transport") {
			t.Fatalf("%s: no kind names found (did the table move?)", file)
		}
		for _, m := range found {
			if !have[m[1]] && !rustOnly[m[1]] {
				t.Errorf("%s: Rust kind %q has no Go ErrorKind", file, m[1])
			}
		}
	}
	for _, k := range goKinds {
		if k.String() != string(k) || strings.ToLower(string(k)) != string(k) {
			t.Fatalf("kind %q", k)
		}
	}
}

// KindOf gives a session's protocol errors their session kind, as the
// Rust SessionError does: a violation by the peer (also "closed without
// Ready", whose cause is peer-closed) and a local misuse.
func TestKindOfProtocolErrors(t *testing.T) {
	a, b := pair(t)
	c := NewChild(b, Options{Flow: FlowInit})
	err := c.Ready() // not allowed before Hooks: misuse, nothing sent
	if k, _ := KindOf(err); k != KindMisuse {
		t.Fatalf("misuse: %q %v", k, err)
	}
	done := make(chan error, 1)
	go func() { done <- NewParent(a, ParentOptions{Options: Options{Flow: FlowInit}}).Serve(HandlerFuncs{}) }()
	c.Close() // before Ready: the parent sees a violation
	err = <-done
	if k, _ := KindOf(err); k != KindProtocolViolation || !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("violation: %q %v", k, err)
	}
}

// The sentinels stay what they are: errors built from them (with an Op)
// are copies, and errors.Is matches any TransportError of their kind.
func TestSentinelsAreNotModified(t *testing.T) {
	a, b := pair(t)
	defer a.Close()
	done := make(chan error, 1)
	go func() { _, _, err := b.Recv(soon()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	for _, s := range []error{ErrClosed, ErrPeerClosed, ErrPeerDied} {
		if te := s.(*TransportError); te.Op != "" || te.Err != nil {
			t.Fatalf("sentinel modified: %+v", te)
		}
	}
	if !errors.Is(&TransportError{kind: KindClosed, Op: "recv"}, ErrClosed) ||
		errors.Is(&TransportError{kind: KindPeerDied, Op: "recv"}, ErrClosed) {
		t.Fatal("Is by kind")
	}
}
