#!/usr/bin/env bash
# Fails when the checked-in go/procsyncpb/ differs from what gen.sh produces
# from proto/ (a schema change without regeneration, or a hand edit).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gomod="$(cd "$here/.." && pwd)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$here/gen.sh" "$tmp"

if ! diff -ru "$gomod/procsyncpb" "$tmp/procsyncpb"; then
	echo "check-gen: go/procsyncpb/ is out of date with proto/; run go/scripts/gen.sh and commit the result" >&2
	exit 1
fi
echo "check-gen: go/procsyncpb/ matches proto/"
