"""Containers outlive the agent: ``kill -9`` of ``gantry agent serve`` while containers run,
exits while it is down, restart policies applied at start-up, and a crash's debris
removed — a real agent process, real containers, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import agent_support as ags
import pytest
import rootfs_support as rs
from gantry.runtime.defaults import default_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
LOOP = (
    "trap 'exit 143' TERM; while [ ! -e /tmp/stop-$NAME ]; do sleep 0.05; done; "
    "rm /tmp/stop-$NAME; exit $CODE"
)


def looping(rootfs: Path, name: str, code: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "rootfs": str(rootfs),
        "command": ["sh", "-c", LOOP],
        "env": {"NAME": name, "CODE": str(code)},
        **extra,
    }


def events(agent: ags.Agent) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in b"".join(agent.client.stream("GET", "/v1/events")).splitlines()
    ]


def test_kill_9_of_the_agent_leaves_containers_running_and_restart_reconciles(
    no_leftovers: None,
) -> None:
    with ags.running_agent() as (agent, rootfs):
        names = [f"svc{i}" for i in range(10)]
        for name in names:
            agent.put(name, looping(rootfs, name))
        agent.put("exits", looping(rootfs, "exits", code=7))
        agent.put("phoenix", looping(rootfs, "phoenix", code=1, restart_policy="always"))
        agent.put("quiet", looping(rootfs, "quiet", code=1))  # restart policy "no"
        pids = {row["name"]: row["pid"] for row in agent.req("GET", "/v1/containers")}
        assert all(pids.values()) and len(pids) == 13

        agent.kill9()
        assert all(ags.pid_alive(pid) for pid in pids.values())
        # Exits while nobody watches: the shim records them.
        for name in ("exits", "phoenix", "quiet"):
            (rootfs / "tmp" / f"stop-{name}").touch()
        for name in ("exits", "phoenix", "quiet"):
            ags.wait_for(lambda name=name: not ags.pid_alive(pids[name]), what=f"{name} to exit")
        assert all(ags.pid_alive(pids[name]) for name in names)

        agent.start()
        rows = {row["name"]: row for row in agent.req("GET", "/v1/containers")}
        for name in names:
            assert rows[name]["status"] == "running" and rows[name]["pid"] == pids[name]
        assert (rows["exits"]["status"], rows["exits"]["exit_code"]) == ("stopped", 7)
        assert (rows["quiet"]["status"], rows["quiet"]["exit_code"]) == ("stopped", 1)
        phoenix = ags.wait_for(
            lambda: (
                (c := agent.req("GET", "/v1/containers/phoenix"))["state"]["status"] == "running"
                and c
            ),
            what="the restart: always container to run again",
        )
        assert phoenix["state"]["restart_count"] == 1 and phoenix["state"]["pid"] != pids["phoenix"]
        seen = events(agent)
        adopted = {e["container"] for e in seen if e["action"] == "adopt"}
        assert adopted == set(names)
        down = {
            e["container"]: e["attributes"]["exit_code"]
            for e in seen
            if e["action"] == "exit_while_down"
        }
        assert down == {"exits": 7, "phoenix": 1, "quiet": 1}

        # The re-adopted containers are watched again: an exit now is seen at once.
        (rootfs / "tmp" / "stop-svc0").touch()
        assert agent.req("POST", "/v1/containers/svc0/wait", body={"timeout": 60})["exit_code"] == 0


def test_a_crash_mid_create_leaves_no_debris(no_leftovers: None, tmp_path: Path) -> None:
    with ags.running_agent() as (agent, rootfs):
        agent.put("kept", looping(rootfs, "kept"))
        kept_pid = agent.req("GET", "/v1/containers/kept")["state"]["pid"]
        agent.kill9()
        # What a crash between the steps of a create can leave: a staged bundle in tmp/,
        # a bundle whose database row was never committed, and a runtime container
        # (an init waiting for its start) that no row owns.
        staged = agent.root / "tmp" / "0123abcd"
        staged.mkdir()
        (staged / "config.json").write_text("{}")
        orphan_bundle = agent.root / "containers" / "deadbeefdeadbeefdeadbeefdeadbeef"
        orphan_bundle.mkdir()
        (orphan_bundle / "config.json").write_text("{}")
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        config = default_config(["sleep", "1000"], str(rootfs))
        parent = agent.extra[agent.extra.index("--cgroup-parent") + 1]
        config["linux"]["cgroupsPath"] = f"{parent}/orphan"
        (bundle / "config.json").write_text(json.dumps(config))
        subprocess.run(
            [
                str(RUNTIME),
                "--root",
                str(agent.root / "runtime"),
                "create",
                "--bundle",
                str(bundle),
                "orphan",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        orphan_pid = json.loads((agent.root / "runtime" / "orphan" / "state.json").read_text())[
            "pid"
        ]
        assert ags.pid_alive(orphan_pid)

        agent.start()
        assert list((agent.root / "tmp").iterdir()) == []
        assert not orphan_bundle.exists()
        assert not (agent.root / "runtime" / "orphan").exists()
        assert not ags.pid_alive(orphan_pid)
        assert [row["name"] for row in agent.req("GET", "/v1/containers")] == ["kept"]
        assert agent.req("GET", "/v1/containers/kept")["state"]["pid"] == kept_pid


def test_sigterm_stops_the_agent_gracefully_and_containers_keep_running(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        agent.put("stays", looping(rootfs, "stays"))
        pid = agent.req("GET", "/v1/containers/stays")["state"]["pid"]
        assert agent.stop() == 0
        assert not agent.socket.exists()
        assert ags.pid_alive(pid)
        agent.start()
        assert agent.req("GET", "/v1/containers/stays")["state"]["pid"] == pid


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def _shim_pid(agent: ags.Agent, name: str) -> int:
    container_id = agent.req("GET", f"/v1/containers/{name}")["id"]
    state = json.loads((agent.root / "runtime" / container_id / "state.json").read_text())
    return int(state["shim_pid"])


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    ags.wait_for(lambda: not ags.pid_alive(pid), what=f"pid {pid} to die")


def test_containers_come_from_the_launcher_and_outlive_it_and_the_agent(
    no_leftovers: None,
) -> None:
    with ags.running_agent() as (agent, rootfs):
        launcher = agent.req("GET", "/v1/info")["launcher"]
        assert launcher["mode"] == "launcher" and launcher["restarts"] == 0
        first = launcher["pid"]
        cmdline = Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0")
        assert b"gantry.runtime.launcher" in cmdline
        assert agent.process is not None and _parent(first) == agent.process.pid
        agent.put("a", looping(rootfs, "a"))
        # The launcher forked the supervisor, which became the shim: its child.
        assert _parent(_shim_pid(agent, "a")) == first
        pid_a = agent.req("GET", "/v1/containers/a")["state"]["pid"]

        # A launcher killed under the agent: the next create gets a new one.
        _kill9(first)
        assert ags.pid_alive(pid_a)
        agent.put("b", looping(rootfs, "b"))
        launcher = agent.req("GET", "/v1/info")["launcher"]
        assert launcher["mode"] == "launcher" and launcher["restarts"] == 1
        second = launcher["pid"]
        assert second != first and _parent(_shim_pid(agent, "b")) == second
        pid_b = agent.req("GET", "/v1/containers/b")["state"]["pid"]
        shims = [_shim_pid(agent, "a"), _shim_pid(agent, "b")]

        # kill -9 of both: every container and its shim goes on.
        _kill9(second)
        agent.kill9()
        assert all(ags.pid_alive(pid) for pid in (pid_a, pid_b, *shims))
        (rootfs / "tmp" / "stop-b").touch()  # an exit while nobody watches
        ags.wait_for(lambda: not ags.pid_alive(pid_b), what="b to exit")

        agent.start()
        rows = {row["name"]: row for row in agent.req("GET", "/v1/containers")}
        assert (rows["a"]["status"], rows["a"]["pid"]) == ("running", pid_a)
        assert (rows["b"]["status"], rows["b"]["exit_code"]) == ("stopped", 0)
        third = agent.req("GET", "/v1/info")["launcher"]["pid"]
        assert third not in (None, first, second)
        # The re-adopted container is watched; new ones come from the new launcher.
        (rootfs / "tmp" / "stop-a").touch()
        assert agent.req("POST", "/v1/containers/a/wait", body={"timeout": 60})["exit_code"] == 0
        agent.put("c", looping(rootfs, "c"))
        assert _parent(_shim_pid(agent, "c")) == third


def _parent_dirs(agent: ags.Agent) -> list[Path]:
    parent = agent.extra[agent.extra.index("--cgroup-parent") + 1].lstrip("/")
    return [
        hierarchy / parent
        for hierarchy in Path("/sys/fs/cgroup").iterdir()
        if (hierarchy / parent).is_dir()
    ]


def test_the_agent_removes_its_empty_cgroup_parent_on_shutdown(no_leftovers: None) -> None:
    with ags.running_agent() as (agent, rootfs):
        agent.put("stays", looping(rootfs, "stays"))
        pid = agent.req("GET", "/v1/containers/stays")["state"]["pid"]
        assert _parent_dirs(agent)
        # A running container keeps the parent (and keeps running).
        assert agent.stop() == 0
        assert _parent_dirs(agent) and ags.pid_alive(pid)
        agent.start()
        agent.req("DELETE", "/v1/containers/stays", query={"force": "true"})
        assert agent.stop() == 0
        assert _parent_dirs(agent) == []
        agent.start()  # the next container makes it again
        agent.put("again", looping(rootfs, "again"))
        assert _parent_dirs(agent)


def test_health_survives_an_agent_restart(no_leftovers: None) -> None:
    check = {"test": ["CMD-SHELL", "test ! -e /tmp/sick"], "interval": 0.5, "retries": 1}
    with ags.running_agent() as (agent, rootfs):
        agent.put("doc", looping(rootfs, "doc", healthcheck=check))
        (rootfs / "tmp" / "sick").touch()
        before = ags.wait_for(
            lambda: (
                (h := agent.req("GET", "/v1/containers/doc")["state"]["health"])["status"]
                == "unhealthy"
                and h
            ),
            what="unhealthy",
        )
        agent.kill9()
        agent.start()
        after = agent.req("GET", "/v1/containers/doc")["state"]["health"]
        # The same run of the container goes on from what it had: its status, streak and
        # the results of checks made before the restart (an agent keeping health only in
        # memory would answer "starting" with an empty log).
        assert after["status"] == "unhealthy"
        assert after["failing_streak"] >= before["failing_streak"]
        assert before["log"][-1] in after["log"]
        # A new run starts afresh.
        (rootfs / "tmp" / "sick").unlink()
        agent.req("POST", "/v1/containers/doc/restart", body={"timeout": 5})
        assert (
            before["log"][-1]
            not in agent.req("GET", "/v1/containers/doc")["state"]["health"]["log"]
        )


def test_a_recreate_whose_new_container_cannot_start_says_what_it_left(
    no_leftovers: None,
) -> None:
    with ags.running_agent() as (agent, rootfs):
        agent.put("svc", looping(rootfs, "svc"))
        old = agent.req("GET", "/v1/containers/svc")
        broken = {**looping(rootfs, "svc"), "command": ["/no/such/program"]}
        failed = agent.error("PUT", "/v1/containers/svc", body={"state": "running", "spec": broken})
        assert failed.status == 422 and failed.field == "spec.command"
        assert "recreated" in failed.detail and "old one is removed" in failed.detail
        # As docker-compose: the old container is gone, the new one is there, created.
        assert not ags.pid_alive(old["state"]["pid"])
        now = agent.req("GET", "/v1/containers/svc")
        assert now["id"] != old["id"] and now["state"]["status"] == "created"
        assert now["spec"]["command"] == ["/no/such/program"]
        # Fixing the spec converges again.
        assert agent.put("svc", looping(rootfs, "svc"))["container"]["state"]["running"]
