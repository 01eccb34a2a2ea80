"""Benchmark: the agent's HTTP API against its anchors, measured in the same run.

1. create + start + wait + remove of ``/bin/true`` through HTTP on the unix socket
   (``POST /v1/containers`` with ``start``, ``POST …/wait``, ``DELETE``), beside
   ``runc run`` of the very bundle the agent wrote for that container (its config.json,
   with the rootfs and cgroup path made runc's own). Interleaved, N times each.
2. ``GET /v1/containers`` with 200 running containers, beside ``GET /livez`` (the HTTP
   floor of the same agent, same socket, same client).

Printed: median and p95 of each, and each one's ratio to its anchor's median. Not a test:
it asserts nothing.

    .venv/bin/python bench/api.py [--runs N] [--containers 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent" / "integration"))

import agent_support as ags

RUNC = shutil.which("runc")
# runc's bundle has a network namespace with lo only: the agent's containers get the same
# (bench/network.py measures what a bridge network adds).
NO_NETWORK = {"mode": "none"}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_quietly(command: list[str]) -> None:
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def report(name: str, samples: list[float], anchor: float | None) -> None:
    median = statistics.median(samples)
    ratio = f"  {median / anchor:5.2f} x anchor" if anchor else ""
    print(
        f"{name:<44} median {median * 1000:8.2f} ms  "
        f"p95 {percentile(samples, 0.95) * 1000:8.2f} ms{ratio}"
    )


def runc_bundle(agent: ags.Agent, rootfs: Path, scratch: Path) -> Path:
    """The agent's own config.json for a /bin/true container, made runc's."""
    made = agent.req(
        "POST",
        "/v1/containers",
        body={
            "name": "template",
            "spec": {"rootfs": str(rootfs), "command": ["/bin/true"], "network": NO_NETWORK},
        },
    )
    config = json.loads((Path(made["paths"]["bundle"]) / "config.json").read_text())
    agent.req("DELETE", "/v1/containers/template")
    config["linux"]["cgroupsPath"] = "/gantry-bench-runc/run"
    config["annotations"] = {}
    bundle = scratch / "runc-bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--containers", type=int, default=200)
    args = parser.parse_args()
    with ags.running_agent() as (agent, rootfs):
        scratch = Path(tempfile.mkdtemp(prefix="gantry-bench-api-"))
        try:
            bundle = runc_bundle(agent, rootfs, scratch) if RUNC else None
            http_runs: list[float] = []
            runc_runs: list[float] = []
            spec = {"rootfs": str(rootfs), "command": ["/bin/true"], "network": NO_NETWORK}
            for index in range(args.runs):
                name = f"b{index}"

                def through_http(name: str = name) -> None:
                    agent.req(
                        "POST", "/v1/containers", body={"name": name, "spec": spec, "start": True}
                    )
                    agent.req("POST", f"/v1/containers/{name}/wait", body={})
                    agent.req("DELETE", f"/v1/containers/{name}")

                http_runs.append(timed(through_http))
                if bundle is not None:
                    command = [
                        RUNC,
                        "--root",
                        str(scratch / "runc-root"),
                        "run",
                        "--bundle",
                        str(bundle),
                        f"r{index}",
                    ]
                    runc_runs.append(
                        timed(
                            lambda c=command: subprocess.run(
                                c, check=True, stdin=subprocess.DEVNULL, capture_output=True
                            )
                        )
                    )
            anchor = statistics.median(runc_runs) if runc_runs else None
            print(f"create+start+wait+remove of /bin/true, {args.runs} runs each, interleaved")
            if runc_runs:
                report("runc run (anchor)", runc_runs, None)
            else:
                print("runc not found: no anchor for the run")
            report("agent over HTTP (unix socket)", http_runs, anchor)

            loop = {
                "rootfs": str(rootfs),
                "network": NO_NETWORK,
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            }
            for index in range(args.containers):
                agent.req(
                    "POST",
                    "/v1/containers",
                    body={"name": f"l{index:03d}", "spec": loop, "start": True},
                )
            lists = []
            livez = []
            for _round in range(args.runs):
                livez.append(timed(lambda: agent.req("GET", "/livez")))
                lists.append(timed(lambda: agent.req("GET", "/v1/containers")))
            print(
                f"\nGET /v1/containers with {args.containers} running containers, "
                f"{args.runs} runs each"
            )
            report("GET /livez (anchor)", livez, None)
            report(f"GET /v1/containers ({args.containers})", lists, statistics.median(livez))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            ags.remove_cgroup_parent("/gantry-bench-runc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
