"""Long-running operations: a verb run in the background, its status kept for a while.

A client that asks for it (``?async=true``) gets ``202`` and the operation's URL at once
instead of waiting for, say, a stop with a long timeout; it then polls the operation,
waits on it with a timeout, or cancels it. Finished operations are kept for
:data:`KEEP_SECONDS`.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gantry.engine.errors import Conflict, EngineError, NotFound
from gantry.runtime.state import now_rfc3339

__all__ = ["Operation", "Operations"]

KEEP_SECONDS: Final = 300.0
_STATUS_OF_ERROR: Final = {"Invalid": 422, "NotFound": 404, "Conflict": 409, "Unavailable": 404}

Work = Callable[[threading.Event], Any]
"""The operation's work; it may watch the event to stop early when cancelled."""


@dataclass
class Operation:
    id: str
    description: str
    resources: list[str]
    may_cancel: bool
    created_at: str = field(default_factory=now_rfc3339)
    status: str = "running"
    finished_at: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    finished_monotonic: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "resources": self.resources,
            "status": self.status,
            "may_cancel": self.may_cancel and self.status == "running",
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


class Operations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._operations: dict[str, Operation] = {}
        self._counter = itertools.count(1)

    def submit(
        self, description: str, resources: list[str], work: Work, *, may_cancel: bool = False
    ) -> Operation:
        operation = Operation(uuid.uuid4().hex, description, resources, may_cancel)
        with self._lock:
            self._prune()
            self._operations[operation.id] = operation
        thread = threading.Thread(
            target=self._run,
            args=(operation, work),
            name=f"gantry-op-{next(self._counter)}",
            daemon=True,
        )
        thread.start()
        return operation

    def _run(self, operation: Operation, work: Work) -> None:
        try:
            operation.result = work(operation.cancel)
            operation.status = "cancelled" if operation.cancel.is_set() else "success"
        except EngineError as exc:
            operation.status = "failure"
            operation.error = {
                "detail": exc.detail,
                "field": exc.field,
                "status_code": _STATUS_OF_ERROR.get(type(exc).__name__, 409),
            }
        except Exception as exc:  # reported in the operation; the agent's log has the rest
            operation.status = "failure"
            operation.error = {
                "detail": f"internal error: {type(exc).__name__}",
                "field": None,
                "status_code": 500,
            }
        finally:
            operation.finished_at = now_rfc3339()
            operation.finished_monotonic = time.monotonic()
            operation.done.set()

    def _prune(self) -> None:
        now = time.monotonic()
        for key, operation in list(self._operations.items()):
            if (
                operation.finished_monotonic is not None
                and now - operation.finished_monotonic > KEEP_SECONDS
            ):
                del self._operations[key]

    def get(self, operation_id: str) -> Operation:
        with self._lock:
            self._prune()
            found = self._operations.get(operation_id)
        if found is None:
            raise NotFound(
                f"no operation {operation_id!r} (finished ones are kept {KEEP_SECONDS:g}s)",
                "operation",
            )
        return found

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._prune()
            return [operation.as_json() for operation in self._operations.values()]

    def wait(self, operation_id: str, timeout: float | None) -> dict[str, Any]:
        operation = self.get(operation_id)
        operation.done.wait(timeout)
        return operation.as_json()

    def cancel(self, operation_id: str) -> dict[str, Any]:
        operation = self.get(operation_id)
        if operation.status != "running":
            return operation.as_json()
        if not operation.may_cancel:
            raise Conflict(
                f"operation {operation_id!r} ({operation.description}) cannot be cancelled",
                "operation",
            )
        operation.cancel.set()
        operation.done.wait(10.0)
        return operation.as_json()
