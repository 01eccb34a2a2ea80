"""The hardened default runtime spec: what a container gets unless it asks for less.

The values follow runc's `runc spec` and Docker's defaults (see shared/reference/runtimes.md):
Docker's capability set, the masked and read-only /proc and /sys paths, the standard
mounts with /sys and /sys/fs/cgroup read-only, private pid/network/ipc/uts/mount/cgroup
namespaces, no_new_privs, and a device cgroup that denies everything but the standard
devices. It is plain data (`default_config`), validated by `load_spec` like any other spec.

Not here: a seccomp profile (the default one is its own piece of data), the hostname
file, /etc/hosts and resolv.conf mounts (the engine adds them), cgroupsPath.
"""

from collections.abc import Sequence
from os import PathLike
from typing import Any

from gantry.runtime.spec import OCI_VERSION, Spec, load_spec

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_ENV",
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_NAMESPACES",
    "DEFAULT_READONLY_PATHS",
    "default_config",
    "default_spec",
]

#: Docker's default capability set (runtime-tools `generate` uses the same).
DEFAULT_CAPABILITIES = tuple(
    f"CAP_{name}"
    for name in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
)

#: Paths hidden from the container: runc's list, plus /proc/interrupts (moby) and
#: powercap, whose RAPL energy counters leak what other tenants compute (CVE-2020-8694).
DEFAULT_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

#: Kernel knobs the container may read but not write (runc, containerd and moby agree).
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

#: No user namespace and no time namespace by default, as in Docker.
DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")

DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)

_NOFILE = 1024

# (major, minor) of the character devices every container may use; None is any minor.
# The node set the spec requires (null zero full random urandom tty), plus the console,
# ptmx and the pts slaves (runc's allowed list).
_ALLOWED_CHAR_DEVICES: tuple[tuple[int, int | None], ...] = (
    (1, 3),  # null
    (1, 5),  # zero
    (1, 7),  # full
    (1, 8),  # random
    (1, 9),  # urandom
    (5, 0),  # tty
    (5, 1),  # console
    (5, 2),  # ptmx
    (136, None),  # pts/*
)


def _mounts() -> list[dict[str, Any]]:
    hardened = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": hardened},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": [*hardened, "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": hardened},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*hardened, "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [*hardened, "relatime", "ro"],
        },
    ]


def _device_rules() -> list[dict[str, Any]]:
    # Deny first, then allow: the device cgroup reads the rules in order.
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    # Creating nodes is harmless without access to them; images' install scripts do it.
    rules += [{"allow": True, "type": kind, "access": "m"} for kind in ("c", "b")]
    for major, minor in _ALLOWED_CHAR_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def default_config(
    args: Sequence[str],
    rootfs: str | PathLike[str],
    *,
    env: Sequence[str] | None = None,
    cwd: str = "/",
    terminal: bool = False,
    hostname: str | None = None,
) -> dict[str, Any]:
    """The hardened default config.json for running `args` in `rootfs`, as plain JSON data.

    Callers adjust the data and hand it to `load_spec`; `default_spec` does both at once.
    """
    caps = list(DEFAULT_CAPABILITIES)
    env_list = list(DEFAULT_ENV if env is None else env)
    if terminal and env is None:
        env_list.append("TERM=xterm")
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "args": list(args),
        "env": env_list,
        "cwd": cwd,
        # No inheritable or ambient capabilities: a file capability on an executable in
        # the image must not be able to pick them up (CVE-2022-24769).
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": _NOFILE, "soft": _NOFILE}],
        "noNewPrivileges": True,
    }
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(rootfs), "readonly": False},
        "mounts": _mounts(),
        "linux": {
            "namespaces": [{"type": kind} for kind in DEFAULT_NAMESPACES],
            "resources": {"devices": _device_rules()},
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
    if hostname:
        config["hostname"] = hostname
    return config


def default_spec(
    args: Sequence[str],
    rootfs: str | PathLike[str],
    *,
    env: Sequence[str] | None = None,
    cwd: str = "/",
    terminal: bool = False,
    hostname: str | None = None,
) -> Spec:
    """The hardened default spec for running `args` in `rootfs`, validated."""
    return load_spec(
        default_config(args, rootfs, env=env, cwd=cwd, terminal=terminal, hostname=hostname)
    )
