"""Published ports: parse ``[ip:][host:]container[/proto]`` and choose free host ports."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gantry.network.errors import InvalidNetworkInput

PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class PortMapping:
    """One published port; ``host_port`` 0 means "choose a free one" until it is bound."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""

    def to_cni(self) -> dict[str, Any]:
        """The entry of the ``portMappings`` capability (the CNI conventions' shape)."""
        entry: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "protocol": self.protocol,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PortMapping:
        return cls(
            container_port=int(doc["container_port"]),
            host_port=int(doc.get("host_port", 0)),
            protocol=str(doc.get("protocol", "tcp")),
            host_ip=str(doc.get("host_ip", "")),
        )

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.protocol}"


def _port_range(text: str, field: str, spec: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise InvalidNetworkInput(field, f"{spec!r}: {text!r} is not a port or range") from None
    if not (1 <= first <= 65535 and 1 <= last <= 65535) or last < first:
        raise InvalidNetworkInput(field, f"{spec!r}: {text!r} is not within 1-65535")
    return first, last


def parse_port(spec: str, field: str = "ports") -> list[PortMapping]:
    """Parse one ``-p`` value: ``80``, ``8080:80``, ``127.0.0.1:8080:80/udp``,
    ``127.0.0.1::80``, ``[::1]:8080:80``, ``8000-8010:80-90``; a host range against a
    single container port is not accepted (Docker picks one port of it; Gantry asks for a
    clear mapping)."""
    if not isinstance(spec, str) or not spec:
        raise InvalidNetworkInput(field, f"empty port specification {spec!r}")
    body, _slash, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise InvalidNetworkInput(field, f"{spec!r}: protocol must be one of {PROTOCOLS}")
    host_ip = ""
    if body.startswith("["):
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise InvalidNetworkInput(field, f"{spec!r}: bad [ip] form")
        parts = [body[1:end], *body[end + 2 :].split(":")]
        if len(parts) != 3:
            raise InvalidNetworkInput(field, f"{spec!r}: use [ip]:host:container")
        host_ip = parts[0]
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = parts[0]
        elif len(parts) > 3:
            raise InvalidNetworkInput(field, f"{spec!r}: too many ':' (IPv6 goes in [brackets])")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise InvalidNetworkInput(
                field, f"{spec!r}: {host_ip!r} is not an IP address"
            ) from None
    container_text = parts[-1]
    host_text = parts[-2] if len(parts) >= 2 else ""
    c_first, c_last = _port_range(container_text, field, spec)
    if host_text:
        h_first, h_last = _port_range(host_text, field, spec)
        if h_last - h_first != c_last - c_first:
            raise InvalidNetworkInput(
                field, f"{spec!r}: host and container ranges have different lengths"
            )
    else:
        h_first = h_last = 0
    mappings = []
    for offset in range(c_last - c_first + 1):
        mappings.append(
            PortMapping(
                container_port=c_first + offset,
                host_port=h_first + offset if h_first else 0,
                protocol=proto,
                host_ip=host_ip,
            )
        )
    return mappings


def parse_ports(specs: Iterable[str], field: str = "ports") -> list[PortMapping]:
    """Parse several ``-p`` values; the same host ip/port/protocol may appear only once."""
    out: list[PortMapping] = []
    seen: set[tuple[str, int, str]] = set()
    for index, spec in enumerate(specs):
        for mapping in parse_port(spec, f"{field}[{index}]"):
            key = (mapping.host_ip, mapping.host_port, mapping.protocol)
            if mapping.host_port and key in seen:
                raise InvalidNetworkInput(
                    f"{field}[{index}]", f"host port {mapping.host_port} is published twice"
                )
            seen.add(key)
            out.append(mapping)
    return out


def port_is_free(host_ip: str, port: int, protocol: str) -> bool:
    """True when ``port`` can be bound on ``host_ip`` (all addresses when empty) now."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError:
            return False
    return True


def free_port(host_ip: str, protocol: str, avoid: Iterable[int] = ()) -> int:
    """Ask the kernel for a free ephemeral port (bind to port 0), skipping ``avoid``
    (ports Gantry already gave to other containers: DNAT rules do not bind sockets, so
    the kernel cannot know about them)."""
    avoided = set(avoid)
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    address = host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    held: list[socket.socket] = []
    try:
        for _attempt in range(64):
            sock = socket.socket(family, kind)
            held.append(sock)
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
            if port not in avoided:
                return port
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    raise OSError("no free port found")


def bind_ports(mappings: Sequence[PortMapping], avoid: Iterable[int] = ()) -> list[PortMapping]:
    """Give every mapping without a host port a free one; keep the others as they are."""
    taken = set(avoid) | {m.host_port for m in mappings if m.host_port}
    bound = []
    for mapping in mappings:
        if mapping.host_port:
            bound.append(mapping)
            continue
        port = free_port(mapping.host_ip, mapping.protocol, taken)
        taken.add(port)
        bound.append(PortMapping(mapping.container_port, port, mapping.protocol, mapping.host_ip))
    return bound
