"""Gantry's network definitions and the CNI configuration lists made from them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantry.network.cni import NetworkConfigList
from gantry.network.errors import InvalidNetworkInput

DRIVERS = ("bridge", "macvlan", "ipvlan")
CNI_VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,62}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,15}$")
_LABEL_KEY_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-/]*$")
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")


@dataclass(frozen=True)
class NetworkSpec:
    """What a user asks for in ``gantry network create`` (all but ``name`` optional)."""

    name: str
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    bridge: str = ""
    parent: str = ""
    mode: str = ""
    mtu: int = 0


@dataclass(frozen=True)
class Network:
    """A validated, stored Gantry network."""

    name: str
    id: str
    driver: str
    subnet: str
    gateway: str
    ip_range: str
    internal: bool
    labels: Mapping[str, str]
    bridge: str
    parent: str
    mode: str
    mtu: int
    created: str
    default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "driver": self.driver,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "ip_range": self.ip_range,
            "internal": self.internal,
            "labels": dict(self.labels),
            "bridge": self.bridge,
            "parent": self.parent,
            "mode": self.mode,
            "mtu": self.mtu,
            "created": self.created,
            "default": self.default,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Network:
        return cls(
            name=str(doc["name"]),
            id=str(doc["id"]),
            driver=str(doc["driver"]),
            subnet=str(doc["subnet"]),
            gateway=str(doc["gateway"]),
            ip_range=str(doc.get("ip_range", "")),
            internal=bool(doc.get("internal", False)),
            labels={str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()},
            bridge=str(doc.get("bridge", "")),
            parent=str(doc.get("parent", "")),
            mode=str(doc.get("mode", "")),
            mtu=int(doc.get("mtu", 0)),
            created=str(doc.get("created", "")),
            default=bool(doc.get("default", False)),
        )

    def conflist(self, ipam_dir: Path) -> NetworkConfigList:
        """The CNI configuration list of this network; host-local keeps its reservations
        under ``ipam_dir`` (Gantry's root), never in the host's /var/lib/cni."""
        subnet = ipaddress.ip_network(self.subnet)
        rng: dict[str, Any] = {"subnet": self.subnet, "gateway": self.gateway}
        if self.ip_range:
            pool = ipaddress.ip_network(self.ip_range)
            hosts = list(_first_last(pool))
            rng["rangeStart"], rng["rangeEnd"] = str(hosts[0]), str(hosts[1])
        ipam: dict[str, Any] = {
            "type": "host-local",
            "ranges": [[rng]],
            "dataDir": str(ipam_dir),
        }
        if not self.internal:
            default = "0.0.0.0/0" if subnet.version == 4 else "::/0"
            ipam["routes"] = [{"dst": default}]
        plugins: list[dict[str, Any]] = []
        if self.driver == "bridge":
            main: dict[str, Any] = {
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": True,
                "ipMasq": not self.internal,
                "hairpinMode": True,
                "ipam": ipam,
                "capabilities": {"ips": True, "mac": True},
            }
        else:
            main = {
                "type": self.driver,
                "master": self.parent,
                "mode": self.mode,
                "ipam": ipam,
                "capabilities": {"ips": True},
            }
            if self.driver == "macvlan":
                main["capabilities"]["mac"] = True
        if self.mtu:
            main["mtu"] = self.mtu
        plugins.append(main)
        if self.driver == "bridge" and not self.internal:
            plugins.append(
                {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
            )
        if self.driver == "bridge":
            plugins.append({"type": "firewall", "backend": "iptables"})
        return NetworkConfigList(
            name=self.name, cni_version=CNI_VERSION, plugins=tuple(plugins), source=self.name
        )


def _first_last(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[Any, Any]:
    if net.num_addresses <= 2:
        return net[0], net[-1]
    return net[1], net[-2] if net.version == 4 else net[-1]


def check_name(name: object, field_name: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidNetworkInput(
            field_name,
            f"must be 1-63 letters, digits, '_', '.', '-' starting with a letter or digit "
            f"(got {name!r})",
        )
    return name


def check_ifname(name: str, field_name: str) -> str:
    if not _IFNAME_RE.match(name):
        raise InvalidNetworkInput(
            field_name, f"{name!r} is not an interface name (1-15 letters, digits, '_.-')"
        )
    return name


def validate(
    spec: NetworkSpec, subnet: str, *, net_id: str, created: str, default: bool = False
) -> Network:
    """Check ``spec`` (with the subnet chosen for it) and return the network it describes.

    Every error names its field; nothing is created here."""
    check_name(spec.name)
    if spec.driver not in DRIVERS:
        raise InvalidNetworkInput("driver", f"must be one of {', '.join(DRIVERS)}")
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidNetworkInput("subnet", f"{subnet!r}: {exc}") from None
    if net.version == 4 and net.prefixlen > 30:
        raise InvalidNetworkInput("subnet", f"{subnet!r} is too small (at most /30)")
    if net.version == 6 and net.prefixlen > 126:
        raise InvalidNetworkInput("subnet", f"{subnet!r} is too small (at most /126)")
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address
    if spec.gateway:
        try:
            gateway = ipaddress.ip_address(spec.gateway)
        except ValueError:
            raise InvalidNetworkInput("gateway", f"{spec.gateway!r} is not an IP address") from None
        if gateway not in net or gateway in (net.network_address, net.broadcast_address):
            raise InvalidNetworkInput("gateway", f"{spec.gateway} is not a host of {subnet}")
    else:
        gateway = ipaddress.ip_address(str(next(net.hosts())))
    ip_range = ""
    if spec.ip_range:
        try:
            pool = ipaddress.ip_network(spec.ip_range, strict=True)
        except ValueError as exc:
            raise InvalidNetworkInput("ip_range", f"{spec.ip_range!r}: {exc}") from None
        if pool.version != net.version or not pool.subnet_of(net):  # type: ignore[arg-type]
            raise InvalidNetworkInput("ip_range", f"{spec.ip_range} is not inside {subnet}")
        ip_range = str(pool)
    for key, value in spec.labels.items():
        if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
            raise InvalidNetworkInput(f"labels.{key}", "label keys are letters, digits, '_./-'")
        if not isinstance(value, str):
            raise InvalidNetworkInput(f"labels.{key}", "label values are strings")
    if not isinstance(spec.mtu, int) or not (spec.mtu == 0 or 68 <= spec.mtu <= 65535):
        raise InvalidNetworkInput("mtu", f"must be 0 (default) or 68-65535 (got {spec.mtu!r})")
    bridge = parent = mode = ""
    if spec.driver == "bridge":
        if spec.parent:
            raise InvalidNetworkInput("parent", "only macvlan and ipvlan networks have a parent")
        bridge = check_ifname(spec.bridge, "bridge") if spec.bridge else ""
        if spec.mode:
            raise InvalidNetworkInput("mode", "only macvlan and ipvlan networks have a mode")
    else:
        if spec.internal:
            raise InvalidNetworkInput("internal", "only bridge networks can be internal")
        if spec.bridge:
            raise InvalidNetworkInput("bridge", f"a {spec.driver} network has no bridge")
        if not spec.parent:
            raise InvalidNetworkInput("parent", f"a {spec.driver} network needs a parent interface")
        parent = check_ifname(spec.parent, "parent")
        modes = MACVLAN_MODES if spec.driver == "macvlan" else IPVLAN_MODES
        mode = spec.mode or modes[0]
        if mode not in modes:
            raise InvalidNetworkInput("mode", f"{spec.driver} modes are {', '.join(modes)}")
    return Network(
        name=spec.name,
        id=net_id,
        driver=spec.driver,
        subnet=str(net),
        gateway=str(gateway),
        ip_range=ip_range,
        internal=spec.internal,
        labels=dict(spec.labels),
        bridge=bridge,
        parent=parent,
        mode=mode,
        mtu=spec.mtu,
        created=created,
        default=default,
    )


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return na.version == nb.version and na.overlaps(nb)


def pick_subnet(pool: str, prefix: int, taken: list[str]) -> str:
    """The first ``/prefix`` of ``pool`` that overlaps none of ``taken``."""
    net = ipaddress.ip_network(pool)
    for candidate in net.subnets(new_prefix=prefix):
        if not any(overlaps(str(candidate), other) for other in taken):
            return str(candidate)
    raise InvalidNetworkInput("subnet", f"no free /{prefix} left in the pool {pool}")
