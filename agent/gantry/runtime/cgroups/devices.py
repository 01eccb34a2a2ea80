"""Device access rules: the spec's ``linux.resources.devices`` for v1 files and v2 BPF.

:func:`effective_rules` is the list a container really gets: the spec's rules in order,
then an ``rwm`` allow for each of the spec's ``linux.devices`` and for the devices every
container needs (``/dev/null``, ``zero``, ``full``, ``random``, ``urandom``, ``tty``,
``console``, ``ptmx`` and the pts slaves), as runc appends its allowed list. Unlike runc,
Gantry does not append a blanket ``mknod`` allow for every device: a denied device
cannot be created either.

On v1 each rule becomes a ``devices.allow``/``devices.deny`` line. On v2 there are no
device files: :func:`program` builds a ``BPF_CGROUP_DEVICE`` program from the rules,
:func:`attach_program` loads it and attaches it with ``BPF_F_ALLOW_MULTI`` (as runc), then
detaches the programs it replaces. Rules are matched last-first: the last rule that
matches a device and covers the access asked for decides; nothing matching means deny.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gantry.linux import bpf
from gantry.linux.bpf import Insn
from gantry.runtime.cgroups.convert import FULL_ACCESS, v1_device_rule
from gantry.runtime.spec import Device
from gantry.runtime.spec import DeviceRule as SpecDeviceRule

__all__ = [
    "ALWAYS_ALLOWED",
    "DeviceRule",
    "attach_program",
    "effective_rules",
    "program",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceRule:
    """One access rule. ``kind`` is ``a`` (all), ``c`` or ``b``; ``None`` numbers are ``*``."""

    allow: bool
    kind: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = FULL_ACCESS

    @property
    def is_everything(self) -> bool:
        """True for ``a *:* rwm``: the rule that sets the default for every device."""
        return (
            self.kind == "a"
            and self.major is None
            and self.minor is None
            and set(self.access) == set(FULL_ACCESS)
        )

    def v1_lines(self) -> tuple[str, ...]:
        """The v1 lines for this rule. ``a`` with numbers or part of the access is written
        as a ``c`` and a ``b`` line, since the kernel reads a bare ``a`` as everything."""
        if self.is_everything:
            return ("a",)
        kinds = ("c", "b") if self.kind == "a" else (self.kind,)
        return tuple(v1_device_rule(k, self.major, self.minor, self.access) for k in kinds)


def _number(value: int | None) -> int | None:
    return None if value is None or value < 0 else value


def _char(major: int, minor: int | None) -> DeviceRule:
    return DeviceRule(allow=True, kind="c", major=major, minor=minor)


ALWAYS_ALLOWED: Final[tuple[DeviceRule, ...]] = (
    _char(1, 3),  # null
    _char(1, 5),  # zero
    _char(1, 7),  # full
    _char(1, 8),  # random
    _char(1, 9),  # urandom
    _char(5, 0),  # tty
    _char(5, 1),  # console
    _char(5, 2),  # ptmx
    _char(136, None),  # pts/*
)


def effective_rules(
    rules: Iterable[SpecDeviceRule], devices: Iterable[Device] = ()
) -> tuple[DeviceRule, ...]:
    """The spec's rules, then allows for its ``linux.devices`` and :data:`ALWAYS_ALLOWED`."""
    found = [
        DeviceRule(
            allow=rule.allow,
            kind=rule.type or "a",
            major=_number(rule.major),
            minor=_number(rule.minor),
            access=rule.access or FULL_ACCESS,
        )
        for rule in rules
    ]
    for device in devices:
        if device.type in ("c", "u", "b"):
            kind = "b" if device.type == "b" else "c"
            found.append(DeviceRule(True, kind, _number(device.major), _number(device.minor)))
    found.extend(rule for rule in ALWAYS_ALLOWED if rule not in found)
    return tuple(found)


# --- the BPF program --------------------------------------------------------------------------

# Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
_LDX_W: Final = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_AND32_K: Final = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K: Final = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV32_X: Final = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_MOV64_K: Final = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K: Final = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_EXIT: Final = 0x95  # BPF_JMP | BPF_EXIT

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }: access_type is
# (access << 16) | type.
_DEV_BLOCK: Final = 1  # BPF_DEVCG_DEV_BLOCK
_DEV_CHAR: Final = 2  # BPF_DEVCG_DEV_CHAR
_ACCESS_BITS: Final = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# Registers after the prologue: r2 type, r3 access, r4 major, r5 minor.
_R0, _R1, _R2, _R3, _R4, _R5 = range(6)

_PROLOGUE: Final = (
    Insn(_LDX_W, dst=_R2, src=_R1, off=0),
    Insn(_AND32_K, dst=_R2, imm=0xFFFF),
    Insn(_LDX_W, dst=_R3, src=_R1, off=0),
    Insn(_RSH32_K, dst=_R3, imm=16),
    Insn(_LDX_W, dst=_R4, src=_R1, off=4),
    Insn(_LDX_W, dst=_R5, src=_R1, off=8),
)


def _access_mask(access: str) -> int:
    mask = 0
    for letter in access:
        mask |= _ACCESS_BITS[letter]
    return mask


def _block(rule: DeviceRule) -> list[Insn]:
    """The instructions of one rule: checks that jump past the block on a mismatch, then
    ``return allow``. Jump offsets are filled in once the block's length is known."""
    checks: list[Insn] = []
    if rule.kind != "a":
        checks.append(Insn(_JNE_K, dst=_R2, imm=_DEV_CHAR if rule.kind == "c" else _DEV_BLOCK))
    mask = _access_mask(rule.access)
    if mask != 0b111:
        # Asked-for access outside the rule's: the rule does not cover this request.
        checks.append(Insn(_MOV32_X, dst=_R1, src=_R3))
        checks.append(Insn(_AND32_K, dst=_R1, imm=~mask & 0xFFFF))
        checks.append(Insn(_JNE_K, dst=_R1, imm=0))
    if rule.major is not None:
        checks.append(Insn(_JNE_K, dst=_R4, imm=rule.major))
    if rule.minor is not None:
        checks.append(Insn(_JNE_K, dst=_R5, imm=rule.minor))
    tail = [Insn(_MOV64_K, dst=_R0, imm=1 if rule.allow else 0), Insn(_EXIT)]
    length = len(checks) + len(tail)
    block = []
    for index, insn in enumerate(checks):
        if insn.code == _JNE_K:
            insn = Insn(insn.code, insn.dst, insn.src, off=length - index - 1, imm=insn.imm)
        block.append(insn)
    return block + tail


def program(rules: Sequence[DeviceRule]) -> tuple[Insn, ...]:
    """The device program for ``rules``: 1 (allow) or 0 (deny) per access."""
    body: list[Insn] = list(_PROLOGUE)
    for rule in reversed(rules):
        body.extend(_block(rule))
        if (
            rule.kind == "a"
            and rule.major is None
            and rule.minor is None
            and (_access_mask(rule.access) == 0b111)
        ):
            return tuple(body)  # matches everything: the rules before it can never decide
    body.extend((Insn(_MOV64_K, dst=_R0, imm=0), Insn(_EXIT)))
    return tuple(body)


def attach_program(directory: Path, rules: Sequence[DeviceRule]) -> None:
    """Load the program for ``rules`` and make it the device program of the v2 cgroup at
    ``directory``: attached first, then the ones attached before it detached, so there is
    no moment without a program."""
    prog_fd = bpf.load(program(rules))
    try:
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            old_ids = bpf.query(cgroup_fd)
            bpf.attach(cgroup_fd, prog_fd)
            for prog_id in old_ids:
                try:
                    old_fd = bpf.prog_fd_by_id(prog_id)
                except OSError as exc:
                    _log.warning(
                        "%s: cannot open old device program %d: %s", directory, prog_id, exc
                    )
                    continue
                try:
                    bpf.detach(cgroup_fd, old_fd)
                finally:
                    os.close(old_fd)
        finally:
            os.close(cgroup_fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(prog_fd)


def attached(directory: Path) -> list[int]:
    """The ids of the device programs attached to the v2 cgroup at ``directory``."""
    cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return bpf.query(cgroup_fd)
    finally:
        os.close(cgroup_fd)
