"""Pure parsing of cgroup membership, hierarchy mounts and cgroup file formats."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.linux import cgroupfs
from gantry.linux.proc import parse_mountinfo

HYBRID_PROC_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/83b17719
2:cpu,cpuacct:/gantry/abc
1:net_cls,net_prio:/odd:path:with:colons
0::/gantry/abc
"""

HYBRID_MOUNTINFO = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 31 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids,clone_children
35 31 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
37 31 0:34 / /mnt/memory-again rw - cgroup cgroup rw,memory
"""

UNIFIED_MOUNTINFO = """25 23 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""

LEGACY_MOUNTINFO = """32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""


def _mounts(text: str) -> tuple[cgroupfs.CgroupMount, ...]:
    return cgroupfs.cgroup_mounts(parse_mountinfo(text))


def test_parse_proc_cgroup_hybrid() -> None:
    entries = cgroupfs.parse_proc_cgroup(HYBRID_PROC_CGROUP)
    assert len(entries) == 6
    assert entries[0] == cgroupfs.CgroupMembership(9, ("name=systemd",), "/")
    assert entries[3].controllers == ("cpu", "cpuacct")
    assert entries[4].path == "/odd:path:with:colons"
    assert entries[5].is_v2
    assert not entries[0].is_v2
    assert cgroupfs.v2_cgroup(entries) == "/gantry/abc"
    assert cgroupfs.v1_cgroups(entries) == {
        "name=systemd": "/",
        "pids": "/",
        "memory": "/process_api/83b17719",
        "cpu": "/gantry/abc",
        "cpuacct": "/gantry/abc",
        "net_cls": "/odd:path:with:colons",
        "net_prio": "/odd:path:with:colons",
    }


def test_parse_proc_cgroup_v1_only_has_no_v2_path() -> None:
    entries = cgroupfs.parse_proc_cgroup("4:memory:/a\n")
    assert cgroupfs.v2_cgroup(entries) is None


@pytest.mark.parametrize("line", ["memory:/a", "x:memory:/a", "4"])
def test_parse_proc_cgroup_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        cgroupfs.parse_proc_cgroup(line)


def test_cgroup_mounts_from_hybrid_mountinfo() -> None:
    mounts = _mounts(HYBRID_MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/mnt/memory-again",
    ]
    assert mounts[0].controllers == {"cpu", "cpuacct"}
    assert mounts[2].controllers == {"pids"}
    assert mounts[3].controllers == {"name=systemd"}
    v2 = cgroupfs.v2_mount(mounts)
    assert v2 is not None and v2.mount_point == "/sys/fs/cgroup/unified" and v2.version == 2
    by_controller = cgroupfs.v1_mounts(mounts)
    assert by_controller["memory"].mount_point == "/sys/fs/cgroup/memory"  # first one wins
    assert by_controller["cpuacct"] is by_controller["cpu"]
    assert set(by_controller) == {"cpu", "cpuacct", "memory", "pids", "name=systemd"}


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (HYBRID_MOUNTINFO, "hybrid"),
        (UNIFIED_MOUNTINFO, "unified"),
        (LEGACY_MOUNTINFO, "legacy"),
        ("22 27 0:21 / /proc rw - proc proc rw\n", "none"),
    ],
)
def test_hierarchy_mode(text: str, mode: str) -> None:
    assert cgroupfs.hierarchy_mode(_mounts(text)) == mode


def test_directory_of_a_cgroup_under_a_mount() -> None:
    whole = cgroupfs.CgroupMount("/sys/fs/cgroup/memory", 1, frozenset({"memory"}), "/")
    assert whole.directory("/") == Path("/sys/fs/cgroup/memory")
    assert whole.directory("/a/b") == Path("/sys/fs/cgroup/memory/a/b")
    part = cgroupfs.CgroupMount("/mnt/cg", 2, frozenset(), "/gantry")
    assert part.directory("/gantry") == Path("/mnt/cg")
    assert part.directory("/gantry/c1/") == Path("/mnt/cg/c1")
    for outside in ("/", "/other", "/gantry/../x", "/gantryx"):
        with pytest.raises(ValueError, match="outside"):
            part.directory(outside)


def test_scalar_and_list_formats() -> None:
    assert cgroupfs.parse_max("max\n") is None
    assert cgroupfs.parse_max("1048576\n") == 1048576
    assert cgroupfs.parse_words("cpuset cpu io memory pids\n") == (
        "cpuset",
        "cpu",
        "io",
        "memory",
        "pids",
    )
    assert cgroupfs.parse_words("") == ()
    assert cgroupfs.parse_ids("12\n345\n") == (12, 345)
    assert cgroupfs.parse_ids("") == ()


def test_flat_keyed() -> None:
    text = "usage_usec 123\nuser_usec 100\nsystem_usec 23\n\n"
    assert cgroupfs.parse_flat_keyed(text) == {
        "usage_usec": 123,
        "user_usec": 100,
        "system_usec": 23,
    }
    with pytest.raises(ValueError):
        cgroupfs.parse_flat_keyed("a 1 2\n")


def test_nested_keyed() -> None:
    io_stat = "8:0 rbytes=90 wbytes=10 rios=3 wios=1 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=2\n"
    assert cgroupfs.parse_nested_keyed(io_stat) == {
        "8:0": {
            "rbytes": "90",
            "wbytes": "10",
            "rios": "3",
            "wios": "1",
            "dbytes": "0",
            "dios": "0",
        },
        "253:1": {"rbytes": "1", "wbytes": "2"},
    }
    pressure = "some avg10=0.00 avg60=0.12 avg300=0.00 total=5\nfull avg10=0.00 total=0\n"
    assert cgroupfs.parse_nested_keyed(pressure)["some"]["avg60"] == "0.12"
    assert cgroupfs.parse_nested_keyed("8:0 rbps=max wbps=1048576\n")["8:0"]["rbps"] == "max"
    with pytest.raises(ValueError):
        cgroupfs.parse_nested_keyed("8:0 rbytes\n")


def test_blkio_v1() -> None:
    text = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n"
    assert cgroupfs.parse_blkio_v1(text) == {
        "8:0": {"Read": 4096, "Write": 512, "Sync": 0, "Total": 4608}
    }
    assert cgroupfs.parse_blkio_v1("8:0 77\n8:16 5\n") == {"8:0": {"": 77}, "8:16": {"": 5}}


def test_readers_strip_the_newline(tmp_path: Path) -> None:
    (tmp_path / "pids.max").write_text("max\n")
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "cgroup.procs").write_text("1\n2\n")
    (tmp_path / "memory.stat").write_text("cache 1\nrss 2\n")
    (tmp_path / "io.max").write_text("8:0 rbps=1 wbps=max\n")
    assert cgroupfs.read_max(tmp_path / "pids.max") is None
    assert cgroupfs.read_int(tmp_path / "memory.limit_in_bytes") == 9223372036854771712
    assert cgroupfs.read_ids(tmp_path / "cgroup.procs") == (1, 2)
    assert cgroupfs.read_flat_keyed(tmp_path / "memory.stat") == {"cache": 1, "rss": 2}
    assert cgroupfs.read_nested_keyed(tmp_path / "io.max") == {"8:0": {"rbps": "1", "wbps": "max"}}
    assert cgroupfs.read_str(tmp_path / "pids.max") == "max"
