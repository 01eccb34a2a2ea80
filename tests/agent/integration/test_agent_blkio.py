"""Block I/O limits through a real agent: the throttle files of the container's real v1
blkio cgroup after create and after an in-place change, and a weight refused on a kernel
without a weight file, naming the field and creating nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agent_support as ags
import pytest
import rootfs_support as rs
from gantry.engine import blkio

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

BLKIO = Path("/sys/fs/cgroup/blkio")
THROTTLE_FILES = {
    "device_read_bps": "blkio.throttle.read_bps_device",
    "device_write_bps": "blkio.throttle.write_bps_device",
    "device_read_iops": "blkio.throttle.read_iops_device",
    "device_write_iops": "blkio.throttle.write_iops_device",
}


def _whole_disk(number: str) -> str | None:
    """``/dev/<disk>`` of the block device ``major:minor`` (its disk, for a partition)."""
    sys_dev = Path("/sys/dev/block", number)
    if not sys_dev.exists():
        return None
    real = sys_dev.resolve()
    if (real / "partition").exists():
        real = real.parent
    node = Path("/dev", real.name)
    with_stat = node.stat() if node.exists() else None
    return str(node) if with_stat is not None and stat.S_ISBLK(with_stat.st_mode) else None


def host_block_device() -> str | None:
    """The disk of the root file system, else any disk node in /sys/block; None if none."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            found = _whole_disk(fields[2])
            if found:
                return found
    for entry in sorted(Path("/sys/block").iterdir()):
        found = _whole_disk(Path(entry, "dev").read_text().strip())
        if found:
            return found
    return None


DEVICE = host_block_device()


@pytest.fixture
def agent(no_leftovers: None) -> Iterator[ags.Agent]:
    if DEVICE is None:
        pytest.skip("this host has no block device node to throttle")
    if not (BLKIO / "blkio.throttle.read_bps_device").exists():
        pytest.skip("this host has no v1 blkio controller with throttling")
    with ags.running_agent() as (running, rootfs):
        running.rootfs = rootfs  # type: ignore[attr-defined]
        yield running


def sleeper(agent: ags.Agent, **resources: Any) -> dict[str, Any]:
    return {
        "rootfs": str(agent.rootfs),  # type: ignore[attr-defined]
        "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
        "resources": resources,
    }


def throttles(container: dict[str, Any]) -> dict[str, list[str]]:
    """Each throttle file of the container's blkio cgroup, as its lines."""
    directory = BLKIO / container["cgroup"].lstrip("/")
    return {
        name: (directory / file).read_text().split("\n")[:-1]
        for name, file in THROTTLE_FILES.items()
    }


def number(path: str) -> str:
    rdev = os.stat(path).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def test_throttles_are_written_and_change_in_place(agent: ags.Agent) -> None:
    assert DEVICE is not None
    dev = number(DEVICE)
    first = agent.put(
        "io",
        sleeper(
            agent,
            device_read_bps=[{"path": DEVICE, "rate": "1m"}],
            device_write_iops=[{"path": DEVICE, "rate": 300}],
        ),
    )
    container = first["container"]
    assert container["spec"]["resources"]["device_read_bps"] == [{"path": DEVICE, "rate": 1 << 20}]
    assert throttles(container) == {
        "device_read_bps": [f"{dev} {1 << 20}"],
        "device_write_bps": [],
        "device_read_iops": [],
        "device_write_iops": [f"{dev} 300"],
    }
    # A new rate, a new list and a dropped list: in place, the same process.
    wanted = sleeper(
        agent,
        device_read_bps=[{"path": DEVICE, "rate": "2m"}],
        device_read_iops=[{"path": DEVICE, "rate": 500}],
    )
    dry = agent.put("io", wanted, dry_run=True)
    assert dry["actions"] == ["update"]
    assert dry["diff"]["fields"] == [
        "spec.resources.device_read_bps",
        "spec.resources.device_read_iops",
        "spec.resources.device_write_iops",
    ]
    assert throttles(container)["device_read_bps"] == [f"{dev} {1 << 20}"]
    changed = agent.put("io", wanted)
    assert changed["actions"] == ["update"]
    assert changed["container"]["state"]["pid"] == container["state"]["pid"]
    assert throttles(changed["container"]) == {
        "device_read_bps": [f"{dev} {2 << 20}"],
        "device_write_bps": [],
        "device_read_iops": [f"{dev} 500"],
        "device_write_iops": [],
    }
    # The same spec again changes nothing.
    assert agent.put("io", wanted)["changed"] is False
    # Bad input names the field and leaves the limits as they are.
    bad = agent.error(
        "PUT",
        "/v1/containers/io",
        body={"spec": sleeper(agent, device_read_bps=[{"path": "/dev/null", "rate": "1m"}])},
    )
    assert bad.status == 422 and bad.field == "spec.resources.device_read_bps[0].path"
    assert throttles(changed["container"])["device_read_bps"] == [f"{dev} {2 << 20}"]


def test_a_restart_applies_the_stored_throttles_to_the_new_cgroup(agent: ags.Agent) -> None:
    assert DEVICE is not None
    agent.put("io2", sleeper(agent, device_write_bps=[{"path": DEVICE, "rate": 4096}]))
    restarted = agent.req("POST", "/v1/containers/io2/restart")
    assert throttles(restarted["container"])["device_write_bps"] == [f"{number(DEVICE)} 4096"]


@pytest.mark.skipif(
    blkio.host_support()["weight"], reason="this kernel has a blkio weight file (BFQ)"
)
def test_a_weight_is_refused_naming_the_field_on_a_kernel_without_one(agent: ags.Agent) -> None:
    for dry_run in (True, False):
        bad = agent.error(
            "PUT",
            "/v1/containers/weighted",
            body={"spec": sleeper(agent, blkio_weight=300), "dry_run": dry_run},
        )
        assert bad.status == 422 and bad.field == "spec.resources.blkio_weight"
        assert "BFQ" in bad.detail
    assert agent.error("GET", "/v1/containers/weighted").status == 404


def test_info_reports_what_this_kernel_can_do(agent: ags.Agent) -> None:
    features = agent.req("GET", "/v1/info")["features"]
    assert features["blkio_throttle"] is (BLKIO / "blkio.throttle.read_bps_device").exists()
    assert features["blkio_weight"] is (
        (BLKIO / "blkio.weight").exists() or (BLKIO / "blkio.bfq.weight").exists()
    )
