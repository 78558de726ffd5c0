#!/usr/bin/env bash
# The whole test suite: Rust (unit, integration, cross-process, corpus
# replay), Go (package, vectors, race), and Rust <-> Go interop.
# Usage: scripts/test.sh        (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: cargo test (all features)"
cargo test --all-features --locked
