"""gantry.linux.cgroupfs against this host's real cgroup hierarchies (reading only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import linux_support as support
import pytest
from gantry.linux import cgroupfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def test_every_v1_membership_has_a_mounted_directory_holding_us() -> None:
    mounts = cgroupfs.cgroup_mounts()
    by_controller = cgroupfs.v1_mounts(mounts)
    memberships = cgroupfs.read_proc_cgroup()
    assert memberships
    for controller, cgroup in cgroupfs.v1_cgroups(memberships).items():
        if controller not in by_controller:
            continue  # a hierarchy this namespace does not mount
        directory = by_controller[controller].directory(cgroup)
        assert directory.is_dir()
        assert os.getpid() in cgroupfs.read_ids(directory / "cgroup.procs")


def test_v2_membership_and_controllers() -> None:
    mounts = cgroupfs.cgroup_mounts()
    unified = cgroupfs.v2_mount(mounts)
    cgroup = cgroupfs.v2_cgroup(cgroupfs.read_proc_cgroup())
    if unified is None or cgroup is None:
        pytest.skip("no cgroup2 hierarchy here")
    directory = unified.directory(cgroup)
    assert os.getpid() in cgroupfs.read_ids(directory / "cgroup.procs")
    controllers = cgroupfs.parse_words(
        cgroupfs.read_str(unified.directory("/") / "cgroup.controllers")
    )
    assert all(name.isidentifier() for name in controllers)


def test_hierarchy_mode_matches_the_layout() -> None:
    mode = cgroupfs.hierarchy_mode(cgroupfs.cgroup_mounts())
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert mode == "unified"
    elif Path("/sys/fs/cgroup/unified/cgroup.controllers").exists():
        assert mode == "hybrid"
    else:
        assert mode in {"legacy", "none"}


def test_reading_controller_files() -> None:
    mounts = cgroupfs.cgroup_mounts()
    memberships = cgroupfs.read_proc_cgroup()
    v1 = cgroupfs.v1_mounts(mounts)
    if "memory" in v1:
        directory = v1["memory"].directory(cgroupfs.v1_cgroups(memberships)["memory"])
        assert cgroupfs.read_int(directory / "memory.usage_in_bytes") > 0
        stats = cgroupfs.read_flat_keyed(directory / "memory.stat")
        assert "total_rss" in stats or "rss" in stats
    unified = cgroupfs.v2_mount(mounts)
    cgroup = cgroupfs.v2_cgroup(memberships)
    if unified is not None and cgroup is not None:
        directory = unified.directory(cgroup)
        assert cgroupfs.read_flat_keyed(directory / "cgroup.stat").keys() >= {"nr_descendants"}
        if (directory / "memory.max").exists():
            limit = cgroupfs.read_max(directory / "memory.max")
            assert limit is None or limit > 0
