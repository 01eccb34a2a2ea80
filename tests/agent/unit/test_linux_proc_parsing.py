"""Pure parsing of /proc files by gantry.linux.proc (no kernel calls)."""

from __future__ import annotations

import pytest
from gantry.linux import proc

TAIL = (
    "R 13669 13669 7516 0 -1 4194304 102 0 0 0 7 3 0 0 20 0 1 0 296193 3133440 390 "
    "18446744073709551615 94133010792448 94133010812329 140727719041904 0 0 0 0 0 0 0 0 0 17 "
    "1 0 0 0 0 0 94133010828336 94133010829952 94134034968576 140727719045859 140727719045879 "
    "140727719045879 140727719047147 0\n"
)


@pytest.mark.parametrize(
    "comm",
    ["cat", "a b", "a) (b c", ")", "(", "x) R 1 2 3", "two\nlines", "", "((()))"],
)
def test_parse_stat_takes_comm_up_to_the_last_paren(comm: str) -> None:
    stat = proc.parse_stat(f"13671 ({comm}) {TAIL}")
    assert stat.comm == comm
    assert stat.pid == 13671
    assert stat.state == "R"
    assert (stat.ppid, stat.pgrp, stat.session, stat.tty_nr) == (13669, 13669, 7516, 0)
    assert stat.flags == 4194304
    assert (stat.utime, stat.stime) == (7, 3)
    assert stat.num_threads == 1
    assert stat.start_time == 296193


@pytest.mark.parametrize("line", ["", "13671 cat R 1", "13671 (cat) R 1 2 3", "x (cat) " + TAIL])
def test_parse_stat_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError):
        proc.parse_stat(line)


STATUS = """Name:\tgantry init
Umask:\t0022
State:\tS (sleeping)
Tgid:\t42
Ngid:\t0
Pid:\t43
PPid:\t1
TracerPid:\t0
Uid:\t0\t1000\t0\t1000
Gid:\t0\t0\t0\t0
FDSize:\t64
Groups:\t\x20
Threads:\t2
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t00000000a80425fb
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000400
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t3
Speculation_Store_Bypass:\tvulnerable
"""

DOCKER_DEFAULT = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}


def test_parse_status() -> None:
    status = proc.parse_status(STATUS)
    assert status.name == "gantry init"
    assert status.state == "S"
    assert (status.tgid, status.pid, status.ppid) == (42, 43, 1)
    assert status.uids == (0, 1000, 0, 1000)
    assert status.gids == (0, 0, 0, 0)
    assert status.groups == ()
    assert status.no_new_privs is True
    assert status.seccomp == 2
    assert status.seccomp_filters == 3
    assert status.cap_inh == frozenset()
    assert status.cap_eff == DOCKER_DEFAULT
    assert status.cap_prm == frozenset(range(41)) - {24}
    assert status.cap_bnd == frozenset(range(41))
    assert status.cap_amb == {10}
    assert status.raw["Speculation_Store_Bypass"] == "vulnerable"
    assert status.raw["Threads"] == "2"


def test_parse_status_on_an_older_kernel_without_seccomp_filters() -> None:
    text = STATUS.replace("Seccomp_filters:\t3\n", "").replace("NoNewPrivs:\t1\n", "")
    status = proc.parse_status(text)
    assert status.seccomp_filters is None
    assert status.no_new_privs is False


def test_parse_status_names_a_missing_field() -> None:
    with pytest.raises(ValueError, match="CapEff"):
        proc.parse_status(STATUS.replace("CapEff:\t00000000a80425fb\n", ""))


def test_status_values_are_comparable_and_hashable() -> None:
    assert proc.parse_status(STATUS) == proc.parse_status(STATUS + "Extra:\t1\n")
    assert hash(proc.parse_status(STATUS)) == hash(proc.parse_status(STATUS))


MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
31 27 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
60 27 0:40 / /mnt/with\040space\011tab rw,nosuid master:7 propagate_from:3 - tmpfs my\040src rw
61 27 0:41 /sub/dir /srv\134back ro,nodev shared:5 master:2 - fuse.sshfs host:/x\040y rw,user_id=0
62 27 0:42 / /mnt/un rw unbindable - tmpfs none rw
63 27 0:43 / /mnt/with\040space\011tab rw - tmpfs over rw
"""


def test_parse_mountinfo_fields_and_escapes() -> None:
    table = proc.parse_mountinfo(MOUNTINFO)
    assert len(table) == 7
    root = table[1]
    assert (root.mount_id, root.parent_id, root.major, root.minor) == (27, 1, 254, 0)
    assert (root.root, root.mount_point, root.fstype, root.source) == ("/", "/", "ext4", "/dev/vda")
    assert root.mount_options == ("rw", "relatime")
    assert root.super_options == ("rw", "discard")
    assert root.optional_fields == ("shared:1",)
    assert root.propagation == "shared"
    assert root.shared_group == 1

    spaced = table[3]
    assert spaced.mount_point == "/mnt/with space\ttab"
    assert spaced.source == "my src"
    assert spaced.optional_fields == ("master:7", "propagate_from:3")
    assert spaced.propagation == "slave"
    assert spaced.master_group == 7
    assert spaced.super_options == ("rw",)

    fuse = table[4]
    assert fuse.root == "/sub/dir"
    assert fuse.mount_point == "/srv\\back"
    assert fuse.fstype == "fuse.sshfs"
    assert fuse.source == "host:/x y"
    assert fuse.read_only
    assert fuse.propagation == "shared"
    assert (fuse.shared_group, fuse.master_group) == (5, 2)

    assert table[0].propagation == "private"
    assert table[5].propagation == "unbindable"
    assert not table[5].read_only


def test_find_mount_returns_the_topmost() -> None:
    table = proc.parse_mountinfo(MOUNTINFO)
    top = proc.find_mount(table, "/mnt/with space\ttab")
    assert top is not None and top.mount_id == 63
    assert proc.find_mount(table, "/nowhere") is None


@pytest.mark.parametrize(
    "line",
    [
        "22 27 0:21 / /proc rw,relatime proc proc rw",  # no separator
        "22 27 021 / /proc rw - proc proc rw",  # bad device
        "x 27 0:21 / /proc rw - proc proc rw",
        "22 27 0:21 / /proc rw -",
    ],
)
def test_parse_mountinfo_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="malformed mountinfo"):
        proc.parse_mountinfo_line(line)


def test_unescape_leaves_other_backslashes() -> None:
    assert proc.unescape(r"a\040b\012c\134d\x") == "a b\nc\\d\\x"
