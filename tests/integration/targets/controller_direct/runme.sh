#!/usr/bin/env bash
# The controller-side path of the Gantry modules (plugins/plugin_utils/_direct.py) against a
# live agent: the same tasks run in the worker and as modules give the same results, and the
# cases that must run as a module (become to another user, a task environment, the variable
# gantry_fleet_direct: false) do.
set -eux
cd "$(dirname "$0")"
# shellcheck source=../setup_gantry_agent/agent.sh
source ../setup_gantry_agent/agent.sh
gantry_agent_start
ansible-playbook -i "${INVENTORY_PATH}" runme.yml \
  -e "gantry_test_dir=$GANTRY_TEST_DIR gantry_test_rootfs=$GANTRY_TEST_ROOTFS" "$@"
