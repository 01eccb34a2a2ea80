"""gantry.runtime.seccomp_default: Docker's default profile, resolved per container, compiled."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from gantry.linux import seccomp as k
from gantry.linux.syscalls_aarch64 import SYSCALLS as AARCH64
from gantry.linux.syscalls_x86_64 import SYSCALLS as X86_64
from gantry.linux.syscalls_x86_64 import SYSCALLS_I386 as I386
from gantry.linux.syscalls_x86_64 import SYSCALLS_X32 as X32
from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
from gantry.runtime.seccomp import compile_seccomp
from gantry.runtime.seccomp_default import (
    ALWAYS_ALLOWED,
    CLONE_NAMESPACE_FLAGS,
    PERSONALITIES,
    SOCKET_FAMILIES,
    default_profile,
    default_seccomp,
    default_seccomp_config,
    resolve_profile,
)
from gantry.runtime.spec import CAPABILITIES, load_spec
from test_seccomp_bpf import ALLOW, KILL_PROCESS, check_program, errno_ret, run, verdict

EPERM = errno_ret(errno.EPERM)
ENOSYS = errno_ret(errno.ENOSYS)
DOCKER_CAPS = tuple(DEFAULT_CAPABILITIES)
ADMIN_CAPS = (*DOCKER_CAPS, "CAP_SYS_ADMIN")
ALL_CAPS = tuple(CAPABILITIES)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17
# What glibc's fork() and pthread_create() pass to clone.
FORK_FLAGS = 0x01200000 | SIGCHLD  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
THREAD_FLAGS = 0x003D0F00  # VM FS FILES SIGHAND THREAD SYSVSEM SETTLS PARENT_SETTID CLEARTID


def program_for(caps: tuple[str, ...], machine: str = "x86_64", **kwargs: Any) -> list[Any]:
    program, _warnings = compile_seccomp(
        default_seccomp(caps, machine=machine, **kwargs), machine=machine
    )
    check_program(program)
    return program


@pytest.fixture(scope="module")
def docker() -> list[Any]:
    return program_for(DOCKER_CAPS)


@pytest.fixture(scope="module")
def admin() -> list[Any]:
    return program_for(ADMIN_CAPS)


def call(program: list[Any], name: str, *args: int) -> int:
    return run(program, X86_64[name], args=args)


# --- the data -----------------------------------------------------------------------------


def test_the_allow_list_matches_dockers_size_and_has_no_duplicates() -> None:
    assert len(ALWAYS_ALLOWED) == len(set(ALWAYS_ALLOWED)) == 361
    for dangerous in ("mount", "unshare", "setns", "keyctl", "add_key", "request_key",
                      "reboot", "kexec_load", "init_module", "bpf", "ptrace", "clone",
                      "clone3", "socket", "personality", "pivot_root", "swapon", "chroot",
                      "userfaultfd", "io_uring_setup", "open_by_handle_at"):  # fmt: skip
        assert dangerous not in ALWAYS_ALLOWED, dangerous


def test_socket_families_leave_out_alg_vsock_and_dead_families() -> None:
    assert set(range(1, 46)) - set(SOCKET_FAMILIES) == {12, 19, 20, 23, 25, 34, 37, 38, 40}
    assert SOCKET_FAMILIES[2] == "AF_INET" and SOCKET_FAMILIES[16] == "AF_NETLINK"


def test_the_profile_is_json_and_every_capability_in_it_exists() -> None:
    profile = default_profile()
    assert json.loads(json.dumps(profile)) == profile
    for rule in profile["syscalls"]:
        for key in ("includes", "excludes"):
            for cap in rule.get(key, {}).get("caps", ()):
                assert cap in CAPABILITIES, cap
    assert default_profile() is not default_profile()  # callers get their own copy


def test_resolved_profile_is_a_valid_oci_section() -> None:
    config = default_config(["/bin/sh"], "/rootfs")
    config["linux"]["seccomp"] = default_seccomp_config(DOCKER_CAPS, machine="x86_64")
    spec = load_spec(config)
    assert spec.linux is not None
    assert spec.linux.seccomp == default_seccomp(DOCKER_CAPS, machine="x86_64")
    section = spec.linux.seccomp
    assert section.default_action == "SCMP_ACT_ERRNO" and section.default_errno_ret == 1
    assert section.architectures == ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")
    assert all(not set(rule) - {"names", "action", "errnoRet", "args"}
               for rule in config["linux"]["seccomp"]["syscalls"])  # fmt: skip


def test_capabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown capabilities: CAP_FLY, SYS_ADMIN"):
        default_seccomp(["CAP_FLY", "SYS_ADMIN"], machine="x86_64")
    with pytest.raises(ValueError, match="no default seccomp profile for machine 'sparc'"):
        default_seccomp(DOCKER_CAPS, machine="sparc")


def test_resolution_follows_includes_and_excludes() -> None:
    def allow(name: str, **conditions: Any) -> dict[str, Any]:
        return {"names": [name], "action": "SCMP_ACT_ALLOW", **conditions}

    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            allow("a", includes={"caps": ["CAP_KILL", "CAP_CHOWN"]}),
            allow("b", excludes={"caps": ["CAP_KILL", "CAP_BPF"]}),
            allow("c", includes={"arches": ["SCMP_ARCH_AARCH64"]}),
            allow("d", excludes={"arches": ["SCMP_ARCH_AARCH64"]}),
            allow("e", includes={"minKernel": "5.10"}),
        ],
    }

    def names(caps: list[str], machine: str, kernel: tuple[int, int] | None = None) -> str:
        out = resolve_profile(profile, caps=caps, machine=machine, kernel=kernel)
        return "".join(rule["names"][0] for rule in out["syscalls"])

    assert names(["CAP_KILL"], "x86_64") == "de"  # a needs both caps; b is excluded by one
    assert names(["CAP_KILL", "CAP_CHOWN"], "x86_64", (5, 10)) == "ade"
    assert names([], "aarch64", (5, 4)) == "bc"
    assert names([], "aarch64", (6, 1)) == "bce"


# --- compiled, for a container with Docker's default capabilities ------------------------


def test_the_program_stays_well_under_the_kernel_limit() -> None:
    sizes = {
        (machine, name): len(program_for(caps, machine))
        for machine in ("x86_64", "aarch64")
        for name, caps in (("docker", DOCKER_CAPS), ("admin", ADMIN_CAPS), ("all", ALL_CAPS))
    }
    assert all(size < k.BPF_MAXINSNS for size in sizes.values()), sizes
    assert sizes["x86_64", "docker"] < 1200, sizes  # about 1040 today: three ABIs


@pytest.mark.parametrize(
    "name",
    ["mount", "umount2", "unshare", "setns", "pivot_root", "keyctl", "add_key", "request_key",
     "reboot", "kexec_load", "init_module", "finit_module", "delete_module", "bpf",
     "perf_event_open", "open_by_handle_at", "clock_settime", "settimeofday", "swapon",
     "acct", "sethostname", "iopl", "ioperm", "syslog", "vhangup", "mbind", "kcmp",
     "pidfd_getfd", "process_madvise", "userfaultfd", "io_uring_setup", "fsopen",
     "move_mount", "open_tree", "lookup_dcookie", "quotactl", "nfsservctl", "uselib"],
)  # fmt: skip
def test_privileged_calls_are_denied_with_eperm(docker: list[Any], name: str) -> None:
    assert call(docker, name) == EPERM, verdict(call(docker, name))


def test_calls_every_process_makes_are_allowed(docker: list[Any]) -> None:
    for name in ALWAYS_ALLOWED:
        if name in X86_64:
            assert call(docker, name) == ALLOW, name


def test_docker_caps_unlock_chroot_and_ptrace_is_allowed_on_current_kernels(
    docker: list[Any],
) -> None:
    assert call(docker, "chroot") == ALLOW  # CAP_SYS_CHROOT is a default capability
    for name in ("ptrace", "process_vm_readv", "process_vm_writev"):
        assert call(docker, name) == ALLOW, name
    old = program_for(DOCKER_CAPS, kernel=(4, 4))
    assert call(old, "ptrace") == EPERM
    assert call(program_for(DOCKER_CAPS, kernel=(4, 8)), "ptrace") == ALLOW


def test_clone_without_namespace_flags_only(docker: list[Any]) -> None:
    assert call(docker, "clone", FORK_FLAGS) == ALLOW
    assert call(docker, "clone", THREAD_FLAGS) == ALLOW
    for flag in (CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, 0x02000000, 0x04000000,
                 0x08000000, 0x20000000):  # fmt: skip
        assert flag & CLONE_NAMESPACE_FLAGS
        assert call(docker, "clone", FORK_FLAGS | flag) == EPERM, hex(flag)
    # A flag above 32 bits is no namespace flag: the mask leaves the high word alone.
    assert call(docker, "clone", FORK_FLAGS | 1 << 40) == ALLOW
    # clone3 hides its flags behind a pointer: ENOSYS sends libc back to clone.
    assert call(docker, "clone3") == ENOSYS


def test_socket_families(docker: list[Any]) -> None:
    for family in range(0, 64):
        want = ALLOW if family in SOCKET_FAMILIES or family == 0 else EPERM
        assert call(docker, "socket", family, 1, 0) == want, family
    assert call(docker, "socket", 2 | 1 << 32) == EPERM  # high word set: not AF_INET
    assert call(docker, "socket", 40 | 1 << 32) == EPERM
    assert call(docker, "socketpair", 40) == ALLOW  # only socket(2) is checked, as in Docker


def test_personality_values(docker: list[Any]) -> None:
    for value in PERSONALITIES:
        assert call(docker, "personality", value) == ALLOW, hex(value)
    for value in (0x0040000, 0x0400000, 0x1, 0x20001, 0xFFFFFFFE, 0x1_00000000, 0x1_FFFFFFFF):
        assert call(docker, "personality", value) == EPERM, hex(value)


def test_x86_specific_calls(docker: list[Any]) -> None:
    assert call(docker, "arch_prctl") == ALLOW
    assert call(docker, "modify_ldt") == ALLOW


def test_compat_abis_on_x86_64(docker: list[Any]) -> None:
    i386 = k.AUDIT_ARCH_I386
    for name in ("read", "write", "getpid", "socketcall", "mmap2", "_llseek", "fcntl64"):
        assert run(docker, I386[name], arch=i386) == ALLOW, name
    for name in ("mount", "unshare", "keyctl", "reboot"):
        assert run(docker, I386[name], arch=i386) == EPERM, name
    assert run(docker, X32["read"]) == ALLOW
    assert run(docker, X32["mount"]) == EPERM
    assert run(docker, 0, arch=k.AUDIT_ARCH_AARCH64) == KILL_PROCESS


def test_calls_newer_than_the_table_get_enosys(docker: list[Any]) -> None:
    newest = max(X86_64.values())
    for nr in range(newest + 1, newest + 30):
        assert run(docker, nr) == ENOSYS, nr


def _words(text: str) -> list[str]:
    return text.split()


# strace -f of Debian's static busybox 1.35 running `sh -c` with ls -l | grep, cat > file,
# sleep, kill -0, id, date, ps, mkdir -p, rm -r, cp, mv, chmod, touch, ln -s, readlink,
# env, hostname, uname -a, df and ls -la /proc/self.
BUSYBOX_SHELL = _words(
    """
    access arch_prctl brk chmod clock_nanosleep clone close dup2 execve exit_group fcntl
    getdents64 getegid geteuid getgid getpid getppid getrandom getuid ioctl kill lseek mkdir
    mprotect newfstatat openat pipe2 prctl prlimit64 read readlink rename rmdir rseq
    rt_sigaction rt_sigreturn sendfile set_robust_list set_tid_address statfs symlink umask
    uname utimensat wait4 write
    """
)


def test_a_busybox_shell_has_what_it_needs(docker: list[Any]) -> None:
    for name in BUSYBOX_SHELL:
        assert call(docker, name) == ALLOW, name
    assert call(docker, "clone", FORK_FLAGS) == ALLOW
    assert call(docker, "socket", 1, 1, 0) == ALLOW  # AF_UNIX: syslog, nslookup
    assert call(docker, "socket", 2, 2, 0) == ALLOW  # AF_INET: ping, wget


# --- capability-conditional rules -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [("mount", ()), ("umount2", ()), ("unshare", (CLONE_NEWUSER,)), ("setns", ()),
     ("sethostname", ()), ("setdomainname", ()), ("fsopen", ()), ("open_tree", ()),
     ("quotactl", ()), ("syslog", ()), ("bpf", ()), ("perf_event_open", ()),
     ("clone", (FORK_FLAGS | CLONE_NEWNS | CLONE_NEWUSER,)), ("clone3", ())],
)  # fmt: skip
def test_cap_sys_admin_unlocks_its_calls(
    docker: list[Any], admin: list[Any], name: str, args: tuple[int, ...]
) -> None:
    assert call(docker, name, *args) in (EPERM, ENOSYS)
    assert call(admin, name, *args) == ALLOW, verdict(call(admin, name, *args))


def test_cap_sys_admin_keeps_the_other_capabilities_guarded(admin: list[Any]) -> None:
    for name in ("reboot", "init_module", "clock_settime", "iopl", "acct", "kcmp", "keyctl"):
        assert call(admin, name) == EPERM, name


@pytest.mark.parametrize(
    ("cap", "names"),
    [
        ("CAP_SYS_BOOT", ("reboot",)),
        ("CAP_SYS_MODULE", ("init_module", "finit_module", "delete_module")),
        ("CAP_SYS_TIME", ("settimeofday", "clock_settime")),
        ("CAP_SYS_PTRACE", ("kcmp", "pidfd_getfd", "process_madvise")),
        ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
        ("CAP_SYS_PACCT", ("acct",)),
        ("CAP_SYS_NICE", ("mbind", "set_mempolicy", "get_mempolicy")),
        ("CAP_SYSLOG", ("syslog",)),
        ("CAP_BPF", ("bpf",)),
        ("CAP_PERFMON", ("perf_event_open",)),
        ("CAP_DAC_READ_SEARCH", ("open_by_handle_at",)),
        ("CAP_SYS_TTY_CONFIG", ("vhangup",)),
    ],
)
def test_each_capability_unlocks_its_calls(
    docker: list[Any], cap: str, names: tuple[str, ...]
) -> None:
    program = program_for((*DOCKER_CAPS, cap))
    for name in names:
        assert call(docker, name) == EPERM, name
        assert call(program, name) == ALLOW, (cap, name)
    assert call(program, "mount") == EPERM  # nothing beyond what the capability guards


def test_dropping_sys_chroot_denies_chroot() -> None:
    caps = tuple(cap for cap in DOCKER_CAPS if cap != "CAP_SYS_CHROOT")
    assert call(program_for(caps), "chroot") == EPERM


def test_calls_nothing_unlocks(admin: list[Any]) -> None:
    every = program_for(ALL_CAPS)
    for name in ("keyctl", "add_key", "request_key", "kexec_load", "userfaultfd", "swapon",
                 "pivot_root", "io_uring_setup", "nfsservctl"):  # fmt: skip
        assert call(every, name) == EPERM, name


# --- aarch64 ------------------------------------------------------------------------------


def test_aarch64_profile() -> None:
    docker = program_for(DOCKER_CAPS, "aarch64")
    admin = program_for(ADMIN_CAPS, "aarch64")
    arch = k.AUDIT_ARCH_AARCH64

    def on(program: list[Any], name: str, *args: int) -> int:
        return run(program, AARCH64[name], arch=arch, args=args)

    for name in ("openat", "read", "write", "getpid", "execve", "set_tls", "cacheflush"):
        if name in AARCH64:
            assert on(docker, name) == ALLOW, name
    for name in ("mount", "unshare", "keyctl", "reboot"):
        assert on(docker, name) == EPERM, name
    assert on(docker, "clone", FORK_FLAGS) == ALLOW
    assert on(docker, "clone", FORK_FLAGS | CLONE_NEWNS) == EPERM
    assert on(admin, "mount") == ALLOW
    assert run(docker, 0, arch=k.AUDIT_ARCH_ARM) == KILL_PROCESS
    assert run(docker, 0, arch=k.AUDIT_ARCH_X86_64) == KILL_PROCESS
