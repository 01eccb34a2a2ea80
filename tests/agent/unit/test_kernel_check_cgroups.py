"""cgroup layouts (unified, hybrid, legacy, none) from crafted mountinfo and cgroupfs trees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gantry import kernel_check as kc


def check(sysroot: Path, config: Path, **kwargs: Any) -> dict[str, Any]:
    return kc.run_checks(config_path=str(config), sysroot=str(sysroot), environ={}, **kwargs)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "io", "pids", "devices", "freezer", "hugetlb")


def test_unified_layout(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("unified"), kernel_config())
    assert report["cgroup"] == {
        "layout": "unified",
        "v1": {},
        "v2": {
            "mount": "/sys/fs/cgroup",
            "controllers": ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"],
            "subtree_control": ["cpu", "io", "memory", "pids"],
        },
    }
    items = by_id(report)
    for name in CONTROLLERS:
        assert items[f"cgroup:{name}"]["status"] == "ok", items[f"cgroup:{name}"]
        assert items[f"cgroup:{name}"]["value"] == "v2"
    # devices and freezer have no cgroup.controllers entry on v2: BPF and cgroup.freeze.
    assert "BPF" in items["cgroup:devices"]["detail"]
    assert "cgroup.freeze" in items["cgroup:freezer"]["detail"]
    assert "subtree_control" in items["cgroup:cpuset"]["detail"]  # not delegated yet
    assert "subtree_control" not in items["cgroup:memory"]["detail"]
    assert report["summary"]["exit_code"] == 0


def test_unified_devices_needs_cgroup_bpf(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("unified"), kernel_config(drop=["CGROUP_BPF"]))
    items = by_id(report)
    assert items["cgroup:devices"]["status"] == "missing"
    assert items["CONFIG_CGROUP_BPF"]["status"] == "missing"


def test_unified_without_the_memory_controller(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("unified")
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io pids\n")
    item = by_id(check(root, kernel_config()))["cgroup:memory"]
    assert item["status"] == "missing"
    assert "cgroup.controllers" in item["detail"]
    assert item["hint"]


def test_hybrid_layout(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("hybrid"), kernel_config())
    cgroup = report["cgroup"]
    assert cgroup["layout"] == "hybrid"
    assert cgroup["v2"] == {
        "mount": "/sys/fs/cgroup/unified",
        "controllers": [],
        "subtree_control": [],
    }
    assert cgroup["v1"]["cpu"] == cgroup["v1"]["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert cgroup["v1"]["name=systemd"] == "/sys/fs/cgroup/systemd"
    assert cgroup["v1"]["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"
    items = by_id(report)
    for name in ("cpu", "cpuacct", "cpuset", "memory", "io", "pids", "devices", "freezer"):
        assert items[f"cgroup:{name}"]["status"] == "ok"
        assert items[f"cgroup:{name}"]["value"] == "v1"
    assert items["cgroup:io"]["detail"] == "v1 hierarchy at /sys/fs/cgroup/blkio"
    # hugetlb is mounted nowhere: optional, so a warning with the mount command.
    hugetlb = items["cgroup:hugetlb"]
    assert hugetlb["status"] == "warn"
    assert "mount -t cgroup -o hugetlb" in hugetlb["hint"]
    assert items["cgroup:hierarchy"]["value"] == "hybrid"
    assert report["summary"]["exit_code"] == 0


def test_hybrid_controller_on_the_v2_side(make_sysroot: Any, kernel_config: Any) -> None:
    # This machine's layout: hugetlb is bound to the cgroup2 mount, not a v1 one.
    root = make_sysroot("hybrid")
    (root / "sys/fs/cgroup/unified/cgroup.controllers").write_text("hugetlb\n")
    report = check(root, kernel_config())
    assert report["cgroup"]["v2"]["controllers"] == ["hugetlb"]
    item = by_id(report)["cgroup:hugetlb"]
    assert (item["status"], item["value"]) == ("ok", "v2")


def test_hybrid_does_not_use_v2_pseudo_controllers(make_sysroot: Any, kernel_config: Any) -> None:
    # Without a v1 devices hierarchy a hybrid host has no device control: the runtime puts
    # containers in the v1 hierarchies, so the BPF path of the unified layout does not count.
    root = make_sysroot("hybrid")
    mountinfo = root / "proc/self/mountinfo"
    mountinfo.write_text(
        "".join(ln for ln in mountinfo.read_text().splitlines(True) if "devices" not in ln)
    )
    item = by_id(check(root, kernel_config()))["cgroup:devices"]
    assert item["status"] == "missing"
    assert "mount -t cgroup -o devices" in item["hint"]


def test_legacy_layout(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot("legacy"), kernel_config())
    cgroup = report["cgroup"]
    assert cgroup["layout"] == "legacy"
    assert cgroup["v2"]["mount"] is None
    # The first mount of a hierarchy wins; a bind mount elsewhere is not a new hierarchy.
    assert cgroup["v1"]["memory"] == "/sys/fs/cgroup/memory"
    assert "clone_children" not in cgroup["v1"] and "xattr" not in cgroup["v1"]
    items = by_id(report)
    assert items["cgroup:memory"]["status"] == "ok"
    assert items["cgroup:hugetlb"]["status"] == "warn"
    assert report["summary"]["exit_code"] == 0


def test_probe_items_name_each_hierarchy_once_and_are_skipped_off_the_live_system(
    make_sysroot: Any, kernel_config: Any
) -> None:
    report = check(make_sysroot("legacy"), kernel_config())
    probes = [item for item in report["items"] if item["id"].startswith("probe:cgroup:")]
    assert [item["id"] for item in probes] == [
        "probe:cgroup:v1:name=systemd",
        "probe:cgroup:v1:cpu,cpuacct",
        "probe:cgroup:v1:memory",
        "probe:cgroup:v1:pids",
        "probe:cgroup:v1:devices",
        "probe:cgroup:v1:freezer",
        "probe:cgroup:v1:cpuset",
        "probe:cgroup:v1:blkio",
    ]
    assert {item["status"] for item in probes} == {"skipped"}


def test_disabled_controller_hints_at_the_kernel_command_line(
    make_sysroot: Any, kernel_config: Any
) -> None:
    root = make_sysroot("unified")
    cgroups = root / "proc/cgroups"
    cgroups.write_text(cgroups.read_text().replace("memory\t0\t1\t1", "memory\t0\t1\t0"))
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io pids\n")
    item = by_id(check(root, kernel_config()))["cgroup:memory"]
    assert item["status"] == "missing"
    assert item["detail"] == "disabled on the kernel command line"
    assert "cgroup_enable=memory" in item["hint"]


def test_no_cgroups_mounted(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot()
    (root / "proc/self/mountinfo").write_text("17 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    report = check(root, kernel_config())
    assert report["cgroup"] == {
        "layout": "none",
        "v1": {},
        "v2": {"mount": None, "controllers": [], "subtree_control": []},
    }
    items = by_id(report)
    assert items["cgroup:hierarchy"]["status"] == "missing"
    assert "mount -t cgroup2" in items["cgroup:hierarchy"]["hint"]
    assert report["summary"]["exit_code"] == 1


def test_unreadable_mount_table_is_unknown(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(make_sysroot(), kernel_config())  # base has no mountinfo at all
    items = by_id(report)
    assert items["cgroup:hierarchy"]["status"] == "unknown"
    assert items["cgroup:memory"]["status"] == "unknown"
    assert report["summary"]["exit_code"] == 0


def test_escaped_mount_points_and_the_mounts_fallback(
    make_sysroot: Any, kernel_config: Any
) -> None:
    root = make_sysroot()
    (root / "proc/self/mounts").write_text(
        "cgroup2 /run/my\\040cgroups cgroup2 rw,nosuid 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    )
    report = check(root, kernel_config())
    assert report["cgroup"]["layout"] == "hybrid"
    assert report["cgroup"]["v2"]["mount"] == "/run/my cgroups"
