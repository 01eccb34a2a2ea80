"""Block I/O limits of a container: the spec's fields, their OCI form, the host's support.

The spec's ``resources.blkio_weight`` (10-1000) and the four device lists
(``device_read_bps``, ``device_write_bps``, ``device_read_iops``, ``device_write_iops``,
each ``[{"path": "/dev/vda", "rate": ...}]``, modelled in :mod:`gantry.engine.spec.resources`)
become ``linux.resources.blockIO``, which
``gantry.runtime.cgroups`` writes to v1 ``blkio.*`` or v2 ``io.*``. A device is named by
its path; the bundle carries its ``major:minor`` (``os.stat`` when the bundle is written).

A weight needs a kernel weight file (CFQ's ``blkio.weight`` or BFQ's ``blkio.bfq.weight``
on v1, ``io.weight``/``io.bfq.weight`` on v2): on a host without one the spec is refused
with an error naming ``spec.resources.blkio_weight``, as are throttles on a host without
``blkio.throttle.*`` (v1) or the ``io`` controller (v2). See docs/api.md.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gantry.engine.errors import Invalid
from gantry.runtime.cgroups import layout
from gantry.runtime.spec import BlockIO, Resources, ThrottleDevice

__all__ = [
    "DEVICE_FIELDS",
    "FIELDS",
    "block_io",
    "check_host",
    "device_number",
    "host_support",
    "with_removals",
]

#: The spec's device lists, with the OCI ``blockIO`` list each maps to.
DEVICE_FIELDS: Final = {
    "device_read_bps": "throttleReadBpsDevice",
    "device_write_bps": "throttleWriteBpsDevice",
    "device_read_iops": "throttleReadIOPSDevice",
    "device_write_iops": "throttleWriteIOPSDevice",
}
FIELDS: Final = ("blkio_weight", *DEVICE_FIELDS)
_ATTRIBUTES: Final = {
    "device_read_bps": "throttle_read_bps_device",
    "device_write_bps": "throttle_write_bps_device",
    "device_read_iops": "throttle_read_iops_device",
    "device_write_iops": "throttle_write_iops_device",
}


def device_number(path: str, field: str) -> tuple[int, int]:
    """``(major, minor)`` of the block device at ``path``; :class:`Invalid` otherwise."""
    try:
        mode = os.stat(path)
    except OSError as exc:
        raise Invalid(
            f"{field}: {path} is not usable on the host: {exc.strerror or exc}", field
        ) from None
    if not stat.S_ISBLK(mode.st_mode):
        raise Invalid(f"{field}: {path} is not a block device", field)
    return os.major(mode.st_rdev), os.minor(mode.st_rdev)


def host_support(detected: layout.Layout | None = None) -> dict[str, bool]:
    """What this host's kernel can do: ``{"weight": ..., "throttle": ...}``."""
    found = detected or layout.detect()
    blkio = found.v1_mounts.get("blkio")
    if blkio is not None:
        root = Path(blkio.mount_point)
        return {
            "weight": (root / "blkio.weight").exists() or (root / "blkio.bfq.weight").exists(),
            "throttle": (root / "blkio.throttle.read_bps_device").exists(),
        }
    if found.v2_mount is not None and "io" in found.v2_available:
        # The root of v2 has no io.* files; io.max and io.weight (blk-iocost or BFQ) are in
        # every child: the runtime names the field if this kernel lacks one after all.
        return {"weight": True, "throttle": True}
    return {"weight": False, "throttle": False}


def check_host(resources: Mapping[str, Any], field: str) -> None:
    """:class:`Invalid` naming the first block I/O field this host cannot honour."""
    wanted = resources.get("blkio_weight") is not None or any(
        resources.get(name) for name in DEVICE_FIELDS
    )
    if not wanted:
        return
    support = host_support()
    if resources.get("blkio_weight") is not None and not support["weight"]:
        raise Invalid(
            f"{field}.blkio_weight: this host's kernel has no block I/O weight (no "
            "blkio.weight or blkio.bfq.weight: the BFQ I/O scheduler with group scheduling "
            "is needed); leave blkio_weight unset",
            f"{field}.blkio_weight",
        )
    for name in DEVICE_FIELDS:
        if resources.get(name) and not support["throttle"]:
            raise Invalid(
                f"{field}.{name}: this host's kernel has no block I/O throttling "
                "(blkio.throttle.* or the io controller)",
                f"{field}.{name}",
            )


def block_io(resources: Mapping[str, Any], field: str = "spec.resources") -> dict[str, Any]:
    """The OCI ``linux.resources.blockIO`` of normalised ``resources`` (empty: none)."""
    out: dict[str, Any] = {}
    if resources.get("blkio_weight") is not None:
        out["weight"] = resources["blkio_weight"]
    for name, oci in DEVICE_FIELDS.items():
        entries = []
        for index, device in enumerate(resources.get(name) or ()):
            major, minor = device_number(device["path"], f"{field}.{name}[{index}].path")
            entries.append({"major": major, "minor": minor, "rate": device["rate"]})
        if entries:
            out[oci] = entries
    return out


def with_removals(
    resources: Resources, before: Mapping[str, Any], after: Mapping[str, Any]
) -> Resources:
    """``resources`` for an in-place update from the spec ``before`` to ``after``: each
    device throttled before and not any more gets a rate of 0, which lifts its limit (v1
    removes the rule, v2 writes ``max``); a write of the new resources alone would leave it.
    """
    current = resources.block_io or BlockIO()
    changes: dict[str, tuple[ThrottleDevice, ...]] = {}
    for name, attribute in _ATTRIBUTES.items():
        kept = {device["path"] for device in after.get(name) or ()}
        lifted: list[ThrottleDevice] = []
        for device in before.get(name) or ():
            if device["path"] in kept:
                continue
            try:
                major, minor = device_number(device["path"], name)
            except Invalid:
                continue  # the device is gone, and its rule with it
            lifted.append(ThrottleDevice(major=major, minor=minor, rate=0))
        if lifted:
            changes[attribute] = (*lifted, *getattr(current, attribute))
    if not changes:
        return resources
    lifted_io: BlockIO = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(resources, block_io=lifted_io)
