#!/usr/bin/env bash
# Build (once, then cached in podman's storage) the local base image that the
# container tests pass as BASE_IMAGE to every stage's Dockerfile:
#   1. debootstrap --variant=minbase bookworm from the Debian mirror apt uses,
#   2. podman import it as a rootfs image,
#   3. add python3 + a venv with the pinned wheels of the stages and of the
#      load generator image (containers/base).
# Prints the image name on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/containers/containers.conf}"

ROOTFS_IMAGE=localhost/echo-rootfs:bookworm
# The tag carries a hash of the pins and the Containerfile: change either and
# the base is rebuilt, otherwise it is reused.
pins_hash=$(cat stages/*/requirements.txt loadgen-image/requirements.txt containers/base/Containerfile |
  sha256sum | cut -c1-12)
BASE_IMAGE=localhost/echo-base:$pins_hash

if podman image exists "$BASE_IMAGE"; then
  echo "$BASE_IMAGE"
  exit 0
fi

# The mirror apt on this machine already uses (deb822 or one-line format).
mirror=$(
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '/^deb / {print $2}'
  } | grep -v -e security -e '^https' | grep -m 1 '/debian/\?$' || true
)
[ -n "$mirror" ] || { echo "no plain-HTTP Debian mirror found in apt's sources" >&2; exit 1; }

if ! podman image exists "$ROOTFS_IMAGE"; then
  rootfs=$(mktemp -d /var/tmp/echo-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap bookworm from $mirror ..." >&2
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
  # Inside the image, apt must use plain HTTP too: the same mirror.
  echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$ROOTFS_IMAGE" >&2
fi

context=$(mktemp -d /var/tmp/echo-base.XXXXXX)
trap 'rm -rf "$context" ${rootfs:+"$rootfs"}' EXIT
cat stages/*/requirements.txt | sort -u > "$context/requirements.txt"
echo "downloading wheels for: $(tr '\n' ' ' < "$context/requirements.txt")" >&2
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.11 --no-deps -d "$context/wheels" -r "$context/requirements.txt" >&2
# The load generator's client library brings dependencies of its own.
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
  --python-version 3.11 -d "$context/wheels" -r loadgen-image/requirements.txt >&2
cp containers/base/Containerfile "$context/"
podman build --quiet --build-arg ROOTFS_IMAGE="$ROOTFS_IMAGE" -t "$BASE_IMAGE" "$context" >&2
# Older bases (other pins) are no longer used by anything: free their space.
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/echo-base:' | grep -vx "$BASE_IMAGE" |
  xargs -r podman rmi >&2 || true
echo "$BASE_IMAGE"
