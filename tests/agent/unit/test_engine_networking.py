"""The agent's network settings ([network] in agent.toml and flags), the CLI's network
flags, and the PUT /v1/networks comparison: pure logic, no root."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from gantry.cli.agent import SettingsError, load_settings
from gantry.cli.client import AgentError
from gantry.cli.main import build_parser
from gantry.engine.networking import _wanted, config_from_settings


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["agent", "serve", *argv])


def run_spec(*argv: str) -> dict[str, Any]:
    from gantry.cli.containers import _build_spec

    return _build_spec(build_parser().parse_args(["create", "--rootfs", "/", *argv, "true"]))


def test_network_table_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[network]\ndefault_subnet = "10.77.0.0/16"\ncni_plugin_dirs = ["/opt/cni/bin"]\n'
    )
    settings = load_settings(
        serve_args("--config", str(config), "--network-default-bridge", "br-test")
    )
    net = config_from_settings(settings["network"], tmp_path)
    assert net.default_subnet == "10.77.0.0/16"
    assert net.default_bridge == "br-test"
    assert net.plugin_dirs == (Path("/opt/cni/bin"),)
    assert net.default_network == "gantry"
    assert net.state_dir == tmp_path / "network"


def test_network_defaults_are_the_contracts(tmp_path: Path) -> None:
    net = config_from_settings(None, tmp_path)
    assert (net.default_subnet, net.default_bridge) == ("10.88.0.0/16", "gantry0")
    assert net.plugin_dirs == (Path("/usr/lib/cni"),)
    assert net.config_dirs == (Path("/etc/cni/net.d"),)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"colour": "red"}, "network.colour"),
        ({"default_subnet": "10.88.0.1/16"}, "network.default_subnet"),
        ({"default_subnet": "fd00::/64"}, "network.default_subnet"),
        ({"default_bridge": "a-name-far-too-long"}, "network.default_bridge"),
        ({"cni_plugin_dirs": "relative"}, "network.cni_plugin_dirs"),
        ({"cni_config_dir": "etc/cni"}, "network.cni_config_dir"),
        ({"nft_table": "bad-name"}, "network.nft_table"),
    ],
)
def test_bad_network_settings_name_the_key(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_settings(table, tmp_path)


def test_network_must_be_a_table(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('network = "bridge"\n')
    with pytest.raises(SettingsError, match="network must be a table"):
        load_settings(serve_args("--config", str(config)))


def test_cli_network_flags_make_the_spec() -> None:
    spec = run_spec("--network", "front", "--network", "back", "--network-alias", "web")
    assert spec["network"] == {
        "mode": "bridge",
        "networks": {"front": {"aliases": ["web"]}, "back": {}},
    }
    assert run_spec("--network", "none")["network"] == {"mode": "none", "networks": {}}
    assert run_spec("--ip", "10.88.0.9")["network"]["networks"] == {
        "gantry": {"aliases": [], "ipv4_address": "10.88.0.9"}
    }
    spec = run_spec("--dns", "1.1.1.1", "--dns-search", "a.example", "--dns-option", "ndots:2")
    assert spec["dns"] == {"servers": ["1.1.1.1"], "search": ["a.example"], "options": ["ndots:2"]}
    assert "network" not in run_spec() and "dns" not in run_spec()


@pytest.mark.parametrize(
    "argv",
    [("--network", "host", "--network", "front"), ("--network", "none", "--ip", "10.0.0.2")],
)
def test_cli_refuses_mixed_network_modes(argv: tuple[str, ...]) -> None:
    with pytest.raises(AgentError, match="--network"):
        run_spec(*argv)


def test_put_network_keeps_what_is_not_given() -> None:
    before = {
        "driver": "bridge",
        "subnet": "10.90.3.0/24",
        "gateway": "10.90.3.1",
        "ip_range": None,
        "internal": False,
        "parent": None,
        "labels": {"a": "1"},
    }
    assert _wanted(before, {}) == before
    assert _wanted(before, {"subnet": "10.90.3.0/24", "internal": False}) == before
    moved = _wanted(before, {"subnet": "10.90.4.0/24"})
    assert moved["subnet"] == "10.90.4.0/24" and moved["gateway"] is None
    assert _wanted(before, {"labels": {}})["labels"] == {}
    fresh = _wanted(None, {})
    assert fresh["driver"] == "bridge" and fresh["subnet"] is None and fresh["labels"] == {}
