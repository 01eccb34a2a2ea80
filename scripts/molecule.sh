#!/usr/bin/env bash
# Runs the Molecule scenarios of the collection: `scripts/molecule.sh [molecule test args…]`.
#
# Molecule finds collection scenarios under extensions/molecule/ when it runs from the
# collection's root (the directory with galaxy.yml), and reads extensions/molecule/config.yml
# as their shared base. Default: `molecule test -s kernel_check`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
export PATH=$VENV/bin:$PATH
# The scenarios play against the checkout through this link (what `make setup` makes).
mkdir -p .collections/ansible_collections/gantry
ln -sfn ../../.. .collections/ansible_collections/gantry/fleet

if (($# == 0)); then
  set -- -s kernel_check
fi
# Plain logs when nobody watches (CI): Molecule and Ansible colour otherwise.
[[ -t 1 ]] || export NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1
exec molecule test "$@"
