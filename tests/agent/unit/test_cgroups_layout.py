"""Layout detection and driver choice on crafted trees: a mountinfo text and the cgroup files
a test writes into a temporary directory stand in for a host (no root, nothing mounted)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from gantry.linux.cgroupfs import cgroup_mounts
from gantry.linux.proc import parse_mountinfo
from gantry.runtime import cgroups
from gantry.runtime.cgroups import Cgroup, CgroupError, Hybrid, Layout
from gantry.runtime.cgroups.v1 import V1Cgroup
from gantry.runtime.cgroups.v2 import V2Cgroup
from gantry.runtime.spec import Resources

ALL_V2 = "cpuset cpu io memory hugetlb pids rdma misc"

V1_LINES = [
    "{n} 25 0:{n} / {root}/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd",
    "{n} 25 0:{n} / {root}/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
    "{n} 25 0:{n} / {root}/memory rw,nosuid - cgroup cgroup rw,memory",
    "{n} 25 0:{n} / {root}/pids rw,nosuid - cgroup cgroup rw,pids",
    "{n} 25 0:{n} / {root}/freezer rw,nosuid - cgroup cgroup rw,freezer",
    "{n} 25 0:{n} / {root}/cpuset rw,nosuid - cgroup cgroup rw,cpuset,clone_children",
    "{n} 25 0:{n} / {root}/devices rw,nosuid - cgroup cgroup rw,devices",
    "{n} 25 0:{n} / {root}/blkio rw,nosuid - cgroup cgroup rw,blkio",
    "{n} 25 0:{n} / {root}/net_cls,net_prio rw,nosuid - cgroup cgroup rw,net_cls,net_prio",
]


def _crafted(tmp_path: Path, kind: str, v2_controllers: str = ALL_V2) -> tuple[Layout, Path]:
    """Build a crafted ``unified``, ``legacy`` or ``hybrid`` tree and detect its layout."""
    root = tmp_path / "sys" / "fs" / "cgroup"
    root.mkdir(parents=True)
    lines = [f"25 23 0:21 / {root} rw,nosuid - tmpfs tmpfs rw,mode=755"]
    if kind == "unified":
        lines = [f"25 23 0:21 / {root} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate"]
        _v2_root(root, v2_controllers)
    else:
        for number, line in enumerate(V1_LINES, start=26):
            lines.append(line.format(n=number, root=root))
        for line in lines[1:]:
            Path(line.split()[4]).mkdir()
    if kind == "hybrid":
        lines.append(f"40 25 0:40 / {root}/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate")
        (root / "unified").mkdir()
        _v2_root(root / "unified", v2_controllers)
    mounts = cgroup_mounts(parse_mountinfo("\n".join(lines) + "\n"))
    return cgroups.detect(mounts, cgroup_root=str(root)), root


def _v2_root(directory: Path, controllers: str) -> None:
    (directory / "cgroup.controllers").write_text(f"{controllers}\n")
    (directory / "cgroup.subtree_control").write_text("\n")


# --- detection -------------------------------------------------------------------------------


def test_crafted_unified_tree(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "unified")
    assert layout.mode == "unified"
    assert layout.v1_mounts == {}
    assert layout.v1_controllers == ()
    assert layout.v2_controllers == tuple(sorted(ALL_V2.split()))
    assert layout.side("memory") == "v2"
    assert layout.side("freezer") is None  # v2 freezes with cgroup.freeze, not a controller
    assert layout.v2_mount is not None
    assert layout.v2_mount.mount_point == str(root)


def test_crafted_legacy_tree(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "legacy")
    assert layout.mode == "legacy"
    assert layout.v2_mount is None
    assert layout.v2_controllers == ()
    assert layout.v1_controllers == (
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "memory",
        "net_cls",
        "net_prio",
        "pids",
    )
    assert "name=systemd" in layout.v1_mounts
    assert len(layout.v1_hierarchies) == len(V1_LINES)  # cpu,cpuacct is one hierarchy
    assert layout.v1_mounts["cpu"] is layout.v1_mounts["cpuacct"]
    assert layout.side("cpuacct") == "v1"
    assert layout.side("hugetlb") is None
    assert layout.v1_mounts["memory"].mount_point == str(root / "memory")


def test_crafted_hybrid_tree_drives_each_controller_on_its_side(tmp_path: Path) -> None:
    # The kernel lists only unbound controllers in the v2 root; this crafted tree lists one
    # that v1 has too, to show v1 wins for it.
    layout, _root = _crafted(tmp_path, "hybrid", "memory hugetlb")
    assert layout.mode == "hybrid"
    assert layout.v2_controllers == ("hugetlb",)
    assert layout.side("memory") == "v1"
    assert layout.side("hugetlb") == "v2"
    sides = layout.controllers()
    assert sides["hugetlb"] == "v2"
    assert sides["memory"] == "v1"
    assert sides["cpu"] == "v1"


def test_crafted_hybrid_tree_with_an_empty_v2_root(tmp_path: Path) -> None:
    layout, _root = _crafted(tmp_path, "hybrid", "")
    assert layout.mode == "hybrid"
    assert layout.v2_controllers == ()


def test_no_cgroup_mount_at_all() -> None:
    layout = cgroups.detect(())
    assert layout.mode == "none"
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        cgroups.open_cgroup("/gantry/c1", layout)


# --- driver choice and paths -----------------------------------------------------------------


def test_driver_for_each_crafted_layout(tmp_path: Path) -> None:
    unified, _r1 = _crafted(tmp_path / "u", "unified")
    legacy, _r2 = _crafted(tmp_path / "l", "legacy")
    hybrid, _r3 = _crafted(tmp_path / "h", "hybrid", "hugetlb")
    assert isinstance(cgroups.open_cgroup("/gantry/c1", unified), V2Cgroup)
    assert isinstance(cgroups.open_cgroup("/gantry/c1", legacy), V1Cgroup)
    both = cgroups.open_cgroup("/gantry/c1", hybrid)
    assert isinstance(both, Hybrid)
    assert isinstance(both.v1, V1Cgroup)
    assert isinstance(both.v2, V2Cgroup)


def test_paths_on_a_crafted_hybrid_tree(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "hybrid", "hugetlb")
    paths = cgroups.open_cgroup("/gantry/c1", layout).paths()
    assert paths[""] == root / "unified/gantry/c1"
    assert paths["hugetlb"] == root / "unified/gantry/c1"
    assert paths["cpu"] == paths["cpuacct"] == root / "cpu,cpuacct/gantry/c1"
    assert paths["name=systemd"] == root / "systemd/gantry/c1"
    assert paths["memory"] == root / "memory/gantry/c1"


def test_paths_on_a_crafted_unified_tree(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "unified", "cpu memory")
    assert cgroups.open_cgroup("/gantry/c1", layout).paths() == {
        "": root / "gantry/c1",
        "cpu": root / "gantry/c1",
        "memory": root / "gantry/c1",
    }


def test_bad_paths_and_delegates_are_refused(tmp_path: Path) -> None:
    layout, _root = _crafted(tmp_path, "hybrid", "hugetlb")
    for bad in ("gantry/c1", "/", "/a/../b"):
        with pytest.raises(ValueError):
            cgroups.open_cgroup(bad, layout)
    with pytest.raises(ValueError, match="not at or below the delegated cgroup /other"):
        cgroups.open_cgroup("/gantry/c1", layout, delegate="/other")
    with pytest.raises(CgroupError, match="no cgroup2 hierarchy"):
        V2Cgroup(Layout(mode="legacy"), "/gantry/c1")
    with pytest.raises(CgroupError, match="no cgroup v1 hierarchy"):
        V1Cgroup(Layout(mode="unified"), "/gantry/c1")


# --- v2 create on a crafted tree: which subtree_control files get written ---------------------


def _gantry_parent(root: Path, controllers: str, enabled: str) -> Path:
    parent = root / "gantry"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text(f"{controllers}\n")
    (parent / "cgroup.subtree_control").write_text(f"{enabled}\n")
    return parent


def test_crafted_v2_create_enables_controllers_down_from_the_root(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "unified", "cpu memory pids")
    (root / "cgroup.subtree_control").write_text("cpu\n")
    parent = _gantry_parent(root, "cpu memory pids", "memory")
    cgroup = V2Cgroup(layout, "/gantry/c1", controllers=("memory", "pids", "io"))
    cgroup.create()
    # Each ancestor gets what it has and lacks in one write; io is nowhere, so never asked.
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (parent / "cgroup.subtree_control").read_text() == "+pids"
    assert (parent / "c1").is_dir()
    assert cgroup.exists()


def test_crafted_v2_create_leaves_ancestors_above_the_delegate_alone(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "unified", "cpu memory pids")
    parent = _gantry_parent(root, "cpu memory", "")
    cgroups.open_cgroup("/gantry/c1", layout, delegate="/gantry").create()
    assert (root / "cgroup.subtree_control").read_text() == "\n"
    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory"


def test_crafted_v2_create_failure_removes_what_it_made(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "unified", "cpu")
    _gantry_parent(root, "cpu", "cpu")
    cgroup = V2Cgroup(layout, "/gantry/new/c1")
    # A plain directory has no cgroup.controllers, which the kernel would have made.
    with pytest.raises(CgroupError, match=r"cannot read .*gantry/new/cgroup\.controllers"):
        cgroup.create()
    assert not (root / "gantry" / "new").exists()
    assert (root / "gantry").is_dir()  # it was there before


# --- freezer states on crafted files ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [("FROZEN\n", "frozen"), ("FREEZING\n", "freezing"), ("THAWED\n", "thawed")],
)
def test_crafted_v1_freezer_state(tmp_path: Path, content: str, expected: str) -> None:
    layout, root = _crafted(tmp_path, "legacy")
    (root / "freezer" / "c1").mkdir()
    (root / "freezer" / "c1" / "freezer.state").write_text(content)
    assert V1Cgroup(layout, "/c1").state() == expected


@pytest.mark.parametrize(
    ("freeze", "events", "expected"),
    [
        ("1", "populated 1\nfrozen 1\n", "frozen"),
        ("1", "populated 1\nfrozen 0\n", "freezing"),
        ("0", "populated 1\nfrozen 0\n", "thawed"),
        ("0", "populated 1\nfrozen 1\n", "frozen"),  # an ancestor is frozen
    ],
)
def test_crafted_v2_freezer_state(tmp_path: Path, freeze: str, events: str, expected: str) -> None:
    layout, root = _crafted(tmp_path, "unified")
    (root / "c1").mkdir()
    (root / "c1" / "cgroup.freeze").write_text(f"{freeze}\n")
    (root / "c1" / "cgroup.events").write_text(events)
    assert V2Cgroup(layout, "/c1").state() == expected


def test_state_of_a_missing_cgroup_names_it(tmp_path: Path) -> None:
    layout, _root = _crafted(tmp_path, "hybrid", "")
    with pytest.raises(CgroupError, match="cgroup /absent does not exist"):
        cgroups.open_cgroup("/absent", layout).state()


def test_nothing_to_do_for_a_missing_cgroup(tmp_path: Path) -> None:
    layout, _root = _crafted(tmp_path, "hybrid", "")
    cgroup = cgroups.open_cgroup("/absent", layout)
    assert not cgroup.exists()
    assert cgroup.procs() == []
    assert cgroup.all_pids() == []
    cgroup.kill_all()
    cgroup.kill_all(signal.SIGTERM)
    cgroup.destroy()


# --- orphans ---------------------------------------------------------------------------------


def test_crafted_orphans_only_under_the_parent(tmp_path: Path) -> None:
    layout, root = _crafted(tmp_path, "hybrid", "")
    for top in ("memory", "unified"):
        for name in ("gantry/keep", "gantry/lost", "elsewhere/lost"):
            (root / top / name).mkdir(parents=True)
        (root / top / "gantry" / "not-a-cgroup").write_text("")
    found = cgroups.orphans("/gantry", ["keep"], layout)
    assert found == [root / "memory/gantry/lost", root / "unified/gantry/lost"]


# --- resources on an empty tree ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_empty_resources_write_nothing_and_missing_controllers_read_as_absent(
    tmp_path: Path, kind: str
) -> None:
    layout, root = _crafted(tmp_path, "hybrid", "hugetlb")
    drivers: dict[str, Cgroup] = {
        "v1": V1Cgroup(layout, "/c1"),
        "v2": V2Cgroup(layout, "/c1"),
        "hybrid": cgroups.open_cgroup("/c1", layout),
    }
    cgroup = drivers[kind]
    before = sorted(str(p) for p in root.rglob("*"))
    assert cgroup.apply(Resources()) == []
    assert sorted(str(p) for p in root.rglob("*")) == before
    with pytest.raises(CgroupError, match="/c1 does not exist"):
        cgroup.stats()
    for directory in {*cgroup.paths().values()}:
        directory.mkdir()
    stats = cgroup.stats()
    assert stats.memory is None if kind == "v2" else stats.memory is not None
    assert stats.to_json()["blkio"] == {"ioServiceBytesRecursive": [], "ioServicedRecursive": []}
