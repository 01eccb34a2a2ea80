"""The report: features, status rules, exit codes, hints, and the text renderer."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from gantry import kernel_check as kc

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check(sysroot: Path, config: Path | str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("environ", {})
    return kc.run_checks(config_path=str(config), sysroot=str(sysroot), **kwargs)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


@pytest.fixture
def report(make_sysroot: Any, kernel_config: Any) -> dict[str, Any]:
    return check(make_sysroot("hybrid", "modules"), kernel_config())


def test_features_table() -> None:
    names = [name for name, _description, _default in kc.FEATURES]
    assert len(names) == len(set(names))
    defaults = [name for name, _description, default in kc.FEATURES if default]
    assert defaults == ["namespaces", "cgroups", "overlay", "seccomp", "bridge", "ports"]
    for extra in (
        "userns",
        "checkpoint",
        "macvlan",
        "ipvlan",
        "vlan",
        "vxlan",
        "lsm",
        "fuse",
        "timens",
    ):
        assert extra in names
    assert all(len(description) > 20 for _name, description, _default in kc.FEATURES)
    assert (kc.EXIT_OK, kc.EXIT_MISSING, kc.EXIT_UNREADABLE) == (0, 1, 2)


def test_unknown_feature_raises_naming_it_and_the_valid_ones(
    make_sysroot: Any, kernel_config: Any
) -> None:
    with pytest.raises(ValueError) as raised:
        check(make_sysroot("hybrid"), kernel_config(), features=["namespaces", "warp-drive"])
    message = str(raised.value)
    assert "'warp-drive'" in message
    for name, _description, _default in kc.FEATURES:
        assert name in message


def test_default_and_explicit_features(
    report: dict[str, Any], make_sysroot: Any, kernel_config: Any
) -> None:
    assert report["requested"] == ["namespaces", "cgroups", "overlay", "seccomp", "bridge", "ports"]
    assert set(report["features"]) == {name for name, _description, _default in kc.FEATURES}
    assert report["features"]["userns"]["requested"] is False
    root = make_sysroot("hybrid")
    assert check(root, kernel_config(), features=[])["requested"] == report["requested"]
    assert check(root, kernel_config(), features=["userns", "userns"])["requested"] == ["userns"]


def test_item_shape(report: dict[str, Any]) -> None:
    keys = {
        "id",
        "kind",
        "section",
        "label",
        "features",
        "value",
        "module",
        "status",
        "detail",
        "hint",
    }
    kinds = {"kconfig", "probe", "sysctl", "binary", "cgroup", "lsm"}
    features = {name for name, _description, _default in kc.FEATURES}
    ids = [item["id"] for item in report["items"]]
    assert len(ids) == len(set(ids))
    for item in report["items"]:
        assert set(item) == keys, item
        assert item["kind"] in kinds
        assert item["section"] in kc.SECTIONS
        assert item["status"] in kc.STATUSES
        assert set(item["features"]) <= features
        assert set(item["features"].values()) <= {"required", "optional"}
        if item["status"] != "ok":
            assert item["hint"], item
    sections = [kc.SECTIONS.index(item["section"]) for item in report["items"]]
    assert sections == sorted(sections)


def test_summary_counts(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert sum(summary[status] for status in kc.STATUSES) == len(report["items"])
    assert summary["required_missing"] == [
        i["id"] for i in report["items"] if i["status"] == "missing"
    ]


def test_report_is_json_serialisable(report: dict[str, Any]) -> None:
    assert json.loads(json.dumps(report)) == report
    assert report["schema"] == 1


def test_required_by_an_unrequested_feature_is_only_a_warning(
    make_sysroot: Any, kernel_config: Any
) -> None:
    root = make_sysroot("hybrid")
    config = kernel_config(drop=["VXLAN", "PID_NS"])
    report = check(root, config, features=["vxlan"])
    items = by_id(report)
    assert items["CONFIG_VXLAN"]["status"] == "missing"
    assert items["CONFIG_PID_NS"]["status"] == "warn"
    assert "needed by namespaces (not requested)" in items["CONFIG_PID_NS"]["detail"]
    assert report["features"]["namespaces"] == {
        "requested": False,
        "status": "missing",
        "missing": ["CONFIG_PID_NS"],
    }
    report = check(root, config)  # the defaults: now PID_NS is required, VXLAN is not
    items = by_id(report)
    assert (items["CONFIG_VXLAN"]["status"], items["CONFIG_PID_NS"]["status"]) == (
        "warn",
        "missing",
    )


def test_optional_items_only_warn(make_sysroot: Any, kernel_config: Any) -> None:
    report = check(
        make_sysroot("hybrid"), kernel_config(drop=["CFS_BANDWIDTH"]), features=["cgroups"]
    )
    item = by_id(report)["CONFIG_CFS_BANDWIDTH"]
    assert item["status"] == "warn"
    assert "optional for cgroups" in item["detail"]
    assert report["summary"]["exit_code"] == 0


def test_alternatives_satisfy_each_other(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    items = by_id(check(root, kernel_config(drop=["SECURITY_APPARMOR"]), features=["lsm"]))
    assert items["CONFIG_SECURITY_APPARMOR"]["status"] == "ok"  # SELinux is there instead
    assert "not needed" in items["CONFIG_SECURITY_APPARMOR"]["detail"]
    assert items["CONFIG_SECURITY_APPARMOR"]["hint"] is None
    assert items["binary:nft"]["status"] == "ok"  # iptables is installed
    items = by_id(
        check(root, kernel_config(drop=["SECURITY_APPARMOR", "SECURITY_SELINUX"]), features=["lsm"])
    )
    assert items["CONFIG_SECURITY_APPARMOR"]["status"] == "missing"
    assert items["CONFIG_SECURITY_SELINUX"]["status"] == "missing"


def test_lsm_activity_comes_from_the_running_system(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    report = check(root, kernel_config(), features=["lsm"])
    items = by_id(report)
    assert items["lsm:apparmor"]["value"] == "inactive"
    assert items["lsm:apparmor"]["status"] == "missing"
    assert report["features"]["lsm"]["status"] == "missing"
    message = kc.missing_summary(report)
    assert message.startswith(
        "the kernel lacks 1 required item: one of AppArmor (lsm:apparmor) or SELinux"
    )
    # AppArmor active: the parser becomes necessary.
    (root / "sys/module/apparmor/parameters").mkdir(parents=True)
    (root / "sys/module/apparmor/parameters/enabled").write_text("Y\n")
    items = by_id(check(root, kernel_config(), features=["lsm"]))
    assert items["lsm:apparmor"]["status"] == "ok"
    assert items["lsm:selinux"]["status"] == "ok"  # an alternative to AppArmor
    assert items["binary:apparmor_parser"]["status"] == "missing"
    assert "apt-get install apparmor" in items["binary:apparmor_parser"]["hint"]
    # SELinux through securityfs and selinuxfs.
    (root / "sys/kernel/security").mkdir(parents=True)
    (root / "sys/kernel/security/lsm").write_text("lockdown,capability,selinux,bpf")
    (root / "sys/fs/selinux").mkdir(parents=True)
    (root / "sys/fs/selinux/enforce").write_text("1")
    (root / "sys/module/apparmor/parameters/enabled").write_text("N\n")
    items = by_id(check(root, kernel_config(), features=["lsm"]))
    assert items["lsm:selinux"]["value"] == "enforcing"
    assert items["binary:apparmor_parser"]["status"] == "ok"
    assert "not needed" in items["binary:apparmor_parser"]["detail"]


def test_sysctl_limits(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    (root / "proc/sys/user/max_user_namespaces").write_text("0\n")
    (root / "proc/sys/kernel/keys/root_maxkeys").write_text("200\n")
    (root / "proc/sys/net/ipv4/ip_forward").write_text("0\n")
    items = by_id(check(root, kernel_config(), features=["namespaces", "bridge", "userns"]))
    userns = items["sysctl:user.max_user_namespaces"]
    assert (userns["status"], userns["value"]) == ("missing", "0")
    assert userns["hint"].startswith("sysctl -w user.max_user_namespaces=")
    keys = items["sysctl:kernel.keys.root_maxkeys"]
    assert keys["status"] == "missing"
    assert "sysctl -w kernel.keys.root_maxkeys=1000000" in keys["hint"]
    forward = items["sysctl:net.ipv4.ip_forward"]
    assert forward["status"] == "warn"
    assert "CNI bridge plugin" in forward["detail"]
    # Debian's switch: absent upstream, and absent is fine.
    assert items["sysctl:kernel.unprivileged_userns_clone"]["status"] == "ok"
    (root / "proc/sys/kernel/unprivileged_userns_clone").write_text("0\n")
    items = by_id(check(root, kernel_config(), features=["userns"]))
    assert items["sysctl:kernel.unprivileged_userns_clone"]["status"] == "warn"


def test_newuidmap_must_be_setuid_root(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    items = by_id(check(root, kernel_config(), features=["userns"]))
    assert items["binary:newuidmap"]["status"] == "warn"
    assert "apt-get install uidmap" in items["binary:newuidmap"]["hint"]
    tool = root / "usr/bin/newuidmap"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    item = by_id(check(root, kernel_config(), features=["userns"]))["binary:newuidmap"]
    assert item["status"] == "warn" and "not setuid" in item["detail"]
    assert "chmod u+s /usr/bin/newuidmap" in item["hint"]
    if os.geteuid() == 0:  # a setuid-root file needs root to create
        tool.chmod(0o755 | stat.S_ISUID)
        item = by_id(check(root, kernel_config(), features=["userns"]))["binary:newuidmap"]
        assert (item["status"], item["value"]) == ("ok", "/usr/bin/newuidmap")


def test_probes_never_run_off_the_live_system(report: dict[str, Any]) -> None:
    probes = [item for item in report["items"] if item["kind"] == "probe"]
    assert {"probe:unshare:pid", "probe:overlay", "probe:seccomp"} <= {i["id"] for i in probes}
    assert {item["status"] for item in probes} == {"skipped"}
    assert all("live system" in item["detail"] for item in probes)


def test_environment_detection(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    assert check(root, kernel_config())["environment"] == {
        "container": None,
        "in_user_namespace": False,
    }
    (root / ".dockerenv").write_text("")
    (root / "proc/self/uid_map").write_text("0 100000 65536\n")
    assert check(root, kernel_config())["environment"] == {
        "container": "docker",
        "in_user_namespace": True,
    }
    environment = check(root, kernel_config(), environ={"container": "lxc"})["environment"]
    assert environment["container"] == "lxc"


def test_missing_summary(make_sysroot: Any, kernel_config: Any, report: dict[str, Any]) -> None:
    assert kc.missing_summary(report) == "the kernel supports every requested feature"
    root = make_sysroot("hybrid")
    failing = check(root, kernel_config(drop=["PID_NS", "OVERLAY_FS"]))
    message = kc.missing_summary(failing)
    assert message.startswith("the kernel lacks 2 required items")
    assert (
        "PID namespace (CONFIG_PID_NS) for namespaces: rebuild the kernel with CONFIG_PID_NS=y"
        in message
    )
    assert "CONFIG_OVERLAY_FS=y (or =m)" in message
    assert "\n" not in message
    unreadable = kc.missing_summary(check(root, "/nonexistent"))
    assert "could not be read" in unreadable and "point --config" in unreadable
    searched = kc.missing_summary(kc.run_checks(sysroot=str(root), environ={}))
    assert "could not be read" in searched and "modprobe configs" in searched


def test_render_text_sections_and_no_ansi_without_color(report: dict[str, Any]) -> None:
    text = kc.render_text(report)
    assert not ANSI.search(text)
    for section in ("Namespaces", "Control groups", "Storage", "Security", "Networking", "Summary"):
        assert f"--- {section} ---" in text
    assert "PID namespace [CONFIG_PID_NS]: enabled" in text
    assert "Overlay filesystem [CONFIG_OVERLAY_FS]: enabled (module overlay, loaded)" in text
    assert "Result: the kernel supports every requested feature" in text
    assert ANSI.search(kc.render_text(report, color=True))
    assert ANSI.sub("", kc.render_text(report, color=True)) == text


def test_render_text_shows_fixes(make_sysroot: Any, kernel_config: Any) -> None:
    text = kc.render_text(check(make_sysroot("hybrid"), kernel_config(drop=["PID_NS"])))
    assert "PID namespace [CONFIG_PID_NS]: missing (not in this configuration)" in text
    assert "    fix: rebuild the kernel with CONFIG_PID_NS=y" in text
    text = kc.render_text(kc.run_checks(sysroot=str(make_sysroot("hybrid")), environ={}))
    assert "Kernel configuration: not readable" in text
    assert text.count("modprobe configs") == 2  # once at the top, once in the result


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"items": []},
        {"items": [{"id": "x"}]},
        {"items": [{"id": "x", "status": "missing", "section": "Misc", "features": {}}]},
        {"kernel": None, "config": None, "cgroup": None, "features": None, "summary": None},
    ],
)
def test_render_text_never_crashes(broken: dict[str, Any]) -> None:
    assert kc.render_text(broken).endswith("\n")
    assert isinstance(kc.missing_summary(broken), str)
