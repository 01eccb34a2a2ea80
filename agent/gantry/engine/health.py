"""Health checks: a container's ``healthcheck.test`` run by exec every ``interval``.

Docker's rules: the status is ``starting`` until the first success (failures during
``start_period`` do not count), ``healthy`` after a success, ``unhealthy`` after
``retries`` failures in a row; a run longer than ``timeout`` is a failure. The last five
results are kept. One thread per checked container, ended when the container stops.
Each change is handed to ``save`` (the engine keeps it in SQLite), so a container
re-adopted after an agent restart goes on from the status, streak and log it had.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from gantry.engine.errors import EngineError
from gantry.engine.execs import ExecRequest
from gantry.runtime.state import now_rfc3339

__all__ = ["NO_HEALTH", "HealthChecker"]

_log = logging.getLogger(__name__)

LOG_KEPT: Final = 5
OUTPUT_KEPT: Final = 4096
NO_HEALTH: Final = {"status": "none", "failing_streak": 0, "log": []}

RunCheck = Callable[[str, ExecRequest], dict[str, Any]]
"""Run a check in the container (its id); the exec answer."""
StillRunning = Callable[[str, str | None], bool]
"""Is the container (id) still running the process started at that time?"""
Report = Callable[[str, str], None]
"""Tell of a health status change: (container id, new status)."""
Save = Callable[[str, str | None, dict[str, Any]], None]
"""Keep a container's health (container id, the run's start time, the state)."""


def _argv(test: list[str]) -> tuple[str, ...]:
    if test[0] == "CMD-SHELL":
        return ("/bin/sh", "-c", test[1])
    return tuple(test[1:])


class HealthChecker:
    def __init__(
        self,
        run: RunCheck,
        still_running: StillRunning,
        report: Report,
        save: Save | None = None,
    ) -> None:
        self._run = run
        self._still_running = still_running
        self._report = report
        self._save = save
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._stops: dict[str, threading.Event] = {}

    def state(self, container_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._states.get(container_id)
            return dict(found, log=list(found["log"])) if found else dict(NO_HEALTH)

    def watch(
        self,
        container_id: str,
        check: dict[str, Any],
        started_at: str | None,
        restored: dict[str, Any] | None = None,
    ) -> None:
        """Start checking a container that just started, or was re-adopted (then
        ``restored`` is the health its current run had, as ``save`` got it)."""
        self.forget(container_id)
        stop = threading.Event()
        state = {"status": "starting", "failing_streak": 0, "log": []}
        if restored is not None and restored.get("status") in ("starting", "healthy", "unhealthy"):
            state = {
                "status": restored["status"],
                "failing_streak": int(restored.get("failing_streak", 0)),
                "log": list(restored.get("log", []))[-LOG_KEPT:],
            }
        with self._lock:
            self._states[container_id] = state
            self._stops[container_id] = stop
        thread = threading.Thread(
            target=self._loop,
            args=(container_id, check, started_at, stop),
            name=f"gantry-health-{container_id[:12]}",
            daemon=True,
        )
        thread.start()

    def forget(self, container_id: str) -> None:
        with self._lock:
            stop = self._stops.pop(container_id, None)
            self._states.pop(container_id, None)
        if stop is not None:
            stop.set()

    def close(self) -> None:
        with self._lock:
            stops = list(self._stops.values())
            self._stops.clear()
        for stop in stops:
            stop.set()

    def _loop(
        self,
        container_id: str,
        check: dict[str, Any],
        started_at: str | None,
        stop: threading.Event,
    ) -> None:
        began = time.monotonic()
        request = ExecRequest(
            command=_argv(check["test"]),
            env={},
            user=None,
            workdir=None,
            stdin=b"",
            timeout=float(check["timeout"]),
            encoding="utf-8",
        )
        while not stop.wait(float(check["interval"])):
            if not self._still_running(container_id, started_at):
                return
            started = now_rfc3339()
            try:
                result = self._run(container_id, request)
                ok = result["rc"] == 0 and not result["timed_out"]
                output = (result["stdout"] + result["stderr"])[-OUTPUT_KEPT:]
                code = -1 if result["timed_out"] else result["rc"]
            except EngineError as exc:
                ok, output, code = False, exc.detail, -1
            except Exception as exc:  # a broken check must not end the loop silently
                _log.warning("container %s: health check failed to run: %s", container_id, exc)
                ok, output, code = False, str(exc), -1
            in_start_period = time.monotonic() - began < float(check["start_period"])
            self._record(container_id, started_at, check, ok, in_start_period, stop, {
                "start": started, "end": now_rfc3339(), "exit_code": code, "output": output,
            })  # fmt: skip

    def _record(
        self,
        container_id: str,
        started_at: str | None,
        check: dict[str, Any],
        ok: bool,
        in_start_period: bool,
        stop: threading.Event,
        entry: dict[str, Any],
    ) -> None:
        with self._lock:
            if stop.is_set():
                return
            state = self._states[container_id]
            old = state["status"]
            state["log"] = [*state["log"], entry][-LOG_KEPT:]
            if ok:
                state["failing_streak"] = 0
                state["status"] = "healthy"
            elif not (in_start_period and old == "starting"):
                state["failing_streak"] += 1
                if state["failing_streak"] >= int(check["retries"]):
                    state["status"] = "unhealthy"
            new = state["status"]
            saved = dict(state, log=list(state["log"]))
        if self._save is not None:
            try:
                self._save(container_id, started_at, saved)
            except Exception as exc:  # the check goes on; only the copy on disk is late
                _log.warning("container %s: cannot save its health: %s", container_id, exc)
        if new != old:
            self._report(container_id, new)
