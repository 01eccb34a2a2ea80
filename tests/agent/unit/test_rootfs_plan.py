"""gantry.runtime.rootfs, the pure part: option parsing and the mount plan."""

from __future__ import annotations

from typing import Any

import pytest
from gantry.linux import mount as m
from gantry.runtime.defaults import default_config, default_spec
from gantry.runtime.rootfs import (
    PER_MOUNT_FLAGS,
    MountStep,
    ParsedOptions,
    RootfsError,
    binds_dev,
    parse_mount_options,
    plan_mount,
    plan_mounts,
    proc_destination_problem,
)
from gantry.runtime.spec import Mount, Spec, load_spec

# --- options ----------------------------------------------------------------------------------

FLAG_TABLE = [
    ("ro", m.MS_RDONLY, 0),
    ("rw", 0, m.MS_RDONLY),
    ("nosuid", m.MS_NOSUID, 0),
    ("suid", 0, m.MS_NOSUID),
    ("nodev", m.MS_NODEV, 0),
    ("dev", 0, m.MS_NODEV),
    ("noexec", m.MS_NOEXEC, 0),
    ("exec", 0, m.MS_NOEXEC),
    ("sync", m.MS_SYNCHRONOUS, 0),
    ("async", 0, m.MS_SYNCHRONOUS),
    ("remount", m.MS_REMOUNT, 0),
    ("mand", m.MS_MANDLOCK, 0),
    ("nomand", 0, m.MS_MANDLOCK),
    ("dirsync", m.MS_DIRSYNC, 0),
    ("noatime", m.MS_NOATIME, 0),
    ("atime", 0, m.MS_NOATIME),
    ("nodiratime", m.MS_NODIRATIME, 0),
    ("diratime", 0, m.MS_NODIRATIME),
    ("relatime", m.MS_RELATIME, 0),
    ("norelatime", 0, m.MS_RELATIME),
    ("strictatime", m.MS_STRICTATIME, 0),
    ("nostrictatime", 0, m.MS_STRICTATIME),
    ("bind", m.MS_BIND, 0),
    ("rbind", m.MS_BIND | m.MS_REC, 0),
]

PROPAGATION_TABLE = [
    ("private", m.MS_PRIVATE),
    ("rprivate", m.MS_PRIVATE | m.MS_REC),
    ("shared", m.MS_SHARED),
    ("rshared", m.MS_SHARED | m.MS_REC),
    ("slave", m.MS_SLAVE),
    ("rslave", m.MS_SLAVE | m.MS_REC),
    ("unbindable", m.MS_UNBINDABLE),
    ("runbindable", m.MS_UNBINDABLE | m.MS_REC),
]


@pytest.mark.parametrize(("option", "flags", "clear"), FLAG_TABLE)
def test_flag_options(option: str, flags: int, clear: int) -> None:
    assert parse_mount_options([option]) == ParsedOptions(flags=flags, clear=clear)


@pytest.mark.parametrize(("option", "propagation"), PROPAGATION_TABLE)
def test_propagation_options(option: str, propagation: int) -> None:
    assert parse_mount_options([option]) == ParsedOptions(propagation=(propagation,))


def test_propagation_changes_keep_their_order() -> None:
    parsed = parse_mount_options(["rshared", "bind", "slave"])
    assert parsed.propagation == (m.MS_SHARED | m.MS_REC, m.MS_SLAVE)
    assert parsed.flags == m.MS_BIND


def test_unknown_options_are_data_in_order() -> None:
    parsed = parse_mount_options(["nosuid", "mode=755", "size=65536k", "ro", "uid=5"])
    assert parsed.flags == m.MS_NOSUID | m.MS_RDONLY
    assert parsed.data == "mode=755,size=65536k,uid=5"


def test_later_options_win() -> None:
    assert parse_mount_options(["ro", "rw"]).flags & m.MS_RDONLY == 0
    assert parse_mount_options(["ro", "rw"]).clear == m.MS_RDONLY
    assert parse_mount_options(["rw", "ro"]) == ParsedOptions(flags=m.MS_RDONLY)


@pytest.mark.parametrize(
    ("options", "attr_set", "attr_clr"),
    [
        (["rro"], m.MOUNT_ATTR_RDONLY, 0),
        (["rro", "rrw"], 0, m.MOUNT_ATTR_RDONLY),
        (["rnosuid", "rnodev", "rnoexec"], 0x2 | 0x4 | 0x8, 0),
        (["rnoatime"], m.MOUNT_ATTR_NOATIME, m.MOUNT_ATTR__ATIME),
        # Switching atime mode keeps the whole atime field in attr_clr, as the kernel wants.
        (["rnoatime", "rstrictatime"], m.MOUNT_ATTR_STRICTATIME, m.MOUNT_ATTR__ATIME),
        (["rrelatime", "rnosymfollow"], m.MOUNT_ATTR_NOSYMFOLLOW, m.MOUNT_ATTR__ATIME),
    ],
)
def test_recursive_attributes(options: list[str], attr_set: int, attr_clr: int) -> None:
    parsed = parse_mount_options(options)
    assert (parsed.attr_set, parsed.attr_clr) == (attr_set, attr_clr)
    assert parsed.flags == 0
    assert parsed.data == ""


@pytest.mark.parametrize("option", ["tmpcopyup", "idmap", "ridmap"])
def test_unsupported_options_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        parse_mount_options(["nosuid", option])


# --- one mount's plan -------------------------------------------------------------------------


def _mount(**fields: Any) -> Mount:
    spec = load_spec(
        {"ociVersion": "1.2.1", "root": {"path": "rootfs"}, "mounts": [fields]},
    )
    return spec.mounts[0]


def test_tmpfs_plan() -> None:
    step = plan_mount(
        _mount(destination="/run//x/", type="tmpfs", source="tmpfs", options=["nosuid", "size=1m"]),
        4,
    )
    assert step == MountStep(
        index=4,
        destination="/run/x",
        fstype="tmpfs",
        source="tmpfs",
        flags=m.MS_NOSUID,
        data="size=1m",
    )
    assert step.name == "mounts[4]"
    assert not step.is_bind


def test_bind_plan_by_type_or_option() -> None:
    by_type = plan_mount(_mount(destination="/a", type="bind", source="/x"), 0)
    by_option = plan_mount(_mount(destination="/a", source="/x", options=["rbind", "ro"]), 0)
    assert by_type.is_bind and not by_type.recursive
    assert by_option.is_bind and by_option.recursive
    # MS_BIND and MS_REC are the bind's own business, not flags of a later remount.
    assert by_option.flags == m.MS_RDONLY
    assert by_option.flags & PER_MOUNT_FLAGS == m.MS_RDONLY


def test_bind_clear_flags_reach_the_plan() -> None:
    step = plan_mount(_mount(destination="/a", type="bind", source="/x", options=["rw", "suid"]), 0)
    assert step.clear == m.MS_RDONLY | m.MS_NOSUID


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"destination": "/run", "type": "tmpfs", "options": ["tmpcopyup"]}, "tmpcopyup"),
        ({"destination": "/a", "source": "/x"}, "needs a type"),
        ({"destination": "/a", "type": "bind"}, "needs a source"),
        ({"destination": "/proc", "type": "tmpfs"}, "only a procfs"),
        ({"destination": "/proc/", "type": "bind", "source": "/x"}, "only a procfs"),
        ({"destination": "/proc/sys/x", "type": "tmpfs"}, "inside /proc"),
        ({"destination": "/proc/meminfo", "type": "tmpfs"}, "inside /proc"),
        (
            {
                "destination": "/a",
                "type": "bind",
                "source": "/x",
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            },
            "idmapped",
        ),
    ],
)
def test_plan_refusals_name_the_mount(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RootfsError, match=message) as caught:
        plan_mount(_mount(**fields), 7)
    assert caught.value.step == "mounts[7]"
    assert caught.value.path == "/" + fields["destination"].strip("/")
    assert str(caught.value).startswith(f"rootfs: mounts[7]: {caught.value.path}: ")


@pytest.mark.parametrize(
    ("fstype", "destination", "allowed"),
    [
        ("proc", "/proc", True),
        ("proc", "proc", True),
        ("proc", "/run/proc", True),
        ("tmpfs", "/proc", False),
        ("bind", "/proc", False),
        ("bind", "/proc/meminfo", True),
        ("bind", "proc/cpuinfo", True),
        ("bind", "/proc/kcore", False),
        ("tmpfs", "/proc/uptime", False),
        ("proc", "/proc/sys", False),
        ("tmpfs", "/procfoo", True),
        ("tmpfs", "/", True),
    ],
)
def test_proc_rule(fstype: str, destination: str, allowed: bool) -> None:
    assert (proc_destination_problem(fstype, destination) is None) == allowed


def test_sysfs_is_read_only_without_a_network_namespace_of_its_own() -> None:
    sysfs = _mount(destination="/sys", type="sysfs", source="sysfs", options=["nosuid"])
    assert not plan_mount(sysfs, 0, private_network=True).flags & m.MS_RDONLY
    assert plan_mount(sysfs, 0, private_network=False).flags & m.MS_RDONLY


@pytest.mark.parametrize("fstype", ["cgroup", "cgroup2"])
def test_cgroup_is_read_only_unless_rw_is_explicit(fstype: str) -> None:
    plain = _mount(destination="/sys/fs/cgroup", type=fstype, options=["nosuid"])
    rw = _mount(destination="/sys/fs/cgroup", type=fstype, options=["rw"])
    assert plan_mount(plain, 0).flags & m.MS_RDONLY
    assert not plan_mount(rw, 0).flags & m.MS_RDONLY


def test_devpts_gets_a_new_instance_and_a_usable_ptmx() -> None:
    bare = plan_mount(_mount(destination="/dev/pts", type="devpts"), 0)
    assert bare.data == "newinstance,ptmxmode=0666"
    given = plan_mount(
        _mount(destination="/dev/pts", type="devpts", options=["ptmxmode=0600", "gid=5"]), 0
    )
    assert given.data == "ptmxmode=0600,gid=5,newinstance"


@pytest.mark.parametrize(
    ("fields", "later"),
    [
        ({"destination": "/run", "type": "tmpfs", "options": ["ro"]}, True),
        ({"destination": "/run", "type": "tmpfs"}, False),
        ({"destination": "/dev", "type": "tmpfs", "options": ["ro"]}, True),
        ({"destination": "/dev", "type": "bind", "source": "/x", "options": ["ro"]}, True),
        ({"destination": "/data", "type": "bind", "source": "/x", "options": ["ro"]}, False),
        ({"destination": "/sys", "type": "sysfs", "options": ["ro"]}, False),
    ],
)
def test_read_only_waits_for_tmpfs_and_dev(fields: dict[str, Any], later: bool) -> None:
    step = plan_mount(_mount(**fields), 0)
    assert step.readonly_later == later
    assert bool(step.flags_now & m.MS_RDONLY) == (bool(step.flags & m.MS_RDONLY) and not later)


# --- the whole plan ---------------------------------------------------------------------------


def _spec(mounts: list[dict[str, Any]], **linux: Any) -> Spec:
    config = default_config(["/bin/sh"], "rootfs")
    config["mounts"] = mounts
    config["linux"].update(linux)
    return load_spec(config)


def test_default_spec_plan_keeps_the_spec_order() -> None:
    steps = plan_mounts(default_spec(["/bin/sh"], "rootfs"))
    assert [(s.destination, s.fstype) for s in steps] == [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
    ]
    assert [s.index for s in steps] == list(range(7))
    assert all(s.flags & m.MS_RDONLY for s in steps[5:])
    assert not any(s.readonly_later for s in steps)
    assert not binds_dev(steps)


def test_plan_order_is_the_specs_even_when_a_parent_comes_later() -> None:
    # The runtime spec says mounts happen in order; a later /data hides /data/sub.
    steps = plan_mounts(
        _spec(
            [
                {"destination": "/data/sub", "type": "tmpfs"},
                {"destination": "/data", "type": "tmpfs"},
            ]
        )
    )
    assert [s.destination for s in steps] == ["/data/sub", "/data"]


def test_plan_without_a_network_namespace_makes_sysfs_read_only() -> None:
    namespaces = [{"type": kind} for kind in ("pid", "mount")]
    steps = plan_mounts(_spec([{"destination": "/sys", "type": "sysfs"}], namespaces=namespaces))
    assert steps[0].flags & m.MS_RDONLY
    joined_host = [*namespaces, {"type": "network", "path": "/proc/1/ns/net"}]
    steps = plan_mounts(_spec([{"destination": "/sys", "type": "sysfs"}], namespaces=joined_host))
    assert steps[0].flags & m.MS_RDONLY


def test_binds_dev() -> None:
    bound = plan_mounts(_spec([{"destination": "/dev/", "type": "bind", "source": "/dev"}]))
    assert binds_dev(bound)
    tmpfs = plan_mounts(_spec([{"destination": "/dev", "type": "tmpfs"}]))
    assert not binds_dev(tmpfs)


def test_a_bad_mount_anywhere_fails_the_whole_plan() -> None:
    spec = _spec(
        [
            {"destination": "/ok", "type": "tmpfs"},
            {"destination": "/bad", "type": "tmpfs", "options": ["tmpcopyup"]},
        ]
    )
    with pytest.raises(RootfsError) as caught:
        plan_mounts(spec)
    assert (caught.value.step, caught.value.path) == ("mounts[1]", "/bad")


def test_error_text() -> None:
    error = RootfsError("masked-paths", "/dev/null", "is not the null device", 0)
    assert str(error) == "rootfs: masked-paths: /dev/null: is not the null device"
    assert (error.step, error.path, error.errno) == ("masked-paths", "/dev/null", 0)
