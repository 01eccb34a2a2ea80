# shellcheck shell=bash
# Sourced by the runme.sh of every target that talks to a live Gantry agent.
#
# gantry_agent_start starts `gantry agent serve` (the checkout's, from the .venv on PATH) on a
# unix socket under a fresh temporary directory, with its own --root, builds a busybox root
# file system there, waits until the agent is ready and exports:
#   GANTRY_AGENT_URL    unix://<dir>/agent.sock (the modules' agent_url falls back to it)
#   GANTRY_TEST_DIR     the temporary directory
#   GANTRY_TEST_ROOTFS  <dir>/rootfs, a root file system of busybox applets
#   GANTRY_TEST_SUBNET  a /24 no route of this host uses, for the networks a test makes
# gantry_registry_start adds a docker-registry on loopback (GANTRY_TEST_REGISTRY=127.0.0.1:PORT)
# for pulls and pushes; gantry_rootfs_tarball packs the root file system for image imports;
# gantry_free_subnets gives further /24s (10.128-191.x) for networks a test makes.
# The agent puts its containers' cgroups under a parent of its own (gantry-it-<suffix>), so
# tests running side by side never share one. Its networks are its own too: default bridge
# gi<suffix>, nftables table gantry_it_<suffix>, a free 172.30.x.0/24 default subnet and a
# 172.29.x.0/20 pool for new networks (other agents on this host, test agents included, use
# 10.x subnets), an empty CNI config dir; all removed on exit.
# On exit every container the agent holds is removed (containers outlive the agent, so
# stopping the agent alone would leave them running), the agent is stopped and the directory
# removed: nothing is left behind, also when a test fails.

gantry_agent_api() {
  # gantry_agent_api METHOD PATH: one request to the test agent; prints the body.
  curl --silent --show-error --max-time 60 --unix-socket "$GANTRY_TEST_DIR/agent.sock" \
    -X "$1" "http://localhost$2"
}

gantry_busybox_rootfs() {
  # gantry_busybox_rootfs DIR: a root file system whose every program is the static busybox.
  local dir=$1 applet
  mkdir -p "$dir"/{bin,etc,tmp,proc,sys,dev,www,root}
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ -e $dir/bin/$applet ]] || ln -s busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
}

gantry_free_subnet() {
  # gantry_free_subnet PREFIX LEN STEP: a random PREFIX.N.0/LEN no route of this host overlaps.
  python3 - "$@" <<'PY'
import ipaddress, json, random, subprocess, sys
prefix, length, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=False).stdout
taken = []
for route in json.loads(out or "[]"):
    if route.get("dst") not in (None, "", "default"):
        try:
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
        except ValueError:
            pass
for _ in range(200):
    net = ipaddress.ip_network(f"{prefix}.{random.randrange(0, 256, step)}.0/{length}")
    if not any(net.overlaps(t) for t in taken):
        print(net)
        break
PY
}

gantry_free_subnets() {
  # gantry_free_subnets N [PREFIX]: N free subnets 10.X.Y.0/PREFIX (default /24), X in
  # 128..191 (the agent tests use 10.200-254), each X one no route of this host uses.
  local count=$1 prefix=${2:-24} found=0 x y routes
  routes=$(ip -4 route show table all 2>/dev/null)
  while ((found < count)); do
    x=$((128 + RANDOM % 64))
    y=$((RANDOM % 256))
    if ((prefix < 24)); then
      y=$((y & ~((1 << (24 - prefix)) - 1) & 255))
    fi
    if ! grep -q "10\.$x\." <<<"$routes"; then
      echo "10.$x.$y.0/$prefix"
      routes+=$'\n'"10.$x."
      found=$((found + 1))
    fi
  done
}

gantry_agent_start() {
  GANTRY_TEST_DIR=$(mktemp -d /tmp/gantry-it.XXXXXX)
  export GANTRY_TEST_DIR
  export GANTRY_TEST_ROOTFS=$GANTRY_TEST_DIR/rootfs
  gantry_busybox_rootfs "$GANTRY_TEST_ROOTFS"
  trap gantry_agent_stop EXIT
  GANTRY_TEST_CGROUP=gantry-it-${GANTRY_TEST_DIR##*.}
  GANTRY_TEST_BRIDGE=gi${GANTRY_TEST_DIR##*.}
  GANTRY_TEST_NFT=gantry_it_${GANTRY_TEST_DIR##*.}
  mkdir -p "$GANTRY_TEST_DIR/cni-conf"
  gantry agent serve --root "$GANTRY_TEST_DIR/root" --socket "$GANTRY_TEST_DIR/agent.sock" \
    --cgroup-parent "/$GANTRY_TEST_CGROUP" \
    --network-default-bridge "$GANTRY_TEST_BRIDGE" --network-nft-table "$GANTRY_TEST_NFT" \
    --network-default-subnet "$(gantry_free_subnet 172.30 24 1)" \
    --network-subnet-pool "$(gantry_free_subnet 172.29 20 16)" \
    --cni-config-dir "$GANTRY_TEST_DIR/cni-conf" >"$GANTRY_TEST_DIR/agent.log" 2>&1 &
  GANTRY_AGENT_PID=$!
  GANTRY_TEST_SUBNET=$(gantry_free_subnets 1)
  export GANTRY_TEST_SUBNET
  local tries
  for tries in $(seq 1 300); do
    if [[ -S $GANTRY_TEST_DIR/agent.sock ]] && gantry_agent_api GET /readyz >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$GANTRY_AGENT_PID" 2>/dev/null; then
      echo "gantry agent exited at start-up:" >&2
      cat "$GANTRY_TEST_DIR/agent.log" >&2
      return 1
    fi
    sleep 0.1
  done
  if ((tries == 300)); then
    echo "gantry agent did not become ready:" >&2
    cat "$GANTRY_TEST_DIR/agent.log" >&2
    return 1
  fi
  export GANTRY_AGENT_URL=unix://$GANTRY_TEST_DIR/agent.sock
}

gantry_agent_stop() {
  local rc=$? name
  set +e
  if [[ -n ${GANTRY_AGENT_PID:-} ]] && kill -0 "$GANTRY_AGENT_PID" 2>/dev/null; then
    for name in $(gantry_agent_api GET /v1/containers |
      python3 -c 'import json, sys; print(" ".join(c["name"] for c in json.load(sys.stdin)))'); do
      gantry_agent_api DELETE "/v1/containers/$name?force=true" >/dev/null
    done
    # Networks the test made (their bridges and rules go with them; the default one below).
    for name in $(gantry_agent_api GET /v1/networks 2>/dev/null |
      python3 -c 'import json, sys
try:
    print(" ".join(n["name"] for n in json.load(sys.stdin) if n["name"] != "gantry"))
except (ValueError, TypeError, KeyError):
    pass'); do
      gantry_agent_api DELETE "/v1/networks/$name" >/dev/null
    done
    kill "$GANTRY_AGENT_PID"
    wait "$GANTRY_AGENT_PID"
  fi
  if ((rc != 0)) && [[ -f $GANTRY_TEST_DIR/agent.log ]]; then
    echo "---- agent log" >&2
    tail -n 50 "$GANTRY_TEST_DIR/agent.log" >&2
  fi
  # The parent cgroups the agent made (empty once its containers are gone).
  if [[ -n ${GANTRY_TEST_CGROUP:-} ]]; then
    find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$GANTRY_TEST_CGROUP" \
      -exec rmdir {} + 2>/dev/null
  fi
  # Its networks: the default bridge and nftables table (a user network's bridge is named
  # gantry-<id>: a target that creates one removes it with the network).
  if [[ -n ${GANTRY_TEST_BRIDGE:-} ]]; then
    ip link delete "$GANTRY_TEST_BRIDGE" type bridge 2>/dev/null
    nft delete table inet "$GANTRY_TEST_NFT" 2>/dev/null
  fi
  if [[ -n ${GANTRY_REGISTRY_PID:-} ]]; then
    kill "$GANTRY_REGISTRY_PID" 2>/dev/null
    wait "$GANTRY_REGISTRY_PID" 2>/dev/null
  fi
  rm -rf "$GANTRY_TEST_DIR"
  return "$rc"
}

gantry_rootfs_tarball() {
  # gantry_rootfs_tarball ROOTFS TARBALL: a gzip tarball of a root file system, for imports.
  tar -C "$1" -czf "$2" .
}

gantry_registry_start() {
  # A docker-registry on 127.0.0.1:<free port> with its storage under GANTRY_TEST_DIR,
  # stopped by gantry_agent_stop. Loopback registries are spoken to over plain HTTP.
  local port tries
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$GANTRY_TEST_DIR/registry" "$port" >"$GANTRY_TEST_DIR/registry.yml"
  docker-registry serve "$GANTRY_TEST_DIR/registry.yml" >"$GANTRY_TEST_DIR/registry.log" 2>&1 &
  GANTRY_REGISTRY_PID=$!
  for tries in $(seq 1 200); do
    if curl --silent --max-time 2 "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
      export GANTRY_TEST_REGISTRY=127.0.0.1:$port
      return 0
    fi
    sleep 0.1
  done
  echo "docker-registry did not start (try $tries):" >&2
  cat "$GANTRY_TEST_DIR/registry.log" >&2
  return 1
}
