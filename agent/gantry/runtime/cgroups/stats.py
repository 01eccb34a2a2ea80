"""A cgroup's resource statistics, read from whichever side each controller lives on.

:class:`Stats` holds what monitoring tools already understand: CPU time (total, user,
system, throttling), memory usage and the working set (usage minus inactive file pages,
as cAdvisor computes it), OOM and OOM-kill counts, pids, I/O bytes and operations per
device, hugetlb usage. :meth:`Stats.to_json` gives runc's ``events --stats`` ``data``
shape (``cpu.usage.total`` in nanoseconds, ``blkio.ioServiceBytesRecursive`` entries…)
with Gantry's additions (``memory.working_set``, ``memory.oom_events``) beside runc's keys.

A controller this host does not have is left out (``None``), never reported as zero.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from gantry.linux.cgroupfs import (
    parse_blkio_v1,
    parse_flat_keyed,
    parse_nested_keyed,
    read_str,
)
from gantry.runtime.cgroups.resources import Target

__all__ = [
    "BlkioEntry",
    "CpuStats",
    "HugetlbStats",
    "MemoryData",
    "MemoryStats",
    "PidsStats",
    "Stats",
    "read_stats",
]

_NS_PER_USEC: Final = 1000
_NS_PER_SEC: Final = 1_000_000_000
# USER_HZ, the unit of cpuacct.stat: 100 on every Linux ABI (sysconf(_SC_CLK_TCK)).
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
# What v1 reads as "no limit" (PAGE_COUNTER_MAX pages, page-rounded LONG_MAX).
_V1_UNLIMITED_FLOOR: Final = 1 << 62


@dataclass(frozen=True)
class CpuStats:
    total: int = 0
    """CPU time, nanoseconds; ``user`` and ``kernel`` split it."""
    user: int = 0
    kernel: int = 0
    percpu: tuple[int, ...] = ()
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0
    """Nanoseconds."""


@dataclass(frozen=True)
class MemoryData:
    usage: int = 0
    max: int = 0
    """Peak usage (0 where the kernel keeps none)."""
    limit: int = 0
    """0 for no limit."""
    failcnt: int = 0


@dataclass(frozen=True)
class MemoryStats:
    usage: MemoryData = field(default_factory=MemoryData)
    swap: MemoryData | None = None
    """v1: memory+swap (``memsw``); v2: swap alone."""
    cache: int = 0
    working_set: int = 0
    """usage - inactive_file (cAdvisor's container_memory_working_set_bytes)."""
    oom_events: int | None = None
    """Times the cgroup hit its limit and the OOM killer was invoked (v2 ``oom``)."""
    oom_kill: int | None = None
    """Processes killed by the OOM killer in the cgroup."""
    under_oom: bool = False
    oom_kill_disable: bool = False
    raw: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PidsStats:
    current: int = 0
    limit: int = 0
    """0 for no limit, as runc reports ``max``."""


@dataclass(frozen=True)
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass(frozen=True)
class HugetlbStats:
    usage: int = 0
    max: int = 0
    failcnt: int = 0


@dataclass(frozen=True)
class Stats:
    """One reading of a cgroup's statistics (``None``: the host has no such controller)."""

    cpu: CpuStats | None = None
    memory: MemoryStats | None = None
    pids: PidsStats | None = None
    io_service_bytes: tuple[BlkioEntry, ...] = ()
    io_serviced: tuple[BlkioEntry, ...] = ()
    hugetlb: Mapping[str, HugetlbStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """runc's ``events --stats`` data object, plus Gantry's extra memory keys."""
        data: dict[str, Any] = {}
        if self.cpu is not None:
            cpu = self.cpu
            data["cpu"] = {
                "usage": {
                    "total": cpu.total,
                    "percpu": list(cpu.percpu),
                    "kernel": cpu.kernel,
                    "user": cpu.user,
                },
                "throttling": {
                    "periods": cpu.periods,
                    "throttled_periods": cpu.throttled_periods,
                    "throttled_time": cpu.throttled_time,
                },
            }
        if self.memory is not None:
            memory = self.memory
            entry: dict[str, Any] = {
                "cache": memory.cache,
                "usage": asdict(memory.usage),
                "raw": dict(memory.raw),
                "working_set": memory.working_set,
                "oom_kill_disable": memory.oom_kill_disable,
                "under_oom": memory.under_oom,
            }
            if memory.swap is not None:
                entry["swap"] = asdict(memory.swap)
            if memory.oom_events is not None:
                entry["oom_events"] = memory.oom_events
            if memory.oom_kill is not None:
                entry["oom_kill"] = memory.oom_kill
            data["memory"] = entry
        if self.pids is not None:
            data["pids"] = asdict(self.pids)
        data["blkio"] = {
            "ioServiceBytesRecursive": [asdict(e) for e in self.io_service_bytes],
            "ioServicedRecursive": [asdict(e) for e in self.io_serviced],
        }
        data["hugetlb"] = {size: asdict(value) for size, value in sorted(self.hugetlb.items())}
        return data


# --- reading ------------------------------------------------------------------------------------


def _text(directory: Path, name: str) -> str | None:
    try:
        return read_str(directory / name)
    except FileNotFoundError:
        return None


def _int(directory: Path, name: str, default: int = 0) -> int:
    text = _text(directory, name)
    if text is None:
        return default
    value = text.strip()
    if value == "max":
        return 0
    return int(value)


def _keyed(directory: Path, name: str) -> dict[str, int]:
    text = _text(directory, name)
    return parse_flat_keyed(text) if text is not None else {}


def _v1_limit(value: int) -> int:
    return 0 if value >= _V1_UNLIMITED_FLOOR else value


def _cpu(targets: Mapping[str, Target]) -> CpuStats | None:
    cpu = targets.get("cpu")
    acct = targets.get("cpuacct")
    if cpu is None and acct is None:
        return None
    if cpu is not None and cpu.side == "v2":
        stat = _keyed(cpu.directory, "cpu.stat")
        return CpuStats(
            total=stat.get("usage_usec", 0) * _NS_PER_USEC,
            user=stat.get("user_usec", 0) * _NS_PER_USEC,
            kernel=stat.get("system_usec", 0) * _NS_PER_USEC,
            periods=stat.get("nr_periods", 0),
            throttled_periods=stat.get("nr_throttled", 0),
            throttled_time=stat.get("throttled_usec", 0) * _NS_PER_USEC,
        )
    total = user = kernel = 0
    percpu: tuple[int, ...] = ()
    if acct is not None:
        total = _int(acct.directory, "cpuacct.usage")
        percpu_text = _text(acct.directory, "cpuacct.usage_percpu")
        percpu = tuple(int(v) for v in (percpu_text or "").split())
        ticks = _keyed(acct.directory, "cpuacct.stat")
        user = ticks.get("user", 0) * _NS_PER_SEC // _CLOCK_TICKS
        kernel = ticks.get("system", 0) * _NS_PER_SEC // _CLOCK_TICKS
    throttle = _keyed(cpu.directory, "cpu.stat") if cpu is not None else {}
    return CpuStats(
        total=total,
        user=user,
        kernel=kernel,
        percpu=percpu,
        periods=throttle.get("nr_periods", 0),
        throttled_periods=throttle.get("nr_throttled", 0),
        throttled_time=throttle.get("throttled_time", 0),
    )


def _memory(targets: Mapping[str, Target]) -> MemoryStats | None:
    target = targets.get("memory")
    if target is None:
        return None
    directory = target.directory
    raw = _keyed(directory, "memory.stat")
    if target.side == "v1":
        usage = MemoryData(
            usage=_int(directory, "memory.usage_in_bytes"),
            max=_int(directory, "memory.max_usage_in_bytes"),
            limit=_v1_limit(_int(directory, "memory.limit_in_bytes")),
            failcnt=_int(directory, "memory.failcnt"),
        )
        swap = None
        if (directory / "memory.memsw.usage_in_bytes").exists():
            swap = MemoryData(
                usage=_int(directory, "memory.memsw.usage_in_bytes"),
                max=_int(directory, "memory.memsw.max_usage_in_bytes"),
                limit=_v1_limit(_int(directory, "memory.memsw.limit_in_bytes")),
                failcnt=_int(directory, "memory.memsw.failcnt"),
            )
        control = _keyed(directory, "memory.oom_control")
        # total_* counts the cgroup with its descendants, as usage_in_bytes does.
        inactive = raw.get("total_inactive_file", raw.get("inactive_file", 0))
        return MemoryStats(
            usage=usage,
            swap=swap,
            cache=raw.get("total_cache", raw.get("cache", 0)),
            working_set=max(0, usage.usage - inactive),
            oom_events=None,  # v1 counts only kills (memory.oom_control's oom_kill)
            oom_kill=control.get("oom_kill"),
            under_oom=bool(control.get("under_oom", 0)),
            oom_kill_disable=bool(control.get("oom_kill_disable", 0)),
            raw=raw,
        )
    events = _keyed(directory, "memory.events")
    usage = MemoryData(
        usage=_int(directory, "memory.current"),
        max=_int(directory, "memory.peak"),
        limit=_int(directory, "memory.max"),
        failcnt=events.get("max", 0),
    )
    swap = None
    if (directory / "memory.swap.current").exists():
        swap_events = _keyed(directory, "memory.swap.events")
        swap = MemoryData(
            usage=_int(directory, "memory.swap.current"),
            max=_int(directory, "memory.swap.peak"),
            limit=_int(directory, "memory.swap.max"),
            failcnt=swap_events.get("fail", 0),
        )
    return MemoryStats(
        usage=usage,
        swap=swap,
        cache=raw.get("file", 0),
        working_set=max(0, usage.usage - raw.get("inactive_file", 0)),
        oom_events=events.get("oom", 0),
        oom_kill=events.get("oom_kill", 0),
        raw=raw,
    )


def _pids(targets: Mapping[str, Target]) -> PidsStats | None:
    target = targets.get("pids")
    if target is None:
        return None
    return PidsStats(
        current=_int(target.directory, "pids.current"),
        limit=_int(target.directory, "pids.max"),
    )


def _device(key: str) -> tuple[int, int] | None:
    major, sep, minor = key.partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


def _blkio_v1(directory: Path, names: tuple[str, ...]) -> tuple[BlkioEntry, ...]:
    for name in names:
        text = _text(directory, name)
        if text is None:
            continue
        entries: list[BlkioEntry] = []
        for key, ops in parse_blkio_v1(text).items():
            device = _device(key)
            if device is None:
                continue
            entries.extend(
                BlkioEntry(device[0], device[1], op, value) for op, value in ops.items() if op
            )
        if entries:
            return tuple(entries)
    return ()


def _io(targets: Mapping[str, Target]) -> tuple[tuple[BlkioEntry, ...], tuple[BlkioEntry, ...]]:
    target = targets.get("blkio") or targets.get("io")
    if target is None:
        return (), ()
    directory = target.directory
    if target.side == "v1":
        # CFQ's files, else BFQ's, else the throttle layer's (which counts every request).
        suffixes = ("", "bfq.", "throttle.")
        return (
            _blkio_v1(directory, tuple(f"blkio.{s}io_service_bytes_recursive" for s in suffixes)),
            _blkio_v1(directory, tuple(f"blkio.{s}io_serviced_recursive" for s in suffixes)),
        )
    text = _text(directory, "io.stat") or ""
    service_bytes: list[BlkioEntry] = []
    serviced: list[BlkioEntry] = []
    for key, values in parse_nested_keyed(text).items():
        device = _device(key)
        if device is None:
            continue
        for op, bytes_key, ios_key in (("Read", "rbytes", "rios"), ("Write", "wbytes", "wios")):
            service_bytes.append(BlkioEntry(*device, op, int(values.get(bytes_key, 0))))
            serviced.append(BlkioEntry(*device, op, int(values.get(ios_key, 0))))
    return tuple(service_bytes), tuple(serviced)


def _hugetlb(targets: Mapping[str, Target]) -> dict[str, HugetlbStats]:
    target = targets.get("hugetlb")
    if target is None:
        return {}
    directory = target.directory
    found: dict[str, HugetlbStats] = {}
    v1 = target.side == "v1"
    suffix = ".limit_in_bytes" if v1 else ".max"
    for entry in os.scandir(directory):
        name = entry.name
        if not name.startswith("hugetlb.") or not name.endswith(suffix) or ".rsvd" in name:
            continue
        size = name[len("hugetlb.") : -len(suffix)]
        if v1:
            found[size] = HugetlbStats(
                usage=_int(directory, f"hugetlb.{size}.usage_in_bytes"),
                max=_int(directory, f"hugetlb.{size}.max_usage_in_bytes"),
                failcnt=_int(directory, f"hugetlb.{size}.failcnt"),
            )
        else:
            events = _keyed(directory, f"hugetlb.{size}.events")
            # v2 keeps no peak: max stays 0, as runc reports it there.
            found[size] = HugetlbStats(
                usage=_int(directory, f"hugetlb.{size}.current"),
                failcnt=events.get("max", 0),
            )
    return found


def read_stats(targets: Mapping[str, Target]) -> Stats:
    """Read every controller in ``targets`` (``{controller: where}``)."""
    service_bytes, serviced = _io(targets)
    return Stats(
        cpu=_cpu(targets),
        memory=_memory(targets),
        pids=_pids(targets),
        io_service_bytes=service_bytes,
        io_serviced=serviced,
        hugetlb=_hugetlb(targets),
    )
