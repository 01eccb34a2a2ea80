"""Copying files into and out of a container's root filesystem as tar.

Every path is resolved inside the rootfs with ``openat2(RESOLVE_IN_ROOT)``
(:func:`gantry.linux.fs.open_in_root`): ``..`` and symlinks, absolute or not, stay inside
it, so a container cannot trick the agent into reading or writing the host's files.
Directories are walked and written through file descriptors, never by host path names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import IO, Final

from gantry.engine.errors import Invalid, NotFound
from gantry.linux import fs

__all__ = ["extract_into", "write_archive"]

_O_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open(root_fd: int, path: str, flags: int, field: str) -> int:
    try:
        return fs.open_in_root(root_fd, path.lstrip("/"), flags)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file or directory in the container", field) from None
    except NotADirectoryError:
        raise Invalid(f"{path}: not a directory in the container", field) from None
    except OSError as exc:
        raise Invalid(f"{path}: {os.strerror(exc.errno or errno.EIO)}", field) from None


def _info(name: str, st_: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st_.st_mode)
    info.uid, info.gid = st_.st_uid, st_.st_gid
    info.mtime = int(st_.st_mtime)
    return info


def _add_entry(tar: tarfile.TarFile, dir_fd: int, entry: str, arcname: str) -> None:
    st_ = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
    info = _info(arcname, st_)
    if stat.S_ISREG(st_.st_mode):
        fd = os.open(
            entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
        with os.fdopen(fd, "rb") as handle:
            info.size = os.fstat(handle.fileno()).st_size
            tar.addfile(info, handle)
    elif stat.S_ISLNK(st_.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry, dir_fd=dir_fd)
        tar.addfile(info)
    elif stat.S_ISDIR(st_.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    # Devices, fifos and sockets are left out: reading them could block or leak.


def write_archive(rootfs: str, path: str, out: IO[bytes]) -> None:
    """Write ``path`` of the container (a file, a symlink or a directory tree) to ``out``
    as a tar archive whose top entry is the path's base name."""
    root_fd = fs.open_root(rootfs)
    try:
        parent, _sep, base = path.rstrip("/").rpartition("/")
        parent_fd = _open(root_fd, parent or "/", _O_DIR, "query.path")
        try:
            if not base:  # the root itself
                base, target_fd = ".", os.dup(parent_fd)
            else:
                target_fd = -1
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                try:
                    os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise NotFound(
                        f"{path}: no such file or directory in the container", "query.path"
                    ) from None
                _add_entry(tar, parent_fd, base, base)
                if stat.S_ISDIR(os.stat(base, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                    if target_fd < 0:
                        target_fd = os.open(base, _O_DIR | os.O_NOFOLLOW, dir_fd=parent_fd)
                    for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=target_fd):
                        prefix = base if dirpath == "." else f"{base}/{dirpath[2:]}"
                        for name in sorted(dirnames) + sorted(filenames):
                            _add_entry(tar, dir_fd, name, f"{prefix}/{name}")
        finally:
            os.close(parent_fd)
            if target_fd >= 0:
                os.close(target_fd)
    finally:
        os.close(root_fd)


def _member_parts(member: tarfile.TarInfo) -> list[str]:
    name = member.name
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise Invalid(
            f"body: archive member {name!r} is absolute or leaves the target directory", "body"
        )
    return parts


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise Invalid(f"body: not a readable tar archive: {exc}", "body") from None
        if member is None:
            return
        yield member


@contextlib.contextmanager
def _open_tar(source: IO[bytes]) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise Invalid(f"body: not a readable tar archive: {exc}", "body") from None
    with tar:
        yield tar


def extract_into(rootfs: str, path: str, source: IO[bytes]) -> list[str]:
    """Extract the tar archive ``source`` into the directory ``path`` of the container;
    the container paths written. Regular files, directories and symlinks only."""
    root_fd = fs.open_root(rootfs)
    written: list[str] = []
    try:
        target = _open(root_fd, path, _O_DIR, "query.path")
        os.close(target)
        base = "/" + path.strip("/")
        with _open_tar(source) as tar:
            for member in _members(tar):
                parts = _member_parts(member)
                if not parts:
                    continue
                if not (member.isreg() or member.isdir() or member.issym()):
                    raise Invalid(
                        f"body: archive member {member.name!r}: only files, directories and "
                        "symlinks are accepted",
                        "body",
                    )
                full = "/".join([base.rstrip("/"), *parts])
                parent = "/".join([base.rstrip("/"), *parts[:-1]]) or "/"
                name = parts[-1]
                parent_fd = fs.mkdir_in_root(root_fd, parent.lstrip("/"))
                try:
                    _write_member(tar, member, parent_fd, name)
                finally:
                    os.close(parent_fd)
                written.append(full)
    finally:
        os.close(root_fd)
    return written


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, name: str) -> None:
    mode = member.mode & 0o7777
    if member.isdir():
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent_fd)
        fd = os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=parent_fd)
    elif member.issym():
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(name, dir_fd=parent_fd)
        os.symlink(member.linkname, name, dir_fd=parent_fd)
        os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        return
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=parent_fd)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=parent_fd,
        )
        data = tar.extractfile(member)
        if data is not None:
            with data:
                while chunk := data.read(65536):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
    try:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
