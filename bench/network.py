"""Benchmark: what a bridge network adds to a container's start, against network mode none.

Times N rounds of ``NetworkManager.attach`` + ``detach`` (the network part of a container's
start and stop) for mode ``none`` (a pinned namespace with ``lo`` up: the anchor), mode
``bridge`` on the default network (veth, host-local IPAM, masquerade, firewall plugin) and
``bridge`` with one published port (portmap), interleaved in the same run so machine drift
hits every mode alike. Prints medians and each mode's ratio to ``none``. Needs root and
containernetworking-plugins; uses its own root, bridge, subnet and nftables table and
removes them. Not a test: it asserts nothing.

With ``--agent`` it measures the same three modes through a real agent instead: create +
start (``POST /v1/containers`` with ``start``) of a busybox ``sleep``, then remove
(``DELETE ?force``), on the agent's unix socket, mode ``none`` the anchor again.

    .venv/bin/python bench/network.py [--runs N] [--agent]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gantry.network import AttachRequest, NetworkConfig, NetworkManager, parse_ports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="rounds per mode (default 30)")
    parser.add_argument("--subnet", default="10.254.77.0/24", help="the bench network's subnet")
    parser.add_argument("--agent", action="store_true", help="through a real agent's API")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    if args.agent:
        return through_agent(args.runs)
    token = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="gantry-bench-net-"))
    config = NetworkConfig(
        root=root,
        config_dirs=(),
        default_network=f"bench-{token}",
        default_bridge=f"gbench{token}",
        default_subnet=args.subnet,
        nft_table=f"gantry_bench_{token}",
    )
    manager = NetworkManager(config)
    modes = {
        "none": {"mode": "none"},
        "bridge": {},
        "bridge -p 127.0.0.1::80": {"ports": tuple(parse_ports(["127.0.0.1::80"]))},
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    try:
        manager.ensure_default()
        for round_ in range(args.runs + 1):
            for name, kwargs in modes.items():
                cid = f"bench-{token}-{round_}"
                started = time.perf_counter()
                manager.attach(AttachRequest(cid, name="bench", **kwargs))  # type: ignore[arg-type]
                manager.detach(cid)
                if round_:  # the first round warms caches and creates the bridge
                    times[name].append(time.perf_counter() - started)
    finally:
        for att in manager.attachments():
            manager.detach(att.container_id)
        manager.remove_network(config.default_network, allow_default=True)
        shutil.rmtree(root, ignore_errors=True)
    anchor = statistics.median(times["none"])
    print(f"attach+detach, median of {args.runs} rounds each")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:26s} {median * 1000:8.1f} ms   ratio to none: {median / anchor:5.2f}")
    return 0


def through_agent(runs: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/agent/integration"))
    import agent_support as ags

    modes: dict[str, dict[str, object]] = {
        "none": {"network": {"mode": "none"}},
        "bridge": {},
        "bridge -p 127.0.0.1::80": {"ports": ["127.0.0.1::80"]},
    }
    start: dict[str, list[float]] = {name: [] for name in modes}
    remove: dict[str, list[float]] = {name: [] for name in modes}
    with ags.running_agent() as (agent, rootfs):
        for round_ in range(runs + 1):
            for index, (name, fields) in enumerate(modes.items()):
                spec = {"rootfs": str(rootfs), "command": ["sleep", "600"], **fields}
                body = {"name": f"bench-{round_}-{index}", "spec": spec, "start": True}
                started = time.perf_counter()
                agent.req("POST", "/v1/containers", body=body)
                running = time.perf_counter()
                agent.req("DELETE", f"/v1/containers/{body['name']}", query={"force": "true"})
                done = time.perf_counter()
                if round_:  # the first round creates the bridge
                    start[name].append(running - started)
                    remove[name].append(done - running)
    anchor_start = statistics.median(start["none"])
    anchor_remove = statistics.median(remove["none"])
    print(f"through the agent (HTTP, unix socket), median of {runs} rounds each")
    for name in modes:
        up, down = statistics.median(start[name]), statistics.median(remove[name])
        print(
            f"  {name:26s} create+start {up * 1000:7.1f} ms ({up / anchor_start:4.2f} x none)"
            f"   rm -f {down * 1000:7.1f} ms ({down / anchor_remove:4.2f} x none)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
