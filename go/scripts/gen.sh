#!/usr/bin/env bash
# Regenerates go/procsyncpb/ from proto/procsync/v1/sync.proto.
#
# No protoc needed: go/tools/cmd/protogen compiles the schema with
# github.com/bufbuild/protocompile and drives protoc-gen-go. Both tools are
# pinned by go/tools/go.mod (protoc-gen-go as a `tool` directive); its
# google.golang.org/protobuf version must equal the one in go/go.mod, which
# this script checks.
#
# Usage: go/scripts/gen.sh [OUT_DIR]   (default: go/, i.e. in place)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gomod="$(cd "$here/.." && pwd)"
repo="$(cd "$gomod/.." && pwd)"
out="${1:-$gomod}"

want="$(cd "$gomod" && go list -m -f '{{.Version}}' google.golang.org/protobuf)"
have="$(cd "$gomod/tools" && go list -m -f '{{.Version}}' google.golang.org/protobuf)"
if [[ "$want" != "$have" ]]; then
	echo "gen.sh: google.golang.org/protobuf is $want in go/go.mod but $have in go/tools/go.mod; make them equal" >&2
	exit 1
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$gomod/tools" && go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go &&
	go build -o "$bin/protogen" ./cmd/protogen)

mkdir -p "$out/procsyncpb"
rm -f "$out"/procsyncpb/*.pb.go
"$bin/protogen" \
	-proto_path "$repo/proto" \
	-plugin "$bin/protoc-gen-go" \
	-param "module=github.com/procsync/procsync/go" \
	-out "$out" \
	procsync/v1/sync.proto
