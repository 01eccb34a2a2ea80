"""Container logs through a real agent: the shim's CRI log read back by stream, with
times, tail and time windows, followed across rotations, bad query values, the CLI's
stdout/stderr split, and a container that writes far more than a pipe holds while
nobody reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

GANTRY = Path(sys.executable).parent / "gantry"
TALK = "for i in $(seq 1 50); do echo out$i; echo err$i >&2; done; printf 'no newline'"


@pytest.fixture
def agent(no_leftovers: None) -> Any:
    with ags.running_agent() as (running, rootfs):
        running.rootfs = rootfs  # type: ignore[attr-defined]
        yield running


def spec(agent: ags.Agent, script: str, **extra: Any) -> dict[str, Any]:
    return {"rootfs": str(agent.rootfs), "command": ["sh", "-c", script], **extra}  # type: ignore[attr-defined]


def logs(agent: ags.Agent, name: str, **query: Any) -> bytes:
    return b"".join(agent.client.stream("GET", f"/v1/containers/{name}/logs", query=query))


def records(agent: ags.Agent, name: str, **query: Any) -> list[dict[str, Any]]:
    text = logs(agent, name, format="json", **query)
    return [json.loads(line) for line in text.splitlines()]


def finished(agent: ags.Agent, name: str, script: str, **extra: Any) -> None:
    agent.put(name, spec(agent, script, **extra))
    assert agent.req("POST", f"/v1/containers/{name}/wait")["exit_code"] == 0


def test_streams_apart_with_times(agent: ags.Agent) -> None:
    finished(agent, "talk", TALK)
    outs = [f"out{i}" for i in range(1, 51)]
    errs = [f"err{i}" for i in range(1, 51)]
    assert logs(agent, "talk", stderr=False).decode() == "".join(f"{x}\n" for x in outs) + (
        "no newline"
    )
    assert logs(agent, "talk", stdout=False).decode() == "".join(f"{x}\n" for x in errs)
    found = records(agent, "talk")
    assert [r["text"] for r in found if r["stream"] == "stdout"] == [*outs, "no newline"]
    assert [r["text"] for r in found if r["stream"] == "stderr"] == errs
    assert [r["partial"] for r in found].count(True) == 1
    assert all(len(r["time"]) == 30 and r["time"].endswith("Z") for r in found)
    for stream in ("stdout", "stderr"):  # each stream in the order it was written
        times = [r["time"] for r in found if r["stream"] == stream]
        assert times == sorted(times), stream
    stamped = logs(agent, "talk", timestamps=True, stdout=False).decode().splitlines()
    assert stamped == [f"{r['time']} {r['text']}" for r in found if r["stream"] == "stderr"]


def test_tail_since_until(agent: ags.Agent) -> None:
    finished(agent, "talk", TALK)
    found = records(agent, "talk")
    assert records(agent, "talk", tail=3) == found[-3:]
    assert (
        records(agent, "talk", tail=2, stdout=False)
        == [r for r in found if r["stream"] == "stderr"][-2:]
    )
    assert records(agent, "talk", tail=0) == []
    middle = found[len(found) // 2]["time"]
    assert records(agent, "talk", since=middle) == [r for r in found if r["time"] >= middle]
    assert records(agent, "talk", until=middle) == [r for r in found if r["time"] <= middle]
    assert records(agent, "talk", since="10m") == found
    assert records(agent, "talk", until="10m") == []
    assert records(agent, "talk", since="4102444800") == []  # 2100-01-01


def test_bad_values_name_the_field(agent: ags.Agent) -> None:
    finished(agent, "talk", "echo hi")
    for query, field in (
        ({"since": "yesterday"}, "query.since"),
        ({"until": "10x"}, "query.until"),
        ({"tail": "-3"}, "query.tail"),
        ({"format": "xml"}, "query.format"),
        ({"stdout": False, "stderr": False}, "query.stdout"),
    ):
        error = agent.error("GET", "/v1/containers/talk/logs", query=query)
        assert error.status == 422, query
        assert field.split(".")[1] in error.detail, (query, error.detail)
    error = agent.error(
        "PUT",
        "/v1/containers/tiny",
        body={"state": "running", "spec": spec(agent, "true", log={"max_size": 100})},
    )
    assert error.status == 422 and "spec.log.max_size" in error.detail
    assert agent.error("GET", "/v1/containers/tiny").status == 404  # nothing was made


def test_follow_across_rotations_loses_and_repeats_nothing(agent: ags.Agent) -> None:
    count = 40000  # about 230 KB: seven rotations of 32 KiB files
    script = f"echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 {count}"
    agent.put("rotor", spec(agent, script, log={"max_size": 32768, "max_files": 100}))
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(
            agent.client.stream("GET", "/v1/containers/rotor/logs", query={"follow": True})
        )
    )
    reader.start()
    try:
        ags.wait_for(lambda: b"ready\n" in b"".join(chunks), what="the follower reading")
        (agent.rootfs / "tmp" / "go").touch()  # type: ignore[attr-defined]
    finally:
        reader.join(timeout=120)
    assert not reader.is_alive()
    got = b"".join(chunks).decode().splitlines()
    assert got == ["ready", *(str(i) for i in range(1, count + 1))]
    bundle = Path(agent.req("GET", "/v1/containers/rotor")["paths"]["log"])
    rotated = sorted(bundle.parent.glob(bundle.name + ".*"))
    assert len(rotated) >= 5
    assert all(path.stat().st_size <= 32768 for path in [bundle, *rotated])
    # Read afterwards, the rotated files come oldest first too.
    assert logs(agent, "rotor").decode().splitlines() == got


def test_a_loud_container_nobody_reads_is_not_blocked(no_leftovers: None) -> None:
    """The agent's own rotation settings (flags) apply when the spec says nothing."""
    count = 3_000_000  # about 21 MB
    flags = ("--log-max-size", "1m", "--log-max-files", "2")
    with ags.running_agent(flags) as (agent, rootfs):
        agent.rootfs = rootfs  # type: ignore[attr-defined]
        finished(agent, "loud", f"seq 1 {count}; echo done >&2")
        log = Path(agent.req("GET", "/v1/containers/loud")["paths"]["log"])
        files = [log, *log.parent.glob(log.name + ".*")]
        assert sorted(path.name for path in files) == sorted(
            [log.name, f"{log.name}.1", f"{log.name}.2"]
        )
        assert all(path.stat().st_size <= 1 << 20 for path in files)
        assert logs(agent, "loud", tail=2).decode() == f"{count}\ndone\n"
        kept = logs(agent, "loud", stderr=False).decode().splitlines()
        first = int(kept[0])
        assert first > 1 and kept == [str(i) for i in range(first, count + 1)]


def test_cli_writes_stderr_lines_to_stderr(agent: ags.Agent) -> None:
    finished(agent, "talk", TALK)
    env = {**os.environ, "GANTRY_URL": f"unix://{agent.socket}"}

    def gantry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GANTRY), *args], env=env, capture_output=True, text=True, check=False, timeout=120
        )

    done = gantry("logs", "talk")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"out{i}\n" for i in range(1, 51)) + "no newline"
    assert done.stderr == "".join(f"err{i}\n" for i in range(1, 51))
    done = gantry("logs", "-t", "--tail", "1", "talk")
    found = records(agent, "talk", tail=1)
    assert done.stdout == f"{found[0]['time']} no newline" and done.stderr == ""
    done = gantry("logs", "--since", "10m", "--until", "4102444800", "-n", "2", "talk")
    assert (done.stdout, done.stderr) == ("no newline", "err50\n")
    done = gantry("logs", "--since", "last week", "talk")
    assert done.returncode != 0 and "since" in done.stderr


def test_a_log_change_is_bookkeeping_applied_at_the_next_start(agent: ags.Agent) -> None:
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 20000"
    first = agent.put("keep", spec(agent, script))
    before = agent.req("GET", "/v1/containers/keep")
    changed = agent.put("keep", spec(agent, script, log={"max_size": "32k", "max_files": 50}))
    assert changed["actions"] == ["update"] and first["actions"] == ["create", "start"]
    after = agent.req("GET", "/v1/containers/keep")
    assert (after["id"], after["state"]["pid"]) == (before["id"], before["state"]["pid"])
    (agent.rootfs / "tmp" / "go").touch()  # type: ignore[attr-defined]
    assert agent.req("POST", "/v1/containers/keep/wait")["exit_code"] == 0
    log = Path(after["paths"]["log"])
    assert not list(log.parent.glob(log.name + ".*"))  # this run: the agent's 10 MiB
    agent.req("POST", "/v1/containers/keep/start")
    assert agent.req("POST", "/v1/containers/keep/wait")["exit_code"] == 0
    assert list(log.parent.glob(log.name + ".*"))  # the next run rotates at 32 KiB
    assert logs(agent, "keep").decode().splitlines() == [str(i) for i in range(1, 20001)] * 2
