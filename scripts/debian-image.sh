#!/usr/bin/env bash
# Build (once, then cached) a Debian bookworm root filesystem tarball for the tests, the
# benchmarks and the simulated fleet: `scripts/debian-image.sh VARIANT` prints the path of
# .cache/images/VARIANT-<key>.tar (or $GANTRY_IMAGE_CACHE/…), which `gantry import` (or ImageService.import_rootfs)
# turns into an image. Nothing of Gantry is inside: these are bare Debian systems.
#
# mmdebstrap reads this host's apt sources itself, so no mirror is written here. The cache
# key is the variant's package list: change the list and the image is built again.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=${1:-}
case $variant in
  base)  # a small Debian userland with python3: enough for Ansible modules
    packages=(python3 ca-certificates sudo) ;;
  java)  # a real JVM, to check what the runtime shows a container of its cgroup limits
    packages=(openjdk-17-jre-headless) ;;
  system)  # a bare host: systemd as PID 1, sshd, what Ansible and the Gantry roles need
    packages=(systemd systemd-sysv dbus openssh-server python3 python3-venv iproute2 nftables
              kmod ca-certificates sudo procps) ;;
  *)
    echo "usage: $0 base|java|system" >&2
    exit 2 ;;
esac

key=$(printf '%s\n' bookworm "${packages[@]}" | sha256sum | cut -c1-12)
cache=${GANTRY_IMAGE_CACHE:-$PWD/.cache/images}  # shared between checkouts when set
out=$cache/$variant-$key.tar
if [[ ! -s $out ]]; then
  command -v mmdebstrap >/dev/null || {
    echo "$0: mmdebstrap is missing (make setup installs it)" >&2
    exit 1
  }
  mkdir -p "$cache"
  tmp=$(mktemp "$out.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  include=$(IFS=,; echo "${packages[*]}")
  # --variant=apt: essential packages plus apt, and only what --include asks for. The hook
  # leaves an empty machine-id, so each container (or booted system) makes its own.
  # shellcheck disable=SC2016  # "$1" is expanded by mmdebstrap's hook shell, not here
  hook='rm -f "$1"/etc/machine-id; : >"$1"/etc/machine-id'
  mmdebstrap --quiet --variant=apt --format=tar --include="$include" \
    --customize-hook="$hook" bookworm "$tmp" >&2
  chmod 0644 "$tmp"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out"
