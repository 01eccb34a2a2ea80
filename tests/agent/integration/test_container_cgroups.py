"""The container init and its cgroups: the runtime adds the first child to the cgroups it
is given before any namespace but the user one exists, so the init, everything it forks,
and the root of its cgroup namespace are the container's."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import container_support as cs
import linux_support as support
import pytest
import rootfs_support as rs
from gantry.runtime.process import InitHandle

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

HIERARCHIES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"))


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def cgroups() -> Iterator[dict[str, Path]]:
    """A fresh cgroup in each available hierarchy, removed afterwards."""
    name = f"gantry-test-{os.getpid()}-{time.monotonic_ns()}"
    made: dict[str, Path] = {}
    try:
        for top in HIERARCHIES:
            if (top / "cgroup.procs").exists():
                (top / name).mkdir()
                made[top.name] = top / name
        if not made:
            pytest.skip("no pids or unified cgroup hierarchy mounted")
        yield made
    finally:
        for path in made.values():
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


def _membership(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` as {controllers: path}."""
    found = {}
    for line in text.splitlines():
        _hierarchy, controllers, path = line.split(":", 2)
        found[controllers] = path
    return found


def test_init_is_in_the_given_cgroups_and_its_cgroup_namespace_starts_there(
    cgroups: dict[str, Path],
) -> None:
    def host_view(handle: InitHandle, output: cs.Output) -> str:
        assert output.wait_for("ready\n")
        return Path(f"/proc/{handle.pid}/cgroup").read_text()

    outcome = cs.sh(
        "cat /proc/self/cgroup; echo ready; sleep 0.3",
        cgroup_procs=tuple(path / "cgroup.procs" for path in cgroups.values()),
        after_start=host_view,
    )
    assert outcome.error is None, outcome.error
    assert outcome.status == 0
    host = _membership(outcome.after_start)
    inside = _membership(outcome.output.split("ready\n")[0])
    keys = {"pids": "pids", "unified": ""}
    for hierarchy, path in cgroups.items():
        key = keys[hierarchy]
        assert host[key] == f"/{path.name}"
        assert inside[key] == "/"  # the namespace was unshared after joining
    for path in cgroups.values():
        assert (path / "cgroup.procs").read_text() == ""  # the container is gone


def test_a_missing_cgroup_fails_at_the_cgroup_step() -> None:
    missing = Path("/sys/fs/cgroup/pids/gantry-test-missing/cgroup.procs")
    outcome = cs.sh("true", cgroup_procs=(missing,))
    assert outcome.error is not None
    assert outcome.error["step"] == "cgroup"
    assert outcome.children_left == []
