"""Reading a container's log file: the whole of it, its last lines, and following it.

The container writes the file itself (its stdout and stderr are the file, opened for
append), so a container never waits for a reader. Until the shim writes CRI-format lines
with timestamps and the stream name (the fast-path work), the file is plain output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from gantry.engine.errors import Invalid

__all__ = ["parse_tail", "read_log"]

CHUNK: Final = 65536
FOLLOW_PAUSE: Final = 0.1


def parse_tail(text: str | None) -> int | None:
    """``None`` for all lines, else the count; ``Invalid`` naming ``query.tail``."""
    if text is None or text == "all":
        return None
    if text.isdigit():
        return int(text)
    raise Invalid(f"tail: must be 'all' or a number of lines, got {text!r}", "query.tail")


def _tail_offset(fd: int, size: int, lines: int) -> int:
    """The offset where the last ``lines`` lines of the file start."""
    if lines == 0:
        return size
    position = size
    seen = 0
    # A final newline ends the last line; it does not start an empty one.
    if size and os.pread(fd, 1, size - 1) == b"\n":
        seen = -1
    while position > 0:
        start = max(0, position - CHUNK)
        block = os.pread(fd, position - start, start)
        for index in range(len(block) - 1, -1, -1):
            if block[index] == 0x0A:
                seen += 1
                if seen == lines:
                    return start + index + 1
        position = start
    return 0


def read_log(
    path: Path,
    *,
    tail: int | None,
    follow: bool,
    running: Callable[[], bool],
    stopping: Callable[[], bool] = lambda: False,
    heartbeat: float = 1.0,
) -> Iterator[bytes]:
    """The log's bytes from the ``tail`` point; with ``follow`` keep reading new output
    until the container is no longer running and the file is drained. Yields ``b""``
    after each idle ``heartbeat`` so a server can notice a client that left."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        offset = 0 if tail is None else _tail_offset(fd, size, tail)
        idle_since = time.monotonic()
        while True:
            chunk = os.pread(fd, CHUNK, offset)
            if chunk:
                offset += len(chunk)
                idle_since = time.monotonic()
                yield chunk
                continue
            if not follow or stopping():
                return
            if not running():
                # One more read: output written right before the exit.
                chunk = os.pread(fd, CHUNK, offset)
                if not chunk:
                    return
                continue
            if time.monotonic() - idle_since >= heartbeat:
                idle_since = time.monotonic()
                yield b""
            time.sleep(FOLLOW_PAUSE)
    finally:
        os.close(fd)
