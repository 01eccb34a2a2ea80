"""gantry.network.ports: the -p grammar and free host ports."""

from __future__ import annotations

import socket

import pytest
from gantry.network import InvalidNetworkInput, PortMapping, parse_port, parse_ports
from gantry.network.ports import bind_ports


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortMapping(80)]),
        ("8080:80", [PortMapping(80, 8080)]),
        ("127.0.0.1:8080:80/udp", [PortMapping(80, 8080, "udp", "127.0.0.1")]),
        ("127.0.0.1::80", [PortMapping(80, 0, "tcp", "127.0.0.1")]),
        ("[::1]:8080:80", [PortMapping(80, 8080, "tcp", "::1")]),
        ("[::1]::80/TCP", [PortMapping(80, 0, "tcp", "::1")]),
        ("8000-8001:80-81", [PortMapping(80, 8000), PortMapping(81, 8001)]),
        ("53-54/udp", [PortMapping(53, 0, "udp"), PortMapping(54, 0, "udp")]),
    ],
)
def test_parse_port_forms(spec: str, expected: list[PortMapping]) -> None:
    assert parse_port(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("80/icmp", "protocol"),
        ("0", "1-65535"),
        ("70000:80", "1-65535"),
        ("abc", "not a port"),
        ("8000-8002:80-81", "different lengths"),
        ("90-80", "1-65535"),
        ("1.2.3.999:80:80", "not an IP"),
        ("::1:80:80", "too many"),
        ("[::1]:80", r"\[ip\]:host:container"),
    ],
)
def test_parse_port_rejects_with_the_field(spec: str, message: str) -> None:
    with pytest.raises(InvalidNetworkInput, match=message) as bad:
        parse_port(spec, "ports[3]")
    assert bad.value.field == "ports[3]"


def test_parse_ports_refuses_a_host_port_twice_and_names_the_index() -> None:
    with pytest.raises(InvalidNetworkInput) as bad:
        parse_ports(["8080:80", "9090:90", "8080:81"])
    assert bad.value.field == "ports[2]"
    # same number, other protocol or other address: fine
    assert len(parse_ports(["8080:80", "8080:80/udp", "127.0.0.1:8080:80"])) == 3


def test_cni_entry_shape() -> None:
    assert PortMapping(80, 8080, "tcp", "127.0.0.1").to_cni() == {
        "hostPort": 8080,
        "containerPort": 80,
        "protocol": "tcp",
        "hostIP": "127.0.0.1",
    }
    assert "hostIP" not in PortMapping(80, 8080).to_cni()
    assert str(PortMapping(80, 8080, "udp")) == "0.0.0.0:8080->80/udp"


def test_bind_ports_fills_only_missing_host_ports_with_bindable_ones() -> None:
    mappings = [PortMapping(80, 0, "tcp", "127.0.0.1"), PortMapping(81, 8081)]
    bound = bind_ports(mappings)
    assert bound[1] == mappings[1]
    port = bound[0].host_port
    assert port > 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it was free when chosen and the choice let go of it


def test_bind_ports_avoids_ports_gantry_already_gave_out() -> None:
    first = bind_ports([PortMapping(80, 0, "tcp", "127.0.0.1")])[0].host_port
    again = bind_ports([PortMapping(80, 0, "tcp", "127.0.0.1")], avoid=[first])[0].host_port
    assert again != first
