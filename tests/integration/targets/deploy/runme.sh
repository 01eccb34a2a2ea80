#!/usr/bin/env bash
# playbooks/deploy.yml as ops teams run it, on a one-host inventory of the test's own: the
# agent role starts a real agent (own root, socket, cgroup parent, bridge, subnet, nftables
# table), the containers role imports two images and runs a busybox httpd from the first on
# a published port. Then, as issue 8 asks:
#   - a second run reports changed=0 on every play;
#   - a new memory limit in the inventory changes the running container in place (same id,
#     same process, the cgroup's limit rewritten);
#   - a new image in the inventory recreates it (new id), and the page it serves changes;
# and playbooks/teardown.yml takes it all down again.
set -eux
cd "$(dirname "$0")"
# shellcheck source=../setup_gantry_agent/agent.sh
source ../setup_gantry_agent/agent.sh
# The collection's own playbooks, by name (ansible-test runs a copy of the target).

DIR=$(mktemp -d /tmp/gantry-deploy.XXXXXX)
SUFFIX=${DIR##*.}
SUFFIX=${SUFFIX,,}
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CGROUP=gantry-deploy-$SUFFIX
INVENTORY=$DIR/inventory.yml
SUBNET=$(gantry_free_subnet 172.28 24 1)

cleanup() {
  local rc=$?
  set +e
  ansible-playbook -i "$INVENTORY" gantry.fleet.teardown >"$DIR/teardown.log" 2>&1 ||
    cat "$DIR/teardown.log"
  if [[ -f $DIR/agent.pid ]]; then kill "$(cat "$DIR/agent.pid")" 2>/dev/null; fi
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$CGROUP" -exec rmdir {} + 2>/dev/null
  if ((rc != 0)) && [[ -f $DIR/agent.log ]]; then tail -n 40 "$DIR/agent.log"; fi
  rm -rf "$DIR"
  return "$rc"
}
trap cleanup EXIT

# Two images that differ in the page they serve.
for version in 1 2; do
  gantry_busybox_rootfs "$DIR/rootfs$version"
  echo "deploy version $version" >"$DIR/rootfs$version/www/index.html"
  gantry_rootfs_tarball "$DIR/rootfs$version" "$DIR/web$version.tar.gz"
done

write_inventory() {
  # write_inventory IMAGE_VERSION MEMORY
  cat >"$INVENTORY" <<YAML
all:
  children:
    gantry_hosts:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: "{{ ansible_playbook_python }}"
          gantry_agent_executable: "$(command -v gantry)"
          gantry_agent_root: $DIR/root
          gantry_agent_socket: $DIR/agent.sock
          gantry_agent_url: unix://$DIR/agent.sock
          gantry_agent_pid_file: $DIR/agent.pid
          gantry_agent_log_file: $DIR/agent.log
          gantry_agent_cgroup_parent: /$CGROUP
          gantry_agent_network_default_subnet: "$SUBNET"
          gantry_agent_network_default_bridge: gd$SUFFIX
          gantry_agent_network_nft_table: gantry_d$SUFFIX
          gantry_agent_network_remove: true
          gantry_images:
            - {name: "deploy/web:1", source: import, path: "$DIR/web1.tar.gz"}
            - {name: "deploy/web:2", source: import, path: "$DIR/web2.tar.gz"}
          gantry_containers:
            - name: deploy-web
              image: "deploy/web:$1"
              command: [httpd, -f, -p, "8080", -h, /www]
              published_ports: ["127.0.0.1:$PORT:8080"]
              memory: $2
              stop_signal: SIGKILL
          gantry_service_checks:
            - {name: deploy-web, url: "http://127.0.0.1:$PORT/"}
YAML
}

deploy() {
  # deploy LOG: run deploy.yml; its output in LOG
  ansible-playbook -i "$INVENTORY" gantry.fleet.deploy >"$1" 2>&1 || {
    cat "$1"
    return 1
  }
}

inspect() {
  curl --silent --show-error --max-time 60 --unix-socket "$DIR/agent.sock" \
    http://localhost/v1/containers/deploy-web
}

field() {
  # field EXPR: a Python expression over the inspected container `c`
  inspect | python3 -c "import json, sys; c = json.load(sys.stdin); print($1)"
}

write_inventory 1 32m

deploy "$DIR/run1.log"
grep -E '^localhost +: .*failed=0' "$DIR/run1.log"
if grep -E '^localhost +: .*changed=0 ' "$DIR/run1.log"; then exit 1; fi
test "$(curl --silent --max-time 10 "http://127.0.0.1:$PORT/")" = "deploy version 1"

# Second run, nothing changed in the inventory: no change anywhere.
deploy "$DIR/run2.log"
grep -E '^localhost +: .*changed=0 .*failed=0' "$DIR/run2.log"

ID1=$(field 'c["id"]')
PID1=$(field 'c["state"]["pid"]')

# A new memory limit: in place, same container, same process, the cgroup says so.
write_inventory 1 48m
deploy "$DIR/run3.log"
grep -E '^localhost +: .*changed=1 .*failed=0' "$DIR/run3.log"
test "$(field 'c["id"]')" = "$ID1"
test "$(field 'c["state"]["pid"]')" = "$PID1"
test "$(field 'c["spec"]["resources"]["memory"]')" = $((48 * 1024 * 1024))
limit=$(cat "/sys/fs/cgroup/memory/$CGROUP/$ID1/memory.limit_in_bytes" 2>/dev/null ||
  cat "/sys/fs/cgroup/$CGROUP/$ID1/memory.max")
test "$limit" = $((48 * 1024 * 1024))

# A new image: the container is recreated and serves the new page.
write_inventory 2 48m
deploy "$DIR/run4.log"
grep -E '^localhost +: .*failed=0' "$DIR/run4.log"
test "$(field 'c["id"]')" != "$ID1"
test "$(curl --silent --max-time 10 "http://127.0.0.1:$PORT/")" = "deploy version 2"

# And a last run changes nothing again.
deploy "$DIR/run5.log"
grep -E '^localhost +: .*changed=0 .*failed=0' "$DIR/run5.log"
