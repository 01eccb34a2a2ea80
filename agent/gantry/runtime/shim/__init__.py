"""gantry-shim: the small C process that stays behind for each running container.

A supervisor forked from the agent's launcher prepares the container in Python, then
execs ``gantry-shim PID STATUS_FILE`` in its own place: the container's init stays its
child, the Python heap is given back, and the exit status is written atomically when the
init exits (see gantry-shim.c). ``make setup`` compiles it (statically) next to its source.

With :class:`LogOptions`, the container's stdout and stderr are pipes the shim drains into
a log file in the CRI format, rotated at a size limit (``docs/logs.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SOURCE = Path(__file__).with_name("gantry-shim.c")
BINARY = Path(__file__).with_name("gantry-shim")


class ShimMissingError(RuntimeError):
    """The compiled shim is not there (a checkout that `make setup` has not built)."""


LINE_MAX: Final = 16384
"""The longest piece of a line in one log record (``LINE_MAX_BYTES`` in gantry-shim.c)."""
MAX_LOG_FILES: Final = 1000


@dataclass(frozen=True)
class LogOptions:
    """Where the shim writes a container's stdout and stderr, and how it rotates them.

    ``path`` is the live log file (created if missing, appended to); when it would grow
    past ``max_size`` bytes (0: never) it becomes ``path.1`` (``path.1`` becomes
    ``path.2``, …) and ``max_files`` rotated files are kept (0: the log is truncated
    instead). ``ValueError`` naming the field for values that cannot work.
    """

    path: Path
    max_size: int = 0
    max_files: int = 1

    def __post_init__(self) -> None:
        path = Path(self.path)
        object.__setattr__(self, "path", path)
        if not path.is_absolute():
            raise ValueError(f"log_path: must be an absolute path, not {str(path)!r}")
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int):
            raise ValueError(f"log_max_size: must be an integer, not {self.max_size!r}")
        if self.max_size < 0:
            raise ValueError(f"log_max_size: must be 0 (no limit) or more, not {self.max_size}")
        if 0 < self.max_size < 2 * LINE_MAX:
            raise ValueError(
                f"log_max_size: must be 0 (no limit) or at least {2 * LINE_MAX} bytes "
                f"(two of the longest records), not {self.max_size}"
            )
        if isinstance(self.max_files, bool) or not isinstance(self.max_files, int):
            raise ValueError(f"log_max_files: must be an integer, not {self.max_files!r}")
        if not 0 <= self.max_files <= MAX_LOG_FILES:
            raise ValueError(
                f"log_max_files: must be between 0 and {MAX_LOG_FILES}, not {self.max_files}"
            )

    def shim_args(self) -> list[str]:
        """The shim's LOG_PATH MAX_SIZE MAX_FILES arguments."""
        return [str(self.path), str(self.max_size), str(self.max_files)]


def shim_path() -> Path:
    """Return the compiled shim, or raise ShimMissingError saying how to build it."""
    override = os.environ.get("GANTRY_SHIM")
    path = Path(override) if override else BINARY
    if not os.access(path, os.X_OK):
        raise ShimMissingError(
            f"gantry-shim not found at {path}: build it with `make setup` "
            f"(cc -Os -static -o {BINARY} {SOURCE})"
        )
    return path
