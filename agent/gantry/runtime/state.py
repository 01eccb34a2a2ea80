"""A container's state on disk under the runtime's ``--root``, and its status as the kernel
tells it.

Each container has a directory ``<root>/<id>``:

- ``state.json``: what ``create`` decided (pid and start time of the init, bundle,
  rootfs, creation time, annotations, cgroup, the shim's pid), written once, atomically;
- ``exec.fifo``: the FIFO the created init waits on, removed by ``start``;
- ``exit.json``: the init's exit status, written atomically by the shim;
- ``shim.log``: what the shim had to say (its stderr).

The status is never stored: :func:`derive_status` computes it from facts read from the
kernel (is the pid alive, with the recorded start time; does exec.fifo exist; is the
cgroup frozen), as runc does. A pid that was reused by another process has another start
time, so it never makes a stopped container look running.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from gantry.linux import proc

__all__ = [
    "DEFAULT_ROOT",
    "ContainerState",
    "ExitRecord",
    "Facts",
    "StateError",
    "Status",
    "container_dir",
    "derive_status",
    "oci_state",
    "parse_signal",
    "read_exit",
    "read_state",
    "validate_id",
    "write_atomic",
    "write_state",
]

DEFAULT_ROOT: Final = Path("/run/gantry/runtime")
"""Where the runtime keeps its containers' state unless ``--root`` says otherwise."""

STATE_FILE: Final = "state.json"
FIFO_FILE: Final = "exec.fifo"
EXIT_FILE: Final = "exit.json"
SHIM_LOG: Final = "shim.log"

Status = Literal["creating", "created", "running", "paused", "stopped"]

_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_ID: Final = 1024


class StateError(Exception):
    """A container cannot be found, named or recorded; the message says which and why."""


def validate_id(container_id: str) -> str:
    """Return ``container_id`` when it can name a container (runc's rule: a letter or
    digit, then letters, digits, ``_``, ``.`` and ``-``); :class:`StateError` otherwise."""
    if not _ID.fullmatch(container_id) or len(container_id) > _MAX_ID:
        raise StateError(
            f"invalid container id {container_id!r}: it must start with a letter or a digit "
            "and contain only letters, digits, '_', '.' and '-'"
        )
    return container_id


def container_dir(root: Path, container_id: str) -> Path:
    """The state directory of ``container_id`` under ``root`` (the id validated)."""
    return root / validate_id(container_id)


# --- what create records ----------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerState:
    """What ``create`` recorded about a container (``state.json``)."""

    id: str
    pid: int
    start_time: int
    """The init's start time from /proc/<pid>/stat: with ``pid``, names the process."""
    bundle: str
    rootfs: str
    created: str
    """RFC 3339, UTC."""
    cgroup: str
    shim_pid: int
    shim_start_time: int
    oci_version: str
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "start_time": self.start_time,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "cgroup": self.cgroup,
            "shim_pid": self.shim_pid,
            "shim_start_time": self.shim_start_time,
            "oci_version": self.oci_version,
            "annotations": dict(self.annotations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerState:
        """Parse ``state.json``; ``StateError`` naming the key when it is not ours."""
        try:
            return cls(
                id=str(data["id"]),
                pid=int(data["pid"]),
                start_time=int(data["start_time"]),
                bundle=str(data["bundle"]),
                rootfs=str(data["rootfs"]),
                created=str(data["created"]),
                cgroup=str(data["cgroup"]),
                shim_pid=int(data["shim_pid"]),
                shim_start_time=int(data["shim_start_time"]),
                oci_version=str(data["oci_version"]),
                annotations={str(k): str(v) for k, v in dict(data.get("annotations", {})).items()},
            )
        except KeyError as exc:
            raise StateError(f"{STATE_FILE} has no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise StateError(f"{STATE_FILE} is malformed: {exc}") from None


def now_rfc3339() -> str:
    """The current time in RFC 3339 (UTC, nanoseconds as runc prints them)."""
    ns = datetime.datetime.now(datetime.UTC)
    return ns.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one:
    a temporary file beside it, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_state(directory: Path, state: ContainerState) -> None:
    write_atomic(directory / STATE_FILE, json.dumps(state.to_json(), indent=2) + "\n", 0o600)


def read_state(directory: Path) -> ContainerState | None:
    """``state.json`` of a container directory; ``None`` while it is not written yet."""
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {directory / STATE_FILE}: {exc}") from None
    if not isinstance(data, dict):
        raise StateError(f"{directory / STATE_FILE} is not a JSON object")
    return ContainerState.from_json(data)


@dataclass(frozen=True)
class ExitRecord:
    """The shim's ``exit.json``: how the init ended."""

    exit_code: int
    signal: int
    finished_ns: int


def read_exit(directory: Path) -> ExitRecord | None:
    """``exit.json`` of a container directory; ``None`` until the shim wrote it."""
    try:
        data = json.loads((directory / EXIT_FILE).read_text())
        return ExitRecord(int(data["exit_code"]), int(data["signal"]), int(data["finished_ns"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"cannot read {directory / EXIT_FILE}: {exc}") from None


# --- the status, from the kernel --------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the kernel and the state directory say about a container right now."""

    recorded: bool
    """state.json exists."""
    alive: bool
    """A process with the recorded pid exists and is not a zombie."""
    same_start_time: bool
    """Its start time is the recorded one (so it is the init, not a reused pid)."""
    fifo_exists: bool
    frozen: bool
    """The container's cgroup freezer says frozen."""


def derive_status(facts: Facts) -> Status:
    """The OCI status from ``facts`` (runc's rules)."""
    if not facts.recorded:
        return "creating"
    if not (facts.alive and facts.same_start_time):
        return "stopped"
    if facts.fifo_exists:
        return "created"
    if facts.frozen:
        return "paused"
    return "running"


def process_matches(pid: int, start_time: int) -> tuple[bool, bool]:
    """``(alive, same start time)`` of ``pid``: a zombie counts as gone."""
    try:
        stat = proc.read_stat(pid)
    except (ProcessLookupError, FileNotFoundError):
        return False, False
    if stat.state in ("Z", "X"):
        return False, False
    return True, stat.start_time == start_time


def oci_state(state: ContainerState, status: Status) -> dict[str, Any]:
    """The OCI state JSON (runtime.md), with the keys runc prints."""
    return {
        "ociVersion": state.oci_version,
        "id": state.id,
        "pid": 0 if status == "stopped" else state.pid,
        "status": status,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": "",
        "annotations": dict(state.annotations),
    }


# --- signals ----------------------------------------------------------------------------------


def parse_signal(text: str) -> int:
    """A signal given as ``TERM``, ``SIGTERM``, ``term`` or ``15``; ``ValueError`` naming
    it otherwise."""
    value = text.strip()
    if value.isdigit():
        number = int(value)
        if number in {int(s) for s in signal.valid_signals()} and number > 0:
            return number
        raise ValueError(f"unknown signal {text!r}")
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
        return _realtime(name, text)
    try:
        found = signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None
    return int(found)


def _realtime(name: str, text: str) -> int:
    base, sep, offset = name.partition("+") if "+" in name else name.partition("-")
    if base not in ("SIGRTMIN", "SIGRTMAX") or (sep and not offset.isdigit()):
        raise ValueError(f"unknown signal {text!r}")
    low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    start = low if base == "SIGRTMIN" else high
    number = start + (int(offset) if sep == "+" else -int(offset) if sep else 0)
    if not low <= number <= high:
        raise ValueError(f"unknown signal {text!r}")
    return number
