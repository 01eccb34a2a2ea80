"""The OCI runtime spec (config.json) for Linux as one typed, validated, frozen value.

`load_spec` is the only way in: it checks types, values and the rules that tie fields
together, all at once, and raises `SpecError` naming every bad field
(``linux.namespaces[1].type``, ``process.capabilities.bounding[2]``). A `Spec` that exists
is valid; the code that acts on it never re-checks it.

The model covers runtime-spec 1.2/1.3 for Linux. Keys this model does not know are ignored
(forward compatibility, as runc does); keys it knows but does not implement
(``linux.intelRdt``, ``process.commandLine``) are ignored with a warning. Known keys with
the wrong JSON type are errors. `Spec.to_dict()` gives back the JSON that was understood,
with camelCase keys; fields equal to their default (absent, empty, false) are left out.

Host-dependent checks (does the kernel have a time namespace, is a joined network
namespace the host's by inode) belong to the runtime, not here: this module is pure.
"""

import dataclasses
import json
import logging
import os
import posixpath
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, ClassVar

__all__ = [
    "CAPABILITIES",
    "CPU",
    "NAMESPACE_TYPES",
    "OCI_VERSION",
    "RLIMITS",
    "BlockIO",
    "Box",
    "CPUAffinity",
    "Capabilities",
    "Device",
    "DeviceRule",
    "Hook",
    "Hooks",
    "HugepageLimit",
    "IDMapping",
    "IOPriority",
    "InterfacePriority",
    "Linux",
    "Memory",
    "MemoryPolicy",
    "Mount",
    "Namespace",
    "NetDevice",
    "Network",
    "Personality",
    "Pids",
    "Process",
    "RdmaLimit",
    "Resources",
    "Rlimit",
    "Root",
    "Scheduler",
    "Seccomp",
    "SeccompArg",
    "Spec",
    "SpecError",
    "Syscall",
    "ThrottleDevice",
    "TimeOffset",
    "User",
    "WeightDevice",
    "load_resources",
    "load_spec",
]

#: The runtime-spec version Gantry writes into the specs it generates.
OCI_VERSION = "1.2.1"

# --- vocabularies -------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NAMESPACE_TYPES = frozenset(_words("pid network mount ipc uts user cgroup time"))

#: Capability name -> bit number (linux/capability.h).
CAPABILITIES: Mapping[str, int] = types.MappingProxyType(
    {
        f"CAP_{name}": bit
        for bit, name in enumerate(
            _words(
                "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
                "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK "
                "IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN "
                "SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE "
                "AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND "
                "AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE"
            )
        )
    }
)

#: Resource limit name -> resource number (asm-generic/resource.h).
RLIMITS: Mapping[str, int] = types.MappingProxyType(
    {
        f"RLIMIT_{name}": number
        for number, name in enumerate(
            _words(
                "CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS SIGPENDING "
                "MSGQUEUE NICE RTPRIO RTTIME"
            )
        )
    }
)

_SECCOMP_ACTIONS = frozenset(
    f"SCMP_ACT_{action}"
    for action in _words("KILL KILL_PROCESS KILL_THREAD TRAP ERRNO TRACE ALLOW LOG NOTIFY")
)
_SECCOMP_OPERATORS = frozenset(f"SCMP_CMP_{op}" for op in _words("NE LT LE EQ GE GT MASKED_EQ"))
_SECCOMP_ARCHES = frozenset(
    f"SCMP_ARCH_{arch}"
    for arch in _words(
        "X86 X86_64 X32 ARM AARCH64 MIPS MIPS64 MIPS64N32 MIPSEL MIPSEL64 MIPSEL64N32 PPC "
        "PPC64 PPC64LE S390 S390X PARISC PARISC64 RISCV64 LOONGARCH64 M68K SH SHEB"
    )
)
_SECCOMP_FLAGS = frozenset(
    f"SECCOMP_FILTER_FLAG_{flag}" for flag in _words("TSYNC LOG SPEC_ALLOW WAIT_KILLABLE_RECV")
)
# Actions that carry an errno: the kernel has nowhere to put one for the others.
_ERRNO_ACTIONS = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})

_PROPAGATIONS = frozenset(
    _words("private rprivate slave rslave shared rshared unbindable runbindable")
)
_SCHED_POLICIES = frozenset(
    f"SCHED_{policy}" for policy in _words("OTHER FIFO RR BATCH ISO IDLE DEADLINE")
)
_SCHED_FLAGS = frozenset(
    f"SCHED_FLAG_{flag}"
    for flag in _words(
        "RESET_ON_FORK RECLAIM DL_OVERRUN KEEP_POLICY KEEP_PARAMS UTIL_CLAMP_MIN UTIL_CLAMP_MAX"
    )
)
_IOPRIO_CLASSES = frozenset({"IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"})
_MPOL_MODES = frozenset(
    f"MPOL_{mode}"
    for mode in _words("DEFAULT PREFERRED BIND INTERLEAVE LOCAL PREFERRED_MANY WEIGHTED_INTERLEAVE")
)
_MPOL_FLAGS = frozenset({"MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES", "MPOL_F_NUMA_BALANCING"})
# set_mempolicy(2): these modes take no nodemask; the ones below need a non-empty one.
_MPOL_NO_NODES = frozenset({"MPOL_DEFAULT", "MPOL_LOCAL"})
_MPOL_NEED_NODES = frozenset(
    {"MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE"}
)

# Sysctls that live in the IPC namespace (ipc_namespaces(7), mq_overview(7)).
_IPC_SYSCTL_PREFIXES = ("kernel.msg", "kernel.shm", "fs.mqueue.")
_IPC_SYSCTLS = frozenset({"kernel.sem", "kernel.sem_next_id"})
# The kernel's names (/proc/PID/ns/*) for the two types the spec spells out in full.
_NAMESPACE_ALIASES = types.MappingProxyType({"net": "network", "mnt": "mount"})
# A network namespace joined through one of these paths is the runtime's own, i.e. the host's.
_HOST_NETNS_PATHS = frozenset({"/proc/1/ns/net", "/proc/self/ns/net", "/proc/thread-self/ns/net"})


# --- rules attached to types --------------------------------------------------------------


class _Rule:
    """A check on one decoded value; `problem` returns a message when the value breaks it."""

    __slots__ = ()

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Width(_Rule):
    low: int
    high: int
    type_name: str

    def problem(self, value: Any) -> str | None:
        if self.low <= value <= self.high:
            return None
        return f"{value} is out of range for {self.type_name}"


@dataclass(frozen=True, slots=True)
class _Range(_Rule):
    low: int
    high: int | None = None
    zero_means_unset: bool = False

    def problem(self, value: Any) -> str | None:
        if self.zero_means_unset and value == 0:
            return None
        if value >= self.low and (self.high is None or value <= self.high):
            return None
        unset = "0 (unset) or " if self.zero_means_unset else ""
        if self.high is None:
            return f"must be {unset}at least {self.low}, got {value}"
        return f"must be {unset}between {self.low} and {self.high}, got {value}"


@dataclass(frozen=True, slots=True)
class _OneOf(_Rule):
    choices: frozenset[str]
    what: str

    def problem(self, value: Any) -> str | None:
        if value in self.choices:
            return None
        message = f"unknown {self.what} {value!r}"
        if len(self.choices) <= 8:
            message += f" (expected one of: {', '.join(sorted(self.choices))})"
        return message


@dataclass(frozen=True, slots=True)
class _Check(_Rule):
    test: Callable[[Any], str | None]

    def problem(self, value: Any) -> str | None:
        return self.test(value)


def _non_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else f"must be an absolute path, got {value!r}"


def _dev_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must be an absolute path, got {value!r}"
    if not posixpath.normpath(value).startswith("/dev/"):
        return f"must be a path under /dev, got {value!r}"
    return None


def _env_var(value: str) -> str | None:
    name, sep, _value = value.partition("=")
    if not sep or not name:
        return f"must be NAME=VALUE, got {value!r}"
    return None


def _capability(value: str) -> str | None:
    if value in CAPABILITIES:
        return None
    if f"CAP_{value}" in CAPABILITIES:
        return f"unknown capability {value!r} (did you mean 'CAP_{value}'?)"
    return f"unknown capability {value!r}"


_SEMVER_1 = re.compile(r"1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


def _oci_version(value: str) -> str | None:
    if _SEMVER_1.fullmatch(value):
        return None
    return f"must be a 1.x.y SemVer version, got {value!r}"


# ASCII digits only: \d would also take other scripts' digits, which int() then reads.
_CPU_LIST = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")


def _cpu_list(value: str) -> str | None:
    if not _CPU_LIST.fullmatch(value):
        return f"must be a list like '0-3,7', got {value!r}"
    for part in value.split(","):
        low, _dash, high = part.partition("-")
        if high and int(high) < int(low):
            return f"range {part!r} runs backwards"
    return None


def _page_size(value: str) -> str | None:
    if re.fullmatch(r"[1-9][0-9]*[KMGTP]B", value):
        return None
    return f"must be a size like '2MB' or '1GB', got {value!r}"


def _cgroups_path(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if ":" in value:
        # The systemd driver's form, slice:prefix:name (runc docs/systemd.md).
        parts = value.split(":")
        if len(parts) != 3:
            return f"systemd form must be 'slice:prefix:name', got {value!r}"
        slice_name, _prefix, name = parts
        if any("/" in part for part in parts):
            return f"systemd form must not contain '/', got {value!r}"
        if slice_name and not slice_name.endswith(".slice"):
            return f"systemd slice must end in '.slice', got {slice_name!r}"
        if not name:
            return "systemd form needs a unit name after the last ':'"
        return None
    if ".." in value.split("/"):
        return f"must not contain '..', got {value!r}"
    return None


def _unified_key(value: str) -> str | None:
    if not value or "/" in value or value in (".", ".."):
        return f"must be a cgroup file name like 'memory.high', got {value!r}"
    return None


def _interface_name(value: str) -> str | None:
    # dev_valid_name() in net/core/dev.c: IFNAMSIZ (16) including the NUL.
    if (
        not value
        or len(value) > 15
        or value in (".", "..")
        or any(c == "/" or c == ":" or c.isspace() for c in value)
    ):
        return f"must be an interface name (1-15 chars, no / : or spaces), got {value!r}"
    return None


def _access(value: str) -> str | None:
    if set(value) <= set("rwm"):
        return None
    return f"must be made of 'r', 'w' and 'm', got {value!r}"


def _cpu_quota(value: int) -> str | None:
    # The kernel's CFS bandwidth minimum is 1ms; -1 means unlimited, 0 unset.
    if value in (-1, 0) or value >= 1000:
        return None
    return f"must be -1 (unlimited), 0 (unset) or at least 1000 microseconds, got {value}"


# Integer widths of the Go types the spec is written against.
U16 = Annotated[int, _Width(0, 2**16 - 1, "uint16")]
U32 = Annotated[int, _Width(0, 2**32 - 1, "uint32")]
U64 = Annotated[int, _Width(0, 2**64 - 1, "uint64")]
I32 = Annotated[int, _Width(-(2**31), 2**31 - 1, "int32")]
I64 = Annotated[int, _Width(-(2**63), 2**63 - 1, "int64")]

Text = Annotated[str, _Check(_non_empty)]
AbsPath = Annotated[str, _Check(_absolute)]
EnvVar = Annotated[str, _Check(_env_var)]
CpuList = Annotated[str, _Check(_cpu_list)]
CapabilityName = Annotated[str, _Check(_capability)]
IfName = Annotated[str, _Check(_interface_name)]
# Byte counts where -1 means unlimited and 0 means unset.
MemBytes = Annotated[I64, _Range(-1)]
BlkioWeight = Annotated[U16, _Range(10, 1000, zero_means_unset=True)]


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    key: str
    hint: Any
    required: bool
    spec: dataclasses.Field[Any]

    def is_default(self, value: Any) -> bool:
        if self.spec.default is not dataclasses.MISSING:
            return bool(value == self.spec.default)
        if self.spec.default_factory is not dataclasses.MISSING:
            return not value
        return False


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _describe_fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(typing.cast(Any, cls)):
        key = f.metadata.get("json", _camel(f.name))
        if key is None:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(_Field(f.name, key, hints[f.name], required, f))
    return tuple(out)


class _Model:
    """Base of every spec object: JSON out, and a hook for rules spanning several fields."""

    __slots__ = ()
    # Filled in once per class by `_model`, from the annotations: the JSON shape of the class.
    _FIELDS: ClassVar[tuple[_Field, ...]] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        """Yield (relative field path, message) for rules that tie this object's fields."""
        return iter(())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object this value stands for, camelCase keys, defaults left out."""
        encoded = _encode(self)
        assert isinstance(encoded, dict)
        return encoded


_M = typing.TypeVar("_M", bound=_Model)


def _model(cls: type[_M]) -> type[_M]:
    """Record the JSON fields of `cls`, a model dataclass.

    Every model is declared as ``@_model`` over ``@dataclass(frozen=True, slots=True,
    kw_only=True)``. A field whose JSON key is not the camelCase of its Python name says so
    with ``field(metadata={"json": "theKey"})``; ``{"json": None}`` keeps it out of the JSON.
    """
    cls._FIELDS = _describe_fields(cls)
    return cls


def _empty_map() -> Mapping[str, Any]:
    return types.MappingProxyType({})


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class IDMapping(_Model):
    container_id: U32 = field(metadata={"json": "containerID"})
    host_id: U32 = field(metadata={"json": "hostID"})
    size: Annotated[U32, _Range(1)]


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Box(_Model):
    height: U64
    width: U64


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class User(_Model):
    uid: U32
    gid: U32
    umask: Annotated[U32, _Range(0, 0o777)] | None = None
    additional_gids: tuple[U32, ...] = ()
    username: str | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities(_Model):
    bounding: tuple[CapabilityName, ...] = ()
    effective: tuple[CapabilityName, ...] = ()
    inheritable: tuple[CapabilityName, ...] = ()
    permitted: tuple[CapabilityName, ...] = ()
    ambient: tuple[CapabilityName, ...] = ()


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Rlimit(_Model):
    type: Annotated[str, _OneOf(frozenset(RLIMITS), "rlimit type")]
    hard: U64
    soft: U64

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.soft > self.hard:
            yield "soft", f"soft limit {self.soft} is above the hard limit {self.hard}"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class IOPriority(_Model):
    io_class: Annotated[str, _OneOf(_IOPRIO_CLASSES, "I/O priority class")] = field(
        metadata={"json": "class"}
    )
    priority: Annotated[int, _Range(0, 7)]


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Scheduler(_Model):
    policy: Annotated[str, _OneOf(_SCHED_POLICIES, "scheduling policy")]
    nice: Annotated[I32, _Range(-20, 19)] = 0
    priority: I32 = 0
    flags: tuple[Annotated[str, _OneOf(_SCHED_FLAGS, "scheduler flag")], ...] = ()
    runtime: U64 = 0
    deadline: U64 = 0
    period: U64 = 0

    def _problems(self) -> Iterator[tuple[str, str]]:
        # sched_setattr(2): real-time policies take a priority of 1-99, the others 0.
        if self.policy in ("SCHED_FIFO", "SCHED_RR"):
            if not 1 <= self.priority <= 99:
                yield "priority", f"must be between 1 and 99 for {self.policy}"
        elif self.priority != 0:
            yield "priority", f"must be 0 for {self.policy}"
        if self.policy == "SCHED_DEADLINE":
            if self.runtime > self.deadline:
                yield "runtime", "must not exceed deadline"
            if self.period and self.deadline > self.period:
                yield "deadline", "must not exceed period"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class CPUAffinity(_Model):
    initial: CpuList | None = None
    final: CpuList | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Process(_Model):
    _IGNORED: ClassVar[Mapping[str, str]] = types.MappingProxyType(
        {"commandLine": "it applies to Windows only"}
    )

    terminal: bool = False
    console_size: Box | None = None
    user: User
    args: Annotated[tuple[str, ...], _Check(_non_empty)]
    env: tuple[EnvVar, ...] = ()
    cwd: AbsPath
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: Annotated[int, _Range(-1000, 1000)] | None = None
    selinux_label: str | None = None
    io_priority: IOPriority | None = None
    scheduler: Scheduler | None = None
    exec_cpu_affinity: CPUAffinity | None = field(
        default=None, metadata={"json": "execCPUAffinity"}
    )

    def _problems(self) -> Iterator[tuple[str, str]]:
        yield from _duplicates((r.type for r in self.rlimits), "rlimits", "type", "rlimit")


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Root(_Model):
    path: Text
    readonly: bool = False


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Mount(_Model):
    destination: AbsPath
    type: str | None = None
    source: str | None = None
    options: tuple[str, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        # An idmapped mount needs both maps (mount_setattr(2) takes one user namespace).
        if self.uid_mappings and not self.gid_mappings:
            yield "gidMappings", "is required when uidMappings is set"
        if self.gid_mappings and not self.uid_mappings:
            yield "uidMappings", "is required when gidMappings is set"
        yield from _overlaps(self.uid_mappings, "uidMappings")
        yield from _overlaps(self.gid_mappings, "gidMappings")


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Hook(_Model):
    path: AbsPath
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    timeout: Annotated[I64, _Range(1)] | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks(_Model):
    prestart: tuple[Hook, ...] = ()
    create_runtime: tuple[Hook, ...] = ()
    create_container: tuple[Hook, ...] = ()
    start_container: tuple[Hook, ...] = ()
    poststart: tuple[Hook, ...] = ()
    poststop: tuple[Hook, ...] = ()


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace(_Model):
    type: Annotated[str, _OneOf(NAMESPACE_TYPES, "namespace type")]
    path: AbsPath | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class TimeOffset(_Model):
    secs: I64 = 0
    nanosecs: Annotated[U32, _Range(0, 999_999_999)] = 0


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Device(_Model):
    type: Annotated[str, _OneOf(frozenset("cbup"), "device type")]
    path: Annotated[str, _Check(_dev_path)]
    major: I64 | None = None
    minor: I64 | None = None
    file_mode: U32 | None = None
    uid: U32 | None = None
    gid: U32 | None = None

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.type != "p":
            for name, value in (("major", self.major), ("minor", self.minor)):
                if value is None:
                    yield name, f"is required for a {self.type!r} device"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRule(_Model):
    allow: bool
    type: Annotated[str, _OneOf(frozenset("abc"), "device rule type")] | None = None
    major: I64 | None = None
    minor: I64 | None = None
    access: Annotated[str, _Check(_access)] | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Memory(_Model):
    limit: MemBytes | None = None
    reservation: MemBytes | None = None
    swap: MemBytes | None = None
    kernel: MemBytes | None = None
    kernel_tcp: MemBytes | None = field(default=None, metadata={"json": "kernelTCP"})
    swappiness: Annotated[U64, _Range(0, 100)] | None = None
    disable_oom_killer: bool | None = field(default=None, metadata={"json": "disableOOMKiller"})
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None

    def _problems(self) -> Iterator[tuple[str, str]]:
        # swap is memory+swap (memory.memsw.limit_in_bytes), so it cannot be below the limit.
        limit, swap = self.limit, self.swap
        if limit and swap and limit > 0 and swap > 0 and swap < limit:
            yield "swap", f"memory+swap limit {swap} is below the memory limit {limit}"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class CPU(_Model):
    shares: Annotated[U64, _Range(2, 262144, zero_means_unset=True)] | None = None
    quota: Annotated[I64, _Check(_cpu_quota)] | None = None
    burst: U64 | None = None
    period: Annotated[U64, _Range(1000, 1_000_000, zero_means_unset=True)] | None = None
    realtime_runtime: I64 | None = None
    realtime_period: U64 | None = None
    cpus: CpuList | None = None
    mems: CpuList | None = None
    idle: Annotated[I64, _Range(0, 1)] | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Pids(_Model):
    limit: Annotated[I64, _Range(-1)] | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class WeightDevice(_Model):
    major: I64
    minor: I64
    weight: BlkioWeight | None = None
    leaf_weight: BlkioWeight | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleDevice(_Model):
    major: I64
    minor: I64
    rate: U64


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class BlockIO(_Model):
    weight: BlkioWeight | None = None
    leaf_weight: BlkioWeight | None = None
    weight_device: tuple[WeightDevice, ...] = ()
    throttle_read_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_write_bps_device: tuple[ThrottleDevice, ...] = ()
    throttle_read_iops_device: tuple[ThrottleDevice, ...] = field(
        default=(), metadata={"json": "throttleReadIOPSDevice"}
    )
    throttle_write_iops_device: tuple[ThrottleDevice, ...] = field(
        default=(), metadata={"json": "throttleWriteIOPSDevice"}
    )


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class HugepageLimit(_Model):
    page_size: Annotated[str, _Check(_page_size)]
    limit: U64


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class InterfacePriority(_Model):
    name: IfName
    priority: U32


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Network(_Model):
    class_id: U32 | None = field(default=None, metadata={"json": "classID"})
    priorities: tuple[InterfacePriority, ...] = ()


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class RdmaLimit(_Model):
    hca_handles: U32 | None = None
    hca_objects: U32 | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Resources(_Model):
    devices: tuple[DeviceRule, ...] = ()
    memory: Memory | None = None
    cpu: CPU | None = None
    pids: Pids | None = None
    block_io: BlockIO | None = field(default=None, metadata={"json": "blockIO"})
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    network: Network | None = None
    rdma: Mapping[Text, RdmaLimit] = field(default_factory=_empty_map)
    unified: Mapping[Annotated[str, _Check(_unified_key)], str] = field(default_factory=_empty_map)


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class SeccompArg(_Model):
    index: Annotated[U32, _Range(0, 5)]
    value: U64
    value_two: U64 = 0
    op: Annotated[str, _OneOf(_SECCOMP_OPERATORS, "seccomp operator")]


SeccompAction = Annotated[str, _OneOf(_SECCOMP_ACTIONS, "seccomp action")]


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Syscall(_Model):
    names: Annotated[tuple[Text, ...], _Check(_non_empty)]
    action: SeccompAction
    errno_ret: U32 | None = None
    args: tuple[SeccompArg, ...] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.errno_ret is not None and self.action not in _ERRNO_ACTIONS:
            yield (
                "errnoRet",
                f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {self.action}",
            )


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Seccomp(_Model):
    default_action: SeccompAction
    default_errno_ret: U32 | None = None
    architectures: tuple[Annotated[str, _OneOf(_SECCOMP_ARCHES, "seccomp architecture")], ...] = ()
    flags: tuple[Annotated[str, _OneOf(_SECCOMP_FLAGS, "seccomp flag")], ...] = ()
    listener_path: AbsPath | None = None
    listener_metadata: str | None = None
    syscalls: tuple[Syscall, ...] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.default_action == "SCMP_ACT_NOTIFY":
            # Every syscall of the runtime itself would wait on a listener it has not
            # handed over yet: the container could never start.
            yield "defaultAction", "SCMP_ACT_NOTIFY cannot be the default action"
        if self.default_errno_ret is not None and self.default_action not in _ERRNO_ACTIONS:
            yield (
                "defaultErrnoRet",
                f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {self.default_action}",
            )
        if self.listener_path is None:
            for i, call in enumerate(self.syscalls):
                if call.action == "SCMP_ACT_NOTIFY":
                    yield f"syscalls[{i}].action", "SCMP_ACT_NOTIFY needs seccomp.listenerPath"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Personality(_Model):
    domain: Annotated[str, _OneOf(frozenset({"LINUX", "LINUX32"}), "personality domain")]
    flags: tuple[str, ...] = ()


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPolicy(_Model):
    mode: Annotated[str, _OneOf(_MPOL_MODES, "memory policy mode")]
    nodes: CpuList | None = None
    flags: tuple[Annotated[str, _OneOf(_MPOL_FLAGS, "memory policy flag")], ...] = ()

    def _problems(self) -> Iterator[tuple[str, str]]:
        if self.mode in _MPOL_NO_NODES and self.nodes:
            yield "nodes", f"must be empty for {self.mode}"
        if self.mode in _MPOL_NEED_NODES and not self.nodes:
            yield "nodes", f"is required for {self.mode}"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class NetDevice(_Model):
    name: IfName | None = None


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Linux(_Model):
    _IGNORED: ClassVar[Mapping[str, str]] = types.MappingProxyType(
        {"intelRdt": "Intel RDT is not supported by gantry"}
    )

    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    sysctl: Mapping[Text, str] = field(default_factory=_empty_map)
    resources: Resources | None = None
    cgroups_path: Annotated[str, _Check(_cgroups_path)] | None = None
    namespaces: tuple[Namespace, ...] = ()
    devices: tuple[Device, ...] = ()
    seccomp: Seccomp | None = None
    rootfs_propagation: Annotated[str, _OneOf(_PROPAGATIONS, "propagation")] | None = None
    masked_paths: tuple[AbsPath, ...] = ()
    readonly_paths: tuple[AbsPath, ...] = ()
    mount_label: str | None = None
    personality: Personality | None = None
    time_offsets: Mapping[
        Annotated[str, _OneOf(frozenset({"monotonic", "boottime"}), "clock")], TimeOffset
    ] = field(default_factory=_empty_map)
    memory_policy: MemoryPolicy | None = None
    net_devices: Mapping[IfName, NetDevice] = field(default_factory=_empty_map)

    def namespace(self, kind: str) -> Namespace | None:
        """The namespace entry of this type, or None when the container shares the host's.

        `kind` is the spec's name (``network``, ``mount``) or the kernel's (``net``, ``mnt``).
        """
        kind = _namespace_type(kind)
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None

    def has_private_network(self) -> bool:
        """Whether the container's network namespace is not the host's (new, or joined)."""
        net = self.namespace("network")
        if net is None:
            return False
        return net.path is None or posixpath.normpath(net.path) not in _HOST_NETNS_PATHS

    def _problems(self) -> Iterator[tuple[str, str]]:
        yield from _duplicates((ns.type for ns in self.namespaces), "namespaces", "type", "")
        yield from self._user_namespace_problems()
        yield from _overlaps(self.uid_mappings, "uidMappings")
        yield from _overlaps(self.gid_mappings, "gidMappings")
        if self.time_offsets:
            time_ns = self.namespace("time")
            if time_ns is None:
                yield "timeOffsets", "needs a time namespace in linux.namespaces"
            elif time_ns.path is not None:
                yield "timeOffsets", "cannot be set when joining an existing time namespace"
        for key in self.sysctl:
            message = self._sysctl_problem(key)
            if message:
                yield f"sysctl[{json.dumps(key)}]", message
        if self.net_devices and not self.has_private_network():
            yield "netDevices", "needs a network namespace that is not the host's"

    def _user_namespace_problems(self) -> Iterator[tuple[str, str]]:
        user = self.namespace("user")
        maps = (("uidMappings", self.uid_mappings), ("gidMappings", self.gid_mappings))
        for name, mapping in maps:
            if user is None and mapping:
                yield name, "needs a user namespace in linux.namespaces"
            elif user is not None and user.path is None and not mapping:
                yield name, "is required when creating a user namespace"

    def _sysctl_problem(self, key: str) -> str | None:
        # The same refusal as runc's validator: a sysctl that is not in one of the
        # container's own namespaces would be written to the host's.
        name = key.replace("/", ".")
        if name in _IPC_SYSCTLS or name.startswith(_IPC_SYSCTL_PREFIXES):
            if self.namespace("ipc") is None:
                return "needs an ipc namespace, or it would change the host's"
            return None
        if name.startswith("net."):
            if not self.has_private_network():
                return "needs a network namespace that is not the host's"
            return None
        if name in ("kernel.hostname", "kernel.domainname"):
            if self.namespace("uts") is None:
                return "needs a uts namespace, or it would change the host's"
            return None
        return "is not namespaced: setting it would change the host"


@_model
@dataclass(frozen=True, slots=True, kw_only=True)
class Spec(_Model):
    """A validated runtime spec. Build one with `load_spec`, never directly."""

    oci_version: Annotated[str, _Check(_oci_version)]
    process: Process | None = None
    root: Root
    hostname: str | None = None
    domainname: str | None = None
    mounts: tuple[Mount, ...] = ()
    hooks: Hooks | None = None
    annotations: Mapping[Text, str] = field(default_factory=_empty_map)
    linux: Linux | None = None
    #: What was understood but ignored (``linux.intelRdt: ignored, …``); not part of the JSON.
    warnings: tuple[str, ...] = field(
        default=(), compare=False, repr=False, metadata={"json": None}
    )

    def namespace(self, kind: str) -> Namespace | None:
        """The linux.namespaces entry of this type (``network`` or ``net``), or None."""
        if self.linux is None:
            _namespace_type(kind)
            return None
        return self.linux.namespace(kind)

    def has_namespace(self, kind: str) -> bool:
        """Whether linux.namespaces lists this type (new, or joined by path)."""
        return self.namespace(kind) is not None

    def namespace_path(self, kind: str) -> str | None:
        """The path of the namespace to join, or None (a new one, or the host's)."""
        ns = self.namespace(kind)
        return ns.path if ns is not None else None

    def _problems(self) -> Iterator[tuple[str, str]]:
        has_uts = self.has_namespace("uts")
        sysctl = self.linux.sysctl if self.linux is not None else {}
        for name, value in (("hostname", self.hostname), ("domainname", self.domainname)):
            if value and not has_uts:
                yield name, "needs a uts namespace in linux.namespaces"
            for key in (f"kernel.{name}", f"kernel/{name}"):
                if value and key in sysctl:
                    yield (
                        f"linux.sysctl[{json.dumps(key)}]",
                        f"conflicts with the {name} field; set only one",
                    )


def _namespace_type(kind: str) -> str:
    kind = _NAMESPACE_ALIASES.get(kind, kind)
    if kind not in NAMESPACE_TYPES:
        raise ValueError(f"unknown namespace type {kind!r}")
    return kind


def _duplicates(
    values: Iterable[str], list_name: str, field_name: str, what: str
) -> Iterator[tuple[str, str]]:
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in first:
            label = f"{what} {value!r}" if what else repr(value)
            yield (
                f"{list_name}[{i}].{field_name}",
                f"duplicate {label}, already at {list_name}[{first[value]}]",
            )
        else:
            first[value] = i


def _overlaps(mappings: tuple[IDMapping, ...], name: str) -> Iterator[tuple[str, str]]:
    # The kernel refuses a uid_map/gid_map whose ranges overlap on either side
    # (user_namespaces(7)), and an ID range cannot run past 2^32.
    for i, m in enumerate(mappings):
        for side, start in (("containerID", m.container_id), ("hostID", m.host_id)):
            if start + m.size > 2**32:
                yield f"{name}[{i}].size", f"{side} + size runs past 4294967295"
        for j in range(i):
            other = mappings[j]
            for side, a, b in (
                ("containerID", m.container_id, other.container_id),
                ("hostID", m.host_id, other.host_id),
            ):
                if a < b + other.size and b < a + m.size:
                    yield f"{name}[{i}]", f"{side} range overlaps {name}[{j}]"


# --- errors ---------------------------------------------------------------------------------


class SpecError(ValueError):
    """An invalid runtime spec. `errors` lists every (field path, message) found."""

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        problems = "; ".join(f"{path or '(top level)'}: {message}" for path, message in self.errors)
        return f"invalid runtime spec: {problems}"


# --- decoding and encoding ------------------------------------------------------------------


class _Invalid(Enum):
    """What a decoder returns for a value it has already reported as bad."""

    INVALID = 0


_INVALID = _Invalid.INVALID


def _join(path: str, rel: str) -> str:
    if not path:
        return rel
    if not rel:
        return path
    return path + rel if rel.startswith("[") else f"{path}.{rel}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


class _Decoder:
    """Turns JSON data into model objects, collecting every error instead of stopping."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def fail(self, path: str, message: str) -> _Invalid:
        self.errors.append((path, message))
        return _INVALID

    def decode(self, hint: Any, raw: object, path: str) -> Any:
        origin = typing.get_origin(hint)
        if origin is typing.Union or origin is types.UnionType:
            (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
            origin = typing.get_origin(hint)
        rules: tuple[Any, ...] = ()
        if origin is Annotated:
            hint, *metadata = typing.get_args(hint)
            rules = tuple(metadata)
        value = self._decode_plain(hint, raw, path)
        if value is _INVALID:
            return _INVALID
        for rule in rules:
            message = rule.problem(value) if isinstance(rule, _Rule) else None
            if message:
                return self.fail(path, message)
        return value

    def _decode_plain(self, hint: Any, raw: object, path: str) -> Any:
        origin = typing.get_origin(hint)
        if origin is tuple:
            return self._decode_array(typing.get_args(hint)[0], raw, path)
        if origin is Mapping:
            key_hint, value_hint = typing.get_args(hint)
            return self._decode_map(key_hint, value_hint, raw, path)
        if isinstance(hint, type) and issubclass(hint, _Model):
            return self.decode_object(hint, raw, path)
        if hint is bool:
            return raw if isinstance(raw, bool) else self._wrong_type("a boolean", raw, path)
        if hint is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            return self._wrong_type("an integer", raw, path)
        if hint is str:
            if not isinstance(raw, str):
                return self._wrong_type("a string", raw, path)
            if "\0" in raw:
                return self.fail(path, "must not contain NUL bytes")
            return raw
        raise TypeError(f"no decoder for {hint!r}")  # a bug in the model, not in the input

    def _wrong_type(self, expected: str, raw: object, path: str) -> _Invalid:
        return self.fail(path, f"expected {expected}, got {_json_type(raw)}")

    def _decode_array(self, item_hint: Any, raw: object, path: str) -> Any:
        if not isinstance(raw, list | tuple):
            return self._wrong_type("an array", raw, path)
        items = [self.decode(item_hint, item, f"{path}[{i}]") for i, item in enumerate(raw)]
        return _INVALID if _INVALID in items else tuple(items)

    def _decode_map(self, key_hint: Any, value_hint: Any, raw: object, path: str) -> Any:
        if not isinstance(raw, Mapping):
            return self._wrong_type("an object", raw, path)
        out: dict[Any, Any] = {}
        ok = True
        for raw_key, raw_value in raw.items():
            sub = f"{path}[{json.dumps(raw_key)}]"
            key = self.decode(key_hint, raw_key, sub)
            value = self.decode(value_hint, raw_value, sub)
            if key is _INVALID or value is _INVALID:
                ok = False
            else:
                out[key] = value
        return types.MappingProxyType(out) if ok else _INVALID

    def decode_object(self, cls: type[_Model], raw: object, path: str) -> Any:
        if not isinstance(raw, Mapping):
            return self._wrong_type("an object", raw, path)
        values: dict[str, Any] = {}
        ok = True
        for f in cls._FIELDS:
            sub = _join(path, f.key)
            # JSON null reads as absent, as Go's encoding/json does for the reference runtimes.
            if raw.get(f.key) is None:
                if f.required:
                    self.fail(sub, "is required")
                    ok = False
                continue
            value = self.decode(f.hint, raw[f.key], sub)
            if value is _INVALID:
                ok = False
            else:
                values[f.name] = value
        ignored: Mapping[str, str] = getattr(cls, "_IGNORED", {})
        for key, reason in ignored.items():
            if key in raw:
                self.warnings.append(f"{_join(path, key)}: ignored, {reason}")
        if not ok:
            return _INVALID
        obj = cls(**values)
        # Rules across fields run only on objects whose own fields are all valid, so
        # one bad value never produces a second, confusing error elsewhere.
        problems = [(_join(path, rel), message) for rel, message in obj._problems()]
        if problems:
            self.errors.extend(problems)
            return _INVALID
        return obj


def _encode(value: Any) -> Any:
    if isinstance(value, _Model):
        out = {}
        for f in value._FIELDS:
            item = getattr(value, f.name)
            if not f.is_default(item):
                out[f.key] = _encode(item)
        return out
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _encode(item) for key, item in value.items()}
    return value


# --- the way in -----------------------------------------------------------------------------

_log = logging.getLogger(__name__)


def load_spec(
    source: Mapping[str, Any] | str | os.PathLike[str],
    *,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> Spec:
    """Validate a runtime spec and return it as a frozen `Spec`.

    `source` is the parsed JSON object, a config.json path, or a bundle directory holding
    one. Raises `SpecError` listing every invalid field; an unreadable file raises
    `OSError`. Warnings (ignored sections) go to `log` (pass a logger that carries the
    container id) and are kept on `Spec.warnings`.
    """
    if isinstance(source, Mapping):
        data: object = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpecError([("", f"{path} is not valid JSON: {exc}")]) from None
    decoder = _Decoder()
    spec = decoder.decode_object(Spec, data, "")
    if decoder.errors or not isinstance(spec, Spec):
        raise SpecError(decoder.errors)
    for warning in decoder.warnings:
        (log or _log).warning("runtime spec: %s", warning)
    return dataclasses.replace(spec, warnings=tuple(decoder.warnings))


def load_resources(source: Mapping[str, Any], *, path: str = "") -> Resources:
    """Validate a ``linux.resources`` object alone (``runc update -r``'s file).

    Raises `SpecError` naming every bad field, relative to ``path`` (``memory.limit``, or
    ``linux.resources.memory.limit`` with ``path="linux.resources"``).
    """
    decoder = _Decoder()
    resources = decoder.decode_object(Resources, source, path)
    if decoder.errors or not isinstance(resources, Resources):
        raise SpecError(decoder.errors)
    return resources
