"""Real Debian 12 kernel configurations (linux-config-6.1): modular, and not the running kernel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from gantry import kernel_check as kc

CONFIGS = Path(__file__).resolve().parents[3] / ".cache" / "anchors" / "configs"
ALL_FEATURES = [name for name, _description, _default in kc.FEATURES]


def debian_configs() -> list[Path]:
    return sorted(CONFIGS.glob("config.*")) if CONFIGS.is_dir() else []


pytestmark = pytest.mark.skipif(
    not debian_configs(),
    reason=f"no Debian kernel configs at {CONFIGS} (`make setup` extracts linux-config-6.1)",
)


@pytest.fixture(params=debian_configs(), ids=lambda path: path.name)
def debian(request: pytest.FixtureRequest, make_sysroot: Any) -> tuple[Path, dict[str, Any]]:
    config: Path = request.param
    report = kc.run_checks(
        config_path=str(config),
        features=ALL_FEATURES,
        sysroot=str(make_sysroot("hybrid")),
        environ={},
    )
    return config, report


def test_header_and_modules(debian: tuple[Path, dict[str, Any]]) -> None:
    _config, report = debian
    assert report["config"]["readable"] is True
    assert report["kernel"]["version"].startswith("6.1.")
    assert report["kernel"]["arch"] == "x86"
    assert report["kernel"]["running"] is False  # our crafted host runs 6.18.44-test
    assert report["config"]["modules_supported"] is True


def test_values_agree_with_an_anchored_grep(debian: tuple[Path, dict[str, Any]]) -> None:
    config, report = debian
    text = config.read_text()
    kconfig = [item for item in report["items"] if item["kind"] == "kconfig"]
    assert len(kconfig) > 70
    for item in kconfig:
        match = re.search(rf"^{item['id']}=(y|m)$", text, re.MULTILINE)
        assert item["value"] == (match.group(1) if match else "n"), item["id"]


def test_sensible_values(debian: tuple[Path, dict[str, Any]]) -> None:
    _config, report = debian
    items = {item["id"]: item for item in report["items"]}
    for option in (
        "NAMESPACES",
        "PID_NS",
        "USER_NS",
        "CGROUP_BPF",
        "SECCOMP_FILTER",
        "SECURITY_APPARMOR",
    ):
        assert items[f"CONFIG_{option}"]["value"] == "y", option
    for option in (
        "OVERLAY_FS",
        "VETH",
        "BRIDGE",
        "BRIDGE_NETFILTER",
        "NF_NAT",
        "VXLAN",
        "FUSE_FS",
    ):
        item = items[f"CONFIG_{option}"]
        assert item["value"] == "m", option
        # Not the running kernel: whether it is loaded cannot be known, and is not guessed.
        assert item["module"]["state"] == "unknown"
        assert item["status"] == "ok"
    # 6.1 gates: swap accounting folded into MEMCG, devpts instances long gone.
    assert "CONFIG_MEMCG_SWAP" not in items
    assert "CONFIG_DEVPTS_MULTIPLE_INSTANCES" not in items
    assert "CONFIG_TIME_NS" in items


def test_debian_supports_every_feature(debian: tuple[Path, dict[str, Any]]) -> None:
    _config, report = debian
    assert report["summary"]["exit_code"] == 0
    assert report["summary"]["required_missing"] == []
    for name, feature in report["features"].items():
        assert feature["status"] == "ok", (name, feature)
