#!/usr/bin/env bash
# The package tests itself: builds the .crate exactly as `cargo publish`
# would upload it, unpacks it into a temporary directory (no go/, no fuzz/,
# no git) and runs its tests there: `cargo test --all-features` and the
# doctests with default features. Tests that need what the package does not
# ship (the Go interop tests need go/, the corpus replay fuzz/) detect the
# packaged crate (Cargo.toml.orig) and skip with a printed reason, even with
# CI=true.
# Usage: scripts/package-test.sh   (from anywhere in the repository)
# PROCSYNC_PACKAGE_TARGET_DIR picks the build directory (default:
# target, so the dependencies built for the repository are reused).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=$(cargo metadata --no-deps --format-version 1 --locked |
  sed -n 's/.*"name":"procsync","version":"\([^"]*\)".*/\1/p')
[ -n "$version" ] || { echo "cannot read procsync's version" >&2; exit 1; }

echo "== cargo package"
# --allow-dirty: package the working tree as it is (CI's checkout is clean).
# --no-verify: the tests below build it, with every feature.
cargo package --locked --allow-dirty --no-verify
crate="$root/target/package/procsync-$version.crate"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
pkg="$work/procsync-$version"
echo "== unpacked $(basename "$crate"): $(find "$pkg" -type f | wc -l) files, $(du -sk "$crate" | cut -f1) KiB packed"
for absent in go fuzz .ci scripts/test.sh; do
  [ ! -e "$pkg/$absent" ] || { echo "the package ships $absent/" >&2; exit 1; }
done
[ -f "$pkg/Cargo.toml.orig" ] || { echo "no Cargo.toml.orig: the tests cannot tell they are packaged" >&2; exit 1; }

export CARGO_TARGET_DIR="${PROCSYNC_PACKAGE_TARGET_DIR:-$root/target}"
cd "$pkg"
echo "== packaged crate: cargo test --all-features"
cargo test --all-features --locked
echo "== packaged crate: doctests with default features"
cargo test --doc --locked
echo "== the package tests itself"
