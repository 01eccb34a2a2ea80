"""gantry.linux.clone against the real kernel: a child forked straight into a cgroup v2."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import linux_support as support
import pytest
import rootfs_support as rs
from gantry.linux.clone import fork_into_cgroup
from gantry.runtime import process
from gantry.runtime import supervisor as sv
from gantry.runtime.defaults import default_config
from gantry.runtime.spec import load_spec

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def _v2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _sep, after = line.partition(" - ")
        if after.startswith("cgroup2 "):
            return Path(before.split()[4])
    return None


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def cgroup() -> Iterator[Path]:
    mount = _v2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount")
    path = mount / f"gantry-clone-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def test_the_child_starts_in_the_cgroup_and_forks_as_usual(cgroup: Path) -> None:
    read_end, write_end = os.pipe()
    directory = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = fork_into_cgroup(directory)
        if pid == 0:
            try:
                os.close(read_end)
                own = Path("/proc/self/cgroup").read_text().splitlines()
                grandchild = os.fork()  # glibc's fork works in the child
                if grandchild == 0:
                    os._exit(5)
                status = os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1])
                os.write(write_end, f"{status} {os.getpid()}\n".encode() + "\n".join(own).encode())
            finally:
                os._exit(0)
    finally:
        os.close(directory)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    head, *lines = data.decode().splitlines()
    status, child_pid = head.split()
    assert (int(status), int(child_pid)) == (5, pid)  # getpid() is right in the child
    assert f"0::/{cgroup.name}" in lines


def test_a_bad_fd_forks_nothing(tmp_path: Path) -> None:
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    with pytest.raises(OSError) as failed:
        fork_into_cgroup(closed)
    assert failed.value.errno == errno.EBADF
    # A directory that is not a cgroup: refused too (host_unchanged: no child was made).
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            fork_into_cgroup(directory)
    finally:
        os.close(directory)


def test_without_clone3_the_container_still_joins_its_v2_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kernel older than 5.7 has no CLONE_INTO_CGROUP (this one has: the refusal is faked,
    # the rest is real): the first child is forked and its pid written to cgroup.procs.
    if _v2_mount() is None or not rs.BUSYBOX.exists():
        pytest.skip("needs a cgroup2 mount and a static busybox")

    def no_clone3(_fd: int) -> int:
        raise OSError(errno.ENOSYS, "clone3: Function not implemented")

    monkeypatch.setattr(process, "fork_into_cgroup", no_clone3)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rootfs = rs.make_bundle(bundle)
    (rootfs / "bin" / "sleep").symlink_to("busybox")
    (bundle / "config.json").write_text(json.dumps(default_config(["/bin/sleep", "60"], "rootfs")))
    root = tmp_path / "root"
    cid = f"noclone3-{uuid.uuid4().hex[:12]}"
    recorded = sv.create(root, cid, bundle=bundle, spec=load_spec(bundle / "config.json"))
    try:
        lines = Path(f"/proc/{recorded.pid}/cgroup").read_text().splitlines()
        v2 = next(line for line in lines if line.startswith("0::"))
        assert v2.endswith(f"/{cid}")
    finally:
        sv.delete(sv.find(root, cid), force=True)
        with contextlib.suppress(ChildProcessError):  # the shim, if it came to us
            os.waitpid(recorded.shim_pid, 0)
