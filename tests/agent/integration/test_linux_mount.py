"""gantry.linux.mount against the real kernel, always inside a child's private mount ns."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import linux_support as support
import pytest
from gantry.linux import mount, ns
from gantry.linux.proc import find_mount, read_mountinfo

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def scratch() -> Iterator[Path]:
    with support.scratch_dir() as path:
        yield path


def _private_mount_ns() -> None:
    ns.unshare(ns.CLONE_NEWNS)
    mount.make_rprivate("/")


def _write_errno(path: Path) -> int:
    try:
        path.write_text("x")
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_tmpfs_bind_and_remount_ro(scratch: Path) -> None:
    source, view = scratch / "source", scratch / "view"
    source.mkdir()
    view.mkdir()

    def child() -> dict[str, object]:
        _private_mount_ns()
        mount.mount("tmpfs", source, "tmpfs", mount.MS_NOSUID | mount.MS_NODEV, "size=1m")
        (source / "before").write_text("hello")
        mount.bind(source, view)
        mount.remount_ro(view)
        entry = find_mount(read_mountinfo(), str(view))
        assert entry is not None
        return {
            "seen": (view / "before").read_text(),
            "view_write": _write_errno(view / "new"),
            "source_write": _write_errno(source / "new"),
            "view_options": sorted(entry.mount_options),
            "view_flags": mount.mount_flags(view),
        }

    seen = support.run_in_child(child)
    assert seen["seen"] == "hello"
    assert seen["view_write"] == errno.EROFS
    assert seen["source_write"] == 0
    # remount_ro kept the flags the bind inherited.
    assert {"ro", "nosuid", "nodev"} <= set(seen["view_options"])
    assert seen["view_flags"] & mount.MS_RDONLY
    assert not os.listdir(source)  # the tmpfs lived only in the child's namespace


def test_mount_onto_an_fd_target(scratch: Path) -> None:
    target = scratch / "target"
    target.mkdir()

    def child() -> list[object]:
        _private_mount_ns()
        fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mount.mount("tmpfs", fd, "tmpfs", 0, "size=64k,mode=700")
        os.close(fd)
        entry = find_mount(read_mountinfo(), str(target))
        assert entry is not None
        fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mount.umount2(fd, mount.MNT_DETACH)
        os.close(fd)
        return [entry.fstype, find_mount(read_mountinfo(), str(target)) is None]

    assert support.run_in_child(child) == ["tmpfs", True]


def test_make_rprivate_turns_shared_mounts_private(scratch: Path) -> None:
    def child() -> list[str]:
        ns.unshare(ns.CLONE_NEWNS)
        mount.set_propagation("/", mount.MS_SHARED)  # a new peer group, local to this ns
        before = find_mount(read_mountinfo(), "/")
        mount.make_rprivate("/")
        after = find_mount(read_mountinfo(), "/")
        assert before is not None and after is not None
        return [before.propagation, after.propagation]

    assert support.run_in_child(child) == ["shared", "private"]


def test_mount_flags_reads_per_mount_flags(scratch: Path) -> None:
    def child() -> int:
        _private_mount_ns()
        flags = mount.MS_NOSUID | mount.MS_NODEV | mount.MS_NOEXEC | mount.MS_NOATIME
        mount.mount("tmpfs", scratch, "tmpfs", flags)
        return mount.mount_flags(scratch)

    flags = support.run_in_child(child)
    expected = mount.MS_NOSUID | mount.MS_NODEV | mount.MS_NOEXEC | mount.MS_NOATIME
    assert flags & expected == expected
    assert not flags & mount.MS_RDONLY


def test_errors_name_the_call_and_the_path(scratch: Path) -> None:
    def child() -> list[object]:
        _private_mount_ns()
        try:
            mount.umount2(scratch)  # a directory, not a mount point
        except OSError as exc:
            return [exc.errno, str(exc), exc.filename]
        return []

    err, message, filename = support.run_in_child(child)
    assert err == errno.EINVAL
    assert message.startswith("[Errno 22] umount2: ")
    assert filename == str(scratch)


def _build_busybox_root(root: Path) -> None:
    mount.mount("tmpfs", root, "tmpfs", 0, "size=8m,mode=755")
    (root / "bin").mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)


def _run_busybox_ls() -> str:
    # A grandchild exec proves the new root is a working root, not just a listing.
    return subprocess.run(
        ["/bin/busybox", "ls", "-a", "/"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static at /bin/busybox")
def test_pivot_root_with_put_old(scratch: Path) -> None:
    root = scratch / "root"
    root.mkdir()

    def child() -> dict[str, object]:
        _private_mount_ns()
        _build_busybox_root(root)
        (root / "old").mkdir()
        mount.pivot_root(root, root / "old")
        os.chdir("/")
        mount.umount2("/old", mount.MNT_DETACH)
        os.rmdir("/old")
        return {"listing": sorted(os.listdir("/")), "ls": _run_busybox_ls().split()}

    seen = support.run_in_child(child)
    assert seen["listing"] == ["bin"]
    assert seen["ls"] == [".", "..", "bin"]


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static at /bin/busybox")
def test_pivot_root_dot_dot_stacks_and_detaches_the_old_root(scratch: Path) -> None:
    root = scratch / "root"
    root.mkdir()

    def child() -> list[str]:
        _private_mount_ns()
        _build_busybox_root(root)
        new_root = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        os.fchdir(new_root)
        # pivot_root(".", ".") stacks the old root on top of the new one at "/", so no
        # put_old directory is needed; unmounting "." then uncovers the new root.
        mount.pivot_root(".", ".")
        mount.umount2(".", mount.MNT_DETACH)
        os.chdir("/")
        os.close(new_root)
        return sorted(os.listdir("/"))

    assert support.run_in_child(child) == ["bin"]


def test_pivot_root_refuses_a_new_root_on_the_current_root_mount(scratch: Path) -> None:
    def child() -> int:
        _private_mount_ns()
        try:
            mount.pivot_root(scratch, scratch)
        except OSError as exc:
            return exc.errno or -1
        return 0

    assert support.run_in_child(child) in (errno.EBUSY, errno.EINVAL)


@pytest.mark.skipif(not mount.have_new_mount_api(), reason="needs fsopen/open_tree (5.2+)")
def test_fsopen_fsmount_attach(scratch: Path) -> None:
    target = scratch / "fs"
    target.mkdir()

    def child() -> list[object]:
        _private_mount_ns()
        fs_fd = mount.fsopen("tmpfs")
        mount.fsconfig(fs_fd, mount.FSCONFIG_SET_STRING, "size", "1m")
        mount.fsconfig(fs_fd, mount.FSCONFIG_SET_STRING, "mode", "0710")
        mount.fsconfig(fs_fd, mount.FSCONFIG_CMD_CREATE)
        mnt_fd = mount.fsmount(fs_fd, mount.MOUNT_ATTR_NODEV | mount.MOUNT_ATTR_NOSUID)
        mount.attach(mnt_fd, target)
        os.close(mnt_fd)
        os.close(fs_fd)
        entry = find_mount(read_mountinfo(), str(target))
        assert entry is not None
        return [entry.fstype, sorted(entry.mount_options), oct(os.stat(target).st_mode & 0o777)]

    fstype, options, mode = support.run_in_child(child)
    assert fstype == "tmpfs"
    assert {"nodev", "nosuid", "rw"} <= set(options)
    assert mode == "0o710"


@pytest.mark.skipif(not mount.have_mount_setattr(), reason="needs mount_setattr (5.12+)")
def test_open_tree_clone_attach_to_fd_and_mount_setattr(scratch: Path) -> None:
    source, copy = scratch / "source", scratch / "copy"
    source.mkdir()
    copy.mkdir()

    def child() -> list[object]:
        _private_mount_ns()
        mount.mount("tmpfs", source, "tmpfs", 0, "size=1m")
        (source / "file").write_text("data")
        tree = mount.open_tree(source, mount.OPEN_TREE_CLONE)
        target = os.open(copy, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mount.attach(tree, target)
        os.close(target)
        os.close(tree)
        mount.mount_setattr(copy, attr_set=mount.MOUNT_ATTR_RDONLY | mount.MOUNT_ATTR_NOEXEC)
        entry = find_mount(read_mountinfo(), str(copy))
        assert entry is not None
        return [
            (copy / "file").read_text(),
            _write_errno(copy / "other"),
            _write_errno(source / "other"),
            sorted(entry.mount_options),
        ]

    content, copy_write, source_write, options = support.run_in_child(child)
    assert content == "data"
    assert copy_write == errno.EROFS
    assert source_write == 0
    assert {"ro", "noexec"} <= set(options)


def test_move_mount_with_ms_move(scratch: Path) -> None:
    first, second = scratch / "first", scratch / "second"
    first.mkdir()
    second.mkdir()

    def child() -> list[bool]:
        _private_mount_ns()
        mount.mount("tmpfs", first, "tmpfs", 0, "size=64k")
        mount.move(first, second)
        table = read_mountinfo()
        return [find_mount(table, str(first)) is None, find_mount(table, str(second)) is not None]

    assert support.run_in_child(child) == [True, True]
