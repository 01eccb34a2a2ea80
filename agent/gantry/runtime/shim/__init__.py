"""gantry-shim: the small C process that stays behind for each running container.

A supervisor forked from the agent's launcher prepares the container in Python, then
execs ``gantry-shim PID STATUS_FILE`` in its own place: the container's init stays its
child, the Python heap is given back, and the exit status is written atomically when the
init exits (see gantry-shim.c). ``make setup`` compiles it next to its source.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCE = Path(__file__).with_name("gantry-shim.c")
BINARY = Path(__file__).with_name("gantry-shim")


class ShimMissingError(RuntimeError):
    """The compiled shim is not there (a checkout that `make setup` has not built)."""


def shim_path() -> Path:
    """Return the compiled shim, or raise ShimMissingError saying how to build it."""
    override = os.environ.get("GANTRY_SHIM")
    path = Path(override) if override else BINARY
    if not os.access(path, os.X_OK):
        raise ShimMissingError(
            f"gantry-shim not found at {path}: build it with `make setup` "
            f"(cc -Os -o {BINARY} {SOURCE})"
        )
    return path
