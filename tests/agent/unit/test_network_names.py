"""gantry.network.names: resolv.conf and hosts contents."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.network import InvalidNetworkInput
from gantry.network.names import (
    HostEntry,
    container_resolv_conf,
    hosts_file,
    parse_resolv_conf,
    rewrite_in_place,
)

HOST = """# comment
nameserver 127.0.0.53
nameserver 10.0.0.2
nameserver ::1
search corp.example lab.example
options edns0 trust-ad
"""


def test_parse_resolv_conf() -> None:
    conf = parse_resolv_conf(HOST + "domain other.example\n")
    assert conf.nameservers == ("127.0.0.53", "10.0.0.2", "::1")
    assert conf.search == ("other.example",)  # the last search/domain line wins
    assert conf.options == ("edns0", "trust-ad")


def test_container_resolv_conf_drops_loopback_servers_and_keeps_search_and_options() -> None:
    text = container_resolv_conf(HOST)
    assert "nameserver 10.0.0.2" in text
    assert "127.0.0.53" not in text and "::1" not in text
    assert "search corp.example lab.example" in text
    assert "options edns0 trust-ad" in text


def test_host_network_keeps_loopback_servers() -> None:
    assert "nameserver 127.0.0.53" in container_resolv_conf(HOST, host_network=True)


def test_only_loopback_servers_fall_back_to_public_ones() -> None:
    text = container_resolv_conf("nameserver 127.0.0.1\n")
    assert "nameserver 8.8.8.8" in text


def test_configured_dns_search_and_options_replace_the_hosts() -> None:
    text = container_resolv_conf(HOST, ["1.1.1.1"], ["svc.local"], ["ndots:2"])
    assert text.splitlines()[1:] == ["nameserver 1.1.1.1", "search svc.local", "options ndots:2"]
    assert "search" not in container_resolv_conf(HOST, search=[])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dns": ["not-an-ip"]}, "dns[0]"),
        ({"search": ["ok.example", "bad domain"]}, "dns_search[1]"),
        ({"options": ["nd ots"]}, "dns_options[0]"),
    ],
)
def test_bad_dns_settings_name_the_field(kwargs: dict[str, list[str]], field: str) -> None:
    with pytest.raises(InvalidNetworkInput) as bad:
        container_resolv_conf(HOST, **kwargs)  # type: ignore[arg-type]
    assert bad.value.field == field


def test_hosts_file_has_own_names_peers_and_extra_hosts() -> None:
    text = hosts_file(
        "web1",
        own=[HostEntry("10.1.0.2", ("web", "frontend"))],
        peers=[
            HostEntry("10.1.0.3", ("db", "database", "web1")),
            HostEntry("10.1.0.4", ("cache",)),
        ],
        extra=[HostEntry("192.0.2.9", ("registry.local",))],
    )
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert "10.1.0.2\tweb1 web frontend" in lines
    assert "10.1.0.3\tdb database" in lines  # a peer cannot claim this container's names
    assert "10.1.0.4\tcache" in lines
    assert "192.0.2.9\tregistry.local" in lines


def test_hosts_file_without_addresses_maps_hostname_to_loopback() -> None:
    assert "127.0.1.1\tsolo" in hosts_file("solo").splitlines()


def test_rewrite_in_place_keeps_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("a much longer old content\n" * 10)
    inode = path.stat().st_ino
    rewrite_in_place(path, "short\n")
    assert path.read_text() == "short\n"
    assert path.stat().st_ino == inode
