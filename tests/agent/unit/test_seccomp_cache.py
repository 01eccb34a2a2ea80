"""The compiled-program cache of gantry.runtime.seccomp: equal sections compile once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from gantry.runtime import seccomp
from gantry.runtime.defaults import DEFAULT_CAPABILITIES
from gantry.runtime.seccomp_default import default_seccomp


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    seccomp.clear_cache()
    yield
    seccomp.clear_cache()


def test_an_equal_section_is_compiled_once() -> None:
    first, warnings = seccomp.compile_seccomp(
        default_seccomp(DEFAULT_CAPABILITIES), machine="x86_64"
    )
    assert seccomp.cached_programs() == 1
    # A new but equal value (the profile resolved again) finds the same program.
    again, again_warnings = seccomp.compile_seccomp(
        default_seccomp(DEFAULT_CAPABILITIES), machine="x86_64"
    )
    assert seccomp.cached_programs() == 1
    assert (again, again_warnings) == (first, warnings)
    # The caller gets its own list: changing it does not change the cache.
    again.clear()
    assert (
        seccomp.compile_seccomp(default_seccomp(DEFAULT_CAPABILITIES), machine="x86_64")[0] == first
    )


def test_capabilities_machine_and_content_are_part_of_the_key() -> None:
    base = default_seccomp(DEFAULT_CAPABILITIES)
    program, _w = seccomp.compile_seccomp(base, machine="x86_64")
    admin, _w = seccomp.compile_seccomp(
        default_seccomp([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]), machine="x86_64"
    )
    arm, _w = seccomp.compile_seccomp(
        default_seccomp(DEFAULT_CAPABILITIES, machine="aarch64"), machine="aarch64"
    )
    kill = dataclasses.replace(base, default_action="SCMP_ACT_KILL")
    killing, _w = seccomp.compile_seccomp(kill, machine="x86_64")
    assert seccomp.cached_programs() == 4
    assert len({tuple(p) for p in (program, admin, arm, killing)}) == 4


def test_errors_are_not_cached() -> None:
    notify = dataclasses.replace(
        default_seccomp(DEFAULT_CAPABILITIES), default_action="SCMP_ACT_NOTIFY"
    )
    for _attempt in range(2):
        with pytest.raises(seccomp.SeccompError):
            seccomp.compile_seccomp(notify, machine="x86_64")
    assert seccomp.cached_programs() == 0
