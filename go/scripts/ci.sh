#!/usr/bin/env bash
# Everything CI runs for the Go package, in order. Run from anywhere.
#   FUZZTIME   bounded fuzz run length (default 30s; "0" skips fuzzing)
#   BENCHTIME  benchmark smoke iterations (default 2000x; "0" skips)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
fuzztime="${FUZZTIME:-30s}"
benchtime="${BENCHTIME:-2000x}"

echo "== go: $(go version)"
echo "== go: gofmt"
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo "== go: go mod tidy -diff"
go mod tidy -diff
(cd tools && go mod tidy -diff)
echo "== go: go vet"
go vet ./...
(cd tools && go vet ./...)
echo "== go: check-gen"
scripts/check-gen.sh
echo "== go: go test -race"
go test -race -count=1 ./...
if [[ "$fuzztime" != "0" ]]; then
	echo "== go: fuzz FuzzDecode for $fuzztime"
	go test -run '^$' -fuzz FuzzDecode -fuzztime "$fuzztime" -fuzzminimizetime 1s ./procsync
fi
if [[ "$benchtime" != "0" ]]; then
	echo "== go: benchmark smoke"
	go test -run '^$' -bench . -benchtime "$benchtime" ./procsync
fi
