"""Generate the syscall name -> number tables (syscalls_x86_64.py, syscalls_aarch64.py).

The tables come from the kernel's UAPI headers installed on the build machine (Debian's
linux-libc-dev), never from hand-typed lists:

- x86_64: ``asm/unistd_64.h`` (64-bit), ``asm/unistd_x32.h`` (x32, numbers carry
  ``__X32_SYSCALL_BIT``) and ``asm/unistd_32.h`` (i386, the IA-32 compat ABI).
- aarch64: ``asm-generic/unistd.h``, preprocessed with the switches arm64's own
  ``uapi/asm/unistd.h`` sets (64-bit longs, renameat, new stat, get/setrlimit, the time32
  calls, clone3, memfd_secret), since an x86 machine has no arm64 header.

The headers are run through ``cpp -dM`` so conditionals and aliases (``__NR3264_*``) are
resolved by the real preprocessor; the macro values are then evaluated here. Run as
``python -m gantry.linux._gen_syscalls`` (``--check`` only compares) and commit the output.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

INCLUDE = Path("/usr/include")
X86_ASM = INCLUDE / "x86_64-linux-gnu" / "asm"
GENERIC = INCLUDE / "asm-generic" / "unistd.h"
HERE = Path(__file__).resolve().parent

# Switches arm64's uapi/asm/unistd.h defines before including asm-generic/unistd.h
# (Linux 5.14 to 6.10; later kernels generate an identical table from syscall.tbl).
_ARM64_WANTS = (
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
)
# __NR_ macros of asm-generic/unistd.h that are bookkeeping, not system calls.
_NOT_SYSCALLS = frozenset({"syscalls", "arch_specific_syscall"})


def _macros(header: Path, defines: tuple[str, ...] = (), bits: int | None = None) -> dict[str, str]:
    """Every macro `header` defines, name -> unexpanded body, as cpp -dM reports them."""
    cpp = shutil.which("cpp")
    if cpp is None:
        raise SystemExit("_gen_syscalls: needs cpp (from gcc) to read the kernel headers")
    with tempfile.TemporaryDirectory() as stub:
        args = [cpp, "-dM", "-undef", "-nostdinc", "-P"]
        if bits is not None:
            # asm-generic/unistd.h includes <asm/bitsperlong.h>; answer it for the target.
            (Path(stub) / "asm").mkdir()
            (Path(stub) / "asm" / "bitsperlong.h").write_text(f"#define __BITS_PER_LONG {bits}\n")
            args += ["-I", stub]
        args += [f"-D{name}" for name in defines]
        args.append(str(header))
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    macros: dict[str, str] = {}
    for line in out.splitlines():
        _directive, name, body = [*line.split(None, 2), ""][:3]
        if "(" not in name:  # function-like macros are not numbers
            macros[name] = body.strip()
    return macros


def _evaluate(name: str, macros: Mapping[str, str], seen: frozenset[str] = frozenset()) -> int:
    """The integer value of macro `name`: literals, other macros, + - | and parentheses."""
    if name in seen:
        raise ValueError(f"macro {name} refers to itself")

    def walk(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in macros:
            return _evaluate(node.id, macros, seen | {name})
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.BitOr):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            return left | right
        raise ValueError(f"cannot evaluate macro {name} = {macros[name]!r}")

    body = macros[name].rstrip("UuLl") if macros[name][-1:].isdigit() else macros[name]
    return walk(ast.parse(body, mode="eval").body)


def _table(macros: Mapping[str, str]) -> dict[str, int]:
    table: dict[str, int] = {}
    for macro in macros:
        if macro.startswith("__NR_") and macro[5:] not in _NOT_SYSCALLS:
            table[macro[5:]] = _evaluate(macro, macros)
    return dict(sorted(table.items(), key=lambda item: (item[1], item[0])))


def x86_64_tables() -> dict[str, dict[str, int]]:
    """The x86_64, x32 and i386 tables, from the x86 headers."""
    bit = {"__X32_SYSCALL_BIT": "0x40000000"}
    return {
        "SYSCALLS": _table(_macros(X86_ASM / "unistd_64.h")),
        "SYSCALLS_X32": _table({**bit, **_macros(X86_ASM / "unistd_x32.h")}),
        "SYSCALLS_I386": _table(_macros(X86_ASM / "unistd_32.h")),
    }


def aarch64_tables() -> dict[str, dict[str, int]]:
    """The aarch64 table, from the generic header as arm64 configures it."""
    return {"SYSCALLS": _table(_macros(GENERIC, _ARM64_WANTS, bits=64))}


def _headers_version() -> str:
    try:
        version = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "linux-libc-dev"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"linux-libc-dev {version}"
    except (OSError, subprocess.CalledProcessError):
        macros = _macros(INCLUDE / "linux" / "version.h")
        parts = ("LINUX_VERSION_MAJOR", "LINUX_VERSION_PATCHLEVEL", "LINUX_VERSION_SUBLEVEL")
        return "Linux UAPI headers " + ".".join(macros.get(p, "?") for p in parts)


_DOCS = {
    "SYSCALLS": "System call numbers of the native 64-bit ABI.",
    "SYSCALLS_X32": "The x32 ABI (AUDIT_ARCH_X86_64 with __X32_SYSCALL_BIT set in the number).",
    "SYSCALLS_I386": "The IA-32 compat ABI (AUDIT_ARCH_I386).",
}


def _literal(number: int) -> str:
    # x32 numbers read best in hex, where the ABI bit shows (upper case, as ruff formats it).
    return f"0x{number:08X}" if number > 0xFFFF else str(number)


def render(machine: str, sources: list[Path], tables: Mapping[str, Mapping[str, int]]) -> str:
    """The Python source of one table module."""
    lines = [
        f'"""System call numbers for {machine}, generated from the kernel UAPI headers.',
        "",
        "GENERATED by agent/gantry/linux/_gen_syscalls.py; do not edit. Regenerate with",
        "``python -m gantry.linux._gen_syscalls`` on a machine with linux-libc-dev and cpp.",
        f"Source: {_headers_version()}:",
        *(f"    {path}" for path in sources),
        '"""',
        "",
        "from collections.abc import Mapping",
        "from types import MappingProxyType",
        "from typing import Final",
    ]
    for name, table in tables.items():
        lines += [
            "",
            f"{name}: Final[Mapping[str, int]] = MappingProxyType(",
            "    {",
            *(f'        "{call}": {_literal(number)},' for call, number in table.items()),
            "    }",
            ")",
            f'"""{_DOCS[name]}"""',
        ]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    """Each generated file and the text it must hold."""
    return {
        HERE / "syscalls_x86_64.py": render(
            "x86_64",
            [X86_ASM / f"unistd_{abi}.h" for abi in ("64", "x32", "32")],
            x86_64_tables(),
        ),
        HERE / "syscalls_aarch64.py": render("aarch64", [GENERIC], aarch64_tables()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
