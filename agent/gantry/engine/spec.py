"""The container spec: one normaliser for what a client asks and what the agent stored.

``normalise`` turns any accepted spelling of a spec into one canonical JSON object with
every field present, so equal meanings compare equal (``"1g"`` and ``1073741824``,
``["A=1"]`` and ``{"A": "1"}``, ``"on-failure:3"`` and its object form). Errors name the
dotted field (``spec.resources.memory``). See docs/api.md, "The container spec".
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gantry.engine import blkio, networking
from gantry.engine.errors import Invalid
from gantry.linux import fs
from gantry.runtime import users
from gantry.runtime.shim import LINE_MAX
from gantry.runtime.spec import CAPABILITIES

__all__ = [
    "IN_PLACE_FIELDS",
    "NAME_RE",
    "RESOURCE_FIELDS",
    "SPEC_FIELDS",
    "normalise",
    "parse_size",
    "signal_name",
    "validate_name",
]

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

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

#: Fields that change without recreating the container: the agent's own bookkeeping,
#: and the resources (written to the live cgroup when the host can, see Engine).
IN_PLACE_FIELDS: Final = frozenset(
    {"labels", "restart_policy", "healthcheck", "stop_signal", "stop_timeout", "log"}
    | {f"resources.{key}" for key in RESOURCE_FIELDS}
)

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

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_MEMORY: Final = 6 * 1024 * 1024
RESTART_POLICIES: Final = ("no", "on-failure", "always", "unless-stopped")
_UNITS: Final = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)
_CPUSET_RE: Final = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_ENV_KEY_RE: Final = re.compile(r"^[^=\x00]+$")
LOG_MIN_SIZE: Final = 2 * LINE_MAX
"""The smallest rotating log the shim accepts (two of its longest records)."""


def validate_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(
            f"{field}: must be 1-128 characters, a letter or digit first, then letters, "
            f"digits, '_', '.' or '-'; got {name!r}",
            field,
        )
    return name


def _type_error(field: str, wanted: str, value: Any) -> Invalid:
    return Invalid(f"{field}: must be {wanted}, got {type(value).__name__} {value!r}", field)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(field, "true or false", value)
    return value


def _str(value: Any, field: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _type_error(field, "a string", value)
    if not empty and not value:
        raise Invalid(f"{field}: must not be empty", field)
    if "\x00" in value:
        raise Invalid(f"{field}: must not contain a NUL character", field)
    return value


def _argv(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raise _type_error(field, "a list of strings (an argv, not a shell line)", value)
    if not isinstance(value, list):
        raise _type_error(field, "a list of strings", value)
    return [_str(item, f"{field}[{index}]", empty=True) for index, item in enumerate(value)]


def _str_map(value: Any, field: str, *, allow_list: bool = False) -> dict[str, str]:
    if value is None:
        return {}
    out: dict[str, str] = {}
    if allow_list and isinstance(value, list):
        for index, item in enumerate(value):
            text = _str(item, f"{field}[{index}]")
            key, sep, val = text.partition("=")
            if not sep or not key:
                raise Invalid(f"{field}[{index}]: must be KEY=VALUE, got {text!r}", field)
            out[key] = val
        return dict(sorted(out.items()))
    if not isinstance(value, Mapping):
        raise _type_error(field, "an object of strings", value)
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            raise Invalid(f"{field}: invalid key {key!r}", f"{field}.{key}")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise _type_error(f"{field}.{key}", "a string", val)
        out[key] = str(val)
    return dict(sorted(out.items()))


def parse_size(value: Any, field: str) -> int:
    """Bytes from an integer or a size string with a binary unit (``"512m"``)."""
    if isinstance(value, bool):
        raise _type_error(field, "a size (bytes or a string like '512m')", value)
    if isinstance(value, int):
        if value < 0:
            raise Invalid(f"{field}: must not be negative, got {value}", field)
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
        raise Invalid(
            f"{field}: not a size: {value!r} (use bytes, or e.g. '64k', '512m', '1g')", field
        )
    raise _type_error(field, "a size (bytes or a string like '512m')", value)


def signal_name(value: Any, field: str) -> str:
    """The ``SIG…`` name of a signal given as a name (any case, with or without SIG) or
    a number."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _type_error(field, "a signal name or number", value)
    text = str(value).strip().upper()
    if not text.startswith("SIG") and not text.isdigit():
        text = "SIG" + text
    try:
        number = int(text) if text.isdigit() else int(signal.Signals[text])
        return signal.Signals(number).name
    except (KeyError, ValueError):
        raise Invalid(f"{field}: unknown signal {value!r}", field) from None


def _number(value: Any, field: str, *, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(field, "a number", value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = (
            f"between {minimum:g} and {maximum:g}"
            if maximum is not None
            else f"at least {minimum:g}"
        )
        raise Invalid(f"{field}: must be {bound}, got {value}", field)
    return float(value)


def _int(value: Any, field: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(field, "an integer", value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise Invalid(f"{field}: must be {bound}, got {value}", field)
    return value


def _object(value: Any, field: str, known: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _type_error(field, "an object", value)
    for key in value:
        if key not in known:
            raise Invalid(
                f"{field}: unknown field {key!r} (known: {', '.join(known)})", f"{field}.{key}"
            )
    return dict(value)


def _absolute(value: Any, field: str) -> str:
    text = _str(value, field)
    if not text.startswith("/"):
        raise Invalid(f"{field}: must be an absolute path, got {text!r}", field)
    return os.path.normpath(text) if text != "/" else "/"


# --- sections -------------------------------------------------------------------------------


def _resources(value: Any, field: str) -> dict[str, Any]:
    raw = _object(value, field, RESOURCE_FIELDS)
    out: dict[str, Any] = dict.fromkeys(RESOURCE_FIELDS)
    if raw.get("memory") is not None:
        memory = parse_size(raw["memory"], f"{field}.memory")
        if memory < MIN_MEMORY:
            raise Invalid(
                f"{field}.memory: must be at least {MIN_MEMORY} bytes (6m), got {memory}",
                f"{field}.memory",
            )
        out["memory"] = memory
    if raw.get("memory_swap") is not None:
        swap = raw["memory_swap"]
        if swap == -1 or swap == "-1":
            out["memory_swap"] = -1
        else:
            out["memory_swap"] = parse_size(swap, f"{field}.memory_swap")
            if out["memory"] is None or out["memory_swap"] < out["memory"]:
                raise Invalid(
                    f"{field}.memory_swap: must be -1 or at least {field}.memory (memory plus "
                    "swap, as Docker), and needs memory set",
                    f"{field}.memory_swap",
                )
    if raw.get("cpus") is not None:
        out["cpus"] = round(_number(raw["cpus"], f"{field}.cpus", minimum=0.01, maximum=4096), 3)
    if raw.get("cpu_shares") is not None:
        out["cpu_shares"] = _int(
            raw["cpu_shares"], f"{field}.cpu_shares", minimum=2, maximum=262144
        )
    if raw.get("cpuset_cpus") is not None:
        text = _str(raw["cpuset_cpus"], f"{field}.cpuset_cpus").replace(" ", "")
        if not _CPUSET_RE.match(text):
            raise Invalid(
                f"{field}.cpuset_cpus: not a CPU list like '0-2,4': {text!r}",
                f"{field}.cpuset_cpus",
            )
        out["cpuset_cpus"] = text
    if raw.get("pids_limit") is not None:
        out["pids_limit"] = _int(raw["pids_limit"], f"{field}.pids_limit", minimum=1)
    out.update(blkio.normalise(raw, field))
    return out


def _capability_list(value: Any, field: str) -> list[str]:
    names: set[str] = set()
    for index, item in enumerate(_argv(value, field)):
        name = item.strip().upper()
        if name == "ALL":
            names.add("ALL")
            continue
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if name not in CAPABILITIES:
            raise Invalid(f"{field}[{index}]: unknown capability {item!r}", f"{field}[{index}]")
        names.add(name)
    return sorted(names)


def _capabilities(value: Any, field: str) -> dict[str, list[str]]:
    raw = _object(value, field, ("add", "drop"))
    return {
        "add": _capability_list(raw.get("add"), f"{field}.add"),
        "drop": _capability_list(raw.get("drop"), f"{field}.drop"),
    }


def _mounts(value: Any, field: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type_error(field, "a list of mount objects", value)
    out: list[dict[str, Any]] = []
    targets: set[str] = set()
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        raw = _object(item, where, ("type", "source", "target", "read_only", "options"))
        kind = raw.get("type", "bind")
        if kind not in ("bind", "tmpfs"):
            raise Invalid(f"{where}.type: must be 'bind' or 'tmpfs', got {kind!r}", f"{where}.type")
        if "target" not in raw:
            raise Invalid(f"{where}.target: is required", f"{where}.target")
        target = _absolute(raw["target"], f"{where}.target")
        if target in targets:
            raise Invalid(f"{where}.target: {target} is mounted twice", f"{where}.target")
        targets.add(target)
        source: str | None = None
        if kind == "bind":
            if "source" not in raw:
                raise Invalid(f"{where}.source: is required for a bind mount", f"{where}.source")
            source = _absolute(raw["source"], f"{where}.source")
            if not os.path.exists(source):
                raise Invalid(
                    f"{where}.source: {source} does not exist on the host", f"{where}.source"
                )
        options = sorted(set(_argv(raw.get("options"), f"{where}.options")))
        out.append(
            {
                "type": kind,
                "source": source,
                "target": target,
                "read_only": _bool(raw.get("read_only", False), f"{where}.read_only"),
                "options": options,
            }
        )
    return sorted(out, key=lambda mount: str(mount["target"]))


def _restart_policy(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {"name": "no", "max_retries": 0}
    if isinstance(value, str):
        name, sep, count = value.partition(":")
        raw: dict[str, Any] = {"name": name}
        if sep:
            if not count.isdigit():
                raise Invalid(
                    f"{field}: the retry count after ':' must be a number, got {value!r}", field
                )
            raw["max_retries"] = int(count)
    else:
        raw = _object(value, field, ("name", "max_retries"))
    name = raw.get("name", "no")
    if name not in RESTART_POLICIES:
        raise Invalid(
            f"{field}: must be one of {', '.join(RESTART_POLICIES)} (on-failure:N), got {name!r}",
            field,
        )
    retries = _int(raw.get("max_retries", 0), f"{field}.max_retries", minimum=0)
    if retries and name != "on-failure":
        raise Invalid(
            f"{field}.max_retries: only on-failure takes a retry count", f"{field}.max_retries"
        )
    return {"name": name, "max_retries": retries}


def _healthcheck(value: Any, field: str) -> dict[str, Any] | None:
    if value is None:
        return None
    raw = _object(value, field, ("test", "interval", "timeout", "retries", "start_period"))
    if "test" not in raw:
        raise Invalid(f"{field}.test: is required", f"{field}.test")
    test = _argv(raw["test"], f"{field}.test")
    if not test:
        raise Invalid(f"{field}.test: must not be empty", f"{field}.test")
    if test == ["NONE"]:
        return None
    if test[0] == "CMD-SHELL":
        if len(test) != 2:
            raise Invalid(f"{field}.test: CMD-SHELL takes one shell line", f"{field}.test")
    elif test[0] == "CMD":
        if len(test) < 2:
            raise Invalid(f"{field}.test: CMD needs a command", f"{field}.test")
    else:
        test = ["CMD", *test]
    return {
        "test": test,
        "interval": _number(raw.get("interval", 30), f"{field}.interval", minimum=0.1),
        "timeout": _number(raw.get("timeout", 30), f"{field}.timeout", minimum=0.1),
        "retries": _int(raw.get("retries", 3), f"{field}.retries", minimum=1),
        "start_period": _number(raw.get("start_period", 0), f"{field}.start_period", minimum=0),
    }


def _sysctls(value: Any, field: str, network_mode: str) -> dict[str, str]:
    out = _str_map(value, field)
    for key in out:
        namespaced = key.startswith(
            ("kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.", "net.")
        )
        if not namespaced:
            raise Invalid(
                f"{field}.{key}: not a namespaced sysctl; a container cannot set it",
                f"{field}.{key}",
            )
        if key.startswith("net.") and (
            network_mode == "host" or network_mode.startswith("container:")
        ):
            raise Invalid(
                f"{field}.{key}: net.* sysctls need a network namespace of the container's "
                "own (network.mode bridge or none)",
                f"{field}.{key}",
            )
    return out


def _user(value: Any, field: str, rootfs: str) -> str:
    text = _str(value, field)
    user, _sep, group = text.partition(":")
    if user.isdigit() and group.isdigit():
        return f"{int(user)}:{int(group)}"
    passwd: tuple[users.PasswdEntry, ...] = ()
    groups: tuple[users.GroupEntry, ...] = ()
    with contextlib.suppress(OSError):
        root_fd = fs.open_root(rootfs)
        try:
            passwd = users.parse_passwd(users.read_database(root_fd, "/etc/passwd") or "")
            groups = users.parse_group(users.read_database(root_fd, "/etc/group") or "")
        finally:
            os.close(root_fd)
    try:
        resolved = users.resolve_user(text, passwd=passwd, groups=groups)
    except users.UserLookupError as exc:
        raise Invalid(f"{field}: {exc}", field) from None
    return f"{resolved.uid}:{resolved.gid}"


def _not_yet(field: str, what: str) -> Invalid:
    return Invalid(f"{field}: {what} not available on this agent yet", field)


# --- the whole spec -------------------------------------------------------------------------


def normalise(
    raw: Any,
    *,
    name: str,
    prefix: str = "spec",
    rootfs_check: Callable[[str], bool] | None = None,
    image_resolver: Callable[[str, Mapping[str, Any], str], tuple[Mapping[str, Any], str]]
    | None = None,
) -> dict[str, Any]:
    """The canonical form of a container spec; :class:`Invalid` naming the field otherwise.

    ``rootfs_check`` decides whether a rootfs path is usable (default: it is a directory).
    ``image_resolver(image, raw_spec, prefix)`` answers the raw spec with the image's
    config merged in and the image's id (``gantry.engine.images.resolver``).
    """
    spec = _object(raw, prefix, SPEC_FIELDS)
    out: dict[str, Any] = {}
    image = spec.get("image")
    rootfs = spec.get("rootfs")
    if image is not None:
        # The image's config merged in (Docker's rules); "image_id" on input is ignored.
        _str(image, f"{prefix}.image")
        if rootfs is not None:
            raise Invalid(
                f"{prefix}.image: give {prefix}.image or {prefix}.rootfs, not both",
                f"{prefix}.image",
            )
        if image_resolver is None:
            raise Invalid(f"{prefix}.image: images are not available here", f"{prefix}.image")
        merged, image_id = image_resolver(image, spec, prefix)
        spec = dict(merged)
        out["image"] = image
        out["image_id"] = image_id
        out["rootfs"] = None
        rootfs_path = ""
    else:
        if rootfs is None:
            raise Invalid(f"{prefix}.rootfs: is required (or {prefix}.image)", f"{prefix}.rootfs")
        rootfs_path = _absolute(rootfs, f"{prefix}.rootfs")
        check = rootfs_check or (lambda path: Path(path).is_dir())
        if not check(rootfs_path):
            raise Invalid(f"{prefix}.rootfs: {rootfs_path} is not a directory", f"{prefix}.rootfs")
        out["image"] = None
        out["image_id"] = None
        out["rootfs"] = rootfs_path
    out["entrypoint"] = _argv(spec.get("entrypoint"), f"{prefix}.entrypoint")
    out["command"] = _argv(spec.get("command"), f"{prefix}.command")
    if not out["entrypoint"] and not out["command"]:
        raise Invalid(
            f"{prefix}.command: entrypoint and command are both empty: nothing to run",
            f"{prefix}.command",
        )
    env = _str_map(spec.get("env"), f"{prefix}.env", allow_list=True)
    env.setdefault("PATH", DEFAULT_PATH)
    out["env"] = dict(sorted(env.items()))
    out["user"] = _user(spec.get("user", "0:0"), f"{prefix}.user", rootfs_path)
    out["workdir"] = _absolute(spec.get("workdir", "/"), f"{prefix}.workdir")
    hostname = spec.get("hostname")
    out["hostname"] = _str(hostname, f"{prefix}.hostname") if hostname is not None else name[:63]
    if len(out["hostname"]) > 64:
        raise Invalid(f"{prefix}.hostname: at most 64 characters", f"{prefix}.hostname")
    out["mounts"] = _mounts(spec.get("mounts"), f"{prefix}.mounts")
    out["resources"] = _resources(spec.get("resources"), f"{prefix}.resources")
    out["capabilities"] = _capabilities(spec.get("capabilities"), f"{prefix}.capabilities")
    out["read_only"] = _bool(spec.get("read_only", False), f"{prefix}.read_only")
    out["privileged"] = _bool(spec.get("privileged", False), f"{prefix}.privileged")
    out["labels"] = _str_map(spec.get("labels"), f"{prefix}.labels")
    out["restart_policy"] = _restart_policy(spec.get("restart_policy"), f"{prefix}.restart_policy")
    out["healthcheck"] = _healthcheck(spec.get("healthcheck"), f"{prefix}.healthcheck")
    out["stop_signal"] = signal_name(spec.get("stop_signal", "SIGTERM"), f"{prefix}.stop_signal")
    out["stop_timeout"] = _number(
        spec.get("stop_timeout", 10), f"{prefix}.stop_timeout", minimum=0, maximum=86400
    )
    out["init"] = _bool(spec.get("init", False), f"{prefix}.init")
    out["tty"] = _bool(spec.get("tty", False), f"{prefix}.tty")
    if out["tty"]:
        raise _not_yet(f"{prefix}.tty", "terminals are")
    out["network"] = networking.normalise_network(spec.get("network"), f"{prefix}.network")
    out["ports"] = networking.normalise_ports(
        spec.get("ports"), f"{prefix}.ports", out["network"]["mode"]
    )
    out["dns"] = networking.normalise_dns(spec.get("dns"), f"{prefix}.dns")
    out["sysctls"] = _sysctls(spec.get("sysctls"), f"{prefix}.sysctls", out["network"]["mode"])
    out["log"] = _log(spec.get("log"), f"{prefix}.log")
    return out


def _log(value: Any, field: str) -> dict[str, int | None]:
    """``{max_size, max_files}``; ``None`` leaves a value to the agent's default. The
    shim's own checks (``LogOptions``) are repeated here so the error names the field."""
    given = _object(value, field, ("max_size", "max_files"))
    out: dict[str, int | None] = {"max_size": None, "max_files": None}
    if given.get("max_size") is not None:
        size = parse_size(given["max_size"], f"{field}.max_size")
        if 0 < size < LOG_MIN_SIZE:
            raise Invalid(
                f"{field}.max_size: must be 0 (no rotation) or at least {LOG_MIN_SIZE} bytes, "
                f"got {size}",
                f"{field}.max_size",
            )
        out["max_size"] = size
    if given.get("max_files") is not None:
        out["max_files"] = _int(given["max_files"], f"{field}.max_files", minimum=0, maximum=1000)
    return out


# Public names for the image merge (gantry.engine.images) that validates like this module.
argv = _argv
str_map = _str_map
absolute = _absolute
text = _str
