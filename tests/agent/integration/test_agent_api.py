"""The agent over its real unix socket: health, desired state, the imperative verbs, logs,
files, events, bad input — a real ``gantry agent serve`` process and real containers."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import agent_support as ags
import pytest
import rootfs_support as rs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]


@pytest.fixture
def agent(no_leftovers: None) -> Any:
    with ags.running_agent() as (running, rootfs):
        running.rootfs = rootfs  # type: ignore[attr-defined]
        yield running


def spec(agent: ags.Agent, *command: str, **extra: Any) -> dict[str, Any]:
    return {"rootfs": str(agent.rootfs), "command": list(command), **extra}  # type: ignore[attr-defined]


LOOP = "trap 'exit 143' TERM; while [ ! -e /tmp/stop-$NAME ]; do sleep 0.05; done; exit ${CODE:-0}"


def looping(agent: ags.Agent, name: str, code: int = 0, **extra: Any) -> dict[str, Any]:
    """A container that runs until the test creates /tmp/stop-<name> in the rootfs."""
    return spec(agent, "sh", "-c", LOOP, env={"NAME": name, "CODE": str(code)}, **extra)


def release(agent: ags.Agent, name: str) -> None:
    (agent.rootfs / "tmp" / f"stop-{name}").touch()  # type: ignore[attr-defined]


# --- serving -------------------------------------------------------------------------------


def test_socket_is_root_only_and_health_routes_answer(agent: ags.Agent) -> None:
    mode = agent.socket.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) in (0o600, 0o660)
    assert agent.req("GET", "/livez") == {"status": "ok"}
    ready = agent.req("GET", "/readyz")
    assert ready["status"] == "ok" and set(ready["checks"]) == {"database", "cgroups", "root"}
    schema = agent.req("GET", "/openapi.json")
    assert "/v1/containers/{name}" in schema["paths"]
    info = agent.req("GET", "/v1/info")
    assert info["kernel"]["release"] == os.uname().release
    assert info["cgroup"]["layout"] in ("v1", "v2", "hybrid")
    assert info["capacity"]["cpus"] == os.cpu_count()
    assert info["containers"]["total"] == 0


def test_metrics_name_each_running_container(agent: ags.Agent) -> None:
    agent.put("m1", looping(agent, "m1"))
    container_id = agent.req("GET", "/v1/containers/m1")["id"]
    text = b"".join(agent.client.stream("GET", "/metrics")).decode()
    assert f'container_start_time_seconds{{name="m1",id="{container_id}"}}' in text
    assert f'container_processes{{name="m1",id="{container_id}"}}' in text
    assert f'container_memory_usage_bytes{{name="m1",id="{container_id}"}}' in text
    assert f'container_cpu_usage_seconds_total{{name="m1",id="{container_id}"}}' in text
    assert 'gantry_containers{status="running"} 1' in text
    assert "gantry_build_info{" in text


# --- desired state -------------------------------------------------------------------------


def test_put_converges_and_answers_changed_actions_diff(agent: ags.Agent) -> None:
    wanted = looping(agent, "web", resources={"memory": "64m"}, labels={"tier": "web"})
    first = agent.put("web", wanted)
    assert first["changed"] is True
    assert first["actions"] == ["create", "start"]
    assert first["diff"]["before"] is None
    assert first["container"]["state"]["status"] == "running"
    pid = first["container"]["state"]["pid"]
    assert ags.pid_alive(pid)

    # The same meaning, spelt differently: nothing to do.
    same = dict(wanted, resources={"memory": 64 * 1024 * 1024}, env=["NAME=web", "CODE=0"])
    again = agent.put("web", same)
    assert again == {**again, "changed": False, "actions": []}
    assert again["container"]["state"]["pid"] == pid

    # A dry run of a command change says "recreate" and changes nothing.
    changed = dict(wanted, command=["sh", "-c", LOOP + " # v2"])
    dry = agent.put("web", changed, dry_run=True)
    assert dry["changed"] is True and dry["actions"] == ["recreate", "start"]
    assert dry["diff"]["fields"] == ["spec.command"]
    assert dry["diff"]["before"]["spec"]["command"] == wanted["command"]
    assert dry["diff"]["after"]["spec"]["command"] == changed["command"]
    now = agent.req("GET", "/v1/containers/web")
    assert now["state"]["pid"] == pid and now["spec"]["command"] == wanted["command"]

    # Labels change in place: same container, same process.
    relabelled = dict(wanted, labels={"tier": "front"})
    update = agent.put("web", relabelled)
    assert update["actions"] == ["update"]
    assert update["diff"]["fields"] == ["spec.labels"]
    assert update["container"]["id"] == first["container"]["id"]
    assert update["container"]["state"]["pid"] == pid

    # stopped, then present (nothing), then running again.
    stopped = agent.put("web", relabelled, state="stopped")
    assert stopped["actions"] == ["stop"] and stopped["diff"]["fields"] == ["state"]
    assert not ags.pid_alive(pid)
    assert agent.put("web", relabelled, state="present")["changed"] is False
    assert agent.put("web", relabelled, state="running")["actions"] == ["start"]

    # A real command change recreates: a new id, the new command runs.
    recreated = agent.put("web", dict(changed, labels={"tier": "front"}))
    assert recreated["actions"] == ["recreate", "start"]
    assert recreated["container"]["id"] != first["container"]["id"]
    assert recreated["container"]["spec"]["command"] == changed["command"]


def _memory_limit(container: dict[str, Any]) -> int:
    for hierarchy in ("memory", "unified"):
        directory = Path("/sys/fs/cgroup", hierarchy, container["cgroup"].lstrip("/"))
        for name in ("memory.limit_in_bytes", "memory.max"):
            if (directory / name).exists():
                return int((directory / name).read_text())
    raise AssertionError(f"no memory limit file for {container['cgroup']}")


def test_limits_are_applied_and_change_in_place(agent: ags.Agent) -> None:
    first = agent.put("lim", looping(agent, "lim", resources={"memory": "64m", "pids_limit": 50}))
    assert _memory_limit(first["container"]) == 64 << 20
    dry = agent.put(
        "lim", looping(agent, "lim", resources={"memory": "128m", "pids_limit": 50}), dry_run=True
    )
    assert dry["actions"] == ["update"] and dry["diff"]["fields"] == ["spec.resources.memory"]
    assert _memory_limit(first["container"]) == 64 << 20
    changed = agent.put(
        "lim", looping(agent, "lim", resources={"memory": "128m", "pids_limit": 50})
    )
    assert changed["actions"] == ["update"]
    assert changed["container"]["state"]["pid"] == first["container"]["state"]["pid"]
    assert _memory_limit(changed["container"]) == 128 << 20
    # A limit the host cannot honour names the field and changes nothing.
    bad = agent.error(
        "PUT",
        "/v1/containers/lim",
        body={
            "spec": looping(
                agent, "lim", resources={"memory": "128m", "pids_limit": 50, "cpuset_cpus": "4000"}
            )
        },
    )
    assert bad.status == 422 and bad.field is not None and bad.field.startswith("spec.resources")
    assert agent.req("GET", "/v1/containers/lim")["spec"]["resources"]["cpuset_cpus"] is None


def test_put_stopped_creates_without_starting(agent: ags.Agent) -> None:
    result = agent.put("idle", looping(agent, "idle"), state="stopped")
    assert result["actions"] == ["create"]
    assert result["container"]["state"]["status"] == "created"
    assert result["container"]["state"]["pid"] is None


BAD_REQUESTS: list[tuple[dict[str, Any] | str, int, str]] = [
    ({"state": "running", "spec": {"command": ["true"]}}, 422, "spec.rootfs"),
    ({"state": "gone", "spec": {}}, 422, "state"),
    ({"spec": {"rootfs": "ROOTFS", "command": "sh -c true"}}, 422, "spec.command"),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "resources": {"memory": "12q"}}},
        422,
        "spec.resources.memory",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "resources": {"memory": 4096}}},
        422,
        "spec.resources.memory",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "resources": {"cpus": -1}}},
        422,
        "spec.resources.cpus",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "restart_policy": "sometimes"}},
        422,
        "spec.restart_policy",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "capabilities": {"add": ["CAP_NOPE"]}}},
        422,
        "spec.capabilities.add[0]",
    ),
    (
        {
            "spec": {
                "rootfs": "ROOTFS",
                "command": ["true"],
                "mounts": [{"type": "bind", "source": "/nonexistent-gantry", "target": "/x"}],
            }
        },
        422,
        "spec.mounts[0].source",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "stop_signal": "SIGNOPE"}},
        422,
        "spec.stop_signal",
    ),
    ({"spec": {"rootfs": "ROOTFS", "command": ["true"], "colour": "blue"}}, 422, "spec.colour"),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "network": {"mode": "nat"}}},
        422,
        "spec.network.mode",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "ports": ["80:80:80:80"]}},
        422,
        "spec.ports[0]",
    ),
    (
        {"spec": {"rootfs": "ROOTFS", "command": ["true"], "network": {"networks": ["nope"]}}},
        422,
        "spec.network.networks",
    ),
    ({"spec": {"image": "alpine:3", "command": ["true"]}, "pull": "never"}, 422, "spec.image"),
    ({"spec": {"image": "alpine:3"}, "pull": "sometimes"}, 422, "pull"),
    ({"spec": {"image": "", "command": ["true"]}}, 422, "spec.image"),
    ({"spec": {"rootfs": "ROOTFS", "command": ["true"]}, "dry_run": "yes"}, 422, "dry_run"),
    ({"spec": {"rootfs": "ROOTFS", "command": ["true"]}, "surprise": 1}, 422, "surprise"),
    ({"spec": {"rootfs": "ROOTFS", "command": ["/bin/nonexistent"]}}, 422, "spec.command"),
    ("[1, 2", 400, "body"),
    ("[1, 2]", 400, "body"),
]


def test_bad_input_is_4xx_naming_the_field_and_changes_nothing(agent: ags.Agent) -> None:
    agent.put("keep", looping(agent, "keep"))
    before = agent.req("GET", "/v1/containers")
    events_before = b"".join(agent.client.stream("GET", "/v1/events"))
    for body, status, field in BAD_REQUESTS:
        if isinstance(body, str):
            error = _raw_error(agent, "PUT", "/v1/containers/newone", body)
        else:
            text = json.dumps(body).replace("ROOTFS", str(agent.rootfs))  # type: ignore[attr-defined]
            error = agent.error("PUT", "/v1/containers/newone", body=json.loads(text))
        assert (error.status, error.field) == (status, field), body
        last = field.rsplit(".", maxsplit=1)[-1].split("[", maxsplit=1)[0]
        assert last in error.detail or status == 400, error.detail
    # Bad input to the existing container, and bad verbs, do not touch it either.
    assert (
        agent.error("PUT", "/v1/containers/keep", body={"spec": {"rootfs": "/nonexistent"}}).field
        == "spec.rootfs"
    )
    assert agent.error("PUT", "/v1/containers/-bad", body={"spec": {}}).field == "name"
    assert agent.error("POST", "/v1/containers/keep/stop", body={"timeout": -1}).field == "timeout"
    assert (
        agent.error("POST", "/v1/containers/keep/kill", body={"signal": "SIGWHAT"}).field
        == "signal"
    )
    assert (
        agent.error("GET", "/v1/containers", query={"status": "asleep"}).field == "query.status[0]"
    )
    assert agent.error("GET", "/v1/containers/keep/logs", query={"tail": "x"}).field == "query.tail"
    missing = agent.error("POST", "/v1/containers/nothere/start")
    assert (missing.status, missing.field) == (404, "name")
    conflict = agent.error("DELETE", "/v1/containers/keep")
    assert (conflict.status, conflict.field) == (409, "force")
    assert agent.req("GET", "/v1/containers") == before
    assert b"".join(agent.client.stream("GET", "/v1/events")) == events_before


def _raw_error(agent: ags.Agent, method: str, path: str, body: str) -> Any:
    import http.client
    import socket as socket_module

    sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    sock.connect(str(agent.socket))
    connection = http.client.HTTPConnection("localhost")
    connection.sock = sock
    connection.request(
        method, path, body=body.encode(), headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return ags.AgentError(response.status, payload["detail"], payload["field"])


# --- imperative verbs ------------------------------------------------------------------------


def test_imperative_lifecycle(agent: ags.Agent) -> None:
    created = agent.req(
        "POST", "/v1/containers", body={"name": "job", "spec": looping(agent, "job", code=3)}
    )
    assert created["state"]["status"] == "created"
    assert (
        agent.error(
            "POST", "/v1/containers", body={"name": "job", "spec": looping(agent, "job")}
        ).status
        == 409
    )
    started = agent.req("POST", "/v1/containers/job/start")
    assert started["changed"] is True and started["container"]["state"]["running"]
    assert agent.req("POST", "/v1/containers/job/start")["changed"] is False
    assert agent.req("POST", "/v1/containers/job/pause") == {"changed": True}
    assert agent.req("GET", "/v1/containers/job")["state"]["status"] == "paused"
    assert [c["name"] for c in agent.req("GET", "/v1/containers", query={"status": "paused"})] == [
        "job"
    ]
    assert agent.req("POST", "/v1/containers/job/unpause") == {"changed": True}
    release(agent, "job")
    waited = agent.req("POST", "/v1/containers/job/wait", body={"timeout": 60})
    assert waited == {"exit_code": 3, "timed_out": False, "status": "stopped"}
    inspect = agent.req("GET", "/v1/containers/job")
    assert inspect["state"]["exit_code"] == 3 and inspect["state"]["pid"] is None
    assert agent.error("POST", "/v1/containers/job/kill").status == 409
    agent.req("DELETE", "/v1/containers/job")
    assert agent.error("GET", "/v1/containers/job").status == 404


def test_stop_sends_the_stop_signal_then_kill(agent: ags.Agent) -> None:
    # The shell as pid 1 ignores SIGTERM: stop must fall back to SIGKILL after the timeout.
    agent.put("deaf", spec(agent, "sh", "-c", "while true; do sleep 0.05; done", stop_timeout=0.5))
    stopped = agent.req("POST", "/v1/containers/deaf/stop")
    assert stopped["changed"] is True and stopped["exit_code"] == 137
    # A container that handles its stop signal exits with its own code.
    polite = "trap 'exit 42' USR1; while true; do sleep 0.05; done"
    agent.put("polite", spec(agent, "sh", "-c", polite, stop_signal="USR1", stop_timeout=60))
    assert agent.req("POST", "/v1/containers/polite/stop")["exit_code"] == 42
    assert agent.req("POST", "/v1/containers/polite/stop")["changed"] is False
    restarted = agent.req("POST", "/v1/containers/polite/restart")
    assert restarted["container"]["state"]["running"]
    assert agent.req("POST", "/v1/containers/polite/kill", body={"signal": "KILL"}) == {
        "changed": True
    }
    assert agent.req("POST", "/v1/containers/polite/wait")["exit_code"] == 137


def test_list_filters(agent: ags.Agent) -> None:
    agent.put("a-web", looping(agent, "a-web", labels={"tier": "web"}))
    agent.put("b-db", looping(agent, "b-db", labels={"tier": "db"}), state="stopped")

    def names(**query: str) -> list[str]:
        return [c["name"] for c in agent.req("GET", "/v1/containers", query=query)]

    assert names() == ["a-web", "b-db"]
    assert names(status="running") == ["a-web"]
    assert names(status="created") == ["b-db"]
    assert names(label="tier=db") == ["b-db"]
    assert names(label="tier") == ["a-web", "b-db"]
    assert names(name="web") == ["a-web"]


def test_restart_policy_on_failure_counts_retries(agent: ags.Agent) -> None:
    agent.put("flaky", spec(agent, "sh", "-c", "exit 5", restart_policy="on-failure:2"))
    final = ags.wait_for(
        lambda: (
            (c := agent.req("GET", "/v1/containers/flaky"))["state"]["restart_count"] == 2
            and c["state"]["status"] == "stopped"
            and c
        ),
        what="two restarts",
    )
    # Stopped for good once its last exit is recorded (wait returns then).
    assert agent.req("POST", "/v1/containers/flaky/wait")["exit_code"] == 5
    final = agent.req("GET", "/v1/containers/flaky")
    assert final["state"]["exit_code"] == 5 and final["state"]["restart_count"] == 2
    actions = [
        json.loads(line)["action"]
        for line in b"".join(agent.client.stream("GET", "/v1/events")).splitlines()
    ]
    assert actions.count("restart") == 2 and actions.count("die") == 3


# --- logs, files, events ---------------------------------------------------------------------


def test_logs_tail_and_follow(agent: ags.Agent) -> None:
    agent.put(
        "talker", spec(agent, "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2")
    )
    agent.req("POST", "/v1/containers/talker/wait")
    everything = b"".join(agent.client.stream("GET", "/v1/containers/talker/logs")).decode()
    assert everything == "line1\nline2\nline3\nline4\nline5\nerr\n"
    tail = b"".join(
        agent.client.stream("GET", "/v1/containers/talker/logs", query={"tail": 2})
    ).decode()
    assert tail == "line5\nerr\n"
    as_json = b"".join(
        agent.client.stream(
            "GET", "/v1/containers/talker/logs", query={"tail": 1, "format": "json"}
        )
    )
    assert json.loads(as_json)["text"] == "err"
    # follow: ends when the container stops, with everything it wrote.
    agent.put("slow", looping(agent, "slow"))
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(
            agent.client.stream("GET", "/v1/containers/slow/logs", query={"follow": True})
        )
    )
    reader.start()
    release(agent, "slow")
    reader.join(timeout=60)
    assert not reader.is_alive()


def test_archive_in_and_out_stays_inside_the_rootfs(agent: ags.Agent, tmp_path: Path) -> None:
    agent.put("files", looping(agent, "files"))
    rootfs: Path = agent.rootfs  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("conf/app.ini", b"[app]\nx=1\n"), ("conf/empty", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
    result = agent.req(
        "PUT", "/v1/containers/files/archive", query={"path": "/tmp"}, raw=buffer.getvalue()
    )
    assert result == {"changed": True, "paths": ["/tmp/conf/app.ini", "/tmp/conf/empty"]}
    assert (rootfs / "tmp/conf/app.ini").read_bytes() == b"[app]\nx=1\n"
    assert stat.S_IMODE((rootfs / "tmp/conf/app.ini").stat().st_mode) == 0o640
    out = b"".join(
        agent.client.stream("GET", "/v1/containers/files/archive", query={"path": "/tmp/conf"})
    )
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert sorted(tar.getnames()) == ["conf", "conf/app.ini", "conf/empty"]
        assert tar.extractfile("conf/app.ini").read() == b"[app]\nx=1\n"  # type: ignore[union-attr]
    # A symlink in the container that points at the host's root resolves inside the rootfs.
    secret = tmp_path / "host-secret"
    secret.write_text("host only")
    (rootfs / "escape").symlink_to("/../../../../../../")
    leaked = agent.error("GET", "/v1/containers/files/archive", query={"path": f"/escape{secret}"})
    assert (leaked.status, leaked.field) == (404, "query.path")
    # A member that climbs out is refused, and nothing is written.
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    refused = agent.error(
        "PUT", "/v1/containers/files/archive", query={"path": "/tmp"}, raw=evil.getvalue()
    )
    assert (refused.status, refused.field) == (422, "body")
    assert not (rootfs.parent / "outside").exists() and not (rootfs / "outside").exists()
    # Writing through a symlink planted in the container lands inside the rootfs.
    (rootfs / "tmp" / "link").symlink_to(str(tmp_path))
    (rootfs / str(tmp_path).lstrip("/")).mkdir(parents=True)
    agent.req(
        "PUT", "/v1/containers/files/archive", query={"path": "/tmp/link"}, raw=buffer.getvalue()
    )
    assert not (tmp_path / "conf").exists()
    assert (rootfs / str(tmp_path).lstrip("/") / "conf/app.ini").exists()


def test_events_resume_from_an_id(agent: ags.Agent) -> None:
    agent.put("ev", spec(agent, "true"))
    agent.req("POST", "/v1/containers/ev/wait")
    events = [
        json.loads(line) for line in b"".join(agent.client.stream("GET", "/v1/events")).splitlines()
    ]
    assert [e["action"] for e in events] == ["create", "start", "die"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    later = [
        json.loads(line)
        for line in b"".join(
            agent.client.stream("GET", "/v1/events", query={"since": events[0]["id"]})
        ).splitlines()
    ]
    assert later == events[1:]
    assert events[2]["attributes"] == {"exit_code": 0}


def test_exec_runs_to_completion_inside_the_container(agent: ags.Agent) -> None:
    agent.put(
        "ex", spec(agent, "sh", "-c", LOOP, env={"NAME": "ex", "CODE": "0", "FROM_SPEC": "yes"})
    )
    assert agent.req("GET", "/v1/info")["features"]["exec"] is True
    script = "echo $FROM_SPEC $EXTRA; pwd; cat; echo to-stderr >&2; exit 3"
    body = {
        "command": ["sh", "-c", script],
        "env": {"EXTRA": "x"},
        "workdir": "/tmp",
        "stdin": "in\n",
    }
    result = agent.req("POST", "/v1/containers/ex/exec", body=body)
    assert result == {**result, "rc": 3, "stdout": "yes x\n/tmp\nin\n", "stderr": "to-stderr\n"}
    # Inside the container: its pid namespace, its seccomp filter, no extra capabilities.
    status = agent.req(
        "POST", "/v1/containers/ex/exec", body={"command": ["cat", "/proc/self/status"]}
    )
    fields = dict(line.split(":\t", 1) for line in status["stdout"].splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2" and fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapBnd"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    one = agent.req("POST", "/v1/containers/ex/exec", body={"command": ["cat", "/proc/1/cmdline"]})
    assert one["stdout"].startswith("sh\x00-c\x00")
    binary = agent.req(
        "POST",
        "/v1/containers/ex/exec",
        body={"command": ["cat"], "stdin": "AAEC", "encoding": "base64"},
    )
    assert binary["stdout"] == "AAEC"
    timed = agent.req(
        "POST", "/v1/containers/ex/exec", body={"command": ["sleep", "30"], "timeout": 0.5}
    )
    assert (timed["rc"], timed["timed_out"]) == (137, True)
    missing = agent.error("POST", "/v1/containers/ex/exec", body={"command": ["/no/such/program"]})
    assert (missing.status, missing.field) == (422, "command")
    assert agent.error("POST", "/v1/containers/ex/exec", body={"command": []}).field == "command"
    agent.req("POST", "/v1/containers/ex/stop")
    assert agent.error("POST", "/v1/containers/ex/exec", body={"command": ["true"]}).status == 409
    assert agent.req("GET", "/v1/images") == []  # images: test_agent_images.py


def test_healthcheck_goes_healthy_then_unhealthy(agent: ags.Agent) -> None:
    check = {
        "test": ["CMD-SHELL", "test ! -e /tmp/sick"],
        "interval": 0.2,
        "timeout": 5,
        "retries": 2,
    }
    agent.put("doc", looping(agent, "doc", healthcheck=check))
    ags.wait_for(
        lambda: agent.req("GET", "/v1/containers/doc")["state"]["health"]["status"] == "healthy",
        what="healthy",
    )
    (agent.rootfs / "tmp" / "sick").touch()  # type: ignore[attr-defined]
    health = ags.wait_for(
        lambda: (
            (h := agent.req("GET", "/v1/containers/doc")["state"]["health"])["status"]
            == "unhealthy"
            and h
        ),
        what="unhealthy",
    )
    assert health["failing_streak"] >= 2 and health["log"][-1]["exit_code"] == 1
    statuses = [
        json.loads(line)["attributes"].get("status")
        for line in b"".join(agent.client.stream("GET", "/v1/events")).splitlines()
        if json.loads(line)["action"] == "health_status"
    ]
    assert statuses[:2] == ["healthy", "unhealthy"]


def test_init_reaps_and_forwards_signals(agent: ags.Agent) -> None:
    agent.put(
        "tini",
        spec(agent, "sh", "-c", "while true; do sleep 0.05; done", init=True, stop_timeout=30),
    )
    one = agent.req(
        "POST", "/v1/containers/tini/exec", body={"command": ["cat", "/proc/1/cmdline"]}
    )
    assert one["stdout"].split("\x00")[0] == "/dev/init"
    # tini passes SIGTERM to the shell, which dies of it at once (no 30 s wait for KILL).
    stopped = agent.req("POST", "/v1/containers/tini/stop")
    assert stopped["exit_code"] == 143


def test_concurrent_clients(agent: ags.Agent) -> None:
    failures: list[str] = []

    def client(index: int) -> None:
        name = f"par{index}"
        try:
            body = {"name": name, "spec": looping(agent, name, code=index % 7), "start": True}
            made = agent.req("POST", "/v1/containers", body=body)
            assert made["name"] == name
            ran = agent.req(
                "POST", f"/v1/containers/{name}/exec", body={"command": ["sh", "-c", "echo $NAME"]}
            )
            assert (ran["rc"], ran["stdout"]) == (0, f"{name}\n"), ran
            release(agent, name)
            waited = agent.req("POST", f"/v1/containers/{name}/wait", body={"timeout": 120})
            assert waited["exit_code"] == index % 7, waited
            agent.req("DELETE", f"/v1/containers/{name}")
        except Exception as exc:  # collected and reported below
            failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert agent.req("GET", "/v1/containers") == []
    assert list((agent.root / "runtime").iterdir()) == []
    assert list((agent.root / "containers").iterdir()) == []


GARBAGE_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{",
    b'{"zzz": 1}',
    b"\xff\xfe",
    b'{"spec": 5, "name": []}',
]


def test_no_route_answers_500_to_garbage(agent: ags.Agent) -> None:
    import http.client
    import socket as socket_module

    agent.put("target", looping(agent, "target"))
    schema = agent.req("GET", "/openapi.json")
    checked = 0
    for template, methods in schema["paths"].items():
        for name in ("target", "nobody", "..", "%00", "a" * 300):
            path = (
                template.replace("{name}", name).replace("{ref}", "x").replace("{operation}", "y")
            )
            for method in methods:
                if method.upper() == "DELETE" and name == "target":
                    continue  # keep the target for the other routes
                for body in GARBAGE_BODIES:
                    for query in (
                        "",
                        "?tail=-5&follow=maybe&status=x&since=-1&path=&force=2&timeout=x",
                    ):
                        sock = socket_module.socket(
                            socket_module.AF_UNIX, socket_module.SOCK_STREAM
                        )
                        sock.connect(str(agent.socket))
                        connection = http.client.HTTPConnection("localhost", timeout=60)
                        connection.sock = sock
                        headers = {"Content-Type": "application/json"}
                        connection.request(method.upper(), path + query, body=body, headers=headers)
                        response = connection.getresponse()
                        payload = response.read()
                        connection.close()
                        checked += 1
                        assert response.status < 500, (method, path + query, body, payload)
                        if response.status >= 400:
                            error = json.loads(payload)
                            assert set(error) == {"detail", "field"}, error
                            assert "Traceback" not in error["detail"]
    assert checked > 1000
    # (An empty body is a valid stop or kill: the target may be stopped, never gone.)
    assert agent.req("GET", "/v1/containers/target")["name"] == "target"


def test_async_verbs_run_as_operations(agent: ags.Agent) -> None:
    agent.put(
        "slowstop", spec(agent, "sh", "-c", "while true; do sleep 0.05; done", stop_timeout=1)
    )
    started = agent.client._send(
        "POST", "/v1/containers/slowstop/stop", body={}, query={"async": "true"}
    )
    assert started.status == 202
    location = started.getheader("Location")
    accepted = json.loads(started.read())
    started.close()
    assert location == f"/v1/operations/{accepted['id']}"
    assert accepted["resources"] == ["/v1/containers/slowstop"] and accepted["may_cancel"] is False
    done = agent.req("GET", f"{location}/wait", query={"timeout": 60})
    assert done["status"] == "success" and done["result"]["exit_code"] == 137
    assert agent.req("GET", location)["status"] == "success"
    assert any(op["id"] == accepted["id"] for op in agent.req("GET", "/v1/operations"))

    # A wait can be cancelled; a failed verb reports the error it would have answered.
    agent.put("sleeper", looping(agent, "sleeper"))
    waiting = agent.client._send(
        "POST", "/v1/containers/sleeper/wait", body={}, query={"async": "true"}
    )
    operation = json.loads(waiting.read())
    waiting.close()
    assert operation["may_cancel"] is True
    cancelled = agent.req("DELETE", f"/v1/operations/{operation['id']}")
    assert cancelled["status"] == "cancelled"
    bad = agent.client._send("POST", "/v1/containers/nobody/stop", body={}, query={"async": "true"})
    failed_id = json.loads(bad.read())["id"]
    bad.close()
    failed = agent.req("GET", f"/v1/operations/{failed_id}/wait", query={"timeout": 60})
    assert failed["status"] == "failure"
    assert failed["error"] == {
        "detail": "no container named 'nobody'",
        "field": "name",
        "status_code": 404,
    }
    missing = agent.error("GET", "/v1/operations/nope")
    assert (missing.status, missing.field) == (404, "operation")


def _session(
    agent: ags.Agent, name: str, request: dict[str, Any], *sends: bytes | dict[str, Any]
) -> tuple[bytes, list[Any]]:
    """Run an interactive exec over the websocket; its output bytes and control messages."""
    from websockets.sync.client import unix_connect

    url = f"ws://localhost/v1/containers/{name}/exec/ws"

    def run() -> tuple[bytes, list[Any]]:
        output = b""
        controls: list[Any] = []
        with unix_connect(str(agent.socket), url, open_timeout=30) as ws:
            ws.send(json.dumps(request))
            for item in sends:
                ws.send(item if isinstance(item, bytes) else json.dumps(item))
            while True:
                message = ws.recv(timeout=60)
                if isinstance(message, str):
                    controls.append(json.loads(message))
                    if controls[-1]["type"] in ("exit",) or controls[-1].get("status_code"):
                        break
                else:
                    output += message
        return output, controls

    return ags.within(150, f"websocket {url} {request}", run)


def test_interactive_exec_over_a_websocket(agent: ags.Agent) -> None:
    agent.put("shell", looping(agent, "shell"))
    # With a terminal: the size given, then a resize, then the exit status.
    output, controls = _session(
        agent, "shell", {"command": ["sh"], "tty": True, "width": 100, "height": 30},
        b"stty size; tty\n",
        {"type": "resize", "width": 132, "height": 43},
        b"sleep 0.3; stty size; exit 5\n",
    )  # fmt: skip
    text = output.decode(errors="replace")
    assert "/dev/pts/" in text and "43 132" in text
    assert controls[-1] == {"type": "exit", "rc": 5}
    # Without one: stdin through a pipe, stdout and stderr tagged apart.
    output, controls = _session(
        agent, "shell", {"command": ["sh", "-c", "cat; echo err >&2; exit 2"]},
        b"piped input\n", {"type": "close_stdin"},
    )  # fmt: skip
    assert output == b"\x01piped input\n\x02err\n"
    assert controls == [{"type": "exit", "rc": 2}]
    # Signals reach the process.
    output, controls = _session(
        agent,
        "shell",
        {"command": ["sh", "-c", "echo ready; sleep 100"]},
        {"type": "signal", "signal": "KILL"},
    )
    assert controls[-1] == {"type": "exit", "rc": 137}
    # Errors come back named, and a bad control message does not end the session.
    _output, controls = _session(agent, "nobody", {"command": ["true"]})
    assert controls == [
        {
            "type": "error",
            "detail": "no container named 'nobody'",
            "field": "name",
            "status_code": 404,
        }
    ]
    _output, controls = _session(agent, "shell", {"command": []})
    assert controls[0]["field"] == "command" and controls[0]["status_code"] == 422
    _output, controls = _session(
        agent, "shell", {"command": ["sh", "-c", "read x; exit $x"]}, {"type": "dance"}, b"7\n"
    )
    assert controls == [
        {
            "type": "error",
            "detail": "type: must be resize, signal or close_stdin, got 'dance'",
            "field": "type",
        },
        {"type": "exit", "rc": 7},
    ]


def test_events_follow_streams_new_events(agent: ags.Agent) -> None:
    import http.client
    import socket as socket_module

    last = agent.req("GET", "/v1/events")
    sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    sock.connect(str(agent.socket))
    connection = http.client.HTTPConnection("localhost", timeout=60)
    connection.sock = sock
    connection.request("GET", "/v1/events?follow=true&container=fol")
    response = connection.getresponse()
    assert response.status == 200 and last is None
    agent.put("other", spec(agent, "true"))
    agent.put("fol", spec(agent, "true"))
    seen: list[str] = []
    while "die" not in seen:
        line = response.readline()
        if line.strip():
            event = json.loads(line)
            assert event["container"] == "fol"
            seen.append(event["action"])
    connection.close()
    assert seen == ["create", "start", "die"]


def test_stop_cancels_a_pending_restart(agent: ags.Agent) -> None:
    agent.put("again", spec(agent, "sh", "-c", "exit 1", restart_policy="always"))
    ags.wait_for(
        lambda: agent.req("GET", "/v1/containers/again")["state"]["restart_count"] >= 3,
        what="a few restarts",
    )
    agent.req("POST", "/v1/containers/again/stop")
    stopped = agent.req("GET", "/v1/containers/again")["state"]
    assert stopped["status"] == "stopped" and stopped["stopped_by_user"] is True
    count = stopped["restart_count"]
    assert agent.req("POST", "/v1/containers/again/wait")["status"] == "stopped"
    assert agent.req("GET", "/v1/containers/again")["state"]["restart_count"] == count
