"""The `gantry` client verbs against a real agent on its unix socket (GANTRY_URL)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import agent_support as ags
import pytest
import rootfs_support as rs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

GANTRY = Path(sys.executable).parent / "gantry"


def gantry(agent: ags.Agent, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GANTRY_URL": f"unix://{agent.socket}"}
    return subprocess.run(
        [str(GANTRY), *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def test_client_verbs(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        done = gantry(agent, "run", "--rm", "--rootfs", str(rootfs), "-e", "WHO=world",
                      "sh", "-c", "echo hello $WHO; echo oops >&2; exit 3")  # fmt: skip
        assert done.returncode == 3
        assert done.stdout == "hello world\noops\n"
        assert agent.req("GET", "/v1/containers") == []

        loop = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.05; done"
        done = gantry(agent, "run", "-d", "--name", "web", "--rootfs", str(rootfs), "-m", "64m",
                      "-l", "tier=web", "--restart", "always", "sh", "-c", loop)  # fmt: skip
        assert done.returncode == 0, done.stderr
        container_id = done.stdout.strip()
        assert agent.req("GET", "/v1/containers/web")["id"] == container_id

        listed = json.loads(gantry(agent, "ps", "--json").stdout)
        assert [row["name"] for row in listed] == ["web"]
        assert gantry(agent, "ps", "-q").stdout.strip() == container_id[:12]
        inspect = json.loads(gantry(agent, "inspect", "web").stdout)
        assert inspect[0]["spec"]["resources"]["memory"] == 64 << 20
        assert inspect[0]["spec"]["restart_policy"] == {"name": "always", "max_retries": 0}
        assert ags.pid_alive(inspect[0]["state"]["pid"])
        assert gantry(agent, "logs", "-n", "1", "web").stdout == "tick\n"
        stats = json.loads(gantry(agent, "stats", "--json", "web").stdout)[0]
        assert stats["memory"]["usage"]["limit"] == 64 << 20 and stats["pids"]["current"] >= 1
        assert stats["cpu"]["usage"]["total"] > 0
        assert "web" in gantry(agent, "stats").stdout
        ran = gantry(agent, "exec", "-e", "X=1", "web", "sh", "-c", "echo $X; exit 4")
        assert (ran.returncode, ran.stdout) == (4, "1\n")
        env = {**os.environ, "GANTRY_URL": f"unix://{agent.socket}"}
        piped = subprocess.run(
            [str(GANTRY), "exec", "-i", "web", "sh", "-c", "cat; echo e >&2; exit 6"],
            input="through stdin\n",
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert (piped.returncode, piped.stdout, piped.stderr) == (6, "through stdin\n", "e\n")
        if shutil.which("script"):
            # -t needs a terminal: `script` gives the client one.
            line = f"{GANTRY} exec -it web sh -c 'tty; exit 3'"
            on_tty = subprocess.run(
                ["script", "-qec", line, "/dev/null"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            assert on_tty.returncode == 3 and "/dev/pts/" in on_tty.stdout, on_tty

        assert gantry(agent, "pause", "web").returncode == 0
        assert json.loads(gantry(agent, "inspect", "web").stdout)[0]["state"]["status"] == "paused"
        assert gantry(agent, "unpause", "web").returncode == 0
        assert gantry(agent, "stop", "-t", "5", "web").returncode == 0
        assert gantry(agent, "ps").stdout.count("\n") == 1  # the header only
        assert "web" in gantry(agent, "ps", "-a").stdout
        assert gantry(agent, "wait", "web").stdout.strip() == "0"

        refused = gantry(agent, "rm", "nothere")
        assert refused.returncode == 1 and "no container named 'nothere'" in refused.stderr
        bad = gantry(agent, "run", "--rootfs", str(rootfs), "-m", "lots", "true")
        assert bad.returncode == 125 and "spec.resources.memory" in bad.stderr
        image = gantry(agent, "run", "--pull", "never", "alpine:3", "true")
        assert image.returncode == 125 and "spec.image: no such image" in image.stderr
        assert gantry(agent, "rm", "web").returncode == 0
        assert agent.req("GET", "/v1/containers") == []


def test_client_without_an_agent_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "GANTRY_URL": f"unix://{tmp_path}/none.sock"}
    done = subprocess.run([str(GANTRY), "ps"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 125
    assert "cannot reach the agent" in done.stderr and "Traceback" not in done.stderr
