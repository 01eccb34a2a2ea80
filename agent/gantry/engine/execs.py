"""Run-to-completion exec: a command in a running container, its rc, stdout and stderr.

The runtime's exec (``gantry.runtime.exec``) joins the container's namespaces and cgroups
and keeps its capabilities, no_new_privs and seccomp profile, but its caller must be
single-threaded and becomes the process's subreaper. The agent is neither, so each exec
runs ``gantry-runtime exec`` (the same code) as a child process, as containerd's shim
runs ``runc exec``. Its ``--pid-file`` tells a process that ran and failed apart from
an exec that could not start.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gantry.engine.errors import Invalid

__all__ = ["ExecRequest", "exec_available", "parse_request", "run_exec"]

DEFAULT_TIMEOUT: Final = 3600.0
MAX_OUTPUT: Final = 64 << 20
"""Bytes of stdout (and of stderr) kept; more is cut off (``truncated`` says so)."""


def exec_available() -> bool:
    try:
        import gantry.runtime.exec  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ExecRequest:
    command: tuple[str, ...]
    env: Mapping[str, str]
    user: str | None
    workdir: str | None
    stdin: bytes
    timeout: float
    encoding: str


def parse_request(raw: Mapping[str, Any]) -> ExecRequest:
    """Validate an exec request; :class:`Invalid` naming the field."""
    command = raw.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise Invalid("command: must be a non-empty list of strings", "command")
    if any("\x00" in word for word in command):
        raise Invalid("command: must not contain NUL characters", "command")
    env = raw.get("env") or {}
    for key in env:
        if not key or "=" in key or "\x00" in key:
            raise Invalid(f"env: invalid variable name {key!r}", f"env.{key}")
    workdir = raw.get("workdir")
    if workdir is not None and not str(workdir).startswith("/"):
        raise Invalid(f"workdir: must be an absolute path, got {workdir!r}", "workdir")
    timeout = raw.get("timeout")
    encoding = str(raw.get("encoding") or "utf-8")
    stdin_text = str(raw.get("stdin") or "")
    try:
        stdin = (
            base64.b64decode(stdin_text, validate=True)
            if encoding == "base64"
            else stdin_text.encode()
        )
    except ValueError:
        raise Invalid("stdin: not valid base64 (encoding is base64)", "stdin") from None
    return ExecRequest(
        command=tuple(command),
        env=dict(env),
        user=raw.get("user"),
        workdir=workdir,
        stdin=stdin,
        timeout=DEFAULT_TIMEOUT if timeout is None else float(timeout),
        encoding=encoding,
    )


def _encode(data: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(data).decode()
    return data.decode("utf-8", "replace")


def run_exec(
    runtime_root: Path, container_id: str, request: ExecRequest, scratch: Path
) -> dict[str, Any]:
    """Run the request in the container; the answer of ``POST …/exec``."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="exec-") as directory:
        pid_file = Path(directory) / "pid"
        argv = [sys.executable, "-m", "gantry.cli.runtime", "--root", str(runtime_root), "exec"]
        argv += ["--pid-file", str(pid_file)]
        for key, value in request.env.items():
            argv += ["--env", f"{key}={value}"]
        if request.user:
            argv += ["--user", request.user]
        if request.workdir:
            argv += ["--cwd", request.workdir]
        argv += [container_id, *request.command]
        timed_out = False
        with subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        ) as child:
            try:
                stdout, stderr = child.communicate(request.stdin, timeout=request.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_process(pid_file)
                child.kill()
                stdout, stderr = child.communicate()
            rc = child.returncode
        started = pid_file.exists()
    if not started and not timed_out:
        message = stderr.decode("utf-8", "replace").strip().splitlines()
        text = message[-1] if message else f"exit status {rc}"
        field = "user" if "user" in text else "workdir" if "cwd" in text else "command"
        raise Invalid(f"{field}: cannot exec in the container: {text}", field)
    if timed_out:
        rc = 137
    elif rc < 0:
        rc = 128 - rc
    truncated = len(stdout) > MAX_OUTPUT or len(stderr) > MAX_OUTPUT
    return {
        "rc": rc,
        "stdout": _encode(stdout[:MAX_OUTPUT], request.encoding),
        "stderr": _encode(stderr[:MAX_OUTPUT], request.encoding),
        "timed_out": timed_out,
        "truncated": truncated,
        "encoding": request.encoding,
    }


def _kill_process(pid_file: Path) -> None:
    """Kill the exec'd process itself: killing ``gantry-runtime`` alone would leave it
    running in the container."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
