"""The one normaliser: any accepted spelling of a container spec → its :class:`ContainerSpec`.

The input model (:class:`ContainerSpecInput`) has checked everything the input alone can
say; here the spec meets the host and the image store: the image's config merged in, the
rootfs a directory, bind sources and block devices present, the user resolved in
``/etc/passwd``, and every default filled. Lists whose order means nothing are sorted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from gantry.engine import blkio
from gantry.engine.errors import Invalid
from gantry.engine.spec.fields import invalid_from, shown
from gantry.engine.spec.models import ContainerSpec, ContainerSpecInput
from gantry.engine.spec.resources import Resources
from gantry.linux import fs
from gantry.runtime import users

__all__ = ["DEFAULT_PATH", "ImageResolver", "normalise", "parse_spec"]

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ImageResolver = Callable[[str, ContainerSpecInput, str], tuple[ContainerSpecInput, str]]
"""``(image, spec, prefix)`` → the spec with the image's config merged in, and the image's
id (``gantry.engine.images.resolver``)."""


def parse_spec(raw: Any, prefix: str = "spec") -> ContainerSpecInput:
    """``raw`` (JSON data, or a model the API already validated) as the input model;
    :class:`Invalid` naming the field otherwise."""
    if isinstance(raw, ContainerSpecInput):
        return raw
    if not isinstance(raw, Mapping):
        raise Invalid(f"{prefix}: must be an object, got {type(raw).__name__} {shown(raw)}", prefix)
    try:
        return ContainerSpecInput.model_validate(raw)
    except ValidationError as exc:
        raise invalid_from(exc, raw, prefix) from None


def normalise(
    raw: Any,
    *,
    name: str,
    prefix: str = "spec",
    rootfs_check: Callable[[str], bool] | None = None,
    image_resolver: ImageResolver | None = None,
) -> dict[str, Any]:
    """The canonical form of a container spec (JSON data); :class:`Invalid` naming the
    field otherwise.

    ``rootfs_check`` decides whether a rootfs path is usable (default: it is a directory).
    """
    return normalised(
        raw, name=name, prefix=prefix, rootfs_check=rootfs_check, image_resolver=image_resolver
    ).model_dump(mode="json")


def normalised(
    raw: Any,
    *,
    name: str,
    prefix: str = "spec",
    rootfs_check: Callable[[str], bool] | None = None,
    image_resolver: ImageResolver | None = None,
) -> ContainerSpec:
    """:func:`normalise`, as the model."""
    given = parse_spec(raw, prefix)
    image_id: str | None = None
    rootfs_path = ""
    if given.image is not None:
        if image_resolver is None:
            raise Invalid(f"{prefix}.image: images are not available here", f"{prefix}.image")
        # The image's config merged in (Docker's rules); "image_id" on input is ignored.
        given, image_id = image_resolver(given.image, given, prefix)
    else:
        if given.rootfs is None:
            raise Invalid(f"{prefix}.rootfs: is required (or {prefix}.image)", f"{prefix}.rootfs")
        rootfs_path = given.rootfs
        check = rootfs_check or (lambda path: Path(path).is_dir())
        if not check(rootfs_path):
            raise Invalid(f"{prefix}.rootfs: {rootfs_path} is not a directory", f"{prefix}.rootfs")
    entrypoint = list(given.entrypoint or [])
    command = list(given.command or [])
    if not entrypoint and not command:
        raise Invalid(
            f"{prefix}.command: entrypoint and command are both empty: nothing to run",
            f"{prefix}.command",
        )
    _check_host(given, prefix)
    env = dict(given.env)
    env.setdefault("PATH", DEFAULT_PATH)
    return ContainerSpec.model_construct(
        image=given.image,
        image_id=image_id,
        rootfs=None if given.image is not None else rootfs_path,
        entrypoint=entrypoint,
        command=command,
        env=dict(sorted(env.items())),
        user=_user(given.user or "0:0", f"{prefix}.user", rootfs_path),
        workdir=given.workdir or "/",
        hostname=given.hostname if given.hostname is not None else name[:63],
        mounts=sorted(given.mounts, key=lambda mount: mount.target),
        resources=_sorted_devices(given.resources),
        capabilities=given.capabilities,
        read_only=given.read_only,
        privileged=given.privileged,
        labels=given.labels,
        restart_policy=given.restart_policy,
        healthcheck=given.healthcheck,
        stop_signal=given.stop_signal or "SIGTERM",
        stop_timeout=float(given.stop_timeout),
        init=given.init,
        tty=given.tty,
        network=given.network,
        ports=given.ports,
        dns=given.dns,
        sysctls=given.sysctls,
        log=given.log,
    )


def _sorted_devices(resources: Resources) -> Resources:
    update = {
        name: sorted(devices, key=lambda device: device.path)
        for name in blkio.DEVICE_FIELDS
        if (devices := getattr(resources, name))
    }
    return resources.model_copy(update=update) if update else resources


def _check_host(spec: ContainerSpecInput, prefix: str) -> None:
    """What the host must have for the spec: bind sources, block devices, the kernel's
    block I/O files. Indices are the client's."""
    for index, mount in enumerate(spec.mounts):
        if mount.type == "bind" and not os.path.exists(mount.source):
            where = f"{prefix}.mounts[{index}].source"
            raise Invalid(f"{where}: {mount.source} does not exist on the host", where)
    resources = spec.resources
    for name in blkio.DEVICE_FIELDS:
        for index, device in enumerate(getattr(resources, name) or ()):
            blkio.device_number(device.path, f"{prefix}.resources.{name}[{index}].path")
    blkio.check_host(resources.model_dump(), f"{prefix}.resources")


def _user(text: str, field: str, rootfs: str) -> str:
    user, _sep, group = text.partition(":")
    if user.isdigit() and group.isdigit():
        return f"{int(user)}:{int(group)}"
    passwd: tuple[users.PasswdEntry, ...] = ()
    groups: tuple[users.GroupEntry, ...] = ()
    if rootfs:
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
