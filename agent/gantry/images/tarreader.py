"""A streaming tar reader built for unpacking layers fast and exactly.

It reads ustar, GNU (``L``/``K`` long names) and PAX (``x``/``g``) headers, hashes every
byte it reads when asked (a layer's DiffID is the digest of its uncompressed tar), and hands
file data over by fd: from a seekable, unhashed source it uses copy_file_range(2), so the
kernel copies the data (and can share extents) without passing it through Python.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from typing import Final

from gantry.images.errors import ImageError

BLOCK: Final = 512
_FILL: Final = 1 << 20
_COPY: Final = 4 << 20
_DIRECT_MIN: Final = 64 << 10
"""File data at least this long goes by copy_file_range when the source allows it."""

REGULAR: Final = frozenset(b"07\0")
HARDLINK: Final = ord("1")
SYMLINK: Final = ord("2")
CHARDEV: Final = ord("3")
BLOCKDEV: Final = ord("4")
DIRECTORY: Final = ord("5")
FIFO: Final = ord("6")
_PAX: Final = ord("x")
_PAX_GLOBAL: Final = ord("g")
_GNU_LONGNAME: Final = ord("L")
_GNU_LONGLINK: Final = ord("K")
_HEADER_ONLY: Final = frozenset((HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO))
_META_LIMIT: Final = 1 << 20
"""Longest PAX or GNU long-name record accepted (a hostile tar could claim gigabytes)."""


@dataclass(slots=True)
class Entry:
    """One member of the archive, with PAX and GNU extensions already applied."""

    name: str
    type: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.type in REGULAR


def _number(raw: bytes, what: str) -> int:
    if not raw[0] & 0x80:
        # Fast path: the usual NUL- or space-terminated octal field.
        try:
            return int(raw.rstrip(b"\0 ") or b"0", 8)
        except ValueError:
            pass  # text after a NUL, or not a number: the slow path says which
    return _number_slow(raw, what)


def _number_slow(raw: bytes, what: str) -> int:
    if raw[:1] and raw[0] & 0x80:
        if raw[0] == 0xFF:
            raise ImageError(f"tar header: negative {what}")
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ImageError(f"tar header: {what} is not a number: {text!r}") from None


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip(b" ")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    return want == sum(block) - sum(block[148:156]) + 8 * 32


def parse_pax(data: bytes) -> dict[str, bytes]:
    """The records of a PAX extended header (values left as bytes)."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise ImageError("tar: malformed PAX record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ImageError("tar: malformed PAX record length") from None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise ImageError("tar: malformed PAX record")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise ImageError("tar: PAX record without '='")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


class TarReader:
    """Reads entries from ``fd`` (a tar stream). ``hashed`` makes :attr:`digest` available."""

    def __init__(self, fd: int, *, hashed: bool, seekable: bool) -> None:
        self._fd = fd
        self._hash = hashlib.sha256() if hashed else None
        self._direct = seekable and not hashed
        self._buf = bytearray(_FILL)
        self._start = 0
        self._end = 0
        self._copybuf: bytearray | None = None
        self.total = 0
        """Bytes of the tar stream consumed so far."""
        self._globals: dict[str, bytes] = {}
        self._pending = 0
        """Data bytes (plus padding) of the current entry not yet consumed."""

    @property
    def digest(self) -> str:
        if self._hash is None:
            raise ValueError("the reader was not asked to hash")
        return f"sha256:{self._hash.hexdigest()}"

    # --- low-level reading ---------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available in the buffer; False at EOF before that."""
        if self._end - self._start >= need:
            return True
        if self._start:
            left = self._end - self._start
            self._buf[:left] = self._buf[self._start : self._end]
            self._start, self._end = 0, left
        view = memoryview(self._buf)
        while self._end < need:
            got = os.readv(self._fd, [view[self._end :]])
            if not got:
                return False
            if self._hash is not None:
                self._hash.update(view[self._end : self._end + got])
            self._end += got
        return True

    def _take(self, count: int) -> bytes:
        if count > len(self._buf):
            parts = []
            while count:
                step = min(count, len(self._buf))
                parts.append(self._take(step))
                count -= step
            return b"".join(parts)
        if not self._fill(count):
            raise ImageError("tar: unexpected end of archive")
        data = bytes(self._buf[self._start : self._start + count])
        self._start += count
        self.total += count
        return data

    def _skip(self, count: int) -> None:
        while count:
            if self._end == self._start and not self._fill(1):
                raise ImageError("tar: unexpected end of archive")
            step = min(count, self._end - self._start)
            self._start += step
            self.total += step
            count -= step

    def drain(self) -> None:
        """Read to the end of the stream (so the digest covers it all)."""
        self._skip(self._pending)
        self._pending = 0
        self.total += self._end - self._start
        self._start = self._end = 0
        if self._hash is None and self._direct:
            return
        view = memoryview(self._buf)
        while got := os.readv(self._fd, [view]):
            if self._hash is not None:
                self._hash.update(view[:got])
            self.total += got

    # --- entries -------------------------------------------------------------------------

    def next(self) -> Entry | None:
        """The next entry, or None at the end of the archive."""
        self._skip(self._pending)
        self._pending = 0
        local: dict[str, bytes] = {}
        longname: str | None = None
        longlink: str | None = None
        while True:
            if not self._fill(BLOCK):
                if self._end == self._start:
                    return None  # some writers omit the two zero blocks
                raise ImageError("tar: unexpected end of archive")
            block = self._take(BLOCK)
            if not block[0] and block.count(0) == BLOCK:
                return None
            if not _checksum_ok(block):
                raise ImageError(f"tar: bad header checksum at byte {self.total - BLOCK}")
            kind = block[156]
            size = _number(block[124:136], "size")
            padded = (size + BLOCK - 1) // BLOCK * BLOCK
            if kind in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK):
                if size > _META_LIMIT:
                    raise ImageError(f"tar: extended header of {size} bytes is too large")
                data = self._take(padded)[:size]
                if kind == _PAX:
                    local.update(parse_pax(data))
                elif kind == _PAX_GLOBAL:
                    self._globals.update(parse_pax(data))
                elif kind == _GNU_LONGNAME:
                    longname = _text(data)
                else:
                    longlink = _text(data)
                continue
            pax = {**self._globals, **local} if self._globals or local else local
            entry = self._entry(block, kind, size, pax, longname, longlink)
            padded = (entry.size + BLOCK - 1) // BLOCK * BLOCK
            self._pending = padded if self._carries_data(entry) else 0
            self._data_left = entry.size if self._pending else 0
            return entry

    @staticmethod
    def _carries_data(entry: Entry) -> bool:
        # Links, devices, fifos and directories are header-only whatever their size field
        # says (as GNU tar, Go's archive/tar and Python's tarfile read them).
        return entry.is_file or entry.type not in _HEADER_ONLY

    @staticmethod
    def _entry(
        block: bytes,
        kind: int,
        size: int,
        pax: dict[str, bytes],
        longname: str | None,
        longlink: str | None,
    ) -> Entry:
        name = _text(block[0:100])
        if block[257:262] == b"ustar" and block[345] != 0 and block[257:263] == b"ustar\0":
            name = _text(block[345:500]) + "/" + name
        if longname is not None:
            name = longname
        linkname = longlink if longlink is not None else _text(block[157:257])
        mtime_ns = _number(block[136:148], "mtime") * 1_000_000_000
        uid = _number(block[108:116], "uid")
        gid = _number(block[116:124], "gid")
        xattrs: dict[str, bytes] = {}
        for key, value in pax.items():
            if key == "path":
                name = value.decode("utf-8", "surrogateescape")
            elif key == "linkpath":
                linkname = value.decode("utf-8", "surrogateescape")
            elif key == "size":
                size = int(value)
            elif key == "uid":
                uid = int(value)
            elif key == "gid":
                gid = int(value)
            elif key == "mtime":
                mtime_ns = _pax_time(value)
            elif key.startswith("SCHILY.xattr."):
                xattrs[key[len("SCHILY.xattr.") :]] = value
            elif key.startswith("GNU.sparse."):
                raise ImageError(f"tar entry {name!r}: sparse files are not supported")
        if kind == ord("S"):
            raise ImageError(f"tar entry {name!r}: sparse files are not supported")
        if size < 0:
            raise ImageError(f"tar entry {name!r}: negative size")
        return Entry(
            name=name,
            type=kind,
            mode=_number(block[100:108], "mode") & 0o7777,
            uid=uid,
            gid=gid,
            size=size,
            mtime_ns=mtime_ns,
            linkname=linkname,
            devmajor=_number(block[329:337], "devmajor"),
            devminor=_number(block[337:345], "devminor"),
            xattrs=xattrs,
        )

    def copy_data(self, out_fd: int) -> None:
        """Write the current entry's data to ``out_fd`` (and consume its padding)."""
        left = self._data_left
        # What is already buffered goes first.
        while left and self._end > self._start:
            step = min(left, self._end - self._start)
            _write_all(out_fd, memoryview(self._buf)[self._start : self._start + step])
            self._start += step
            self.total += step
            left -= step
        if left >= _DIRECT_MIN and self._direct:
            left = self._copy_direct(out_fd, left)
        if left:
            if self._copybuf is None:
                self._copybuf = bytearray(_COPY)
            view = memoryview(self._copybuf)
            while left:
                got = os.readv(self._fd, [view[: min(left, _COPY)]])
                if not got:
                    raise ImageError("tar: unexpected end of archive in file data")
                if self._hash is not None:
                    self._hash.update(view[:got])
                _write_all(out_fd, view[:got])
                self.total += got
                left -= got
        self._pending -= self._data_left
        self._data_left = 0

    def _copy_direct(self, out_fd: int, left: int) -> int:
        while left:
            try:
                got = os.copy_file_range(self._fd, out_fd, left)
            except OSError as exc:
                if exc.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self._direct = False
                    return left
                raise
            if not got:
                raise ImageError("tar: unexpected end of archive in file data")
            self.total += got
            left -= got
        return 0

    def read_data(self, limit: int) -> bytes:
        """The current entry's data as bytes (for small members); at most ``limit`` bytes."""
        if self._data_left > limit:
            raise ImageError(f"tar: member of {self._data_left} bytes is larger than {limit}")
        data = self._take(self._data_left)
        self._pending -= self._data_left
        self._data_left = 0
        return data

    _data_left: int = 0


def _pax_time(value: bytes) -> int:
    text = value.decode()
    whole, _dot, frac = text.partition(".")
    negative = whole.startswith("-")
    ns = abs(int(whole)) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    return -ns if negative else ns


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
