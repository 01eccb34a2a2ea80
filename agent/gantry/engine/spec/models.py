"""The container spec as models: :class:`ContainerSpecInput` is what a client may send (every
accepted spelling, each field optional), :class:`ContainerSpec` the normalised form the
agent stores, compares and shows (every field present, one spelling).

The input model checks what needs nothing but the input itself: types, ranges, spellings,
and the fields' relations (ports only with mode bridge). What needs the host or the image
store (a rootfs that is a directory, a bind source that exists, a user name from
``/etc/passwd``, the image's config) is :func:`gantry.engine.spec.normalise`'s work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from gantry.engine.spec.base import SpecModel
from gantry.engine.spec.fields import refuse, shown
from gantry.engine.spec.network import Dns, NetworkSettings, Port, PortList
from gantry.engine.spec.resources import Resources
from gantry.engine.spec.types import (
    INT64_MAX,
    AbsolutePath,
    Argv,
    CapabilityList,
    EnvMap,
    OptionalArgv,
    Signal,
    Size,
    StrMap,
    Text,
)
from gantry.runtime.shim import LINE_MAX

__all__ = [
    "LOG_MIN_SIZE",
    "RESTART_POLICIES",
    "SPEC_FIELDS",
    "BindMount",
    "Capabilities",
    "ContainerSpec",
    "ContainerSpecInput",
    "Healthcheck",
    "Log",
    "Mount",
    "OnFailure",
    "OtherRestart",
    "RestartPolicy",
    "TmpfsMount",
]

LOG_MIN_SIZE: Final = 2 * LINE_MAX
"""The smallest rotating log the shim accepts (two of its longest records)."""

RESTART_POLICIES: Final = ("no", "on-failure", "always", "unless-stopped")

_NAMESPACED_SYSCTLS: Final = ("kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.", "net.")


# --- mounts ----------------------------------------------------------------------------------


def _options(value: list[str]) -> list[str]:
    return sorted(set(value))


MountOptions = Annotated[
    list[Annotated[str, AfterValidator(lambda v: v)]],
    BeforeValidator(lambda value: [] if value is None else value),
    AfterValidator(_options),
    Field(description="extra mount options (nosuid, size=64m, mode=1777, …); sorted"),
]


class BindMount(SpecModel):
    """A host directory or file in the container."""

    type: Literal["bind"] = "bind"
    source: AbsolutePath = Field(description="an absolute host path that exists")
    target: AbsolutePath = Field(description="the path in the container")
    read_only: bool = False
    options: MountOptions = Field(default_factory=list)


class TmpfsMount(SpecModel):
    """A fresh tmpfs."""

    type: Literal["tmpfs"]
    source: Annotated[
        None, BeforeValidator(lambda _value: None, json_schema_input_type=str | None)
    ] = Field(default=None, description="ignored")
    target: AbsolutePath = Field(description="the path in the container")
    read_only: bool = False
    options: MountOptions = Field(default_factory=list)


def _mount_type(value: Any) -> Any:
    if isinstance(value, Mapping) and "type" not in value:
        return {**value, "type": "bind"}
    return value


Mount = Annotated[
    BindMount | TmpfsMount,
    Field(discriminator="type", description="a bind mount (type may be left out) or a tmpfs"),
    BeforeValidator(_mount_type),
]


def _mounts(value: list[BindMount | TmpfsMount]) -> list[BindMount | TmpfsMount]:
    """In the client's order (errors of the host's checks name its index); the normalised
    spec sorts them by target."""
    targets: set[str] = set()
    for index, mount in enumerate(value):
        if mount.target in targets:
            raise refuse(f"{mount.target} is mounted twice", f"[{index}].target")
        targets.add(mount.target)
    return value


Mounts = Annotated[
    list[Mount],
    BeforeValidator(lambda value: [] if value is None else value),
    AfterValidator(_mounts),
    Field(description="mounts; normalised sorted by target"),
]


# --- restart policy --------------------------------------------------------------------------


class OnFailure(SpecModel):
    """Restart when the process exits non-zero, at most ``max_retries`` times (0: always)."""

    name: Literal["on-failure"]
    max_retries: int = Field(default=0, ge=0, le=INT64_MAX, description="0: no limit")


def _no_retries(value: int) -> int:
    if value:
        raise refuse("only on-failure takes a retry count")
    return value


class OtherRestart(SpecModel):
    """Never restart (``no``), or restart whenever it exits unless the agent stopped it."""

    name: Literal["no", "always", "unless-stopped"] = "no"
    max_retries: Annotated[int, AfterValidator(_no_retries)] = Field(
        default=0, description="only on-failure takes one"
    )


def _restart_policy(value: Any) -> Any:
    if value is None:
        return {"name": "no"}
    if isinstance(value, str):
        name, sep, count = value.partition(":")
        out: dict[str, Any] = {"name": name}
        if sep:
            if not count.isdigit():
                raise refuse(f"the retry count after ':' must be a number, got {shown(value)}")
            out["max_retries"] = int(count)
        value = out
    if isinstance(value, Mapping):
        name = value.get("name", "no")
        if name not in RESTART_POLICIES:
            raise refuse(
                f"must be one of {', '.join(RESTART_POLICIES)} (on-failure:N), got {shown(name)}"
            )
        return {**value, "name": name}
    return value


RestartPolicy = Annotated[
    OnFailure | OtherRestart,
    Field(discriminator="name"),
    BeforeValidator(_restart_policy, json_schema_input_type=str | OnFailure | OtherRestart | None),
    Field(
        description="no, on-failure, on-failure:N, always or unless-stopped, or the object "
        "{name, max_retries}"
    ),
]


# --- health check, log, capabilities ---------------------------------------------------------


def _health_test(value: list[str]) -> list[str]:
    if not value:
        raise refuse("must not be empty")
    if value[0] == "CMD-SHELL":
        if len(value) != 2:
            raise refuse("CMD-SHELL takes one shell line")
        return value
    if value[0] == "CMD":
        if len(value) < 2:
            raise refuse("CMD needs a command")
        return value
    return ["CMD", *value]


_SECONDS: Final = 10.0**9


class Healthcheck(SpecModel):
    """A command run by exec at an interval (Docker's rules); see docs/api.md."""

    test: Annotated[Argv, AfterValidator(_health_test)] = Field(
        description='["CMD", argv…], ["CMD-SHELL", "line"], ["NONE"] (no check: null), or a '
        "bare argv (CMD)"
    )
    interval: float = Field(default=30, ge=0.1, le=_SECONDS, description="seconds between checks")
    timeout: float = Field(
        default=30, ge=0.1, le=_SECONDS, description="seconds one check may take"
    )
    retries: int = Field(
        default=3, ge=1, le=INT64_MAX, description="failures in a row to unhealthy"
    )
    start_period: float = Field(
        default=0, ge=0, le=_SECONDS, description="seconds in which failures do not count"
    )


def _healthcheck(value: Any) -> Any:
    if isinstance(value, Mapping) and value.get("test") == ["NONE"]:
        return None
    return value


def _log_size(value: int | None) -> int | None:
    if value is not None and 0 < value < LOG_MIN_SIZE:
        raise refuse(f"must be 0 (no rotation) or at least {LOG_MIN_SIZE} bytes, got {value}")
    return value


class Log(SpecModel):
    """Rotation of the container's log; null takes the agent's setting."""

    max_size: Annotated[Size | None, AfterValidator(_log_size)] = Field(
        default=None, description=f"rotate at this size (0: never; else at least {LOG_MIN_SIZE})"
    )
    max_files: int | None = Field(default=None, ge=0, le=1000, description="old files kept")

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class Capabilities(SpecModel):
    """Capabilities added to and dropped from Docker's default set."""

    add: CapabilityList = Field(default_factory=list)
    drop: CapabilityList = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


def _hostname(value: str | None) -> str | None:
    if value is not None and len(value) > 64:
        raise refuse("at most 64 characters")
    return value


def _sysctls(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not key.startswith(_NAMESPACED_SYSCTLS):
            raise refuse("not a namespaced sysctl; a container cannot set it", key)
    return value


# --- the spec --------------------------------------------------------------------------------

_IMAGE_DOC: Final = (
    "an image reference (busybox, localhost:5000/app:1, app@sha256:…) or id; exactly one "
    "of image and rootfs"
)


class ContainerSpecInput(SpecModel):
    """A container spec as a client sends it (docs/api.md, "The container spec"): every
    field optional, exactly one of image and rootfs."""

    image: Text | None = Field(default=None, description=_IMAGE_DOC)
    image_id: str | None = Field(default=None, description="output only; ignored on input")
    rootfs: AbsolutePath | None = Field(
        default=None, description="an absolute host path of a directory used as the root filesystem"
    )
    entrypoint: OptionalArgv = None
    command: OptionalArgv = Field(
        default=None, description="the process is entrypoint + command; together not empty"
    )
    env: EnvMap = Field(default_factory=dict)
    user: Text | None = Field(
        default=None, description="uid, uid:gid, name or name:group; default the image's, else 0:0"
    )
    workdir: AbsolutePath | None = Field(default=None, description="default the image's, else /")
    hostname: Annotated[Text | None, AfterValidator(_hostname)] = Field(
        default=None, description="default the container name (at most 64 characters)"
    )
    mounts: Mounts = Field(default_factory=list)
    resources: Resources = Resources()
    capabilities: Capabilities = Capabilities()
    read_only: bool = Field(default=False, description="the root filesystem read-only")
    privileged: bool = Field(
        default=False, description="all capabilities, no seccomp filter, no masked paths"
    )
    labels: StrMap = Field(default_factory=dict)
    restart_policy: RestartPolicy = OtherRestart()
    healthcheck: Annotated[
        Healthcheck | None,
        BeforeValidator(_healthcheck, json_schema_input_type=Healthcheck | None),
    ] = None
    stop_signal: Signal | None = Field(
        default=None, description="default: the image's, else SIGTERM"
    )
    stop_timeout: float = Field(
        default=10, ge=0, le=86400, description="seconds from stop_signal to SIGKILL"
    )
    init: bool = Field(default=False, description="tini as pid 1, as Docker's --init")
    tty: bool = Field(default=False, description="not available yet: true is refused")
    network: NetworkSettings = NetworkSettings()
    ports: PortList = Field(default_factory=list)
    dns: Dns = Dns()
    sysctls: Annotated[StrMap, AfterValidator(_sysctls)] = Field(
        default={}, description="namespaced sysctls (net.* needs a network namespace of its own)"
    )
    log: Log = Log()

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, value: Any) -> Any:
        """``null`` for a section is its default (as an absent one)."""
        if not isinstance(value, Mapping):
            return value
        sections = ("resources", "capabilities", "network", "dns", "log")
        return {k: v for k, v in value.items() if not (k in sections and v is None)}

    @model_validator(mode="after")
    def _relations(self) -> ContainerSpecInput:
        if self.image is not None and self.rootfs is not None:
            raise refuse("give image or rootfs, not both", "image")
        mode = self.network.mode
        if self.tty:
            raise refuse("terminals are not available on this agent yet", "tty")
        if self.ports and mode != "bridge":
            raise refuse(f"ports are published only with network mode bridge, not {mode}", "ports")
        for key in self.sysctls:
            if key.startswith("net.") and (mode == "host" or mode.startswith("container:")):
                raise refuse(
                    "net.* sysctls need a network namespace of the container's own "
                    "(network.mode bridge or none)",
                    f"sysctls.{key}",
                )
        return self


SPEC_FIELDS: Final = (
    "image",
    "image_id",
    "rootfs",
    "entrypoint",
    "command",
    "env",
    "user",
    "workdir",
    "hostname",
    "mounts",
    "resources",
    "capabilities",
    "read_only",
    "privileged",
    "labels",
    "restart_policy",
    "healthcheck",
    "stop_signal",
    "stop_timeout",
    "init",
    "tty",
    "network",
    "ports",
    "dns",
    "sysctls",
    "log",
)


class ContainerSpec(SpecModel):
    """A normalised container spec: every field present, one spelling per meaning (what
    the agent stores, compares and shows in inspect)."""

    image: str | None
    image_id: str | None
    rootfs: str | None
    entrypoint: list[str]
    command: list[str]
    env: dict[str, str]
    user: str = Field(description='"uid:gid"')
    workdir: str
    hostname: str
    mounts: list[BindMount | TmpfsMount]
    resources: Resources
    capabilities: Capabilities
    read_only: bool
    privileged: bool
    labels: dict[str, str]
    restart_policy: OnFailure | OtherRestart
    healthcheck: Healthcheck | None
    stop_signal: str
    stop_timeout: float
    init: bool
    tty: bool
    network: NetworkSettings
    ports: list[Port]
    dns: Dns
    sysctls: dict[str, str]
    log: Log
