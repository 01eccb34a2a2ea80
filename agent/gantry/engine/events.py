"""The event log: every lifecycle change gets an increasing id, kept in the database so
a client can resume with ``since``, and followers are woken as events arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from gantry.engine.store import Store
from gantry.runtime.state import now_rfc3339

__all__ = ["EventLog"]


class EventLog:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._last = store.last_event_id()
        self._closed = False
        self.count = 0

    def emit(
        self,
        action: str,
        container: str | None = None,
        container_id: str | None = None,
        **attributes: Any,
    ) -> int:
        event = {
            "time": now_rfc3339(),
            "type": "container",
            "action": action,
            "container": container,
            "container_id": container_id,
            "attributes": attributes,
        }
        event_id = self._store.add_event(event)
        with self._cond:
            self._last = max(self._last, event_id)
            self.count += 1
            self._cond.notify_all()
        return event_id

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stream(
        self,
        since: int,
        *,
        follow: bool,
        container: str | None = None,
        heartbeat: float = 1.0,
    ) -> Iterator[dict[str, Any] | None]:
        """Events after ``since`` (optionally of one container); with ``follow`` keep
        waiting for new ones until the log closes. ``None`` is yielded after each idle
        ``heartbeat`` so the caller can notice a client that went away."""
        cursor = since
        while True:
            batch = self._store.events_after(cursor, limit=1000)
            for event in batch:
                cursor = event["id"]
                if container is None or container in (event["container"], event["container_id"]):
                    yield event
            if batch:
                continue
            if not follow:
                return
            with self._cond:
                if self._closed:
                    return
                if self._last <= cursor:
                    deadline = time.monotonic() + heartbeat
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                    if self._last <= cursor:
                        yield None
