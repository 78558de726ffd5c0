#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and fails on any crash.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 30 s, all)
# Uses AddressSanitizer via RUSTC_BOOTSTRAP=1 on stable; set
# PROCSYNC_FUZZ_SANITIZER=none to run without it. New inputs go to a scratch
# copy of the corpus, so the committed corpus is left as it is.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
san="${PROCSYNC_FUZZ_SANITIZER:-address}"
# A cached toolchain probe from a run without RUSTC_BOOTSTRAP breaks -Z flags.
rm -f target/.rustc_info.json
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s (sanitizer: $san)"
  work=$(mktemp -d)
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  log="$work.log"
  status=0
  cargo fuzz run -O --sanitizer "$san" "$t" "$work" -- \
    -max_total_time="$secs" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done|SUMMARY|Test unit written)' "$log" || true
  rm -rf "$work"
  if [ "$status" != 0 ]; then
    tail -n 60 "$log" >&2
    echo "!! fuzz target $t failed (crash inputs are in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  rm -f "$log"
done
