"""Mount option parsing and flag translation of gantry.linux.mount (no kernel calls)."""

from __future__ import annotations

import ctypes
import os

import pytest
from gantry.linux import mount
from gantry.linux.mount import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_SLAVE,
    MS_STRICTATIME,
)


def test_kernel_constant_values() -> None:
    assert (MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC) == (1, 2, 4, 8)
    assert (MS_BIND, mount.MS_MOVE, MS_REC) == (4096, 8192, 16384)
    assert (MS_PRIVATE, MS_SLAVE, mount.MS_SHARED) == (1 << 18, 1 << 19, 1 << 20)
    assert (mount.MNT_FORCE, mount.MNT_DETACH, mount.MNT_EXPIRE) == (1, 2, 4)
    assert ctypes.sizeof(mount.MountAttr) == 32


def test_parse_options_the_oci_dev_mount() -> None:
    parsed = mount.parse_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert parsed.flags == MS_NOSUID | MS_STRICTATIME
    assert parsed.data == "mode=755,size=65536k"
    assert parsed.propagation == ()


def test_parse_options_bind_with_propagation_and_ro() -> None:
    parsed = mount.parse_options(["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"])
    assert parsed.flags == MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    assert parsed.propagation == (MS_PRIVATE | MS_REC,)
    assert parsed.data == ""


def test_later_options_win() -> None:
    parsed = mount.parse_options(["ro", "rw", "noexec", "exec", "suid"])
    assert parsed.flags == 0
    assert parsed.clear == MS_RDONLY | MS_NOEXEC | MS_NOSUID
    parsed = mount.parse_options(["rw", "ro"])
    assert parsed.flags == MS_RDONLY
    assert not parsed.clear & MS_RDONLY


def test_propagation_keeps_order_and_unknowns_go_to_data() -> None:
    parsed = mount.parse_options(["slave", "", "rshared", "lowerdir=/a:/b", "userxattr"])
    assert parsed.propagation == (MS_SLAVE, mount.MS_SHARED | MS_REC)
    assert parsed.data == "lowerdir=/a:/b,userxattr"


def test_statvfs_flags_translate_bit_by_bit() -> None:
    assert mount.ms_flags_from_statvfs(os.ST_RDONLY | os.ST_NOSUID | os.ST_RELATIME) == (
        MS_RDONLY | MS_NOSUID | MS_RELATIME
    )
    # ST_RELATIME (0x1000) is MS_BIND's value; it must never come out as MS_BIND.
    assert not mount.ms_flags_from_statvfs(os.ST_RELATIME) & MS_BIND
    assert mount.ms_flags_from_statvfs(os.ST_NOATIME) == mount.MS_NOATIME
    assert mount.ms_flags_from_statvfs(os.ST_NODEV | os.ST_NOEXEC) == (
        MS_NODEV | MS_NOEXEC | MS_STRICTATIME
    )


def test_set_propagation_rejects_a_non_propagation_flag() -> None:
    with pytest.raises(ValueError, match="propagation"):
        mount.set_propagation("/nonexistent", MS_BIND)
