"""Container root filesystems: an overlay of the image's layers, an init layer, and a
private upper directory.

``containers/<id>/`` holds ``upper/`` and ``work/`` (the container's writes), ``init/``
(``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf`` written by the engine; the
nearest lower, so the container sees them, and never part of a commit) and ``rootfs/``
(the mount point). Lowers are the store's unpacked layers themselves, nearest first:
a layer shared by many images and containers is stored and unpacked once, and no layer is
mounted on its own.

Overlay's classic ``lowerdir=a:b:c`` option must fit in one page (4096 bytes), which
limits images to a few dozen layers at our path lengths (Docker caps at 128 with 26-byte
link names; containerd switches to relative paths). The new mount API's
``fsconfig(lowerdir+)`` (Linux 6.8) passes each lower as its own parameter, so the limit
is the kernel's stack depth (500). On older kernels the option string is used, and an
image that does not fit gets a clear error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gantry.images.errors import ImageError, NotFound
from gantry.images.store import ContentStore, ImageRecord
from gantry.linux import mount as mnt

INIT_FILES: Final = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
"""Paths (relative to the rootfs) the init layer provides and commit leaves out."""
MAX_LOWERS: Final = 500
"""OVL_MAX_STACK of the kernel."""
_OPTION_LIMIT: Final = 4096 - 1


@dataclass(frozen=True)
class Snapshot:
    """The directories of one container's root filesystem."""

    container_id: str
    base: Path

    @property
    def rootfs(self) -> Path:
        return self.base / "rootfs"

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def init(self) -> Path:
        return self.base / "init"


def _check_id(container_id: str) -> str:
    if (
        not container_id
        or "/" in container_id
        or container_id in (".", "..")
        or len(container_id) > 128
        or "\0" in container_id
    ):
        raise ImageError(f"container_id: invalid {container_id!r}")
    return container_id


class Snapshotter:
    """Prepares, mounts and removes container root filesystems over a content store."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self.containers = store.root / "containers"

    def snapshot(self, container_id: str) -> Snapshot:
        return Snapshot(container_id, self.containers / _check_id(container_id))

    def prepare(
        self,
        container_id: str,
        image: ImageRecord | None,
        *,
        hostname: str = "",
        hosts: str = "",
        resolv_conf: str = "",
    ) -> Snapshot:
        """Create the container's directories and init layer and mount its rootfs.

        ``image`` None means an empty base (``scratch``). Layers missing from the store
        are unpacked from their blobs first. Idempotent for a mounted snapshot.
        """
        snap = self.snapshot(container_id)
        lowers = self.lowers(image)
        for path in (snap.base, snap.upper, snap.work, snap.rootfs, snap.init):
            path.mkdir(mode=0o700 if path == snap.base else 0o755, parents=True, exist_ok=True)
        snap.base.chmod(0o711)
        self.write_init(container_id, hostname=hostname, hosts=hosts, resolv_conf=resolv_conf)
        if not self.is_mounted(container_id):
            mount_overlay([snap.init, *lowers], snap.upper, snap.work, snap.rootfs)
        return snap

    def lowers(self, image: ImageRecord | None) -> list[Path]:
        """The image's unpacked layers, nearest (topmost) first."""
        if image is None:
            return []
        if len(image.layers) + 1 > MAX_LOWERS:
            raise ImageError(
                f"image {image.id}: {len(image.layers)} layers is more than overlay can stack"
            )
        return [self.store.unpack_layer(layer) for layer in reversed(image.layers)]

    def write_init(
        self, container_id: str, *, hostname: str = "", hosts: str = "", resolv_conf: str = ""
    ) -> None:
        """(Re)write the init layer's files in place (a running container sees the change)."""
        snap = self.snapshot(container_id)
        etc = snap.init / "etc"
        etc.mkdir(mode=0o755, parents=True, exist_ok=True)
        contents = {
            "hosts": hosts or _default_hosts(hostname),
            "hostname": f"{hostname}\n" if hostname else "",
            "resolv.conf": resolv_conf,
        }
        for name, text in contents.items():
            fd = os.open(etc / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, text.encode())
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)

    def is_mounted(self, container_id: str) -> bool:
        snap = self.snapshot(container_id)
        try:
            return os.stat(snap.rootfs).st_dev != os.stat(snap.base).st_dev
        except FileNotFoundError:
            return False

    def unmount(self, container_id: str) -> None:
        """Unmount the rootfs (lazily if it is busy); nothing mounted is fine."""
        snap = self.snapshot(container_id)
        while self.is_mounted(container_id):
            try:
                mnt.umount2(str(snap.rootfs), mnt.UMOUNT_NOFOLLOW)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                mnt.umount2(str(snap.rootfs), mnt.MNT_DETACH | mnt.UMOUNT_NOFOLLOW)

    def remove(self, container_id: str) -> None:
        """Unmount and delete the container's snapshot directories."""
        snap = self.snapshot(container_id)
        self.unmount(container_id)
        for path in (snap.rootfs, snap.upper, snap.work, snap.init):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path)
        with contextlib.suppress(OSError):
            snap.base.rmdir()  # the engine may keep its own files there

    def list(self) -> list[str]:
        if not self.containers.is_dir():
            return []
        return sorted(p.name for p in self.containers.iterdir() if (p / "upper").is_dir())

    def upper(self, container_id: str) -> Path:
        snap = self.snapshot(container_id)
        if not snap.upper.is_dir():
            raise NotFound(f"container {container_id!r} has no snapshot")
        return snap.upper


def _default_hosts(hostname: str) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if hostname:
        lines.append(f"127.0.1.1\t{hostname}")
    return "\n".join(lines) + "\n"


def mount_overlay(lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay of ``lowers`` (nearest first) with ``upper``/``work`` on ``target``."""
    if not lowers:
        raise ImageError("an overlay needs at least one lower directory")
    options = {
        "upperdir": str(upper),
        "workdir": str(work),
        # Commit reads the upper directory alone, so it must hold plain copies: no redirect
        # xattrs for renamed directories, no metacopy-only inodes, no index.
        "redirect_dir": "off",
        "metacopy": "off",
        "index": "off",
    }
    try:
        _mount_with_fsconfig(lowers, options, target)
    except _NoLowerdirPlus:
        text = "lowerdir=" + ":".join(str(p) for p in lowers)
        text += "".join(f",{k}={v}" for k, v in options.items())
        if len(text) > _OPTION_LIMIT:
            raise ImageError(
                f"{len(lowers)} layers do not fit overlay's mount options on this kernel "
                "(it lacks fsconfig lowerdir+, Linux 6.8)"
            ) from None
        mnt.mount("overlay", str(target), "overlay", 0, text)


class _NoLowerdirPlus(Exception):
    pass


def _mount_with_fsconfig(lowers: Sequence[Path], options: dict[str, str], target: Path) -> None:
    if not mnt.have_new_mount_api():
        raise _NoLowerdirPlus
    fs_fd = mnt.fsopen("overlay")
    try:
        mnt.fsconfig(fs_fd, mnt.FSCONFIG_SET_STRING, "source", "overlay")
        for index, lower in enumerate(lowers):
            try:
                mnt.fsconfig(fs_fd, mnt.FSCONFIG_SET_STRING, "lowerdir+", str(lower))
            except OSError as exc:
                if index == 0 and exc.errno == errno.EINVAL:
                    raise _NoLowerdirPlus from None
                raise ImageError(f"overlay lower {lower}: {exc.strerror}") from None
        for key, value in options.items():
            mnt.fsconfig(fs_fd, mnt.FSCONFIG_SET_STRING, key, value)
        try:
            mnt.fsconfig(fs_fd, mnt.FSCONFIG_CMD_CREATE)
        except OSError as exc:
            raise ImageError(f"overlay mount on {target}: {exc.strerror}") from None
        mount_fd = mnt.fsmount(fs_fd)
        try:
            mnt.attach(mount_fd, str(target))
        finally:
            os.close(mount_fd)
    finally:
        os.close(fs_fd)
