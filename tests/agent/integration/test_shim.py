"""gantry-shim, the compiled process that stays behind for a container: it records the exit
status of its target atomically, reaps what is reparented to it, and outlives its caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from gantry.linux import prctl
from gantry.runtime.shim import shim_path

pytestmark = pytest.mark.root


def _shim_over(child_body: str, status_file: Path) -> int:
    """Fork a process that forks a Python child running ``child_body`` and then execs the
    shim in its own place, as the supervisor does; return the shim's pid."""
    shim = str(shim_path())
    pid = os.fork()
    if pid == 0:  # the future shim
        try:
            # Before the fork, as the supervisor does: an orphan the target leaves behind
            # must land here even if the target dies before the shim's own prctl runs.
            # (The flag survives execve.)
            prctl.set_child_subreaper(True)
            target = os.fork()
            if target == 0:
                try:
                    exec(child_body, {"os": os, "time": time, "signal": signal})
                finally:
                    os._exit(0)
            os.execv(shim, ["gantry-shim", str(target), str(status_file)])
        finally:
            os._exit(127)
    return pid


def _wait(pid: int) -> int:
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_records_the_exit_code(tmp_path: Path) -> None:
    status_file = tmp_path / "exit"
    shim = _shim_over("os._exit(7)", status_file)
    assert _wait(shim) == 0
    record = json.loads(status_file.read_text())
    assert record["exit_code"] == 7
    assert record["signal"] == 0
    assert record["finished_ns"] > 0
    assert not (tmp_path / "exit.tmp").exists()


def test_a_killed_target_is_128_plus_the_signal(tmp_path: Path) -> None:
    status_file = tmp_path / "exit"
    shim = _shim_over("os.kill(os.getpid(), signal.SIGKILL)", status_file)
    assert _wait(shim) == 0
    record = json.loads(status_file.read_text())
    assert (record["exit_code"], record["signal"]) == (137, signal.SIGKILL)


def test_reaps_orphans_and_waits_for_them(tmp_path: Path) -> None:
    # The target leaves a grandchild behind; it is reparented to the shim (a subreaper),
    # which reaps it and only then exits.
    status_file = tmp_path / "exit"
    marker = tmp_path / "orphan-done"
    body = (
        "if os.fork() == 0:\n"
        "    time.sleep(0.3)\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    os._exit(0)\n"
        "os._exit(3)\n"
    )
    shim = _shim_over(body, status_file)
    assert _wait(shim) == 0
    assert marker.exists()  # the shim stayed until the orphan was gone
    assert json.loads(status_file.read_text())["exit_code"] == 3


def test_outlives_its_caller(tmp_path: Path) -> None:
    # The caller (here: a process that starts the shim and dies at once) going away does
    # not stop the recording; the status appears once the target ends.
    status_file = tmp_path / "exit"
    shim_pid_file = tmp_path / "shim.pid"
    caller = os.fork()
    if caller == 0:
        try:
            os.setsid()
            shim = _shim_over("time.sleep(0.4)\nos._exit(5)", status_file)
            shim_pid_file.write_text(str(shim))
        finally:
            os._exit(0)
    assert _wait(caller) == 0
    shim = int(shim_pid_file.read_text())
    deadline = time.monotonic() + 10
    while not status_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert json.loads(status_file.read_text())["exit_code"] == 5
    while Path(f"/proc/{shim}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # reparented to the host's init, which reaps it
    assert not Path(f"/proc/{shim}").exists() or "Z" in Path(f"/proc/{shim}/stat").read_text()


def test_bad_usage_exits_2() -> None:
    result = subprocess.run([str(shim_path())], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr
    result = subprocess.run(
        [str(shim_path()), "nope", "/tmp/x"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "bad pid" in result.stderr


def test_a_pid_that_is_not_its_child_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(shim_path()), str(os.getpid()), str(tmp_path / "exit")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "never a child" in result.stderr
    assert not (tmp_path / "exit").exists()
