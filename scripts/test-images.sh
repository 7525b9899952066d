#!/usr/bin/env bash
# Test assets of the runtime drivers, built under target/test-assets/ when
# missing (quick and idempotent on re-runs):
#   busybox            a static busybox executable, from Debian's
#                      busybox-static package (the process driver's tests);
#   busybox-image.tar  a `docker save` tarball of the image
#                      locus-test-busybox:1 (FROM scratch, /bin/busybox as
#                      entrypoint), removed from the engine afterwards so the
#                      container driver's tests really load it.
# Needs root for apt-get (CI runs as root) and a Docker engine for the image;
# without an engine the image is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

assets=target/test-assets
image=locus-test-busybox:1
mkdir -p "$assets"

# One builder at a time (test binaries may call this script concurrently).
exec 9>"$assets/.lock"
flock 9

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$assets/busybox" ]; then
    echo "test-images: fetching busybox-static" >&2
    if ! (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1); then
        apt-get update -qq >/dev/null
        (cd "$tmp" && apt-get download busybox-static >/dev/null)
    fi
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/root"
    install -m 0755 "$tmp/root/bin/busybox" "$assets/busybox.part"
    mv "$assets/busybox.part" "$assets/busybox"
fi

if [ ! -s "$assets/busybox-image.tar" ]; then
    if ! docker version >/dev/null 2>&1; then
        echo "test-images: no Docker engine reachable; $assets/busybox-image.tar not built" >&2
        exit 0
    fi
    echo "test-images: building $image" >&2
    mkdir "$tmp/ctx"
    cp "$assets/busybox" "$tmp/ctx/busybox"
    cat >"$tmp/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox"]
EOF
    DOCKER_BUILDKIT=0 docker build --quiet -t "$image" "$tmp/ctx" >/dev/null 2>&1 ||
        docker build --quiet -t "$image" "$tmp/ctx" >/dev/null
    docker save "$image" -o "$assets/busybox-image.part"
    docker rmi "$image" >/dev/null
    mv "$assets/busybox-image.part" "$assets/busybox-image.tar"
fi
