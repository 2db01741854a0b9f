#!/usr/bin/env bash
# Install the Debian packages the tests drive for real: Prometheus, rsyslog,
# podman (with runc and debootstrap, to build the images without a registry),
# and libzmq's headers for the benchmark's C client.
# Runs only as root on a machine with apt; elsewhere it says what is missing,
# and those tests skip (or fail, under CI=true).
set -euo pipefail

declare -A package_of=(
  [prometheus]=prometheus
  [rsyslogd]=rsyslog
  [podman]=podman
  [runc]=runc
  [debootstrap]=debootstrap
  [/usr/include/zmq.h]=libzmq3-dev
)

missing=()
for program in "${!package_of[@]}"; do
  command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || [ -e "$program" ] ||
    missing+=("${package_of[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages: ${missing[*]} (install them, or their tests are skipped)" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
