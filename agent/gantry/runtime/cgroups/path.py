"""Where a container's cgroup goes: resolving the spec's ``linux.cgroupsPath``.

The runtime spec (config-linux.md) leaves the meaning to the runtime; Gantry follows runc's
cgroupfs driver:

- absent: ``<parent>/<container id>``, the parent being ``/gantry`` unless configured;
- absolute (``/a/b``): exactly that cgroup, in every hierarchy;
- relative (``a/b``): under the configured parent (``/gantry/a/b``).

The systemd driver's ``slice:prefix:name`` form is refused: Gantry writes cgroupfs itself
and never asks systemd for a scope, and a host without systemd as PID 1 has nobody to ask.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Final

from gantry.runtime.spec import Spec, SpecError

__all__ = [
    "DEFAULT_PARENT",
    "FIELD",
    "CgroupsPathError",
    "cgroup_path_for",
    "normalize_cgroup",
    "resolve_cgroups_path",
]

DEFAULT_PARENT: Final = "/gantry"
"""The cgroup every container's cgroup goes under unless its spec says otherwise."""

FIELD: Final = "linux.cgroupsPath"


class CgroupsPathError(SpecError):
    """``linux.cgroupsPath`` cannot be used; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__([(FIELD, message)])


def _init_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip()
    except OSError:
        return "unknown"


def _systemd_refusal(value: str) -> str:
    init = _init_name()
    if init == "systemd":
        why = "Gantry writes cgroupfs itself and has no systemd cgroup driver"
    else:
        why = (
            f"there is no systemd here (PID 1 is {init!r}) to create a scope, and Gantry "
            "writes cgroupfs itself"
        )
    return (
        f"{value!r} is the systemd driver's 'slice:prefix:name' form; {why}. "
        "Give a cgroup path instead, absolute ('/gantry/web') or relative to Gantry's "
        "parent cgroup ('web')"
    )


def normalize_cgroup(path: str) -> str:
    """Return ``path`` (absolute) without repeated, trailing or ``.`` separators.

    ``ValueError`` for a relative path, a ``..`` component or the root itself.
    """
    if not path.startswith("/"):
        raise ValueError(f"cgroup path must be absolute, got {path!r}")
    if ".." in path.split("/"):
        raise ValueError(f"cgroup path must not contain '..', got {path!r}")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")  # POSIX keeps a leading '//'; cgroupfs does not
    if normal == "/":
        raise ValueError(f"cgroup path must name a cgroup below the root, got {path!r}")
    return normal


def resolve_cgroups_path(
    cgroups_path: str | None, container_id: str, *, parent: str = DEFAULT_PARENT
) -> str:
    """Return the absolute cgroup path for a container.

    ``CgroupsPathError`` (a :class:`SpecError` naming ``linux.cgroupsPath``) for a value
    that cannot be used; ``ValueError`` for a bad ``parent`` or container id.
    """
    if parent != "/":
        parent = normalize_cgroup(parent)
    if cgroups_path is None:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ValueError(f"container id {container_id!r} cannot name a cgroup")
        return posixpath.join(parent, container_id)
    if ":" in cgroups_path:
        raise CgroupsPathError(_systemd_refusal(cgroups_path))
    if not cgroups_path.strip("/"):
        raise CgroupsPathError(f"must name a cgroup below the hierarchy root, got {cgroups_path!r}")
    if ".." in cgroups_path.split("/"):
        raise CgroupsPathError(f"must not contain '..', got {cgroups_path!r}")
    absolute = (
        cgroups_path if cgroups_path.startswith("/") else posixpath.join(parent, cgroups_path)
    )
    try:
        return normalize_cgroup(absolute)
    except ValueError as exc:
        raise CgroupsPathError(str(exc)) from None


def cgroup_path_for(spec: Spec, container_id: str, *, parent: str = DEFAULT_PARENT) -> str:
    """Return the cgroup path of the container ``container_id`` run from ``spec``."""
    cgroups_path = spec.linux.cgroups_path if spec.linux is not None else None
    return resolve_cgroups_path(cgroups_path, container_id, parent=parent)
