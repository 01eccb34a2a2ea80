"""gantry.runtime.users: /etc/passwd and /etc/group parsed by hand, and user[:group] lookup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from gantry.runtime import users
from gantry.runtime.users import (
    DEFAULT_HOME,
    MAX_ID,
    ExecUser,
    GroupEntry,
    PasswdEntry,
    UserLookupError,
    parse_group,
    parse_passwd,
    read_database,
    resolve_user,
)

PASSWD = """\
# a comment, then a blank line

root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:The App,,,:/home/app:/bin/sh
nohome:x:1001:1001::
+nis-compat
-nis-excluded
"""

GROUP = """\
root:x:0:
wheel:x:10:app,someone
app:x:1000:
extra:x:2000: app , other
empty:x:3000:
"""


# --- parsing ----------------------------------------------------------------------------------


def test_passwd_entries_skip_comments_blank_and_nis_lines() -> None:
    entries = parse_passwd(PASSWD)
    assert [e.name for e in entries] == ["root", "daemon", "app", "nohome"]
    assert entries[2] == PasswdEntry("app", 1000, 1000, "The App,,,", "/home/app", "/bin/sh")


def test_passwd_short_line_gets_empty_fields() -> None:
    (entry,) = parse_passwd("short:x:5:6\n")
    assert entry == PasswdEntry("short", 5, 6, "", "", "")


def test_passwd_extra_fields_are_ignored() -> None:
    (entry,) = parse_passwd("odd:x:7:8:g:/h:/s:more:fields\n")
    assert (entry.uid, entry.gid, entry.home, entry.shell) == (7, 8, "/h", "/s")


@pytest.mark.parametrize(
    "line",
    [
        "nouid:x::0:::",  # empty uid must not read as root
        "baduid:x:abc:0:::",
        "neg:x:-1:0:::",
        "space:x: 5:0:::",
        "plus:x:+5:0:::",
        "toolong:x:4294967295:0:::",  # (uid_t) -1
        "nogid:x:5::::",
        ":x:5:5:::",  # no name
        "two:fields",
        "justname",
    ],
)
def test_passwd_malformed_lines_are_skipped(line: str) -> None:
    assert parse_passwd(line + "\n") == ()


def test_passwd_crlf_and_no_final_newline() -> None:
    entries = parse_passwd("a:x:1:1::/a:/bin/sh\r\nb:x:2:2::/b:/bin/sh")
    assert [(e.name, e.uid) for e in entries] == [("a", 1), ("b", 2)]


def test_group_members_are_split_and_stripped() -> None:
    groups = {g.name: g for g in parse_group(GROUP)}
    assert groups["wheel"] == GroupEntry("wheel", 10, ("app", "someone"))
    assert groups["extra"].members == ("app", "other")
    assert groups["empty"].members == ()


def test_group_short_and_malformed_lines() -> None:
    text = "short:x:9\nbad:x:nine:\n# c\n:x:1:\nok:x:4:a\n"
    assert parse_group(text) == (GroupEntry("short", 9, ()), GroupEntry("ok", 4, ("a",)))


def test_empty_databases() -> None:
    assert parse_passwd("") == ()
    assert parse_group("") == ()


# --- resolving --------------------------------------------------------------------------------


@pytest.fixture
def passwd() -> tuple[PasswdEntry, ...]:
    return parse_passwd(PASSWD)


@pytest.fixture
def groups() -> tuple[GroupEntry, ...]:
    return parse_group(GROUP)


def test_name_gets_entry_and_its_groups(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("app", passwd=passwd, groups=groups)
    assert user == ExecUser(1000, 1000, (10, 2000), "/home/app", "app")


def test_numeric_uid_matches_entry_by_uid(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("1000", passwd=passwd, groups=groups)
    assert (user.uid, user.gid, user.home, user.name) == (1000, 1000, "/home/app", "app")
    assert user.supplementary_gids == (10, 2000)


def test_numeric_uid_without_entry_is_valid_with_defaults(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    assert resolve_user("4242", passwd=passwd, groups=groups) == ExecUser(4242, 0, (), "/", None)


def test_explicit_numeric_group_and_no_supplementary_groups(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("app:4000", passwd=passwd, groups=groups)
    assert (user.uid, user.gid, user.supplementary_gids) == (1000, 4000, ())


def test_explicit_group_name(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("1000:wheel", passwd=passwd, groups=groups)
    assert (user.uid, user.gid, user.supplementary_gids) == (1000, 10, ())


def test_oci_numeric_form_keeps_given_ids(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("0:0", passwd=passwd, groups=groups, additional_gids=(5, 6))
    assert user == ExecUser(0, 0, (5, 6), "/root", "root")


def test_additional_gids_are_appended_without_duplicates(
    passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    user = resolve_user("app", passwd=passwd, groups=groups, additional_gids=(2000, 7, 7))
    assert user.supplementary_gids == (10, 2000, 7)


def test_empty_home_field_means_root_dir(passwd: tuple[PasswdEntry, ...]) -> None:
    assert resolve_user("nohome", passwd=passwd).home == DEFAULT_HOME


def test_empty_user_is_root(passwd: tuple[PasswdEntry, ...]) -> None:
    assert resolve_user("", passwd=passwd) == ExecUser(0, 0, (), "/root", "root")


def test_missing_databases_default_to_root() -> None:
    assert resolve_user("0") == ExecUser(0, 0, (), "/", None)
    assert resolve_user("") == ExecUser(0, 0, (), "/", None)
    assert resolve_user("123:456") == ExecUser(123, 456, (), "/", None)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("ghost", "unable to find user 'ghost'"),
        ("app:ghosts", "unable to find group 'ghosts'"),
        ("app:", "the group after ':' is empty"),
        ("a:b:c", "expected user[:group]"),
        (f"{MAX_ID + 1}", "out of range"),
        (f"0:{MAX_ID + 1}", "out of range"),
        ("-1", "unable to find user '-1'"),
    ],
)
def test_lookup_errors_name_the_problem(
    spec: str, fragment: str, passwd: tuple[PasswdEntry, ...], groups: tuple[GroupEntry, ...]
) -> None:
    with pytest.raises(UserLookupError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        resolve_user(spec, passwd=passwd, groups=groups)


def test_name_lookup_without_passwd_file_fails() -> None:
    with pytest.raises(UserLookupError, match="unable to find user 'root'"):
        resolve_user("root")


def test_numeric_name_is_matched_by_uid_not_by_name() -> None:
    passwd = parse_passwd("1000:x:5:5::/five:/bin/sh\nreal:x:1000:1000::/real:/bin/sh\n")
    assert resolve_user("1000", passwd=passwd).home == "/real"


def test_first_matching_entry_wins() -> None:
    passwd = parse_passwd("dup:x:1:1::/first:/bin/sh\ndup:x:2:2::/second:/bin/sh\n")
    assert resolve_user("dup", passwd=passwd).uid == 1


# --- reading inside a root --------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "etc").mkdir()
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def test_read_database_reads_the_file(root: int, tmp_path: Path) -> None:
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    assert read_database(root, "/etc/passwd") == PASSWD


def test_read_database_missing_is_none(root: int, tmp_path: Path) -> None:
    assert read_database(root, "/etc/passwd") is None
    (tmp_path / "etc").rmdir()
    (tmp_path / "etc").write_text("not a directory")
    assert read_database(root, "/etc/passwd") is None


def test_read_database_symlink_stays_in_the_root(root: int, tmp_path: Path) -> None:
    # An absolute link resolves inside the root, not on the host.
    (tmp_path / "etc" / "real").write_text("inside:x:1:1::/:/bin/sh\n")
    (tmp_path / "etc" / "passwd").symlink_to("/etc/real")
    assert read_database(root, "/etc/passwd") == "inside:x:1:1::/:/bin/sh\n"
    (tmp_path / "etc" / "group").symlink_to("../../../../../../etc/hostname")
    assert read_database(root, "/etc/group") is None


def test_read_database_refuses_a_fifo(root: int, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "etc" / "passwd")
    with pytest.raises(UserLookupError, match="not a regular file"):
        read_database(root, "/etc/passwd")


def test_read_database_refuses_a_directory(root: int, tmp_path: Path) -> None:
    (tmp_path / "etc" / "group").mkdir()
    with pytest.raises((UserLookupError, IsADirectoryError)):
        read_database(root, "/etc/group")


def test_read_database_size_limit(
    root: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc" / "passwd").write_text("x" * 100)
    monkeypatch.setattr(users, "MAX_DATABASE_BYTES", 10)
    with pytest.raises(UserLookupError, match="larger than 10"):
        read_database(root, "/etc/passwd")
