"""Helpers of the container integration tests (no tests in here).

Each container runs under a *supervisor*: a child forked from the test (see
``linux_support.run_in_child``) that calls ``create_init`` — and so becomes the child
subreaper the init is re-parented to — while pytest itself is never changed. The
supervisor reports back as JSON: the container's output (stdout and stderr through one
pipe), its exit status, or the failing step, plus what callbacks observed on the host.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import linux_support as support
import rootfs_support as rs
from gantry.runtime.defaults import default_config
from gantry.runtime.process import ContainerInitError, InitHandle, create_init
from gantry.runtime.spec import load_spec

EXTRA_APPLETS = (
    "ps",
    "sleep",
    "mkdir",
    "grep",
    "hostname",
    "unshare",
    "readlink",
    "pwd",
    "env",
    "wc",
    "chown",
)
TIMEOUT = 20.0

Change = Callable[[dict[str, Any]], None]
Prepare = Callable[[Path, Path], None]
Observer = Callable[[InitHandle, "Output"], Any]


class Output:
    """What the container wrote so far, read from the supervisor's end of its pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self.closed = False

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def _read_some(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.closed:
            return False
        ready, _unused_w, _unused_x = select.select([self.fd], [], [], remaining)
        if not ready:
            return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.closed = True
        self.data += chunk
        return True

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> bool:
        """Read until ``text`` has appeared; False at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if not self._read_some(deadline):
                return False
        return True

    def read_to_eof(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            if not self._read_some(deadline):
                raise TimeoutError(f"the container's output did not end within {timeout}s")


@dataclass(frozen=True)
class Outcome:
    """What one container run came to."""

    status: int | None
    """Exit status in the shell's form; None when creation or start failed."""
    output: str
    error: dict[str, Any] | None
    """``{"step", "message", "errno", "stage"}`` of a ContainerInitError."""
    pid: int | None
    before_start: Any
    after_start: Any
    children_left: list[int]
    """The supervisor's children after everything: must be empty."""
    warnings: list[str]

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()


def _error(exc: ContainerInitError, stage: str) -> dict[str, Any]:
    return {"step": exc.step, "message": exc.message, "errno": exc.errno, "stage": stage}


def _supervise(
    spec: Any,
    bundle: Path,
    extra_fds: tuple[int, ...],
    cgroup_procs: tuple[Path, ...],
    before_start: Observer | None,
    after_start: Observer | None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": None,
        "output": "",
        "error": None,
        "pid": None,
        "before_start": None,
        "after_start": None,
        "warnings": [],
    }
    out_r, out_w = os.pipe()
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    output = Output(out_r)
    try:
        try:
            handle = create_init(
                spec,
                bundle=bundle,
                stdio=(null, out_w, out_w),
                extra_fds=extra_fds,
                cgroup_procs=cgroup_procs,
            )
        except ContainerInitError as exc:
            result["error"] = _error(exc, "create")
            return result
        finally:
            os.close(out_w)  # the container holds its own copies
        with handle:
            result["pid"] = handle.pid
            result["warnings"] = list(handle.warnings)
            if before_start is not None:
                result["before_start"] = before_start(handle, output)
            try:
                handle.start()
            except ContainerInitError as exc:
                result["error"] = _error(exc, "start")
                result["status"] = handle.wait(TIMEOUT)
                return result
            if after_start is not None:
                result["after_start"] = after_start(handle, output)
            output.read_to_eof()
            result["status"] = handle.wait(TIMEOUT)
        result["output"] = output.text
        return result
    finally:
        os.close(out_r)
        os.close(null)
        result["children_left"] = sorted(support.children())


def run_container(
    args: list[str],
    *,
    change: Change | None = None,
    prepare: Prepare | None = None,
    extra_fds: tuple[int, ...] = (),
    cgroup_procs: tuple[Path, ...] = (),
    before_start: Observer | None = None,
    after_start: Observer | None = None,
    hostname: str | None = None,
) -> Outcome:
    """Run ``args`` in a fresh busybox bundle with the hardened default spec (adjusted by
    ``change``, the rootfs by ``prepare``) under a forked supervisor."""
    with rs.bundle_dir() as (bundle, rootfs):
        bundle.chmod(0o755)  # a container root mapped to another uid must reach its rootfs
        for applet in EXTRA_APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        if prepare is not None:
            prepare(bundle, rootfs)
        config = default_config(args, "rootfs", hostname=hostname)
        if change is not None:
            change(config)
        spec = load_spec(config)
        raw = support.run_in_child(
            lambda: _supervise(spec, bundle, extra_fds, cgroup_procs, before_start, after_start),
            timeout=60,
        )
    return Outcome(**raw)


def sh(script: str, **kwargs: Any) -> Outcome:
    """Run ``/bin/sh -c script``."""
    return run_container(["/bin/sh", "-c", script], **kwargs)


def status_field(pid: int, name: str) -> str:
    """A field of /proc/<pid>/status, read on the host."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)


def status_fields(text: str) -> dict[str, str]:
    """``Key: value`` lines (a /proc/<pid>/status printed by the container) as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
