"""The ``gantry`` client verbs for networks, with Docker's names and flags:
``network create|ls|inspect|rm``, ``port``, and the network flags of ``run``/``create``
(``--network`` repeatable, ``--network-alias``, ``--ip``, ``--dns``, ``--dns-search``,
``--dns-option``; ``-p`` is in :mod:`gantry.cli.containers`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gantry.cli.client import AgentClient, AgentError

__all__ = ["add_spec_flags", "apply_spec_flags", "register"]

MODES = ("bridge", "none", "host")


# --- run/create flags ---------------------------------------------------------------------------


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--network",
        "--net",
        dest="network",
        action="append",
        default=[],
        metavar="NETWORK",
        help="a network's name (repeatable), or bridge, none, host, container:NAME",
    )
    parser.add_argument(
        "--network-alias",
        dest="network_alias",
        action="append",
        default=[],
        metavar="ALIAS",
        help="another name of the container on its (first) network",
    )
    parser.add_argument("--ip", help="IPv4 address on the (first) network")
    parser.add_argument("--dns", action="append", default=[], metavar="IP", help="DNS server")
    parser.add_argument(
        "--dns-search", dest="dns_search", action="append", default=[], metavar="DOMAIN"
    )
    parser.add_argument(
        "--dns-option", "--dns-opt", dest="dns_option", action="append", default=[], metavar="OPT"
    )


def apply_spec_flags(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """Put the network flags of ``run``/``create`` into the container spec."""
    modes = [n for n in args.network if n in MODES or n.startswith("container:")]
    names = [n for n in args.network if n not in modes]
    if len(modes) > 1 or (modes and modes[0] != "bridge" and names):
        raise AgentError(
            0,
            "--network: give one of none, host, container:NAME alone, or network names",
            "--network",
        )
    mode = modes[0] if modes else "bridge"
    if args.network_alias or args.ip:
        if mode != "bridge":
            raise AgentError(0, f"--network-alias/--ip: not with --network {mode}", "--network")
        names = names or ["gantry"]
    if args.network:
        networks: dict[str, Any] = {name: {} for name in names}
        if names:
            first = networks[names[0]]
            if args.network_alias:
                first["aliases"] = list(args.network_alias)
            if args.ip:
                first["ipv4_address"] = args.ip
        spec["network"] = {"mode": mode, "networks": networks}
    elif args.network_alias or args.ip:
        spec["network"] = {
            "mode": "bridge",
            "networks": {"gantry": {"aliases": list(args.network_alias), "ipv4_address": args.ip}},
        }
    dns = {
        key: values
        for key, values in (
            ("servers", args.dns),
            ("search", args.dns_search),
            ("options", args.dns_option),
        )
        if values
    }
    if dns:
        spec["dns"] = dns


# --- verbs ----------------------------------------------------------------------------------------


def _labels(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise AgentError(0, f"--label: want KEY=VALUE, got {item!r}", "--label")
        out[key] = value if sep else ""
    return out


def _create(args: argparse.Namespace, client: AgentClient) -> int:
    body: dict[str, Any] = {"name": args.name, "driver": args.driver, "internal": args.internal}
    for key in ("subnet", "gateway", "ip_range", "parent"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.label:
        body["labels"] = _labels(args.label)
    network = client.request("POST", "/v1/networks", body=body)
    print(network["id"])
    return 0


def _ls(args: argparse.Namespace, client: AgentClient) -> int:
    networks = client.request("GET", "/v1/networks")
    if args.json:
        print(json.dumps(networks, indent=2))
        return 0
    if args.quiet:
        for net in networks:
            print(net["name"])
        return 0
    print(f"{'NETWORK ID':<14}{'NAME':<24}{'DRIVER':<9}{'SUBNET':<20}CONTAINERS")
    for net in networks:
        print(
            f"{(net['id'] or '')[:12]:<14}{net['name']:<24}{net['driver']:<9}"
            f"{net['subnet'] or '':<20}{len(net['containers'])}"
        )
    return 0


def _inspect(args: argparse.Namespace, client: AgentClient) -> int:
    found = [client.request("GET", f"/v1/networks/{name}") for name in args.networks]
    print(json.dumps(found, indent=2))
    return 0


def _rm(args: argparse.Namespace, client: AgentClient) -> int:
    status = 0
    for name in args.networks:
        try:
            client.request("DELETE", f"/v1/networks/{name}")
        except AgentError as exc:
            print(f"gantry network rm: {name}: {exc.detail}", file=sys.stderr)
            status = 1
            continue
        print(name)
    return status


def _port(args: argparse.Namespace, client: AgentClient) -> int:
    container = client.request("GET", client.container_path(args.container))
    ports = (container.get("network_settings") or {}).get("ports") or []
    wanted = args.private_port
    shown = 0
    for port in ports:
        key = f"{port['container_port']}/{port['protocol']}"
        if wanted and wanted not in (key, str(port["container_port"])):
            continue
        host = port["host_ip"]
        print(f"{key} -> {f'[{host}]' if ':' in host else host}:{port['host_port']}")
        shown += 1
    if wanted and not shown:
        print(f"gantry port: no public port {wanted!r} published", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    from gantry.cli.containers import _client_options, _wrap

    common = _client_options()
    parser = subparsers.add_parser("network", help="manage networks")
    verbs = parser.add_subparsers(dest="network_command", metavar="VERB")

    create = verbs.add_parser("create", parents=[common], help="create a network")
    create.add_argument("-d", "--driver", default="bridge", choices=("bridge", "macvlan", "ipvlan"))
    create.add_argument("--subnet", help="CIDR (default: a free private /24)")
    create.add_argument("--gateway")
    create.add_argument("--ip-range", dest="ip_range", help="CIDR inside the subnet to give out")
    create.add_argument("--internal", action="store_true", help="no way out of the network")
    create.add_argument("-o", "--parent", help="host interface (macvlan/ipvlan)")
    create.add_argument("--label", action="append", default=[], metavar="K=V")
    create.add_argument("name", metavar="NAME")
    create.set_defaults(handler=_wrap(_create))

    ls = verbs.add_parser("ls", aliases=["list"], parents=[common], help="list networks")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-q", "--quiet", action="store_true")
    ls.set_defaults(handler=_wrap(_ls))

    inspect = verbs.add_parser("inspect", parents=[common], help="networks as JSON")
    inspect.add_argument("networks", nargs="+", metavar="NETWORK")
    inspect.set_defaults(handler=_wrap(_inspect))

    rm = verbs.add_parser("rm", aliases=["remove"], parents=[common], help="remove networks")
    rm.add_argument("networks", nargs="+", metavar="NETWORK")
    rm.set_defaults(handler=_wrap(_rm))

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)

    port = subparsers.add_parser("port", parents=[common], help="a container's published ports")
    port.add_argument("container", metavar="CONTAINER")
    port.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    port.set_defaults(handler=_wrap(_port))
