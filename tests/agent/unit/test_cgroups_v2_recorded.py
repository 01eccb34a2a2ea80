"""cgroup v2 controller files, written into a RECORDED v2 tree.

This machine's cgroup2 mount (hybrid, /sys/fs/cgroup/unified) offers only hugetlb, so the
v2 controller files cannot be written for real here. The tree below is laid out as a full
cgroup2 mount of Linux 6.x: the root's ``cgroup.controllers``, Gantry's parent, and a leaf
holding each controller's files with the kernel's initial contents. Every value written
is checked against runc's mapping (opencontainers/cgroups fs2). The core files (procs,
kill, freeze, events) and the BPF device program are exercised for real on the unified
mount by the integration tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gantry.linux.cgroupfs import CgroupMount
from gantry.runtime.cgroups import Layout
from gantry.runtime.cgroups import resources as rs
from gantry.runtime.cgroups.resources import ResourceError
from gantry.runtime.cgroups.v2 import V2Cgroup
from gantry.runtime.spec import load_resources

CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"

# A cgroup2 leaf as Linux 6.x creates it (one file per line: name, initial content).
RECORDED_LEAF: dict[str, str] = {
    "cgroup.controllers": CONTROLLERS,
    "cgroup.events": "populated 0\nfrozen 0",
    "cgroup.freeze": "0",
    "cgroup.kill": "",
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.type": "domain",
    "cpu.idle": "0",
    "cpu.max": "max 100000",
    "cpu.max.burst": "0",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\n"
    "throttled_usec 0\nnr_bursts 0\nburst_usec 0",
    "cpu.weight": "100",
    "cpu.weight.nice": "0",
    "cpuset.cpus": "",
    "cpuset.cpus.effective": "0-3",
    "cpuset.mems": "",
    "cpuset.mems.effective": "0",
    "hugetlb.1GB.current": "0",
    "hugetlb.1GB.events": "max 0",
    "hugetlb.1GB.max": "max",
    "hugetlb.1GB.rsvd.current": "0",
    "hugetlb.1GB.rsvd.max": "max",
    "hugetlb.2MB.current": "0",
    "hugetlb.2MB.events": "max 0",
    "hugetlb.2MB.max": "max",
    "hugetlb.2MB.rsvd.current": "0",
    "hugetlb.2MB.rsvd.max": "max",
    "io.max": "",
    "io.stat": "",
    "io.weight": "default 100",
    "memory.current": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0",
    "memory.high": "max",
    "memory.low": "0",
    "memory.max": "max",
    "memory.min": "0",
    "memory.oom.group": "0",
    "memory.peak": "0",
    "memory.stat": "anon 0\nfile 0\ninactive_anon 0\nactive_anon 0\ninactive_file 0\nactive_file 0",
    "memory.swap.current": "0",
    "memory.swap.events": "high 0\nmax 0\nfail 0",
    "memory.swap.max": "max",
    "memory.swap.peak": "0",
    "pids.current": "0",
    "pids.events": "max 0",
    "pids.max": "max",
    "rdma.current": "",
    "rdma.max": "",
}


def recorded_tree(tmp_path: Path, *, bfq: bool = False, swap: bool = True) -> V2Cgroup:
    """The recorded cgroup2 mount at ``tmp_path/cgroup2`` with the leaf ``/gantry/c1``."""
    mount = tmp_path / "cgroup2"
    leaf = mount / "gantry" / "c1"
    leaf.mkdir(parents=True)
    for directory in (mount, mount / "gantry"):
        (directory / "cgroup.controllers").write_text(CONTROLLERS + "\n")
        (directory / "cgroup.subtree_control").write_text(CONTROLLERS + "\n")
    for name, content in RECORDED_LEAF.items():
        if not swap and name.startswith("memory.swap."):
            continue
        (leaf / name).write_text(content + "\n")
    if bfq:
        (leaf / "io.bfq.weight").write_text("default 100\n")
    layout = Layout(
        mode="unified",
        v2_mount=CgroupMount(str(mount), 2, frozenset(), "/"),
        v2_available=tuple(CONTROLLERS.split()),
    )
    cgroup = V2Cgroup(layout, "/gantry/c1")
    assert cgroup.directory == leaf
    return cgroup


def files(cgroup: V2Cgroup) -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in cgroup.directory.iterdir() if p.is_file()}


def apply(cgroup: V2Cgroup, data: dict[str, Any]) -> list[str]:
    return cgroup.apply(load_resources(data, path="linux.resources"))


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in after.items() if before.get(name) != value}


MiB = 1 << 20


# --- memory -------------------------------------------------------------------------------------


def test_v2_recorded_tree_memory_limit_swap_and_reservation(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    apply(cgroup, {"memory": {"limit": 32 * MiB, "swap": 96 * MiB, "reservation": 16 * MiB}})
    # memory.swap.max is swap alone: the spec's memory+swap minus the memory limit.
    assert changed(before, files(cgroup)) == {
        "memory.max": str(32 * MiB),
        "memory.swap.max": str(64 * MiB),
        "memory.low": str(16 * MiB),
    }


def test_v2_recorded_tree_swap_equal_to_memory_means_no_swap(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(cgroup, {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    assert files(cgroup)["memory.swap.max"] == "0"
    assert files(cgroup)["memory.max"] == str(32 * MiB)


def test_v2_recorded_tree_unlimited_memory_unlimits_swap(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    (cgroup.directory / "memory.max").write_text("1000\n")
    (cgroup.directory / "memory.swap.max").write_text("0\n")
    apply(cgroup, {"memory": {"limit": -1}})
    assert (files(cgroup)["memory.max"], files(cgroup)["memory.swap.max"]) == ("max", "max")


def test_v2_recorded_tree_swap_without_swap_accounting(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path, swap=False)
    apply(cgroup, {"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})  # "no swap": nothing to do
    with pytest.raises(ResourceError, match=r"linux\.resources\.memory\.swap: .*swap accounting"):
        apply(cgroup, {"memory": {"limit": 32 * MiB, "swap": 64 * MiB}})


def test_v2_recorded_tree_swappiness_and_oom_killer_warn(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    warnings = apply(cgroup, {"memory": {"swappiness": 10, "disableOOMKiller": True}})
    assert changed(before, files(cgroup)) == {}
    assert [w.split(":")[0] for w in warnings] == [
        "linux.resources.memory.swappiness",
        "linux.resources.memory.disableOOMKiller",
    ]


def test_v2_recorded_tree_swap_without_memory_is_refused(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    with pytest.raises(ResourceError, match=r"memory\.swap: a swap limit needs a memory limit"):
        apply(cgroup, {"memory": {"swap": 64 * MiB}})


# --- cpu and cpuset -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "weight"), [(1024, "100"), (512, "59"), (2, "1"), (262144, "10000")]
)
def test_v2_recorded_tree_cpu_shares_become_weight(
    tmp_path: Path, shares: int, weight: str
) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(cgroup, {"cpu": {"shares": shares}})
    assert files(cgroup)["cpu.weight"] == weight


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        ({"quota": 20000, "period": 100000}, "20000 100000"),
        ({"quota": 50000}, "50000"),
        ({"quota": -1, "period": 50000}, "max 50000"),
    ],
)
def test_v2_recorded_tree_quota_and_period_become_cpu_max(
    tmp_path: Path, cpu: dict[str, int], expected: str
) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(cgroup, {"cpu": cpu})
    assert files(cgroup)["cpu.max"] == expected


def test_v2_recorded_tree_burst_idle_cpus_mems(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    apply(cgroup, {"cpu": {"burst": 5000, "idle": 1, "cpus": "1-2", "mems": "0"}})
    assert changed(before, files(cgroup)) == {
        "cpu.max.burst": "5000",
        "cpu.idle": "1",
        "cpuset.cpus": "1-2",
        "cpuset.mems": "0",
    }


def test_v2_recorded_tree_realtime_is_refused_and_nothing_written(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    with pytest.raises(ResourceError) as caught:
        apply(
            cgroup, {"cpu": {"shares": 512, "realtimeRuntime": 950000, "realtimePeriod": 1000000}}
        )
    assert [name for name, _message in caught.value.errors] == [
        "linux.resources.cpu.realtimeRuntime",
        "linux.resources.cpu.realtimePeriod",
    ]
    assert files(cgroup) == before


# --- pids, io, hugetlb, rdma, unified, network --------------------------------------------------


@pytest.mark.parametrize(("limit", "text"), [(32, "32"), (-1, "max")])
def test_v2_recorded_tree_pids(tmp_path: Path, limit: int, text: str) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(cgroup, {"pids": {"limit": limit}})
    assert files(cgroup)["pids.max"] == text


def test_v2_recorded_tree_blkio_weight_and_throttles(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(
        cgroup,
        {
            "blockIO": {
                "weight": 500,
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": MiB}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2 * MiB}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 0}],
            }
        },
    )
    after = files(cgroup)
    assert after["io.weight"] == "4950"  # 1 + (500 - 10) * 9999 / 990
    # One write per line, as the kernel takes io.max; the recorded file keeps them all.
    assert after["io.max"] == f"8:0 rbps={MiB}8:0 wbps={2 * MiB}8:16 riops=1008:16 wiops=max"


def test_v2_recorded_tree_bfq_takes_the_blkio_weights_as_they_are(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path, bfq=True)
    apply(
        cgroup,
        {"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}]}},
    )
    # BFQ's range is blkio's (1..1000): "500" as it is, then the per-device line appended.
    assert (cgroup.directory / "io.bfq.weight").read_text() == "5008:0 300"
    assert files(cgroup)["io.weight"] == "default 100"


def test_v2_recorded_tree_per_device_weight_needs_bfq(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    with pytest.raises(
        ResourceError, match=r"linux\.resources\.blockIO\.weightDevice\[0\]\.weight: .*BFQ"
    ):
        apply(cgroup, {"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 300}]}})


def test_v2_recorded_tree_hugetlb_limits_and_reservations(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    apply(cgroup, {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * 2 * MiB}]})
    assert changed(before, files(cgroup)) == {
        "hugetlb.2MB.max": str(8 * MiB),
        "hugetlb.2MB.rsvd.max": str(8 * MiB),
    }


def test_v2_recorded_tree_unknown_hugepage_size_names_the_field(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    with pytest.raises(
        ResourceError,
        match=r"hugepageLimits\[1\]\.pageSize: page size '4MB' is not one of .*1GB, 2MB",
    ):
        apply(
            cgroup,
            {"hugepageLimits": [{"pageSize": "2MB", "limit": 0}, {"pageSize": "4MB", "limit": 1}]},
        )


def test_v2_recorded_tree_rdma_and_unified(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    apply(
        cgroup,
        {
            "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"memory.high": "52428800", "cgroup.freeze": "0"},
        },
    )
    after = files(cgroup)
    assert after["rdma.max"] == "mlx5_0 hca_handle=3 hca_object=10000"
    assert after["memory.high"] == "52428800"


def test_v2_recorded_tree_unknown_unified_file_and_network_are_refused(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    with pytest.raises(ResourceError) as caught:
        apply(
            cgroup,
            {
                "pids": {"limit": 10},
                "unified": {"memory.nonsense": "1"},
                "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
            },
        )
    assert [name for name, _message in caught.value.errors] == [
        "linux.resources.network.classID",
        "linux.resources.network.priorities",
        'linux.resources.unified["memory.nonsense"]',
    ]
    assert "cgroup v2 has neither net_cls nor net_prio" in str(caught.value)
    assert files(cgroup) == before  # pids.max untouched: nothing is written on any error


# --- failure part-way, and the statistics ------------------------------------------------------


def test_v2_recorded_tree_a_failed_write_restores_what_was_written(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    before = files(cgroup)
    resources = load_resources({"memory": {"limit": 32 * MiB}, "pids": {"limit": 5}})
    work = rs.plan(resources, cgroup.targets())
    written: list[str] = []

    def writer(write: rs.Write) -> None:
        if write.file == "pids.max" and write.value == "5":
            raise OSError(16, "Device or resource busy")
        written.append(f"{write.file}={write.value}")
        write.path.write_text(write.value)

    with pytest.raises(ResourceError, match=r"linux\.resources\.pids\.limit: writing '5'"):
        rs.execute(work, writer=writer)
    assert written == [f"memory.max={32 * MiB}", "memory.max=max"]
    assert files(cgroup)["memory.max"] == "max"
    assert files(cgroup) == before


def test_v2_recorded_tree_stats(tmp_path: Path) -> None:
    cgroup = recorded_tree(tmp_path)
    leaf = cgroup.directory
    (leaf / "cpu.stat").write_text(
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\n"
        "throttled_usec 800\n"
    )
    (leaf / "memory.current").write_text(f"{40 * MiB}\n")
    (leaf / "memory.max").write_text(f"{64 * MiB}\n")
    (leaf / "memory.stat").write_text(
        f"anon {30 * MiB}\nfile {10 * MiB}\ninactive_file {6 * MiB}\n"
    )
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.max").write_text("32\n")
    (leaf / "io.stat").write_text("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n")
    (leaf / "hugetlb.2MB.current").write_text(f"{4 * MiB}\n")
    (leaf / "hugetlb.2MB.events").write_text("max 3\n")
    data = cgroup.stats().to_json()
    assert data["cpu"]["usage"] == {
        "total": 2500000,
        "percpu": [],
        "kernel": 500000,
        "user": 2000000,
    }
    assert data["cpu"]["throttling"] == {
        "periods": 10,
        "throttled_periods": 4,
        "throttled_time": 800000,
    }
    memory = data["memory"]
    assert memory["usage"] == {"usage": 40 * MiB, "max": 0, "limit": 64 * MiB, "failcnt": 7}
    assert memory["working_set"] == 34 * MiB  # usage - inactive_file
    assert memory["cache"] == 10 * MiB
    assert (memory["oom_events"], memory["oom_kill"]) == (2, 1)
    assert data["pids"] == {"current": 3, "limit": 32}
    assert data["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 254, "minor": 0, "op": "Read", "value": 4096},
        {"major": 254, "minor": 0, "op": "Write", "value": 8192},
    ]
    assert data["blkio"]["ioServicedRecursive"][1] == {
        "major": 254,
        "minor": 0,
        "op": "Write",
        "value": 2,
    }
    assert data["hugetlb"]["2MB"] == {"usage": 4 * MiB, "max": 0, "failcnt": 3}
    assert data["hugetlb"]["1GB"]["usage"] == 0
