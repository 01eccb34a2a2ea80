"""gantry.runtime.devices, the pure part: which nodes and links a container's /dev gets."""

from __future__ import annotations

from typing import Any

import pytest
from gantry.runtime.devices import (
    DEFAULT_DEVICES,
    DeviceNode,
    dev_symlinks,
    device_nodes,
    in_user_namespace,
)
from gantry.runtime.spec import Device, load_spec


def _devices(*entries: dict[str, Any]) -> tuple[Device, ...]:
    spec = load_spec(
        {"ociVersion": "1.2.1", "root": {"path": "rootfs"}, "linux": {"devices": list(entries)}}
    )
    assert spec.linux is not None
    return spec.linux.devices


def test_the_spec_required_defaults() -> None:
    assert [(n.path, n.kind, n.major, n.minor) for n in DEFAULT_DEVICES] == [
        ("/dev/null", "c", 1, 3),
        ("/dev/zero", "c", 1, 5),
        ("/dev/full", "c", 1, 7),
        ("/dev/random", "c", 1, 8),
        ("/dev/urandom", "c", 1, 9),
        ("/dev/tty", "c", 5, 0),
    ]
    assert all((n.mode, n.uid, n.gid) == (0o666, 0, 0) for n in DEFAULT_DEVICES)


def test_no_spec_devices_gives_the_defaults() -> None:
    assert device_nodes() == DEFAULT_DEVICES


def test_spec_devices_come_after_the_defaults() -> None:
    nodes = device_nodes(
        _devices(
            {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
            {
                "path": "/dev/sda",
                "type": "b",
                "major": 8,
                "minor": 0,
                "fileMode": 0o660,
                "uid": 0,
                "gid": 6,
            },
            {"path": "/dev/fifo", "type": "p"},
        )
    )
    assert nodes[: len(DEFAULT_DEVICES)] == DEFAULT_DEVICES
    assert nodes[len(DEFAULT_DEVICES) :] == (
        DeviceNode("/dev/net/tun", "c", 10, 200),
        DeviceNode("/dev/sda", "b", 8, 0, 0o660, 0, 6),
        DeviceNode("/dev/fifo", "p"),
    )


def test_a_spec_device_replaces_the_default_at_its_path() -> None:
    nodes = device_nodes(
        _devices({"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600})
    )
    assert [n.path for n in nodes].count("/dev/null") == 1
    assert nodes[-1] == DeviceNode("/dev/null", "c", 1, 3, 0o600)


def test_file_type_bits_in_file_mode_are_dropped() -> None:
    (node,) = device_nodes(
        _devices({"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o20644})
    )[-1:]
    assert node.mode == 0o644


def test_device_paths_are_normalised() -> None:
    nodes = device_nodes(
        _devices({"path": "/dev//net/./tun", "type": "c", "major": 10, "minor": 200})
    )
    assert nodes[-1].path == "/dev/net/tun"


@pytest.mark.parametrize(
    ("uid_map", "inside"),
    [
        ("         0          0 4294967295\n", False),
        ("0 0 4294967295", False),
        ("         0          0          1\n", True),
        ("0 100000 65536\n", True),
        ("0 0 1000\n1000 1000 1\n", True),
        ("", True),
    ],
)
def test_user_namespace_detection(uid_map: str, inside: bool) -> None:
    assert in_user_namespace(uid_map) == inside


def test_dev_links() -> None:
    links = dict(dev_symlinks(have_kcore=False))
    assert links == {
        "ptmx": "pts/ptmx",
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
    }
    assert dict(dev_symlinks(have_kcore=True))["core"] == "/proc/kcore"
