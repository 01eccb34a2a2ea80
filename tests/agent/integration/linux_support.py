"""Shared helpers of the gantry.linux integration tests (no tests in here).

Every call that changes a process (unshare, setns, mount, capset, prctl…) runs in a forked
child so the pytest process itself is never changed; results come back as JSON through a
pipe. ``host_unchanged`` is what each test module wraps its tests in: the host's mount table
and our set of child processes must be the same after a test as before it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHILD_TIMEOUT = 30.0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_until_eof(fd: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _writable, _exceptional = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_in_child(fn: Callable[[], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Run ``fn`` in a forked child and return its (JSON-serialisable) result.

    An exception in the child fails the test with the child's traceback.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 3
        try:
            os.close(read_fd)
            try:
                payload = {"result": fn()}
                code = 0
            except BaseException as exc:  # report everything, including SystemExit
                payload = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
                code = 1
            _write_all(write_fd, json.dumps(payload).encode())
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        raw = _read_until_eof(read_fd, time.monotonic() + timeout)
    finally:
        os.close(read_fd)
    if raw is None:
        os.kill(pid, signal.SIGKILL)
    _pid, status = os.waitpid(pid, 0)
    if raw is None:
        pytest.fail(f"child {pid} did not finish within {timeout}s")
    if not raw:
        pytest.fail(f"child {pid} sent nothing (wait status {status:#x})")
    payload = json.loads(raw)
    if "error" in payload:
        pytest.fail(f"child failed: {payload['error']}\n{payload['tb']}")
    return payload["result"]


class Holder:
    """A forked child that ran a set-up function and now waits until released."""

    def __init__(self, pid: int, release_fd: int) -> None:
        self.pid = pid
        self._release_fd = release_fd

    def release(self) -> int:
        """Let the child exit and return its wait status."""
        if self._release_fd >= 0:
            os.close(self._release_fd)
            self._release_fd = -1
        return os.waitpid(self.pid, 0)[1]


@contextlib.contextmanager
def holder(setup: Callable[[], None] = lambda: None) -> Iterator[Holder]:
    """Fork a child that runs ``setup``, reports ready, and lives until the block ends.

    A child still alive at the end (released or not) is killed and reaped.
    """
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(release_w)
            setup()
            os.write(ready_w, b"ok")
            os.close(ready_w)
            os.read(release_r, 1)  # EOF when the parent releases us
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(release_r)
    held = Holder(pid, release_w)
    try:
        ready = _read_until_eof(ready_r, time.monotonic() + CHILD_TIMEOUT)
        os.close(ready_r)
        if ready != b"ok":
            pytest.fail(f"holder child {pid} failed to set up")
        yield held
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            held.release()


def children() -> set[int]:
    """Return the pids of this process's children (live or zombie)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


@contextlib.contextmanager
def host_unchanged() -> Iterator[None]:
    """Assert that the block leaves the host's mount table and our children as they were."""
    mounts_before = Path("/proc/self/mountinfo").read_text()
    children_before = children()
    yield
    assert children() == children_before, "a test left a child process behind"
    assert Path("/proc/self/mountinfo").read_text() == mounts_before, "a test left a mount"


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A fresh temporary directory, removed (and checked gone) afterwards."""
    path = Path(tempfile.mkdtemp(prefix="gantry-linux-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)
        assert not path.exists()
