"""bpf(2) for cgroup device programs: load, attach, query, detach. No policy.

Only what a container runtime needs on cgroup v2: a ``BPF_PROG_TYPE_CGROUP_DEVICE``
program loaded from raw instructions and attached to a cgroup directory with
``BPF_F_ALLOW_MULTI`` (as runc does, so programs of a parent still apply), plus the query
and detach used to replace one. The ``union bpf_attr`` layouts are those of
include/uapi/linux/bpf.h; the kernel accepts a shorter attr than it knows, and requires
what it does not know to be zero.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gantry.linux._libc import syscall

__all__ = [
    "BPF_CGROUP_DEVICE",
    "BPF_F_ALLOW_MULTI",
    "BPF_PROG_TYPE_CGROUP_DEVICE",
    "Insn",
    "attach",
    "detach",
    "encode",
    "load",
    "prog_fd_by_id",
    "query",
]

# enum bpf_cmd
_PROG_LOAD: Final = 5
_PROG_ATTACH: Final = 8
_PROG_DETACH: Final = 9
_PROG_GET_FD_BY_ID: Final = 13
_PROG_QUERY: Final = 16

BPF_PROG_TYPE_CGROUP_DEVICE: Final = 15
BPF_CGROUP_DEVICE: Final = 6
"""enum bpf_attach_type: the device-access hook of a cgroup."""
BPF_F_ALLOW_MULTI: Final = 1 << 1

_ATTR_SIZE: Final = 128
_LOG_SIZE: Final = 1 << 16


@dataclass(frozen=True)
class Insn:
    """One ``struct bpf_insn``: opcode, registers, offset, immediate."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0


def encode(program: Sequence[Insn]) -> bytes:
    """The program as the kernel reads it (``struct bpf_insn`` little-endian, 8 bytes each)."""
    return b"".join(
        struct.pack("<BBhi", insn.code, (insn.src << 4) | insn.dst, insn.off, insn.imm)
        for insn in program
    )


def _syscall(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    return syscall("bpf", cmd, attr, len(attr))


def _attr() -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(_ATTR_SIZE)


def load(program: Sequence[Insn], *, license_text: str = "Apache") -> int:
    """Load a cgroup device program; return its fd (close-on-exec). The verifier's log is
    in the ``OSError`` message when the kernel refuses it."""
    code = ctypes.create_string_buffer(encode(program))
    lic = ctypes.create_string_buffer(license_text.encode())
    log = ctypes.create_string_buffer(_LOG_SIZE)
    attr = _attr()
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program),
        ctypes.addressof(code),
        ctypes.addressof(lic),
        1,  # log_level: the verifier explains a refusal
        _LOG_SIZE,
        ctypes.addressof(log),
    )
    struct.pack_into("<I", attr, 68, BPF_CGROUP_DEVICE)  # expected_attach_type
    try:
        return _syscall(_PROG_LOAD, attr)
    except OSError as exc:
        verifier = log.value.decode(errors="replace").strip()
        if verifier:
            raise OSError(exc.errno, f"{exc.strerror}; verifier: {verifier[-500:]}") from None
        raise


def attach(cgroup_fd: int, prog_fd: int, flags: int = BPF_F_ALLOW_MULTI) -> None:
    """Attach ``prog_fd`` to the cgroup open at ``cgroup_fd`` as its device program."""
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    _syscall(_PROG_ATTACH, attr)


def detach(cgroup_fd: int, prog_fd: int) -> None:
    """Detach the device program ``prog_fd`` from the cgroup open at ``cgroup_fd``."""
    attr = _attr()
    struct.pack_into("<III", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE)
    _syscall(_PROG_DETACH, attr)


def query(cgroup_fd: int, capacity: int = 64) -> list[int]:
    """Return the ids of the device programs attached to the cgroup itself."""
    ids = (ctypes.c_uint32 * capacity)()
    attr = _attr()
    # target_fd, attach_type, query_flags, attach_flags, prog_ids (u64), prog_cnt
    struct.pack_into(
        "<IIIIQI", attr, 0, cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), capacity
    )
    _syscall(_PROG_QUERY, attr)
    (count,) = struct.unpack_from("<I", attr, 24)
    return [ids[index] for index in range(min(count, capacity))]


def prog_fd_by_id(prog_id: int) -> int:
    """Open the loaded program ``prog_id``; return its fd."""
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    return _syscall(_PROG_GET_FD_BY_ID, attr)
