"""Namespace kinds of gantry.linux.ns and their names (no kernel calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gantry.linux import ns
from gantry.linux.ns import Namespace


def test_proc_and_oci_names() -> None:
    assert {kind.proc_name for kind in Namespace} == {
        "mnt",
        "uts",
        "ipc",
        "net",
        "pid",
        "user",
        "cgroup",
        "time",
    }
    assert {kind.oci_name for kind in Namespace} == {
        "mount",
        "uts",
        "ipc",
        "network",
        "pid",
        "user",
        "cgroup",
        "time",
    }
    assert Namespace("mnt") is Namespace.MOUNT


@pytest.mark.parametrize("kind", list(Namespace))
def test_from_oci_round_trips(kind: Namespace) -> None:
    assert Namespace.from_oci(kind.oci_name) is kind


def test_from_oci_names_the_unknown_type() -> None:
    with pytest.raises(ValueError, match="'net'"):
        Namespace.from_oci("net")


def test_flags() -> None:
    assert Namespace.MOUNT.flag == ns.CLONE_NEWNS == 0x20000
    assert Namespace.NET.flag == 0x40000000
    assert Namespace.TIME.flag == 0x80
    flags = ns.flags_of([Namespace.MOUNT, Namespace.UTS, Namespace.PID])
    assert flags == ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWPID
    assert Namespace.from_flags(flags) == {Namespace.MOUNT, Namespace.UTS, Namespace.PID}
    assert Namespace.from_flags(ns.CLONE_FS | ns.CLONE_FILES) == frozenset()
    assert len({kind.flag for kind in Namespace}) == len(Namespace)


def test_ns_path() -> None:
    assert ns.ns_path(42, Namespace.NET) == Path("/proc/42/ns/net")
    assert ns.ns_path("thread-self", Namespace.MOUNT) == Path("/proc/thread-self/ns/mnt")
