"""Pure conversions between OCI resource values and cgroup file contents (v1 and v2).

Every function here follows runc's (opencontainers/cgroups) mapping, so a spec means the
same on Gantry as on runc: cpu shares to ``cpu.weight`` with runc's current quadratic fit,
blkio weight to ``io.weight``, the memory+swap total of the spec to v2's swap-only
``memory.swap.max``, quota and period to ``cpu.max``. No file is touched here.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "FULL_ACCESS",
    "blkio_to_io_weight",
    "cpu_max",
    "hugepage_name",
    "io_max_line",
    "limit_text",
    "shares_to_weight",
    "swap_v2",
    "v1_device_rule",
    "weight_device_line",
]

FULL_ACCESS: Final = "rwm"

_MIN_SHARES: Final = 2
_MAX_SHARES: Final = 262144
_MAX_WEIGHT: Final = 10000


def shares_to_weight(shares: int) -> int:
    """``cpu.shares`` (2..262144) to ``cpu.weight`` (1..10000); 0 stays 0 (unset).

    runc's formula since 1.3 (and crun's since 1.23): a quadratic in log2(shares) that maps
    2 to 1, 1024 (the default) to 100 and 262144 to 10000, rounded up.
    """
    if shares == 0:
        return 0
    if shares <= _MIN_SHARES:
        return 1
    if shares >= _MAX_SHARES:
        return _MAX_WEIGHT
    log = math.log2(shares)
    exponent = (log * log + 125 * log) / 612.0 - 7.0 / 34.0
    return math.ceil(math.pow(10, exponent))


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight (10..1000) to ``io.weight`` (1..10000), linearly; 0 stays 0 (unset)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def limit_text(value: int | None) -> str | None:
    """A limit as a v2 file wants it: ``None`` for unset (0 or absent), ``max`` for -1."""
    if value is None or value == 0:
        return None
    if value < 0:
        return "max"
    return str(value)


def cpu_max(quota: int | None, period: int | None) -> str | None:
    """``cpu.max`` for a quota and period (microseconds); ``None`` when neither is set.

    A quota of -1 (or none) is ``max``; without a period only the quota is written and the
    kernel keeps the period it has (runc does the same).
    """
    quota = quota or 0
    period = period or 0
    if quota == 0 and period == 0:
        return None
    text = str(quota) if quota > 0 else "max"
    if period:
        text += f" {period}"
    return text


def swap_v2(swap: int | None, memory: int | None) -> int:
    """The spec's memory+swap total as v2's swap-only limit (``memory.swap.max``).

    Returns -1 for ``max`` and 0 for unset; raises ``ValueError`` for a combination v2
    cannot express (runc's rules: swap needs a memory limit and cannot be below it).
    """
    swap = swap or 0
    memory = memory or 0
    # As v1: unlimited memory with swap unsaid means unlimited swap too.
    if memory == -1 and swap == 0:
        return -1
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise ValueError("a swap limit needs a memory limit on cgroup v2")
    if memory < 0:
        raise ValueError(f"invalid memory limit {memory}")
    if swap < memory:
        raise ValueError(f"memory+swap limit {swap} is below the memory limit {memory}")
    return swap - memory


def hugepage_name(size_in_kb: int) -> str:
    """The name the hugetlb files use for a page size (``2048`` kB -> ``2MB``, ``1GB``)."""
    size = float(size_in_kb * 1024)
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    index = 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{size:g}{units[index]}"


def _number(value: int | None) -> str:
    return "*" if value is None or value < 0 else str(value)


def v1_device_rule(kind: str, major: int | None, minor: int | None, access: str) -> str:
    """One ``devices.allow``/``devices.deny`` line: ``c 1:3 rwm``, ``b 8:* r``."""
    return f"{kind} {_number(major)}:{_number(minor)} {access}"


def io_max_line(major: int, minor: int, key: str, rate: int) -> str:
    """One ``io.max`` write: ``8:0 rbps=1048576`` (a rate of 0 means no limit: ``max``)."""
    return f"{major}:{minor} {key}={rate if rate > 0 else 'max'}"


def weight_device_line(major: int, minor: int, weight: int) -> str:
    """One per-device weight write (``blkio.weight_device``, ``io.bfq.weight``): ``8:0 500``."""
    return f"{major}:{minor} {weight}"
