"""Apply a layer tar to its own directory, in the on-disk form overlayfs reads.

The tar may be plain, gzip, zstd or xz (sniffed by magic). OCI whiteouts become overlay
whiteouts: ``.wh.<name>`` a 0/0 character device ``<name>``, ``.wh..wh..opq`` the
``trusted.overlay.opaque=y`` xattr on its directory. In that form the order of the tar
does not matter: an opaque marker hides only lower layers, so it is "applied first"
whatever its position, and a whiteout never removes anything of its own layer (image-spec
layer.md: whiteouts apply to lower layers only).

Nothing is ever written outside the layer directory, whatever the tar says (tar-slip,
containerd GHSA-c72p-9xmj-rx3w, moby CVE-2018-15664): names holding ``..`` are refused,
absolute names are taken relative to the layer, and each parent directory is resolved with
openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a symlink in the tar can never redirect a
later entry; the final component is always created with ``*at`` calls that do not follow
it. Hardlink targets are resolved the same way, so they name a file of this layer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from gantry.images.errors import DigestMismatch, ImageError, UnsafeLayer
from gantry.images.tarreader import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    SYMLINK,
    Entry,
    TarReader,
)
from gantry.linux import fs

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_MARKER: Final = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR: Final = "trusted.overlay.opaque"
_BENEATH: Final = fs.RESOLVE_BENEATH | fs.RESOLVE_NO_SYMLINKS | fs.RESOLVE_NO_MAGICLINKS
_FD_CACHE_MAX: Final = 512
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DECOMPRESSORS: Final = {
    "gzip": ["gzip", "-dc"],
    "zstd": ["zstd", "-dcq"],
    "xz": ["xz", "-dc"],
    "bzip2": ["bzip2", "-dc"],
}


@dataclass(frozen=True)
class AppliedLayer:
    """What applying a layer found."""

    diff_id: str
    """Digest of the uncompressed tar."""
    size: int
    """Bytes of the uncompressed tar."""
    entries: int
    compression: str


def sniff(head: bytes) -> str:
    """The compression of a blob from its first bytes: gzip, zstd, xz, bzip2 or tar."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    return "tar"


def sniff_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sniff(f.read(8))


@contextlib.contextmanager
def open_tar_stream(blob: Path) -> Iterator[tuple[int, str, bool]]:
    """``(fd, compression, seekable)`` of the uncompressed tar in ``blob``.

    Compressed blobs are decompressed by the Debian binary in a child process (so it runs
    on another CPU while we unpack); its failure is raised when the stream is closed.
    """
    compression = sniff_file(blob)
    if compression == "tar":
        fd = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield fd, compression, True
        finally:
            os.close(fd)
        return
    with open(blob, "rb") as source:
        try:
            proc = subprocess.Popen(
                _DECOMPRESSORS[compression],
                stdin=source,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise ImageError(f"{compression} layers need the {exc.filename} program") from None
    out: IO[bytes] | None = proc.stdout
    assert out is not None
    failed = False
    try:
        yield out.fileno(), compression, False
    except BaseException:
        failed = True
        raise
    finally:
        out.close()
        _stdout, err = proc.communicate()
        if proc.returncode and not failed:
            message = err.decode(errors="replace").strip()
            raise ImageError(f"{compression} decompression of {blob.name} failed: {message}")


def apply_layer(
    blob: Path,
    target: Path,
    *,
    expected_diff_id: str | None = None,
    blob_digest: str | None = None,
) -> AppliedLayer:
    """Unpack the layer ``blob`` into the directory ``target`` (which must be empty).

    ``blob_digest`` is the verified digest of ``blob`` itself: for an uncompressed layer it
    is the DiffID, so the tar need not be hashed again. A DiffID different from
    ``expected_diff_id`` raises :class:`DigestMismatch`. On failure ``target`` may hold a
    partial tree: callers unpack into a staging directory and remove it (see the store).
    """
    with open_tar_stream(blob) as (fd, compression, seekable):
        trusted = compression == "tar" and blob_digest is not None
        if trusted and expected_diff_id is not None and expected_diff_id != blob_digest:
            raise DigestMismatch(
                f"layer {blob.name}: diff_id {expected_diff_id} expected, "
                f"the uncompressed layer is {blob_digest}"
            )
        reader = TarReader(fd, hashed=not trusted, seekable=seekable)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            count = _Extractor(root_fd).run(reader)
        finally:
            os.close(root_fd)
        reader.drain()
    diff_id = blob_digest if trusted and blob_digest is not None else reader.digest
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatch(
            f"layer {blob.name}: diff_id {expected_diff_id} expected, "
            f"the uncompressed layer is {diff_id}"
        )
    return AppliedLayer(diff_id, reader.total, count, compression)


def clean_name(name: str) -> str:
    """The entry's path relative to the layer root ("" for the root itself).

    Absolute names are taken relative to the layer (as GNU tar does); ``..`` anywhere is
    refused, since no layer written from a real filesystem needs it.
    """
    split = name.split("/")
    if "" not in split and "." not in split and ".." not in split:
        return name  # the common case: already clean
    parts = []
    for part in split:
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafeLayer(f"tar entry {name!r}: '..' in a name is refused")
        parts.append(part)
    return "/".join(parts)


class _Extractor:
    """Creates the entries of one tar under ``root_fd``; everything goes through fds."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.dirs: dict[str, int] = {}
        self.dir_times: dict[str, int] = {}
        self.root_done = False

    def run(self, reader: TarReader) -> int:
        count = 0
        try:
            while (entry := reader.next()) is not None:
                count += 1
                try:
                    self.apply(entry, reader)
                except ImageError:
                    raise
                except OSError as exc:
                    raise ImageError(
                        f"tar entry {entry.name!r}: {exc.strerror or exc} "
                        f"({errno.errorcode.get(exc.errno or 0, exc.errno)})"
                    ) from None
            self.set_dir_times()
        finally:
            self.forget_dirs("")
        return count

    # --- directories by fd -------------------------------------------------------------

    def forget_dirs(self, prefix: str) -> None:
        for path in [
            p for p in self.dirs if not prefix or p == prefix or p.startswith(prefix + "/")
        ]:
            os.close(self.dirs.pop(path))

    def parent_fd(self, path: str, *, create: bool = True) -> int:
        """An O_PATH fd of directory ``path`` (relative to the root), never through a link."""
        if not path:
            return self.root_fd
        cached = self.dirs.get(path)
        if cached is not None:
            return cached
        try:
            fd = fs.openat2(self.root_fd, path, os.O_PATH | os.O_DIRECTORY, resolve=_BENEATH)
        except OSError as exc:
            if exc.errno == errno.ENOENT and create:
                head, _sep, name = path.rpartition("/")
                parent = self.parent_fd(head)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=parent)
                fd = os.open(
                    name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
                )
            elif exc.errno in (errno.ELOOP, errno.EXDEV):
                raise UnsafeLayer(
                    f"{path!r} is a symlink (or passes through one): refused"
                ) from None
            elif exc.errno == errno.ENOTDIR:
                raise UnsafeLayer(f"{path!r} is not a directory") from None
            else:
                raise
        if len(self.dirs) >= _FD_CACHE_MAX:
            self.forget_dirs("")
        self.dirs[path] = fd
        return fd

    # --- one entry ---------------------------------------------------------------------

    def apply(self, entry: Entry, reader: TarReader) -> None:
        path = clean_name(entry.name)
        if not path:
            if entry.type != DIRECTORY:
                raise UnsafeLayer(f"tar entry {entry.name!r}: the layer root must be a directory")
            self.set_attributes_dir(self.root_fd, entry, "")
            return
        head, _sep, name = path.rpartition("/")
        try:
            parent = self.parent_fd(head)
        except UnsafeLayer as exc:
            raise UnsafeLayer(f"tar entry {entry.name!r}: parent {exc}") from None
        if name.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, head, name, entry)
            return
        if entry.is_file:
            try:
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
            except FileExistsError:
                self.remove(parent, head, name)
                fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
            try:
                if entry.size:
                    reader.copy_data(fd)
                os.fchown(fd, entry.uid, entry.gid)
                os.fchmod(fd, entry.mode)
                if entry.xattrs:
                    self.set_xattrs(fd, entry)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            finally:
                os.close(fd)
        elif entry.type == DIRECTORY:
            self.directory(parent, head, name, entry)
        elif entry.type == SYMLINK:
            self.create(parent, head, name, lambda: os.symlink(entry.linkname, name, dir_fd=parent))
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
            self.set_link_xattrs(parent, name, entry)
            os.utime(
                name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False
            )
        elif entry.type == HARDLINK:
            self.hardlink(parent, head, name, entry)
        elif entry.type in (CHARDEV, BLOCKDEV, FIFO):
            kind = {CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[entry.type]
            rdev = 0 if entry.type == FIFO else os.makedev(entry.devmajor, entry.devminor)
            self.create(
                parent, head, name, lambda: os.mknod(name, kind | 0o600, rdev, dir_fd=parent)
            )
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                proc = fs.proc_fd_path(fd)
                os.chown(proc, entry.uid, entry.gid)
                os.chmod(proc, entry.mode)
                self.set_xattrs(proc, entry)
                os.utime(
                    name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False
                )
            finally:
                os.close(fd)
        else:
            raise ImageError(f"tar entry {entry.name!r}: unsupported type {chr(entry.type)!r}")

    def create(self, parent: int, head: str, name: str, make: object) -> int:
        """Run ``make`` to create ``name``; replace a non-directory (or a directory, when
        the new entry is not one) that is in the way. Returns what ``make`` returned."""
        assert callable(make)
        try:
            result: int = make()
            return result
        except FileExistsError:
            pass
        self.remove(parent, head, name)
        result = make()
        return result

    def remove(self, parent: int, head: str, name: str) -> None:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self.forget_dirs(f"{head}/{name}" if head else name)
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)

    def directory(self, parent: int, head: str, name: str, entry: Entry) -> None:
        path = f"{head}/{name}" if head else name
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                self.remove(parent, head, name)
                os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            self.set_attributes_dir(fd, entry, path)
        finally:
            os.close(fd)

    def set_attributes_dir(self, fd: int, entry: Entry, path: str) -> None:
        os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        self.set_xattrs(fd, entry)
        self.dir_times[path] = entry.mtime_ns

    def hardlink(self, parent: int, head: str, name: str, entry: Entry) -> None:
        target = clean_name(entry.linkname)
        if not target:
            raise UnsafeLayer(f"tar entry {entry.name!r}: hardlink to the layer root")
        t_head, _sep, t_name = target.rpartition("/")
        try:
            t_parent = self.parent_fd(t_head, create=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"tar entry {entry.name!r}: hardlink target {entry.linkname!r} is not in the layer"
            ) from None
        except UnsafeLayer as exc:
            raise UnsafeLayer(f"tar entry {entry.name!r}: hardlink target {exc}") from None
        try:
            st = os.stat(t_name, dir_fd=t_parent, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"tar entry {entry.name!r}: hardlink target {entry.linkname!r} is not in the layer"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"tar entry {entry.name!r}: hardlink to a directory")
        if (t_head, t_name) == (head, name):
            return
        self.create(
            parent,
            head,
            name,
            lambda: os.link(
                t_name, name, src_dir_fd=t_parent, dst_dir_fd=parent, follow_symlinks=False
            ),
        )

    def whiteout(self, parent: int, head: str, name: str, entry: Entry) -> None:
        if name == OPAQUE_MARKER:
            os.setxattr(fs.proc_fd_path(parent), OVERLAY_OPAQUE_XATTR, b"y")
            return
        if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk and the like): nothing to do
        hidden = name[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise UnsafeLayer(f"tar entry {entry.name!r}: invalid whiteout")
        try:
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        except FileExistsError:
            return  # a whiteout hides lower layers only; this layer's entry stays
        del head

    @staticmethod
    def set_xattrs(target: int | str, entry: Entry) -> None:
        for key, value in entry.xattrs.items():
            if key.startswith("trusted.overlay."):
                # Overlay's own metadata (whiteouts, redirects) comes from our conversion
                # only; a tar may not plant it.
                continue
            try:
                os.setxattr(target, key, value)
            except OSError as exc:
                if key.startswith("user.") and exc.errno in (errno.EPERM, errno.ENOTSUP):
                    continue
                raise

    def set_link_xattrs(self, parent: int, name: str, entry: Entry) -> None:
        if entry.xattrs:
            link = f"{fs.proc_fd_path(parent)}/{name}"
            for key, value in entry.xattrs.items():
                if key.startswith("trusted.overlay."):
                    continue
                with contextlib.suppress(OSError):
                    os.setxattr(link, key, value, follow_symlinks=False)

    def set_dir_times(self) -> None:
        # Last, because creating entries inside a directory changes its mtime.
        self.forget_dirs("")
        for path, mtime in self.dir_times.items():
            if not path:
                os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            try:
                fd = fs.openat2(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY, resolve=_BENEATH)
            except (FileNotFoundError, NotADirectoryError):
                continue  # replaced by a later entry of the tar
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a staging tree (fd-based, never following symlinks); missing is fine."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def diff_id_of(blob: Path) -> tuple[str, int, str]:
    """``(diff_id, uncompressed size, compression)`` of a layer blob, without unpacking."""
    import hashlib

    hasher = hashlib.sha256()
    total = 0
    with open_tar_stream(blob) as (fd, compression, _seekable):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while got := os.readv(fd, [view]):
            hasher.update(view[:got])
            total += got
    return f"sha256:{hasher.hexdigest()}", total, compression
