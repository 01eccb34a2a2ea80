"""Helpers of the gantry-runtime terminal, exec, hooks and init tests (no tests in here).

``Runtime`` runs ``gantry-runtime --root ROOT …`` as a subprocess with its stdio in files
(a created container inherits them; no pipe is held open). Bundles are busybox-static
rootfs with the hardened default config, or exactly what ``runc spec`` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rootfs_support as rs
from gantry.runtime.defaults import default_config

RUNTIME = Path(sys.executable).parent / "gantry-runtime"
TIMEOUT = 30.0
APPLETS = (
    "sleep",
    "kill",
    "ps",
    "hostname",
    "readlink",
    "pwd",
    "env",
    "grep",
    "tty",
    "stty",
    "dirname",
)

Change = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


class Runtime:
    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.calls = 0

    def argv(self, *args: str) -> list[str]:
        return [str(RUNTIME), "--root", str(self.root), *args]

    def __call__(self, *args: str, **kwargs: Any) -> Result:
        self.calls += 1
        out = self.scratch / f"out-{self.calls}"
        err = self.scratch / f"err-{self.calls}"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            completed = subprocess.run(
                self.argv(*args),
                stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                stdout=out_f,
                stderr=err_f,
                timeout=TIMEOUT,
                check=False,
                **kwargs,
            )
        return Result(completed.returncode, out.read_text(), err.read_text())

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.rc == 0, result
        return result

    def state(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("state", container_id).out)
        return data

    def exit_record(self, container_id: str) -> dict[str, Any]:
        """The shim's exit.json, once it is written (waiting for it)."""
        path = self.root / container_id / "exit.json"
        deadline = time.monotonic() + TIMEOUT
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def cleanup(self) -> list[str]:
        """Force-delete whatever is left under the root; the names of what was left."""
        leftovers = sorted(p.name for p in self.root.iterdir()) if self.root.exists() else []
        for name in leftovers:
            self("delete", "--force", name)
        return leftovers


@contextlib.contextmanager
def runtime_in(tmp_path: Path) -> Iterator[Runtime]:
    root = tmp_path / "root"
    scratch = tmp_path / "io"
    scratch.mkdir()
    rt = Runtime(root, scratch)
    try:
        yield rt
    finally:
        leftovers = rt.cleanup()
    assert leftovers == [], f"the test left containers behind: {leftovers}"


def busybox_bundle(
    bundle: Path, args: list[str], change: Change | None = None, *, seccomp: bool = False
) -> Path:
    """A busybox bundle with the hardened default config (and the default seccomp
    profile with ``seccomp``)."""
    bundle.mkdir()
    bundle.chmod(0o755)
    rootfs = rs.make_bundle(bundle)
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    config = default_config(args, "rootfs", hostname="inside")
    if seccomp:
        from gantry.runtime.defaults import DEFAULT_CAPABILITIES
        from gantry.runtime.seccomp_default import default_seccomp_config

        config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)
    if change is not None:
        change(config)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def runc_spec_bundle(bundle: Path) -> Path:
    """A bundle whose config.json is exactly what ``runc spec`` writes, with a busybox
    rootfs (runc spec's default: ``terminal: true``, ``args: ["sh"]``)."""
    bundle.mkdir()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True, timeout=TIMEOUT)
    rs.make_bundle(bundle)
    return bundle


class ConsoleReceiver:
    """A console socket, as runc's ``recvtty`` or conmon hold one: listen, accept the
    runtime's connection, take the pty master it sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.payload = b""

    def receive(self, timeout: float = TIMEOUT) -> int:
        ready, _w, _x = select.select([self.server], [], [], timeout)
        assert ready, "the runtime never connected to the console socket"
        conn, _addr = self.server.accept()
        with conn:
            payload, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, fds
        self.payload = payload
        return fds[0]

    def close(self) -> None:
        self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_terminal(master: int, *, until: bytes | None = None, timeout: float = TIMEOUT) -> bytes:
    """What comes out of a pty master: up to and including ``until``, or until the other
    side is gone (EIO) when ``until`` is None."""
    data = b""
    deadline = time.monotonic() + timeout
    while until is None or until not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the terminal said only {data!r}")
        ready, _w, _x = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every holder of the slave is gone
            break
        if not chunk:
            break
        data += chunk
    return data


def terminal_lines(data: bytes) -> list[str]:
    return [line.strip() for line in data.decode(errors="replace").splitlines()]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds (no timing is asserted: ``timeout`` only bounds a
    hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)
