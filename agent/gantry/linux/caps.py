"""Capabilities: names and numbers, capget/capset (v3), and the bounding and ambient sets.

capset(2) changes only the calling *thread*. Call it in a single-threaded process (a fresh
fork) or the other threads keep their capabilities.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gantry.linux import prctl
from gantry.linux._libc import libc_call

# Index = capability number (include/uapi/linux/capability.h). A kernel may know fewer
# (cap_last_cap) or, once newer than this table, more; see last_cap() and cap_name().
CAP_NAMES: Final[tuple[str, ...]] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBERS: Final[dict[str, int]] = {name: number for number, name in enumerate(CAP_NAMES)}

CAP_LAST_CAP_PATH: Final = Path("/proc/sys/kernel/cap_last_cap")
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


def last_cap(path: Path = CAP_LAST_CAP_PATH) -> int:
    """Return the highest capability number the running kernel knows."""
    return int(path.read_text().strip())


def cap_number(name: str) -> int:
    """Return the number of capability ``name``.

    Accepts ``CAP_SYS_ADMIN``, ``SYS_ADMIN`` or ``sys_admin``, and ``CAP_<n>`` for a number
    newer than this table. ``ValueError`` names an unknown capability.
    """
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full in _NUMBERS:
        return _NUMBERS[full]
    suffix = full[len("CAP_") :]
    if suffix.isdigit():
        return int(suffix)
    raise ValueError(f"unknown capability {name!r}")


def cap_name(number: int) -> str:
    """Return the ``CAP_*`` name of ``number`` (``CAP_<n>`` past the end of the table)."""
    if number < 0:
        raise ValueError(f"capability numbers are not negative: {number}")
    return CAP_NAMES[number] if number < len(CAP_NAMES) else f"CAP_{number}"


def known_caps(last: int | None = None) -> tuple[str, ...]:
    """Return the names of capabilities 0..``last`` (default: the running kernel's)."""
    top = last_cap() if last is None else last
    return tuple(cap_name(number) for number in range(top + 1))


def is_supported(name: str, last: int | None = None) -> bool:
    """True when the running kernel (or one with ``last``) knows capability ``name``."""
    top = last_cap() if last is None else last
    return cap_number(name) <= top


def to_mask(caps: Iterable[int]) -> int:
    """Return the bit mask of capability numbers ``caps``."""
    mask = 0
    for cap in caps:
        if cap < 0 or cap > 63:
            raise ValueError(f"capability number out of range: {cap}")
        mask |= 1 << cap
    return mask


def from_mask(mask: int) -> frozenset[int]:
    """Return the capability numbers set in ``mask`` (as in /proc/<pid>/status Cap* lines)."""
    return frozenset(bit for bit in range(64) if mask >> bit & 1)


def parse_names(names: Iterable[str]) -> frozenset[int]:
    """Return the numbers of capability ``names``; ``ValueError`` names the first unknown."""
    return frozenset(cap_number(name) for name in names)


@dataclass(frozen=True)
class CapSets:
    """The effective, permitted and inheritable capability sets of a thread."""

    effective: frozenset[int] = frozenset()
    permitted: frozenset[int] = frozenset()
    inheritable: frozenset[int] = frozenset()


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CapDataV3 = _CapData * 2  # version 3 carries two 32-bit words per set


def capget(pid: int = 0) -> CapSets:
    """Return the capability sets of thread ``pid`` (0: the calling thread)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = _CapDataV3()
    libc_call("capget", ctypes.byref(header), data, path=f"pid {pid}")

    def joined(field: str) -> frozenset[int]:
        low = int(getattr(data[0], field))
        high = int(getattr(data[1], field))
        return from_mask(low | high << 32)

    return CapSets(joined("effective"), joined("permitted"), joined("inheritable"))


def capset(sets: CapSets) -> None:
    """Set the calling thread's effective, permitted and inheritable sets to ``sets``.

    The kernel allows only shrinking permitted, effective within permitted, and inheritable
    within permitted|bounding (unless CAP_SETPCAP).
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataV3()
    for field in ("effective", "permitted", "inheritable"):
        mask = to_mask(getattr(sets, field))
        setattr(data[0], field, mask & 0xFFFFFFFF)
        setattr(data[1], field, mask >> 32)
    libc_call("capset", ctypes.byref(header), data, path="self")


def bounding_set(last: int | None = None) -> frozenset[int]:
    """Return the calling thread's bounding set."""
    top = last_cap() if last is None else last
    return frozenset(cap for cap in range(top + 1) if prctl.capbset_read(cap))


def drop_bounding(caps: Iterable[int]) -> None:
    """Remove ``caps`` from the bounding set (needs CAP_SETPCAP; irreversible)."""
    for cap in sorted(set(caps)):
        prctl.capbset_drop(cap)


def limit_bounding(keep: Iterable[int], last: int | None = None) -> None:
    """Drop every capability not in ``keep`` from the bounding set."""
    kept = frozenset(keep)
    drop_bounding(cap for cap in bounding_set(last) if cap not in kept)


def ambient_set(last: int | None = None) -> frozenset[int]:
    """Return the calling thread's ambient set."""
    top = last_cap() if last is None else last
    return frozenset(cap for cap in range(top + 1) if prctl.ambient_is_set(cap))


def set_ambient(caps: Iterable[int]) -> None:
    """Make the ambient set exactly ``caps`` (each must be permitted and inheritable)."""
    prctl.ambient_clear_all()
    for cap in sorted(set(caps)):
        prctl.ambient_raise(cap)
