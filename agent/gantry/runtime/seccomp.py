"""Compile an OCI ``linux.seccomp`` section into a classic-BPF program for seccomp(2).

`compile_seccomp` is pure: spec in, ``(program, warnings)`` out. `install` compiles and
loads the program into the calling thread (every thread with ``SECCOMP_FILTER_FLAG_TSYNC``
in ``flags``); call it last in the init sequence, under no_new_privs.

What the program does, in order:

1. **Architecture.** ``seccomp_data.arch`` must be the machine's native ABI or one the spec
   lists in ``architectures`` (on x86_64, ``SCMP_ARCH_X86`` is the IA-32 compat ABI). Any
   other ABI gets ``KILL_PROCESS``: libseccomp's bad-arch action, applied to the whole
   process so a multi-threaded program is not left half-dead. On x86_64, a number carrying
   ``__X32_SYSCALL_BIT`` is an x32 call and is killed the same way unless
   ``SCMP_ARCH_X32`` is listed; ``-1`` (a tracer skipping a call) is not killed, as in
   libseccomp. Listed ABIs of other machines are ignored: the kernel never reports
   them here.
2. **Numbers the build does not know.** With a denying default action, numbers above the
   highest one in this ABI's table return ``ENOSYS``, not the default errno: the profile
   cannot name those calls, and ENOSYS is what lets libc fall back to an older call
   (runc's ``patchbpf`` stub, for the same reason).
3. **Syscall number.** A balanced binary search over number ranges (``JGE``), so every
   call is classified in about log2(ranges) jumps and each number is tested once. A number
   with argument rules leads to a block that tries its rules in spec order.
4. **Rules.** Names the ABI does not have are skipped (as runc does); names no ABI of the
   filter knows are reported in the warnings. For one syscall, rules are ORed and the
   first rule whose conditions all hold decides, in spec order; an unconditional rule ends
   the list. Conditions of one rule are ANDed, including several on the same argument
   (runc and crun OR those instead, runc#2735; a warning says so).
5. **Arguments.** Each 64-bit argument is compared as two 32-bit words, the high word
   first; every operator is unsigned, as in libseccomp. ``SCMP_CMP_MASKED_EQ`` tests
   ``(arg & value) == valueTwo``.

Classic BPF conditional jumps reach at most 255 instructions; the assembler turns any
longer one into a short jump over ``BPF_JA`` trampolines (32-bit offsets).

Compiled programs are cached in the process, keyed by the section itself (a frozen,
hashable value: equal sections compile to the same program) and the machine; the default
profile's section already folds in the container's capabilities (`seccomp_default`), so
containers with the same bounding set share one entry. The agent's launcher fills the
cache once and every create forked from it finds its program there (`cached_programs`).
"""

from __future__ import annotations

import errno
import platform
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from gantry.linux import seccomp as kernel
from gantry.linux import syscalls_aarch64, syscalls_x86_64
from gantry.linux.seccomp import (
    BPF_ABS,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_MAXINSNS,
    BPF_RET,
    BPF_W,
    SockFilter,
)
from gantry.runtime.spec import Seccomp, SeccompArg, Syscall

__all__ = [
    "BAD_ARCH_ACTION",
    "MACHINES",
    "SeccompError",
    "cached_programs",
    "clear_cache",
    "compile_seccomp",
    "filter_flags",
    "install",
    "syscall_table",
]

# linux/bpf_common.h values gantry.linux.seccomp does not export.
BPF_ALU: Final = 0x04
BPF_AND: Final = 0x50
BPF_JA: Final = 0x00

X32_SYSCALL_BIT: Final = 0x40000000
_U32: Final = 0xFFFFFFFF
# seccomp(2): an errno above MAX_ERRNO is clamped to it by the kernel; refuse it instead.
_MAX_ERRNO: Final = 4095

BAD_ARCH_ACTION: Final = kernel.SECCOMP_RET_KILL_PROCESS
"""What a call from an ABI the filter does not cover gets."""


class SeccompError(ValueError):
    """A seccomp section that cannot be compiled; the message names the field."""


# --- machines and their ABIs ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Abi:
    arch: str  # the SCMP_ARCH_* name a spec uses
    audit_arch: int
    table: Mapping[str, int] | None  # None: no table in this build, calls are refused


@dataclass(frozen=True, slots=True)
class _Machine:
    native: _Abi
    x32: _Abi | None  # same audit arch as native, numbers carry X32_SYSCALL_BIT
    compat: tuple[_Abi, ...]


_MACHINE_TABLE: Final[Mapping[str, _Machine]] = {
    "x86_64": _Machine(
        native=_Abi("SCMP_ARCH_X86_64", kernel.AUDIT_ARCH_X86_64, syscalls_x86_64.SYSCALLS),
        x32=_Abi("SCMP_ARCH_X32", kernel.AUDIT_ARCH_X86_64, syscalls_x86_64.SYSCALLS_X32),
        compat=(_Abi("SCMP_ARCH_X86", kernel.AUDIT_ARCH_I386, syscalls_x86_64.SYSCALLS_I386),),
    ),
    "aarch64": _Machine(
        native=_Abi("SCMP_ARCH_AARCH64", kernel.AUDIT_ARCH_AARCH64, syscalls_aarch64.SYSCALLS),
        x32=None,
        # No 32-bit ARM (EABI) table can be generated from an x86 machine's headers.
        compat=(_Abi("SCMP_ARCH_ARM", kernel.AUDIT_ARCH_ARM, None),),
    ),
}

MACHINES: Final = tuple(_MACHINE_TABLE)
"""The machines (``platform.machine()``) Gantry can build filters for."""


def _machine(name: str | None) -> _Machine:
    name = name or platform.machine()
    try:
        return _MACHINE_TABLE[name]
    except KeyError:
        raise SeccompError(
            f"seccomp: no syscall table for machine {name!r} (have: {', '.join(MACHINES)})"
        ) from None


def syscall_table(arch: str, machine: str | None = None) -> Mapping[str, int]:
    """The name -> number table of ABI `arch` (``SCMP_ARCH_*``) on `machine`."""
    m = _machine(machine)
    for abi in (m.native, m.x32, *m.compat):
        if abi is not None and abi.arch == arch and abi.table is not None:
            return abi.table
    raise SeccompError(f"seccomp: no syscall table for {arch} on {machine or platform.machine()}")


# --- actions ------------------------------------------------------------------------------

_PLAIN_ACTIONS: Final[Mapping[str, int]] = {
    # runc and libseccomp read SCMP_ACT_KILL as killing the thread only.
    "SCMP_ACT_KILL": kernel.SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": kernel.SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": kernel.SECCOMP_RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": kernel.SECCOMP_RET_TRAP,
    "SCMP_ACT_ALLOW": kernel.SECCOMP_RET_ALLOW,
    "SCMP_ACT_LOG": kernel.SECCOMP_RET_LOG,
}
# Default actions that let unknown calls run: no ENOSYS stub in front of them (runc).
_PERMISSIVE: Final = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"})

_FLAGS: Final[Mapping[str, int]] = {
    "SECCOMP_FILTER_FLAG_TSYNC": kernel.SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": kernel.SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": kernel.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
}


def _action(action: str, errno_ret: int | None, where: str) -> int:
    """The filter return value (``SECCOMP_RET_*`` | data) of an OCI action."""
    if action in _PLAIN_ACTIONS:
        return _PLAIN_ACTIONS[action]
    # Per the runtime spec, a missing errnoRet means EPERM, for rules and default alike.
    data = errno.EPERM if errno_ret is None else errno_ret
    if action == "SCMP_ACT_ERRNO":
        if data > _MAX_ERRNO:
            raise SeccompError(f"{where}: errno {data} is above MAX_ERRNO ({_MAX_ERRNO})")
        return kernel.SECCOMP_RET_ERRNO | data
    if action == "SCMP_ACT_TRACE":
        if data > kernel.SECCOMP_RET_DATA:
            raise SeccompError(f"{where}: trace value {data} does not fit in 16 bits")
        return kernel.SECCOMP_RET_TRACE | data
    if action == "SCMP_ACT_NOTIFY":
        raise SeccompError(
            f"{where}: SCMP_ACT_NOTIFY is not supported: gantry has no seccomp notify listener yet"
        )
    raise SeccompError(f"{where}: unknown seccomp action {action!r}")


def filter_flags(seccomp: Seccomp) -> int:
    """The ``SECCOMP_FILTER_FLAG_*`` bits to load the filter with (TSYNC, LOG, SPEC_ALLOW)."""
    bits = 0
    for flag in seccomp.flags:
        bits |= _FLAGS.get(flag, 0)
    return bits


# --- rules per syscall number -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    conditions: tuple[SeccompArg, ...]
    ret: int
    origin: str  # "syscalls[3]" for messages


@dataclass(frozen=True, slots=True)
class _Block:
    """Argument rules of one syscall: the first rule that holds decides, else `fallback`."""

    rules: tuple[_Rule, ...]
    fallback: int


_Outcome = int | _Block  # an int is a return value


@dataclass(slots=True)
class _Compiler:
    seccomp: Seccomp
    machine: _Machine
    warnings: list[str] = field(default_factory=list)

    def run(self) -> list[SockFilter]:
        section = self.seccomp
        default = _action(section.default_action, section.default_errno_ret, "defaultAction")
        rules = []
        for i, call in enumerate(section.syscalls):
            where = f"syscalls[{i}]"
            rules.append(
                (call, _Rule(call.args, _action(call.action, call.errno_ret, where), where))
            )
        self._check_rules(rules)
        for flag in section.flags:
            if flag not in _FLAGS:
                self.warnings.append(f"flags: {flag} ignored, gantry has no notify listener")

        x32, compat = self._abis()
        self._warn_unknown(rules, [abi for abi in (self.machine.native, x32, *compat) if abi])

        # Numbers above the table: ENOSYS under a denying default (see the module doc). A
        # default that already answers ENOSYS needs no stub, as in runc.
        enosys = kernel.SECCOMP_RET_ERRNO | errno.ENOSYS
        beyond = default
        if section.default_action not in _PERMISSIVE and default != enosys:
            beyond = enosys

        native = _table(self.machine.native)
        space: list[tuple[int, int, _Outcome]] = [
            (0, max(native.values()), default),
            (max(native.values()) + 1, X32_SYSCALL_BIT - 1, beyond),
        ]
        points = self._outcomes(rules, native, default)
        if x32 is None:
            # The x32 bit: killed, except -1, which a tracer sets to skip a call.
            space += [(X32_SYSCALL_BIT, _U32 - 1, BAD_ARCH_ACTION), (_U32, _U32, beyond)]
        else:
            x32_table = _table(x32)
            top = max(x32_table.values())
            space += [(X32_SYSCALL_BIT, top, default), (top + 1, _U32, beyond)]
            points.update(self._outcomes(rules, x32_table, default))
        sections = [(self.machine.native.audit_arch, _segments(space, points))]
        for abi in compat:
            table = _table(abi)
            top = max(table.values())
            compat_space: list[tuple[int, int, _Outcome]] = [
                (0, top, default),
                (top + 1, _U32, beyond),
            ]
            points = self._outcomes(rules, table, default)
            sections.append((abi.audit_arch, _segments(compat_space, points)))
        return _assemble(_program(sections))

    def _abis(self) -> tuple[_Abi | None, list[_Abi]]:
        """The x32 ABI if listed, and the listed compat ABIs that have a table."""
        listed = set(self.seccomp.architectures)
        x32 = self.machine.x32
        compat = []
        for abi in self.machine.compat:
            if abi.arch not in listed:
                continue
            if abi.table is None:
                self.warnings.append(
                    f"architectures: no syscall table for {abi.arch} in this build; "
                    "its calls are killed"
                )
            else:
                compat.append(abi)
        return (x32 if x32 is not None and x32.arch in listed else None), compat

    def _check_rules(self, rules: Sequence[tuple[Syscall, _Rule]]) -> None:
        for call, rule in rules:
            indexes = [arg.index for arg in call.args]
            repeated = sorted({i for i in indexes if indexes.count(i) > 1})
            for index in repeated:
                self.warnings.append(
                    f"{rule.origin} ({', '.join(call.names)}): conditions on argument "
                    f"{index} are ANDed; runc and crun OR them (runc#2735)"
                )

    def _warn_unknown(self, rules: Sequence[tuple[Syscall, _Rule]], abis: list[_Abi]) -> None:
        unknown: dict[str, None] = {}
        for call, _rule in rules:
            for name in call.names:
                if not any(name in _table(abi) for abi in abis):
                    unknown[name] = None
        if unknown:
            where = "/".join(abi.arch.removeprefix("SCMP_ARCH_").lower() for abi in abis)
            self.warnings.append(
                f"syscalls unknown to the {where} tables, ignored: {', '.join(unknown)}"
            )

    def _outcomes(
        self, rules: Sequence[tuple[Syscall, _Rule]], table: Mapping[str, int], default: int
    ) -> dict[int, _Outcome]:
        """Number -> what the filter does for it, from the rules naming it in this ABI."""
        per_number: dict[int, list[_Rule]] = {}
        for call, rule in rules:
            for name in dict.fromkeys(call.names):
                number = table.get(name)
                if number is not None:
                    per_number.setdefault(number, []).append(rule)
        outcomes: dict[int, _Outcome] = {}
        for number, number_rules in per_number.items():
            conditional: list[_Rule] = []
            fallback = default
            for i, rule in enumerate(number_rules):
                if rule.conditions:
                    conditional.append(rule)
                    continue
                fallback = rule.ret
                for later in number_rules[i + 1 :]:
                    if later.ret != rule.ret:
                        message = (
                            f"{later.origin}: never applies to syscall {number}, "
                            f"{rule.origin} already decides every call"
                        )
                        if message not in self.warnings:
                            self.warnings.append(message)
                break
            # Trailing rules that return the fallback anyway change nothing.
            while conditional and conditional[-1].ret == fallback:
                conditional.pop()
            if conditional:
                outcomes[number] = _Block(tuple(conditional), fallback)
            elif fallback != default:
                outcomes[number] = fallback
        return outcomes


def _table(abi: _Abi) -> Mapping[str, int]:
    assert abi.table is not None
    return abi.table


def _segments(
    space: list[tuple[int, int, _Outcome]], points: Mapping[int, _Outcome]
) -> list[tuple[int, int, _Outcome]]:
    """Cover 0..2^32-1 with (low, high, outcome) ranges; equal neighbours merged."""
    out: list[tuple[int, int, _Outcome]] = []

    def add(low: int, high: int, outcome: _Outcome) -> None:
        if out and out[-1][2] == outcome and out[-1][1] + 1 == low:
            out[-1] = (out[-1][0], high, outcome)
        else:
            out.append((low, high, outcome))

    numbers = sorted(points)
    for low, high, outcome in space:
        cursor = low
        for number in numbers:
            if low <= number <= high:
                if cursor < number:
                    add(cursor, number - 1, outcome)
                add(number, number, points[number])
                cursor = number + 1
        if cursor <= high:
            add(cursor, high, outcome)
    assert out[0][0] == 0 and out[-1][1] == _U32
    return out


# --- code generation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mark:
    label: int


@dataclass(frozen=True, slots=True)
class _Jump:
    """A conditional jump; a target of None is the next instruction."""

    code: int
    k: int
    jt: int | None
    jf: int | None


_Item = SockFilter | _Mark | _Jump


@dataclass(slots=True)
class _Asm:
    items: list[_Item] = field(default_factory=list)
    labels: int = 0

    def label(self) -> int:
        self.labels += 1
        return self.labels

    def mark(self, label: int) -> None:
        self.items.append(_Mark(label))

    def load(self, offset: int) -> None:
        self.items.append(SockFilter(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset))

    def and_(self, mask: int) -> None:
        self.items.append(SockFilter(BPF_ALU | BPF_AND | BPF_K, 0, 0, mask))

    def jump(self, op: int, k: int, jt: int | None, jf: int | None) -> None:
        self.items.append(_Jump(BPF_JMP | op | BPF_K, k, jt, jf))

    def ret(self, value: int) -> None:
        self.items.append(SockFilter(BPF_RET | BPF_K, 0, 0, value))


def _program(sections: list[tuple[int, list[tuple[int, int, _Outcome]]]]) -> list[_Item]:
    asm = _Asm()
    asm.load(kernel.SECCOMP_DATA_ARCH)
    starts = []
    for audit_arch, _segments in sections:
        start = asm.label()
        starts.append(start)
        asm.jump(BPF_JEQ, audit_arch, start, None)
    asm.ret(BAD_ARCH_ACTION)
    for start, (_arch, segments) in zip(starts, sections, strict=True):
        asm.mark(start)
        asm.load(kernel.SECCOMP_DATA_NR)
        _tree(asm, segments)
    return asm.items


def _tree(asm: _Asm, segments: list[tuple[int, int, _Outcome]]) -> None:
    """A binary search on the number in A; every leaf ends in RET."""
    if len(segments) == 1:
        _outcome(asm, segments[0][2])
        return
    middle = len(segments) // 2
    upper = asm.label()
    asm.jump(BPF_JGE, segments[middle][0], upper, None)
    _tree(asm, segments[:middle])
    asm.mark(upper)
    _tree(asm, segments[middle:])


def _outcome(asm: _Asm, outcome: _Outcome) -> None:
    if isinstance(outcome, int):
        asm.ret(outcome)
        return
    for rule in outcome.rules:
        next_rule = asm.label()
        for condition in rule.conditions:
            _condition(asm, condition, next_rule)
        asm.ret(rule.ret)
        asm.mark(next_rule)
    asm.ret(outcome.fallback)


def _condition(asm: _Asm, arg: SeccompArg, fail: int) -> None:
    """Fall through when `arg` holds for the call, jump to `fail` when it does not."""
    # x86_64 and aarch64 are little-endian: the low word of args[i] comes first.
    low = kernel.SECCOMP_DATA_ARGS + 8 * arg.index
    high = low + 4
    value_high, value_low = arg.value >> 32, arg.value & _U32
    ok = asm.label()
    op = arg.op
    if op == "SCMP_CMP_EQ":
        asm.load(high)
        asm.jump(BPF_JEQ, value_high, None, fail)
        asm.load(low)
        asm.jump(BPF_JEQ, value_low, None, fail)
    elif op == "SCMP_CMP_NE":
        asm.load(high)
        asm.jump(BPF_JEQ, value_high, None, ok)
        asm.load(low)
        asm.jump(BPF_JEQ, value_low, fail, None)
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        # high > v.high: holds; high < v.high: fails; equal: the low words decide.
        asm.load(high)
        asm.jump(BPF_JGT, value_high, ok, None)
        asm.jump(BPF_JEQ, value_high, None, fail)
        asm.load(low)
        asm.jump(BPF_JGT if op == "SCMP_CMP_GT" else BPF_JGE, value_low, None, fail)
    elif op in ("SCMP_CMP_LT", "SCMP_CMP_LE"):
        # The negation of GE / GT: the same tests with the targets swapped.
        asm.load(high)
        asm.jump(BPF_JGT, value_high, fail, None)
        asm.jump(BPF_JEQ, value_high, None, ok)
        asm.load(low)
        asm.jump(BPF_JGE if op == "SCMP_CMP_LT" else BPF_JGT, value_low, fail, None)
    elif op == "SCMP_CMP_MASKED_EQ":
        mask_high, mask_low = value_high, value_low
        want_high, want_low = arg.value_two >> 32, arg.value_two & _U32
        asm.load(high)
        asm.and_(mask_high)
        asm.jump(BPF_JEQ, want_high, None, fail)
        asm.load(low)
        asm.and_(mask_low)
        asm.jump(BPF_JEQ, want_low, None, fail)
    else:
        raise SeccompError(f"unknown seccomp operator {op!r}")
    asm.mark(ok)


# --- assembly: labels to offsets, long jumps through BPF_JA -----------------------------

_LONG_TRUE = 1
_LONG_FALSE = 2


def _size(item: _Item, form: int) -> int:
    if isinstance(item, _Mark):
        return 0
    if isinstance(item, _Jump):
        return 1 + bool(form & _LONG_TRUE) + bool(form & _LONG_FALSE)
    return 1


def _layout(items: list[_Item], forms: list[int]) -> tuple[list[int], dict[int, int]]:
    positions, labels = [], {}
    position = 0
    for item, form in zip(items, forms, strict=True):
        positions.append(position)
        if isinstance(item, _Mark):
            labels[item.label] = position
        position += _size(item, form)
    return positions, labels


def _targets(item: _Jump, position: int, form: int, labels: Mapping[int, int]) -> tuple[int, int]:
    end = position + _size(item, form)
    return (
        end if item.jt is None else labels[item.jt],
        end if item.jf is None else labels[item.jf],
    )


def _direct_offsets(
    item: _Jump, position: int, form: int, labels: Mapping[int, int]
) -> Iterator[tuple[int, int]]:
    """(side, offset) of each side the conditional instruction itself jumps to."""
    true_target, false_target = _targets(item, position, form, labels)
    if not form & _LONG_TRUE:
        yield _LONG_TRUE, true_target - position - 1
    if not form & _LONG_FALSE:
        yield _LONG_FALSE, false_target - position - 1


def _assemble(items: list[_Item]) -> list[SockFilter]:
    forms = [0] * len(items)
    while True:  # sizes only grow, so this settles
        positions, labels = _layout(items, forms)
        grown = False
        for i, item in enumerate(items):
            if not isinstance(item, _Jump):
                continue
            for side, offset in _direct_offsets(item, positions[i], forms[i], labels):
                if offset < 0:
                    raise AssertionError("seccomp: backward jump generated")
                if offset > 255:
                    forms[i] |= side
                    grown = True
        if not grown:
            break
    program: list[SockFilter] = []
    for item, position, form in zip(items, positions, forms, strict=True):
        if isinstance(item, _Mark):
            continue
        if isinstance(item, SockFilter):
            program.append(item)
        else:
            program.extend(_emit_jump(item, position, form, labels))
    return program


def _emit_jump(
    item: _Jump, position: int, form: int, labels: Mapping[int, int]
) -> list[SockFilter]:
    true_target, false_target = _targets(item, position, form, labels)
    # Conditional offsets count from the next instruction; a trampoline at position + n
    # counts from position + n + 1.
    if form == 0:
        return [
            SockFilter(item.code, true_target - position - 1, false_target - position - 1, item.k)
        ]
    if form == _LONG_TRUE:  # J jt→trampoline; JA true
        return [
            SockFilter(item.code, 0, false_target - position - 1, item.k),
            _ja(true_target - position - 2),
        ]
    if form == _LONG_FALSE:  # J jf→trampoline; JA false
        return [
            SockFilter(item.code, true_target - position - 1, 0, item.k),
            _ja(false_target - position - 2),
        ]
    return [  # J jt→first trampoline, jf→second; JA true; JA false
        SockFilter(item.code, 0, 1, item.k),
        _ja(true_target - position - 2),
        _ja(false_target - position - 3),
    ]


def _ja(offset: int) -> SockFilter:
    assert 0 <= offset <= _U32
    return SockFilter(BPF_JMP | BPF_JA | BPF_K, 0, 0, offset)


# --- the way in -------------------------------------------------------------------------


class _ProgramCache:
    """Compiled programs by (section, machine); bounded, oldest entry out first."""

    LIMIT: Final = 64

    def __init__(self) -> None:
        self._entries: dict[tuple[Seccomp, str], tuple[tuple[SockFilter, ...], tuple[str, ...]]]
        self._entries = {}
        self._lock = threading.Lock()

    def get(
        self, key: tuple[Seccomp, str]
    ) -> tuple[tuple[SockFilter, ...], tuple[str, ...]] | None:
        with self._lock:
            return self._entries.get(key)

    def put(
        self, key: tuple[Seccomp, str], value: tuple[tuple[SockFilter, ...], tuple[str, ...]]
    ) -> None:
        with self._lock:
            if len(self._entries) >= self.LIMIT:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = value

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE: Final = _ProgramCache()


def cached_programs() -> int:
    """How many compiled programs this process holds."""
    return len(_CACHE)


def clear_cache() -> None:
    """Forget every compiled program (tests; a process that wants its memory back)."""
    _CACHE.clear()


def compile_seccomp(
    seccomp: Seccomp, *, machine: str | None = None
) -> tuple[list[SockFilter], list[str]]:
    """Compile `seccomp` for `machine` (default: this one) into a BPF program.

    Returns the program and the warnings (unknown syscall names, ignored flags, argument
    semantics that differ from runc). Raises `SeccompError` for what cannot be compiled:
    SCMP_ACT_NOTIFY, an errno above 4095, an unsupported machine, a program longer than
    the kernel's 4096 instructions. A section compiled before (equal, for the same
    machine) comes from the cache; errors are not cached.
    """
    key = (seccomp, machine or platform.machine())
    try:
        cached = _CACHE.get(key)
    except TypeError:  # a section built by hand with a list inside: not hashable, not cached
        return _compile(seccomp, _machine(key[1]))
    if cached is not None:
        return list(cached[0]), list(cached[1])
    program, warnings = _compile(seccomp, _machine(key[1]))
    _CACHE.put(key, (tuple(program), tuple(warnings)))
    return program, warnings


def _compile(seccomp: Seccomp, machine: _Machine) -> tuple[list[SockFilter], list[str]]:
    compiler = _Compiler(seccomp, machine)
    program = compiler.run()
    if len(program) > BPF_MAXINSNS:
        raise SeccompError(
            f"seccomp: the filter needs {len(program)} instructions, more than the "
            f"kernel's limit of {BPF_MAXINSNS}"
        )
    return program, compiler.warnings


def install(seccomp: Seccomp) -> list[str]:
    """Compile `seccomp` for this machine and load it; returns the compiler's warnings.

    Needs no_new_privs (or CAP_SYS_ADMIN). Changes the calling process for good: call it
    in the container's init, as late as possible.
    """
    program, warnings = compile_seccomp(seccomp)
    kernel.load_filter(program, filter_flags(seccomp))
    return warnings
