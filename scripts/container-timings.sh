#!/usr/bin/env bash
# Median step timings of a real container start (docs/BENCHMARKS.md), as root:
#   scripts/container-timings.sh [RUNS]      (default 20)
# Runs the release build of the container example with --timings RUNS times
# on a bundle from scripts/make-bundle.sh (two bind mounts: one plain, one
# id-mapped) and, interleaved in the same run, on the same bundle without
# the bind mounts (the baseline: the same start with no MountPlease), both
# pinned to CPU 0 (the parent and the init alike). Prints each step's median.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
[ "$(id -u)" = 0 ] || { echo "container-timings.sh: needs root" >&2; exit 1; }
cargo build --release --locked --features oci --example container >&2
bin=target/release/examples/container
work="$(mktemp -d /tmp/procsync-timings.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work" # the container's root must reach the bundles below
scripts/make-bundle.sh "$work/binds" >/dev/null
PROCSYNC_BUNDLE_BINDS=none scripts/make-bundle.sh "$work/nobinds" >/dev/null
for i in $(seq "$runs"); do
  for v in binds nobinds; do
    taskset -c 0 "$bin" --timings "$work/$v" > "$work/$v.$i.out"
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for v in binds nobinds; do
  echo "== $v: medians of $runs runs, ms"
  # The init's table rows: "<label> <start> <took> init|sync".
  cat "$work"/$v.*.out | awk '$NF == "init" || $NF == "sync" { label = $1; for (i = 2; i <= NF - 3; i++) label = label " " $i; print label "\t" $(NF - 1) "\t" $NF }' > "$work/$v.rows"
  cut -f1,3 "$work/$v.rows" | awk '!seen[$0]++' | while IFS=$'\t' read -r label kind; do
    m=$(awk -F'\t' -v l="$label" '$1 == l { print $2 }' "$work/$v.rows" | median)
    printf '    %-52s %8s  %s\n' "$label" "$m" "$kind"
  done
  total=$(grep -h '^timing: spawn→execve' "$work"/$v.*.out | sed 's/.*execve \([0-9.]*\) ms.*/\1/' | median)
  sync=$(grep -h '^timing: spawn→execve' "$work"/$v.*.out | sed 's/.*conversation \([0-9.]*\) ms.*/\1/' | median)
  work_ms=$(grep -h '^timing: spawn→execve' "$work"/$v.*.out | sed "s/.*own work \([0-9.]*\) ms.*/\1/" | median)
  handler=$(grep -h '^timing: parent handler time' "$work"/$v.*.out | sed 's/.* \([0-9.]*\) ms$/\1/' | median)
  for label in "clone3 returned" "id maps written" "sources pinned in the init's mount ns; init released"; do
    m=$(grep -hF "    $label " "$work"/$v.*.out | awk '{ print $NF }' | median)
    printf '    parent: %-48s %8s\n' "$label" "$m"
  done
  echo "    spawn→execve $total; sync conversation $sync; init's own work $work_ms; parent handler time $handler"
done
