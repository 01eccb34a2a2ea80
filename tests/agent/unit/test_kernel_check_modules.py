"""Built in, loaded or not: module state from /sys/module and modules.builtin, never lsmod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gantry import kernel_check as kc


def check(sysroot: Path, config: Path, **kwargs: Any) -> dict[str, Any]:
    return kc.run_checks(config_path=str(config), sysroot=str(sysroot), environ={}, **kwargs)


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


def test_module_states_from_sys_module_and_modules_builtin(
    make_sysroot: Any, kernel_config: Any
) -> None:
    report = check(make_sysroot("hybrid", "modules"), kernel_config())
    items = by_id(report)
    assert report["config"]["modules_supported"] is True
    loaded = items["CONFIG_OVERLAY_FS"]
    assert (loaded["value"], loaded["module"]) == ("m", {"name": "overlay", "state": "loaded"})
    assert loaded["status"] == "ok" and loaded["detail"] == "module overlay, loaded"
    assert items["CONFIG_VETH"]["module"] == {"name": "veth", "state": "loaded"}
    # modules.builtin says bridge.ko is built in, whatever the config says.
    assert items["CONFIG_BRIDGE"]["module"] == {"name": "bridge", "state": "builtin"}
    assert items["CONFIG_BRIDGE_NETFILTER"]["module"]["state"] == "builtin"
    # Since 5.2 the MASQUERADE option's module is xt_MASQUERADE.
    assert items["CONFIG_IP_NF_TARGET_MASQUERADE"]["module"] == {
        "name": "xt_MASQUERADE",
        "state": "loaded",
    }


def test_a_module_that_is_not_loaded_is_ok_with_a_modprobe_hint(
    make_sysroot: Any, kernel_config: Any
) -> None:
    items = by_id(check(make_sysroot("hybrid", "modules"), kernel_config()))
    vxlan = items["CONFIG_VXLAN"]
    assert vxlan["module"] == {"name": "vxlan", "state": "not_loaded"}
    assert vxlan["status"] == "ok"
    assert "not loaded" in vxlan["detail"]
    assert vxlan["hint"] == "modprobe vxlan"


def test_built_in_options_report_builtin(make_sysroot: Any, kernel_config: Any) -> None:
    config = kernel_config(values={"OVERLAY_FS": "y"})
    item = by_id(check(make_sysroot("hybrid"), config))["CONFIG_OVERLAY_FS"]
    assert item["module"] == {"name": "overlay", "state": "builtin"}
    assert item["detail"] == "built in" and item["hint"] is None


def test_bool_options_have_no_module(make_sysroot: Any, kernel_config: Any) -> None:
    item = by_id(check(make_sysroot("hybrid"), kernel_config()))["CONFIG_PID_NS"]
    assert item["module"] is None


def test_no_config_modules_never_says_not_loaded(make_sysroot: Any, kernel_config: Any) -> None:
    # Nothing is loaded in this tree; without CONFIG_MODULES nothing may be "not loaded".
    report = check(make_sysroot("hybrid"), kernel_config(values={"MODULES": None}))
    assert report["config"]["modules_supported"] is False
    states = {item["module"]["state"] for item in report["items"] if item["module"]}
    assert "not_loaded" not in states
    assert not any("modprobe" in (item["hint"] or "") for item in report["items"])


def test_a_kernel_without_modules_has_everything_built_in(
    make_sysroot: Any, kernel_config: Any
) -> None:
    # This machine's kind of kernel: CONFIG_MODULES unset, so every option is y or n.
    config = kernel_config(values={"MODULES": None})
    config.write_text(config.read_text().replace("=m\n", "=y\n"))
    report = check(make_sysroot("hybrid"), config)
    assert report["config"]["modules_supported"] is False
    states = {item["module"]["state"] for item in report["items"] if item["module"]}
    assert states == {"builtin"}


def test_unreadable_sys_module_means_unknown_state(make_sysroot: Any, kernel_config: Any) -> None:
    root = make_sysroot("hybrid")
    for child in (root / "sys/module").iterdir():
        for grandchild in child.iterdir():
            grandchild.unlink()
        child.rmdir()
    (root / "sys/module").rmdir()
    item = by_id(check(root, kernel_config()))["CONFIG_VXLAN"]
    assert item["module"] == {"name": "vxlan", "state": "unknown"}
    assert item["status"] == "ok"
