"""Exit watching: one thread polls the pidfds of every running container's init and hands
each exit to the engine. The containers are not the agent's children (the shim is their
parent), so this is the only way to hear of an exit without polling ``/proc``."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gantry.linux import proc
from gantry.runtime import state as st

__all__ = ["ExitMonitor"]

_log = logging.getLogger(__name__)


class ExitMonitor:
    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._fds: dict[int, str] = {}
        self._watched: dict[str, int] = {}
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll.register(self._wake_r, select.POLLIN)
        self._stop = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gantry-exit")
        self._thread = threading.Thread(target=self._run, name="gantry-monitor", daemon=True)
        self._thread.start()

    def watch(self, container_id: str, pid: int, start_time: int) -> None:
        """Report the exit of ``pid`` (if it is still the process started at
        ``start_time``) as ``on_exit(container_id)``; at once when it is gone already."""
        try:
            pidfd = proc.pidfd_open(pid)
        except ProcessLookupError:
            self._pool.submit(self._guarded, container_id)
            return
        alive, same = st.process_matches(pid, start_time)
        if not (alive and same):
            os.close(pidfd)
            self._pool.submit(self._guarded, container_id)
            return
        with self._lock:
            old = self._watched.pop(container_id, None)
            if old is not None:
                self._forget(old)
            self._fds[pidfd] = container_id
            self._watched[container_id] = pidfd
            self._poll.register(pidfd, select.POLLIN)
        self._wake()

    def _forget(self, fd: int) -> None:
        self._fds.pop(fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(fd)
        os.close(fd)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stop:
            try:
                ready = self._poll.poll()
            except InterruptedError:
                continue
            for fd, _mask in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    container_id = self._fds.get(fd)
                    if container_id is None:
                        continue
                    self._watched.pop(container_id, None)
                    self._forget(fd)
                self._pool.submit(self._guarded, container_id)

    def _guarded(self, container_id: str) -> None:
        try:
            self._on_exit(container_id)
        except Exception:  # a failure must not kill the pool; the next start-up reconciles
            _log.exception("container %s: handling its exit failed", container_id)

    def close(self) -> None:
        self._stop = True
        self._wake()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for fd in list(self._fds):
                self._forget(fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
