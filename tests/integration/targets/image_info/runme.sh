#!/usr/bin/env bash
# gantry.fleet.image_info against a live agent: a real `gantry agent serve` on a unix socket under a
# temporary root, a docker-registry on loopback, and a tarball of a busybox root file system
# to import the first image from.
set -eux
cd "$(dirname "$0")"
# shellcheck source=../setup_gantry_agent/agent.sh
source ../setup_gantry_agent/agent.sh
gantry_agent_start
gantry_registry_start
gantry_rootfs_tarball "$GANTRY_TEST_ROOTFS" "$GANTRY_TEST_DIR/rootfs.tar.gz"
ansible-playbook -i "${INVENTORY_PATH}" runme.yml \
  -e "gantry_test_dir=$GANTRY_TEST_DIR gantry_test_rootfs=$GANTRY_TEST_ROOTFS" \
  -e "gantry_test_registry=$GANTRY_TEST_REGISTRY" "$@"
