#!/usr/bin/env bash
# Runs ansible-test on the collection: `scripts/ansible-test.sh sanity|units|integration [args…]`.
#
# ansible-test insists on running from inside .../ansible_collections/<namespace>/<name>/,
# and the checkout is not laid out that way. So every run copies the files git would ship
# (tracked, plus untracked ones that are not ignored) into a fresh
# .build/run.XXXXXX/ansible_collections/gantry/fleet, runs there, and removes it. Copying through git's file list
# keeps .venv, .cache and test output out, and `cp -P` keeps symlinks as symlinks
# (agent/gantry/kernel_check.py points at the engine in plugins/module_utils).
#
# With no environment flag given, each command gets the one that works on this machine
# (there is no Docker daemon): sanity and units in an ansible-test managed virtual
# environment (`--venv --python 3.11`, requirements from PyPI), integration with the local
# interpreter (`--local`, the real kernel, as root). `--venv` bootstraps pip with the
# stand-in `make setup` puts in ansible-test's cache (scripts/get_pip_offline.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}

if (($# == 0)); then
  echo "usage: $0 sanity|units|integration|… [ansible-test arguments]" >&2
  exit 2
fi
command=$1
shift

# A copy of its own for every run, so runs side by side (or a killed one) never share files.
mkdir -p "$ROOT/.build"
BUILD=$(mktemp -d "$ROOT/.build/run.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
DEST=$BUILD/ansible_collections/gantry/fleet
mkdir -p "$DEST"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do
    # A path git still lists but someone removed from the working tree has nothing to copy.
    [[ -e $f || -L $f ]] && printf '%s\0' "$f"
  done |
  xargs -0 -r cp -P --parents -t "$DEST"
# ansible-test lists content through git when it finds a .git above it, and would find the
# checkout's own (where .build/ is ignored, so it would see no files at all). An empty
# repository of the copy's own makes it list every copied file as untracked content.
git -C "$DEST" init -q

# Pick the environment unless the caller chose one.
env_given=false
for arg in "$@"; do
  case $arg in
    --local | --venv | --docker | --docker=* | --remote | --remote=* | --controller | \
      --controller=* | --target | --target=* | --target-python | --target-python=* | \
      --target-posix | --target-posix=* | --python-interpreter | --python-interpreter=*)
      env_given=true
      ;;
  esac
done
defaults=()
if ! $env_given; then
  case $command in
    sanity | units) defaults=(--venv --requirements --python "$PYTHON_VERSION") ;;
    integration) defaults=(--local --python "$PYTHON_VERSION") ;;
  esac
fi
# Colour only for a person at a terminal; logs stay plain.
[[ -t 1 ]] && color=(--color yes) || color=(--color no)

cd "$DEST"
export PATH=$VENV/bin:$PATH
"$VENV/bin/python" "$VENV/bin/ansible-test" "$command" "${color[@]}" "${defaults[@]}" "$@"
