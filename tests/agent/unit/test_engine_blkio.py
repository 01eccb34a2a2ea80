"""The block I/O fields of a container spec: canonical form, refusals naming the field, the
OCI ``blockIO`` they become, and the zero-rate entries an in-place update adds."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from gantry.engine import blkio
from gantry.engine.bundle import config_for
from gantry.engine.errors import Invalid
from gantry.engine.spec import normalise
from gantry.runtime.spec import BlockIO, Resources, ThrottleDevice


def _block_device() -> str | None:
    """A block device node of this host (none in some sandboxes)."""
    sys_block = Path("/sys/block")
    for entry in sorted(sys_block.iterdir()) if sys_block.is_dir() else []:
        node = Path("/dev") / entry.name
        try:
            if stat.S_ISBLK(node.stat().st_mode):
                return str(node)
        except OSError:
            continue
    return None


DEVICE = _block_device()
needs_device = pytest.mark.skipif(DEVICE is None, reason="this host shows no block device node")


@pytest.fixture
def fake_host_support(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """A host with both weight and throttling (this test's own answer, not the kernel's)."""
    support = {"weight": True, "throttle": True}
    monkeypatch.setattr(blkio, "host_support", lambda detected=None: dict(support))
    return support


def _resources(tmp_path: Path, **resources: Any) -> dict[str, Any]:
    return normalise(
        {"rootfs": str(tmp_path), "command": ["true"], "resources": resources}, name="b"
    )["resources"]


def test_defaults_are_unset_and_empty(tmp_path: Path) -> None:
    out = _resources(tmp_path)
    assert out["blkio_weight"] is None
    assert all(out[name] is None for name in blkio.DEVICE_FIELDS)
    # [] and absent mean the same, so they normalise the same
    assert _resources(tmp_path, device_read_bps=[])["device_read_bps"] is None
    assert "blockIO" not in config_for(_spec(tmp_path), "c1")["linux"]["resources"]


def _spec(tmp_path: Path, **resources: Any) -> dict[str, Any]:
    return normalise(
        {"rootfs": str(tmp_path), "command": ["true"], "resources": resources}, name="b"
    )


@needs_device
def test_devices_normalise_sorted_with_sizes_and_become_block_io(
    tmp_path: Path, fake_host_support: dict[str, bool]
) -> None:
    assert DEVICE is not None
    spec = _spec(
        tmp_path,
        device_read_bps=[{"path": DEVICE, "rate": "1m"}],
        device_write_bps=[{"path": DEVICE + "/", "rate": 2048}],
        device_read_iops=[{"path": DEVICE, "rate": 500}],
        blkio_weight=300,
    )
    res = spec["resources"]
    assert res["device_read_bps"] == [{"path": DEVICE, "rate": 1 << 20}]
    assert res["device_write_bps"] == [{"path": DEVICE, "rate": 2048}]
    assert res["blkio_weight"] == 300
    rdev = os.stat(DEVICE).st_rdev
    number = {"major": os.major(rdev), "minor": os.minor(rdev)}
    block_io = config_for(spec, "c1")["linux"]["resources"]["blockIO"]
    assert block_io == {
        "weight": 300,
        "throttleReadBpsDevice": [{**number, "rate": 1 << 20}],
        "throttleWriteBpsDevice": [{**number, "rate": 2048}],
        "throttleReadIOPSDevice": [{**number, "rate": 500}],
    }


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"blkio_weight": 5}, "spec.resources.blkio_weight"),
    ({"blkio_weight": 1001}, "spec.resources.blkio_weight"),
    ({"blkio_weight": "300"}, "spec.resources.blkio_weight"),
    (
        {"device_read_bps": [{"path": "/dev/null", "rate": "1m"}]},
        "spec.resources.device_read_bps[0].path",
    ),
    (
        {"device_read_iops": [{"path": "/nonexistent-gantry-device", "rate": 5}]},
        "spec.resources.device_read_iops[0].path",
    ),
    (
        {"device_write_bps": [{"path": "dev/sda", "rate": 5}]},
        "spec.resources.device_write_bps[0].path",
    ),
    ({"device_write_iops": [{"rate": 5}]}, "spec.resources.device_write_iops[0].path"),
    ({"device_write_iops": "/dev/sda:5"}, "spec.resources.device_write_iops"),
    (
        {"device_write_iops": [{"path": "/dev/null", "rate": 5, "x": 1}]},
        "spec.resources.device_write_iops[0].x",
    ),
]


@pytest.mark.parametrize(("resources", "field"), REFUSALS)
def test_refusals_name_the_field(
    tmp_path: Path, fake_host_support: dict[str, bool], resources: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as caught:
        _spec(tmp_path, **resources)
    assert caught.value.field == field


@needs_device
@pytest.mark.parametrize(
    ("name", "rate"),
    [("device_write_bps", "lots"), ("device_read_iops", "5"), ("device_read_iops", 0)],
)
def test_bad_rates_name_the_field(
    tmp_path: Path, fake_host_support: dict[str, bool], name: str, rate: Any
) -> None:
    with pytest.raises(Invalid) as caught:
        _spec(tmp_path, **{name: [{"path": DEVICE, "rate": rate}]})
    assert caught.value.field == f"spec.resources.{name}[0].rate"


@needs_device
def test_a_device_twice_is_refused(tmp_path: Path, fake_host_support: dict[str, bool]) -> None:
    with pytest.raises(Invalid, match="listed twice") as caught:
        _spec(tmp_path, device_read_iops=[{"path": DEVICE, "rate": 1}, {"path": DEVICE, "rate": 2}])
    assert caught.value.field == "spec.resources.device_read_iops[1].path"


@needs_device
def test_fake_host_without_weight_or_throttle_refuses_naming_the_field(
    tmp_path: Path, fake_host_support: dict[str, bool]
) -> None:
    fake_host_support.update(weight=False, throttle=False)
    with pytest.raises(Invalid, match="no block I/O weight") as weight:
        _spec(tmp_path, blkio_weight=300)
    assert weight.value.field == "spec.resources.blkio_weight"
    with pytest.raises(Invalid, match="no block I/O throttling") as throttle:
        _spec(tmp_path, device_write_iops=[{"path": DEVICE, "rate": 5}])
    assert throttle.value.field == "spec.resources.device_write_iops"
    # Empty lists ask for nothing, so a host without either takes them.
    assert _spec(tmp_path, device_read_iops=[])["resources"]["device_read_iops"] is None


@needs_device
def test_with_removals_lifts_each_dropped_device_with_rate_zero() -> None:
    assert DEVICE is not None
    rdev = os.stat(DEVICE).st_rdev
    kept = ThrottleDevice(major=os.major(rdev), minor=os.minor(rdev), rate=7)
    before = {
        "device_read_bps": [{"path": DEVICE, "rate": 5}],
        "device_write_iops": [{"path": DEVICE, "rate": 9}],
        "device_read_iops": [{"path": "/nonexistent-gantry-device", "rate": 1}],
    }
    after = {"device_read_bps": [{"path": DEVICE, "rate": 7}], "device_write_iops": []}
    resources = Resources(block_io=BlockIO(throttle_read_bps_device=(kept,)))
    out = blkio.with_removals(resources, before, after)
    assert out.block_io is not None
    assert out.block_io.throttle_read_bps_device == (kept,)
    assert out.block_io.throttle_write_iops_device == (
        ThrottleDevice(major=kept.major, minor=kept.minor, rate=0),
    )
    assert out.block_io.throttle_read_iops_device == ()  # a device that is gone: nothing
    assert blkio.with_removals(resources, after, after) is resources
