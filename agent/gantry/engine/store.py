"""The agent's database: ``<root>/state.db``, SQLite in WAL mode.

One connection shared by the engine's threads behind a lock; every multi-statement change
is one transaction (``with store.transaction() as db``). Rows are plain dicts.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["ContainerRow", "Store"]

SCHEMA_VERSION: Final = 1
EVENTS_KEPT: Final = 10000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    exit_code INTEGER,
    exit_signal INTEGER,
    restart_count INTEGER NOT NULL DEFAULT 0,
    stopped_by_user INTEGER NOT NULL DEFAULT 0,
    desired_state TEXT NOT NULL DEFAULT 'present'
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    container TEXT,
    container_id TEXT,
    attributes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    container_id TEXT PRIMARY KEY REFERENCES containers(id) ON DELETE CASCADE,
    started_at TEXT,
    state TEXT NOT NULL
);
"""


@dataclass
class ContainerRow:
    id: str
    name: str
    spec: dict[str, Any]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    restart_count: int = 0
    stopped_by_user: bool = False
    desired_state: str = "present"


_COLUMNS: Final = (
    "id",
    "name",
    "spec",
    "created_at",
    "started_at",
    "finished_at",
    "exit_code",
    "exit_signal",
    "restart_count",
    "stopped_by_user",
    "desired_state",
)


def _row(values: tuple[Any, ...]) -> ContainerRow:
    data = dict(zip(_COLUMNS, values, strict=True))
    data["spec"] = json.loads(data["spec"])
    data["stopped_by_user"] = bool(data["stopped_by_user"])
    return ContainerRow(**data)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    # --- containers ----------------------------------------------------------------------

    def containers(self) -> list[ContainerRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM containers ORDER BY name"
            ).fetchall()
        return [_row(values) for values in rows]

    def get(self, key: str) -> ContainerRow | None:
        with self._lock:
            values = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM containers WHERE name = ? OR id = ?", (key, key)
            ).fetchone()
        return None if values is None else _row(values)

    def insert(self, db: sqlite3.Connection, row: ContainerRow) -> None:
        values = [getattr(row, column) for column in _COLUMNS]
        values[_COLUMNS.index("spec")] = json.dumps(row.spec, sort_keys=True)
        values[_COLUMNS.index("stopped_by_user")] = int(row.stopped_by_user)
        db.execute(
            f"INSERT INTO containers ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(_COLUMNS))})",
            values,
        )

    def update(self, container_id: str, **changes: Any) -> None:
        if not changes:
            return
        for key in changes:
            if key not in _COLUMNS or key == "id":
                raise KeyError(key)
        if "spec" in changes:
            changes["spec"] = json.dumps(changes["spec"], sort_keys=True)
        if "stopped_by_user" in changes:
            changes["stopped_by_user"] = int(changes["stopped_by_user"])
        assignments = ", ".join(f"{key} = ?" for key in changes)
        with self.transaction() as db:
            db.execute(
                f"UPDATE containers SET {assignments} WHERE id = ?",
                (*changes.values(), container_id),
            )

    def delete(self, db: sqlite3.Connection, container_id: str) -> None:
        db.execute("DELETE FROM health WHERE container_id = ?", (container_id,))
        db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    # --- health ----------------------------------------------------------------------------

    def save_health(self, container_id: str, started_at: str | None, state: dict[str, Any]) -> None:
        """The health of the container's run that started at ``started_at``."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO health (container_id, started_at, state)"
                " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM containers WHERE id = ?)",
                (container_id, started_at, json.dumps(state), container_id),
            )

    def load_health(self, container_id: str, started_at: str | None) -> dict[str, Any] | None:
        """The saved health of that same run of the container, if any."""
        with self.transaction() as db:
            found = db.execute(
                "SELECT state FROM health WHERE container_id = ? AND started_at IS ?",
                (container_id, started_at),
            ).fetchone()
        return None if found is None else dict(json.loads(found[0]))

    def drop_health(self, container_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM health WHERE container_id = ?", (container_id,))

    # --- events --------------------------------------------------------------------------

    def add_event(self, event: dict[str, Any]) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (time, type, action, container, container_id, attributes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event["time"],
                    event["type"],
                    event["action"],
                    event.get("container"),
                    event.get("container_id"),
                    json.dumps(event.get("attributes", {}), sort_keys=True),
                ),
            )
            event_id = int(cursor.lastrowid or 0)
            if event_id % 1000 == 0:
                db.execute("DELETE FROM events WHERE id <= ?", (event_id - EVENTS_KEPT,))
        return event_id

    def events_after(self, since: int, limit: int = EVENTS_KEPT) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, time, type, action, container, container_id, attributes FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (since, limit),
            ).fetchall()
        return [
            {
                "id": row[0],
                "time": row[1],
                "type": row[2],
                "action": row[3],
                "container": row[4],
                "container_id": row[5],
                "attributes": json.loads(row[6]),
            }
            for row in rows
        ]

    def last_event_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(row[0])
