"""A small classic-BPF interpreter for seccomp programs, and tests of the interpreter itself.

The other seccomp tests import `run`, `verdict` and `check_program` from here. The
interpreter knows the subset Gantry's compiler emits (LD W ABS, ALU AND K, JMP
JA/JEQ/JGT/JGE/JSET K, RET K) and refuses anything else, as well as every structural
fault the kernel's checker refuses (jumps out of the program, a last instruction that is
not RET, unaligned or out-of-range loads), so a program that runs here is one the kernel
would load.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from gantry.linux import seccomp as k
from gantry.linux.seccomp import SockFilter

BPF_ALU = 0x04
BPF_AND = 0x50
BPF_JA = 0x00

LD_W_ABS = k.BPF_LD | k.BPF_W | k.BPF_ABS
AND_K = BPF_ALU | BPF_AND | k.BPF_K
JA = k.BPF_JMP | BPF_JA | k.BPF_K
JEQ = k.BPF_JMP | k.BPF_JEQ | k.BPF_K
JGT = k.BPF_JMP | k.BPF_JGT | k.BPF_K
JGE = k.BPF_JMP | k.BPF_JGE | k.BPF_K
JSET = k.BPF_JMP | k.BPF_JSET | k.BPF_K
RET_K = k.BPF_RET | k.BPF_K

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
SECCOMP_DATA = struct.Struct("<iIQ6Q")
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


def check_program(program: Sequence[SockFilter]) -> None:
    """Fail on anything the kernel's classic-BPF checker would refuse."""
    assert 1 <= len(program) <= k.BPF_MAXINSNS, f"{len(program)} instructions"
    for pc, insn in enumerate(program):
        assert 0 <= insn.k <= U32, f"{pc}: k out of range"
        assert 0 <= insn.jt <= 255 and 0 <= insn.jf <= 255, f"{pc}: jump offset over 8 bits"
        if insn.code == JA:
            assert pc + 1 + insn.k < len(program), f"{pc}: JA out of the program"
        elif insn.code in (JEQ, JGT, JGE, JSET):
            assert pc + 1 + max(insn.jt, insn.jf) < len(program), f"{pc}: jump out"
        elif insn.code == LD_W_ABS:
            assert insn.k % 4 == 0 and insn.k + 4 <= SECCOMP_DATA.size, f"{pc}: bad load"
        else:
            assert insn.code in (AND_K, RET_K), f"{pc}: opcode {insn.code:#x} not allowed"
    assert program[-1].code == RET_K, "the last instruction must be RET"


def run(
    program: Sequence[SockFilter],
    nr: int,
    *,
    arch: int = k.AUDIT_ARCH_X86_64,
    args: Sequence[int] = (),
    ip: int = 0,
) -> int:
    """Run `program` on one system call and return the filter's 32-bit verdict."""
    padded = [*args, *([0] * (6 - len(args)))]
    data = SECCOMP_DATA.pack(nr - (1 << 32) if nr > 0x7FFFFFFF else nr, arch, ip, *padded)
    acc, pc = 0, 0
    while True:
        assert 0 <= pc < len(program), "fell off the end of the program"
        insn = program[pc]
        code = insn.code
        if code == LD_W_ABS:
            assert insn.k % 4 == 0 and insn.k + 4 <= len(data)
            acc = int.from_bytes(data[insn.k : insn.k + 4], "little")
            pc += 1
        elif code == AND_K:
            acc &= insn.k
            pc += 1
        elif code == JA:
            pc += 1 + insn.k
        elif code in (JEQ, JGT, JGE, JSET):
            taken = {
                JEQ: acc == insn.k,
                JGT: acc > insn.k,
                JGE: acc >= insn.k,
                JSET: bool(acc & insn.k),
            }[code]
            pc += 1 + (insn.jt if taken else insn.jf)
        elif code == RET_K:
            return insn.k
        else:
            raise AssertionError(f"{pc}: opcode {code:#x} not in the interpreter's subset")


ALLOW = k.SECCOMP_RET_ALLOW
LOG = k.SECCOMP_RET_LOG
KILL_PROCESS = k.SECCOMP_RET_KILL_PROCESS
KILL_THREAD = k.SECCOMP_RET_KILL_THREAD
TRAP = k.SECCOMP_RET_TRAP


def errno_ret(value: int) -> int:
    """The verdict of SCMP_ACT_ERRNO(value)."""
    return k.SECCOMP_RET_ERRNO | value


def trace_ret(value: int) -> int:
    """The verdict of SCMP_ACT_TRACE(value)."""
    return k.SECCOMP_RET_TRACE | value


def verdict(value: int) -> str:
    """A readable form of a verdict, for assertion messages: ``ERRNO(1)``, ``ALLOW``."""
    action, data = value & 0xFFFF0000, value & 0xFFFF
    names = {
        KILL_PROCESS: "KILL_PROCESS",
        KILL_THREAD: "KILL_THREAD",
        TRAP: "TRAP",
        k.SECCOMP_RET_ERRNO: f"ERRNO({data})",
        k.SECCOMP_RET_TRACE: f"TRACE({data})",
        LOG: "LOG",
        ALLOW: "ALLOW",
    }
    return names.get(action, hex(value))


# --- the interpreter's own tests ------------------------------------------------------------


def _jump(code: int, k_: int, jt: int, jf: int) -> SockFilter:
    return SockFilter(code, jt, jf, k_)


def _stmt(code: int, k_: int) -> SockFilter:
    return SockFilter(code, 0, 0, k_)


def test_interpreter_reads_nr_arch_and_both_words_of_an_argument() -> None:
    program = [
        _stmt(LD_W_ABS, k.SECCOMP_DATA_ARGS + 8 * 2 + 4),
        _jump(JEQ, 0x12345678, 0, 1),
        _stmt(RET_K, 1),
        _stmt(LD_W_ABS, k.SECCOMP_DATA_ARGS + 8 * 2),
        _jump(JEQ, 0x9ABCDEF0, 0, 1),
        _stmt(RET_K, 2),
        _stmt(LD_W_ABS, k.SECCOMP_DATA_NR),
        _jump(JEQ, U32, 0, 1),
        _stmt(RET_K, 3),
        _stmt(RET_K, 4),
    ]
    check_program(program)
    assert run(program, 5, args=(0, 0, 0x12345678_9ABCDEF0)) == 1
    assert run(program, 5, args=(0, 0, 0x9ABCDEF0)) == 2
    assert run(program, -1, args=(0, 0, 7)) == 3
    assert run(program, 5, args=(0, 0, 7)) == 4


def test_interpreter_alu_and_jset_and_ja() -> None:
    program = [
        _stmt(LD_W_ABS, k.SECCOMP_DATA_NR),
        _jump(JSET, 0x40000000, 0, 2),
        _stmt(AND_K, 0xFF),
        _stmt(RET_K, 1),
        _stmt(JA, 1),
        _stmt(RET_K, 2),
        _stmt(RET_K, 3),
    ]
    check_program(program)
    assert run(program, 0x40000005) == 1
    assert run(program, 5) == 3


@pytest.mark.parametrize(
    "program",
    [
        [_stmt(LD_W_ABS, 0)],  # does not end in RET
        [_jump(JEQ, 0, 1, 0), _stmt(RET_K, 0)],  # jumps past the end
        [_stmt(LD_W_ABS, 2), _stmt(RET_K, 0)],  # unaligned load
        [_stmt(LD_W_ABS, 64), _stmt(RET_K, 0)],  # beyond seccomp_data
        [_stmt(0x07, 0), _stmt(RET_K, 0)],  # TAX: not in the subset
    ],
)
def test_check_program_refuses_what_the_kernel_refuses(program: list[SockFilter]) -> None:
    with pytest.raises(AssertionError):
        check_program(program)
