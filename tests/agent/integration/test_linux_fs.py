"""gantry.linux.fs against the real kernel: confined resolution, fd paths, device nodes."""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import linux_support as support
import pytest
from gantry.linux import fs, mount, ns

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Opener = Callable[[int, str, int], int]


def _openat2(root_fd: int, path: str, flags: int) -> int:
    return fs.open_in_root(root_fd, path, flags)


def _walk(root_fd: int, path: str, flags: int) -> int:
    return fs.walk_in_root(root_fd, path, flags)


RESOLVERS = [pytest.param(_openat2, id="openat2"), pytest.param(_walk, id="walk")]


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def root(tmp_root: Path) -> Iterator[int]:
    fd = fs.open_root(tmp_root)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    """A small rootfs with an ``etc/passwd`` of its own and links that try to escape."""
    with support.scratch_dir() as path:
        (path / "etc").mkdir()
        (path / "etc" / "passwd").write_text("inside\n")
        (path / "dir").mkdir()
        (path / "abs").symlink_to("/etc/passwd")
        (path / "etcdir").symlink_to("/etc")
        (path / "rel").symlink_to("../../../../../etc/passwd")
        (path / "dir" / "up").symlink_to("../../..")
        (path / "loop").symlink_to("loop")
        yield path


def _read(fd: int) -> str:
    try:
        return os.read(fd, 100).decode()
    finally:
        os.close(fd)


@pytest.mark.parametrize("opener", RESOLVERS)
@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "/etc/passwd", "abs", "rel", "etcdir/passwd", "dir/up/etc/passwd"],
)
def test_escapes_resolve_inside_the_root(root: int, opener: Opener, path: str) -> None:
    assert _read(opener(root, path, os.O_RDONLY)) == "inside\n"


@pytest.mark.parametrize("opener", RESOLVERS)
def test_symlink_loop_is_eloop(root: int, opener: Opener) -> None:
    with pytest.raises(OSError) as caught:
        opener(root, "loop", os.O_RDONLY)
    assert caught.value.errno == errno.ELOOP


@pytest.mark.parametrize("opener", RESOLVERS)
def test_missing_file_inside_the_root_is_enoent_even_if_the_host_has_it(
    root: int, opener: Opener
) -> None:
    assert os.path.exists("/etc/hostname") or os.path.exists("/etc/os-release")
    for path in ("../etc/hostname", "etcdir/os-release"):
        with pytest.raises(FileNotFoundError):
            opener(root, path, os.O_RDONLY)


@pytest.mark.parametrize("opener", RESOLVERS)
def test_o_nofollow_o_path_returns_the_link_itself(root: int, opener: Opener) -> None:
    fd = opener(root, "abs", os.O_PATH | os.O_NOFOLLOW)
    try:
        assert stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as caught:
        opener(root, "abs", os.O_RDONLY | os.O_NOFOLLOW)
    assert caught.value.errno == errno.ELOOP


@pytest.mark.parametrize("opener", RESOLVERS)
def test_o_creat_through_a_dangling_absolute_link_creates_inside(
    tmp_root: Path, root: int, opener: Opener
) -> None:
    name = f"gantry-created-{uuid.uuid4().hex}"
    (tmp_root / "dangling").symlink_to(f"/{name}")
    os.close(opener(root, "dangling", os.O_WRONLY | os.O_CREAT))
    assert (tmp_root / name).is_file()
    assert not os.path.exists(f"/{name}")


@pytest.mark.parametrize("opener", RESOLVERS)
def test_empty_path_and_dotdot_give_the_root(tmp_root: Path, root: int, opener: Opener) -> None:
    for path in ("", "/", "..", "dir/../.."):
        fd = opener(root, path, os.O_PATH | os.O_DIRECTORY)
        try:
            assert os.fstat(fd).st_ino == tmp_root.stat().st_ino
        finally:
            os.close(fd)


def test_walk_refuses_a_file_as_a_directory(root: int) -> None:
    with pytest.raises(NotADirectoryError):
        fs.walk_in_root(root, "etc/passwd/x", os.O_RDONLY)


def test_resolve_beneath_refuses_dotdot(root: int) -> None:
    with pytest.raises(OSError) as caught:
        fs.openat2(root, "../etc/passwd", os.O_RDONLY, resolve=fs.RESOLVE_BENEATH)
    assert caught.value.errno == errno.EXDEV
    assert "openat2" in str(caught.value)


def test_magic_links_are_refused_or_confined(tmp_root: Path) -> None:
    proc = tmp_root / "proc"
    proc.mkdir()

    def child() -> list[object]:
        ns.unshare(ns.CLONE_NEWNS)
        mount.make_rprivate("/")
        mount.bind("/proc", proc)
        root_fd = fs.open_root(tmp_root)
        try:
            fs.open_in_root(root_fd, "proc/self/root/etc/passwd", os.O_RDONLY)
            via_openat2: object = "opened"
        except OSError as exc:
            via_openat2 = exc.errno
        # The walk reads /proc/self/root as the text "/" and resolves it inside the root.
        via_walk = _read(fs.walk_in_root(root_fd, "proc/self/root/etc/passwd", os.O_RDONLY))
        return [via_openat2, via_walk]

    assert support.run_in_child(child) == [errno.ELOOP, "inside\n"]


def test_mkdir_in_root_creates_inside_even_through_an_escaping_link(
    tmp_root: Path, root: int
) -> None:
    name = f"gantry-mkdir-{uuid.uuid4().hex}"
    fd = fs.mkdir_in_root(root, f"etcdir/{name}/a/../b", 0o750)
    try:
        assert os.fstat(fd).st_ino == (tmp_root / "etc" / name / "b").stat().st_ino
    finally:
        os.close(fd)
    assert (tmp_root / "etc" / name / "a").is_dir()
    assert stat.S_IMODE((tmp_root / "etc" / name / "b").stat().st_mode) == 0o750 & ~_umask()
    assert not os.path.exists(f"/etc/{name}")
    with pytest.raises(NotADirectoryError):
        fs.mkdir_in_root(root, "etc/passwd/x")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_proc_fd_path_fd_path_and_reopen(tmp_root: Path) -> None:
    fd = os.open(tmp_root / "etc" / "passwd", os.O_PATH | os.O_CLOEXEC)
    try:
        assert os.readlink(fs.proc_fd_path(fd)) == str(tmp_root / "etc" / "passwd")
        assert fs.fd_path(fd) == str(tmp_root / "etc" / "passwd")
        assert _read(fs.reopen(fd, os.O_RDONLY)) == "inside\n"
    finally:
        os.close(fd)


def test_mknod_and_is_device(tmp_root: Path) -> None:
    fs.mknod(tmp_root / "null", "c", 1, 3, 0o666)
    fs.mknod(tmp_root / "fifo", "p")
    dir_fd = fs.open_root(tmp_root)
    try:
        fs.mknod("zero", "u", 1, 5, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    for name, kind, numbers in (("null", "c", (1, 3)), ("zero", "c", (1, 5))):
        fd = os.open(tmp_root / name, os.O_PATH | os.O_CLOEXEC)
        try:
            assert fs.is_device(fd, kind, *numbers)
            assert not fs.is_device(fd, "b", *numbers)
            assert not fs.is_device(fd, kind, 1, 7)
        finally:
            os.close(fd)
    assert stat.S_ISFIFO((tmp_root / "fifo").lstat().st_mode)
    assert fs.device_numbers((tmp_root / "null").stat().st_rdev) == (1, 3)


def test_open_in_root_falls_back_to_the_walk_without_openat2(
    root: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_openat2(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSYS, "openat2: Function not implemented")

    monkeypatch.setattr(fs, "openat2", no_openat2)
    assert _read(fs.open_in_root(root, "rel", os.O_RDONLY)) == "inside\n"
