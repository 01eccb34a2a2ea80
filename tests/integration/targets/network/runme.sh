#!/usr/bin/env bash
# gantry.fleet.network against a live agent: a real `gantry agent serve` on a unix socket under a
# temporary root, with a default bridge and subnet of its own; the networks it makes use
# subnets no route of this host uses, and are removed with the agent on exit.
set -eux
cd "$(dirname "$0")"
# shellcheck source=../setup_gantry_agent/agent.sh
source ../setup_gantry_agent/agent.sh
gantry_agent_start
mapfile -t subnets < <(gantry_free_subnets 3)
ansible-playbook -i "${INVENTORY_PATH}" runme.yml \
  -e "gantry_test_dir=$GANTRY_TEST_DIR gantry_test_rootfs=$GANTRY_TEST_ROOTFS" \
  -e "gantry_test_subnet=${subnets[0]} gantry_test_subnet2=${subnets[1]} gantry_test_subnet3=${subnets[2]}" "$@"
