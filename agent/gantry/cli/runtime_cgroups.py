"""``gantry-runtime update`` and ``events``: a running container's limits and statistics.

``update`` takes runc update's flags and ``-r FILE`` (a ``linux.resources`` JSON object,
``-`` for stdin); flags override the file. The values are validated as the spec's are,
then applied in place through :meth:`gantry.runtime.cgroups.Cgroup.update`.

``events --stats`` prints one ``{"type": "stats", "id": …, "data": …}`` object, the data
in runc's shape; without ``--stats`` it prints one every ``--interval`` (5s, as runc) and
an ``{"type": "oom"}`` event whenever the cgroup's OOM kill count grows, until the
container stops.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gantry.runtime import supervisor as sv
from gantry.runtime.spec import SpecError, load_resources

__all__ = ["VERBS", "add_verbs", "parse_duration", "parse_size"]

VERBS: Final = ("update", "events")

Handler = Callable[[argparse.Namespace], int]
VerbAdder = Callable[[str, Handler, str], argparse.ArgumentParser]


class UpdateError(Exception):
    """A bad ``update``/``events`` argument; the message names the flag."""


_SIZE: Final = re.compile(r"(-?[0-9]+)\s*([kmgtp]?)(i?b)?", re.IGNORECASE)
_UNITS: Final = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """``32m``, ``1G``, ``512KiB``, ``4096`` or ``-1`` to bytes (binary units, as runc's
    ``units.RAMInBytes``). ``ValueError`` otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 4096, 32m, 1g or -1)")
    number = int(match.group(1))
    return int(number * 1024 ** _UNITS[match.group(2).lower()])


_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")
_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``5s``, ``500ms``, ``1m`` or plain seconds to seconds (> 0)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 5s, 500ms or 1m)")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {text!r}")
    return seconds


# flag -> (path in the resources object, parser)
_FLAGS: Final[dict[str, tuple[tuple[str, str], Callable[[str], Any]]]] = {
    "memory": (("memory", "limit"), parse_size),
    "memory_reservation": (("memory", "reservation"), parse_size),
    "memory_swap": (("memory", "swap"), parse_size),
    "kernel_memory": (("memory", "kernel"), parse_size),
    "kernel_memory_tcp": (("memory", "kernelTCP"), parse_size),
    "cpu_share": (("cpu", "shares"), int),
    "cpu_quota": (("cpu", "quota"), int),
    "cpu_period": (("cpu", "period"), int),
    "cpu_burst": (("cpu", "burst"), int),
    "cpu_rt_period": (("cpu", "realtimePeriod"), int),
    "cpu_rt_runtime": (("cpu", "realtimeRuntime"), int),
    "cpu_idle": (("cpu", "idle"), int),
    "cpuset_cpus": (("cpu", "cpus"), str),
    "cpuset_mems": (("cpu", "mems"), str),
    "pids_limit": (("pids", "limit"), int),
    "blkio_weight": (("blockIO", "weight"), int),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _read_resources_file(name: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise UpdateError(f"-r {name}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UpdateError(f"-r {name}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UpdateError(f"-r {name}: expected a JSON object (linux.resources)")
    return data


def resources_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The resources object ``update``'s ``-r`` file and flags describe (flags win)."""
    data: dict[str, Any] = _read_resources_file(args.resources) if args.resources else {}
    for name, ((group, key), convert) in _FLAGS.items():
        raw = getattr(args, name)
        if raw is None:
            continue
        try:
            value = convert(raw)
        except ValueError as exc:
            raise UpdateError(f"{_flag(name)}: {exc}") from None
        section = data.setdefault(group, {})
        if not isinstance(section, dict):
            raise UpdateError(f"{_flag(name)}: the -r file's {group!r} is not an object")
        section[key] = value
    return data


def _field_flags(path: str) -> str:
    for name, ((group, key), _convert) in _FLAGS.items():
        if path == f"{group}.{key}":
            return f" ({_flag(name)})"
    return ""


def cmd_update(args: argparse.Namespace) -> int:
    data = resources_from_args(args)
    if not data:
        raise UpdateError("nothing to update: give -r FILE or a flag such as --memory")
    try:
        resources = load_resources(data)
    except SpecError as exc:
        problems = "; ".join(f"{path}{_field_flags(path)}: {msg}" for path, msg in exc.errors)
        raise UpdateError(f"invalid resources: {problems}") from None
    with sv.locked(Path(args.root).absolute(), args.id) as container:
        if container.state is None or container.status == "stopped":
            raise UpdateError(f"container {args.id!r} is not running: nothing to update")
        container.cgroup().update(resources)
    return 0


def _stats_event(container: sv.Container) -> dict[str, Any]:
    return {"type": "stats", "id": container.id, "data": container.cgroup().stats().to_json()}


def _print(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    root = Path(args.root).absolute()
    try:
        interval = parse_duration(args.interval)
    except ValueError as exc:
        raise UpdateError(f"--interval: {exc}") from None
    container = sv.find(root, args.id)
    if container.state is None or container.status == "stopped":
        raise UpdateError(f"container {args.id!r} is not running")
    if args.stats:
        _print(_stats_event(container))
        return 0
    kills: int | None = None
    while True:
        container = sv.find(root, args.id)
        if container.state is None or container.status == "stopped":
            return 0
        event = _stats_event(container)
        memory = event["data"].get("memory", {})
        count = memory.get("oom_kill", memory.get("oom_events"))
        if kills is not None and count is not None and count > kills:
            _print({"type": "oom", "id": container.id})
        kills = count
        _print(event)
        time.sleep(interval)


def add_verbs(verb: VerbAdder) -> None:
    """Register ``update`` and ``events`` through ``gantry-runtime``'s verb helper."""
    update = verb("update", cmd_update, "change a running container's resource limits")
    update.add_argument(
        "--resources", "-r", help="a linux.resources JSON file ('-' for stdin); flags override it"
    )
    helps = {
        "memory": "memory limit in bytes (32m, 1g, -1 for none)",
        "memory_reservation": "memory soft limit in bytes",
        "memory_swap": "memory+swap limit in bytes (-1 for unlimited swap)",
        "kernel_memory": "ignored, as runc ignores it",
        "kernel_memory_tcp": "ignored, as runc ignores it",
        "cpu_share": "CPU shares (relative weight; cpu.weight on v2)",
        "cpu_quota": "CPU time per period in microseconds (-1 for none)",
        "cpu_period": "CFS period in microseconds",
        "cpu_burst": "CFS burst in microseconds",
        "cpu_rt_period": "realtime period in microseconds (v1)",
        "cpu_rt_runtime": "realtime runtime in microseconds (v1)",
        "cpu_idle": "1 to make the cgroup SCHED_IDLE",
        "cpuset_cpus": "CPUs to run on (0-3,7)",
        "cpuset_mems": "memory nodes to use",
        "pids_limit": "maximum number of processes (-1 for none)",
        "blkio_weight": "block I/O weight, 10 to 1000",
    }
    for name, text in helps.items():
        update.add_argument(_flag(name), dest=name, metavar="VALUE", help=text)
    update.add_argument("id")
    events = verb("events", cmd_events, "print a container's resource statistics as JSON")
    events.add_argument("--stats", action="store_true", help="print the statistics once")
    events.add_argument("--interval", default="5s", help="time between statistics (5s)")
    events.add_argument("id")


ERRORS: Final = (UpdateError,)
"""The errors whose message ``gantry-runtime`` prints as they are."""
