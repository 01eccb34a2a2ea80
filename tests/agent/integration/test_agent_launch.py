"""The engine's way to create containers (gantry.engine.launch) against the real kernel:
through the warm launcher, through a replacement when the launcher was killed, and by
forking the agent's own process when no launcher can be started at all."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import agent_support as ags
import pytest
import rootfs_support as rs
from gantry.engine.launch import Launching
from gantry.runtime import supervisor as sv
from gantry.runtime.defaults import default_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

TIMEOUT = 30.0


@pytest.fixture
def parent() -> Iterator[str]:
    name = f"/gantry-launch-test-{uuid.uuid4().hex[:12]}"
    yield name
    ags.remove_cgroup_parent(name)


@pytest.fixture
def runtime_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "runtime"
    yield root
    for container in sv.list_containers(root) if root.exists() else []:
        sv.delete(container, force=True)


def _bundle(tmp_path: Path, parent: str, args: list[str]) -> Path:
    directory = tmp_path / f"bundle-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    rs.make_bundle(directory)
    config = default_config(args, "rootfs")
    config["linux"]["cgroupsPath"] = f"{parent}/{directory.name}"
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _run(launching: Launching, root: Path, bundle: Path) -> int:
    cid = f"c-{uuid.uuid4().hex[:12]}"
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        launching.create(cid, bundle, stdio=(null, null, null))
    finally:
        os.close(null)
    sv.start(sv.find(root, cid))
    record = sv.wait_exit(sv.find(root, cid), TIMEOUT)
    sv.delete(sv.find(root, cid), force=True)
    assert record is not None
    return record.exit_code


def test_a_killed_launcher_is_replaced_by_the_next_create(
    no_leftovers: None, tmp_path: Path, parent: str, runtime_root: Path
) -> None:
    launching = Launching(runtime_root)
    try:
        first = launching.pid
        assert first is not None and launching.info()["mode"] == "launcher"
        assert _run(launching, runtime_root, _bundle(tmp_path, parent, ["sh", "-c", "exit 3"])) == 3
        os.kill(first, signal.SIGKILL)
        ags.wait_for(lambda: not ags.pid_alive(first), what="the launcher to die")
        assert _run(launching, runtime_root, _bundle(tmp_path, parent, ["sh", "-c", "exit 4"])) == 4
        assert launching.pid not in (None, first)
        assert (launching.restarts, launching.fallbacks) == (1, 0)
    finally:
        launching.close()
    assert launching.pid is None


def test_without_a_launcher_the_agent_forks_containers_itself(
    no_leftovers: None,
    tmp_path: Path,
    parent: str,
    runtime_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A launcher that cannot start: its interpreter does not exist.
    launching = Launching(runtime_root, python=str(tmp_path / "no-such-python"))
    try:
        assert launching.info() == {
            "pid": None,
            "mode": "fork",
            "restarts": 0,
            "fallback_creates": 0,
        }
        assert "cannot start" in caplog.text
        assert _run(launching, runtime_root, _bundle(tmp_path, parent, ["sh", "-c", "exit 5"])) == 5
        assert launching.fallbacks == 1
    finally:
        launching.close()
