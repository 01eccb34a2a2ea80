"""The launcher: a warm, single-threaded process the agent forks containers from.

Starting a container must not pay for a Python interpreter start-up (ARCHITECTURE.md,
"Fast paths stay warm"). :meth:`Launcher.start` spawns ``python -m
gantry.runtime.launcher`` once; it imports everything a create touches, compiles the
default seccomp profile into :mod:`gantry.runtime.seccomp`'s cache, freezes its heap
for the garbage collector (so forks do not copy it back) and then serves create requests
over a ``SOCK_SEQPACKET`` socket pair, one at a time. Each request is one JSON message,
with the container's stdin, stdout and stderr attached as ``SCM_RIGHTS``; the launcher
creates the container with :func:`gantry.runtime.supervisor.create` — the same state
directory, supervisor, cgroup, ``exec.fifo`` gate and shim as ``gantry-runtime create``
— and answers with the outcome.

The launcher is a child subreaper: the supervisors it forks (once, not twice as
``gantry-runtime create`` does: a double-forked one would be re-parented to it all the
same), and so the shims they become, are its children, and it reaps them. Containers do
not depend on it: when the launcher (or the agent) dies, each shim goes on and is
re-parented to the next subreaper up, or to init. The launcher exits when its socket
closes, so it never outlives the agent.

Wire format (``docs/runtime.md``): a request ``{"op": "create", "root", "id", "bundle",
"config"?, "log"?, "timeout"?}`` plus three fds; a reply ``{"ok": true}`` or ``{"ok":
false, "error": KIND, "message", …}`` where KIND is ``state``, ``init``, ``spec``,
``runtime`` or ``internal``. ``{"op": "ping"}`` answers ``{"ok": true, "pid", "cached"}``.
"""

from __future__ import annotations

import array
import contextlib
import errno
import gc
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gantry.runtime import state as st
from gantry.runtime import supervisor as sv
from gantry.runtime.process import ContainerInitError
from gantry.runtime.shim import LogOptions
from gantry.runtime.spec import SpecError

if TYPE_CHECKING:
    from gantry.runtime.cgroups.layout import Layout

__all__ = ["Launcher", "LauncherError", "serve"]

_log = logging.getLogger(__name__)

MAX_MESSAGE: Final = 4 * 1024 * 1024
"""The largest request or reply (an inline config.json with a seccomp profile fits)."""
START_TIMEOUT: Final = 30.0
REPLY_MARGIN: Final = 10.0
"""How much longer than the create's own timeout the client waits for the reply."""
_REAP_INTERVAL: Final = 1.0
_SO_SNDBUFFORCE: Final = 32  # asm-generic/socket.h; not in Python's socket module


class LauncherError(RuntimeError):
    """The launcher cannot be reached, or answered nonsense; the create did not happen
    (or its outcome is unknown: the container may then exist under its id)."""


# --- the client (in the agent) --------------------------------------------------------------


class Launcher:
    """The agent's handle on its launcher process. Thread-safe: requests are serialised."""

    def __init__(self, sock: socket.socket, process: subprocess.Popen[bytes], pid: int) -> None:
        self._sock = sock
        self._process = process
        self.pid = pid
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        *,
        timeout: float = START_TIMEOUT,
        python: str | None = None,
        stderr: int | None = None,
    ) -> Launcher:
        """Spawn the launcher and wait until it is warm. ``LauncherError`` if it does not
        come up within ``timeout``. Its warnings (one line each, ``gantry-launcher: …``)
        go to ``stderr`` (default: this process's)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):
            # A SOCK_SEQPACKET message must fit the send buffer whole; past the host's
            # wmem_max only SO_SNDBUFFORCE (CAP_NET_ADMIN) makes it that large.
            try:
                end.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, MAX_MESSAGE)
            except OSError:
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        try:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "gantry.runtime.launcher", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stderr=stderr,
                close_fds=True,
                # A ^C or hang-up aimed at the agent's terminal is not for the launcher: it
                # ends when the agent closes its socket, or dies.
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise LauncherError(f"cannot start the launcher: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        launcher = cls(ours, process, process.pid)
        try:
            reply = launcher._receive(timeout)
            if not reply.get("ok") or reply.get("op") != "ready":
                raise LauncherError(f"the launcher did not come up: {reply!r}")
        except BaseException:
            launcher.close()
            raise
        return launcher

    def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """The launcher's pid and how many seccomp programs it holds compiled."""
        return self._call({"op": "ping"}, (), timeout)

    def create(
        self,
        root: Path,
        container_id: str,
        bundle: Path,
        *,
        config: Mapping[str, Any] | None = None,
        stdio: Sequence[int] | None = None,
        log: LogOptions | None = None,
        timeout: float = sv.CREATE_TIMEOUT,
    ) -> st.ContainerState:
        """Create a container as :func:`gantry.runtime.supervisor.create` does, in the
        launcher; return what was recorded. ``config`` is the runtime spec as JSON data
        (default: ``bundle/config.json``, read by the launcher). ``stdio`` defaults to
        /dev/null for all three; with ``log``, stdout and stderr go to the log file.

        Raises what ``supervisor.create`` raises (``StateError``, ``ContainerInitError``,
        ``SpecError``, ``RuntimeError_``), or :class:`LauncherError`.
        """
        st.validate_id(container_id)
        request: dict[str, Any] = {
            "op": "create",
            "root": os.fspath(Path(root).absolute()),
            "id": container_id,
            "bundle": os.fspath(Path(bundle).absolute()),
            "timeout": timeout,
        }
        if config is not None:
            request["config"] = dict(config)
        if log is not None:
            request["log"] = {
                "path": os.fspath(log.path),
                "max_size": log.max_size,
                "max_files": log.max_files,
            }
        opened: list[int] = []
        try:
            if stdio is None:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                opened.append(null)
                stdio = (null, null, null)
            if len(stdio) != 3:
                raise ValueError(f"stdio is three fds (stdin, stdout, stderr), not {len(stdio)}")
            self._call(request, stdio, timeout + REPLY_MARGIN)
        finally:
            for fd in opened:
                os.close(fd)
        recorded = st.read_state(st.container_dir(Path(root), container_id))
        if recorded is None:
            raise LauncherError(f"container {container_id!r}: created, but no state recorded")
        return recorded

    def run(
        self,
        root: Path,
        container_id: str,
        bundle: Path,
        *,
        config: Mapping[str, Any] | None = None,
        stdio: Sequence[int] | None = None,
        log: LogOptions | None = None,
        timeout: float | None = None,
    ) -> int:
        """Create, start, wait for and delete a container; its exit status (128 + the
        signal when killed). With ``timeout``, a container still running then is killed."""
        root = Path(root)
        recorded = self.create(root, container_id, bundle, config=config, stdio=stdio, log=log)
        directory = st.container_dir(root, container_id)
        record = None
        try:
            # Just created by us: no need to ask the kernel for its status first.
            sv.start(sv.Container(directory, recorded, "created"))
            record = sv.wait_exit(sv.Container(directory, recorded, "running"), timeout)
        finally:
            if record is not None:  # it exited: nothing left to kill
                sv.delete(sv.Container(directory, recorded, "stopped"))
            else:
                sv.delete(sv.find(root, container_id), force=True)
        if record is None:
            raise sv.RuntimeError_(f"container {container_id!r}: no exit status recorded")
        return record.exit_code

    def close(self, timeout: float = 10.0) -> None:
        """Stop the launcher (its containers go on) and reap it."""
        with self._lock:
            if self._sock.fileno() >= 0:
                self._sock.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the wire

    def _call(self, request: dict[str, Any], fds: Sequence[int], timeout: float) -> dict[str, Any]:
        data = json.dumps(request).encode()
        if len(data) > MAX_MESSAGE:
            raise LauncherError(f"request of {len(data)} bytes, more than {MAX_MESSAGE}")
        with self._lock:
            if self._sock.fileno() < 0:
                raise LauncherError("the launcher is closed")
            try:
                ancillary = []
                if fds:
                    rights = array.array("i", fds).tobytes()
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                self._sock.sendmsg([data], ancillary)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise LauncherError(
                        f"request of {len(data)} bytes: larger than the socket takes "
                        "(pass the config in the bundle instead)"
                    ) from None
                raise LauncherError(f"the launcher is gone: {exc.strerror or exc}") from None
            reply = self._receive(timeout)
        if reply.get("ok"):
            return reply
        raise _error_from(reply)

    def _receive(self, timeout: float) -> dict[str, Any]:
        ready, _w, _x = select.select([self._sock], [], [], timeout)
        if not ready:
            # A late answer would be taken for the next request's: this connection is
            # done (the launcher exits when it finds it closed); start a new launcher.
            self._sock.close()
            raise LauncherError(f"no answer from the launcher in {timeout:g}s; it is closed now")
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except OSError as exc:
            raise LauncherError(f"the launcher is gone: {exc.strerror or exc}") from None
        if not data:
            raise LauncherError("the launcher is gone (its socket closed)")
        try:
            reply = json.loads(data)
        except ValueError:
            raise LauncherError(f"garbled answer from the launcher: {data[:200]!r}") from None
        if not isinstance(reply, dict):
            raise LauncherError(f"garbled answer from the launcher: {data[:200]!r}")
        return reply


def _error_from(reply: Mapping[str, Any]) -> Exception:
    kind = reply.get("error")
    message = str(reply.get("message", "the launcher failed"))
    if kind == "state":
        return st.StateError(message)
    if kind == "init":
        err = reply.get("errno")
        return ContainerInitError(
            str(reply.get("step")), message, err if isinstance(err, int) else None
        )
    if kind == "spec":
        errors = reply.get("errors")
        if isinstance(errors, list):
            return SpecError((str(path), str(text)) for path, text in errors)
        return SpecError([("", message)])
    if kind == "value":
        return ValueError(message)
    if kind == "runtime":
        return sv.RuntimeError_(message)
    return LauncherError(message)


# --- the launcher process -------------------------------------------------------------------


def _warm_up() -> Layout | None:
    """Import and compile ahead what every create needs; the host's cgroup layout."""
    # Imported here, not at the top: the client side (the agent) needs none of them.
    from gantry.linux import prctl
    from gantry.runtime import init, process, rootfs  # noqa: F401  (the forks run them)
    from gantry.runtime.cgroups import CgroupError, v1, v2  # noqa: F401  (open_cgroup imports them late)
    from gantry.runtime.cgroups.layout import detect
    from gantry.runtime.defaults import DEFAULT_CAPABILITIES
    from gantry.runtime.seccomp import compile_seccomp
    from gantry.runtime.seccomp_default import default_seccomp

    prctl.set_child_subreaper(True)
    compile_seccomp(default_seccomp(DEFAULT_CAPABILITIES))
    # platform.machine() and the host's capability facts are cached by the first create.
    process.HostFacts.probe()
    # The host's cgroup mounts, read once: every supervisor would read the mount table
    # and /proc/self/cgroup (which waits on the kernel's cgroup mutex) again.
    layout = None
    with contextlib.suppress(CgroupError, OSError):
        layout = detect()
    # No automatic collections: one in the middle of a create (in the launcher or in a
    # fork of it) would walk, and so copy, pages the forks share. The launcher collects
    # between requests instead, and freezes what survives.
    gc.disable()
    gc.collect()
    gc.freeze()  # the warm heap stays shared with every fork (no GC writes into it)
    return layout


class _SpecLoader:
    """``load_spec`` with the ``linux.seccomp`` section decoded once per distinct section.

    The default profile is most of a config.json (some 300 rules) and most of its
    decoding time, and it is the same for every container with the same capabilities: a
    section seen before (the same JSON text) is taken from here, validated then, and the
    rest of the spec is decoded as usual. Bounded; the oldest entry goes first.
    """

    LIMIT: Final = 32

    def __init__(self) -> None:
        self._sections: dict[str, Any] = {}

    def load(self, source: Mapping[str, Any] | Path, log: logging.LoggerAdapter[Any]) -> Any:
        import dataclasses

        from gantry.runtime.spec import load_spec

        data = source if isinstance(source, Mapping) else json.loads(source.read_bytes())
        linux = data.get("linux") if isinstance(data, Mapping) else None
        section = linux.get("seccomp") if isinstance(linux, Mapping) else None
        if not isinstance(section, Mapping) or not isinstance(linux, Mapping):
            return load_spec(data, log=log)
        key = json.dumps(section)
        cached = self._sections.get(key)
        if cached is None:
            spec = load_spec(data, log=log)
            if spec.linux is not None and spec.linux.seccomp is not None:
                if len(self._sections) >= self.LIMIT:
                    del self._sections[next(iter(self._sections))]
                self._sections[key] = spec.linux.seccomp
            return spec
        rest = {**data, "linux": {k: v for k, v in linux.items() if k != "seccomp"}}
        spec = load_spec(rest, log=log)
        assert spec.linux is not None
        return dataclasses.replace(spec, linux=dataclasses.replace(spec.linux, seccomp=cached))


def _reap_children() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _receive_request(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    fds = array.array("i")
    data, ancillary, _flags, _addr = sock.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(16 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % fds.itemsize
            fds.frombytes(payload[:usable])
    if not data and not ancillary:
        return None
    return data, list(fds)


def _handle(
    request: Mapping[str, Any],
    fds: Sequence[int],
    specs: _SpecLoader,
    layout: Layout | None,
) -> dict[str, Any]:
    from gantry.runtime.cgroups import CgroupError
    from gantry.runtime.shim import ShimMissingError

    op = request.get("op")
    if op == "ping":
        from gantry.runtime.seccomp import cached_programs

        return {"ok": True, "pid": os.getpid(), "cached": cached_programs()}
    if op != "create":
        return {"ok": False, "error": "value", "message": f"op: unknown operation {op!r}"}
    try:
        if len(fds) != 3:
            raise ValueError(f"stdio: three fds are needed, {len(fds)} came")
        container_id = str(request["id"])
        root = Path(str(request["root"]))
        bundle = Path(str(request["bundle"]))
        log_data = request.get("log")
        log_options = None
        if log_data is not None:
            log_options = LogOptions(
                Path(str(log_data["path"])),
                max_size=log_data.get("max_size", 0),
                max_files=log_data.get("max_files", 1),
            )
        source = request.get("config")
        logger = logging.LoggerAdapter(_log, {"container": container_id})
        try:
            spec = specs.load(
                source if isinstance(source, Mapping) else bundle / "config.json", logger
            )
        except FileNotFoundError:
            raise sv.RuntimeError_(f"bundle {bundle}: no config.json") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpecError([("", f"{bundle / 'config.json'} is not valid JSON: {exc}")]) from None
        timeout = float(request.get("timeout", sv.CREATE_TIMEOUT))
        sv.create(
            root,
            container_id,
            bundle=bundle,
            spec=spec,
            stdio=fds,
            timeout=timeout,
            log=log_options,
            cgroup_layout=layout,
            detach=False,  # a subreaper: the double fork would bring it back here anyway
        )
    except st.StateError as exc:
        return {"ok": False, "error": "state", "message": str(exc)}
    except ContainerInitError as exc:
        return {
            "ok": False,
            "error": "init",
            "step": exc.step,
            "message": exc.message,
            "errno": exc.errno,
        }
    except SpecError as exc:
        return {"ok": False, "error": "spec", "message": str(exc), "errors": exc.errors}
    except FileNotFoundError as exc:
        return {"ok": False, "error": "runtime", "message": f"{exc.filename}: no such file"}
    except (sv.RuntimeError_, CgroupError, ShimMissingError) as exc:
        return {"ok": False, "error": "runtime", "message": str(exc)}
    except OSError as exc:
        text = exc.strerror or str(exc)
        return {"ok": False, "error": "runtime", "message": f"{text}: {exc.filename or ''}"}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": "value", "message": f"bad request: {exc}"}
    return {"ok": True}


def serve(fd: int) -> int:
    """The launcher's main loop on the socket ``fd``; returns when the socket closes."""
    from gantry.runtime.seccomp import cached_programs

    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    layout = _warm_up()
    specs = _SpecLoader()
    hello = {"ok": True, "op": "ready", "pid": os.getpid(), "cached": cached_programs()}
    sock.send(json.dumps(hello).encode())
    while True:
        readable, _w, _x = select.select([sock], [], [], _REAP_INTERVAL)
        _reap_children()
        if not readable:
            continue
        try:
            received = _receive_request(sock)
        except OSError:
            return 0
        if received is None:
            return 0  # the agent closed its end
        data, fds = received
        started = time.monotonic()
        try:
            reply = _answer(data, fds, specs, layout)
        finally:
            for received_fd in fds:
                with contextlib.suppress(OSError):
                    os.close(received_fd)
        _log.debug("launcher: request answered in %.1f ms", (time.monotonic() - started) * 1000)
        try:
            sock.send(json.dumps(reply).encode())
        except OSError:
            return 0
        _reap_children()
        gc.collect()
        gc.freeze()


def _answer(
    data: bytes, fds: Sequence[int], specs: _SpecLoader, layout: Layout | None
) -> dict[str, Any]:
    try:
        request = json.loads(data)
    except ValueError as exc:
        return {"ok": False, "error": "value", "message": f"request: not JSON: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "value", "message": "request: not a JSON object"}
    try:
        return _handle(request, fds, specs, layout)
    except Exception as exc:  # a bug answers the request; the launcher goes on
        _log.exception("launcher: request failed")
        return {"ok": False, "error": "internal", "message": f"{type(exc).__name__}: {exc}"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m gantry.runtime.launcher FD", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="gantry-launcher: %(message)s")
    return serve(int(args[0]))


if __name__ == "__main__":
    sys.exit(main())
