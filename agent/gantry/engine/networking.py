"""The engine's side of container networking (layer 5 over ``gantry.network``).

- (the container spec's ``network``, ``ports`` and ``dns`` fields are modelled in
  :mod:`gantry.engine.spec.network`);
- :func:`config_from_settings`: agent.toml's ``[network]`` table as a ``NetworkConfig``;
- :class:`Networking`: what the engine calls around a container's life. At create, the
  bundle gets ``hosts``, ``resolv.conf`` and ``hostname`` files that config.json
  bind-mounts (they must exist before the runtime mounts them; later they are rewritten in
  place, never renamed, so the bind mounts keep showing them). Between the runtime's create
  and start, the container's new network namespace (``/proc/<pid>/ns/net``) is pinned and
  the CNI plugins ADD its networks and ports (:meth:`Networking.up`); when the runtime
  container is deleted (stop, exit, remove, restart) its attachment is DELeted
  (:meth:`Networking.down`). The network manager keeps each attachment and the CNI results
  under ``<root>/network`` (written before and after every plugin call), which is what lets
  DEL and recovery work after the agent was killed.
- the network routes' verbs (list, inspect, create, converge, remove) in the agent's
  error vocabulary.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gantry.engine.errors import Conflict, EngineError, Invalid, NotFound
from gantry.engine.spec.network import DEFAULT_NETWORK
from gantry.network import (
    AttachRequest,
    CNIError,
    EndpointRequest,
    InvalidNetworkInput,
    NetworkConfig,
    NetworkError,
    NetworkExists,
    NetworkInfo,
    NetworkInUse,
    NetworkManager,
    NetworkNotFound,
    NetworkSpec,
    PortMapping,
)
from gantry.network import names as net_names
from gantry.network.networks import DRIVERS, check_name

__all__ = [
    "DEFAULT_NETWORK",
    "NETWORK_FILES",
    "Networking",
    "config_from_settings",
]

_log = logging.getLogger(__name__)

NETWORK_FILES: Final = (
    ("/etc/hosts", "hosts"),
    ("/etc/resolv.conf", "resolv.conf"),
    ("/etc/hostname", "hostname"),
)
SETTINGS_KEYS: Final = (
    "default_subnet",
    "default_bridge",
    "cni_plugin_dirs",
    "cni_config_dir",
    "nft_table",
    "subnet_pool",
)


# --- agent settings ----------------------------------------------------------------------------


def config_from_settings(table: Mapping[str, Any] | None, root: Path) -> NetworkConfig:
    """agent.toml's ``[network]`` table (flags already merged in) as a ``NetworkConfig``;
    ``ValueError`` naming the key otherwise."""
    table = dict(table or {})
    for key in table:
        if key not in SETTINGS_KEYS:
            raise ValueError(f"network.{key}: unknown key (known: {', '.join(SETTINGS_KEYS)})")
    out: dict[str, Any] = {
        "root": root,
        "default_network": DEFAULT_NETWORK,
        "plugin_dirs": (Path("/usr/lib/cni"),),
        "config_dirs": (Path("/etc/cni/net.d"),),
    }
    for key, attr in (
        ("default_subnet", "default_subnet"),
        ("default_bridge", "default_bridge"),
        ("nft_table", "nft_table"),
        ("subnet_pool", "subnet_pool"),
    ):
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"network.{key}: must be a non-empty string, got {value!r}")
        out[attr] = value
    out.setdefault("default_subnet", "10.88.0.0/16")
    for key in ("default_subnet", "subnet_pool"):
        if key in out:
            try:
                net = ipaddress.ip_network(out[key], strict=True)
            except ValueError as exc:
                raise ValueError(f"network.{key}: {exc}") from None
            if net.version != 4:
                raise ValueError(f"network.{key}: must be an IPv4 subnet, got {out[key]!r}")
    dirs = table.get("cni_plugin_dirs")
    if dirs is not None:
        if (
            not isinstance(dirs, list)
            or not dirs
            or not all(isinstance(d, str) and d.startswith("/") for d in dirs)
        ):
            raise ValueError(
                f"network.cni_plugin_dirs: must be a list of absolute paths, got {dirs!r}"
            )
        out["plugin_dirs"] = tuple(Path(d) for d in dirs)
    config_dir = table.get("cni_config_dir")
    if config_dir is not None:
        if not isinstance(config_dir, str) or not config_dir.startswith("/"):
            raise ValueError(
                f"network.cni_config_dir: must be an absolute path, got {config_dir!r}"
            )
        out["config_dirs"] = (Path(config_dir),)
    config = NetworkConfig(**out)
    try:
        NetworkManager(config)  # checks the bridge and table names
    except InvalidNetworkInput as exc:
        raise ValueError(f"network.{exc.field}: {exc.message}") from None
    return config


# --- errors ------------------------------------------------------------------------------------

_SPEC_FIELDS: Final = {
    "network_mode": "spec.network.mode",
    "networks": "spec.network.networks",
    "ports": "spec.ports",
    "dns": "spec.dns.servers",
    "dns_search": "spec.dns.search",
    "dns_options": "spec.dns.options",
    "hostname": "spec.hostname",
}


def _spec_field(field: str) -> str:
    head, bracket, rest = field.partition("[")
    mapped = _SPEC_FIELDS.get(head)
    if mapped is None:
        return f"spec.network.{field}"
    if head == "ports" and bracket:
        return f"{mapped}[{rest}"
    return mapped


def engine_error(exc: NetworkError, *, spec: bool = False) -> EngineError:
    """The engine's error for a network error (``spec``: fields are the container spec's)."""
    if isinstance(exc, InvalidNetworkInput):
        field = _spec_field(exc.field) if spec else exc.field
        return Invalid(f"{field}: {exc.message}", field)
    if isinstance(exc, NetworkNotFound):
        return NotFound(str(exc), "name")
    if isinstance(exc, (NetworkExists, NetworkInUse)):
        return Conflict(str(exc), "name")
    if isinstance(exc, CNIError):
        return Conflict(f"network: {exc}", "spec.network" if spec else None)
    return Conflict(str(exc), "spec.network" if spec else None)


# --- the engine's helper -----------------------------------------------------------------------

PeerLookup = Callable[[str], tuple[str, bool] | None]
"""Container name -> (id, running) or None when there is no such container."""


class Networking:
    """Networks and container attachments of one engine (see the module's docstring)."""

    def __init__(self, config: NetworkConfig, peer: PeerLookup) -> None:
        self.config = config
        self.manager = NetworkManager(config)
        self._peer = peer

    # -- containers --------------------------------------------------------------------------

    def configure(self, config: dict[str, Any], spec: Mapping[str, Any], bundle: Path) -> None:
        """Add to a container's config.json what its network needs: the bind mounts of its
        hosts, resolv.conf and hostname files, and for ``container:<name>`` the peer's
        pinned network namespace. A mount the user gave for one of these paths wins."""
        taken = {m["destination"] for m in config.get("mounts", [])}
        for destination, fname in NETWORK_FILES:
            if destination in taken:
                continue
            config["mounts"].append(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": str(bundle / fname),
                    "options": ["rbind", "nosuid", "nodev", "noexec"],
                }
            )
        mode = _mode(spec)
        if mode.startswith("container:"):
            peer_id, _running = self._resolve_peer(mode.partition(":")[2], need_running=False)
            path = str(self.manager.netns_path(peer_id))
            for entry in config["linux"]["namespaces"]:
                if entry["type"] == "network":
                    entry["path"] = path

    @staticmethod
    def prepare_files(directory: Path, spec: Mapping[str, Any]) -> None:
        """The files the bind mounts name; they must exist when the runtime mounts them."""
        for _destination, fname in NETWORK_FILES:
            (directory / fname).touch(mode=0o644)
        net_names.rewrite_in_place(directory / "hostname", f"{spec['hostname']}\n")

    def _resolve_peer(self, name: str, *, need_running: bool) -> tuple[str, bool]:
        found = self._peer(name)
        if found is None:
            raise Invalid(
                f"spec.network.mode: no container named {name!r} to share the network of",
                "spec.network.mode",
            )
        if need_running and not found[1]:
            raise Conflict(
                f"spec.network.mode: container {name!r} is not running: its network cannot "
                "be joined",
                "spec.network.mode",
            )
        return found

    def check_peer(self, spec: Mapping[str, Any]) -> None:
        """Before the runtime creates a ``container:<name>`` container: the peer runs."""
        mode = _mode(spec)
        if mode.startswith("container:"):
            self._resolve_peer(mode.partition(":")[2], need_running=True)

    def up(
        self, container_id: str, name: str, spec: Mapping[str, Any], pid: int, bundle: Path
    ) -> None:
        """Attach a created (not yet started) container: pin its namespace, ADD its
        networks and ports, write its hosts and resolv.conf. Raises the engine's error;
        whatever was done is undone then."""
        mode = _mode(spec)
        network = spec.get("network") or {}
        dns = spec.get("dns") or {}
        manager_mode = mode
        if mode.startswith("container:"):
            peer_id, _running = self._resolve_peer(mode.partition(":")[2], need_running=True)
            manager_mode = f"container:{peer_id}"
        request = AttachRequest(
            container_id=container_id,
            name=name,
            mode=manager_mode,
            networks=tuple(
                EndpointRequest(net, tuple(ep["aliases"]), ep["ipv4_address"] or "")
                for net, ep in sorted((network.get("networks") or {}).items())
                if mode == "bridge"
            ),
            ports=tuple(
                PortMapping(
                    p["container_port"],
                    p["host_port"] or 0,
                    p["protocol"],
                    "" if p["host_ip"] == "0.0.0.0" else p["host_ip"],
                )
                for p in spec.get("ports") or ()
            ),
            hostname=spec["hostname"],
            hosts_path=bundle / "hosts",
            resolv_path=bundle / "resolv.conf",
            dns=tuple(dns.get("servers") or ()),
            dns_search=tuple(dns["search"]) if dns.get("search") else None,
            dns_options=tuple(dns["options"]) if dns.get("options") else None,
            netns_source=f"/proc/{pid}/ns/net" if mode in ("bridge", "none") else "",
        )
        with contextlib.suppress(NetworkError):
            self.manager.detach(container_id)  # a record an earlier run of it left
        try:
            if any(ep.network == self.config.default_network for ep in request.networks):
                self.manager.ensure_default()  # created on first use
            self.manager.attach(request)
        except NetworkError as exc:
            raise engine_error(exc, spec=True) from None
        except OSError as exc:
            raise Conflict(f"network: cannot set up the container's network: {exc}") from None
        with contextlib.suppress(OSError):
            net_names.rewrite_in_place(bundle / "hostname", f"{spec['hostname']}\n")

    def down(self, container_id: str) -> None:
        """DEL a container's attachment (veths, addresses, port and firewall rules); never
        raises: a clean-up must not stop the rest of a stop or a removal."""
        try:
            self.manager.detach(container_id)
        except (NetworkError, OSError) as exc:
            _log.warning("container %s: taking its network down: %s", container_id, exc)

    def recover(self, live: set[str]) -> None:
        """After a start (or a crash): remove what containers not in ``live`` left."""
        try:
            report = self.manager.recover(live)
        except (NetworkError, OSError) as exc:
            _log.warning("network recovery failed: %s", exc)
            return
        for what in ("records", "attachments", "namespaces", "ipam"):
            items = getattr(report, what)
            if items:
                _log.info("network recovery removed %s: %s", what, ", ".join(items))
        for message in report.errors:
            _log.warning("network recovery: %s", message)

    def settings(self, container_id: str) -> dict[str, Any]:
        """The ``network_settings`` of inspect: addresses and the actual host ports."""
        try:
            rec = self.manager.attachment(container_id)
        except (NetworkError, OSError):
            rec = None
        if rec is None:
            return {"networks": {}, "ports": []}
        networks: dict[str, Any] = {}
        for ep in rec.endpoints:
            address = ep.addresses[0] if ep.addresses else ""
            prefix = None
            if "/" in address:
                with contextlib.suppress(ValueError):
                    prefix = ipaddress.ip_interface(address).network.prefixlen
            networks[ep.network] = {
                "ip": ep.ip or None,
                "prefix_len": prefix,
                "gateway": ep.gateway or None,
                "mac": ep.mac or None,
                "aliases": list(ep.aliases),
                "interface": ep.ifname,
            }
        ports = [
            {
                "host_ip": p.host_ip or "0.0.0.0",
                "host_port": p.host_port,
                "container_port": p.container_port,
                "protocol": p.protocol,
            }
            for p in rec.ports
        ]
        out: dict[str, Any] = {"networks": networks, "ports": ports}
        if rec.joined:
            out["joined"] = rec.joined
        return out

    # -- networks -----------------------------------------------------------------------------

    def _object(self, info: NetworkInfo) -> dict[str, Any]:
        containers = sorted({str(c.get("name") or c.get("id")) for c in info.containers})
        net = info.network
        if net is None:
            return {
                "name": info.name,
                "id": None,
                "driver": info.driver,
                "subnet": None,
                "gateway": None,
                "ip_range": None,
                "internal": False,
                "parent": None,
                "bridge": None,
                "labels": {},
                "created": None,
                "containers": containers,
                "source": info.source,
            }
        return {
            "name": net.name,
            "id": net.id,
            "driver": net.driver,
            "subnet": net.subnet,
            "gateway": net.gateway,
            "ip_range": net.ip_range or None,
            "internal": net.internal,
            "parent": net.parent or None,
            "bridge": net.bridge or None,
            "labels": dict(net.labels),
            "created": net.created,
            "containers": containers,
        }

    def _default(self) -> None:
        try:
            self.manager.ensure_default()
        except NetworkError as exc:
            raise engine_error(exc) from None

    def list_networks(self) -> list[dict[str, Any]]:
        self._default()
        return [self._object(info) for info in self.manager.list_networks()]

    def inspect_network(self, name: str) -> dict[str, Any]:
        self._default()
        try:
            return self._object(self.manager.inspect_network(name))
        except NetworkNotFound:
            raise NotFound(f"no such network: {name}", "name") from None

    def _spec(self, name: str, body: Mapping[str, Any]) -> NetworkSpec:
        driver = body.get("driver") or "bridge"
        if driver not in DRIVERS:
            raise Invalid(f"driver: must be one of {', '.join(DRIVERS)}, got {driver!r}", "driver")
        return NetworkSpec(
            name=name,
            driver=driver,
            subnet=body.get("subnet") or "",
            gateway=body.get("gateway") or "",
            ip_range=body.get("ip_range") or "",
            internal=bool(body.get("internal")),
            labels=dict(body.get("labels") or {}),
            parent=body.get("parent") or "",
        )

    def create_network(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._default()
        try:
            check_name(name)
            self.manager.create_network(self._spec(name, body))
            return self._object(self.manager.inspect_network(name))
        except NetworkError as exc:
            raise engine_error(exc) from None

    def remove_network(self, name: str) -> dict[str, Any]:
        self._default()
        try:
            info = self.manager.inspect_network(name)
        except NetworkNotFound:
            raise NotFound(f"no such network: {name}", "name") from None
        if name == self.config.default_network:
            raise Conflict(f"network {name!r} is the default network and cannot be removed", "name")
        if info.containers:
            users = ", ".join(sorted({str(c.get("name") or c.get("id")) for c in info.containers}))
            raise Conflict(f"network {name!r} is in use by container(s): {users}", "name")
        try:
            self.manager.remove_network(name)
        except NetworkError as exc:
            raise engine_error(exc) from None
        return {"changed": True}

    def converge_network(
        self, name: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """``PUT /v1/networks/{name}``: create it, leave it, or recreate it (docs/api.md)."""
        self._default()
        try:
            check_name(name)
        except InvalidNetworkInput as exc:
            raise Invalid(f"name: {exc.message}", "name") from None
        try:
            current = self._object(self.manager.inspect_network(name))
        except NetworkNotFound:
            current = None
        if current is None:
            after = _wanted(None, body)
            result: dict[str, Any] = {
                "changed": True,
                "actions": ["create"],
                "diff": {"before": None, "after": after},
                "network": None,
            }
            if not dry_run:
                result["network"] = self.create_network(name, body)
                result["diff"]["after"] = _comparable(result["network"])
            return result
        if current["id"] is None:
            raise Conflict(f"network {name!r} is a CNI configuration file, not Gantry's", "name")
        before = _comparable(current)
        after = _wanted(before, body)
        if after == before:
            return {
                "changed": False,
                "actions": [],
                "diff": {"before": before, "after": after},
                "network": current,
            }
        if name == self.config.default_network:
            raise Conflict(
                f"network {name!r} is the default network: its settings come from the agent's "
                "configuration ([network] in agent.toml)",
                "name",
            )
        if current["containers"]:
            raise Conflict(
                f"network {name!r} must be recreated but is in use by container(s): "
                f"{', '.join(current['containers'])}",
                "name",
            )
        result = {
            "changed": True,
            "actions": ["recreate"],
            "diff": {"before": before, "after": after},
            "network": current,
        }
        if dry_run:
            return result
        spec = self._spec(name, after)
        try:
            self.manager.remove_network(name)
            self.manager.create_network(spec)
            result["network"] = self._object(self.manager.inspect_network(name))
        except NetworkError as exc:
            raise engine_error(exc) from None
        result["diff"]["after"] = _comparable(result["network"])
        return result


_COMPARED: Final = ("driver", "subnet", "gateway", "ip_range", "internal", "parent", "labels")


def _comparable(network: Mapping[str, Any]) -> dict[str, Any]:
    return {key: network.get(key) for key in _COMPARED}


def _wanted(before: Mapping[str, Any] | None, body: Mapping[str, Any]) -> dict[str, Any]:
    """The network a PUT asks for: given fields, and for null/absent ones what is there
    (or the agent's choice, shown as null, for a new network)."""
    out: dict[str, Any] = {}
    for key in _COMPARED:
        value = body.get(key)
        if value is None:
            value = before.get(key) if before is not None else None
        elif key in ("subnet", "ip_range"):
            with contextlib.suppress(ValueError):
                value = str(ipaddress.ip_network(value, strict=False))
        elif key == "gateway":
            with contextlib.suppress(ValueError):
                value = str(ipaddress.ip_address(value))
        out[key] = value
    if before is not None and out["subnet"] != before.get("subnet"):
        for key in ("gateway", "ip_range"):  # the old ones belong to the old subnet
            if body.get(key) is None:
                out[key] = None
    if before is None:
        out["driver"] = out["driver"] or "bridge"
        out["internal"] = bool(out["internal"])
        out["labels"] = out["labels"] or {}
    return out


def _mode(spec: Mapping[str, Any]) -> str:
    network = spec.get("network") or {}
    return str(network.get("mode") or "bridge")
