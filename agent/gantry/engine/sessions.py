"""Interactive exec sessions: a process in a running container whose input and output
stream through the agent (the API carries them over a websocket), with a terminal or
without, with resize and signals.

As the run-to-completion exec (:mod:`.execs`), a session runs ``gantry-runtime exec`` as
a child of the agent. With a terminal, the child's stdio is the slave of a pty the agent
holds the master of: ``gantry-runtime`` proxies it to the container's own pty and mirrors
its size (the agent sends it ``SIGWINCH`` after a resize, as a terminal would). Without
one, the child's stdin, stdout and stderr are pipes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gantry.engine.errors import Invalid
from gantry.engine.execs import parse_request
from gantry.engine.spec import signal_name
from gantry.runtime.console import WindowSize, set_window_size

__all__ = ["Session", "start_session"]

PID_TIMEOUT: Final = 30.0


class Session:
    """A running interactive exec: ``output`` fds to read (``(fd, stream)``), ``stdin``
    to write, and the child to wait for."""

    def __init__(
        self,
        child: subprocess.Popen[bytes],
        scratch: tempfile.TemporaryDirectory[str],
        *,
        master: int = -1,
        stdin: int = -1,
        outputs: tuple[tuple[int, str], ...] = (),
    ) -> None:
        self.child = child
        self._scratch = scratch
        self.master = master
        self.tty = master >= 0
        self.stdin = master if self.tty else stdin
        self.outputs = ((master, "stdout"),) if self.tty else outputs
        self.pid_file = Path(scratch.name) / "pid"

    def resize(self, width: Any, height: Any) -> None:
        if not self.tty:
            raise Invalid("resize: the session has no terminal", "type")
        for value, field in ((width, "width"), (height, "height")):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise Invalid(f"{field}: must be an integer from 1 to 65535, got {value!r}", field)
        set_window_size(self.master, WindowSize(rows=height, columns=width))
        with contextlib.suppress(ProcessLookupError):
            self.child.send_signal(signal.SIGWINCH)

    def signal(self, value: Any) -> None:
        name = signal_name(value, "signal")
        # To the process itself, by the pid gantry-runtime wrote once it ran.
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.Signals[name])

    def _pid(self, timeout: float = PID_TIMEOUT) -> int | None:
        """The process's host pid, once ``gantry-runtime`` has written it (a signal sent
        right after the session started must not be lost)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(self.pid_file.read_text().strip())
            if self.child.poll() is not None or time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def close_stdin(self) -> None:
        if not self.tty and self.stdin >= 0:
            os.close(self.stdin)
            self.stdin = -1

    def wait(self) -> int:
        """The process's exit status (128 + N when killed by signal N)."""
        rc = self.child.wait()
        return 128 - rc if rc < 0 else rc

    def close(self) -> None:
        """Kill what still runs and release everything."""
        if self.child.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
            self.child.kill()
            self.child.wait()
        fds = {self.master, self.stdin, *(fd for fd, _stream in self.outputs)}
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.master = -1
        self.outputs = ()
        self._scratch.cleanup()


def start_session(
    runtime_root: Path, container_id: str, raw: Mapping[str, Any], scratch: Path
) -> Session:
    """Start ``raw`` (an exec request plus ``tty``, ``width``, ``height``) in the container."""
    tty = raw.get("tty", False)
    if not isinstance(tty, bool):
        raise Invalid(f"tty: must be true or false, got {tty!r}", "tty")
    request = parse_request(raw)
    directory = tempfile.TemporaryDirectory(dir=scratch, prefix="session-")
    argv = [sys.executable, "-m", "gantry.cli.runtime", "--root", str(runtime_root), "exec"]
    argv += ["--pid-file", str(Path(directory.name) / "pid")]
    if tty:
        argv.append("--tty")
    for key, value in request.env.items():
        argv += ["--env", f"{key}={value}"]
    if request.user:
        argv += ["--user", request.user]
    if request.workdir:
        argv += ["--cwd", request.workdir]
    argv += [container_id, *request.command]
    if tty:
        master, slave = os.openpty()
        os.set_blocking(master, False)
        try:
            width, height = raw.get("width") or 80, raw.get("height") or 24
            set_window_size(master, WindowSize(rows=int(height), columns=int(width)))
            child = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
        except BaseException:
            os.close(master)
            directory.cleanup()
            raise
        finally:
            os.close(slave)
        return Session(child, directory, master=master)
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    fds = [os.dup(stream.fileno()) for stream in (child.stdin, child.stdout, child.stderr)]
    for stream in (child.stdin, child.stdout, child.stderr):
        stream.close()
    for fd in fds[1:]:
        os.set_blocking(fd, False)
    return Session(child, directory, stdin=fds[0], outputs=((fds[1], "stdout"), (fds[2], "stderr")))
