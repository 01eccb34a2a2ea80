"""Health-check rules and long-running operations, with the exec and the work faked
(pure logic: the real exec and verbs are exercised by the integration tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from gantry.engine.errors import Conflict, Invalid, NotFound
from gantry.engine.execs import ExecRequest
from gantry.engine.health import HealthChecker
from gantry.engine.operations import Operations


def until(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.005)
    raise AssertionError(f"never: {what}")


class Script:
    """Exec results in order: True for rc 0, False for rc 1, None for a timeout."""

    def __init__(self, results: list[bool | None]) -> None:
        self.results = results
        self.calls: list[ExecRequest] = []
        self.done = threading.Event()

    def __call__(self, _container_id: str, request: ExecRequest) -> dict[str, Any]:
        self.calls.append(request)
        if len(self.calls) >= len(self.results):
            self.done.set()
        outcome = self.results[min(len(self.calls), len(self.results)) - 1]
        return {
            "rc": 0 if outcome else 1,
            "stdout": "out",
            "stderr": "",
            "timed_out": outcome is None,
        }


def check(**overrides: Any) -> dict[str, Any]:
    return {
        "test": ["CMD-SHELL", "probe"],
        "interval": 0.01,
        "timeout": 1.0,
        "retries": 2,
        "start_period": 0.0,
        **overrides,
    }


def test_healthy_then_unhealthy_after_retries_with_events() -> None:
    script = Script([True, False, None, True])
    reports: list[str] = []
    checker = HealthChecker(
        script,
        lambda _id, _at: not script.done.is_set() or len(script.calls) < 4,
        lambda _id, status: reports.append(status),
    )
    checker.watch("c1", check(), "t0")
    until(lambda: len(reports) >= 3, "three status changes")
    assert reports[:3] == ["healthy", "unhealthy", "healthy"]
    assert script.calls[0].command == ("/bin/sh", "-c", "probe")
    assert script.calls[0].timeout == 1.0
    state = checker.state("c1")
    assert state["failing_streak"] == 0 and len(state["log"]) <= 5
    checker.close()


def test_failures_in_the_start_period_do_not_count() -> None:
    script = Script([False] * 50)
    reports: list[str] = []
    checker = HealthChecker(
        script, lambda _id, _at: True, lambda _id, status: reports.append(status)
    )
    checker.watch("c2", check(start_period=3600.0, retries=1), "t0")
    until(lambda: len(script.calls) >= 5, "five checks")
    assert checker.state("c2")["status"] == "starting"
    assert checker.state("c2")["failing_streak"] == 0
    assert reports == []
    checker.forget("c2")
    assert checker.state("c2")["status"] == "none"


def test_the_check_ends_with_the_container() -> None:
    script = Script([True] * 1000)
    running = threading.Event()
    running.set()
    checker = HealthChecker(script, lambda _id, _at: running.is_set(), lambda _id, _status: None)
    checker.watch("c3", check(test=["CMD", "true"]), "t0")
    until(lambda: len(script.calls) >= 2, "two checks")
    assert script.calls[0].command == ("true",)
    (thread,) = [t for t in threading.enumerate() if t.name == "gantry-health-c3"]
    running.clear()
    thread.join(30)
    assert not thread.is_alive()


def test_operations_succeed_fail_and_cancel() -> None:
    operations = Operations()
    done = operations.submit("stop", ["/v1/containers/a"], lambda _cancel: {"changed": True})
    assert operations.wait(done.id, 30)["result"] == {"changed": True}
    assert operations.get(done.id).as_json()["status"] == "success"

    def fails(_cancel: threading.Event) -> None:
        raise Invalid("timeout: must be a number", "timeout")

    failed = operations.submit("stop", [], fails)
    answer = operations.wait(failed.id, 30)
    assert answer["status"] == "failure"
    assert answer["error"] == {
        "detail": "timeout: must be a number",
        "field": "timeout",
        "status_code": 422,
    }

    def waits(cancel: threading.Event) -> str:
        cancel.wait(60)
        return "woke"

    waiting = operations.submit("wait", [], waits, may_cancel=True)
    assert operations.get(waiting.id).as_json()["may_cancel"] is True
    assert operations.cancel(waiting.id)["status"] == "cancelled"
    blocked = threading.Event()
    stuck = operations.submit("restart", [], lambda _cancel: blocked.wait(60))
    with pytest.raises(Conflict):
        operations.cancel(stuck.id)
    blocked.set()
    assert operations.wait(stuck.id, 30)["status"] == "success"
    assert {op["id"] for op in operations.list()} >= {done.id, failed.id, waiting.id, stuck.id}
    with pytest.raises(NotFound) as missing:
        operations.get("nope")
    assert missing.value.field == "operation"


def test_every_result_is_saved_and_a_restored_state_goes_on(tmp_path: Any) -> None:
    from gantry.engine.store import ContainerRow, Store

    store = Store(tmp_path / "state.db")
    try:
        row = ContainerRow(id="c1", name="one", spec={}, created_at="t0")
        with store.transaction() as db:
            store.insert(db, row)
        script = Script([False, False, False])
        checker = HealthChecker(
            script, lambda _c, _s: len(script.calls) < 3, lambda _c, _s: None, store.save_health
        )
        checker.watch("c1", check(retries=1), "run-1")
        until(script.done.is_set, "three checks")
        saved = until(
            lambda: (h := store.load_health("c1", "run-1")) and len(h["log"]) == 3 and h,
            "three results saved",
        )
        checker.close()
        assert saved["status"] == "unhealthy" and saved["failing_streak"] == 3
        assert store.load_health("c1", "run-2") is None  # another run of the container
        # A checker of a restarted agent goes on from the saved state of the same run.
        again = Script([False])
        resumed = HealthChecker(again, lambda _c, _s: True, lambda _c, _s: None)
        resumed.watch("c1", check(retries=1, interval=60), "run-1", saved)
        assert resumed.state("c1") == saved
        resumed.close()
        # Removing the container removes its saved health.
        with store.transaction() as db:
            store.delete(db, "c1")
        assert store.load_health("c1", "run-1") is None
    finally:
        store.close()
