"""``resources``: memory, CPU, pids and block I/O limits of a container.

The models check types, ranges and the fields' relations; whether this host has the block
devices and the kernel files a limit needs is the normaliser's question
(:func:`gantry.engine.spec.normalise` with :mod:`gantry.engine.blkio`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from gantry.engine.spec.base import SpecModel
from gantry.engine.spec.fields import refuse
from gantry.engine.spec.types import (
    INT64_MAX,
    AbsolutePath,
    CpuSet,
    Size,
    SizeInput,
    _size,
    at_least,
    at_most_int64,
)

__all__ = ["MIN_MEMORY", "RESOURCE_FIELDS", "BpsDevice", "IopsDevice", "Resources"]

MIN_MEMORY: Final = 6 * 1024 * 1024

RESOURCE_FIELDS: Final = (
    "memory",
    "memory_swap",
    "cpus",
    "cpu_shares",
    "cpuset_cpus",
    "pids_limit",
    "blkio_weight",
    "device_read_bps",
    "device_write_bps",
    "device_read_iops",
    "device_write_iops",
)


class BpsDevice(SpecModel):
    """A block device's rate in bytes per second."""

    path: AbsolutePath = Field(description="a block device node on the host, e.g. /dev/vda")
    rate: Annotated[Size, AfterValidator(at_least(1))]


class IopsDevice(SpecModel):
    """A block device's rate in I/O operations per second."""

    path: AbsolutePath = Field(description="a block device node on the host, e.g. /dev/vda")
    rate: Annotated[int, Field(ge=1, le=INT64_MAX)]


def _devices(value: list[Any] | None) -> list[Any] | None:
    """``None`` for none at all (absent and ``[]`` mean the same, and a spec stored before
    these fields existed compares equal). In the client's order: the host's checks name
    its index; the normalised spec sorts them by path."""
    if not value:
        return None
    seen: set[str] = set()
    for index, device in enumerate(value):
        if device.path in seen:
            raise refuse(f"{device.path} is listed twice", f"[{index}].path")
        seen.add(device.path)
    return value


def _memory(value: int | None) -> int | None:
    if value is not None and value < MIN_MEMORY:
        raise refuse(f"must be at least {MIN_MEMORY} bytes (6m), got {value}")
    return value


def _swap(value: Any) -> Any:
    if value == -1 or value == "-1":
        return -1
    return _size(value)


def _round_cpus(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


_DEVICES_DOC: Final = "a list of {path, rate}; normalised sorted by path, [] is the same as null"

BpsDevices = Annotated[
    list[BpsDevice] | None, AfterValidator(_devices), Field(description=_DEVICES_DOC)
]
IopsDevices = Annotated[
    list[IopsDevice] | None, AfterValidator(_devices), Field(description=_DEVICES_DOC)
]


class Resources(SpecModel):
    """Limits of the container's cgroup; each changes in place on a running container."""

    memory: Annotated[Size | None, AfterValidator(_memory)] = Field(
        default=None, description="memory limit in bytes (at least 6m)"
    )
    memory_swap: Annotated[
        int | None,
        BeforeValidator(_swap, json_schema_input_type=SizeInput | Literal[-1, "-1"] | None),
        AfterValidator(lambda value: value if value is None else at_most_int64(value)),
    ] = Field(
        default=None,
        description="memory plus swap (Docker's meaning), at least memory; -1 is unlimited",
    )
    cpus: Annotated[float | None, AfterValidator(_round_cpus)] = Field(
        default=None, ge=0.01, le=4096, description="CPU quota in CPUs (1.5: 150000/100000)"
    )
    cpu_shares: int | None = Field(default=None, ge=2, le=262144, description="relative CPU weight")
    cpuset_cpus: CpuSet | None = None
    pids_limit: int | None = Field(default=None, ge=1, le=INT64_MAX, description="most processes")
    blkio_weight: int | None = Field(
        default=None,
        ge=10,
        le=1000,
        description="relative block I/O weight (needs BFQ or io.weight)",
    )
    device_read_bps: BpsDevices = None
    device_write_bps: BpsDevices = None
    device_read_iops: IopsDevices = None
    device_write_iops: IopsDevices = None

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _swap_needs_memory(self) -> Resources:
        swap = self.memory_swap
        if swap is not None and swap != -1 and (self.memory is None or swap < self.memory):
            raise refuse(
                "must be -1 or at least resources.memory (memory plus swap, as Docker), and "
                "needs memory set",
                "memory_swap",
            )
        return self
