"""Shared helpers of the gantry.network integration tests (no tests in here).

Every test gets its own root, its own default network name, bridge name, nftables table
and subnets, all carrying one random token; ``NetEnv.close`` removes everything the test
made and then asserts that no link, namespace pin, iptables/nftables rule or IPAM file
with the token is left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gantry.network import (
    Attachment,
    AttachRequest,
    NetworkConfig,
    NetworkManager,
    NetworkSpec,
)

RUN_TIMEOUT = 30


def run(argv: Sequence[str], timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def in_netns(
    netns: str, *argv: str, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the network namespace pinned at ``netns``."""
    return run(["nsenter", f"--net={netns}", *argv], timeout)


def in_container(
    netns: str, hosts: Path, *argv: str, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` the way a container sees its network: in its namespace, with its hosts
    file mounted on /etc/hosts (in a private mount namespace that dies with the command)."""
    script = 'mount --bind "$1" /etc/hosts && shift && exec nsenter --net="$0" "$@"'
    return run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, netns, str(hosts), *argv],
        timeout,
    )


def ping(netns: str, address: str) -> bool:
    return in_netns(netns, "busybox", "ping", "-c", "1", "-W", "2", address).returncode == 0


def host_routes() -> list[ipaddress.IPv4Network]:
    out = run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"
    nets = []
    for route in json.loads(out):
        dst = route.get("dst", "")
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                nets.append(ipaddress.ip_network(dst, strict=False))
    return nets


def free_subnet(avoid: Sequence[str] = (), prefix: int = 24) -> str:
    """A random 10.2xx.y.0/24 (or /``prefix``) that no host route and nothing in ``avoid``
    overlaps."""
    taken = host_routes() + [ipaddress.ip_network(a) for a in avoid]
    for _attempt in range(200):
        candidate = ipaddress.ip_network(
            f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/{prefix}", strict=False
        )
        if not any(candidate.overlaps(other) for other in taken):  # type: ignore[arg-type]
            return str(candidate)
    raise RuntimeError("no free test subnet")


def links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


@dataclass
class NetEnv:
    root: Path
    token: str
    config: NetworkConfig
    manager: NetworkManager
    subnets: list[str] = field(default_factory=list)
    veths: set[str] = field(default_factory=set)

    def subnet(self) -> str:
        chosen = free_subnet(self.subnets)
        self.subnets.append(chosen)
        return chosen

    def cid(self, label: str) -> str:
        return f"{label}-{self.token}"

    def network(self, label: str, **kwargs: object) -> str:
        name = f"{label}-{self.token}"
        kwargs.setdefault("subnet", self.subnet())
        kwargs.setdefault("bridge", f"g{label[:5]}{self.token}")
        self.manager.create_network(NetworkSpec(name=name, **kwargs))  # type: ignore[arg-type]
        return name

    def attach(self, label: str, **kwargs: object) -> Attachment:
        hosts = self.root / f"{label}.hosts"
        hosts.touch()
        kwargs.setdefault("name", label)
        att = self.manager.attach(
            AttachRequest(container_id=self.cid(label), hosts_path=hosts, **kwargs)  # type: ignore[arg-type]
        )
        self.note_veths()
        return att

    def hosts(self, label: str) -> Path:
        return self.root / f"{label}.hosts"

    def note_veths(self) -> None:
        """Remember the host ends of every cached attachment (checked gone at the end)."""
        for cached in self.manager.cni.cached_attachments():
            for iface in cached.result.get("interfaces") or []:
                if not iface.get("sandbox") and str(iface.get("name", "")).startswith("veth"):
                    self.veths.add(str(iface["name"]))

    def leftovers(self) -> dict[str, object]:
        found: dict[str, object] = {}
        mine = {n for n in links() if self.token in n} | (self.veths & links())
        if mine:
            found["links"] = sorted(mine)
        rules = [
            line
            for line in run(["iptables-save"]).stdout.splitlines()
            + run(["ip6tables-save"]).stdout.splitlines()
            if self.token in line
        ]
        if rules:
            found["iptables"] = rules
        tables = [t for t in run(["nft", "list", "tables"]).stdout.splitlines() if self.token in t]
        if tables:
            found["nft"] = tables
        mounts = [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(self.root) in line
        ]
        if mounts:
            found["mounts"] = mounts
        ipam = self.root / "network" / "ipam"
        if ipam.exists():
            files = [
                str(p)
                for p in ipam.rglob("*")
                if p.is_file()
                and p.name[0].isdigit()
                and "." in p.name
                and not p.name.startswith("last")
            ]
            if files:
                found["ipam"] = files
        return found

    def close(self) -> None:
        """Remove every attachment and network of this test, then check nothing is left."""
        self.note_veths()
        errors = []
        manager = NetworkManager(self.config)
        for att in manager.attachments():
            try:
                manager.detach(att.container_id)
            except Exception as exc:  # keep cleaning; report at the end
                errors.append(f"detach {att.container_id}: {exc}")
        manager.recover(live=())
        for info in manager.list_networks():
            if info.network is not None:
                try:
                    manager.remove_network(info.name, allow_default=True)
                except Exception as exc:
                    errors.append(f"rm {info.name}: {exc}")
        left = self.leftovers()
        # Last resort so a failing test does not poison the host for the next one.
        for name in left.get("links", []):  # type: ignore[union-attr]
            run(["ip", "link", "delete", str(name)])
        for table in left.get("nft", []):  # type: ignore[union-attr]
            run(["nft", "delete", *str(table).split()[1:]])
        shutil.rmtree(self.root, ignore_errors=True)
        assert not errors, errors
        assert not left, f"network leftovers: {left}"


@contextlib.contextmanager
def net_env(tmp_path: Path) -> Iterator[NetEnv]:
    token = uuid.uuid4().hex[:6]
    root = tmp_path / f"gantry-net-{token}"
    root.mkdir()
    subnet = free_subnet()
    config = NetworkConfig(
        root=root,
        config_dirs=(root / "cni-conf",),
        default_network=f"dflt-{token}",
        default_bridge=f"gdef{token}",
        default_subnet=subnet,
        subnet_pool="10.199.0.0/16",
        bridge_prefix=f"gu{token}",
        nft_table=f"gantry_{token}",
    )
    env = NetEnv(root, token, config, NetworkManager(config), subnets=[subnet])
    try:
        yield env
    finally:
        env.close()
