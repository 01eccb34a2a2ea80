"""gantry.linux.caps against the real kernel; every change happens in a forked child."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import linux_support as support
import pytest
from gantry.linux import caps
from gantry.linux.caps import CapSets, cap_number
from gantry.linux.proc import read_status

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

CHOWN = cap_number("CAP_CHOWN")
KILL = cap_number("CAP_KILL")
NET_BIND = cap_number("CAP_NET_BIND_SERVICE")
SETPCAP = cap_number("CAP_SETPCAP")
SYS_ADMIN = cap_number("CAP_SYS_ADMIN")


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def test_last_cap_and_names_match_the_running_kernel() -> None:
    last = caps.last_cap()
    names = caps.known_caps()
    assert len(names) == last + 1
    assert caps.bounding_set() <= frozenset(range(last + 1))
    assert read_status().cap_bnd == caps.bounding_set()


def test_capget_agrees_with_proc_status() -> None:
    status = read_status()
    sets = caps.capget()
    assert (sets.effective, sets.permitted, sets.inheritable) == (
        status.cap_eff,
        status.cap_prm,
        status.cap_inh,
    )
    assert caps.capget(os.getpid()) == sets


def test_capset_drops_to_a_set_and_proc_status_shows_it() -> None:
    keep = frozenset({CHOWN, KILL, NET_BIND})

    def child() -> dict[str, list[int]]:
        caps.capset(CapSets(effective=keep, permitted=keep, inheritable=frozenset()))
        status = read_status()
        got = caps.capget()
        return {
            "eff": sorted(status.cap_eff),
            "prm": sorted(status.cap_prm),
            "inh": sorted(status.cap_inh),
            "capget_eff": sorted(got.effective),
        }

    seen = support.run_in_child(child)
    assert seen == {
        "eff": sorted(keep),
        "prm": sorted(keep),
        "inh": [],
        "capget_eff": sorted(keep),
    }
    assert read_status().cap_eff != keep  # the test process kept its own


def test_capset_cannot_raise_beyond_permitted() -> None:
    def child() -> int:
        only = frozenset({CHOWN})
        caps.capset(CapSets(only, only))
        try:
            caps.capset(CapSets(only | {KILL}, only | {KILL}))
        except OSError as exc:
            return exc.errno or -1
        return 0

    assert support.run_in_child(child) == errno.EPERM


def test_limit_bounding_keeps_only_the_given_caps() -> None:
    keep = frozenset({CHOWN, KILL, SETPCAP})

    def child() -> list[list[int]]:
        caps.limit_bounding(keep)
        return [sorted(caps.bounding_set()), sorted(read_status().cap_bnd)]

    assert support.run_in_child(child) == [sorted(keep), sorted(keep)]


def test_drop_bounding_removes_one() -> None:
    def child() -> list[bool]:
        caps.drop_bounding([SYS_ADMIN])
        return [SYS_ADMIN in caps.bounding_set(), SYS_ADMIN in read_status().cap_bnd]

    assert support.run_in_child(child) == [False, False]


def test_set_ambient_needs_and_gets_inheritable_caps() -> None:
    def child() -> list[list[int]]:
        current = caps.capget()
        caps.capset(CapSets(current.effective, current.permitted, frozenset({NET_BIND})))
        caps.set_ambient([NET_BIND])
        first = [sorted(caps.ambient_set()), sorted(read_status().cap_amb)]
        caps.set_ambient([])
        return [*first, sorted(read_status().cap_amb)]

    assert support.run_in_child(child) == [[NET_BIND], [NET_BIND], []]


def test_ambient_raise_of_a_non_inheritable_cap_is_eperm() -> None:
    def child() -> int:
        current = caps.capget()
        caps.capset(CapSets(current.effective, current.permitted, frozenset()))
        try:
            caps.set_ambient([KILL])
        except OSError as exc:
            return exc.errno or -1
        return 0

    assert support.run_in_child(child) == errno.EPERM
