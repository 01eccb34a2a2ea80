"""Capability name tables and masks of gantry.linux.caps (no kernel calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.linux import caps


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("CAP_CHOWN", 0),
        ("CAP_KILL", 5),
        ("CAP_SETPCAP", 8),
        ("CAP_NET_BIND_SERVICE", 10),
        ("CAP_NET_RAW", 13),
        ("CAP_SYS_CHROOT", 18),
        ("CAP_SYS_ADMIN", 21),
        ("CAP_MKNOD", 27),
        ("CAP_AUDIT_WRITE", 29),
        ("CAP_SETFCAP", 31),
        ("CAP_AUDIT_READ", 37),
        ("CAP_PERFMON", 38),
        ("CAP_BPF", 39),
        ("CAP_CHECKPOINT_RESTORE", 40),
    ],
)
def test_numbers_match_the_kernel_header(name: str, number: int) -> None:
    assert caps.cap_number(name) == number
    assert caps.cap_name(number) == name


def test_table_is_complete_and_unique() -> None:
    assert len(caps.CAP_NAMES) == 41
    assert len(set(caps.CAP_NAMES)) == 41
    assert all(name.startswith("CAP_") for name in caps.CAP_NAMES)


@pytest.mark.parametrize("spelling", ["CAP_SYS_ADMIN", "SYS_ADMIN", "sys_admin", " cap_sys_admin "])
def test_cap_number_accepts_common_spellings(spelling: str) -> None:
    assert caps.cap_number(spelling) == 21


def test_numbers_past_the_table() -> None:
    assert caps.cap_name(41) == "CAP_41"
    assert caps.cap_number("CAP_41") == 41
    with pytest.raises(ValueError):
        caps.cap_name(-1)


@pytest.mark.parametrize("bad", ["CAP_NOPE", "", "CAP_", "ADMIN"])
def test_unknown_names_are_value_errors_naming_them(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown capability"):
        caps.cap_number(bad)


def test_known_caps_and_support_for_an_older_kernel() -> None:
    assert caps.known_caps(40) == caps.CAP_NAMES
    assert caps.known_caps(37)[-1] == "CAP_AUDIT_READ"
    assert caps.is_supported("CAP_AUDIT_READ", last=37)
    assert not caps.is_supported("CAP_PERFMON", last=37)


def test_last_cap_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "cap_last_cap"
    path.write_text("38\n")
    assert caps.last_cap(path) == 38


def test_masks_round_trip() -> None:
    docker_names = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID"]
    docker_names += ["SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL"]
    docker = caps.parse_names([*docker_names, "AUDIT_WRITE"])
    assert caps.to_mask(docker) == 0xA80425FB
    assert caps.from_mask(0xA80425FB) == docker
    assert caps.from_mask(0) == frozenset()
    assert caps.from_mask(caps.to_mask(range(41))) == frozenset(range(41))
    with pytest.raises(ValueError):
        caps.to_mask([64])


def test_parse_names_names_the_first_unknown() -> None:
    with pytest.raises(ValueError, match="CAP_BOGUS"):
        caps.parse_names(["CAP_CHOWN", "CAP_BOGUS"])


def test_capsets_are_values() -> None:
    a = caps.CapSets(frozenset({1}), frozenset({1, 2}))
    assert a == caps.CapSets(frozenset({1}), frozenset({2, 1}), frozenset())
    assert hash(a) == hash(caps.CapSets(frozenset({1}), frozenset({1, 2})))
