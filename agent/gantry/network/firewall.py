"""Gantry's own nftables table: isolation between networks, and internal-only networks.

The CNI ``firewall`` plugin only opens the way for each container's address; it does not
keep networks apart. Docker does that with its DOCKER-ISOLATION chains; Gantry does it in
one nftables table it owns (``inet gantry`` by default), rebuilt atomically from the list
of networks whenever that list changes, and deleted when no network needs it. Nothing
outside that table is ever touched. A ``drop`` in any base chain is final in nftables, so
these rules hold whatever other tables (iptables-nft's included) accept.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from gantry.network.errors import InvalidNetworkInput, NetworkError

_TABLE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]{0,30}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,15}$")


@dataclass(frozen=True)
class BridgeRule:
    """What the firewall needs to know of one bridge network."""

    network: str
    bridge: str
    internal: bool


def check_table_name(name: str) -> str:
    if not _TABLE_RE.match(name):
        raise InvalidNetworkInput("nft_table", f"{name!r} is not a valid nftables table name")
    return name


def render(table: str, bridges: Sequence[BridgeRule]) -> str:
    """The nft script that replaces table ``inet <table>`` with rules for ``bridges``
    (an empty list deletes the table)."""
    check_table_name(table)
    for rule in bridges:
        if not _IFNAME_RE.match(rule.bridge):
            raise InvalidNetworkInput("bridge", f"{rule.bridge!r} is not an interface name")
    # "table …" first makes "delete table" safe when the table does not exist yet; both in
    # one script, so nft applies the whole replacement in one transaction.
    lines = [f"table inet {table} {{}}", f"delete table inet {table}"]
    if not bridges:
        return "\n".join(lines) + "\n"
    names = ", ".join(json.dumps(r.bridge) for r in sorted(bridges, key=lambda r: r.bridge))
    lines += [
        f"table inet {table} {{",
        "\tset bridges {",
        "\t\ttype ifname",
        f"\t\telements = {{ {names} }}",
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter - 10; policy accept;",
    ]
    for rule in sorted(bridges, key=lambda r: r.network):
        br = json.dumps(rule.bridge)
        note = json.dumps(f"gantry network {rule.network}")
        if rule.internal:
            lines.append(f"\t\tiifname {br} oifname != {br} drop comment {note}")
            lines.append(f"\t\toifname {br} iifname != {br} drop comment {note}")
        else:
            lines.append(f"\t\tiifname {br} oifname != {br} oifname @bridges drop comment {note}")
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def apply(table: str, bridges: Sequence[BridgeRule]) -> None:
    """Replace Gantry's table with the rules for ``bridges`` in one nft transaction."""
    script = render(table, bridges)
    try:
        proc = subprocess.run(
            ["nft", "-f", "-"], input=script.encode(), capture_output=True, check=False
        )
    except FileNotFoundError:
        raise NetworkError("nft not found: install the nftables package") from None
    if proc.returncode != 0:
        raise NetworkError(f"nft failed: {proc.stderr.decode(errors='replace').strip()}")


def table_exists(table: str) -> bool:
    proc = subprocess.run(
        ["nft", "list", "table", "inet", check_table_name(table)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0
