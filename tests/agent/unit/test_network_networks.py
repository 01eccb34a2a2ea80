"""gantry.network.networks and .firewall: validating networks, their CNI configuration
lists and Gantry's nftables table (rendered here; applied in the integration tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.network import InvalidNetworkInput, NetworkSpec
from gantry.network.firewall import BridgeRule, render
from gantry.network.networks import pick_subnet, validate


def make(spec: NetworkSpec, subnet: str = "10.5.0.0/24"):  # type: ignore[no-untyped-def]
    return validate(spec, subnet, net_id="ab" * 32, created="now")


def test_bridge_network_defaults_and_conflist(tmp_path: Path) -> None:
    net = make(NetworkSpec("web", bridge="br-web", labels={"team": "a"}))
    assert (net.gateway, net.ip_range, net.driver) == ("10.5.0.1", "", "bridge")
    conf = net.conflist(tmp_path)
    assert conf.plugin_types == ("bridge", "portmap", "firewall")
    bridge = conf.plugins[0]
    assert bridge["bridge"] == "br-web" and bridge["ipMasq"] is True
    assert bridge["ipam"]["dataDir"] == str(tmp_path)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.5.0.0/24", "gateway": "10.5.0.1"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert conf.plugins[1]["capabilities"] == {"portMappings": True}


def test_internal_network_has_no_masquerade_route_or_portmap(tmp_path: Path) -> None:
    net = make(NetworkSpec("in", bridge="br-in", internal=True, ip_range="10.5.0.128/25"))
    conf = net.conflist(tmp_path)
    assert conf.plugin_types == ("bridge", "firewall")
    ipam = conf.plugins[0]["ipam"]
    assert "routes" not in ipam and conf.plugins[0]["ipMasq"] is False
    assert ipam["ranges"][0][0]["rangeStart"] == "10.5.0.129"
    assert ipam["ranges"][0][0]["rangeEnd"] == "10.5.0.254"


def test_macvlan_network_conflist(tmp_path: Path) -> None:
    net = make(NetworkSpec("mv", driver="macvlan", parent="eth0"))
    assert net.mode == "bridge"
    conf = net.conflist(tmp_path)
    assert conf.plugin_types == ("macvlan",)
    assert conf.plugins[0]["master"] == "eth0"


def test_ipvlan_recorded_config_only(tmp_path: Path) -> None:
    # This machine's kernel has no ipvlan: the configuration is checked, not run.
    conf = make(NetworkSpec("iv", driver="ipvlan", parent="eth0", mode="l3")).conflist(tmp_path)
    assert conf.plugins[0]["type"] == "ipvlan" and conf.plugins[0]["mode"] == "l3"


@pytest.mark.parametrize(
    ("spec", "subnet", "field"),
    [
        (NetworkSpec("bad name"), "10.5.0.0/24", "name"),
        (NetworkSpec("n", driver="overlay"), "10.5.0.0/24", "driver"),
        (NetworkSpec("n"), "10.5.0.1/24", "subnet"),
        (NetworkSpec("n"), "10.5.0.0/31", "subnet"),
        (NetworkSpec("n", gateway="10.6.0.1"), "10.5.0.0/24", "gateway"),
        (NetworkSpec("n", gateway="10.5.0.255"), "10.5.0.0/24", "gateway"),
        (NetworkSpec("n", gateway="x"), "10.5.0.0/24", "gateway"),
        (NetworkSpec("n", ip_range="10.6.0.0/25"), "10.5.0.0/24", "ip_range"),
        (NetworkSpec("n", bridge="a-bridge-name-too-long"), "10.5.0.0/24", "bridge"),
        (NetworkSpec("n", labels={"bad key": "v"}), "10.5.0.0/24", "labels.bad key"),
        (NetworkSpec("n", mtu=10), "10.5.0.0/24", "mtu"),
        (NetworkSpec("n", driver="macvlan"), "10.5.0.0/24", "parent"),
        (NetworkSpec("n", driver="macvlan", parent="e0", internal=True), "10.5.0.0/24", "internal"),
        (NetworkSpec("n", driver="macvlan", parent="e0", mode="l2"), "10.5.0.0/24", "mode"),
        (NetworkSpec("n", parent="eth0"), "10.5.0.0/24", "parent"),
    ],
)
def test_bad_network_specs_name_the_field(spec: NetworkSpec, subnet: str, field: str) -> None:
    with pytest.raises(InvalidNetworkInput) as bad:
        make(spec, subnet)
    assert bad.value.field == field


def test_pick_subnet_skips_taken_ranges() -> None:
    assert pick_subnet("10.90.0.0/22", 24, []) == "10.90.0.0/24"
    assert pick_subnet("10.90.0.0/22", 24, ["10.90.0.0/23", "10.90.2.128/25"]) == "10.90.3.0/24"
    with pytest.raises(InvalidNetworkInput, match="no free /24"):
        pick_subnet("10.90.0.0/24", 24, ["10.0.0.0/8"])


def test_firewall_render_isolates_bridges_and_closes_internal_ones() -> None:
    script = render("gantry", [BridgeRule("b", "br-b", False), BridgeRule("a", "br-a", True)])
    lines = [line.strip() for line in script.splitlines()]
    assert lines[:2] == ["table inet gantry {}", "delete table inet gantry"]
    assert 'elements = { "br-a", "br-b" }' in lines
    assert (
        'iifname "br-b" oifname != "br-b" oifname @bridges drop comment "gantry network b"' in lines
    )
    assert 'iifname "br-a" oifname != "br-a" drop comment "gantry network a"' in lines
    assert 'oifname "br-a" iifname != "br-a" drop comment "gantry network a"' in lines


def test_firewall_render_without_networks_only_deletes_the_table() -> None:
    assert render("g_1", []) == "table inet g_1 {}\ndelete table inet g_1\n"
    with pytest.raises(InvalidNetworkInput, match="nft_table"):
        render("bad table; flush ruleset", [])
    with pytest.raises(InvalidNetworkInput, match="bridge"):
        render("g", [BridgeRule("x", 'br"; flush ruleset', False)])
