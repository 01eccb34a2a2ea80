"""gantry.runtime.seccomp against the real kernel: compiled filters loaded in forked children.

Every filter goes on a forked child that first sets no_new_privs; the pytest process is
never filtered. Calls that would change the host if the filter let them through are made
so that they fail harmlessly anyway (reboot with a wrong magic number, mount onto a path
that does not exist).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import resource
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
from gantry.linux import prctl
from gantry.linux._libc import LIBC
from gantry.linux.proc import read_status
from gantry.linux.seccomp import load_filter
from gantry.runtime.defaults import DEFAULT_CAPABILITIES
from gantry.runtime.seccomp import MACHINES, compile_seccomp, install, syscall_table
from gantry.runtime.seccomp_default import default_seccomp
from gantry.runtime.spec import Seccomp, load_spec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(platform.machine() not in MACHINES, reason="no syscall table"),
]

NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(platform.machine(), "")
BUSYBOX = Path("/bin/busybox")
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def raw(name: str, *args: object) -> int:
    """Make system call `name` directly; its result, or -errno."""
    number = syscall_table(NATIVE)[name]
    return raw_number(number, *args)


def raw_number(number: int, *args: object) -> int:
    converted = [ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    result = int(LIBC.syscall(ctypes.c_long(number), *converted))
    return -ctypes.get_errno() if result == -1 else result


def section(**fields: Any) -> Seccomp:
    spec = load_spec({"ociVersion": "1.2.1", "root": {"path": "/"}, "linux": {"seccomp": fields}})
    assert spec.linux is not None and spec.linux.seccomp is not None
    return spec.linux.seccomp


def confined(seccomp: Seccomp, check: Callable[[], Any]) -> Any:
    """Run `check` in a forked child under no_new_privs and `seccomp`; return its result."""

    def child() -> Any:
        prctl.set_no_new_privs()
        install(seccomp)
        return check()

    return support.run_in_child(child)


def exit_status(body: Callable[[], None], timeout: float = 30.0) -> int:
    """Fork, run `body` in the child (exit 0 after it, 3 on an exception); the wait status."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} did not finish within {timeout}s")


def no_core_dumps() -> None:
    # core_pattern may write "core" into the working directory: a killed child leaves none.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl.set_dumpable(False)


def test_default_profile_denies_privileged_calls_and_allows_the_rest() -> None:
    profile = default_seccomp(DEFAULT_CAPABILITIES)

    def check() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["mount"] = raw("mount", b"none", b"/nonexistent-gantry-target", b"tmpfs", 0, None)
        out["unshare_user"] = raw("unshare", CLONE_NEWUSER)
        out["keyctl"] = raw("keyctl", 0, -3 & 0xFFFFFFFF, 0)  # KEYCTL_GET_KEYRING_ID
        out["reboot"] = raw("reboot", 0, 0, 0, None)  # wrong magic: EINVAL if it got through
        out["setns"] = raw("setns", 0, 0)
        out["clone_newuts"] = raw("clone", CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0)
        if out["clone_newuts"] == 0:  # the filter failed and we are the new child
            os._exit(0)
        out["getpid"] = raw("getpid") == os.getpid()
        out["uname"] = os.uname().sysname
        read_fd, write_fd = os.pipe()
        out["write"] = os.write(write_fd, b"seccomp")
        out["read"] = os.read(read_fd, 16).decode()
        pid = os.fork()  # clone without namespace flags is allowed
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        # Newer than the build's table: ENOSYS from the filter (or the kernel).
        out["cachestat"] = raw_number(451, 0, 0, 0, 0)
        out["seccomp_mode"] = read_status().seccomp
        return out

    got = confined(profile, check)
    assert got == {
        "mount": -errno.EPERM,
        "unshare_user": -errno.EPERM,
        "keyctl": -errno.EPERM,
        "reboot": -errno.EPERM,
        "setns": -errno.EPERM,
        "clone_newuts": -errno.EPERM,
        "getpid": True,
        "uname": "Linux",
        "write": 7,
        "read": "seccomp",
        "fork": 7,
        "cachestat": -errno.ENOSYS,
        "seccomp_mode": 2,
    }


def test_an_errno_rule_returns_its_errno() -> None:
    profile = section(
        defaultAction="SCMP_ACT_ALLOW",
        syscalls=[{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}],
    )

    def check() -> list[int | None]:
        try:
            os.uname()
        except OSError as exc:
            return [exc.errno, raw("getppid") > 0]
        return [None, True]

    assert confined(profile, check) == [errno.EXDEV, True]


def test_an_argument_rule_is_exact() -> None:
    query = 0xFFFFFFFF  # personality(0xffffffff) only reads the current persona
    profile = section(
        defaultAction="SCMP_ACT_ALLOW",
        syscalls=[
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": query, "op": "SCMP_CMP_NE"}],
            }
        ],
    )

    def check() -> dict[str, int]:
        return {
            "query": raw("personality", query),
            "addr_no_randomize": raw("personality", 0x0040000),
            "linux": raw("personality", 0),
            # The kernel reads an unsigned int and would take this as a query too; the
            # filter sees all 64 bits, so the high word makes it another value.
            "query_high_word": raw("personality", (1 << 32) | query),
        }

    got = confined(profile, check)
    assert got["query"] >= 0
    assert got == {
        "query": got["query"],
        "addr_no_randomize": -errno.EPERM,
        "linux": -errno.EPERM,
        "query_high_word": -errno.EPERM,
    }


def test_flags_are_passed_to_the_kernel() -> None:
    profile = section(
        defaultAction="SCMP_ACT_ALLOW",
        flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"],
        syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EIO}],
    )
    assert confined(profile, lambda: raw("getppid")) == -errno.EIO


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 is an x86_64 ABI")
def test_x32_calls_kill_the_process_unless_x32_is_listed() -> None:
    x32_getpid = syscall_table("SCMP_ARCH_X32")["getpid"]

    def x32_call(seccomp: Seccomp) -> Callable[[], None]:
        def body() -> None:
            no_core_dumps()
            prctl.set_no_new_privs()
            install(seccomp)
            raw_number(x32_getpid)

        return body

    refused = exit_status(x32_call(section(defaultAction="SCMP_ACT_ALLOW")))
    assert os.WIFSIGNALED(refused) and os.WTERMSIG(refused) == signal.SIGSYS
    listed = section(
        defaultAction="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
    )
    status = exit_status(x32_call(listed))  # the kernel answers (ENOSYS without x32 support)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _int80(number: int) -> int:
    """Make i386 system call `number` (no arguments) through int 0x80; its raw result."""
    code = bytes([0xB8, *number.to_bytes(4, "little"), 0xCD, 0x80, 0xC3])  # mov eax; int; ret
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        page.write(code)
        buffer = ctypes.c_char.from_buffer(page)
        try:
            return int(ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(buffer))())
        finally:
            del buffer
    finally:
        page.close()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="IA-32 is an x86_64 compat ABI")
def test_i386_calls_are_filtered_with_i386_numbers() -> None:
    i386 = syscall_table("SCMP_ARCH_X86")
    if support.run_in_child(lambda: _int80(i386["getpid"]) == os.getpid()) is not True:
        pytest.skip("the kernel runs no IA-32 system calls")
    default = default_seccomp(DEFAULT_CAPABILITIES)

    def check() -> list[int]:
        return [_int80(i386["getpid"]) == os.getpid(), _int80(i386["mount"])]

    # mount(NULL...) would be EFAULT had it reached the kernel.
    assert confined(default, check) == [True, -errno.EPERM]

    # Without SCMP_ARCH_X86 listed, an IA-32 call kills the process.
    native_only = section(defaultAction="SCMP_ACT_ALLOW", architectures=[NATIVE])

    def body() -> None:
        no_core_dumps()
        prctl.set_no_new_privs()
        install(native_only)
        _int80(i386["getpid"])

    status = exit_status(body)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def _exec_confined(argv: list[str]) -> tuple[int, str]:
    """Exec `argv` in a child under no_new_privs and the default profile: (status, stdout)."""
    read_fd, write_fd = os.pipe()
    profile = default_seccomp(DEFAULT_CAPABILITIES)
    program, _warnings = compile_seccomp(profile)  # compile before forking: the child only loads

    def body() -> None:
        os.close(read_fd)
        os.dup2(write_fd, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        prctl.set_no_new_privs()
        load_filter(program)
        os.execv(argv[0], argv)

    try:
        status = exit_status(body)
        os.close(write_fd)
        write_fd = -1
        with os.fdopen(read_fd, "rb") as pipe:
            read_fd = -1
            output = pipe.read().decode()
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return status, output


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static")
def test_busybox_true_runs_under_the_default_profile() -> None:
    status, _output = _exec_confined([str(BUSYBOX), "true"])
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static")
def test_a_busybox_shell_works_and_cannot_unshare() -> None:
    script = (
        "echo hello | busybox cat; "
        "busybox ls / >/dev/null && echo listed; "
        "busybox sleep 0 && busybox id -u; "
        "busybox unshare -U busybox true || echo unshare-denied"
    )
    status, output = _exec_confined([str(BUSYBOX), "sh", "-c", script])
    assert os.waitstatus_to_exitcode(status) == 0
    assert output.split() == ["hello", "listed", "0", "unshare-denied"]
