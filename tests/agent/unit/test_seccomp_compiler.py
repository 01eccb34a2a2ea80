"""gantry.runtime.seccomp: OCI seccomp sections compiled to BPF, run in an interpreter."""

from __future__ import annotations

import errno
import operator
from collections.abc import Callable
from typing import Any

import pytest
from gantry.linux import seccomp as k
from gantry.linux.syscalls_aarch64 import SYSCALLS as AARCH64
from gantry.linux.syscalls_x86_64 import SYSCALLS as X86_64
from gantry.linux.syscalls_x86_64 import SYSCALLS_I386 as I386
from gantry.linux.syscalls_x86_64 import SYSCALLS_X32 as X32
from gantry.runtime.seccomp import (
    BAD_ARCH_ACTION,
    MACHINES,
    SeccompError,
    compile_seccomp,
    filter_flags,
    syscall_table,
)
from gantry.runtime.spec import Seccomp, SeccompArg, Syscall, load_spec
from test_seccomp_bpf import (
    ALLOW,
    JA,
    KILL_PROCESS,
    KILL_THREAD,
    LOG,
    TRAP,
    U32,
    U64,
    check_program,
    errno_ret,
    run,
    trace_ret,
    verdict,
)

NR = X86_64
EPERM = errno_ret(errno.EPERM)
ENOSYS = errno_ret(errno.ENOSYS)


def seccomp(**section: Any) -> Seccomp:
    """A seccomp section validated the way every spec is (through load_spec)."""
    spec = load_spec({"ociVersion": "1.2.1", "root": {"path": "/"}, "linux": {"seccomp": section}})
    assert spec.linux is not None and spec.linux.seccomp is not None
    return spec.linux.seccomp


def build(section: Seccomp, machine: str = "x86_64") -> list[k.SockFilter]:
    program, _warnings = compile_seccomp(section, machine=machine)
    check_program(program)
    return program


def rule(
    name: str, action: str = "SCMP_ACT_ALLOW", *args: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"names": [name], "action": action, **extra}
    if args:
        out["args"] = list(args)
    return out


def arg(index: int, op: str, value: int, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "op": f"SCMP_CMP_{op}", "value": value, "valueTwo": value_two}


# --- argument comparisons ---------------------------------------------------------------------

# Values where a comparison split into 32-bit words goes wrong: word edges, the high word
# set with the low word small, large or equal, and the ends of the range.
BOUNDARIES = (
    0,
    1,
    2,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
    0x1_00000000,
    0x1_00000001,
    0x1_FFFFFFFF,
    0x2_00000000,
    0x2_00000001,
    0x12345678_9ABCDEF0,
    0x7FFFFFFF_FFFFFFFF,
    0x80000000_00000000,
    0xFFFFFFFF_00000000,
    0xFFFFFFFF_00000001,
    0xFFFFFFFE_FFFFFFFF,
    0xFFFFFFFF_FFFFFFFE,
    U64,
)

OPS: dict[str, Callable[[int, int], bool]] = {
    "EQ": operator.eq,
    "NE": operator.ne,
    "LT": operator.lt,
    "LE": operator.le,
    "GE": operator.ge,
    "GT": operator.gt,
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_comparison_on_every_boundary_pair(op: str) -> None:
    compare = OPS[op]
    for n, value in enumerate(BOUNDARIES):
        index = n % 6  # every argument slot gets exercised
        program = build(
            seccomp(
                defaultAction="SCMP_ACT_ERRNO",
                syscalls=[rule("personality", "SCMP_ACT_ALLOW", arg(index, op, value))],
            )
        )
        for actual in BOUNDARIES:
            # Garbage in the other slots: the filter must read the right one.
            args = [actual ^ U64] * 6
            args[index] = actual
            got = run(program, NR["personality"], args=args)
            want = ALLOW if compare(actual, value) else EPERM
            assert got == want, f"{actual:#x} {op} {value:#x} (arg {index}): {verdict(got)}"


def test_masked_eq_on_every_boundary_mask() -> None:
    for n, mask in enumerate(BOUNDARIES):
        index = n % 6
        # A datum inside the mask, and one with bits outside it (can never match).
        for datum in (mask & 0x0F0F0F0F_0F0F0F0F, mask & 0xF0F0F0F0_F0F0F0F0, mask, U64):
            program = build(
                seccomp(
                    defaultAction="SCMP_ACT_ERRNO",
                    syscalls=[
                        rule("clone", "SCMP_ACT_ALLOW", arg(index, "MASKED_EQ", mask, datum))
                    ],
                )
            )
            for actual in (*BOUNDARIES, datum, datum | ~mask & U64):
                args = [~actual & U64] * 6
                args[index] = actual
                got = run(program, NR["clone"], args=args)
                want = ALLOW if actual & mask == datum else EPERM
                assert got == want, (
                    f"({actual:#x} & {mask:#x}) == {datum:#x} (arg {index}): {verdict(got)}"
                )


def test_conditions_of_one_rule_are_anded_and_rules_are_ored() -> None:
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_ERRNO",
            syscalls=[
                rule("socket", "SCMP_ACT_ALLOW", arg(0, "EQ", 2), arg(1, "EQ", 1)),
                rule("socket", "SCMP_ACT_ALLOW", arg(0, "EQ", 10), arg(1, "EQ", 2)),
                rule("socket", "SCMP_ACT_ALLOW", arg(0, "EQ", 1)),
            ],
        )
    )
    cases = {
        (2, 1): ALLOW,
        (2, 2): EPERM,
        (10, 2): ALLOW,
        (10, 1): EPERM,
        (1, 5): ALLOW,
        (3, 1): EPERM,
    }
    for args, want in cases.items():
        assert run(program, NR["socket"], args=args) == want, args


def test_conditions_on_the_same_argument_are_anded_with_a_warning() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ERRNO",
        syscalls=[rule("dup", "SCMP_ACT_ALLOW", arg(0, "GE", 3), arg(0, "LE", 9))],
    )
    program, warnings = compile_seccomp(section, machine="x86_64")
    for fd in range(12):
        assert run(program, NR["dup"], args=[fd]) == (ALLOW if 3 <= fd <= 9 else EPERM), fd
    assert any("argument 0 are ANDed" in w and "runc" in w for w in warnings)


def test_first_matching_rule_decides_and_an_unconditional_rule_ends_the_list() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ALLOW",
        syscalls=[
            rule("kill", "SCMP_ACT_ERRNO", arg(1, "EQ", 9), errnoRet=errno.EACCES),
            rule("kill", "SCMP_ACT_LOG", arg(1, "LT", 9)),
            rule("kill", "SCMP_ACT_ERRNO", errnoRet=errno.EINVAL),
            rule("kill", "SCMP_ACT_ALLOW", arg(1, "EQ", 15)),  # never reached
        ],
    )
    program, warnings = compile_seccomp(section, machine="x86_64")
    assert run(program, NR["kill"], args=[1, 9]) == errno_ret(errno.EACCES)
    assert run(program, NR["kill"], args=[1, 2]) == LOG
    assert run(program, NR["kill"], args=[1, 15]) == errno_ret(errno.EINVAL)
    assert run(program, NR["getpid"]) == ALLOW
    assert any(w.startswith("syscalls[3]: never applies") for w in warnings)


def test_several_names_share_a_rule() -> None:
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_ALLOW",
            syscalls=[{"names": ["mount", "umount2", "pivot_root"], "action": "SCMP_ACT_ERRNO"}],
        )
    )
    for name in ("mount", "umount2", "pivot_root"):
        assert run(program, NR[name]) == EPERM
    for name in ("read", "write", "chroot"):
        assert run(program, NR[name]) == ALLOW


# --- actions and errno --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "errno_value", "want"),
    [
        ("SCMP_ACT_KILL", None, KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, KILL_PROCESS),
        ("SCMP_ACT_TRAP", None, TRAP),
        ("SCMP_ACT_ERRNO", None, EPERM),
        ("SCMP_ACT_ERRNO", errno.EXDEV, errno_ret(errno.EXDEV)),
        ("SCMP_ACT_ERRNO", 0, errno_ret(0)),
        ("SCMP_ACT_ERRNO", 4095, errno_ret(4095)),
        ("SCMP_ACT_TRACE", None, trace_ret(errno.EPERM)),
        ("SCMP_ACT_TRACE", 0xBEEF, trace_ret(0xBEEF)),
        ("SCMP_ACT_ALLOW", None, ALLOW),
        ("SCMP_ACT_LOG", None, LOG),
    ],
)
def test_rule_actions(action: str, errno_value: int | None, want: int) -> None:
    extra = {} if errno_value is None else {"errnoRet": errno_value}
    default = "SCMP_ACT_LOG" if action == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW"
    program = build(seccomp(defaultAction=default, syscalls=[rule("uname", action, **extra)]))
    assert run(program, NR["uname"]) == want, verdict(run(program, NR["uname"]))


def test_default_errno_ret_applies_to_the_default_only() -> None:
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_ERRNO",
            defaultErrnoRet=errno.EACCES,
            syscalls=[
                rule("getpid"),
                rule("mount", "SCMP_ACT_ERRNO"),  # the spec: no errnoRet means EPERM
                rule("umount2", "SCMP_ACT_ERRNO", errnoRet=errno.EBUSY),
            ],
        )
    )
    assert run(program, NR["getpid"]) == ALLOW
    assert run(program, NR["uname"]) == errno_ret(errno.EACCES)
    assert run(program, NR["mount"]) == EPERM
    assert run(program, NR["umount2"]) == errno_ret(errno.EBUSY)


def test_default_errno_defaults_to_eperm() -> None:
    program = build(seccomp(defaultAction="SCMP_ACT_ERRNO", syscalls=[rule("getpid")]))
    assert run(program, NR["uname"]) == EPERM


def test_notify_is_refused_with_a_clear_error() -> None:
    section = Seccomp(
        default_action="SCMP_ACT_ALLOW",
        listener_path="/run/agent.sock",
        syscalls=(Syscall(names=("mount",), action="SCMP_ACT_NOTIFY"),),
    )
    with pytest.raises(SeccompError, match=r"syscalls\[0\].*SCMP_ACT_NOTIFY is not supported"):
        compile_seccomp(section, machine="x86_64")


def test_errno_above_max_errno_is_refused() -> None:
    section = seccomp(defaultAction="SCMP_ACT_ERRNO", defaultErrnoRet=4096)
    with pytest.raises(SeccompError, match="defaultAction: errno 4096 is above MAX_ERRNO"):
        compile_seccomp(section, machine="x86_64")


# --- architectures --------------------------------------------------------------------------


def test_a_foreign_architecture_is_killed() -> None:
    program = build(seccomp(defaultAction="SCMP_ACT_ALLOW"))
    assert run(program, NR["getpid"]) == ALLOW
    for arch in (k.AUDIT_ARCH_AARCH64, k.AUDIT_ARCH_I386, k.AUDIT_ARCH_ARM, 0, U32):
        assert run(program, NR["getpid"], arch=arch) == BAD_ARCH_ACTION == KILL_PROCESS


def test_a_listed_compat_architecture_is_filtered_with_its_own_numbers() -> None:
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_ERRNO",
            architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            syscalls=[rule("getpid"), rule("socketcall")],
        )
    )
    i386 = k.AUDIT_ARCH_I386
    assert run(program, I386["getpid"], arch=i386) == ALLOW  # 20
    assert run(program, I386["socketcall"], arch=i386) == ALLOW
    assert run(program, NR["getpid"], arch=i386) == EPERM  # 39 is mkdir on i386
    assert run(program, NR["getpid"]) == ALLOW
    assert run(program, I386["getpid"]) == EPERM  # 20 is writev on x86_64
    assert run(program, 0, arch=k.AUDIT_ARCH_AARCH64) == KILL_PROCESS


def test_x32_calls_are_killed_unless_x32_is_listed() -> None:
    x32_getpid = X32["getpid"]
    assert x32_getpid == 0x40000000 | NR["getpid"]
    program = build(
        seccomp(defaultAction="SCMP_ACT_ALLOW", syscalls=[rule("mount", "SCMP_ACT_ERRNO")])
    )
    for nr in (x32_getpid, 0x40000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE):
        assert run(program, nr) == KILL_PROCESS, hex(nr)
    # -1 is what a tracer sets to skip a call; it goes to the default as in libseccomp.
    assert run(program, -1) == ALLOW

    listed = build(
        seccomp(
            defaultAction="SCMP_ACT_ALLOW",
            architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
            syscalls=[rule("mount", "SCMP_ACT_ERRNO"), rule("rt_sigaction", "SCMP_ACT_LOG")],
        )
    )
    assert run(listed, x32_getpid) == ALLOW
    assert run(listed, X32["mount"]) == EPERM
    assert run(listed, NR["mount"]) == EPERM
    assert run(listed, X32["rt_sigaction"]) == LOG  # x32's own number, 512 + bit
    assert X32["rt_sigaction"] != 0x40000000 | NR["rt_sigaction"]


def test_arm_on_aarch64_has_no_table_and_stays_refused() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    )
    program, warnings = compile_seccomp(section, machine="aarch64")
    aarch64 = k.AUDIT_ARCH_AARCH64
    assert run(program, AARCH64["getpid"], arch=aarch64) == ALLOW
    assert run(program, 20, arch=k.AUDIT_ARCH_ARM) == KILL_PROCESS
    assert run(program, AARCH64["getpid"]) == KILL_PROCESS  # x86_64 calls on aarch64
    assert any("SCMP_ARCH_ARM" in w for w in warnings)


def test_aarch64_uses_the_generic_numbers() -> None:
    program = build(
        seccomp(defaultAction="SCMP_ACT_ERRNO", syscalls=[rule("openat"), rule("getpid")]),
        machine="aarch64",
    )
    arch = k.AUDIT_ARCH_AARCH64
    assert run(program, 56, arch=arch) == ALLOW  # openat
    assert run(program, 172, arch=arch) == ALLOW  # getpid
    assert run(program, NR["getpid"], arch=arch) == EPERM


# --- numbers beyond the table -----------------------------------------------------------------


def test_numbers_beyond_the_table_get_enosys_under_a_denying_default() -> None:
    top = max(NR.values())
    for default in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"):
        program = build(seccomp(defaultAction=default, syscalls=[rule("getpid")]))
        want_known = run(program, NR["uname"])
        assert run(program, top) == want_known  # still a known number
        for nr in (top + 1, top + 50, 0x3FFFFFFF, -1):
            assert run(program, nr) == ENOSYS, (default, nr)


@pytest.mark.parametrize("default", ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"])
def test_no_enosys_under_a_permissive_default(default: str) -> None:
    program = build(seccomp(defaultAction=default, syscalls=[rule("mount", "SCMP_ACT_ERRNO")]))
    assert run(program, max(NR.values()) + 1) == run(program, NR["getpid"])


# --- unknown names, flags, size -------------------------------------------------------------


def test_unknown_names_are_skipped_and_reported() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ERRNO",
        syscalls=[{"names": ["getpid", "no_such_call", "mmap2"], "action": "SCMP_ACT_ALLOW"}],
    )
    program, warnings = compile_seccomp(section, machine="x86_64")
    assert run(program, NR["getpid"]) == ALLOW
    (warning,) = warnings
    # mmap2 exists only on 32-bit ABIs: unknown to x86_64 alone, so reported too.
    assert "no_such_call" in warning and "mmap2" in warning and "getpid" not in warning


def test_a_name_known_to_a_listed_compat_abi_is_not_reported() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ERRNO",
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        syscalls=[{"names": ["mmap2"], "action": "SCMP_ACT_ALLOW"}],
    )
    program, warnings = compile_seccomp(section, machine="x86_64")
    assert warnings == []
    assert run(program, I386["mmap2"], arch=k.AUDIT_ARCH_I386) == ALLOW


def test_flags_pass_through() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ALLOW",
        flags=[
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        ],
    )
    assert filter_flags(section) == (
        k.SECCOMP_FILTER_FLAG_TSYNC | k.SECCOMP_FILTER_FLAG_LOG | k.SECCOMP_FILTER_FLAG_SPEC_ALLOW
    )
    _program, warnings = compile_seccomp(section, machine="x86_64")
    assert any("WAIT_KILLABLE_RECV ignored" in w for w in warnings)
    assert filter_flags(seccomp(defaultAction="SCMP_ACT_ALLOW")) == 0


def test_long_jumps_go_through_trampolines() -> None:
    # 150 rules on one syscall make a block far longer than an 8-bit jump reaches.
    values = list(range(0, 3000, 20))
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_ERRNO",
            syscalls=[
                *(rule("personality", "SCMP_ACT_ALLOW", arg(0, "EQ", v)) for v in values),
                rule("getpid"),
                rule("uname", "SCMP_ACT_ERRNO", arg(0, "NE", 0), errnoRet=errno.EFAULT),
            ],
        )
    )
    assert len(program) > 600
    assert any(insn.code == JA for insn in program)
    for value in range(0, 3100, 5):
        want = ALLOW if value in values else EPERM
        assert run(program, NR["personality"], args=[value]) == want, value
        assert run(program, NR["personality"], args=[value | 1 << 32]) == EPERM, value
    assert run(program, NR["getpid"]) == ALLOW
    assert run(program, NR["uname"], args=[1]) == errno_ret(errno.EFAULT)
    assert run(program, NR["uname"], args=[0]) == EPERM


def test_every_syscall_with_a_rule_of_its_own() -> None:
    # One distinct action per number: the search tree must send each number to its leaf.
    names = sorted(NR, key=NR.__getitem__)
    program = build(
        seccomp(
            defaultAction="SCMP_ACT_KILL_PROCESS",
            syscalls=[
                rule(name, "SCMP_ACT_ERRNO", errnoRet=(NR[name] % 4000) + 1) for name in names
            ],
        )
    )
    for name in names:
        assert run(program, NR[name]) == errno_ret((NR[name] % 4000) + 1), name
    missing = set(range(max(NR.values()))) - set(NR.values())
    for nr in missing:
        assert run(program, nr) == KILL_PROCESS, nr


def test_a_program_over_the_kernel_limit_is_refused() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ERRNO",
        syscalls=[rule("personality", "SCMP_ACT_ALLOW", arg(0, "EQ", v)) for v in range(1000)],
    )
    with pytest.raises(SeccompError, match="more than the kernel's limit of 4096"):
        compile_seccomp(section, machine="x86_64")


def test_unknown_machine() -> None:
    assert set(MACHINES) == {"x86_64", "aarch64"}
    with pytest.raises(SeccompError, match="no syscall table for machine 'riscv64'"):
        compile_seccomp(seccomp(defaultAction="SCMP_ACT_ALLOW"), machine="riscv64")


def test_syscall_tables_look_like_the_kernel_abi() -> None:
    assert syscall_table("SCMP_ARCH_X86_64", "x86_64") is X86_64
    assert (X86_64["read"], X86_64["getpid"], X86_64["seccomp"], X86_64["clone3"]) == (
        0,
        39,
        317,
        435,
    )
    assert (I386["exit"], I386["socketcall"], I386["getpid"]) == (1, 102, 20)
    assert all(nr & 0x40000000 for nr in X32.values())
    assert (AARCH64["io_setup"], AARCH64["openat"], AARCH64["clone"]) == (0, 56, 220)
    assert "open" not in AARCH64 and "fork" not in AARCH64
    assert "arch_specific_syscall" not in AARCH64 and "syscalls" not in AARCH64
    with pytest.raises(SeccompError):
        syscall_table("SCMP_ARCH_ARM", "aarch64")


def test_compiling_is_pure() -> None:
    section = seccomp(
        defaultAction="SCMP_ACT_ERRNO",
        syscalls=[rule("personality", "SCMP_ACT_ALLOW", arg(0, "EQ", 8))],
    )
    first = compile_seccomp(section, machine="x86_64")
    assert compile_seccomp(section, machine="x86_64") == first


def test_arguments_as_built_directly() -> None:
    # The compiler takes any Seccomp value, not only load_spec's.
    section = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        syscalls=(
            Syscall(
                names=("personality",),
                action="SCMP_ACT_ALLOW",
                args=(SeccompArg(index=0, value=U32, op="SCMP_CMP_EQ"),),
            ),
        ),
    )
    program = build(section)
    assert run(program, NR["personality"], args=[U32]) == ALLOW
    assert run(program, NR["personality"], args=[U64]) == EPERM
    assert run(program, NR["personality"], args=[0]) == EPERM


# --- against a reference model ----------------------------------------------------------------


def _reference(section: dict[str, Any], nr: int, args: list[int]) -> int:
    """What the runtime spec (first matching rule wins) says about one native call."""
    default = section["defaultAction"]
    default_ret = (
        ALLOW
        if default == "SCMP_ACT_ALLOW"
        else errno_ret(section.get("defaultErrnoRet", errno.EPERM))
    )
    if nr > max(NR.values()) and default != "SCMP_ACT_ALLOW":
        return ENOSYS
    compare = {**OPS, "MASKED_EQ": None}
    for entry in section["syscalls"]:
        if not any(NR.get(name) == nr for name in entry["names"]):
            continue
        holds = True
        for cond in entry.get("args", ()):
            op = cond["op"].removeprefix("SCMP_CMP_")
            actual = args[cond["index"]]
            if op == "MASKED_EQ":
                holds &= actual & cond["value"] == cond["valueTwo"]
            else:
                check = compare[op]
                assert check is not None
                holds &= check(actual, cond["value"])
        if holds:
            action = entry["action"]
            return ALLOW if action == "SCMP_ACT_ALLOW" else errno_ret(entry.get("errnoRet", 1))
    return default_ret


@pytest.mark.parametrize("seed", range(6))
def test_random_profiles_agree_with_the_reference(seed: int) -> None:
    import random

    rng = random.Random(seed)
    names = rng.sample(sorted(NR), 40)
    interesting = [*BOUNDARIES, 3, 7, 100, 0x10000]
    rules = []
    for _rule in range(rng.randrange(60, 320)):
        conditions = []
        for _arg in range(rng.choice((0, 1, 1, 2, 2, 3))):
            op = rng.choice((*OPS, "MASKED_EQ"))
            conditions.append(
                arg(rng.randrange(6), op, rng.choice(interesting), rng.choice(interesting))
            )
        action = rng.choice(("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"))
        extra = {"errnoRet": rng.randrange(1, 200)} if action == "SCMP_ACT_ERRNO" else {}
        rules.append(rule(rng.choice(names), action, *conditions, **extra))
    section = {
        "defaultAction": rng.choice(("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO")),
        "syscalls": rules,
    }
    if section["defaultAction"] == "SCMP_ACT_ERRNO":
        section["defaultErrnoRet"] = rng.randrange(1, 200)
    try:
        program = build(seccomp(**section))
    except SeccompError as exc:
        assert "4096" in str(exc)
        return
    for _case in range(3000):
        nr = NR[rng.choice(names)] if rng.random() < 0.9 else rng.randrange(0, 600)
        args = [rng.choice(interesting) for _slot in range(6)]
        got = run(program, nr, args=args)
        want = _reference(section, nr, args)
        assert got == want, (nr, args, verdict(got), verdict(want))


@pytest.mark.parametrize(
    ("true_far", "false_far"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_assembler_reaches_far_targets_on_either_side(true_far: bool, false_far: bool) -> None:
    from gantry.runtime import seccomp as compiler

    filler = [k.SockFilter(k.BPF_RET | k.BPF_K, 0, 0, 0xDEAD)] * 300
    near_true, near_false, far_true, far_false = 1, 2, 3, 4
    items: list[Any] = [
        k.SockFilter(k.BPF_LD | k.BPF_W | k.BPF_ABS, 0, 0, k.SECCOMP_DATA_NR),
        compiler._Jump(
            k.BPF_JMP | k.BPF_JEQ | k.BPF_K,
            7,
            far_true if true_far else near_true,
            far_false if false_far else near_false,
        ),
        compiler._Mark(near_true),
        k.SockFilter(k.BPF_RET | k.BPF_K, 0, 0, 1),
        compiler._Mark(near_false),
        k.SockFilter(k.BPF_RET | k.BPF_K, 0, 0, 2),
        *filler,
        compiler._Mark(far_true),
        k.SockFilter(k.BPF_RET | k.BPF_K, 0, 0, 3),
        *filler,
        compiler._Mark(far_false),
        k.SockFilter(k.BPF_RET | k.BPF_K, 0, 0, 4),
    ]
    program = compiler._assemble(items)
    check_program(program)
    assert run(program, 7) == (3 if true_far else 1)
    assert run(program, 8) == (4 if false_far else 2)
    trampolines = sum(insn.code == JA for insn in program)
    assert trampolines == true_far + false_far
