"""Applying ``linux.resources`` to a cgroup: first a plan, then the writes.

:func:`plan` turns the spec's resources into the exact file writes for the side (v1 or v2)
each controller lives on, following runc's mapping (see :mod:`.convert`). It reads only:
which files the cgroup directories have (a v1 kernel without swap accounting has no
``memory.memsw.*``, a v1 blkio with BFQ has ``blkio.bfq.weight`` rather than
``blkio.weight``) and, for a v1 memory update, the current limit (runc's write order).
Every value the host cannot honour is collected as ``(field, message)``, and one
:class:`ResourceError` lists them all before anything is written.

:func:`execute` then writes in order. If a write fails (the kernel refusing a memory limit
below the current usage, a cpuset the parent does not have), the single-value files
already written are put back as they were and the error names the field.

Devices are the exception to "one file per value": v1 takes ``devices.allow``/``deny``
lines; v2 has no file at all and takes a ``BPF_CGROUP_DEVICE`` program
(:mod:`gantry.runtime.cgroups.devices`), attached by :func:`execute` too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gantry.linux.cgroupfs import read_str
from gantry.runtime.cgroups import CgroupError
from gantry.runtime.cgroups import convert as cv
from gantry.runtime.cgroups.devices import DeviceRule, effective_rules
from gantry.runtime.cgroups.layout import Side
from gantry.runtime.spec import (
    CPU,
    BlockIO,
    Device,
    Memory,
    Network,
    Resources,
    ThrottleDevice,
)

__all__ = [
    "FIELD",
    "Plan",
    "ResourceError",
    "Target",
    "Write",
    "execute",
    "plan",
]

_log = logging.getLogger(__name__)

FIELD: Final = "linux.resources"


class ResourceError(CgroupError):
    """Resources that cannot be applied; ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]], path: Path | None = None) -> None:
        self.errors = list(errors)
        text = "; ".join(f"{name}: {message}" for name, message in self.errors)
        super().__init__(text, path)


@dataclass(frozen=True)
class Target:
    """Where one controller's files are: the side that drives it, and the directory."""

    side: Side
    directory: Path


@dataclass(frozen=True)
class Write:
    """One write of ``value`` to ``directory/file``, for the spec field ``field``."""

    field: str
    directory: Path
    file: str
    value: str
    keyed: bool = False
    """A file taking one line per device or key (``io.max``, ``devices.allow``): opened
    for appending, and not restored on failure (its old line cannot be read back alone)."""
    readback: bool = False
    """Read the file back and fail when the kernel clamped the value (v1 cpu.shares)."""

    @property
    def path(self) -> Path:
        return self.directory / self.file


@dataclass
class Plan:
    """What :func:`execute` does: the writes in order, and the device program (v2)."""

    writes: list[Write] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    device_program: tuple[Path, tuple[DeviceRule, ...]] | None = None
    """``(v2 cgroup directory, rules)`` when a BPF device program is to be attached."""


class _Planner:
    def __init__(self, targets: Mapping[str, Target], prefix: str) -> None:
        self.targets = targets
        self.prefix = prefix
        self.errors: list[tuple[str, str]] = []
        self.result = Plan()

    def name(self, rel: str) -> str:
        return f"{self.prefix}.{rel}" if rel else self.prefix

    def fail(self, rel: str, message: str) -> None:
        self.errors.append((self.name(rel), message))

    def warn(self, rel: str, message: str) -> None:
        self.result.warnings.append(f"{self.name(rel)}: {message}")

    def target(self, controller: str, rel: str) -> Target | None:
        found = self.targets.get(controller)
        if found is None:
            self.fail(rel, f"this host has no usable {controller} cgroup controller")
        return found

    def write(
        self,
        rel: str,
        target: Target,
        file: str,
        value: str,
        *,
        keyed: bool = False,
        readback: bool = False,
        optional_message: str | None = None,
    ) -> None:
        if not (target.directory / file).exists():
            why = optional_message or (
                f"the kernel has no {file} in {target.directory} (controller not enabled "
                "for this cgroup, or not built into the kernel)"
            )
            self.fail(rel, why)
            return
        self.result.writes.append(
            Write(self.name(rel), target.directory, file, value, keyed=keyed, readback=readback)
        )


def plan(
    resources: Resources,
    targets: Mapping[str, Target],
    *,
    devices: Sequence[Device] = (),
    prefix: str = FIELD,
) -> Plan:
    """Plan the writes for ``resources`` on a cgroup whose controllers are at ``targets``.

    ``devices`` are the spec's ``linux.devices``: each is allowed in the device rules (as
    runc does), so the nodes a container is given can be used. Raises
    :class:`ResourceError` listing every field the host cannot honour.
    """
    planner = _Planner(targets, prefix)
    if resources.memory is not None:
        _memory(planner, resources.memory)
    if resources.cpu is not None:
        _cpu(planner, resources.cpu)
        _cpuset(planner, resources.cpu)
    if resources.pids is not None:
        text = cv.limit_text(resources.pids.limit)
        if text is not None:
            target = planner.target("pids", "pids.limit")
            if target is not None:
                planner.write("pids.limit", target, "pids.max", text)
    if resources.block_io is not None:
        _block_io(planner, resources.block_io)
    _hugetlb(planner, resources)
    if resources.network is not None:
        _network(planner, resources.network)
    _rdma(planner, resources)
    _unified(planner, resources)
    _devices(planner, resources, devices)
    if planner.errors:
        raise ResourceError(planner.errors)
    return planner.result


# --- memory -----------------------------------------------------------------------------------


def _memory(planner: _Planner, memory: Memory) -> None:
    for name, value in (("kernel", memory.kernel), ("kernelTCP", memory.kernel_tcp)):
        if value:
            planner.warn(
                f"memory.{name}", "ignored, as runc does: kernel memory is not limited apart"
            )
    wanted = (
        memory.limit,
        memory.swap,
        memory.reservation,
        memory.swappiness,
        memory.disable_oom_killer,
    )
    if all(value in (None, 0) for value in wanted[:3]) and wanted[3] is None and not wanted[4]:
        return
    target = planner.target("memory", "memory")
    if target is None:
        return
    if target.side == "v1":
        _memory_v1(planner, target, memory)
    else:
        _memory_v2(planner, target, memory)


def _memory_v1(planner: _Planner, target: Target, memory: Memory) -> None:
    limit = memory.limit or 0
    swap = memory.swap or 0
    has_memsw = (target.directory / "memory.memsw.limit_in_bytes").exists()
    # runc: unlimited memory with swap unsaid means unlimited memory+swap too.
    if limit == -1 and swap == 0 and has_memsw:
        swap = -1
    no_swap_accounting = (
        "the kernel has no swap accounting (memory.memsw.limit_in_bytes is missing: "
        "swapaccount=1 / CONFIG_MEMCG_SWAP)"
    )

    def set_limit() -> None:
        if limit:
            planner.write("memory.limit", target, "memory.limit_in_bytes", str(limit))

    def set_swap() -> None:
        if swap:
            planner.write(
                "memory.swap",
                target,
                "memory.memsw.limit_in_bytes",
                str(swap),
                optional_message=no_swap_accounting,
            )

    # memory.memsw.limit_in_bytes may never be below memory.limit_in_bytes, so which goes
    # first depends on the limit in force (runc's order, for updates above all).
    swap_first = False
    if limit and swap:
        current = _read_int(target.directory / "memory.limit_in_bytes")
        swap_first = swap == -1 or (current is not None and current < swap)
    if swap_first:
        set_swap()
        set_limit()
    else:
        set_limit()
        set_swap()
    if memory.reservation:
        planner.write(
            "memory.reservation", target, "memory.soft_limit_in_bytes", str(memory.reservation)
        )
    if memory.disable_oom_killer is not None:
        planner.write(
            "memory.disableOOMKiller",
            target,
            "memory.oom_control",
            "1" if memory.disable_oom_killer else "0",
        )
    if memory.swappiness is not None:
        planner.write("memory.swappiness", target, "memory.swappiness", str(memory.swappiness))


def _memory_v2(planner: _Planner, target: Target, memory: Memory) -> None:
    try:
        swap = cv.swap_v2(memory.swap, memory.limit)
    except ValueError as exc:
        planner.fail("memory.swap", str(exc))
        return
    swap_text = cv.limit_text(swap)
    if swap_text is None and swap == 0 and (memory.swap or 0) > 0:
        swap_text = "0"  # memory+swap equal to memory: no swap at all
    if swap_text is not None:
        if (target.directory / "memory.swap.max").exists():
            planner.write("memory.swap", target, "memory.swap.max", swap_text)
        elif swap_text not in ("max", "0"):
            planner.fail(
                "memory.swap",
                "the kernel has no swap accounting (memory.swap.max is missing)",
            )
        # No swap accounting and "no limit" or "no swap": there is nothing to limit.
    limit = cv.limit_text(memory.limit)
    if limit is not None:
        planner.write("memory.limit", target, "memory.max", limit)
    low = cv.limit_text(memory.reservation)
    if low is not None:
        planner.write("memory.reservation", target, "memory.low", low)
    if memory.swappiness is not None:
        planner.warn("memory.swappiness", "ignored: cgroup v2 has no per-cgroup swappiness")
    if memory.disable_oom_killer:
        planner.warn(
            "memory.disableOOMKiller",
            "ignored: cgroup v2 cannot disable the OOM killer (memory.oom.group is not that)",
        )


def _read_int(path: Path) -> int | None:
    try:
        return int(read_str(path).strip())
    except (OSError, ValueError):
        return None


# --- cpu and cpuset ---------------------------------------------------------------------------


def _cpu(planner: _Planner, cpu: CPU) -> None:
    quota, period = cpu.quota or 0, cpu.period or 0
    realtime = bool(cpu.realtime_runtime) or bool(cpu.realtime_period)
    if not (cpu.shares or quota or period or cpu.burst is not None or cpu.idle is not None) and (
        not realtime
    ):
        return
    target = planner.target("cpu", "cpu")
    if target is None:
        return
    if target.side == "v1":
        if cpu.shares:
            planner.write("cpu.shares", target, "cpu.shares", str(cpu.shares), readback=True)
        if period:
            planner.write("cpu.period", target, "cpu.cfs_period_us", str(period))
        if quota:
            planner.write("cpu.quota", target, "cpu.cfs_quota_us", str(quota))
        if cpu.burst is not None:
            planner.write("cpu.burst", target, "cpu.cfs_burst_us", str(cpu.burst))
        if cpu.idle is not None:
            planner.write("cpu.idle", target, "cpu.idle", str(cpu.idle))
        no_rt = "the kernel has no realtime group scheduling (CONFIG_RT_GROUP_SCHED)"
        if cpu.realtime_period:
            planner.write(
                "cpu.realtimePeriod",
                target,
                "cpu.rt_period_us",
                str(cpu.realtime_period),
                optional_message=no_rt,
            )
        if cpu.realtime_runtime:
            planner.write(
                "cpu.realtimeRuntime",
                target,
                "cpu.rt_runtime_us",
                str(cpu.realtime_runtime),
                optional_message=no_rt,
            )
        return
    if cpu.shares:
        planner.write("cpu.shares", target, "cpu.weight", str(cv.shares_to_weight(cpu.shares)))
    text = cv.cpu_max(quota, period)
    if text is not None:
        planner.write("cpu.quota" if quota else "cpu.period", target, "cpu.max", text)
    if cpu.burst is not None:
        planner.write("cpu.burst", target, "cpu.max.burst", str(cpu.burst))
    if cpu.idle is not None:
        planner.write("cpu.idle", target, "cpu.idle", str(cpu.idle))
    for rel, value in (
        ("cpu.realtimeRuntime", cpu.realtime_runtime),
        ("cpu.realtimePeriod", cpu.realtime_period),
    ):
        if value:
            planner.fail(rel, "cgroup v2 has no realtime group scheduling (runc refuses it too)")


def _cpuset(planner: _Planner, cpu: CPU) -> None:
    if not cpu.cpus and not cpu.mems:
        return
    target = planner.target("cpuset", "cpu.cpus" if cpu.cpus else "cpu.mems")
    if target is None:
        return
    if cpu.cpus:
        planner.write("cpu.cpus", target, "cpuset.cpus", cpu.cpus)
    if cpu.mems:
        planner.write("cpu.mems", target, "cpuset.mems", cpu.mems)


# --- block I/O --------------------------------------------------------------------------------

_THROTTLES: Final = (
    ("throttleReadBpsDevice", "read_bps_device", "rbps"),
    ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
    ("throttleReadIOPSDevice", "read_iops_device", "riops"),
    ("throttleWriteIOPSDevice", "write_iops_device", "wiops"),
)


def _throttles(block_io: BlockIO) -> Iterator[tuple[str, str, str, ThrottleDevice]]:
    lists = (
        block_io.throttle_read_bps_device,
        block_io.throttle_write_bps_device,
        block_io.throttle_read_iops_device,
        block_io.throttle_write_iops_device,
    )
    for (json_name, v1_name, v2_key), devices in zip(_THROTTLES, lists, strict=True):
        for index, device in enumerate(devices):
            yield f"blockIO.{json_name}[{index}]", v1_name, v2_key, device


def _block_io(planner: _Planner, block_io: BlockIO) -> None:
    throttles = list(_throttles(block_io))
    weighted = [(i, d) for i, d in enumerate(block_io.weight_device) if d.weight or d.leaf_weight]
    if not (block_io.weight or block_io.leaf_weight or weighted or throttles):
        return
    controller = "blkio" if "blkio" in planner.targets else "io"
    target = planner.target(controller, "blockIO")
    if target is None:
        return
    directory = target.directory
    if target.side == "v1":
        bfq = (
            not (directory / "blkio.weight").exists() and (directory / "blkio.bfq.weight").exists()
        )
        weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"
        no_weight = (
            "the kernel has no blkio weight here (neither CFQ's blkio.weight nor BFQ's "
            "blkio.bfq.weight: is the BFQ I/O scheduler built in?)"
        )
        if block_io.weight:
            planner.write(
                "blockIO.weight",
                target,
                weight_file,
                str(block_io.weight),
                optional_message=no_weight,
            )
        if block_io.leaf_weight:
            planner.write(
                "blockIO.leafWeight",
                target,
                "blkio.leaf_weight",
                str(block_io.leaf_weight),
                optional_message="the kernel has no blkio.leaf_weight (no CFQ since Linux 5.0)",
            )
        for index, wdev in weighted:
            rel = f"blockIO.weightDevice[{index}]"
            if wdev.weight:
                planner.write(
                    f"{rel}.weight",
                    target,
                    f"{weight_file}_device",
                    cv.weight_device_line(wdev.major, wdev.minor, wdev.weight),
                    keyed=True,
                    optional_message=no_weight,
                )
            if wdev.leaf_weight:
                planner.write(
                    f"{rel}.leafWeight",
                    target,
                    "blkio.leaf_weight_device",
                    cv.weight_device_line(wdev.major, wdev.minor, wdev.leaf_weight),
                    keyed=True,
                    optional_message="the kernel has no blkio.leaf_weight_device (no CFQ)",
                )
        for rel, v1_name, _key, device in throttles:
            planner.write(
                rel,
                target,
                f"blkio.throttle.{v1_name}",
                f"{device.major}:{device.minor} {device.rate}",
                keyed=True,
            )
        return
    bfq = (directory / "io.bfq.weight").exists()
    if block_io.weight:
        if bfq:
            # BFQ takes the blkio range (1..1000) as it is.
            planner.write("blockIO.weight", target, "io.bfq.weight", str(block_io.weight))
        else:
            weight = cv.blkio_to_io_weight(block_io.weight)
            planner.write("blockIO.weight", target, "io.weight", str(weight))
    if block_io.leaf_weight:
        planner.warn("blockIO.leafWeight", "ignored: cgroup v2 has no leaf weights")
    for index, wdev in weighted:
        rel = f"blockIO.weightDevice[{index}]"
        if wdev.leaf_weight:
            planner.warn(f"{rel}.leafWeight", "ignored: cgroup v2 has no leaf weights")
        if wdev.weight:
            if not bfq:
                planner.fail(
                    f"{rel}.weight",
                    "per-device weights need the BFQ I/O scheduler on cgroup v2 "
                    f"(io.bfq.weight is missing in {directory})",
                )
                continue
            planner.write(
                f"{rel}.weight",
                target,
                "io.bfq.weight",
                cv.weight_device_line(wdev.major, wdev.minor, wdev.weight),
                keyed=True,
            )
    for rel, _v1_name, key, device in throttles:
        planner.write(
            rel,
            target,
            "io.max",
            cv.io_max_line(device.major, device.minor, key, device.rate),
            keyed=True,
        )


# --- hugetlb, network, rdma, unified ------------------------------------------------------------


def _hugetlb(planner: _Planner, resources: Resources) -> None:
    if not resources.hugepage_limits:
        return
    target = planner.target("hugetlb", "hugepageLimits")
    if target is None:
        return
    suffix = ".limit_in_bytes" if target.side == "v1" else ".max"
    sizes = sorted(
        entry.name[len("hugetlb.") : -len(suffix)]
        for entry in os.scandir(target.directory)
        if entry.name.startswith("hugetlb.")
        and entry.name.endswith(suffix)
        and ".rsvd" not in entry.name
    )
    for index, limit in enumerate(resources.hugepage_limits):
        rel = f"hugepageLimits[{index}]"
        if limit.page_size not in sizes:
            planner.fail(
                f"{rel}.pageSize",
                f"page size {limit.page_size!r} is not one of this host's: {', '.join(sizes)}",
            )
            continue
        planner.write(
            f"{rel}.limit", target, f"hugetlb.{limit.page_size}{suffix}", str(limit.limit)
        )
        rsvd = f"hugetlb.{limit.page_size}.rsvd.max"
        if target.side == "v2" and (target.directory / rsvd).exists():
            # runc limits reservations the same, so a mapping cannot reserve past the limit.
            planner.write(f"{rel}.limit", target, rsvd, str(limit.limit))


def _network(planner: _Planner, network: Network) -> None:
    no_v2 = " (cgroup v2 has neither net_cls nor net_prio)"
    if network.class_id is not None:
        target = planner.targets.get("net_cls")
        if target is None or target.side != "v1":
            planner.fail("network.classID", "this host has no cgroup v1 net_cls controller" + no_v2)
        else:
            planner.write("network.classID", target, "net_cls.classid", str(network.class_id))
    if network.priorities:
        target = planner.targets.get("net_prio")
        if target is None or target.side != "v1":
            planner.fail(
                "network.priorities", "this host has no cgroup v1 net_prio controller" + no_v2
            )
            return
        for index, priority in enumerate(network.priorities):
            planner.write(
                f"network.priorities[{index}]",
                target,
                "net_prio.ifpriomap",
                f"{priority.name} {priority.priority}",
                keyed=True,
            )


def _rdma(planner: _Planner, resources: Resources) -> None:
    if not resources.rdma:
        return
    target = planner.target("rdma", "rdma")
    if target is None:
        return
    for device, limit in resources.rdma.items():
        parts = []
        if limit.hca_handles is not None:
            parts.append(f"hca_handle={limit.hca_handles}")
        if limit.hca_objects is not None:
            parts.append(f"hca_object={limit.hca_objects}")
        if parts:
            planner.write(
                f'rdma["{device}"]', target, "rdma.max", f"{device} {' '.join(parts)}", keyed=True
            )


def _unified(planner: _Planner, resources: Resources) -> None:
    for key, value in resources.unified.items():
        rel = f'unified["{key}"]'
        controller = key.split(".", 1)[0]
        target = planner.targets.get(controller if controller != "cgroup" else "")
        if target is None or target.side != "v2":
            side = "v1" if target is not None else "no"
            planner.fail(
                rel,
                f"needs the {controller} controller on cgroup v2; this host has it on {side} side",
            )
            continue
        planner.write(
            rel,
            target,
            key,
            value,
            optional_message=f"there is no cgroup v2 file {key!r} in {target.directory}",
        )


# --- devices ----------------------------------------------------------------------------------


def _devices(planner: _Planner, resources: Resources, devices: Sequence[Device]) -> None:
    if not resources.devices:
        return
    target = planner.target("devices", "devices")
    if target is None:
        return
    rules = effective_rules(resources.devices, devices)
    if target.side == "v2":
        planner.result.device_program = (target.directory, rules)
        return
    for index, rule in enumerate(rules):
        rel = f"devices[{index}]" if index < len(resources.devices) else "devices"
        for line in rule.v1_lines():
            planner.write(
                rel,
                target,
                "devices.allow" if rule.allow else "devices.deny",
                line,
                keyed=True,
            )


# --- the writes -------------------------------------------------------------------------------

Writer = Callable[[Write], None]


def _write_file(write: Write) -> None:
    # One write(2) per value: cgroupfs takes one value (or one line) per write. Files
    # taking a line per key are appended to, which cgroupfs treats as any write.
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if write.keyed else os.O_TRUNC)
    fd = os.open(write.path, flags)
    try:
        os.write(fd, write.value.encode())
    finally:
        os.close(fd)


def _explain(write: Write, exc: OSError) -> str:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    text = f"writing {write.value!r} to {write.path}: {reason}"
    if write.file == "memory.limit_in_bytes" and exc.errno == errno.EBUSY:
        usage = _read_int(write.directory / "memory.usage_in_bytes")
        text += f" (the cgroup uses {usage} bytes now, more than the new limit)"
    elif write.file.startswith("cpuset.") and exc.errno in (
        errno.EINVAL,
        errno.ENOSPC,
        errno.ERANGE,
    ):
        parent = write.directory.parent / f"{write.file.replace('cpuset.', 'cpuset.effective_')}"
        with contextlib.suppress(OSError):
            text += f" (the parent cgroup has {read_str(parent).strip()!r})"
    return text


def execute(
    work: Plan,
    *,
    writer: Writer = _write_file,
    attach: Callable[[Path, tuple[DeviceRule, ...]], None] | None = None,
) -> None:
    """Carry out ``work``; on a failure restore the single-value files already written
    and raise :class:`ResourceError` naming the field."""
    done: list[tuple[Write, str]] = []
    try:
        for write in work.writes:
            old = None if write.keyed else _read_old(write.path)
            try:
                writer(write)
            except OSError as exc:
                raise ResourceError([(write.field, _explain(write, exc))], write.path) from exc
            if old is not None:
                done.append((write, old))
            if write.readback:
                _check_readback(write)
        if work.device_program is not None:
            if attach is None:
                raise ResourceError([(f"{FIELD}.devices", "no device program loader given")])
            directory, rules = work.device_program
            try:
                attach(directory, rules)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ResourceError(
                    [
                        (
                            f"{FIELD}.devices",
                            f"attaching the BPF device program to {directory}: {reason}",
                        )
                    ],
                    directory,
                ) from exc
    except ResourceError:
        for write, old in reversed(done):
            try:
                writer(Write(write.field, write.directory, write.file, old))
            except OSError as exc:
                _log.warning("could not restore %s to %r: %s", write.path, old, exc)
        raise


def _read_old(path: Path) -> str | None:
    try:
        text = read_str(path).strip()
    except OSError:
        return None
    # Only one-value files can be written back as read (cpu.max reads "max 100000").
    return text if text and "\n" not in text else None


def _check_readback(write: Write) -> None:
    got = _read_int(write.path)
    wanted = int(write.value)
    if got is not None and got != wanted:
        bound = "maximum" if wanted > got else "minimum"
        raise ResourceError(
            [(write.field, f"the {bound} the kernel allows is {got}, {wanted} was asked for")],
            write.path,
        )
