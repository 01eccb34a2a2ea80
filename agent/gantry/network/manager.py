"""The engine's entry point to networking: networks, container attachments, recovery.

Everything lives under ``<root>/network``::

    networks/<name>.json        Gantry's network definitions
    net.d/<name>.conflist       the CNI configuration generated from each (Gantry's config dir)
    cni-cache/results/…         one cached ADD per attachment (DEL after a restart)
    ipam/<network>/<ip>         host-local's reservations (its dataDir)
    netns/<container id>        pinned network namespaces
    containers/<id>.json        what each container is attached to, its ports and names
    lock                        flock: one writer at a time across processes

The manager never touches a link, rule, namespace or file it did not create: bridges are
deleted only for networks it defined, firewall rules live in its own nftables table and
in the chains the CNI plugins create per container (removed by their DEL).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantry.network import firewall, names, netns
from gantry.network.cni import (
    CNI,
    DEFAULT_CONFIG_DIRS,
    DEFAULT_PLUGIN_DIRS,
    NetworkConfigList,
    RuntimeConf,
    load_config_dirs,
)
from gantry.network.errors import (
    CNIError,
    InvalidNetworkInput,
    NetworkError,
    NetworkExists,
    NetworkInUse,
    NetworkNotFound,
)
from gantry.network.networks import (
    Network,
    NetworkSpec,
    check_ifname,
    check_name,
    overlaps,
    pick_subnet,
    validate,
)
from gantry.network.ports import PortMapping, bind_ports, port_is_free

log = logging.getLogger(__name__)

MODES = ("bridge", "none", "host")
LOOPBACK = NetworkConfigList(
    name="gantry-loopback", cni_version="1.0.0", plugins=({"type": "loopback"},)
)


@dataclass(frozen=True)
class NetworkConfig:
    """How the agent's networking is set up (every field an agent.toml key and a flag)."""

    root: Path = Path("/var/lib/gantry")
    plugin_dirs: tuple[Path, ...] = DEFAULT_PLUGIN_DIRS
    config_dirs: tuple[Path, ...] = DEFAULT_CONFIG_DIRS
    default_network: str = "gantry"
    default_bridge: str = "gantry0"
    default_subnet: str = "10.89.0.0/16"
    subnet_pool: str = "10.90.0.0/15"
    pool_prefix: int = 24
    bridge_prefix: str = "gantry-"  # + id characters up to 15 (Linux's limit)
    nft_table: str = "gantry"
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] | None = None
    dns_options: tuple[str, ...] | None = None
    plugin_timeout: float = 60.0

    @property
    def state_dir(self) -> Path:
        return self.root / "network"


@dataclass(frozen=True)
class EndpointRequest:
    """One network a container joins: its aliases and, optionally, a fixed address."""

    network: str
    aliases: tuple[str, ...] = ()
    ip: str = ""
    mac: str = ""


@dataclass(frozen=True)
class AttachRequest:
    """What the engine asks for when a container starts.

    ``mode`` is ``bridge`` (``networks`` or, when empty, the default network), ``none``,
    ``host`` or ``container:<container id>``. ``hosts_path`` and ``resolv_path`` are the
    files the engine bind-mounts as ``/etc/hosts`` and ``/etc/resolv.conf``; the manager
    writes them, and keeps every member's hosts file current as peers come and go.
    """

    container_id: str
    name: str = ""
    mode: str = "bridge"
    networks: tuple[EndpointRequest, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    hostname: str = ""
    hosts_path: Path | None = None
    resolv_path: Path | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] | None = None
    dns_options: tuple[str, ...] | None = None
    extra_hosts: tuple[tuple[str, str], ...] = ()
    netns_source: str = ""
    """A namespace that exists already (``/proc/<pid>/ns/net`` of a container the runtime
    created with a new network namespace): pinned instead of making a new one."""


@dataclass(frozen=True)
class Endpoint:
    network: str
    ifname: str
    addresses: tuple[str, ...]
    gateway: str
    mac: str
    aliases: tuple[str, ...]

    @property
    def ip(self) -> str:
        """The first address without its prefix length ("" when there is none)."""
        return self.addresses[0].split("/", 1)[0] if self.addresses else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "ifname": self.ifname,
            "addresses": list(self.addresses),
            "gateway": self.gateway,
            "mac": self.mac,
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Endpoint:
        return cls(
            network=str(doc["network"]),
            ifname=str(doc["ifname"]),
            addresses=tuple(str(a) for a in doc.get("addresses", ())),
            gateway=str(doc.get("gateway", "")),
            mac=str(doc.get("mac", "")),
            aliases=tuple(str(a) for a in doc.get("aliases", ())),
        )


@dataclass(frozen=True)
class Attachment:
    """A container's network as the engine needs it.

    ``netns_path`` goes into the runtime spec as
    ``{"type": "network", "path": netns_path}``; ``None`` (host mode) means the container
    gets no network namespace entry at all.
    """

    container_id: str
    name: str
    mode: str
    netns_path: str | None
    endpoints: tuple[Endpoint, ...]
    ports: tuple[PortMapping, ...]
    hostname: str
    hosts_text: str
    resolv_text: str
    joined: str = ""
    owns_netns: bool = False
    hosts_path: str = ""
    resolv_path: str = ""
    extra_hosts: tuple[tuple[str, str], ...] = ()
    state: str = "attached"

    def namespace_entry(self) -> dict[str, str] | None:
        """The ``linux.namespaces`` entry of the runtime spec, None for host mode."""
        if self.netns_path is None:
            return None
        return {"type": "network", "path": self.netns_path}

    def to_dict(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "name": self.name,
            "mode": self.mode,
            "netns_path": self.netns_path,
            "endpoints": [e.to_dict() for e in self.endpoints],
            "ports": [p.to_dict() for p in self.ports],
            "hostname": self.hostname,
            "hosts_text": self.hosts_text,
            "resolv_text": self.resolv_text,
            "joined": self.joined,
            "owns_netns": self.owns_netns,
            "hosts_path": self.hosts_path,
            "resolv_path": self.resolv_path,
            "extra_hosts": [list(pair) for pair in self.extra_hosts],
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Attachment:
        return cls(
            container_id=str(doc["container_id"]),
            name=str(doc.get("name", "")),
            mode=str(doc["mode"]),
            netns_path=doc.get("netns_path"),
            endpoints=tuple(Endpoint.from_dict(e) for e in doc.get("endpoints", ())),
            ports=tuple(PortMapping.from_dict(p) for p in doc.get("ports", ())),
            hostname=str(doc.get("hostname", "")),
            hosts_text=str(doc.get("hosts_text", "")),
            resolv_text=str(doc.get("resolv_text", "")),
            joined=str(doc.get("joined", "")),
            owns_netns=bool(doc.get("owns_netns", False)),
            hosts_path=str(doc.get("hosts_path", "")),
            resolv_path=str(doc.get("resolv_path", "")),
            extra_hosts=tuple((str(a), str(b)) for a, b in doc.get("extra_hosts", ())),
            state=str(doc.get("state", "attached")),
        )


@dataclass(frozen=True)
class NetworkInfo:
    """One entry of ``network ls``/``inspect``: a Gantry network or a foreign CNI config."""

    name: str
    driver: str
    source: str
    network: Network | None
    containers: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.network.to_dict() if self.network else {"name": self.name}
        doc["driver"] = self.driver
        doc["source"] = self.source
        doc["containers"] = [dict(c) for c in self.containers]
        return doc


@dataclass
class RecoveryReport:
    """What :meth:`NetworkManager.recover` removed."""

    attachments: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ipam: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class NetworkManager:
    """Networks and attachments of one Gantry root. Every public method takes a file lock,
    so several processes (the agent, a CLI, tests) can share a root safely."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        firewall.check_table_name(config.nft_table)
        check_name(config.default_network, "default_network")
        check_ifname(config.default_bridge, "default_bridge")
        self.state = config.state_dir
        self.cni = CNI(config.plugin_dirs, self.state / "cni-cache", config.plugin_timeout)

    # -- paths and locking --------------------------------------------------------------------

    @property
    def own_config_dir(self) -> Path:
        return self.state / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.state / "ipam"

    def netns_path(self, container_id: str) -> Path:
        return self.state / "netns" / container_id

    def _record_path(self, container_id: str) -> Path:
        return self.state / "containers" / f"{container_id}.json"

    def _network_path(self, name: str) -> Path:
        return self.state / "networks" / f"{name}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- networks ---------------------------------------------------------------------------

    def _gantry_networks(self) -> dict[str, Network]:
        out: dict[str, Network] = {}
        directory = self.state / "networks"
        with contextlib.suppress(FileNotFoundError):
            for fname in sorted(os.listdir(directory)):
                if fname.endswith(".json") and not fname.startswith("."):
                    try:
                        net = Network.from_dict(json.loads((directory / fname).read_text()))
                    except (OSError, ValueError, KeyError) as exc:
                        log.warning("skipping unreadable network file %s: %s", fname, exc)
                        continue
                    out[net.name] = net
        return out

    def _foreign_networks(self) -> dict[str, NetworkConfigList]:
        scan = load_config_dirs(list(self.config.config_dirs))
        for path, error in scan.errors.items():
            log.warning("ignoring CNI config %s: %s", path, error)
        return scan.networks

    def _records(self) -> dict[str, Attachment]:
        out: dict[str, Attachment] = {}
        directory = self.state / "containers"
        with contextlib.suppress(FileNotFoundError):
            for fname in sorted(os.listdir(directory)):
                if fname.endswith(".json") and not fname.startswith("."):
                    try:
                        rec = Attachment.from_dict(json.loads((directory / fname).read_text()))
                    except (OSError, ValueError, KeyError) as exc:
                        log.warning("skipping unreadable attachment %s: %s", fname, exc)
                        continue
                    out[rec.container_id] = rec
        return out

    def _users_of(self, network: str) -> list[str]:
        return [
            rec.container_id
            for rec in self._records().values()
            if any(e.network == network for e in rec.endpoints)
        ]

    def _conflist(self, name: str) -> NetworkConfigList:
        own = self._gantry_networks().get(name)
        if own is not None:
            return own.conflist(self.ipam_dir)
        foreign = self._foreign_networks().get(name)
        if foreign is not None:
            return foreign
        raise NetworkNotFound(f"no network named {name!r}")

    def _store_network(self, net: Network) -> None:
        _write_json(self._network_path(net.name), net.to_dict())
        conf = net.conflist(self.ipam_dir)
        self.own_config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.own_config_dir / f"{net.name}.conflist"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(json.loads(conf.raw), indent=1) + "\n")
        os.replace(tmp, path)

    def _sync_firewall(self) -> None:
        rules = [
            firewall.BridgeRule(n.name, n.bridge, n.internal)
            for n in self._gantry_networks().values()
            if n.driver == "bridge"
        ]
        firewall.apply(self.config.nft_table, rules)

    def _create(self, spec: NetworkSpec, *, default: bool = False) -> Network:
        check_name(spec.name)
        existing = self._gantry_networks()
        if spec.name in existing or spec.name in self._foreign_networks():
            raise NetworkExists(f"a network named {spec.name!r} already exists")
        if spec.name == self.config.default_network and not default:
            raise NetworkExists(f"{spec.name!r} is the name of the default network")
        taken = [n.subnet for n in existing.values()]
        if spec.subnet:
            subnet = spec.subnet
            try:
                ipaddress.ip_network(subnet, strict=True)
            except ValueError as exc:
                raise InvalidNetworkInput("subnet", f"{subnet!r}: {exc}") from None
            for other in existing.values():
                if overlaps(subnet, other.subnet):
                    raise NetworkExists(
                        f"subnet: {subnet} overlaps network {other.name!r} ({other.subnet})"
                    )
        else:
            subnet = pick_subnet(
                self.config.subnet_pool, self.config.pool_prefix, taken + _host_routes()
            )
        net_id = secrets.token_hex(32)
        if spec.driver == "bridge" and not spec.bridge:
            room = max(4, 15 - len(self.config.bridge_prefix))
            bridge = self.config.bridge_prefix + net_id[:room]
            spec = NetworkSpec(**{**spec.__dict__, "bridge": bridge})
        net = validate(spec, subnet, net_id=net_id, created=_now(), default=default)
        if net.driver == "bridge":
            for other in existing.values():
                if other.bridge == net.bridge:
                    raise NetworkExists(f"bridge: {net.bridge} belongs to network {other.name!r}")
            if _link_exists(net.bridge):
                raise NetworkExists(f"bridge: an interface named {net.bridge} already exists")
        elif not _link_exists(net.parent):
            raise InvalidNetworkInput("parent", f"no interface named {net.parent}")
        self._store_network(net)
        try:
            self._sync_firewall()
        except NetworkError:
            self._network_path(net.name).unlink(missing_ok=True)
            (self.own_config_dir / f"{net.name}.conflist").unlink(missing_ok=True)
            raise
        return net

    def create_network(self, spec: NetworkSpec) -> Network:
        """Create a user network (``gantry network create``); errors name the field."""
        with self._locked():
            return self._create(spec)

    def ensure_default(self) -> Network:
        """The default network, created on first use."""
        with self._locked():
            return self._ensure_default()

    def _ensure_default(self) -> Network:
        name = self.config.default_network
        net = self._gantry_networks().get(name)
        if net is not None:
            return net
        return self._create(
            NetworkSpec(
                name=name, subnet=self.config.default_subnet, bridge=self.config.default_bridge
            ),
            default=True,
        )

    def _info(self, name: str, records: Mapping[str, Attachment]) -> NetworkInfo:
        members = []
        for rec in records.values():
            for ep in rec.endpoints:
                if ep.network == name:
                    members.append(
                        {
                            "id": rec.container_id,
                            "name": rec.name,
                            "ifname": ep.ifname,
                            "addresses": list(ep.addresses),
                            "mac": ep.mac,
                            "aliases": list(ep.aliases),
                        }
                    )
        own = self._gantry_networks().get(name)
        if own is not None:
            return NetworkInfo(
                name, own.driver, str(self.own_config_dir / f"{name}.conflist"), own, tuple(members)
            )
        foreign = self._foreign_networks().get(name)
        if foreign is None:
            raise NetworkNotFound(f"no network named {name!r}")
        return NetworkInfo(name, "cni", foreign.source, None, tuple(members))

    def list_networks(self) -> list[NetworkInfo]:
        """Gantry's networks, then the foreign CNI configurations of the config dirs."""
        with self._locked():
            records = self._records()
            own = self._gantry_networks()
            names_ = list(own) + [n for n in self._foreign_networks() if n not in own]
            return [self._info(n, records) for n in names_]

    def inspect_network(self, name: str) -> NetworkInfo:
        with self._locked():
            return self._info(name, self._records())

    def remove_network(self, name: str, *, allow_default: bool = False) -> None:
        """Remove a Gantry network: its bridge, reservations, firewall rules and config.

        Refuses while containers are attached (:class:`NetworkInUse`), refuses foreign CNI
        configurations and, unless ``allow_default``, the default network."""
        with self._locked():
            net = self._gantry_networks().get(name)
            if net is None:
                if name in self._foreign_networks():
                    raise NetworkError(f"network {name!r} is not Gantry's (a CNI config file)")
                raise NetworkNotFound(f"no network named {name!r}")
            if net.default and not allow_default:
                raise NetworkError(f"{name!r} is the default network and cannot be removed")
            users = self._users_of(name)
            if users:
                raise NetworkInUse(name, users)
            (self.own_config_dir / f"{name}.conflist").unlink(missing_ok=True)
            self._network_path(name).unlink(missing_ok=True)
            self._sync_firewall()
            if net.driver == "bridge" and _link_exists(net.bridge):
                _run(["ip", "link", "delete", net.bridge, "type", "bridge"])
            _remove_tree(self.ipam_dir / name)

    # -- attachments ------------------------------------------------------------------------

    def attach(self, req: AttachRequest) -> Attachment:
        """Give a container its network before it starts; see :class:`AttachRequest`.

        On failure everything done so far is undone and the error raised."""
        with self._locked():
            return self._attach(req)

    def _attach(self, req: AttachRequest) -> Attachment:
        RuntimeConf(req.container_id, "")  # validates the id
        previous = self._records().get(req.container_id)
        if previous is not None and previous.state == "attached":
            raise NetworkExists(f"container {req.container_id} is already attached")
        if previous is not None:
            # A crash during an earlier attach left half of one: undo it, then start over.
            self._teardown(previous)
        hostname = names.check_hostname(req.hostname or req.container_id[:12])
        for index, (host, address) in enumerate(req.extra_hosts):
            names.check_hostname(host, f"extra_hosts[{index}]")
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise InvalidNetworkInput(
                    f"extra_hosts[{index}]", f"{address!r} is not an IP address"
                ) from None
        mode = req.mode
        if mode.startswith("container:"):
            return self._attach_joined(req, hostname, mode.partition(":")[2])
        if mode not in MODES:
            raise InvalidNetworkInput(
                "network_mode", f"{mode!r}: use bridge, none, host or container:<id>"
            )
        if mode != "bridge" and (req.networks or req.ports):
            field_ = "networks" if req.networks else "ports"
            raise InvalidNetworkInput(field_, f"not allowed with network mode {mode}")
        resolv = names.container_resolv_conf(
            names.host_resolv_conf_text(),
            req.dns or self.config.dns,
            req.dns_search if req.dns_search is not None else self.config.dns_search,
            req.dns_options if req.dns_options is not None else self.config.dns_options,
            host_network=mode == "host",
        )
        if mode == "host":
            rec = Attachment(
                req.container_id,
                req.name,
                mode,
                None,
                (),
                (),
                hostname,
                "",
                resolv,
                hosts_path=str(req.hosts_path or ""),
                resolv_path=str(req.resolv_path or ""),
                extra_hosts=req.extra_hosts,
            )
            return self._finish(rec, _host_hosts_text())
        endpoints_req = list(req.networks)
        if mode == "bridge" and not endpoints_req:
            self._ensure_default()
            endpoints_req = [EndpointRequest(self.config.default_network)]
        plans = self._plan_endpoints(endpoints_req)
        ports = self._plan_ports(req, plans)
        path = self.netns_path(req.container_id)
        rec = Attachment(
            req.container_id,
            req.name,
            mode,
            str(path),
            (),
            ports,
            hostname,
            "",
            resolv,
            owns_netns=True,
            hosts_path=str(req.hosts_path or ""),
            resolv_path=str(req.resolv_path or ""),
            extra_hosts=req.extra_hosts,
            state="attaching",
        )
        # The record comes first: a crash from here on leaves something recovery can find.
        _write_json(self._record_path(req.container_id), rec.to_dict())
        try:
            netns.remove(path)  # a pin (or an empty file) a crash left
            if req.netns_source:
                netns.pin(req.netns_source, path)
            else:
                netns.create(path)
            self.cni.add(LOOPBACK, RuntimeConf(req.container_id, str(path), "lo"))
            endpoints = []
            # Ports go to the first network that can publish them: one DNAT per host port.
            port_net = next((e.network for e, c in plans if _has_capability(c, "portMappings")), "")
            for index, (ep_req, conf) in enumerate(plans):
                use = ports if ep_req.network == port_net else ()
                endpoints.append(self._add_endpoint(rec, ep_req, conf, f"eth{index}", use))
                rec = _replace(rec, endpoints=tuple(endpoints))
                _write_json(self._record_path(req.container_id), rec.to_dict())
        except BaseException:
            self._teardown(rec)
            raise
        rec = _replace(rec, state="attached")
        return self._finish(rec, None)

    def _plan_endpoints(
        self, wanted: Sequence[EndpointRequest]
    ) -> list[tuple[EndpointRequest, NetworkConfigList]]:
        own = self._gantry_networks()
        plans = []
        seen = set()
        for index, ep in enumerate(wanted):
            where = f"networks[{index}]"
            if ep.network in seen:
                raise InvalidNetworkInput(where, f"network {ep.network!r} given twice")
            seen.add(ep.network)
            for alias in ep.aliases:
                names.check_hostname(alias, f"{where}.aliases")
            try:
                conf = self._conflist(ep.network)
            except NetworkNotFound:
                raise InvalidNetworkInput(where, f"no network named {ep.network!r}") from None
            net = own.get(ep.network)
            if ep.ip:
                try:
                    address = ipaddress.ip_address(ep.ip)
                except ValueError:
                    raise InvalidNetworkInput(
                        f"{where}.ip", f"{ep.ip!r} is not an IP address"
                    ) from None
                if net is not None:
                    subnet = ipaddress.ip_network(net.subnet)
                    if (
                        address not in subnet
                        or str(address) == net.gateway
                        or address
                        in (
                            subnet.network_address,
                            subnet.broadcast_address,
                        )
                    ):
                        raise InvalidNetworkInput(
                            f"{where}.ip", f"{ep.ip} is not a free host address of {net.subnet}"
                        )
            plans.append((ep, conf))
        return plans

    def _plan_ports(
        self, req: AttachRequest, plans: Sequence[tuple[EndpointRequest, NetworkConfigList]]
    ) -> tuple[PortMapping, ...]:
        if not req.ports:
            return ()
        if not any(_has_capability(conf, "portMappings") for _ep, conf in plans):
            raise InvalidNetworkInput(
                "ports",
                "none of the container's networks can publish ports (internal or no portmap)",
            )
        used: dict[tuple[str, int, str], str] = {}
        for rec in self._records().values():
            for port in rec.ports:
                used[(port.host_ip, port.host_port, port.protocol)] = rec.name or rec.container_id
        for index, port in enumerate(req.ports):
            if not port.host_port:
                continue
            for (ip, number, proto), owner in used.items():
                if (
                    number == port.host_port
                    and proto == port.protocol
                    and (not ip or not port.host_ip or ip == port.host_ip)
                ):
                    raise InvalidNetworkInput(
                        f"ports[{index}]",
                        f"host port {number}/{proto} is already published by {owner}",
                    )
            if not port_is_free(port.host_ip, port.host_port, port.protocol):
                raise InvalidNetworkInput(
                    f"ports[{index}]",
                    f"host port {port.host_port}/{port.protocol} is in use on this host",
                )
        return tuple(bind_ports(req.ports, avoid=[number for (_i, number, _p) in used]))

    def _add_endpoint(
        self,
        rec: Attachment,
        ep: EndpointRequest,
        conf: NetworkConfigList,
        ifname: str,
        ports: tuple[PortMapping, ...],
    ) -> Endpoint:
        caps: dict[str, Any] = {}
        if ep.ip:
            own = self._gantry_networks().get(ep.network)
            prefix = ipaddress.ip_network(own.subnet).prefixlen if own else None
            caps["ips"] = [f"{ep.ip}/{prefix}" if prefix is not None else ep.ip]
        if ep.mac:
            caps["mac"] = ep.mac
        if ports and _has_capability(conf, "portMappings"):
            caps["portMappings"] = [p.to_cni() for p in ports]
        rt = RuntimeConf(rec.container_id, str(rec.netns_path), ifname, capability_args=caps)
        result = self.cni.add(conf, rt)
        return _endpoint_from_result(ep, ifname, result)

    def _attach_joined(self, req: AttachRequest, hostname: str, peer_id: str) -> Attachment:
        if req.networks or req.ports:
            field_ = "networks" if req.networks else "ports"
            raise InvalidNetworkInput(field_, "not allowed with network mode container:<id>")
        peer = self._records().get(peer_id)
        if peer is None or peer.state != "attached":
            raise InvalidNetworkInput(
                "network_mode", f"container {peer_id!r} has no network to join"
            )
        if peer.netns_path is None:
            raise InvalidNetworkInput(
                "network_mode", f"container {peer_id!r} uses the host network"
            )
        if peer.joined:
            peer = self._records().get(peer.joined, peer)
        rec = Attachment(
            req.container_id,
            req.name,
            req.mode,
            peer.netns_path,
            (),
            (),
            peer.hostname,
            peer.hosts_text,
            peer.resolv_text,
            joined=peer.container_id,
            hosts_path=str(req.hosts_path or ""),
            resolv_path=str(req.resolv_path or ""),
        )
        return self._finish(rec, peer.hosts_text)

    def _finish(self, rec: Attachment, hosts_text: str | None) -> Attachment:
        """Store the record, write its files, refresh its peers' hosts files."""
        rec = _replace(rec, state="attached", hosts_text=hosts_text or rec.hosts_text)
        _write_json(self._record_path(rec.container_id), rec.to_dict())
        if rec.resolv_path:
            names.rewrite_in_place(Path(rec.resolv_path), rec.resolv_text)
        affected = {e.network for e in rec.endpoints}
        self._refresh_hosts(affected, also={rec.container_id} if hosts_text is None else set())
        if hosts_text is not None and rec.hosts_path:
            names.rewrite_in_place(Path(rec.hosts_path), hosts_text)
        return self._records().get(rec.container_id, rec)

    def _refresh_hosts(self, networks_: set[str], also: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Rebuild the hosts text of every container on ``networks_`` (and ``also``), and
        of the containers that joined their namespaces; write the files they named."""
        records = self._records()
        for rec in records.values():
            if rec.joined or rec.mode == "host":
                continue
            if rec.container_id not in also and not any(
                e.network in networks_ for e in rec.endpoints
            ):
                continue
            text = self._hosts_text(rec, records)
            rec = _replace(rec, hosts_text=text)
            _write_json(self._record_path(rec.container_id), rec.to_dict())
            if rec.hosts_path:
                with contextlib.suppress(FileNotFoundError):
                    names.rewrite_in_place(Path(rec.hosts_path), text)
            for follower in records.values():
                if follower.joined == rec.container_id:
                    _write_json(
                        self._record_path(follower.container_id),
                        _replace(follower, hosts_text=text, hostname=rec.hostname).to_dict(),
                    )
                    if follower.hosts_path:
                        with contextlib.suppress(FileNotFoundError):
                            names.rewrite_in_place(Path(follower.hosts_path), text)

    @staticmethod
    def _hosts_text(rec: Attachment, records: Mapping[str, Attachment]) -> str:
        own = [
            names.HostEntry(e.ip, (rec.name, *e.aliases) if rec.name else e.aliases)
            for e in rec.endpoints
            if e.ip
        ]
        peers = []
        mine = {e.network for e in rec.endpoints}
        for other in records.values():
            if other.container_id == rec.container_id or other.state != "attached":
                continue
            for ep in other.endpoints:
                if ep.network in mine and ep.ip:
                    peer_names = [n for n in (other.name, *ep.aliases, other.hostname) if n]
                    peer_names.append(other.container_id[:12])
                    peers.append(names.HostEntry(ep.ip, tuple(dict.fromkeys(peer_names))))
        extra = [names.HostEntry(ip, (host,)) for host, ip in rec.extra_hosts]
        return names.hosts_file(rec.hostname, own, peers, extra)

    def detach(self, container_id: str) -> None:
        """DEL every attachment of a container (on stop and on remove), unpin its namespace,
        forget it and refresh its peers' hosts files. Unknown ids are not an error."""
        with self._locked():
            rec = self._records().get(container_id)
            if rec is None:
                return
            self._teardown(rec)
            self._refresh_hosts({e.network for e in rec.endpoints})

    def _teardown(self, rec: Attachment) -> None:
        errors: list[str] = []
        if rec.owns_netns:
            path = rec.netns_path or ""
            live = path if path and netns.is_pinned(Path(path)) else ""
            for ep in reversed(rec.endpoints):
                self._del_one(ep.network, rec.container_id, ep.ifname, live, errors)
            # Networks that were being added when a crash hit have a cache entry (or
            # nothing) but no endpoint yet: DEL whatever the cache still knows.
            for cached in list(self.cni.cached_attachments()):
                if cached.container_id == rec.container_id:
                    try:
                        self.cni.delete_cached(cached, netns=live)
                    except CNIError as exc:
                        errors.append(str(exc))
                        cached.path.unlink(missing_ok=True)
            if path:
                netns.remove(Path(path))
        self._record_path(rec.container_id).unlink(missing_ok=True)
        for message in errors:
            log.warning("container %s: %s", rec.container_id, message)

    def _del_one(
        self, network: str, container_id: str, ifname: str, netns_path: str, errors: list[str]
    ) -> None:
        cached = self.cni.cached(network, container_id, ifname)
        try:
            if cached is not None:
                self.cni.delete_cached(cached, netns=netns_path)
            else:
                with contextlib.suppress(NetworkNotFound):
                    conf = self._conflist(network)
                    self.cni.delete(conf, RuntimeConf(container_id, netns_path, ifname))
        except CNIError as exc:
            errors.append(str(exc))
            if cached is not None:
                cached.path.unlink(missing_ok=True)

    def check(self, container_id: str) -> None:
        """CNI CHECK every network of a running container; raises the first failure."""
        with self._locked():
            rec = self._records().get(container_id)
            if rec is None:
                raise NetworkNotFound(f"container {container_id} has no network attachment")
            for ep in rec.endpoints:
                cached = self.cni.cached(ep.network, container_id, ep.ifname)
                if cached is None:
                    raise NetworkError(f"no cached result for {container_id} on {ep.network}")
                self.cni.check(cached.config, cached.runtime_conf(rec.netns_path or ""))

    def attachment(self, container_id: str) -> Attachment | None:
        """What a container is attached to (ports with their actual host ports), or None."""
        with self._locked():
            return self._records().get(container_id)

    def attachments(self) -> list[Attachment]:
        with self._locked():
            return list(self._records().values())

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, live: Iterable[str]) -> RecoveryReport:
        """Remove what belongs to containers that no longer exist (``live`` is every
        container id the engine still has): DEL their cached attachments (veths, IPAM
        reservations, port and firewall rules), unpin their namespaces, drop their
        records and leftover reservations in Gantry's IPAM dir; rebuild Gantry's
        nftables table. Only Gantry's own state is looked at."""
        keep = set(live)
        report = RecoveryReport()
        with self._locked():
            for rec in list(self._records().values()):
                if rec.container_id in keep:
                    continue
                self._teardown(rec)
                report.records.append(rec.container_id)
            for cached in list(self.cni.cached_attachments()):
                if cached.container_id in keep:
                    continue
                path = self.netns_path(cached.container_id)
                live_ns = str(path) if netns.is_pinned(path) else ""
                try:
                    self.cni.delete_cached(cached, netns=live_ns)
                except CNIError as exc:
                    report.errors.append(str(exc))
                    cached.path.unlink(missing_ok=True)
                report.attachments.append(cached.container_id)
            with contextlib.suppress(FileNotFoundError):
                for name in sorted(os.listdir(self.state / "netns")):
                    if name not in keep:
                        netns.remove(self.state / "netns" / name)
                        report.namespaces.append(name)
            report.ipam = self._drop_stale_reservations(keep)
            self._sync_firewall()
            self._refresh_hosts(set(self._gantry_networks()))
        return report

    def _drop_stale_reservations(self, keep: set[str]) -> list[str]:
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for network in sorted(os.listdir(self.ipam_dir)):
                directory = self.ipam_dir / network
                if not directory.is_dir():
                    continue
                for fname in sorted(os.listdir(directory)):
                    try:
                        ipaddress.ip_address(fname)
                    except ValueError:
                        continue  # host-local's lock and last_reserved_ip files
                    with contextlib.suppress(OSError):
                        owner = (directory / fname).read_text().splitlines()[0].strip()
                        if owner and owner not in keep:
                            (directory / fname).unlink()
                            removed.append(f"{network}/{fname}")
        return removed


# -- helpers ------------------------------------------------------------------------------------


def _replace(rec: Attachment, **changes: Any) -> Attachment:
    return Attachment(**{**rec.__dict__, **changes})


def _has_capability(conf: NetworkConfigList, capability: str) -> bool:
    return any((p.get("capabilities") or {}).get(capability) for p in conf.plugins)


def _endpoint_from_result(ep: EndpointRequest, ifname: str, result: Mapping[str, Any]) -> Endpoint:
    interfaces = result.get("interfaces") or []
    mac = ""
    indexes = set()
    for index, iface in enumerate(interfaces):
        if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox"):
            mac = str(iface.get("mac", ""))
            indexes.add(index)
    addresses = []
    gateway = ""
    for ip in result.get("ips") or []:
        if not isinstance(ip, dict):
            continue
        if indexes and ip.get("interface") not in indexes:
            continue
        addresses.append(str(ip.get("address", "")))
        gateway = gateway or str(ip.get("gateway", "") or "")
    return Endpoint(ep.network, ifname, tuple(a for a in addresses if a), gateway, mac, ep.aliases)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace').strip()}")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _host_routes() -> list[str]:
    """The host's IPv4 routes' destinations (auto-picked subnets avoid them)."""
    proc = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, check=False)
    if proc.returncode != 0:
        return []
    out = []
    with contextlib.suppress(ValueError):
        for route in json.loads(proc.stdout or b"[]"):
            dst = route.get("dst", "")
            if dst and dst != "default":
                with contextlib.suppress(ValueError):
                    out.append(str(ipaddress.ip_network(dst, strict=False)))
    return out


def _host_hosts_text() -> str:
    try:
        return Path("/etc/hosts").read_text()
    except OSError:
        return names.hosts_file("localhost")


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
