"""How the engine creates runtime containers: through the warm launcher.

The agent is a multi-threaded process (uvicorn's loop, its thread pool, the exit monitor,
health checks, restart timers). Forking a container's supervisor from it copies whatever
lock another thread held at that instant (logging's, the import lock, OpenSSL's), and the
child may wait on it for ever. :class:`gantry.runtime.launcher.Launcher` is a separate,
single-threaded, pre-loaded process that does the forking instead (ARCHITECTURE.md, "Fast
paths stay warm").

:class:`Launching` owns the agent's one launcher: started with the engine, started anew
when a request finds it broken (:class:`LauncherError`), and closed with the engine. If
it cannot be started, containers are created by ``supervisor.create`` in the agent as
before, with a log line saying so; a new launcher is tried again later. The launcher is
a child subreaper, so the shims are its children while it lives; neither it nor the agent
is needed by a running container (a shim outlives both).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from gantry.engine import bundle as bundles
from gantry.runtime import state as st
from gantry.runtime import supervisor
from gantry.runtime.cgroups import CgroupError
from gantry.runtime.launcher import Launcher, LauncherError
from gantry.runtime.shim import LogOptions

__all__ = ["Launching"]

_log = logging.getLogger(__name__)

RETRY_START_AFTER: Final = 60.0
"""After a launcher failed to start, creates fork from the agent for this long before a
new launcher is tried."""


class Launching:
    """Create runtime containers through a warm launcher (thread-safe)."""

    def __init__(
        self, runtime_root: Path, *, use_launcher: bool = True, python: str | None = None
    ) -> None:
        self.runtime_root = runtime_root
        self._python = python
        self._lock = threading.Lock()
        self._launcher: Launcher | None = None
        self._failed_at: float | None = None
        self._closed = not use_launcher
        self.restarts = 0
        self.fallbacks = 0
        if use_launcher:
            with self._lock:
                self._ensure_started()

    @property
    def pid(self) -> int | None:
        """The launcher's pid, None while containers are created by forking the agent."""
        launcher = self._launcher
        return None if launcher is None else launcher.pid

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "mode": "launcher" if self._launcher is not None else "fork",
            "restarts": self.restarts,
            "fallback_creates": self.fallbacks,
        }

    def close(self) -> None:
        """Stop the launcher; the containers it created keep running."""
        with self._lock:
            self._closed = True
            launcher, self._launcher = self._launcher, None
        if launcher is not None:
            launcher.close()

    def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        stdio: Sequence[int],
        log: LogOptions | None = None,
    ) -> st.ContainerState:
        """Create the runtime container (its init waits at the exec fifo for ``start``).

        Raises what ``supervisor.create`` raises; never :class:`LauncherError`: a broken
        launcher is replaced and the create tried once more, and without a launcher the
        agent creates the container itself."""
        for attempt in (1, 2):
            launcher = self._current()
            if launcher is None:
                break
            try:
                return launcher.create(
                    self.runtime_root, container_id, bundle, stdio=stdio, log=log
                )
            except LauncherError as exc:
                _log.warning(
                    "container %s: the launcher (pid %d) failed: %s; starting a new one",
                    container_id,
                    launcher.pid,
                    exc,
                )
                # The outcome is unknown: the container may exist under its id by now.
                self._forget_half_created(container_id)
                self._replace(launcher)
                if attempt == 2:
                    break
        self.fallbacks += 1
        return supervisor.create(
            self.runtime_root,
            container_id,
            bundle=bundle,
            spec=bundles.spec_for(bundle),
            stdio=stdio,
            log=log,
        )

    # --- the launcher's life ---------------------------------------------------------------

    def _current(self) -> Launcher | None:
        with self._lock:
            if self._launcher is None and not self._closed:
                due = self._failed_at is None or (
                    time.monotonic() - self._failed_at >= RETRY_START_AFTER
                )
                if due:
                    self._ensure_started()
            return self._launcher

    def _ensure_started(self) -> None:
        """Start a launcher (the lock held); on failure, log and leave it None."""
        try:
            self._launcher = Launcher.start(python=self._python)
        except LauncherError as exc:
            self._launcher = None
            self._failed_at = time.monotonic()
            _log.error(
                "the warm launcher cannot start (%s): containers are created by forking the "
                "agent until a new launcher starts (tried again in %g s)",
                exc,
                RETRY_START_AFTER,
            )
            return
        self._failed_at = None
        _log.info("warm launcher started (pid %d)", self._launcher.pid)

    def _replace(self, broken: Launcher) -> None:
        with self._lock:
            if self._launcher is not broken:
                return  # another request replaced it already
            self._launcher = None
            with contextlib.suppress(OSError):
                broken.close(timeout=5.0)
            if not self._closed:
                self.restarts += 1
                self._ensure_started()

    def _forget_half_created(self, container_id: str) -> None:
        try:
            with supervisor.locked(self.runtime_root, container_id) as found:
                supervisor.delete(found, force=True)
        except st.StateError:
            pass  # nothing was created
        except (supervisor.RuntimeError_, CgroupError, OSError) as exc:
            _log.warning("container %s: removing a half-made create: %s", container_id, exc)
