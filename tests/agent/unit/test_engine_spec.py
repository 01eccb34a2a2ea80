"""The one normaliser of container specs: equal meanings give equal JSON, every default is
filled in, and every refusal names its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gantry.engine.errors import Invalid
from gantry.engine.spec import SPEC_FIELDS, normalise, parse_size, signal_name


def norm(**fields: Any) -> dict[str, Any]:
    raw = {"rootfs": "/srv/rootfs", "command": ["sleep", "1"], **fields}
    return normalise(raw, name="web", rootfs_check=lambda _path: True)


def refused(**fields: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        norm(**fields)
    return caught.value


def test_every_field_is_present_with_its_default() -> None:
    spec = norm()
    assert tuple(spec) == SPEC_FIELDS
    assert spec["user"] == "0:0"
    assert spec["workdir"] == "/"
    assert spec["hostname"] == "web"
    assert spec["restart_policy"] == {"name": "no", "max_retries": 0}
    assert spec["stop_signal"] == "SIGTERM" and spec["stop_timeout"] == 10.0
    assert spec["network"] == {
        "mode": "bridge",
        "networks": {"gantry": {"aliases": [], "ipv4_address": None}},
    }
    assert spec["ports"] == []
    assert spec["dns"] == {"servers": [], "search": [], "options": []}
    assert spec["env"]["PATH"].startswith("/usr/local/sbin")
    assert spec["resources"] == dict.fromkeys(spec["resources"])


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"resources": {"memory": "1g"}}, {"resources": {"memory": 1073741824}}),
        ({"resources": {"memory": "512MB"}}, {"resources": {"memory": "512m"}}),
        ({"env": ["A=1", "B=x=y"]}, {"env": {"B": "x=y", "A": "1"}}),
        (
            {"restart_policy": "on-failure:3"},
            {"restart_policy": {"name": "on-failure", "max_retries": 3}},
        ),
        ({"restart_policy": None}, {"restart_policy": "no"}),
        (
            {"capabilities": {"add": ["net_admin", "CAP_SYS_TIME"]}},
            {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN", "net_admin"]}},
        ),
        ({"stop_signal": "term"}, {"stop_signal": 15}),
        ({"stop_signal": "SIGKILL"}, {"stop_signal": "kill"}),
        ({"workdir": "/srv/app/"}, {"workdir": "/srv//app"}),
        ({"labels": {"b": "2", "a": "1"}}, {"labels": {"a": "1", "b": "2"}}),
        ({"healthcheck": None}, {}),
        ({"healthcheck": {"test": ["NONE"]}}, {}),
        (
            {"healthcheck": {"test": ["cat", "/ok"]}},
            {"healthcheck": {"test": ["CMD", "cat", "/ok"], "interval": 30}},
        ),
        ({"user": "1000:1000"}, {"user": "01000:1000"}),
        (
            {
                "mounts": [
                    {"type": "tmpfs", "target": "/b"},
                    {"type": "tmpfs", "target": "/a", "options": ["size=1m", "size=1m"]},
                ]
            },
            {
                "mounts": [
                    {"type": "tmpfs", "target": "/a", "options": ["size=1m"]},
                    {"target": "/b", "type": "tmpfs"},
                ]
            },
        ),
    ],
)
def test_equal_meanings_normalise_equal(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert norm(**one) == norm(**other)


def test_bind_mount_source_must_exist(tmp_path: Path) -> None:
    spec = norm(mounts=[{"source": str(tmp_path), "target": "/data", "read_only": True}])
    assert spec["mounts"] == [
        {
            "type": "bind",
            "source": str(tmp_path),
            "target": "/data",
            "read_only": True,
            "options": [],
        }
    ]
    error = refused(mounts=[{"source": str(tmp_path / "missing"), "target": "/data"}])
    assert error.field == "spec.mounts[0].source" and "does not exist" in error.detail


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"command": "sleep 1"}, "spec.command"),
        ({"command": [], "entrypoint": []}, "spec.command"),
        ({"command": ["ok", 3]}, "spec.command[1]"),
        ({"env": {"A": ["x"]}}, "spec.env.A"),
        ({"env": ["NOEQUALS"]}, "spec.env"),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
        ({"resources": {"memory": 1024}}, "spec.resources.memory"),
        ({"resources": {"memory_swap": "1g"}}, "spec.resources.memory_swap"),
        ({"resources": {"cpus": 0}}, "spec.resources.cpus"),
        ({"resources": {"cpu_shares": 1}}, "spec.resources.cpu_shares"),
        ({"resources": {"cpuset_cpus": "0-a"}}, "spec.resources.cpuset_cpus"),
        ({"resources": {"pids_limit": True}}, "spec.resources.pids_limit"),
        ({"resources": {"swap": 1}}, "spec.resources.swap"),
        ({"capabilities": {"add": ["CAP_FLY"]}}, "spec.capabilities.add[0]"),
        ({"restart_policy": "on-failure:x"}, "spec.restart_policy"),
        (
            {"restart_policy": {"name": "always", "max_retries": 2}},
            "spec.restart_policy.max_retries",
        ),
        ({"stop_signal": "SIGNOPE"}, "spec.stop_signal"),
        ({"stop_timeout": -1}, "spec.stop_timeout"),
        ({"workdir": "relative"}, "spec.workdir"),
        ({"read_only": "yes"}, "spec.read_only"),
        ({"mounts": [{"type": "nfs", "target": "/x"}]}, "spec.mounts[0].type"),
        ({"mounts": [{"type": "tmpfs"}]}, "spec.mounts[0].target"),
        (
            {"mounts": [{"type": "tmpfs", "target": "/x"}, {"type": "tmpfs", "target": "/x/"}]},
            "spec.mounts[1].target",
        ),
        ({"network": {"mode": "nat"}}, "spec.network.mode"),
        ({"network": {"mode": "container:"}}, "spec.network.mode"),
        ({"network": {"mode": "none", "networks": {"a": {}}}}, "spec.network.networks"),
        ({"network": {"networks": {"a b": {}}}}, "spec.network.networks.a b"),
        (
            {"network": {"networks": {"a": {"ipv4_address": "10.0.0"}}}},
            "spec.network.networks.a.ipv4_address",
        ),
        (
            {"network": {"networks": {"a": {"aliases": ["-x"]}}}},
            "spec.network.networks.a.aliases[0]",
        ),
        ({"network": {"networks": {"a": {"mac": "x"}}}}, "spec.network.networks.a.mac"),
        ({"ports": ["80:80:80:80"]}, "spec.ports[0]"),
        ({"ports": ["70000"]}, "spec.ports[0]"),
        ({"ports": ["80/icmp"]}, "spec.ports[0]"),
        ({"ports": ["8080:80", "8080:81"]}, "spec.ports[1]"),
        ({"ports": [{"container_port": 0}]}, "spec.ports[0].container_port"),
        ({"ports": [{"container_port": 80, "host_ip": "x"}]}, "spec.ports[0].host_ip"),
        ({"ports": "80"}, "spec.ports"),
        ({"ports": ["80"], "network": {"mode": "host"}}, "spec.ports"),
        ({"dns": {"servers": ["dns.example"]}}, "spec.dns.servers[0]"),
        ({"dns": {"search": ["bad domain"]}}, "spec.dns.search[0]"),
        ({"dns": {"options": ["a b"]}}, "spec.dns.options[0]"),
        ({"dns": {"server": []}}, "spec.dns.server"),
        (
            {"network": {"mode": "container:peer"}, "sysctls": {"net.ipv4.ip_forward": "1"}},
            "spec.sysctls.net.ipv4.ip_forward",
        ),
        ({"sysctls": {"kernel.hostname": "x"}}, "spec.sysctls.kernel.hostname"),
        (
            {"network": {"mode": "host"}, "sysctls": {"net.ipv4.ip_forward": "1"}},
            "spec.sysctls.net.ipv4.ip_forward",
        ),
        ({"tty": True}, "spec.tty"),
        ({"image": "alpine"}, "spec.image"),
        ({"healthcheck": {"test": ["CMD-SHELL", "a", "b"]}}, "spec.healthcheck.test"),
        ({"healthcheck": {"test": ["CMD"]}}, "spec.healthcheck.test"),
        ({"healthcheck": {"test": ["true"], "retries": 0}}, "spec.healthcheck.retries"),
        ({"healthcheck": {"cmd": ["true"]}}, "spec.healthcheck.cmd"),
        ({"user": "nobody"}, "spec.user"),
        ({"colour": "red"}, "spec.colour"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, Any], field: str) -> None:
    error = refused(**fields)
    assert error.field == field
    assert error.detail.startswith(field.split("[")[0].rsplit(".", 1)[0])


def test_rootfs_is_required_and_must_be_a_directory() -> None:
    with pytest.raises(Invalid) as caught:
        normalise({"command": ["x"]}, name="web")
    assert caught.value.field == "spec.rootfs"
    with pytest.raises(Invalid) as caught:
        normalise({"rootfs": "/nonexistent-gantry-rootfs", "command": ["x"]}, name="web")
    assert caught.value.field == "spec.rootfs" and "not a directory" in caught.value.detail


def test_sizes_and_signals() -> None:
    assert parse_size("64k", "f") == 65536
    assert parse_size("1.5g", "f") == 1610612736
    assert parse_size(12, "f") == 12
    with pytest.raises(Invalid):
        parse_size(-1, "f")
    assert signal_name("hup", "f") == "SIGHUP"
    assert signal_name(9, "f") == "SIGKILL"
    with pytest.raises(Invalid):
        signal_name(True, "f")


def test_network_ports_and_dns_have_one_canonical_form() -> None:
    a = norm(
        network={"networks": ["front", {"name": "back", "aliases": ["db", "db", "b"]}]},
        ports=["127.0.0.1:8080-8081:80-81/udp", "9000"],
        dns={"servers": ["1.1.1.1"], "search": "example.org"},
    )
    b = norm(
        network={
            "mode": "bridge",
            "networks": {"back": {"aliases": ["b", "db"]}, "front": None},
        },
        ports=[
            {"container_port": 9000},
            {"container_port": 81, "host_port": 8081, "host_ip": "127.0.0.1", "protocol": "udp"},
            {"container_port": 80, "host_port": 8080, "host_ip": "127.0.0.1", "protocol": "udp"},
        ],
        dns={"servers": ["1.1.1.1"], "search": ["example.org"], "options": []},
    )
    assert a == b
    assert a["network"]["networks"] == {
        "back": {"aliases": ["b", "db"], "ipv4_address": None},
        "front": {"aliases": [], "ipv4_address": None},
    }
    assert a["ports"][0] == {
        "host_ip": "127.0.0.1",
        "host_port": 8080,
        "container_port": 80,
        "protocol": "udp",
    }
    assert a["ports"][2] == {
        "host_ip": "0.0.0.0",
        "host_port": None,
        "container_port": 9000,
        "protocol": "tcp",
    }


@pytest.mark.parametrize("mode", ["none", "host", "container:db"])
def test_other_network_modes_have_no_networks(mode: str) -> None:
    assert norm(network={"mode": mode})["network"] == {"mode": mode, "networks": {}}
