"""The container's users and groups, read from the container's own /etc/passwd and /etc/group.

Never through ``pwd``, ``grp`` or anything else that goes through NSS: once inside a
container's rootfs, glibc would load the *image's* ``libnss_*.so`` into the runtime's
process (CVE-2019-14271, ``docker cp``). The files are parsed here, by hand, and read
through an fd that cannot leave the container root.

A user is named the way ``docker run --user`` and runc name one: ``user[:group]``, each
part a name or a number. The lookup follows runc's rules:

- a numeric user part is matched against uids only, a non-numeric one against names; a
  numeric uid that has no entry is still valid (gid 0, home ``/``), an unknown name is not;
- with an explicit group part, that group is the primary gid and no supplementary groups
  come from /etc/group;
- without one, the primary gid is the passwd entry's, and every group that lists the user
  by name is a supplementary group;
- missing files are empty databases: the default user is root (uid 0, gid 0, home ``/``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gantry.linux.fs import open_in_root

__all__ = [
    "DEFAULT_HOME",
    "MAX_DATABASE_BYTES",
    "MAX_ID",
    "ExecUser",
    "GroupEntry",
    "PasswdEntry",
    "UserLookupError",
    "parse_group",
    "parse_passwd",
    "read_database",
    "resolve_user",
]

DEFAULT_HOME: Final = "/"
"""The home directory of a user without a passwd entry (or with an empty home field)."""

MAX_ID: Final = 2**32 - 2
"""The largest valid uid/gid: ``(uid_t) -1`` means "unchanged" to setresuid(2)."""

MAX_DATABASE_BYTES: Final = 16 * 1024 * 1024
"""/etc/passwd or /etc/group larger than this is refused rather than read into memory."""


class UserLookupError(LookupError):
    """A user or group that the container's databases cannot resolve, or a bad user spec."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "user lookup failed"


@dataclass(frozen=True)
class PasswdEntry:
    """One line of /etc/passwd (passwd(5)); the password field is not kept."""

    name: str
    uid: int
    gid: int
    gecos: str = ""
    home: str = ""
    shell: str = ""


@dataclass(frozen=True)
class GroupEntry:
    """One line of /etc/group (group(5)); the password field is not kept."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecUser:
    """Who the container process runs as."""

    uid: int
    gid: int
    supplementary_gids: tuple[int, ...] = ()
    home: str = DEFAULT_HOME
    name: str | None = None
    """The passwd name of ``uid``, ``None`` when it has no entry."""


# --- parsing (pure) ---------------------------------------------------------------------------


def _parse_id(text: str) -> int | None:
    # ASCII digits only: int() would also take " 7", "+7" or other scripts' digits.
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _records(text: str) -> Iterable[list[str]]:
    for line in text.splitlines():
        # Blank lines, comments, and the NIS compat entries (+name, -name) name no user here.
        if not line.strip() or line.startswith(("#", "+", "-")):
            continue
        yield line.split(":")


def parse_passwd(text: str) -> tuple[PasswdEntry, ...]:
    """Parse /etc/passwd. Lines without a name and numeric uid and gid are skipped.

    Short lines are accepted (missing gecos, home and shell are empty), so is a line with
    extra fields; an unparsable id skips the line rather than reading as 0 (root).
    """
    entries = []
    for fields in _records(text):
        fields += [""] * (7 - len(fields))
        name = fields[0]
        uid = _parse_id(fields[2])
        gid = _parse_id(fields[3])
        if not name or uid is None or gid is None:
            continue
        entries.append(PasswdEntry(name, uid, gid, fields[4], fields[5], fields[6]))
    return tuple(entries)


def parse_group(text: str) -> tuple[GroupEntry, ...]:
    """Parse /etc/group. Lines without a name and a numeric gid are skipped."""
    entries = []
    for fields in _records(text):
        fields += [""] * (4 - len(fields))
        name = fields[0]
        gid = _parse_id(fields[2])
        if not name or gid is None:
            continue
        members = tuple(member.strip() for member in fields[3].split(",") if member.strip())
        entries.append(GroupEntry(name, gid, members))
    return tuple(entries)


def _split_spec(user: str) -> tuple[str, str | None]:
    name, sep, group = user.partition(":")
    if sep and not group:
        raise UserLookupError(f"user {user!r}: the group after ':' is empty")
    if sep and ":" in group:
        raise UserLookupError(f"user {user!r}: expected user[:group]")
    return name, group if sep else None


def _numeric(text: str, what: str, user: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    if value > MAX_ID:
        raise UserLookupError(f"user {user!r}: {what} {value} is out of range (0-{MAX_ID})")
    return value


def _unique(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(ids))


def resolve_user(
    user: str,
    *,
    passwd: Sequence[PasswdEntry] = (),
    groups: Sequence[GroupEntry] = (),
    additional_gids: Iterable[int] = (),
) -> ExecUser:
    """Resolve ``user[:group]`` (names or numbers) against the parsed databases.

    ``additional_gids`` are appended to the supplementary groups (the spec's
    ``additionalGids``). An empty user part means root. Raises :class:`UserLookupError`
    naming what could not be found.
    """
    user_part, group_part = _split_spec(user)
    uid = _numeric(user_part or "0", "uid", user)
    if uid is not None:
        entry = next((e for e in passwd if e.uid == uid), None)
    else:
        entry = next((e for e in passwd if e.name == user_part), None)
        if entry is None:
            raise UserLookupError(
                f"unable to find user {user_part!r} in the container's /etc/passwd"
            )
    found_uid = entry.uid if entry is not None else uid
    assert found_uid is not None
    gid = entry.gid if entry is not None else 0
    home = entry.home if entry is not None and entry.home else DEFAULT_HOME
    name = entry.name if entry is not None else None

    supplementary: list[int] = []
    if group_part is not None:
        numeric_gid = _numeric(group_part, "gid", user)
        if numeric_gid is not None:
            gid = numeric_gid
        else:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise UserLookupError(
                    f"unable to find group {group_part!r} in the container's /etc/group"
                )
            gid = group.gid
    elif name is not None:
        # Supplementary groups only in the implicit form, as runc: an explicit group is
        # a request for exactly that group.
        supplementary = [g.gid for g in groups if name in g.members]
    supplementary.extend(additional_gids)
    return ExecUser(found_uid, gid, _unique(supplementary), home, name)


# --- reading the container's files ------------------------------------------------------------


def read_database(root_fd: int, path: str) -> str | None:
    """Read ``path`` (``/etc/passwd``) inside the root ``root_fd``; ``None`` when missing.

    Resolved with :func:`gantry.linux.fs.open_in_root`: a symlink in the image cannot lead
    out of the root, nor through a /proc magic link to the host. A fifo or device planted
    there would block or never end, so anything but a regular file is refused, and so is
    a file larger than :data:`MAX_DATABASE_BYTES`.
    """
    try:
        fd = open_in_root(root_fd, path.lstrip("/"), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserLookupError(f"{path} in the container is not a regular file")
        if info.st_size > MAX_DATABASE_BYTES:
            raise UserLookupError(f"{path} in the container is larger than {MAX_DATABASE_BYTES}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > MAX_DATABASE_BYTES:
                raise UserLookupError(
                    f"{path} in the container is larger than {MAX_DATABASE_BYTES}"
                )
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="surrogateescape")
