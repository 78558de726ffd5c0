#!/usr/bin/env bash
# Builds an OCI bundle for `cargo run --example container` from what the
# machine has (no network), as root:
#   scripts/make-bundle.sh DIR [EXIT_CODE]
# DIR/rootfs        a rootfs holding /bin/probe (examples/container/probe.c,
#                   built static if the C library allows it, otherwise with
#                   the shared libraries ldd names), owned by the container's
#                   root (host uid/gid 100000)
# DIR/shared        a plain read-only bind mount source (/plain)
# DIR/owned         owned by host uid/gid 4242: an id-mapped bind mount
#                   (/mapped) maps 4242 to 100000, the container's root
# DIR/host-only     never mounted: the probe tries to reach it by host path
# DIR/config.json   user, mount, pid, uts and ipc namespaces; container
#                   ids 0-65535 are host ids 100000-165535; a new /proc
set -euo pipefail
dir=${1:?usage: make-bundle.sh DIR [EXIT_CODE]}
exit_code=${2:-0}
here="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "make-bundle.sh: needs root (chown to the mapped ids)" >&2; exit 1; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
rootfs="$dir/rootfs"
rm -rf "$rootfs" "$dir/shared" "$dir/owned" "$dir/host-only"
mkdir -p "$rootfs"/{bin,proc,tmp,plain,mapped} "$dir/shared" "$dir/owned" "$dir/host-only"

cc=${CC:-cc}
if "$cc" -static -O2 -o "$rootfs/bin/probe" "$here/examples/container/probe.c" 2>/dev/null; then
  :
else
  # No static C library: a dynamic probe plus the libraries it loads.
  "$cc" -O2 -o "$rootfs/bin/probe" "$here/examples/container/probe.c"
  for lib in $(ldd "$rootfs/bin/probe" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
fi

echo "hello from the host" > "$dir/shared/hello.txt"
# World-writable, so only the read-only mount stops a write (EROFS).
chmod 0666 "$dir/shared/hello.txt"
echo "mapped" > "$dir/owned/file.txt"
chown -R 4242:4242 "$dir/owned"
echo "the container must not see this" > "$dir/host-only/secret.txt"
chown -R 100000:100000 "$rootfs"
chmod 0755 "$dir"

# PROCSYNC_BUNDLE_BINDS=none leaves the two bind mounts out (the baseline
# of scripts/container-timings.sh: the same start without MountPlease).
binds='
    { "destination": "/plain", "type": "bind", "source": "'"$dir"'/shared", "options": ["bind", "ro", "nosuid", "nodev"] },
    { "destination": "/mapped", "type": "bind", "source": "'"$dir"'/owned", "options": ["bind", "idmap"],
      "uidMappings": [{ "containerID": 4242, "hostID": 100000, "size": 1 }],
      "gidMappings": [{ "containerID": 4242, "hostID": 100000, "size": 1 }] },'
[ "${PROCSYNC_BUNDLE_BINDS:-all}" = none ] && binds=

cat > "$dir/config.json" <<JSON
{
  "ociVersion": "1.1.0",
  "process": {
    "user": { "uid": 0, "gid": 0 },
    "args": ["/bin/probe", "/mapped", "/plain/hello.txt", "$dir/host-only/secret.txt", "$exit_code"],
    "env": ["PATH=/bin", "TERM=dumb"],
    "cwd": "/"
  },
  "root": { "path": "rootfs" },
  "hostname": "procsync-demo",
  "mounts": [$binds
    { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }
  ],
  "linux": {
    "namespaces": [{ "type": "user" }, { "type": "mount" }, { "type": "pid" }, { "type": "uts" }, { "type": "ipc" }],
    "uidMappings": [{ "containerID": 0, "hostID": 100000, "size": 65536 }],
    "gidMappings": [{ "containerID": 0, "hostID": 100000, "size": 65536 }]
  }
}
JSON
echo "bundle ready: $dir"
