"""The exec.fifo start gate of create_init, under a forked supervisor: the created init
blocks opening the FIFO for writing, any opener for reading starts it, and an init that
dies before start is an error rather than a wait forever."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import container_support as cs
import linux_support as support
import pytest
import rootfs_support as rs
from gantry.runtime.defaults import default_spec
from gantry.runtime.process import ContainerInitError, create_init, open_start_fifo

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


def _with_fifo_init(script: str, body: Any) -> Any:
    """Create ``sh -c script`` with an exec.fifo gate in a forked supervisor and return
    what ``body(handle, fifo, output)`` returns there."""
    with rs.bundle_dir() as (bundle, _rootfs):
        fifo = bundle / "exec.fifo"
        os.mkfifo(fifo, 0o622)
        spec = default_spec(["/bin/sh", "-c", script], "rootfs")

        def supervise() -> Any:
            out_r, out_w = os.pipe()
            null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                handle = create_init(
                    spec, bundle=bundle, stdio=(null, out_w, out_w), start_fifo=fifo
                )
                os.close(out_w)
                with handle:
                    return body(handle, fifo, cs.Output(out_r))
            finally:
                os.close(out_r)
                os.close(null)

        return support.run_in_child(supervise, timeout=60)


def test_the_created_init_waits_on_the_fifo_and_start_opens_it() -> None:
    def body(handle: Any, fifo: Path, output: cs.Output) -> dict[str, Any]:
        before = {
            "fds": [os.readlink(fd) for fd in Path(f"/proc/{handle.pid}/fd").iterdir()],
            "cmdline": Path(f"/proc/{handle.pid}/cmdline").read_bytes().split(b"\0")[0].decode(),
            "output": output.wait_for("started", timeout=0.3),
        }
        handle.start()
        output.read_to_eof()
        return {**before, "after": output.text, "status": handle.wait(cs.TIMEOUT)}

    result = _with_fifo_init("echo started; exit 4", body)
    assert any(link.endswith("/exec.fifo") for link in result["fds"])  # the gate it waits on
    assert result["cmdline"] != "/bin/sh"  # not exec'd
    assert result["output"] is False
    assert (result["after"], result["status"]) == ("started\n", 4)


def test_starting_from_another_process_only_needs_the_fifo() -> None:
    def body(handle: Any, fifo: Path, output: cs.Output) -> Any:
        def other_process() -> str:
            pidfd = os.pidfd_open(handle.pid)
            try:
                open_start_fifo(fifo, pidfd, timeout=cs.TIMEOUT)
            finally:
                os.close(pidfd)
            return "started"

        said = support.run_in_child(other_process, timeout=30)
        output.read_to_eof()
        return [said, output.text, handle.wait(cs.TIMEOUT)]

    assert _with_fifo_init("echo hi", body) == ["started", "hi\n", 0]


def test_an_init_that_died_before_start_is_an_error() -> None:
    def body(handle: Any, fifo: Path, output: cs.Output) -> Any:
        handle.kill(signal.SIGKILL)
        handle.wait(cs.TIMEOUT)
        try:
            open_start_fifo(fifo, handle.pidfd, timeout=5)
        except ContainerInitError as exc:
            return [exc.step, exc.message]
        return None

    assert _with_fifo_init("echo never", body) == [
        "start",
        "the container's init exited before start",
    ]
