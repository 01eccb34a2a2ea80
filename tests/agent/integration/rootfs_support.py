"""Helpers of the rootfs integration tests (no tests in here): a busybox bundle, and a
runner that plays the container init: a fresh mount and pid namespace, pid 1 in it.

After pivot_root the host's Python library is out of sight, so a function run in the
container must use only modules imported before it starts (everything this file and
the test modules import at the top is fine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import linux_support as support
from gantry.linux import ns

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "false", "cat", "ls", "echo", "id", "mount", "stat", "touch")
ROOTFS_DIRS = ("bin", "dev", "etc", "proc", "root", "sys", "tmp")

ContainerFn = Callable[[], Any]


def make_bundle(bundle: Path) -> Path:
    """Fill ``bundle`` with a busybox rootfs (``bundle/rootfs``) and return the rootfs."""
    rootfs = bundle / "rootfs"
    rootfs.mkdir()
    for name in ROOTFS_DIRS:
        (rootfs / name).mkdir()
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    return rootfs


@contextlib.contextmanager
def bundle_dir() -> Iterator[tuple[Path, Path]]:
    """A busybox bundle in a scratch directory: ``(bundle, rootfs)``, removed afterwards."""
    with support.scratch_dir() as bundle:
        yield bundle, make_bundle(bundle)


def _write_id_maps(pid: int) -> None:
    # Root of the new user namespace is root outside: the rootfs files stay accessible,
    # but the kernel treats the namespace as unprivileged (mknod refused, mounts locked).
    Path(f"/proc/{pid}/uid_map").write_text("0 0 65536\n")
    Path(f"/proc/{pid}/setgroups").write_text("deny\n")
    Path(f"/proc/{pid}/gid_map").write_text("0 0 65536\n")


def _container_init(fn: ContainerFn, write_fd: int) -> None:
    """The grandchild: pid 1 of the new pid namespace. Never returns."""
    code = 1
    try:
        try:
            payload: dict[str, Any] = {"result": fn()}
            code = 0
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
        data = json.dumps(payload).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _in_namespaces(fn: ContainerFn, extra_flags: int, userns: bool) -> Any:
    """The child: new namespaces, then fork the container's pid 1 and collect its result."""
    if userns:
        # The maps of a new user namespace are written from outside it: by a helper that
        # is still in ours (a process may map only its own ids from inside).
        ready_r, ready_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            code = 1
            try:
                os.close(ready_w)
                os.read(ready_r, 1)
                _write_id_maps(os.getppid())
                code = 0
            finally:
                os._exit(code)
        os.close(ready_r)
        ns.unshare(ns.CLONE_NEWUSER)
        os.close(ready_w)
        _pid, status = os.waitpid(helper, 0)
        if status != 0:
            raise RuntimeError(f"writing the id maps failed (wait status {status:#x})")
    ns.unshare(ns.CLONE_NEWNS | ns.CLONE_NEWPID | extra_flags)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _container_init(fn, write_fd)
    os.close(write_fd)
    try:
        raw = _read_all(read_fd)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not raw:
        raise RuntimeError("the container init sent nothing")
    payload = json.loads(raw)
    if "error" in payload:
        raise RuntimeError(f"in the container: {payload['error']}\n{payload['tb']}")
    return payload["result"]


def run_in_container(fn: ContainerFn, *, extra_flags: int = 0, userns: bool = False) -> Any:
    """Run ``fn`` as pid 1 of a new pid and mount namespace (and a user namespace when
    ``userns``), in a grandchild of the test; return its JSON-serialisable result.

    When pid 1 exits the kernel kills whatever else lives in its pid namespace, and the
    mount namespace goes with its last process: nothing is left behind.
    """
    return support.run_in_child(lambda: _in_namespaces(fn, extra_flags, userns))


def mount_points(mountinfo: str) -> list[str]:
    """The mount points of a mountinfo text, in order."""
    return [line.split(" ")[4] for line in mountinfo.splitlines() if line.strip()]


def write_errno(path: str) -> int:
    """0 when ``path`` can be written (created), else the errno of the failure."""
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as exc:
        return exc.errno or -1
    return 0
