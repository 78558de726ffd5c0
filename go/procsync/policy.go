package procsync

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	pb "github.com/procsync/procsync/go/procsyncpb"
)

// RefusalPrefix starts the Error reply to a MountPlease the policy refused
// (the Rust crate's session::REFUSAL_PREFIX).
const RefusalPrefix = "mount request refused: "

// MountPolicy decides which mount requests the parent serves (PROTOCOL.md
// §10). It is asked once per MountPlease the state machine accepted, before
// the parent opens anything.
type MountPolicy interface {
	// Allow returns nil to serve req, or why not. The error's text goes to
	// the child as the Error reply, after [RefusalPrefix] (not repeated when
	// the text already starts with it); a *PolicyRefusal is the usual type.
	Allow(req *pb.Mount) error
}

// RefusalKind says why a [PolicyRefusal] refused.
type RefusalKind int

// The refusal kinds.
const (
	// RefusalNotConfigured: no configured mount matches the request.
	RefusalNotConfigured RefusalKind = iota
	// RefusalAlreadyServed: every matching configured mount was served.
	RefusalAlreadyServed
	// RefusalDenied: a custom policy refused, with a reason.
	RefusalDenied
)

// String returns the kind's stable kebab-case name, the Rust crate's
// PolicyRefusalKind name: "not-configured", "already-served", "denied".
func (k RefusalKind) String() string {
	switch k {
	case RefusalNotConfigured:
		return "not-configured"
	case RefusalAlreadyServed:
		return "already-served"
	case RefusalDenied:
		return "denied"
	}
	return fmt.Sprintf("RefusalKind(%d)", int(k))
}

// Origin is always OriginPeer: a refusal is about the peer's request.
func (r *PolicyRefusal) Origin() Origin { return OriginPeer }

// PolicyRefusal is why a mount request was refused. Its text is the Rust
// crate's PolicyRefusal text for the same refusal.
type PolicyRefusal struct {
	Kind RefusalKind
	// Source and Destination are the request's.
	Source, Destination string
	// Nearest (NotConfigured): when a configured mount has the same
	// destination, the first matched field ("source", "flags", ...) in
	// which it differs from the request; "" otherwise.
	Nearest string
	// Index (AlreadyServed): the last matching configured entry.
	Index int
	// Reason (Denied): why, in one line.
	Reason string
}

// Denied returns a refusal for a custom policy, with a one-line reason.
func Denied(reason string) *PolicyRefusal {
	return &PolicyRefusal{Kind: RefusalDenied, Reason: reason}
}

func (r *PolicyRefusal) Error() string {
	switch r.Kind {
	case RefusalDenied:
		return RefusalPrefix + r.Reason
	case RefusalAlreadyServed:
		return fmt.Sprintf("%s -> %s was already served (configured mount #%d); each configured mount is served once",
			strconv.Quote(r.Source), strconv.Quote(r.Destination), r.Index)
	}
	s := fmt.Sprintf("%s -> %s is not one of the container's configured mounts",
		strconv.Quote(r.Source), strconv.Quote(r.Destination))
	if r.Nearest != "" {
		s += fmt.Sprintf(" (the configured mount at %s differs in %s)", strconv.Quote(r.Destination), r.Nearest)
	}
	return s
}

// RefusalText is the Error reply for a refused MountPlease: [RefusalPrefix]
// and the refusal's text (not repeated when the text already starts with
// it).
func RefusalText(refusal error) string {
	text := refusal.Error()
	if strings.HasPrefix(text, RefusalPrefix) {
		return text
	}
	return RefusalPrefix + text
}

// matchedFields are the Mount fields a request must equal a configured
// mount in, in the order they are compared.
var matchedFields = [...]string{"source", "destination", "device", "flags", "cleared_flags",
	"propagation_flags", "data", "rec_attr", "id_mapping"}

// MatchedFields returns the Mount fields a request must equal a configured
// mount in, in the order they are compared (a new slice each call).
func MatchedFields() []string { return slices.Clone(matchedFields[:]) }

// MountMatches reports whether request asks for exactly the configured
// mount: source, destination, device, flags, cleared_flags,
// propagation_flags (in order), data, rec_attr and id_mapping are all
// equal. An absent rec_attr or id_mapping equals a present one with every
// field at its default. extensions and relabel are not compared: they
// change what the child does with the fd, not which host object the parent
// opens.
func MountMatches(configured, request *pb.Mount) bool {
	return firstDifference(configured, request) == ""
}

// firstDifference is the first of matchedFields in which a and b differ,
// or "".
func firstDifference(a, b *pb.Mount) string {
	same := [...]bool{
		a.GetSource() == b.GetSource(),
		a.GetDestination() == b.GetDestination(),
		a.GetDevice() == b.GetDevice(),
		a.GetFlags() == b.GetFlags(),
		a.GetClearedFlags() == b.GetClearedFlags(),
		slices.Equal(a.GetPropagationFlags(), b.GetPropagationFlags()),
		a.GetData() == b.GetData(),
		attrEqual(a.GetRecAttr(), b.GetRecAttr()),
		idMappingEqual(a.GetIdMapping(), b.GetIdMapping()),
	}
	for i, ok := range same {
		if !ok {
			return matchedFields[i]
		}
	}
	return ""
}

// attrEqual compares field by field (unknown fields do not count, as in
// the Rust crate); nil reads as all-default through the getters.
func attrEqual(a, b *pb.MountAttr) bool {
	return a.GetAttrSet() == b.GetAttrSet() && a.GetAttrClr() == b.GetAttrClr() &&
		a.GetPropagation() == b.GetPropagation() && a.GetUsernsFd() == b.GetUsernsFd()
}

func idMappingEqual(a, b *pb.IdMapping) bool {
	return a.GetRecursive() == b.GetRecursive() && a.GetUsernsPath() == b.GetUsernsPath() &&
		idMapsEqual(a.GetUidMappings(), b.GetUidMappings()) &&
		idMapsEqual(a.GetGidMappings(), b.GetGidMappings())
}

func idMapsEqual(a, b []*pb.IdMap) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.IdMap) bool {
		return x.GetContainerId() == y.GetContainerId() && x.GetHostId() == y.GetHostId() &&
			x.GetSize() == y.GetSize()
	})
}

// AllowList is the default MountPolicy: it serves only the container's
// configured mounts (see [MountMatches]), each configured entry at most
// once; the first matching entry not served yet is marked served, so a
// mount configured twice may be served twice. Built from no mounts it
// refuses every request. It is safe for concurrent use.
//
// It decides on the request's fields only; what is then opened is the
// handler's business. Against a hostile child, serve from
// [PinnedSources] (a policy with the same rules, whose handlers serve the
// object each source named when it was pinned): a handler that opens the
// request's path at request time serves whatever the child swapped in.
type AllowList struct {
	mu     sync.Mutex
	mounts []*pb.Mount
	used   []bool
}

// NewAllowList returns a policy serving exactly mounts, each once.
func NewAllowList(mounts ...*pb.Mount) *AllowList {
	return &AllowList{mounts: mounts, used: make([]bool, len(mounts))}
}

// Allow implements MountPolicy; a refusal is a *PolicyRefusal.
func (a *AllowList) Allow(req *pb.Mount) error {
	_, err := a.Serve(req)
	return err
}

// Serve is Allow that also says which configured entry served the
// request, so the caller can open exactly what was configured.
func (a *AllowList) Serve(req *pb.Mount) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	last := -1
	for i, m := range a.mounts {
		if !MountMatches(m, req) {
			continue
		}
		if !a.used[i] {
			a.used[i] = true
			return i, nil
		}
		last = i
	}
	if last >= 0 {
		return -1, &PolicyRefusal{Kind: RefusalAlreadyServed, Source: req.GetSource(),
			Destination: req.GetDestination(), Index: last}
	}
	r := &PolicyRefusal{Kind: RefusalNotConfigured, Source: req.GetSource(), Destination: req.GetDestination()}
	for _, m := range a.mounts {
		if m.GetDestination() != req.GetDestination() {
			continue
		}
		if d := firstDifference(m, req); d != "" {
			r.Nearest = d
			break
		}
	}
	return -1, r
}

// Unserved returns the configured mounts never requested so far, in
// configuration order.
func (a *AllowList) Unserved() []*pb.Mount {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*pb.Mount
	for i, m := range a.mounts {
		if !a.used[i] {
			out = append(out, m)
		}
	}
	return out
}

// AllowAll serves every mount request — runc's behaviour. With it a
// compromised child can make the parent open any host path with the
// parent's credentials: use it only for a trusted child. Never the default.
type AllowAll struct{}

// Allow implements MountPolicy.
func (AllowAll) Allow(*pb.Mount) error { return nil }
