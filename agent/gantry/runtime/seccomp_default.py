"""Gantry's default seccomp profile: Docker's default, as data with capability conditions.

`default_profile` is the profile in the shape of config.json's ``linux.seccomp`` plus the
conditions runc does not read, as in Docker's profile format:

- ``includes.caps``: the rule applies only when the container's bounding set holds every
  capability listed; ``excludes.caps``: only when it holds none of them. So a container
  given CAP_SYS_ADMIN gets mount/unshare/setns..., and loses the clone flag check.
- ``includes.arches`` / ``excludes.arches``: the machine's native ``SCMP_ARCH_*``.
- ``includes.minKernel``: ``"major.minor"`` the kernel must have at least.
- ``archMap``: the ABIs the filter covers besides the native one.

`resolve_profile` evaluates the conditions for one container and returns plain OCI data
(what `load_spec` accepts); `default_seccomp` returns the `Seccomp` value directly.

The content follows Docker's default (moby/profiles ``seccomp/default.json``, 2025): deny
with EPERM by default; allow what an unprivileged process uses; allow the calls a
capability guards when the container has that capability; and check arguments where a call
is only dangerous in some uses (namespace flags of clone, personality values, socket
families). Differences: rules for architectures Gantry does not run on (s390, ppc64le,
riscv64) are left out, and on aarch64 the 32-bit ARM ABI is not covered (no table for it:
such calls are killed; Docker allows them).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gantry.runtime.spec import CAPABILITIES, Seccomp, SeccompArg, Syscall

__all__ = [
    "ALWAYS_ALLOWED",
    "CLONE_NAMESPACE_FLAGS",
    "PERSONALITIES",
    "SOCKET_FAMILIES",
    "default_profile",
    "default_seccomp",
    "default_seccomp_config",
    "resolve_profile",
    "seccomp_from_config",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- the calls every container may make ---------------------------------------------------

_FILES = _words(
    """
    access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
    faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchmodat2
    fchown fchown32 fchownat fcntl fcntl64 fdatasync flock fstat fstat64 fstatat64 fstatfs
    fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents getdents64 lchown
    lchown32 link linkat _llseek lseek lstat lstat64 mkdir mkdirat mknod mknodat
    name_to_handle_at newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev
    pwritev2 read readahead readlink readlinkat readv rename renameat renameat2 rmdir
    sendfile sendfile64 splice stat stat64 statfs statfs64 statx symlink symlinkat sync
    sync_file_range syncfs tee truncate truncate64 umask unlink unlinkat utime utimensat
    utimensat_time64 utimes vmsplice write writev cachestat listmount statmount
    """
)
_XATTRS = _words(
    """
    fgetxattr flistxattr fremovexattr fsetxattr getxattr getxattrat lgetxattr listxattr
    listxattrat llistxattr lremovexattr lsetxattr removexattr removexattrat setxattr
    setxattrat
    """
)
_EVENTS = _words(
    """
    epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
    epoll_wait_old eventfd eventfd2 fanotify_mark inotify_add_watch inotify_init
    inotify_init1 inotify_rm_watch poll ppoll ppoll_time64 pselect6 pselect6_time64 select
    _newselect signalfd signalfd4 timerfd_create timerfd_gettime timerfd_gettime64
    timerfd_settime timerfd_settime64 io_cancel io_destroy io_getevents io_pgetevents
    io_pgetevents_time64 io_setup io_submit ioctl ioprio_get ioprio_set
    """
)
_MEMORY = _words(
    """
    brk madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mlock mlock2
    mlockall mmap mmap2 mprotect mremap mseal msync munlock munlockall munmap pkey_alloc
    pkey_free pkey_mprotect remap_file_pages
    """
)
_PROCESSES = _words(
    """
    capget capset execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill
    tgkill pidfd_open pidfd_send_signal process_mrelease getpgid getpgrp getpid getppid
    getsid gettid setpgid setsid getpriority setpriority getrlimit setrlimit ugetrlimit
    prlimit64 getrusage prctl seccomp restart_syscall rseq set_robust_list get_robust_list
    set_tid_address set_thread_area get_thread_area landlock_add_rule
    landlock_create_ruleset landlock_restrict_self uretprobe riscv_hwprobe getcpu
    sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield
    """
)
_IDENTITY = _words(
    """
    getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getresgid
    getresgid32 getresuid getresuid32 getuid getuid32 setfsgid setfsgid32 setfsuid
    setfsuid32 setgid setgid32 setgroups setgroups32 setregid setregid32 setresgid
    setresgid32 setresuid setresuid32 setreuid setreuid32 setuid setuid32
    """
)
_SIGNALS_AND_TIME = _words(
    """
    alarm pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
    rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaltstack
    sigprocmask sigreturn adjtimex clock_adjtime clock_adjtime64 clock_getres
    clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep clock_nanosleep_time64
    getitimer setitimer gettimeofday nanosleep time times timer_create timer_delete
    timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 futex
    futex_requeue futex_time64 futex_wait futex_waitv futex_wake
    """
)
_IPC_AND_NETWORK = _words(
    """
    pipe pipe2 ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget
    semop semtimedop semtimedop_time64 shmat shmctl shmdt shmget accept accept4 bind connect
    getpeername getsockname getsockopt listen recv recvfrom recvmmsg recvmmsg_time64 recvmsg
    send sendmmsg sendmsg sendto setsockopt shutdown socketcall socketpair getrandom sysinfo
    uname
    """
)

ALWAYS_ALLOWED: Final = (
    *_FILES,
    *_XATTRS,
    *_EVENTS,
    *_MEMORY,
    *_PROCESSES,
    *_IDENTITY,
    *_SIGNALS_AND_TIME,
    *_IPC_AND_NETWORK,
)
"""The calls allowed whatever the capabilities (Docker's unconditional allow-list)."""

# --- argument checks ------------------------------------------------------------------------

#: The address families socket(2) may create (linux/socket.h). Missing, as in Docker:
#: families the kernel no longer implements (DECnet 12, ECONET 19, ATMSVC 20, IRDA 23,
#: WANPIPE 25, ISDN 34, CAIF 37), AF_ALG 38 (the kernel crypto API, attack surface no
#: container needs) and AF_VSOCK 40 (host/VM sockets, global across network namespaces).
SOCKET_FAMILIES: Final[Mapping[int, str]] = {
    family: f"AF_{name}"
    for family, name in (
        (1, "UNIX"), (2, "INET"), (3, "AX25"), (4, "IPX"), (5, "APPLETALK"), (6, "NETROM"),
        (7, "BRIDGE"), (8, "ATMPVC"), (9, "X25"), (10, "INET6"), (11, "ROSE"),
        (13, "NETBEUI"), (14, "SECURITY"), (15, "KEY"), (16, "NETLINK"), (17, "PACKET"),
        (18, "ASH"), (21, "RDS"), (22, "SNA"), (24, "PPPOX"), (26, "LLC"), (27, "IB"),
        (28, "MPLS"), (29, "CAN"), (30, "TIPC"), (31, "BLUETOOTH"), (32, "IUCV"),
        (33, "RXRPC"), (35, "PHONET"), (36, "IEEE802154"), (39, "NFC"), (41, "KCM"),
        (42, "QIPCRTR"), (43, "SMC"), (44, "XDP"), (45, "MCTP"),
    )
}  # fmt: skip

#: personality(2) values a container may set: PER_LINUX, PER_LINUX32, UNAME26 with each,
#: and 0xffffffff, which only queries. Others (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE...)
#: weaken the process's own hardening.
PERSONALITIES: Final = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

#: clone(2) flags that create namespaces: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
#: NEWPID, NEWNET. Without CAP_SYS_ADMIN, clone must carry none of them.
CLONE_NAMESPACE_FLAGS: Final = 0x7E020000


def _arg(index: int, op: str, value: int, value_two: int | None = None) -> dict[str, Any]:
    arg: dict[str, Any] = {"index": index, "value": value, "op": f"SCMP_CMP_{op}"}
    if value_two is not None:
        arg["valueTwo"] = value_two
    return arg


def _socket_rules() -> list[dict[str, Any]]:
    # One condition per rule: runc ORs several conditions on one argument, Gantry ANDs
    # them, so only single-condition rules mean the same in both. The run of families
    # from 1 up becomes one "less than" (0, AF_UNSPEC, cannot be created anyway).
    families = sorted(SOCKET_FAMILIES)
    run_end = 0
    while run_end < len(families) and families[run_end] == run_end + 1:
        run_end += 1
    rules = [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [_arg(0, "LT", run_end + 1)]}
    ]
    rules += [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [_arg(0, "EQ", family)]}
        for family in families[run_end:]
    ]
    return rules


# --- capability-guarded calls ---------------------------------------------------------------

# (capability, calls it unlocks, why it is kept from containers without it)
_GUARDED: Final = (
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at", "opens any inode by handle (shocker)"),
    (
        "CAP_SYS_ADMIN",
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie "
        "lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount "
        "open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns "
        "syslog umount umount2 unshare",
        "mounts, namespaces and kernel interfaces of the admin capability",
    ),
    ("CAP_SYS_BOOT", "reboot", "reboots the host, or its pid namespace"),
    ("CAP_SYS_CHROOT", "chroot", ""),
    ("CAP_SYS_MODULE", "delete_module init_module finit_module", "loads kernel code"),
    ("CAP_SYS_PACCT", "acct", "process accounting is host-wide"),
    (
        "CAP_SYS_PTRACE",
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        "reaches into other processes",
    ),
    ("CAP_SYS_RAWIO", "iopl ioperm", "raw port I/O"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64", "the clock is global"),
    ("CAP_SYS_TTY_CONFIG", "vhangup", ""),
    (
        "CAP_SYS_NICE",
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
        "NUMA placement",
    ),
    ("CAP_SYSLOG", "syslog", "the kernel log is the host's"),
    ("CAP_BPF", "bpf", ""),
    ("CAP_PERFMON", "perf_event_open", ""),
)

_ARCH_SPECIFIC: Final = (
    ("arch_prctl", ("SCMP_ARCH_X86_64", "SCMP_ARCH_X32")),
    ("modify_ldt", ("SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_X86")),
    (
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        ("SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"),
    ),
)

#: Machine -> its native SCMP arch, and the other ABIs the filter covers there.
_ARCH_MAP: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "x86_64": ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    "aarch64": ("SCMP_ARCH_AARCH64", ()),
}


def default_profile() -> dict[str, Any]:
    """Gantry's default profile with its conditions (a fresh copy; callers may change it)."""
    allow = "SCMP_ACT_ALLOW"
    rules: list[dict[str, Any]] = [{"names": list(ALWAYS_ALLOWED), "action": allow}]
    rules.append(
        {
            "names": ["process_vm_readv", "process_vm_writev", "ptrace"],
            "action": allow,
            "comment": "before 4.8 a ptraced process could escape seccomp",
            "includes": {"minKernel": "4.8"},
        }
    )
    rules += _socket_rules()
    rules += [
        {"names": ["personality"], "action": allow, "args": [_arg(0, "EQ", value)]}
        for value in PERSONALITIES
    ]
    rules += [
        {"names": names.split(), "action": allow, "includes": {"arches": list(arches)}}
        for names, arches in _ARCH_SPECIFIC
    ]
    for cap, names, why in _GUARDED:
        rule: dict[str, Any] = {
            "names": names.split(),
            "action": allow,
            "includes": {"caps": [cap]},
        }
        if why:
            rule["comment"] = why
        rules.append(rule)
    # Without CAP_SYS_ADMIN: threads and fork, but no namespaces.
    no_admin = {"caps": ["CAP_SYS_ADMIN"]}
    rules.append(
        {
            "names": ["clone"],
            "action": allow,
            "args": [_arg(0, "MASKED_EQ", CLONE_NAMESPACE_FLAGS, 0)],
            "excludes": no_admin,
        }
    )
    rules.append(
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 38,
            "comment": "its flags sit behind a pointer seccomp cannot read; ENOSYS (38) "
            "makes libc fall back to clone",
            "excludes": no_admin,
        }
    )
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": {native: list(others) for native, others in _ARCH_MAP.values()},
        "syscalls": rules,
    }


# --- resolving the conditions ---------------------------------------------------------------


def _native_arch(machine: str | None) -> str:
    machine = machine or platform.machine()
    if machine not in _ARCH_MAP:
        raise ValueError(f"no default seccomp profile for machine {machine!r}")
    return _ARCH_MAP[machine][0]


def _kernel_at_least(wanted: str, kernel: tuple[int, int] | None) -> bool:
    if kernel is None:
        return True  # the caller vouches for a current kernel
    major, _dot, minor = wanted.partition(".")
    return kernel >= (int(major), int(minor or 0))


def _applies(
    rule: Mapping[str, Any], caps: frozenset[str], native: str, kernel: tuple[int, int] | None
) -> bool:
    includes: Mapping[str, Any] = rule.get("includes") or {}
    excludes: Mapping[str, Any] = rule.get("excludes") or {}
    if not all(cap in caps for cap in includes.get("caps", ())):
        return False
    if any(cap in caps for cap in excludes.get("caps", ())):
        return False
    if "arches" in includes and native not in includes["arches"]:
        return False
    if native in excludes.get("arches", ()):
        return False
    return "minKernel" not in includes or _kernel_at_least(includes["minKernel"], kernel)


def resolve_profile(
    profile: Mapping[str, Any],
    *,
    caps: Iterable[str],
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Evaluate the conditions of `profile` for one container: plain ``linux.seccomp`` data.

    `caps` is the container's bounding set (``CAP_*`` names), `machine` defaults to this
    one, `kernel` is ``(major, minor)``; None takes ``minKernel`` conditions as met.
    """
    held = frozenset(caps)
    unknown = sorted(held - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"unknown capabilities: {', '.join(unknown)}")
    native = _native_arch(machine)
    out: dict[str, Any] = {
        key: profile[key] for key in ("defaultAction", "defaultErrnoRet") if key in profile
    }
    arch_map: Mapping[str, list[str]] = profile.get("archMap") or {}
    out["architectures"] = [native, *arch_map.get(native, ())]
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    out["syscalls"] = [
        {
            key: value
            for key, value in rule.items()
            if key in ("names", "action", "errnoRet", "args")
        }
        for rule in profile.get("syscalls", ())
        if _applies(rule, held, native, kernel)
    ]
    return out


def default_seccomp_config(
    caps: Iterable[str], *, machine: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The default profile for a container with bounding set `caps`, as config.json data."""
    return resolve_profile(default_profile(), caps=caps, machine=machine, kernel=kernel)


def seccomp_from_config(data: Mapping[str, Any]) -> Seccomp:
    """The `Seccomp` value of trusted ``linux.seccomp`` data (user input goes through load_spec)."""
    return Seccomp(
        default_action=data["defaultAction"],
        default_errno_ret=data.get("defaultErrnoRet"),
        architectures=tuple(data.get("architectures", ())),
        flags=tuple(data.get("flags", ())),
        syscalls=tuple(
            Syscall(
                names=tuple(rule["names"]),
                action=rule["action"],
                errno_ret=rule.get("errnoRet"),
                args=tuple(
                    SeccompArg(
                        index=arg["index"],
                        value=arg["value"],
                        value_two=arg.get("valueTwo", 0),
                        op=arg["op"],
                    )
                    for arg in rule.get("args", ())
                ),
            )
            for rule in data.get("syscalls", ())
        ),
    )


def default_seccomp(
    caps: Iterable[str], *, machine: str | None = None, kernel: tuple[int, int] | None = None
) -> Seccomp:
    """The default profile for a container with bounding set `caps`, as a `Seccomp` value."""
    return seccomp_from_config(default_seccomp_config(caps, machine=machine, kernel=kernel))
