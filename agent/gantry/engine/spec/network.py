"""``network``, ``ports`` and ``dns``: how a container is attached, what it publishes, what
its ``/etc/resolv.conf`` says (docs/api.md, "Container networks")."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Discriminator, Field, Tag, model_validator

from gantry.engine.spec.base import SpecModel
from gantry.engine.spec.fields import refuse, shown
from gantry.network import InvalidNetworkInput, parse_port
from gantry.network import names as net_names
from gantry.network.networks import check_name

__all__ = [
    "DEFAULT_NETWORK",
    "Dns",
    "Endpoint",
    "NetworkSettings",
    "Port",
    "PortList",
]

DEFAULT_NETWORK: Final = "gantry"
MODES: Final = ("bridge", "none", "host")
_CONTAINER_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_OPTION_RE: Final = re.compile(r"^[a-zA-Z0-9\-_.:]+$")


def _strings(value: Any) -> Any:
    """One string is a list of one."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _hostname(value: str) -> str:
    try:
        net_names.check_hostname(value)
    except InvalidNetworkInput:
        raise refuse(f"{shown(value)} is not a host name") from None
    return value


def _domain(value: str) -> str:
    try:
        net_names.check_hostname(value)
    except InvalidNetworkInput:
        raise refuse(f"{shown(value)} is not a domain name") from None
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise refuse(f"{shown(value)} is not an IP address") from None


def _ipv4(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parsed = ipaddress.ip_address(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != 4:
        raise refuse(f"must be an IPv4 address, got {shown(value)}")
    return str(parsed)


def _resolver_option(value: str) -> str:
    if not _OPTION_RE.match(value):
        raise refuse(f"{shown(value)} is not a resolver option")
    return value


def _sorted_set(value: list[str]) -> list[str]:
    return sorted(set(value))


_STRINGS_INPUT: Final = list[str] | str | None


class Endpoint(SpecModel):
    """The container on one network."""

    aliases: Annotated[
        list[Annotated[str, AfterValidator(_hostname)]],
        BeforeValidator(_strings, json_schema_input_type=_STRINGS_INPUT),
        AfterValidator(_sorted_set),
        Field(description="more names the container answers to on this network; sorted"),
    ] = Field(default_factory=list)
    ipv4_address: Annotated[str | None, AfterValidator(_ipv4)] = Field(
        default=None, description="a fixed address in the network's subnet (null: IPAM chooses)"
    )

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


def _network_name(value: str) -> str:
    try:
        check_name(value)
    except InvalidNetworkInput as exc:
        raise refuse(exc.message) from None
    return value


def _networks(value: Any) -> Any:
    """A list of names (or of objects with ``name``) is the object of those networks."""
    if not isinstance(value, list):
        return {} if value is None else value
    wanted: dict[str, Any] = {}
    for index, item in enumerate(value):
        if isinstance(item, str):
            name, body = item, {}
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name, body = item["name"], {k: v for k, v in item.items() if k != "name"}
        else:
            raise refuse(f"must be a network name or an object with name, got {shown(item)}")
        if name in wanted:
            raise refuse(f"network {shown(name)} is given twice", f"[{index}]")
        wanted[name] = body
    return wanted


def _mode(value: str) -> str:
    if value in MODES or (
        value.startswith("container:") and _CONTAINER_NAME_RE.match(value.partition(":")[2])
    ):
        return value
    raise refuse(f"must be bridge, none, host or container:<name>, got {shown(value)}")


NetworkName = Annotated[str, AfterValidator(_network_name)]


class NetworkSettings(SpecModel):
    """``{"mode": ..., "networks": {name: endpoint}}``; networks only with ``bridge``, the
    default network when none is named."""

    mode: Annotated[str, AfterValidator(_mode)] = Field(
        default="bridge",
        description="bridge (the default), none, host or container:<name>",
        json_schema_extra={"examples": ["bridge", "none", "host", "container:db"]},
    )
    networks: Annotated[
        dict[NetworkName, Endpoint],
        BeforeValidator(
            _networks,
            json_schema_input_type=dict[str, Endpoint | None] | list[str | dict[str, Any]] | None,
        ),
        AfterValidator(lambda value: dict(sorted(value.items()))),
        Field(
            description="the networks of a bridge container by name (a list of names, or of "
            "objects with name, is accepted); empty: the default network"
        ),
    ] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            return value
        value = {k: v for k, v in value.items() if not (k == "mode" and v is None)}
        if value.get("mode", "bridge") == "bridge" and not value.get("networks"):
            value["networks"] = {DEFAULT_NETWORK: {}}
        return value

    @model_validator(mode="after")
    def _networks_need_bridge(self) -> NetworkSettings:
        if self.networks and self.mode != "bridge":
            raise refuse(f"only with mode bridge (the mode is {self.mode})", "networks")
        return self


_PROTOCOL_DOC: Final = "tcp, udp or sctp"


class Port(SpecModel):
    """One published port."""

    host_ip: Annotated[str, AfterValidator(_ip)] = Field(
        default="0.0.0.0", description="the host address it answers on"
    )
    host_port: int | None = Field(
        default=None, ge=1, le=65535, description="null: a free port chosen at each start"
    )
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp", "sctp"] = Field(default="tcp", description=_PROTOCOL_DOC)

    @model_validator(mode="before")
    @classmethod
    def _empty_host_ip(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "host_ip" in value and not value["host_ip"]:
            return {k: v for k, v in value.items() if k != "host_ip"}
        return value


def _port_string(value: str) -> list[Port]:
    try:
        mappings = parse_port(value, "ports")
    except InvalidNetworkInput as exc:
        raise refuse(exc.message.replace(repr(value), shown(value))) from None
    return [
        Port(
            host_ip=m.host_ip or "0.0.0.0",
            host_port=m.host_port or None,
            container_port=m.container_port,
            protocol=m.protocol,  # type: ignore[arg-type]
        )
        for m in mappings
    ]


def _port_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, (Mapping, Port)):
        return "object"
    return None


PortItem = Annotated[
    Annotated[
        Annotated[str, AfterValidator(_port_string)],
        Tag("string"),
        Field(description="Docker's [ip:][host_port[-end]:]container_port[-end][/tcp|udp|sctp]"),
    ]
    | Annotated[Port, Tag("object")],
    Discriminator(
        _port_kind,
        custom_error_type="gantry",
        custom_error_message="must be a port string or an object",
        custom_error_context={"message": "must be a port string or an object", "at": ""},
    ),
]


def _flatten_ports(items: list[Any]) -> list[Port]:
    out: list[Port] = []
    seen: set[tuple[str, int, str]] = set()
    for index, item in enumerate(items):
        for port in item if isinstance(item, list) else [item]:
            key = (port.host_ip, port.host_port or 0, port.protocol)
            if port.host_port and key in seen:
                raise refuse(f"host port {port.host_port} is published twice", f"[{index}]")
            seen.add(key)
            out.append(port)
    return sorted(out, key=lambda p: (p.container_port, p.protocol, p.host_ip, p.host_port or 0))


PortList = Annotated[
    list[PortItem],
    BeforeValidator(lambda value: [] if value is None else value),
    AfterValidator(_flatten_ports),
    Field(
        description="published ports (only with network mode bridge): strings or objects, "
        "one object per port of a range, sorted"
    ),
]


class Dns(SpecModel):
    """The container's ``/etc/resolv.conf``; empty lists: the host's (without loopback
    servers, which another network namespace cannot reach)."""

    servers: Annotated[
        list[Annotated[str, AfterValidator(_ip)]],
        BeforeValidator(_strings, json_schema_input_type=_STRINGS_INPUT),
    ] = Field(default_factory=list)
    search: Annotated[
        list[Annotated[str, AfterValidator(_domain)]],
        BeforeValidator(_strings, json_schema_input_type=_STRINGS_INPUT),
    ] = Field(default_factory=list)
    options: Annotated[
        list[Annotated[str, AfterValidator(_resolver_option)]],
        BeforeValidator(_strings, json_schema_input_type=_STRINGS_INPUT),
    ] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value
