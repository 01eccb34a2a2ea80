#!/usr/bin/env bash
# `make setup`: everything a fresh Debian 12 machine needs to run the demo and every test.
# Idempotent: each step checks what is already there and does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}

# Debian packages the project uses (tests, probes, the anchors' scripts).
APT_PACKAGES=(
  python3-venv rsync xz-utils git make gcc libc6-dev
  busybox-static tini uidmap iproute2 iptables nftables kmod
  containernetworking-plugins  # CNI plugins (bridge, host-local, portmap, firewall, macvlan, ipvlan, loopback) in /usr/lib/cni
  shellcheck  # ansible-test sanity runs it on the shell scripts
  runc  # a reference anchor only: `runc spec` bundles and benchmarks, never run under Gantry
  podman  # the anchor of bench/ansible.py (podman with runc); no service is started
  skopeo umoci docker-registry  # image tests: build, copy and serve images (registry on loopback only)
  zstd  # zstd-compressed layers are decompressed by the zstd binary
  apache2-utils  # htpasswd -B: bcrypt htpasswd files for the registry auth tests
  mmdebstrap  # scripts/debian-image.sh: Debian images for the JVM, system-container and fleet tests
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The anchors: lxc-checkconfig (LXC 5.0), moby's check-config.sh (Debian's docker.io) and
# Debian's own kernel configs, unpacked from their .debs without installing the packages
# (installing docker.io or lxc would add services this machine must not run).
ANCHORS=.cache/anchors
if [[ ! -f $ANCHORS/.done ]]; then
  echo "setup: unpacking anchor scripts and Debian kernel configs into $ANCHORS"
  rm -rf "$ANCHORS" .cache/debs
  mkdir -p "$ANCHORS/configs" .cache/debs
  (cd .cache/debs && apt-get download -qq lxc docker.io linux-config-6.1 2>/dev/null) || {
    apt-get update -qq && (cd .cache/debs && apt-get download -qq lxc docker.io linux-config-6.1)
  }
  for deb in .cache/debs/*.deb; do dpkg-deb -x "$deb" .cache/debs/x; done
  cp .cache/debs/x/usr/bin/lxc-checkconfig "$ANCHORS/"
  cp .cache/debs/x/usr/share/docker.io/contrib/check-config.sh "$ANCHORS/"
  for f in .cache/debs/x/usr/src/linux-config-*/config.*.xz; do
    xz -dc "$f" >"$ANCHORS/configs/$(basename "$f" .xz)"
  done
  rm -rf .cache/debs
  touch "$ANCHORS/.done"
fi

# The virtual environment with the pinned toolchain and the agent installed editable.
stamp=$(cat requirements-dev.txt agent/pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || "$(cat .venv/.stamp 2>/dev/null)" != "$stamp" ]]; then
  echo "setup: building .venv"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  if ! { .venv/bin/pip install --disable-pip-version-check -r requirements-dev.txt &&
         .venv/bin/pip install --disable-pip-version-check -e agent; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "setup: pip install failed (log above, also in .venv/install.log)" >&2
    exit 1
  fi
  .venv/bin/python -c 'import gantry, ansible' # fails the setup if either is missing
  echo "$stamp" >.venv/.stamp
fi

# gantry-shim, the C process that stays behind for each running container.
SHIM=agent/gantry/runtime/shim/gantry-shim
if [[ ! -x $SHIM || $SHIM.c -nt $SHIM ]]; then
  echo "setup: compiling $SHIM"
  # Static: no dynamic loader and no relocated libc pages per running shim (PSS).
  cc -Os -static -Wall -Wextra -Werror -o "$SHIM" "$SHIM.c" ||
    cc -Os -Wall -Wextra -Werror -o "$SHIM" "$SHIM.c"
fi

# ansible-test --venv bootstraps pip with a script it downloads from a host outside the
# package registries; it looks in its cache first, so an equivalent of ours goes there.
pip_version=$(.venv/bin/python - <<'PY'
import pathlib, re, ansible_test
source = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", source.read_text()).group(1))
PY
)
pip_cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if ! cmp -s scripts/get_pip_offline.py "$pip_cache"; then
  mkdir -p "$(dirname "$pip_cache")"
  cp scripts/get_pip_offline.py "$pip_cache"
fi

# Ansible finds the collection from the checkout through ansible.cfg (collections_path).
mkdir -p .collections/ansible_collections/gantry
ln -sfn ../../.. .collections/ansible_collections/gantry/fleet
echo "setup: ready ($ROOT)"
