"""Reading a container's CRI log: its lines by stream, with their times, the last N of
them, a time window, and following it across rotations.

The container's shim writes the log (docs/logs.md): one record per line,
``<RFC3339Nano> stdout|stderr F|P <text>``, ``P`` records being pieces of a line that
goes on in the stream's next record. When the live file ``container.log`` would grow past
its size it becomes ``container.log.1`` (``.1`` becomes ``.2``, …). The container never
waits for a reader: the shim drains its pipes whatever happens here.

:func:`read_lines` gives whole lines (pieces joined) oldest first across the rotated files;
with ``follow`` it goes on with new lines, and when the live file is renamed under it, it
finishes the old file (the open descriptor still reads it) and goes on with the newer files
in order, so a line is neither lost nor read twice.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gantry.engine.errors import Invalid

__all__ = [
    "LogLine",
    "format_time",
    "join_records",
    "parse_record",
    "parse_tail",
    "parse_time",
    "read_lines",
]

CHUNK: Final = 65536
FOLLOW_PAUSE: Final = 0.05
STREAMS: Final = ("stdout", "stderr")
_RECORD: Final = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$", re.DOTALL
)
_RFC3339: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$"
)
_UNIX: Final = re.compile(r"^(\d+)(?:\.(\d{1,9}))?$")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


@dataclass(frozen=True)
class LogLine:
    """One line of a stream: ``time`` as the shim wrote it (of the record that ended the
    line), ``text`` without its newline; ``complete`` is False for output that ended
    without a newline."""

    time: str
    stream: str
    text: bytes
    complete: bool = True


# --- query values ---------------------------------------------------------------------------


def parse_tail(text: str | None) -> int | None:
    """``None`` for all lines, else the count; ``Invalid`` naming ``query.tail``."""
    if text is None or text == "all":
        return None
    if text.isdigit():
        return int(text)
    raise Invalid(f"tail: must be 'all' or a number of lines, got {text!r}", "query.tail")


def parse_time(text: str, field: str, *, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch from RFC 3339 (``2026-11-23T12:00:00Z``, fractions and
    offsets allowed), Unix seconds (``1763900000.5``) or a duration before now as Docker
    takes it (``10m``, ``1h30m``, ``90s``); ``Invalid`` naming ``query.<field>``."""
    value = text.strip()
    match = _RFC3339.match(value)
    if match:
        date, clock, fraction, zone = match.groups()
        try:
            moment = datetime.datetime.fromisoformat(
                f"{date}T{clock}{'+00:00' if zone in ('Z', 'z') else zone}"
            )
        except ValueError:
            raise _bad_time(field, text) from None
        seconds = int(moment.timestamp())
        return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))
    match = _UNIX.match(value)
    if match:
        return int(match[1]) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))
    if value and _DURATION_PART.sub("", value) == "":
        total = sum(
            int(float(number) * _DURATION_NS[unit])
            for number, unit in _DURATION_PART.findall(value)
        )
        return (time.time_ns() if now_ns is None else now_ns) - total
    raise _bad_time(field, text)


def _bad_time(field: str, text: str) -> Invalid:
    return Invalid(
        f"{field}: not a time: {text!r} (use RFC 3339 like 2026-11-23T12:00:00Z, "
        "Unix seconds, or a duration before now like 10m or 1h30m)",
        f"query.{field}",
    )


def format_time(ns: int) -> str:
    """The shim's fixed-width form (``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ``), which sorts as
    text, so record times compare with bounds without being parsed."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


# --- records and lines ----------------------------------------------------------------------


def parse_record(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """``(time, stream, ends_line, text)`` of one record (without its newline); ``None``
    for a line that is not one (skipped by readers)."""
    match = _RECORD.match(line)
    if match is None:
        return None
    return match[1].decode(), match[2].decode(), match[3] == b"F", match[4]


class _Joiner:
    """Joins each stream's ``P`` pieces up to its ``F`` record."""

    def __init__(self) -> None:
        self.pending: dict[str, list[bytes]] = {name: [] for name in STREAMS}
        self.last_time: dict[str, str] = {}

    def feed(self, record: tuple[str, str, bool, bytes]) -> LogLine | None:
        stamp, stream, ends, text = record
        pieces = self.pending[stream]
        if not ends:
            pieces.append(text)
            self.last_time[stream] = stamp
            return None
        if pieces:
            text = b"".join((*pieces, text))
            pieces.clear()
        return LogLine(stamp, stream, text)

    def flush(self) -> Iterator[LogLine]:
        """What is left: output that ended without a newline, oldest first."""
        left = [
            LogLine(self.last_time[name], name, b"".join(pieces), complete=False)
            for name, pieces in self.pending.items()
            if pieces
        ]
        for pieces in self.pending.values():
            pieces.clear()
        yield from sorted(left, key=lambda line: line.time)


def join_records(data: bytes) -> Iterator[LogLine]:
    """The lines of a whole log text (malformed records skipped)."""
    joiner = _Joiner()
    for raw in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        record = parse_record(raw)
        if record is not None:
            line = joiner.feed(record)
            if line is not None:
                yield line
    yield from joiner.flush()


# --- files ----------------------------------------------------------------------------------


class _History:
    """Sentinel: every record written before the request has been given."""


HISTORY_END: Final = _History()


def _open_chain(path: Path, skip: set[tuple[int, int]]) -> list[int]:
    """Descriptors of the log's files oldest first (``path.N`` … ``path.1``, ``path``),
    without those whose (device, inode) is in ``skip``."""
    names = []
    with contextlib.suppress(OSError):
        prefix = path.name + "."
        for entry in os.listdir(path.parent):
            if entry.startswith(prefix) and entry[len(prefix) :].isdigit():
                names.append((int(entry[len(prefix) :]), path.parent / entry))
    ordered = [name for index, name in sorted(names, reverse=True)] + [path]
    fds: list[int] = []
    seen = set(skip)
    for name in ordered:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if key in seen:
            os.close(fd)
            continue
        seen.add(key)
        fds.append(fd)
    return fds


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _records(
    path: Path,
    *,
    follow: bool,
    running: Callable[[], bool],
    stopping: Callable[[], bool],
    heartbeat: float,
) -> Iterator[tuple[str, str, bool, bytes] | _History | None]:
    """The records of every file oldest first, then ``HISTORY_END``; with ``follow``
    new records, ``None`` after each idle ``heartbeat``, until the container is not
    running and the log is drained."""
    done: set[tuple[int, int]] = set()
    fds = _open_chain(path, done)
    try:
        offset = 0
        pending = b""
        history = True
        idle_since = time.monotonic()
        drained_after_exit = False
        while True:
            if not fds:
                if history:
                    history = False
                    yield HISTORY_END
                if not follow or stopping() or not running():
                    return
                time.sleep(FOLLOW_PAUSE)
                fds = _open_chain(path, done)
                continue
            fd = fds[0]
            chunk = os.pread(fd, CHUNK, offset)
            if chunk:
                offset += len(chunk)
                idle_since = time.monotonic()
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    record = parse_record(line)
                    if record is not None:
                        yield record
                continue
            if len(fds) > 1:  # an older file is read to its end: on to the next
                done.add(_identity(fd))
                os.close(fds.pop(0))
                offset, pending = 0, b""  # no record spans two files
                continue
            # At the end of the newest file we hold.
            if history:
                history = False
                yield HISTORY_END
            if not follow or stopping():
                return
            newer = _newer_files(path, fd, done)
            if newer:  # rotated: finish this one (it is read to its end), go on
                done.add(_identity(fd))
                fds.extend(newer)
                continue
            if os.fstat(fd).st_size < offset:  # truncated in place (max_files 0)
                offset, pending = 0, b""
                continue
            if not running():
                if drained_after_exit:
                    return
                drained_after_exit = True  # one more pass: output written at the exit
                continue
            if time.monotonic() - idle_since >= heartbeat:
                idle_since = time.monotonic()
                yield None
            time.sleep(FOLLOW_PAUSE)
    finally:
        for fd in fds:
            os.close(fd)


def _newer_files(path: Path, fd: int, done: set[tuple[int, int]]) -> list[int]:
    """When the live file is no longer the one ``fd`` reads, the files written after it,
    oldest first; else ``[]``."""
    current = _identity(fd)
    try:
        live = os.stat(path)
    except FileNotFoundError:
        return []
    if (live.st_dev, live.st_ino) == current:
        return []
    fds = _open_chain(path, done)
    identities = [_identity(each) for each in fds]
    keep = identities.index(current) + 1 if current in identities else 0
    for each in fds[:keep]:
        os.close(each)
    return fds[keep:]


def read_lines(
    path: Path,
    *,
    tail: int | None = None,
    follow: bool = False,
    streams: tuple[str, ...] = STREAMS,
    since: str | None = None,
    until: str | None = None,
    running: Callable[[], bool] = lambda: False,
    stopping: Callable[[], bool] = lambda: False,
    heartbeat: float = 1.0,
) -> Iterator[LogLine | None]:
    """The log's lines of ``streams`` with ``since <= time <= until`` (times in
    :func:`format_time`'s form), the last ``tail`` of those written so far, then with
    ``follow`` the new ones; ``None`` after each idle ``heartbeat`` so a server can
    notice a client that left."""
    joiner = _Joiner()
    kept: collections.deque[LogLine] = collections.deque(maxlen=tail)

    def wanted(line: LogLine) -> bool:
        return line.stream in streams and (since is None or line.time >= since)

    live = False
    for item in _records(
        path, follow=follow, running=running, stopping=stopping, heartbeat=heartbeat
    ):
        if item is None:
            if until is not None and format_time(time.time_ns()) > until:
                return
            yield None
            continue
        if isinstance(item, _History):
            live = True
            if tail is None:
                continue
            if not follow:  # output that ended without a newline counts as a line
                kept.extend(
                    line
                    for line in joiner.flush()
                    if wanted(line) and (until is None or line.time <= until)
                )
            yield from kept
            kept.clear()
            continue
        line = joiner.feed(item)
        if line is None:
            continue
        if until is not None and line.time > until:
            return
        if not wanted(line):
            continue
        if live or tail is None:
            yield line
        else:
            kept.append(line)
    for line in joiner.flush():
        if wanted(line) and (until is None or line.time <= until):
            yield line
