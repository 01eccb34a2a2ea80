"""Terminals: the container's pseudo-terminal, the console socket, and the host-side proxy.

With ``process.terminal: true`` the container's init (or an exec'd process) allocates a pty
from the container's own devpts instance, after pivot_root (runc's ``setupConsole``):
the master goes back to whoever asked for it, the slave becomes the process's fds 0-2 and
controlling terminal (``setsid`` then ``TIOCSCTTY``), and for the init it is also bound
over ``/dev/console``. The master reaches the user in one of two ways:

- ``--console-socket PATH`` (the OCI command-line spec, runc's ``recvtty``): the runtime
  connects to that AF_UNIX stream socket and sends the master as one ``SCM_RIGHTS``
  message whose payload is ``{"type": "terminal", "container": ID}``;
- ``run`` (or ``exec``) in the foreground: the command receives the master itself and
  proxies it to its own terminal (:class:`TerminalProxy`), in raw mode, following size
  changes (SIGWINCH), as runc does.

Everything here works on plain fds; the runtime passes the master from the container to
the caller over the init's sync socket, so the console socket itself never enters the
container.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

__all__ = [
    "ConsoleError",
    "TerminalProxy",
    "WindowSize",
    "connect_console_socket",
    "find_host_terminal",
    "make_controlling_terminal",
    "open_pty",
    "receive_console",
    "send_console",
    "set_window_size",
    "window_size",
]

# asm-generic/ioctls.h (the same numbers on x86_64 and aarch64).
_TIOCSPTLCK: Final = 0x40045431  # _IOW('T', 0x31, int): lock/unlock the slave
_TIOCGPTN: Final = 0x80045430  # _IOR('T', 0x30, unsigned int): the slave's number
_TIOCGPTPEER: Final = 0x5441  # _IO('T', 0x41): open the slave through the master (4.13)
_WINSIZE: Final = struct.Struct("HHHH")

RECEIVE_TIMEOUT: Final = 60.0
_MAX_PAYLOAD: Final = 4096
_CHUNK: Final = 65536


class ConsoleError(Exception):
    """A terminal could not be set up or handed over; the message says what and why."""


@dataclass(frozen=True)
class WindowSize:
    rows: int
    columns: int


# --- inside the container ---------------------------------------------------------------------


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, int]:
    """A new pty from the devpts instance behind ``ptmx``: ``(master, slave)``, both
    close-on-exec and neither a controlling terminal yet.

    The slave is opened through the master (TIOCGPTPEER) rather than by its path: a path
    under /dev/pts is whatever the image or a racing process made of it (runc's fix of
    CVE-2025-52565 makes the same move).
    """
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                raise
            # Before Linux 4.13: by number, in the same devpts instance as the master.
            (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))
            pts = os.path.join(os.path.dirname(os.path.realpath(ptmx)), str(number))
            slave = os.open(pts, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def make_controlling_terminal(slave: int) -> None:
    """Make ``slave`` fds 0, 1 and 2 and the controlling terminal of this process, which
    must lead a session of its own (setsid) and have no terminal yet."""
    for target in (0, 1, 2):
        os.dup2(slave, target, inheritable=True)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def window_size(fd: int) -> WindowSize:
    rows, columns, _xpixel, _ypixel = _WINSIZE.unpack(
        fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * _WINSIZE.size)
    )
    return WindowSize(rows, columns)


def set_window_size(fd: int, size: WindowSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(size.rows, size.columns, 0, 0))


# --- the console socket -----------------------------------------------------------------------


def connect_console_socket(path: str) -> socket.socket:
    """Connect to the ``--console-socket`` at ``path``; :class:`ConsoleError` naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"--console-socket {path}: {exc.strerror or exc}") from None
    return sock


def send_console(sock: socket.socket, master: int, container_id: str) -> None:
    """Send the pty ``master`` over ``sock``: one message, the fd as SCM_RIGHTS, the payload
    ``{"type": "terminal", "container": ID}`` (runtime-tools' command-line-interface.md;
    runc's receivers ignore the payload and take the fd)."""
    payload = json.dumps({"type": "terminal", "container": container_id}).encode()
    fds = array.array("i", [master])
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])


def receive_console(sock: socket.socket, timeout: float = RECEIVE_TIMEOUT) -> int:
    """The pty master sent over ``sock`` (close-on-exec); :class:`ConsoleError` when none
    comes within ``timeout`` or the peer closes without one."""
    ready, _w, _x = select.select([sock], [], [], timeout)
    if not ready:
        raise ConsoleError(f"no terminal arrived on the console socket within {timeout:g}s")
    _payload, fds, _flags, _addr = socket.recv_fds(sock, _MAX_PAYLOAD, 4, socket.MSG_CMSG_CLOEXEC)
    if not fds:
        raise ConsoleError("the console socket closed without a terminal")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


# --- the host side: proxying a terminal -------------------------------------------------------


def find_host_terminal() -> tuple[int, bool]:
    """The terminal this command runs on: ``(fd, opened)``, the first of stderr, stdout and
    stdin that is one, else the controlling terminal (``/dev/tty``, ``opened`` True: the
    caller closes it). runc's ``initHostConsole`` looks in the same order, and fails the
    same way when there is none."""
    for fd in (2, 1, 0):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return fd, False
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC), True
    except OSError as exc:
        raise ConsoleError(
            "process.terminal is true but this command has no terminal to give it "
            f"(open /dev/tty: {exc.strerror}): run it on a terminal, detach with "
            "--console-socket, or set process.terminal to false"
        ) from None


class TerminalProxy:
    """Copy between this command's stdin/stdout and a container's pty ``master`` until the
    container's side is gone, with the host terminal ``host_tty`` in raw mode (so ^C, ^Z
    and line editing reach the container's terminal) and its size mirrored on the pty."""

    def __init__(self, master: int, host_tty: int, *, stdin: int = 0, stdout: int = 1) -> None:
        self.master = master
        self.host_tty = host_tty
        self.stdin = stdin
        self.stdout = stdout
        self._saved: list[Any] | None = None
        self._previous_winch: Any = None

    @contextlib.contextmanager
    def active(self) -> Iterator[TerminalProxy]:
        """Raw mode and size following for the duration of the block; restored after."""
        with contextlib.suppress(OSError):
            set_window_size(self.master, window_size(self.host_tty))
        with contextlib.suppress(termios.error):
            self._saved = termios.tcgetattr(self.host_tty)
            tty.setraw(self.host_tty, termios.TCSANOW)
        self._previous_winch = signal.signal(signal.SIGWINCH, self._resize)
        try:
            yield self
        finally:
            signal.signal(signal.SIGWINCH, self._previous_winch)
            if self._saved is not None:
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(self.host_tty, termios.TCSADRAIN, self._saved)

    def _resize(self, _signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            set_window_size(self.master, window_size(self.host_tty))

    def run(self, until_gone: int | None = None) -> None:
        """Copy until the master reports the other side closed (EIO once every holder of
        the slave has exited), or until the fd ``until_gone`` (a pidfd) is readable and
        the master has nothing left to say."""
        reading_stdin = True
        pending = b""
        while True:
            readers = [self.master]
            if reading_stdin and not pending:
                readers.append(self.stdin)
            if until_gone is not None:
                readers.append(until_gone)
            writers = [self.master] if pending else []
            try:
                ready, writable, _x = select.select(readers, writers, [])
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, _CHUNK)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    return
                _write_all(self.stdout, data)
            elif until_gone is not None and until_gone in ready:
                return  # gone, and nothing left to read
            if self.stdin in ready:
                data = os.read(self.stdin, _CHUNK)
                if data:
                    pending += data
                else:
                    reading_stdin = False  # runc too stops copying at EOF
            if pending and (self.master in writable or not writers):
                with contextlib.suppress(BlockingIOError):
                    pending = pending[os.write(self.master, pending) :]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            time.sleep(0.001)
