"""An init for the container: tini as PID 1, when the spec asks for one.

A program run as PID 1 of a pid namespace inherits two duties it rarely knows about: it
must reap the orphans the kernel re-parents to it (or they stay zombies), and the kernel
delivers it only the signals it has a handler for (so a plain ``SIGTERM`` does nothing).
Docker's ``--init`` answers both with tini; Gantry does the same on request:

- the annotation ``org.gantry.init: "true"`` uses Debian's static tini
  (``/usr/bin/tini-static``, package ``tini``); an absolute path uses that binary
  instead (it must be static: it runs inside the container's root); ``"false"`` or
  absent means no init;
- the binary is bind-mounted read-only at ``/dev/init`` (as Docker does; ``/dev`` is the
  runtime's own tmpfs, so the image needs no free path for it and a read-only root is no
  obstacle), and the process becomes ``/dev/init -- ARGS…``.

tini then runs ARGS as its child, forwards every signal it gets to it, reaps every orphan,
and exits with the child's status (128 + the signal when it was killed).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Final

from gantry.runtime.spec import Mount, Spec

__all__ = [
    "ANNOTATION",
    "DEFAULT_INIT",
    "MOUNT_POINT",
    "InitBinaryError",
    "init_binary",
    "with_init",
]

ANNOTATION: Final = "org.gantry.init"
DEFAULT_INIT: Final = "/usr/bin/tini-static"
MOUNT_POINT: Final = "/dev/init"
_FIELD: Final = f"annotations[{ANNOTATION!r}]"


class InitBinaryError(ValueError):
    """The init the spec asks for cannot be used; the message names the annotation."""


def init_binary(spec: Spec) -> str | None:
    """The host path of the init binary ``spec`` asks for, or ``None`` for no init.

    Raises :class:`InitBinaryError` for a value that is neither true, false nor an
    absolute path, or a binary that is not an executable regular file.
    """
    value = spec.annotations.get(ANNOTATION)
    if value is None or value.strip().lower() in ("", "false", "0", "no"):
        return None
    if value.strip().lower() in ("true", "1", "yes"):
        path = DEFAULT_INIT
    elif value.startswith("/"):
        path = value
    else:
        raise InitBinaryError(
            f'{_FIELD}: {value!r} is neither "true", "false" nor an absolute path'
        )
    try:
        info = os.stat(path)
    except OSError as exc:
        hint = " (install Debian's tini package)" if path == DEFAULT_INIT else ""
        raise InitBinaryError(f"{_FIELD}: {path}: {exc.strerror}{hint}") from None
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        raise InitBinaryError(f"{_FIELD}: {path} is not an executable file")
    return path


def with_init(spec: Spec) -> Spec:
    """``spec`` with the init it asks for (see the module): the bind mount at
    :data:`MOUNT_POINT` added last and the process wrapped; ``spec`` itself when it asks
    for none."""
    path = init_binary(spec)
    if path is None or spec.process is None:
        return spec
    if any(_binds_dev(mount) for mount in spec.mounts):
        # /dev/init would be made in the bound directory, which is not the container's own.
        raise InitBinaryError(
            f"{_FIELD}: /dev is a bind mount here; the init needs the runtime's /dev"
        )
    mount = Mount(
        destination=MOUNT_POINT,
        type="bind",
        source=path,
        options=("bind", "ro", "nosuid", "nodev"),
    )
    process = dataclasses.replace(spec.process, args=(MOUNT_POINT, "--", *spec.process.args))
    return dataclasses.replace(spec, mounts=(*spec.mounts, mount), process=process)


def _binds_dev(mount: Mount) -> bool:
    return mount.destination.rstrip("/") == "/dev" and (
        mount.type == "bind" or "bind" in mount.options or "rbind" in mount.options
    )
