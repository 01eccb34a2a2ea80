"""gantry.runtime.cgroups on this host's real hierarchies (hybrid: v1 controllers, cgroup2
with hugetlb only), as root.

Every test works under its own parent cgroup ``/gantry-test-<uuid>`` in every hierarchy and
nowhere else. The ``scratch`` finalizer does not trust the code under test: it thaws, kills
and reaps whatever is in that parent, then removes it bottom-up, even when the test failed.
After each test, ``find /sys/fs/cgroup -name 'gantry-test-*'`` must find nothing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gantry.linux import cgroupfs
from gantry.runtime import cgroups
from gantry.runtime.cgroups import Cgroup, CgroupError, Hybrid
from gantry.runtime.cgroups.v1 import V1Cgroup
from gantry.runtime.cgroups.v2 import V2Cgroup

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PREFIX = "gantry-test-"


def _leftovers() -> list[str]:
    found = subprocess.run(
        ["find", "/sys/fs/cgroup", "-name", f"{PREFIX}*"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split()


@pytest.fixture(autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    yield
    assert _leftovers() == []


class Scratch:
    """A test's own parent cgroup and the children it forked; cleaned up independently."""

    def __init__(self) -> None:
        self.name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        self.parent = f"/{self.name}"
        self.layout = cgroups.detect()
        self.pids: list[int] = []

    def path(self, leaf: str = "c") -> str:
        return f"{self.parent}/{leaf}"

    def open(self, kind: str, leaf: str = "c") -> Cgroup:
        """A driver for ``<parent>/<leaf>``: ``v1``, ``v2`` (unified mount alone) or ``hybrid``."""
        path = self.path(leaf)
        if kind == "v1":
            return V1Cgroup(self.layout, path, delegate=self.parent)
        if kind == "v2":
            return V2Cgroup(self.layout, path, delegate=self.parent)
        return cgroups.open_cgroup(path, self.layout, delegate=self.parent)

    def spawn(self, body: Callable[[], object] | None = None) -> int:
        """Fork a child running ``body`` (by default, sleeping) until it is killed."""
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if body is not None:
                    body()
                while True:
                    time.sleep(60)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        self.pids.append(pid)
        return pid

    def reap(self, pid: int, timeout: float = 5.0) -> int:
        """Wait for the child ``pid`` to end and return its wait status."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"child {pid} is still alive after {timeout}s")
            time.sleep(0.01)

    def alive(self, pid: int) -> bool:
        done, _status = os.waitpid(pid, os.WNOHANG)
        return done == 0

    def tops(self) -> list[Path]:
        return [Path(m.mount_point) / self.name for m in cgroupfs.cgroup_mounts()]

    def cleanup(self) -> None:
        dirs = [d for top in self.tops() for d in _walk_up(top)]
        for directory in dirs:
            with contextlib.suppress(OSError):
                if (directory / "freezer.state").exists():
                    _put(directory / "freezer.state", "THAWED")
                if (directory / "cgroup.freeze").exists():
                    _put(directory / "cgroup.freeze", "0")
        members = {pid for d in dirs for pid in _members(d)} | set(self.pids)
        for pid in members:  # only processes this test forked and placed in its own cgroups
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.pids):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.pids.remove(pid)
        deadline = time.monotonic() + 10
        for directory in dirs:
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)


def _walk_up(top: Path) -> list[Path]:
    return [Path(dirpath) for dirpath, _dirs, _files in os.walk(top, topdown=False)]


def _members(directory: Path) -> list[int]:
    try:
        return [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _put(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    made = Scratch()
    try:
        yield made
    finally:
        made.cleanup()


def _membership(pid: int) -> tuple[dict[str, str], str | None]:
    entries = cgroupfs.read_proc_cgroup(pid)
    return cgroupfs.v1_cgroups(entries), cgroupfs.v2_cgroup(entries)


class Counter:
    """A counter in shared memory that a child increments as fast as it can."""

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, 8)

    def run(self) -> None:
        count = 0
        while True:
            count += 1
            struct.pack_into("Q", self.memory, 0, count)

    def value(self) -> int:
        return int(struct.unpack_from("Q", self.memory, 0)[0])

    def advances(self, within: float = 3.0) -> bool:
        start = self.value()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.value() > start:
                return True
            time.sleep(0.01)
        return False

    def holds_still(self, for_seconds: float = 0.3) -> bool:
        start = self.value()
        time.sleep(for_seconds)
        return self.value() == start


# --- detection -------------------------------------------------------------------------------


def test_this_host_is_hybrid_with_hugetlb_alone_on_v2() -> None:
    layout = cgroups.detect()
    assert layout.mode == "hybrid"
    assert list(layout.v2_controllers) == ["hugetlb"]
    assert {"memory", "cpu", "pids", "freezer", "devices", "cpuset"} <= set(layout.v1_controllers)
    for controller in ("memory", "cpu", "pids", "freezer", "devices", "cpuset"):
        assert layout.side(controller) == "v1"
    assert layout.side("hugetlb") == "v2"
    assert "name=systemd" in layout.v1_mounts
    assert layout.v2_mount is not None
    assert layout.v2_mount.mount_point == "/sys/fs/cgroup/unified"


def test_open_cgroup_on_this_host_is_a_hybrid_of_both_drivers(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")
    assert isinstance(cgroup, Hybrid)
    assert isinstance(cgroup.v1, V1Cgroup)
    assert isinstance(cgroup.v2, V2Cgroup)
    paths = cgroup.paths()
    assert paths[""] == Path("/sys/fs/cgroup/unified") / scratch.path().lstrip("/")
    assert paths["hugetlb"] == paths[""]
    assert paths["memory"] == Path("/sys/fs/cgroup/memory") / scratch.path().lstrip("/")
    assert paths["name=systemd"] == Path("/sys/fs/cgroup/systemd") / scratch.path().lstrip("/")
    assert not cgroup.exists()


# --- placement -------------------------------------------------------------------------------


def test_hybrid_create_and_add_show_in_every_hierarchy(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")
    cgroup.create()
    cgroup.create()  # idempotent
    assert cgroup.exists()
    assert all(directory.is_dir() for directory in cgroup.paths().values())
    pid = scratch.spawn()
    cgroup.add(pid)
    v1, v2 = _membership(pid)
    for key in scratch.layout.v1_mounts:
        assert v1[key] == scratch.path(), key
    assert v2 == scratch.path()
    assert cgroup.procs() == [pid]
    assert cgroup.all_pids() == [pid]


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_single_driver_places_in_its_own_hierarchies_only(scratch: Scratch, kind: str) -> None:
    cgroup = scratch.open(kind)
    cgroup.create()
    pid = scratch.spawn()
    v1_before, v2_before = _membership(pid)
    cgroup.add(pid)
    v1, v2 = _membership(pid)
    if kind == "v1":
        assert set(v1.values()) == {scratch.path()}
        assert v2 == v2_before
    else:
        assert v1 == v1_before
        assert v2 == scratch.path()
    assert cgroup.procs() == [pid]


def test_v1_cpuset_values_are_copied_down_so_a_child_can_join(scratch: Scratch) -> None:
    cgroup = scratch.open("v1")
    cgroup.create()
    root = Path(scratch.layout.v1_mounts["cpuset"].mount_point)
    leaf = cgroup.paths()["cpuset"]
    for name in ("cpuset.cpus", "cpuset.mems"):
        expected = (root / name).read_text().strip()
        assert expected
        assert (leaf.parent / name).read_text().strip() == expected
        assert (leaf / name).read_text().strip() == expected
    pid = scratch.spawn()
    cgroup.add(pid)
    assert _membership(pid)[0]["cpuset"] == scratch.path()


def test_add_of_a_gone_process_names_the_file(scratch: Scratch) -> None:
    cgroup = scratch.open("v2")
    cgroup.create()
    pid = scratch.spawn()
    os.kill(pid, signal.SIGKILL)
    scratch.reap(pid)
    with pytest.raises(CgroupError, match=r"cgroup\.procs.*No such process"):
        cgroup.add(pid)


# --- freezer ---------------------------------------------------------------------------------


def test_v1_freezer_stops_a_counting_child_and_thaw_resumes_it(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")  # the hybrid freezes through v1, where the freezer is
    cgroup.create()
    counter = Counter()
    pid = scratch.spawn(counter.run)
    cgroup.add(pid)
    assert counter.advances()
    assert cgroup.state() == "thawed"

    cgroup.freeze()
    state_file = cgroup.paths()["freezer"] / "freezer.state"
    assert state_file.read_text().strip() == "FROZEN"
    assert cgroup.state() == "frozen"
    assert counter.holds_still()

    cgroup.thaw()
    assert state_file.read_text().strip() == "THAWED"
    assert cgroup.state() == "thawed"
    assert counter.advances()


def test_v2_freeze_on_the_unified_mount_stops_and_resumes(scratch: Scratch) -> None:
    cgroup = scratch.open("v2")
    cgroup.create()
    counter = Counter()
    pid = scratch.spawn(counter.run)
    cgroup.add(pid)
    assert counter.advances()
    directory = cgroup.paths()[""]
    assert directory.parent.parent == Path("/sys/fs/cgroup/unified")

    cgroup.freeze()
    assert (directory / "cgroup.freeze").read_text().strip() == "1"
    assert "frozen 1" in (directory / "cgroup.events").read_text()
    assert cgroup.state() == "frozen"
    assert counter.holds_still()

    cgroup.thaw()
    assert (directory / "cgroup.freeze").read_text().strip() == "0"
    assert cgroup.state() == "thawed"
    assert counter.advances()


def test_freeze_without_the_cgroup_names_it(scratch: Scratch) -> None:
    cgroup = scratch.open("v1")
    with pytest.raises(CgroupError, match=scratch.path()):
        cgroup.freeze(timeout=0.2)


# --- kill_all --------------------------------------------------------------------------------


def test_v2_kill_all_writes_cgroup_kill(scratch: Scratch, monkeypatch: pytest.MonkeyPatch) -> None:
    cgroup = scratch.open("v2")
    cgroup.create()
    pids = [scratch.spawn() for _index in range(3)]
    for pid in pids:
        cgroup.add(pid)
    assert (cgroup.paths()[""] / "cgroup.kill").exists()

    def no_signals(pid: int, sig: int) -> None:
        raise AssertionError(f"kill_all sent signal {sig} to {pid} instead of cgroup.kill")

    with monkeypatch.context() as patch:
        patch.setattr(os, "kill", no_signals)
        cgroup.kill_all()
    for pid in pids:
        status = scratch.reap(pid)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
    assert cgroup.procs() == []
    assert cgroup.all_pids() == []


def test_v1_kill_all_freezes_signals_and_loops_until_empty(scratch: Scratch) -> None:
    cgroup = scratch.open("v1")
    cgroup.create()
    pids = [scratch.spawn() for _index in range(3)]
    for pid in pids:
        cgroup.add(pid)
    cgroup.kill_all()
    for pid in pids:
        status = scratch.reap(pid)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
    assert cgroup.procs() == []
    assert cgroup.all_pids() == []
    assert cgroup.state() == "thawed"


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_kill_all_of_a_frozen_cgroup_still_kills(scratch: Scratch, kind: str) -> None:
    cgroup = scratch.open(kind)
    cgroup.create()
    pid = scratch.spawn()
    cgroup.add(pid)
    cgroup.freeze()
    # kill_all raises CgroupError if anything is still alive when its timeout runs out.
    cgroup.kill_all(timeout=5.0)
    assert os.WTERMSIG(scratch.reap(pid)) == signal.SIGKILL
    assert cgroup.all_pids() == []


def test_kill_all_with_sigterm_signals_once_and_keeps_a_pause(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")
    cgroup.create()
    pids = [scratch.spawn() for _index in range(2)]
    for pid in pids:
        cgroup.add(pid)
    cgroup.freeze()  # a paused container stays paused through a non-fatal kill
    cgroup.kill_all(signal.SIGTERM)
    assert cgroup.state() == "frozen"
    assert all(scratch.alive(pid) for pid in pids)
    cgroup.thaw()
    for pid in pids:
        assert os.WTERMSIG(scratch.reap(pid)) == signal.SIGTERM


def test_hybrid_kill_all_empties_both_sides(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")
    cgroup.create()
    pids = [scratch.spawn() for _index in range(3)]
    for pid in pids:
        cgroup.add(pid)
    cgroup.kill_all()
    for pid in pids:
        assert os.WTERMSIG(scratch.reap(pid)) == signal.SIGKILL
    assert isinstance(cgroup, Hybrid)
    assert cgroup.v1.all_pids() == []
    assert cgroup.v2.all_pids() == []


def test_kill_all_reaches_processes_in_sub_cgroups(scratch: Scratch) -> None:
    cgroup = scratch.open("hybrid")
    cgroup.create()
    nested = scratch.open("hybrid", "c/inner")
    nested.create()
    pid = scratch.spawn()
    nested.add(pid)
    assert cgroup.procs() == []
    assert cgroup.all_pids() == [pid]
    cgroup.kill_all()
    assert os.WTERMSIG(scratch.reap(pid)) == signal.SIGKILL


# --- destroy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_destroy_removes_every_directory_sub_cgroups_first(scratch: Scratch, kind: str) -> None:
    cgroup = scratch.open(kind)
    cgroup.create()
    for directory in set(cgroup.paths().values()):
        (directory / "inner").mkdir()  # as a container with its own sub-cgroups would
    pid = scratch.spawn()
    cgroup.add(pid)
    cgroup.kill_all()
    scratch.reap(pid)
    cgroup.destroy()
    assert not cgroup.exists()
    assert not any(directory.exists() for directory in cgroup.paths().values())
    cgroup.destroy()  # nothing left to do


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_destroy_with_a_live_process_waits_then_names_the_cgroup(
    scratch: Scratch, kind: str
) -> None:
    cgroup = scratch.open(kind)
    cgroup.create()
    pid = scratch.spawn()
    cgroup.add(pid)
    with pytest.raises(CgroupError, match=rf"cannot remove cgroup {scratch.path()}.*still") as err:
        cgroup.destroy(timeout=0.5)
    assert str(pid) in str(err.value)
    assert cgroup.exists()
    assert scratch.alive(pid)


# --- recovery --------------------------------------------------------------------------------


def test_orphans_lists_only_unknown_children_of_the_parent(scratch: Scratch) -> None:
    for leaf in ("keep", "lost-1", "lost-2"):
        scratch.open("hybrid", leaf).create()
    found = cgroups.orphans(scratch.parent, {"keep"}, scratch.layout)
    hierarchies = len(scratch.layout.v1_hierarchies) + 1
    assert len(found) == 2 * hierarchies
    assert {path.name for path in found} == {"lost-1", "lost-2"}
    assert all(path.parent.name == scratch.name for path in found)
    assert cgroups.orphans(scratch.parent, {"keep", "lost-1", "lost-2"}, scratch.layout) == []
    assert cgroups.orphans(f"{scratch.parent}/absent", set(), scratch.layout) == []
