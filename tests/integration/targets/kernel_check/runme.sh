#!/usr/bin/env bash
# The target shares its name with the collection's kernel_check role. Run as a role target,
# ansible-test's generated playbook would get that role instead of these tests (a playbook
# inside a collection finds role names in the collection first), so the target runs its
# tasks through a playbook of its own.
set -eux
cd "$(dirname "$0")"
ansible-playbook -i "${INVENTORY_PATH}" runme.yml "$@"

# A two-host fleet: one host's kernel cannot run containers. That host fails with the fix;
# the other passes the check and goes on with the rest of the job.
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
zcat /proc/config.gz | sed 's/^CONFIG_PID_NS=y$/# CONFIG_PID_NS is not set/' >"$workdir/config-no-pid-ns"
cat >"$workdir/fleet-inventory.yml" <<INVENTORY
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  hosts:
    ready-host: {}
    old-kernel-host:
      gantry_kernel_check_config_path: $workdir/config-no-pid-ns
INVENTORY
set +e
ansible-playbook -i "$workdir/fleet-inventory.yml" fleet.yml >"$workdir/fleet.out" 2>&1
rc=$?
set -e
cat "$workdir/fleet.out"
test "$rc" -eq 2 # some host failed
grep -Eq '^ready-host +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$workdir/fleet.out"
grep -Eq '^old-kernel-host +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=1' "$workdir/fleet.out"
grep -q '"msg": "went on: ready-host"\|msg: .went on: ready-host' "$workdir/fleet.out"
if grep -q 'went on: old-kernel-host' "$workdir/fleet.out"; then exit 1; fi
grep -q 'CONFIG_PID_NS' "$workdir/fleet.out"
