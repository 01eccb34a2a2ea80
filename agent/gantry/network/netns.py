"""Pinned network namespaces: a namespace kept alive by a bind mount of its nsfs file.

CNI plugins need a namespace path (``CNI_NETNS``) before the container's process exists,
and DEL needs it after the process is gone; the runtime joins it by path
(``linux.namespaces: [{"type": "network", "path": ...}]``), as runc does for a pod.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from gantry.linux import mount, ns


def create(path: Path) -> Path:
    """Create a new, empty network namespace pinned at ``path`` (a new empty file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: make the namespace, say so, wait until it is pinned
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            ns.unshare(ns.CLONE_NEWNET)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.ECHILD, "the namespace holder exited before unsharing")
        mount.bind(f"/proc/{pid}/ns/net", path, recursive=False)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)
    return path


def pin(source: str, path: Path) -> Path:
    """Pin an existing namespace (``/proc/<pid>/ns/net`` of a container the runtime made)
    at ``path`` (a new empty file), so CNI DEL still finds it after the process is gone."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        mount.bind(source, path, recursive=False)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def is_pinned(path: Path) -> bool:
    """True when ``path`` is a bind mount of a network namespace."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def remove(path: Path) -> None:
    """Unpin and delete ``path``; the namespace (and the veth ends in it) goes away when
    nothing else holds it. A missing path is not an error."""
    if is_pinned(path):
        with contextlib.suppress(OSError):
            mount.umount2(path, mount.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def inode(path: Path) -> int:
    """The namespace's inode number (two paths name the same namespace when they match)."""
    return os.stat(path).st_ino
