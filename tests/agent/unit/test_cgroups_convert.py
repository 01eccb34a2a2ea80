"""Conversions of OCI resource values to cgroup file contents, against runc's mapping, and
the device program's decisions (run through a small interpreter of the emitted BPF)."""

from __future__ import annotations

import struct

import pytest
from gantry.cli.runtime_cgroups import parse_duration, parse_size
from gantry.linux import bpf
from gantry.runtime.cgroups import convert as cv
from gantry.runtime.cgroups.devices import ALWAYS_ALLOWED, DeviceRule, effective_rules, program
from gantry.runtime.spec import Device, SpecError, load_resources
from gantry.runtime.spec import DeviceRule as SpecRule

# --- shares, weights, cpu.max, swap ---------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "weight"),
    # runc's own table (TestConvertCPUSharesToCgroupV2Value) and the clamps.
    [
        *[(0, 0), (1, 1), (2, 1), (3, 2), (10, 4), (512, 59), (1024, 100), (2048, 174)],
        *[(100000, 4340), (262143, 10000), (262144, 10000), (300000, 10000)],
    ],
)
def test_shares_to_weight_is_runcs_quadratic(shares: int, weight: int) -> None:
    assert cv.shares_to_weight(shares) == weight


def test_shares_to_weight_is_monotonic_over_the_range() -> None:
    weights = [cv.shares_to_weight(s) for s in range(2, 262145, 97)]
    assert weights == sorted(weights)
    assert max(weights) <= 10000
    assert min(weights) >= 1


@pytest.mark.parametrize(("blkio", "io"), [(0, 0), (10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight_is_linear(blkio: int, io: int) -> None:
    assert cv.blkio_to_io_weight(blkio) == io


@pytest.mark.parametrize(
    ("quota", "period", "text"),
    [
        (None, None, None),
        (0, 0, None),
        (20000, 100000, "20000 100000"),
        (20000, None, "20000"),
        (-1, None, "max"),
        (-1, 50000, "max 50000"),
        (None, 50000, "max 50000"),
    ],
)
def test_cpu_max(quota: int | None, period: int | None, text: str | None) -> None:
    assert cv.cpu_max(quota, period) == text


@pytest.mark.parametrize(
    ("swap", "memory", "v2"),
    [
        (None, None, 0),
        (0, -1, -1),  # unlimited memory, swap unsaid: unlimited swap too
        (-1, 1000, -1),
        (3000, 1000, 2000),
        (1000, 1000, 0),
    ],
)
def test_swap_v2_is_total_minus_memory(swap: int | None, memory: int | None, v2: int) -> None:
    assert cv.swap_v2(swap, memory) == v2


@pytest.mark.parametrize(
    ("swap", "memory", "message"),
    [
        (3000, None, "needs a memory limit"),
        (3000, -1, "needs a memory limit"),
        (500, 1000, "below"),
    ],
)
def test_swap_v2_refuses_what_v2_cannot_say(swap: int, memory: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cv.swap_v2(swap, memory)


@pytest.mark.parametrize(("value", "text"), [(None, None), (0, None), (-1, "max"), (42, "42")])
def test_limit_text(value: int | None, text: str | None) -> None:
    assert cv.limit_text(value) == text


@pytest.mark.parametrize(("kb", "name"), [(64, "64KB"), (2048, "2MB"), (1048576, "1GB")])
def test_hugepage_names_match_the_kernels_files(kb: int, name: str) -> None:
    assert cv.hugepage_name(kb) == name


def test_device_and_io_lines() -> None:
    assert cv.v1_device_rule("c", 1, 3, "rwm") == "c 1:3 rwm"
    assert cv.v1_device_rule("b", 8, None, "r") == "b 8:* r"
    assert cv.io_max_line(8, 0, "rbps", 1048576) == "8:0 rbps=1048576"
    assert cv.io_max_line(8, 0, "wiops", 0) == "8:0 wiops=max"
    assert cv.weight_device_line(8, 16, 500) == "8:16 500"


# --- device rules ------------------------------------------------------------------------------


def test_effective_rules_append_spec_devices_and_the_always_allowed() -> None:
    rules = effective_rules(
        [SpecRule(allow=False, access="rwm")],
        [Device(type="c", path="/dev/fuse", major=10, minor=229), Device(type="p", path="/dev/f")],
    )
    assert rules[0] == DeviceRule(False)
    assert rules[1] == DeviceRule(True, "c", 10, 229)
    assert rules[2:] == ALWAYS_ALLOWED


def test_v1_lines_of_rules() -> None:
    assert DeviceRule(False).v1_lines() == ("a",)
    assert DeviceRule(True, "a", None, None, "m").v1_lines() == ("c *:* m", "b *:* m")
    assert DeviceRule(True, "c", 1, 3, "rw").v1_lines() == ("c 1:3 rw",)


def _run(code: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """Interpret the subset of eBPF the device program uses, on one bpf_cgroup_dev_ctx."""
    ctx = struct.pack("<III", (access << 16) | kind, major, minor)
    regs = [0] * 11
    pc = 0
    mask32 = 0xFFFFFFFF
    steps = 0
    while True:
        steps += 1
        assert steps < 10000, "the program loops"
        op, regbyte, off, imm = struct.unpack_from("<BBhi", code, pc * 8)
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if op == 0x61:  # ldxw dst, [src+off] (src is the ctx pointer r1 at entry)
            assert src == 1
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == 0x54:
            regs[dst] = (regs[dst] & imm) & mask32
        elif op == 0x74:
            regs[dst] = (regs[dst] & mask32) >> imm
        elif op == 0xBC:
            regs[dst] = regs[src] & mask32
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0x55:
            if regs[dst] != (imm & 0xFFFFFFFFFFFFFFFF):
                pc += off
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


CHAR, BLOCK = 2, 1
MKNOD, READ, WRITE = 1, 2, 4


@pytest.mark.parametrize(
    ("kind", "access", "major", "minor", "allowed"),
    [
        (CHAR, READ | WRITE, 1, 3, 1),  # /dev/null: always allowed
        (CHAR, READ, 1, 1, 0),  # /dev/mem: denied by default
        (CHAR, MKNOD, 1, 1, 1),  # ... but its mknod allowed by the "m" rule
        (CHAR, READ, 10, 229, 1),  # fuse read allowed
        (CHAR, WRITE, 10, 229, 0),  # ... write not
        (CHAR, READ, 136, 7, 1),  # any pts
        (BLOCK, READ, 8, 0, 0),  # block devices: deny
        (BLOCK, READ, 8, 1, 0),  # a later deny of 8:1 wins over the earlier allow of b 8:*
        (BLOCK, READ, 8, 2, 1),  # the earlier allow b 8:* r
    ],
)
def test_device_program_decides_like_the_rules(
    kind: int, access: int, major: int, minor: int, allowed: int
) -> None:
    rules = (
        DeviceRule(False),
        DeviceRule(True, "c", 1, 1, "m"),
        DeviceRule(True, "c", 10, 229, "r"),
        DeviceRule(True, "b", 8, None, "r"),
        DeviceRule(False, "b", 8, 1, "rwm"),
        DeviceRule(False, "b", 8, 0, "rwm"),
        *ALWAYS_ALLOWED,
    )
    code = bpf.encode(program(rules))
    assert _run(code, kind, access, major, minor) == allowed


def test_device_program_stops_at_a_rule_matching_everything() -> None:
    rules = (DeviceRule(True, "c", 1, 1), DeviceRule(True))
    insns = program(rules)
    assert len(insns) == 6 + 2  # prologue, then "allow" and exit: the first rule is dead
    assert _run(bpf.encode(insns), BLOCK, READ, 8, 0) == 1


def test_device_program_denies_when_nothing_matches() -> None:
    assert _run(bpf.encode(program(())), CHAR, READ, 1, 3) == 0


# --- command-line values and the resources file --------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("-1", -1), ("32m", 32 << 20), ("1G", 1 << 30), ("512KiB", 512 << 10)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12x", "m", "1.5g"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("1m", 60.0), ("2", 2.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_load_resources_names_every_bad_field() -> None:
    with pytest.raises(SpecError) as caught:
        load_resources(
            {"memory": {"limit": -7}, "cpu": {"shares": 1, "cpus": "3-1"}, "pids": {"limit": "x"}},
            path="linux.resources",
        )
    fields = sorted(path for path, _message in caught.value.errors)
    assert fields == [
        "linux.resources.cpu.cpus",
        "linux.resources.cpu.shares",
        "linux.resources.memory.limit",
        "linux.resources.pids.limit",
    ]


def test_load_resources_reads_a_runc_update_file() -> None:
    resources = load_resources(
        {"memory": {"limit": 1 << 25, "swap": 1 << 26}, "cpu": {"quota": 20000, "period": 100000}}
    )
    assert resources.memory is not None and resources.memory.swap == 1 << 26
    assert resources.cpu is not None and resources.cpu.quota == 20000
