"""What the agent tells about its host: ``GET /v1/info`` and the ``/metrics`` figures."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from gantry import __version__
from gantry.engine import blkio
from gantry.runtime.cgroups import CgroupError, layout, open_cgroup

if TYPE_CHECKING:
    from gantry.engine.core import Engine

__all__ = ["container_figures", "host_info"]

_LAYOUT_NAMES = {"unified": "v2", "legacy": "v1", "hybrid": "hybrid", "none": "none"}


def _memory_bytes() -> int | None:
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/meminfo", encoding="ascii") as handle,
    ):
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def host_info(engine: Engine) -> dict[str, Any]:
    uname = os.uname()
    detected = layout.detect()
    blkio_support = blkio.host_support(detected)
    counts = dict.fromkeys(("created", "running", "paused", "stopped", "restarting"), 0)
    for summary in engine.list():
        counts[summary["status"]] = counts.get(summary["status"], 0) + 1
    disk = os.statvfs(engine.root)
    return {
        "version": __version__,
        "api_version": "v1",
        "hostname": socket.gethostname(),
        "root": str(engine.root),
        "started_at": engine.started_at,
        "uptime_seconds": round(time.monotonic() - engine.started_monotonic, 3),
        "kernel": {"release": uname.release, "version": uname.version, "machine": uname.machine},
        "cgroup": {
            "layout": _LAYOUT_NAMES.get(detected.mode, detected.mode),
            "v1_controllers": list(detected.v1_controllers),
            "v2_controllers": list(detected.v2_available),
            "v2_mount": None if detected.v2_mount is None else detected.v2_mount.mount_point,
        },
        "containers": {"total": sum(counts.values()), **counts},
        "capacity": {
            "cpus": os.cpu_count(),
            "memory_bytes": _memory_bytes(),
            "root_disk_bytes": disk.f_blocks * disk.f_frsize,
            "root_disk_free_bytes": disk.f_bavail * disk.f_frsize,
        },
        "launcher": engine.launching.info(),
        "features": {
            "images": True,
            "network": True,
            "exec": engine.exec_available,
            "log_timestamps": True,
            "cgroup_update": engine.resources_in_place,
            "resource_limits": True,
            "blkio_weight": blkio_support["weight"],
            "blkio_throttle": blkio_support["throttle"],
        },
    }


def container_figures(engine: Engine) -> list[dict[str, Any]]:
    """Per running container: its name and id, start time, process count, CPU time and
    memory from its cgroup's statistics."""
    figures: list[dict[str, Any]] = []
    now = time.time()
    for row in engine.store.containers():
        runtime = engine._runtime(row)
        if runtime is None or runtime.state is None or runtime.status not in ("running", "paused"):
            continue
        item: dict[str, Any] = {"name": row.name, "id": row.id, "last_seen": now}
        if row.started_at is not None:
            from gantry.engine.core import _parse_time

            item["start_time"] = _parse_time(row.started_at)
        with contextlib.suppress(CgroupError, OSError):
            cgroup = open_cgroup(runtime.state.cgroup, engine.cgroup_layout)
            item["processes"] = len(cgroup.all_pids())
            stats = cgroup.stats()
            if stats.cpu is not None:
                item["cpu_seconds"] = stats.cpu.total / 1e9
            if stats.memory is not None:
                item["memory_usage"] = float(stats.memory.usage.usage)
                item["memory_working_set"] = float(stats.memory.working_set)
                if 0 < stats.memory.usage.limit < 1 << 62:
                    item["memory_limit"] = float(stats.memory.usage.limit)
        spec_memory = row.spec["resources"]["memory"]
        if spec_memory is not None:
            item.setdefault("memory_limit", float(spec_memory))
        figures.append(item)
    return figures
