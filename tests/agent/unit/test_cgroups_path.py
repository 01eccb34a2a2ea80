"""Resolving ``linux.cgroupsPath`` to the cgroup a container goes into."""

from __future__ import annotations

import pytest
from gantry.runtime.cgroups.path import (
    DEFAULT_PARENT,
    CgroupsPathError,
    cgroup_path_for,
    normalize_cgroup,
    resolve_cgroups_path,
)
from gantry.runtime.spec import Linux, Root, Spec, SpecError


@pytest.mark.parametrize(
    ("cgroups_path", "parent", "expected"),
    [
        (None, DEFAULT_PARENT, "/gantry/c1"),
        (None, "/fleet/containers", "/fleet/containers/c1"),
        (None, "/", "/c1"),
        ("/a/b", DEFAULT_PARENT, "/a/b"),
        ("/a//b/", DEFAULT_PARENT, "/a/b"),
        ("//a/./b", DEFAULT_PARENT, "/a/b"),
        ("a/b", DEFAULT_PARENT, "/gantry/a/b"),
        ("./a", DEFAULT_PARENT, "/gantry/a"),
        ("web", "/fleet/", "/fleet/web"),
        ("web", "/", "/web"),
    ],
)
def test_resolution_table(cgroups_path: str | None, parent: str, expected: str) -> None:
    assert resolve_cgroups_path(cgroups_path, "c1", parent=parent) == expected


@pytest.mark.parametrize(
    ("cgroups_path", "message"),
    [
        ("system.slice:gantry:c1", "systemd"),
        (":gantry:c1", "systemd"),
        ("machine.slice:docker:abc", "slice:prefix:name"),
        ("", "below the hierarchy root"),
        ("/", "below the hierarchy root"),
        ("//", "below the hierarchy root"),
        ("/a/../b", "'..'"),
        ("../escape", "'..'"),
    ],
)
def test_refusals_name_the_field(cgroups_path: str, message: str) -> None:
    with pytest.raises(CgroupsPathError) as err:
        resolve_cgroups_path(cgroups_path, "c1")
    assert isinstance(err.value, SpecError)
    assert err.value.errors[0][0] == "linux.cgroupsPath"
    assert "linux.cgroupsPath" in str(err.value)
    assert message in str(err.value)


def test_systemd_form_says_there_is_no_systemd_driver() -> None:
    with pytest.raises(CgroupsPathError) as err:
        resolve_cgroups_path("system.slice:gantry:c1", "c1")
    text = str(err.value)
    assert "'system.slice:gantry:c1'" in text
    assert "systemd" in text
    assert "writes cgroupfs itself" in text
    assert "/gantry/web" in text  # and what to write instead


@pytest.mark.parametrize("container_id", ["", "a/b", ".", ".."])
def test_an_id_that_cannot_name_a_cgroup(container_id: str) -> None:
    with pytest.raises(ValueError, match="cannot name a cgroup"):
        resolve_cgroups_path(None, container_id)


@pytest.mark.parametrize("parent", ["gantry", "/gantry/../x", ""])
def test_a_bad_parent(parent: str) -> None:
    with pytest.raises(ValueError, match="cgroup path"):
        resolve_cgroups_path(None, "c1", parent=parent)


def test_normalize_cgroup() -> None:
    assert normalize_cgroup("/a/b/") == "/a/b"
    assert normalize_cgroup("///a") == "/a"
    for bad in ("a", "/", "/a/.."):
        with pytest.raises(ValueError):
            normalize_cgroup(bad)


def _spec(linux: Linux | None) -> Spec:
    return Spec(oci_version="1.2.0", root=Root(path="rootfs"), linux=linux)


def test_from_a_spec() -> None:
    assert cgroup_path_for(_spec(None), "c1") == "/gantry/c1"
    assert cgroup_path_for(_spec(Linux()), "c1") == "/gantry/c1"
    assert cgroup_path_for(_spec(Linux(cgroups_path="tier/c1")), "x") == "/gantry/tier/c1"
    with pytest.raises(CgroupsPathError, match=r"linux\.cgroupsPath"):
        cgroup_path_for(_spec(Linux(cgroups_path="a.slice:p:n")), "c1")
