# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# SPDX-License-Identifier: Apache-2.0
"""Kernel-support check for Gantry hosts: what the kernel offers containers, and how to fix it.

One engine, standard library only, shared by the ``gantry.fleet.kernel_check`` module (on
hosts without the agent) and by ``gantry checkconfig`` (the agent imports this very file as
``gantry.kernel_check``).

It reads the kernel build configuration, the cgroup hierarchy, the active security modules,
a few sysctls and binaries, and -- for the running kernel only -- asks the kernel itself with
small probes. Every probe runs in a forked child, so the caller's namespaces, mounts and
seccomp state never change, and every probe removes what it created.

Everything read from ``/proc`` and ``/sys`` goes through ``sysroot`` so tests can point the
engine at a crafted tree; probes only ever run against the live system (``sysroot="/"``).
"""

# This file also runs on managed hosts under Python 3.8 (through Ansible), so it keeps the
# ansible-test boilerplate and typing.Dict/List/Optional, which pyupgrade would rewrite.
# ruff: noqa: UP001, UP006, UP035, UP045, RUF100

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import errno
import gzip
import os
import re
import select
import signal
import stat
import tempfile
import time
import zlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

SCHEMA = 1
EXIT_OK, EXIT_MISSING, EXIT_UNREADABLE = 0, 1, 2

REQUIRED = "required"
OPTIONAL = "optional"

# (name, description, requested by default)
FEATURES = (
    ("namespaces", "Mount, UTS, IPC, PID, network and cgroup namespaces for every container", True),
    (
        "cgroups",
        "A usable cgroup hierarchy (v1, v2 or hybrid) with the controllers Gantry limits: "
        "cpu, memory, pids, devices, freezer",
        True,
    ),
    ("overlay", "Overlay mounts with whiteouts, for layered container root filesystems", True),
    ("seccomp", "Seccomp BPF filters, for the default syscall profile", True),
    (
        "bridge",
        "The default container network: veth pairs on a Linux bridge with masquerading NAT "
        "(CNI bridge plugin)",
        True,
    ),
    ("ports", "Publishing container ports on the host with DNAT rules (CNI portmap plugin)", True),
    ("userns", "User namespaces: user-mapped and rootless containers", False),
    ("checkpoint", "Checkpoint and restore of running containers with CRIU", False),
    ("macvlan", "macvlan networks: containers with their own MAC address on a host link", False),
    ("ipvlan", "ipvlan networks: containers sharing a host link's MAC address", False),
    ("vlan", "802.1Q VLAN sub-interfaces for container networks", False),
    ("vxlan", "VXLAN overlay networks that span hosts", False),
    ("lsm", "An active mandatory access control module (AppArmor or SELinux)", False),
    ("fuse", "FUSE file systems inside containers (lxcfs, fuse-overlayfs, sshfs)", False),
    ("timens", "Time namespaces: per-container monotonic and boot-time clock offsets", False),
)

NAMESPACES = "Namespaces"
USERNS = "User namespaces"
CGROUPS = "Control groups"
STORAGE = "Storage"
SECURITY = "Security"
NETWORKING = "Networking"
CHECKPOINT = "Checkpoint/Restore"
MISC = "Misc"
LIMITS = "Limits"
SECTIONS = (NAMESPACES, USERNS, CGROUPS, STORAGE, SECURITY, NETWORKING, CHECKPOINT, MISC, LIMITS)

STATUSES = ("ok", "missing", "warn", "unknown", "skipped")

Version = Tuple[int, int, int]
Item = Dict[str, Any]
ProbeResult = Tuple[Optional[bool], str]
Probe = Callable[[], ProbeResult]

# An unknown version is treated as the newest, as lxc-checkconfig does, so options that
# only old kernels had drop out instead of failing.
_NEWEST = (999, 0, 0)


def _kconfig(
    option: str,
    section: str,
    label: str,
    features: Dict[str, str],
    since: Optional[Tuple[int, ...]] = None,
    before: Optional[Tuple[int, ...]] = None,
    module: Any = None,
    only_if: Optional[str] = None,
) -> Dict[str, Any]:
    """One kernel option to check. ``since``/``before`` gate it on the checked kernel's
    version (half-open), ``module`` names the module(s) an ``=m`` build produces, and
    ``only_if`` names an option without which this one cannot exist."""
    if isinstance(module, str):
        module = (module,)
    return {
        "option": option,
        "section": section,
        "label": label,
        "features": features,
        "since": since,
        "before": before,
        "modules": module or (),
        "only_if": only_if,
    }


_NS = {"namespaces": REQUIRED}
_CG = {"cgroups": REQUIRED}
_CG_OPT = {"cgroups": OPTIONAL}
_BR = {"bridge": REQUIRED}
_BR_OPT = {"bridge": OPTIONAL}
_NAT = {"bridge": REQUIRED, "ports": REQUIRED}
_PORTS = {"ports": REQUIRED}
_CR = {"checkpoint": REQUIRED}

# What lxc-checkconfig and moby's check-config.sh check, plus what Gantry's own core needs
# (overlay, seccomp filters, cgroup BPF, pids, the CNI bridge/portmap netfilter matches).
# Left out on purpose: Docker storage drivers Gantry does not have (aufs, btrfs,
# devicemapper, zfs, ext3), IPVS (swarm load balancing), IPsec for encrypted overlay
# networks and the vsyscall emulation mode.
KCONFIG = (
    # Namespaces
    _kconfig("NAMESPACES", NAMESPACES, "Namespaces", _NS),
    _kconfig("UTS_NS", NAMESPACES, "UTS namespace", _NS),
    _kconfig("IPC_NS", NAMESPACES, "IPC namespace", _NS),
    _kconfig("PID_NS", NAMESPACES, "PID namespace", _NS),
    _kconfig(
        "NET_NS", NAMESPACES, "Network namespace", {"namespaces": REQUIRED, "bridge": REQUIRED}
    ),
    _kconfig("USER_NS", NAMESPACES, "User namespace", {"userns": REQUIRED}),
    _kconfig("TIME_NS", NAMESPACES, "Time namespace", {"timens": REQUIRED}, since=(5, 6)),
    # Gone in 4.7, where every devpts mount became its own instance (lxc gates it there;
    # moby's "< 4.8" flags 4.7 configurations that cannot have the option).
    _kconfig(
        "DEVPTS_MULTIPLE_INSTANCES", NAMESPACES, "Multiple /dev/pts instances", _NS, before=(4, 7)
    ),
    # Control groups
    _kconfig("CGROUPS", CGROUPS, "Control groups", _CG),
    _kconfig("CGROUP_SCHED", CGROUPS, "CPU controller (group scheduling)", _CG),
    _kconfig("CGROUP_CPUACCT", CGROUPS, "CPU accounting controller", _CG),
    _kconfig("CPUSETS", CGROUPS, "Cpuset controller", _CG, only_if="SMP"),
    _kconfig("CGROUP_MEM_RES_CTLR", CGROUPS, "Memory controller", _CG, before=(3, 6)),
    _kconfig("MEMCG", CGROUPS, "Memory controller", _CG, since=(3, 6)),
    _kconfig("CGROUP_PIDS", CGROUPS, "PIDs controller", _CG),
    _kconfig("CGROUP_DEVICE", CGROUPS, "Device controller", _CG),
    _kconfig("CGROUP_FREEZER", CGROUPS, "Freezer controller", _CG),
    # cgroup v2 has no devices controller: device access is a BPF program on the cgroup.
    _kconfig("CGROUP_BPF", CGROUPS, "BPF programs on cgroups", _CG, since=(4, 15)),
    _kconfig("RESOURCE_COUNTERS", CGROUPS, "Resource counters", _CG_OPT, before=(3, 19)),
    _kconfig("MEMCG_KMEM", CGROUPS, "Kernel memory accounting", _CG_OPT, before=(4, 6)),
    # Swap accounting is part of MEMCG from 6.1 (and on by default from 5.8).
    _kconfig("MEMCG_SWAP", CGROUPS, "Swap accounting", _CG_OPT, before=(6, 1)),
    _kconfig("MEMCG_SWAP_ENABLED", CGROUPS, "Swap accounting by default", _CG_OPT, before=(5, 8)),
    _kconfig("BLK_CGROUP", CGROUPS, "Block I/O controller", _CG_OPT),
    _kconfig("BLK_DEV_THROTTLING", CGROUPS, "Block I/O throttling", _CG_OPT),
    _kconfig(
        "IOSCHED_CFQ", CGROUPS, "CFQ I/O scheduler", _CG_OPT, before=(5, 0), module="cfq_iosched"
    ),
    _kconfig("CFQ_GROUP_IOSCHED", CGROUPS, "CFQ group scheduling", _CG_OPT, before=(5, 0)),
    _kconfig("CGROUP_HUGETLB", CGROUPS, "Huge pages controller", _CG_OPT),
    _kconfig("CGROUP_PERF", CGROUPS, "Perf events controller", _CG_OPT),
    _kconfig(
        "NET_CLS_CGROUP", CGROUPS, "Network classifier controller", _CG_OPT, module="cls_cgroup"
    ),
    _kconfig(
        "NETPRIO_CGROUP",
        CGROUPS,
        "Network priority controller",
        _CG_OPT,
        before=(3, 14),
        module="netprio_cgroup",
    ),
    _kconfig("CGROUP_NET_PRIO", CGROUPS, "Network priority controller", _CG_OPT, since=(3, 14)),
    _kconfig("CFS_BANDWIDTH", CGROUPS, "CPU bandwidth limits (CPU quota)", _CG_OPT),
    _kconfig("FAIR_GROUP_SCHED", CGROUPS, "Fair group scheduling", _CG_OPT),
    _kconfig("RT_GROUP_SCHED", CGROUPS, "Real-time group scheduling", _CG_OPT),
    # Storage
    _kconfig("OVERLAY_FS", STORAGE, "Overlay filesystem", {"overlay": REQUIRED}, module="overlay"),
    # ext4 is the usual filesystem under /var/lib/gantry; its ACLs and security xattrs keep
    # the ACLs and file capabilities of image layers intact.
    _kconfig("EXT4_FS", STORAGE, "ext4 filesystem", {"overlay": OPTIONAL}, module="ext4"),
    _kconfig("EXT4_FS_POSIX_ACL", STORAGE, "ext4 POSIX ACLs", {"overlay": OPTIONAL}),
    _kconfig("EXT4_FS_SECURITY", STORAGE, "ext4 security labels", {"overlay": OPTIONAL}),
    # Security
    _kconfig("SECCOMP", SECURITY, "Seccomp", {"seccomp": REQUIRED}),
    _kconfig("SECCOMP_FILTER", SECURITY, "Seccomp BPF filters", {"seccomp": REQUIRED}),
    _kconfig("SECURITY_APPARMOR", SECURITY, "AppArmor support", {"lsm": REQUIRED}),
    _kconfig("SECURITY_SELINUX", SECURITY, "SELinux support", {"lsm": REQUIRED}),
    _kconfig("SECURITY_FILE_CAPABILITIES", SECURITY, "File capabilities", _NS, before=(2, 6, 33)),
    # Networking: what the CNI bridge plugin (veth, bridge, masquerade) and the portmap plugin
    # (DNAT with comment, multiport, addrtype and mark) need from the kernel.
    _kconfig("VETH", NETWORKING, "Veth pair device", _BR, module="veth"),
    _kconfig("BRIDGE", NETWORKING, "Bridge", _BR, module="bridge"),
    _kconfig(
        "BRIDGE_NETFILTER", NETWORKING, "Netfilter on bridged traffic", _BR, module="br_netfilter"
    ),
    _kconfig("NETFILTER_ADVANCED", NETWORKING, "Advanced netfilter", _BR_OPT),
    _kconfig("NF_CONNTRACK", NETWORKING, "Connection tracking", _BR, module="nf_conntrack"),
    _kconfig("NF_NAT", NETWORKING, "NAT", _NAT, module="nf_nat"),
    _kconfig(
        "NF_NAT_IPV4",
        NETWORKING,
        "IPv4 NAT",
        _BR,
        since=(3, 7),
        before=(5, 2),
        module="nf_nat_ipv4",
    ),
    _kconfig(
        "NF_NAT_IPV6",
        NETWORKING,
        "IPv6 NAT",
        _BR_OPT,
        since=(3, 7),
        before=(5, 2),
        module="nf_nat_ipv6",
    ),
    _kconfig("NF_NAT_NEEDED", NETWORKING, "NAT core", _BR, before=(5, 3)),
    _kconfig("IP_NF_IPTABLES", NETWORKING, "iptables", _NAT, module="ip_tables"),
    _kconfig("IP_NF_FILTER", NETWORKING, "iptables filter table", _BR, module="iptable_filter"),
    _kconfig("IP_NF_NAT", NETWORKING, "iptables nat table", _NAT, module="iptable_nat"),
    # Since 5.2 the MASQUERADE and REDIRECT options only select the xt_ targets.
    _kconfig(
        "IP_NF_TARGET_MASQUERADE",
        NETWORKING,
        "MASQUERADE target",
        _BR,
        module=("xt_MASQUERADE", "ipt_MASQUERADE"),
    ),
    _kconfig(
        "IP6_NF_TARGET_MASQUERADE",
        NETWORKING,
        "IPv6 MASQUERADE target",
        _BR_OPT,
        module=("xt_MASQUERADE", "ip6t_MASQUERADE"),
    ),
    _kconfig(
        "IP_NF_TARGET_REDIRECT",
        NETWORKING,
        "REDIRECT target",
        {"ports": OPTIONAL},
        module=("xt_REDIRECT", "ipt_REDIRECT"),
    ),
    _kconfig(
        "NETFILTER_XT_NAT", NETWORKING, "DNAT/SNAT targets", _PORTS, since=(3, 7), module="xt_nat"
    ),
    _kconfig("NETFILTER_XT_MATCH_COMMENT", NETWORKING, "comment match", _NAT, module="xt_comment"),
    _kconfig(
        "NETFILTER_XT_MATCH_MULTIPORT", NETWORKING, "multiport match", _PORTS, module="xt_multiport"
    ),
    _kconfig(
        "NETFILTER_XT_MATCH_ADDRTYPE", NETWORKING, "addrtype match", _PORTS, module="xt_addrtype"
    ),
    _kconfig(
        "NETFILTER_XT_MATCH_CONNTRACK", NETWORKING, "conntrack match", _BR, module="xt_conntrack"
    ),
    _kconfig(
        "NETFILTER_XT_MARK", NETWORKING, "MARK target and mark match", _PORTS, module="xt_mark"
    ),
    _kconfig(
        "NETFILTER_XT_TARGET_CHECKSUM", NETWORKING, "CHECKSUM target", _BR_OPT, module="xt_CHECKSUM"
    ),
    # iptables-nft (Debian's default iptables) drives these instead of the legacy tables.
    _kconfig("NF_TABLES", NETWORKING, "nftables", _BR_OPT, module="nf_tables"),
    _kconfig(
        "NFT_COMPAT", NETWORKING, "nftables xtables compatibility", _BR_OPT, module="nft_compat"
    ),
    _kconfig("NFT_NAT", NETWORKING, "nftables NAT", _BR_OPT, module="nft_nat"),
    _kconfig("NFT_MASQ", NETWORKING, "nftables masquerade", _BR_OPT, module="nft_masq"),
    _kconfig("NF_NAT_FTP", NETWORKING, "FTP NAT helper", _BR_OPT, module="nf_nat_ftp"),
    _kconfig(
        "NF_CONNTRACK_FTP",
        NETWORKING,
        "FTP connection tracking",
        _BR_OPT,
        module="nf_conntrack_ftp",
    ),
    _kconfig("NF_NAT_TFTP", NETWORKING, "TFTP NAT helper", _BR_OPT, module="nf_nat_tftp"),
    _kconfig(
        "NF_CONNTRACK_TFTP",
        NETWORKING,
        "TFTP connection tracking",
        _BR_OPT,
        module="nf_conntrack_tftp",
    ),
    _kconfig("MACVLAN", NETWORKING, "Macvlan", {"macvlan": REQUIRED}, module="macvlan"),
    _kconfig(
        "DUMMY",
        NETWORKING,
        "Dummy interfaces (macvlan parent)",
        {"macvlan": OPTIONAL},
        module="dummy",
    ),
    _kconfig("IPVLAN", NETWORKING, "Ipvlan", {"ipvlan": REQUIRED}, since=(3, 19), module="ipvlan"),
    _kconfig("VLAN_8021Q", NETWORKING, "802.1Q VLAN", {"vlan": REQUIRED}, module="8021q"),
    _kconfig(
        "BRIDGE_VLAN_FILTERING",
        NETWORKING,
        "Bridge VLAN filtering",
        {"vlan": OPTIONAL, "vxlan": OPTIONAL},
    ),
    _kconfig("VXLAN", NETWORKING, "VXLAN", {"vxlan": REQUIRED}, module="vxlan"),
    # Checkpoint/Restore: what CRIU needs to dump and restore a process tree.
    _kconfig("CHECKPOINT_RESTORE", CHECKPOINT, "Checkpoint/restore", _CR),
    _kconfig("FHANDLE", CHECKPOINT, "File handles", _CR),
    _kconfig("EVENTFD", CHECKPOINT, "eventfd", _CR),
    _kconfig("EPOLL", CHECKPOINT, "epoll", _CR),
    _kconfig("UNIX_DIAG", CHECKPOINT, "Unix socket diagnostics", _CR, module="unix_diag"),
    _kconfig("INET_DIAG", CHECKPOINT, "INET socket diagnostics", _CR, module="inet_diag"),
    _kconfig("PACKET_DIAG", CHECKPOINT, "Packet socket diagnostics", _CR, module="af_packet_diag"),
    _kconfig("NETLINK_DIAG", CHECKPOINT, "Netlink socket diagnostics", _CR, module="netlink_diag"),
    # Misc
    # /dev/mqueue is mounted in every container's IPC namespace.
    _kconfig("POSIX_MQUEUE", MISC, "POSIX message queues", _NS),
    # Each container gets its own session keyring.
    _kconfig("KEYS", MISC, "Key retention (session keyrings)", _NS),
    _kconfig("FUSE_FS", MISC, "FUSE", {"fuse": REQUIRED}, module="fuse"),
)

# Items that stand in for one another: the requirement is met when any one is there.
_ALTERNATIVES = (
    ("CONFIG_SECURITY_APPARMOR", "CONFIG_SECURITY_SELINUX"),
    ("lsm:apparmor", "lsm:selinux"),
    ("binary:iptables", "binary:nft"),
)

# (namespace, clone flag, section, label, features)
_NAMESPACE_PROBES = (
    ("mnt", 0x00020000, NAMESPACES, "Create a mount namespace", _NS),
    ("uts", 0x04000000, NAMESPACES, "Create a UTS namespace", _NS),
    ("ipc", 0x08000000, NAMESPACES, "Create an IPC namespace", _NS),
    ("pid", 0x20000000, NAMESPACES, "Create a PID namespace", _NS),
    (
        "net",
        0x40000000,
        NAMESPACES,
        "Create a network namespace",
        {"namespaces": REQUIRED, "bridge": REQUIRED},
    ),
    ("cgroup", 0x02000000, NAMESPACES, "Create a cgroup namespace", _NS),
    ("time", 0x00000080, NAMESPACES, "Create a time namespace", {"timens": REQUIRED}),
    ("user", 0x10000000, USERNS, "Create a user namespace", {"userns": REQUIRED}),
)
_NAMESPACE_OPTIONS = {"mnt": "NAMESPACES", "cgroup": "CGROUPS", "time": "TIME_NS"}

# (sysctl, section, label, features, smallest good value, value to suggest, absent is fine)
_SYSCTLS = (
    (
        "user.max_user_namespaces",
        USERNS,
        "Maximum user namespaces",
        {"userns": REQUIRED},
        1,
        15000,
        False,
    ),
    # A Debian/Ubuntu patch; 0 blocks user namespaces for everyone but root.
    (
        "kernel.unprivileged_userns_clone",
        USERNS,
        "Unprivileged user namespaces",
        {"userns": OPTIONAL},
        1,
        1,
        True,
    ),
    ("user.max_mnt_namespaces", LIMITS, "Maximum mount namespaces", _NS, 1, 15000, False),
    ("user.max_uts_namespaces", LIMITS, "Maximum UTS namespaces", _NS, 1, 15000, False),
    ("user.max_ipc_namespaces", LIMITS, "Maximum IPC namespaces", _NS, 1, 15000, False),
    ("user.max_pid_namespaces", LIMITS, "Maximum PID namespaces", _NS, 1, 15000, False),
    ("user.max_net_namespaces", LIMITS, "Maximum network namespaces", _NS, 1, 15000, False),
    ("user.max_cgroup_namespaces", LIMITS, "Maximum cgroup namespaces", _NS, 1, 15000, False),
    (
        "user.max_time_namespaces",
        LIMITS,
        "Maximum time namespaces",
        {"timens": REQUIRED},
        1,
        15000,
        False,
    ),
    # Every container's session keyring counts against root's quota (moby's limit).
    ("kernel.keys.root_maxkeys", LIMITS, "Keys root may own", _NS, 10001, 1000000, False),
    # The CNI bridge plugin switches forwarding on itself; off only means it has not run yet.
    ("net.ipv4.ip_forward", NETWORKING, "IPv4 forwarding", _BR_OPT, 1, 1, False),
)

# (binary, section, label, features, must be setuid root, package)
# User-space tools are installed by the gantry.fleet.host role, so they never gate the
# kernel check: each is optional for the features that use it.
_BINARIES = (
    ("newuidmap", USERNS, "newuidmap (setuid)", {"userns": OPTIONAL}, True, "uidmap"),
    ("newgidmap", USERNS, "newgidmap (setuid)", {"userns": OPTIONAL}, True, "uidmap"),
    (
        "iptables",
        NETWORKING,
        "iptables command",
        {"bridge": OPTIONAL, "ports": OPTIONAL},
        False,
        "iptables",
    ),
    ("nft", NETWORKING, "nft command", {"bridge": OPTIONAL, "ports": OPTIONAL}, False, "nftables"),
    ("criu", CHECKPOINT, "criu command", {"checkpoint": OPTIONAL}, False, "criu"),
)

# (item name, v1 controller, v2 controller or None, kernel option, features)
_CONTROLLERS = (
    ("cpu", "cpu", "cpu", "CGROUP_SCHED", _CG),
    ("cpuacct", "cpuacct", None, "CGROUP_CPUACCT", _CG),
    ("cpuset", "cpuset", "cpuset", "CPUSETS", _CG_OPT),
    ("memory", "memory", "memory", "MEMCG", _CG),
    ("io", "blkio", "io", "BLK_CGROUP", _CG_OPT),
    ("pids", "pids", "pids", "CGROUP_PIDS", _CG),
    ("devices", "devices", None, "CGROUP_DEVICE", _CG),
    ("freezer", "freezer", None, "CGROUP_FREEZER", _CG),
    ("hugetlb", "hugetlb", "hugetlb", "CGROUP_HUGETLB", _CG_OPT),
)

_V1_CONTROLLER_NAMES = (
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
)

_PATH_DEFAULT = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROBE_TIMEOUT = 10.0
_PROBE_MESSAGE_MAX = 4000

# mount(2), prctl(2) and seccomp constants (uapi, the same on every architecture).
_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_MNT_DETACH = 0x2
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_RET_K = 0x06
_SECCOMP_RET_ALLOW = 0x7FFF0000


# --------------------------------------------------------------------------------------------
# Small readers


def _under(sysroot: str, path: str) -> str:
    if sysroot in ("", "/"):
        return path
    return os.path.join(sysroot, path.lstrip("/"))


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None


def _read_value(path: str) -> Optional[str]:
    text = _read_text(path)
    return None if text is None else text.strip()


def _version_tuple(text: Optional[str]) -> Optional[Version]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def _describe_errno(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name} ({os.strerror(exc.errno)})"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# The kernel configuration


def _config_candidates(release: Optional[str]) -> List[str]:
    """Where the running kernel's configuration usually is, in the order we look."""
    paths = ["/proc/config.gz"]
    if release:
        paths += [
            f"/boot/config-{release}",
            f"/lib/modules/{release}/build/.config",
            f"/usr/src/linux-{release}/.config",
        ]
    paths.append("/usr/src/linux/.config")
    return paths


def parse_config(text: str) -> Tuple[Dict[str, str], Optional[str], Optional[str]]:
    """Options, header version and header arch of a kernel ``.config``.

    Only anchored lines count, ``CONFIG_X=value`` and ``# CONFIG_X is not set``: an
    unanchored grep (as in both anchor scripts) can take ``CONFIG_FOO_X=y`` for ``X``.
    """
    options: Dict[str, str] = {}
    version = None
    arch = None
    for line in text.splitlines():
        if line.startswith("CONFIG_"):
            name, sep, value = line[7:].partition("=")
            if sep:
                options[name.strip()] = value.strip()
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[9:-11].strip()] = "n"
        elif version is None and line.startswith("# Linux"):
            match = re.match(r"# Linux/(\S+) (\S+) Kernel Configuration", line)
            if match:
                arch, version = match.group(1), match.group(2)
            else:
                match = re.match(r"# Linux kernel version: (\S+)", line)
                if match:
                    version = match.group(1)
    return options, version, arch


def _read_config_file(path: str) -> Tuple[Optional[str], Optional[str]]:
    """The text of a plain or gzip-compressed config, or why not. gzip is sniffed by its
    magic bytes, not by the name (copies of /proc/config.gz often lose the suffix)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            return None, f"{path}: not a valid gzip file ({exc})"
    text = data.decode("utf-8", "replace")
    if not re.search(r"^(# )?CONFIG_\w+", text, re.MULTILINE):
        return None, f"{path}: does not look like a kernel configuration (no CONFIG_ lines)"
    return text, None


def _load_config(
    config_path: Optional[str], environ: Mapping[str, str], sysroot: str, release: Optional[str]
) -> Dict[str, Any]:
    """Find and parse the configuration. A path the caller gave is the only one tried:
    falling back would quietly check another kernel than the one asked about."""
    explicit = config_path is not None
    env_config = environ.get("CONFIG") or None
    if config_path is not None:
        candidates = [os.fspath(config_path)]
    else:
        candidates = [_under(sysroot, path) for path in _config_candidates(release)]
        if env_config:
            candidates.insert(0, env_config)
    tried: List[str] = []
    errors: List[str] = []
    for path in candidates:
        tried.append(path)
        if not explicit and path != env_config and not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        text, error = _read_config_file(path)
        if text is None:
            errors.append(error or path)
            continue
        options, version, arch = parse_config(text)
        return {
            "path": path,
            "readable": True,
            "error": None,
            "tried": tried,
            "options": options,
            "version": version,
            "arch": arch,
            # Chosen by the caller (argument or $CONFIG), so maybe another kernel's.
            "chosen": explicit or path == env_config,
        }
    return {
        "path": None,
        "readable": False,
        "error": "kernel configuration not readable; tried " + "; ".join(errors),
        "tried": tried,
        "options": {},
        "version": None,
        "arch": None,
        "chosen": explicit,
    }


def _config_is_running_kernel(config: Dict[str, Any], release: Optional[str], sysroot: str) -> bool:
    """Whether the checked configuration belongs to the kernel that is running.

    One found where the running kernel keeps its own is that kernel's. One the caller chose
    is the running kernel's when it is one of those files, when its header version is the
    running release (``6.18.44`` for ``6.18.44-fc``), or when the header version appears in
    /proc/version (Debian: release ``6.1.0-28-amd64``, header and /proc/version ``6.1.119``).
    """
    if not config["readable"] or not config["chosen"]:
        return True
    real = os.path.realpath(config["path"])
    for candidate in _config_candidates(release):
        candidate = _under(sysroot, candidate)
        if os.path.exists(candidate) and os.path.realpath(candidate) == real:
            return True
    version = config["version"]
    if not version:
        return False
    if release and release.startswith(version):
        rest = release[len(version) :]
        if not rest or not rest[0].isdigit():
            return True
    proc_version = _read_text(_under(sysroot, "/proc/version")) or ""
    return re.search(r"(?<![\w.])" + re.escape(version) + r"(?!\d)", proc_version) is not None


def _config_hint(release: Optional[str], container: Optional[str]) -> str:
    hint = (
        "make the kernel configuration readable: `modprobe configs` (CONFIG_IKCONFIG_PROC), "
        f"install the kernel's config as /boot/config-{release or '$(uname -r)'}, "
        "or pass --config PATH"
    )
    if container:
        hint += (
            f"; inside a {container} container the host's configuration is usually not "
            "visible, so check the host itself or rely on the runtime probes"
        )
    return hint


# --------------------------------------------------------------------------------------------
# The host: environment, cgroups, modules


def _detect_container(sysroot: str, environ: Mapping[str, str]) -> Optional[str]:
    """The container manager we run under, by the conventions each one follows."""
    if environ.get("container"):
        return environ["container"]
    marker = _read_value(_under(sysroot, "/run/systemd/container"))
    if marker:
        return marker
    if os.path.exists(_under(sysroot, "/.dockerenv")):
        return "docker"
    if os.path.exists(_under(sysroot, "/run/.containerenv")):
        return "podman"
    for entry in (_read_text(_under(sysroot, "/proc/1/environ")) or "").split("\0"):
        if entry.startswith("container=") and len(entry) > len("container="):
            return entry[len("container=") :]
    cgroups = _read_text(_under(sysroot, "/proc/1/cgroup")) or ""
    for needle, name in (("/docker/", "docker"), ("/lxc/", "lxc"), ("kubepods", "kubernetes")):
        if needle in cgroups:
            return name
    return None


def _in_user_namespace(sysroot: str) -> bool:
    """True unless our uid map is the initial namespace's identity map of all 2^32 ids."""
    text = _read_text(_under(sysroot, "/proc/self/uid_map"))
    return text is not None and text.split() != ["0", "0", "4294967295"]


def _unescape_mount_path(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _cgroup_mounts(sysroot: str) -> Optional[List[Tuple[str, str, List[str]]]]:
    """(fstype, mount point, super options) of every cgroup and cgroup2 mount, or None when
    the mount table cannot be read."""
    mounts: List[Tuple[str, str, List[str]]] = []
    text = _read_text(_under(sysroot, "/proc/self/mountinfo"))
    if text is not None:
        for line in text.splitlines():
            left, sep, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if sep and len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                mounts.append((tail[0], _unescape_mount_path(fields[4]), tail[2].split(",")))
        return mounts
    text = _read_text(_under(sysroot, "/proc/self/mounts"))
    if text is None:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            mounts.append((fields[2], _unescape_mount_path(fields[1]), fields[3].split(",")))
    return mounts


def _proc_cgroups(sysroot: str) -> Optional[Dict[str, Tuple[int, bool]]]:
    """/proc/cgroups as {controller: (v1 hierarchy id, enabled)}. On v2 only the enabled
    column means anything (cgroup_disable= clears it)."""
    text = _read_text(_under(sysroot, "/proc/cgroups"))
    if text is None:
        return None
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[1].isdigit():
            table[fields[0]] = (int(fields[1]), fields[3] == "1")
    return table


def _cgroup_facts(sysroot: str) -> Dict[str, Any]:
    """The report's ``cgroup`` section, plus private facts the checks and probes need."""
    mounts = _cgroup_mounts(sysroot)
    proc_cgroups = _proc_cgroups(sysroot)
    known = set(_V1_CONTROLLER_NAMES) | set(proc_cgroups or ())
    v1: Dict[str, str] = {}
    hierarchies: List[Tuple[str, List[str]]] = []
    v2_mounts: List[str] = []
    for fstype, mountpoint, options in mounts or ():
        if fstype == "cgroup2":
            v2_mounts.append(mountpoint)
            continue
        names = [o for o in options if o in known or o.startswith("name=")]
        if not names:
            continue
        if not any(name in v1 for name in names):  # a bind mount of a hierarchy seen already
            hierarchies.append((mountpoint, names))
        for name in names:
            v1.setdefault(name, mountpoint)
    v2_mount = None
    if v2_mounts:
        v2_mount = "/sys/fs/cgroup" if "/sys/fs/cgroup" in v2_mounts else v2_mounts[0]
    controllers: List[str] = []
    subtree: List[str] = []
    if v2_mount:
        controllers = (_read_text(_under(sysroot, v2_mount + "/cgroup.controllers")) or "").split()
        subtree = (_read_text(_under(sysroot, v2_mount + "/cgroup.subtree_control")) or "").split()
    if v2_mount == "/sys/fs/cgroup" or (v2_mount and not v1):
        layout = "unified"
    elif v1 and v2_mount:
        layout = "hybrid"
    elif v1:
        layout = "legacy"
    else:
        layout = "none"
    return {
        "layout": layout,
        "v1": v1,
        "v2": {"mount": v2_mount, "controllers": controllers, "subtree_control": subtree},
        "_readable": mounts is not None,
        "_proc_cgroups": proc_cgroups,
        "_hierarchies": hierarchies,
    }


def _builtin_modules(sysroot: str, release: Optional[str]) -> Optional[Set[str]]:
    """Names of modules built into the kernel, from modules.builtin (``kernel/fs/x/y.ko``)."""
    if not release:
        return None
    text = _read_text(_under(sysroot, f"/lib/modules/{release}/modules.builtin"))
    if text is None:
        return None
    names = set()
    for line in text.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(base[:-3].replace("-", "_"))
    return names


# --------------------------------------------------------------------------------------------
# Probes. Each runs in a forked child and answers (works, message); works is None when the
# probe could not tell (not root, say), which is not the kernel lacking something.


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check_call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
    libc: Any,
    source: Optional[str],
    target: str,
    fstype: Optional[str],
    flags: int,
    data: Optional[str],
) -> None:
    def raw(value: Optional[str]) -> Optional[bytes]:
        return None if value is None else value.encode()

    result = libc.mount(
        ctypes.c_char_p(raw(source)),
        ctypes.c_char_p(raw(target)),
        ctypes.c_char_p(raw(fstype)),
        ctypes.c_ulong(flags),
        ctypes.c_char_p(raw(data)),
    )
    _check_call(result, f"mount {fstype or source} on {target}")


def _judge_errno(exc: OSError, what: str) -> ProbeResult:
    """EPERM/EACCES mean we may not ask (not root, or a container without the capability),
    which says nothing about the kernel; any other errno is the kernel saying no."""
    text = f"{what} failed: {_describe_errno(exc)}"
    if exc.errno in (errno.EPERM, errno.EACCES):
        return None, text + "; not permitted here, so the kernel's support is unknown"
    return False, text


def _probe_unshare(name: str, flag: int) -> Probe:
    def probe() -> ProbeResult:
        try:
            _check_call(_libc().unshare(ctypes.c_int(flag)), "unshare")
        except OSError as exc:
            return _judge_errno(exc, f"unshare({name})")
        if name == "pid":
            # unshare(CLONE_NEWPID) moves only later children: the first one must be PID 1.
            child = os.fork()
            if child == 0:
                os._exit(0 if os.getpid() == 1 else 1)
            status = os.waitpid(child, 0)[1]
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                return False, "the first child in the new PID namespace is not PID 1"
            return True, "unshare(pid) works; the first child is PID 1"
        return True, f"unshare({name}) works"

    return probe


def _probe_overlay(scratch: str) -> Probe:
    """Mount an overlay whose upper layer whites out one lower file, then delete another
    lower file through the merged view: the kernel must hide the first and record the second
    as a 0/0 character device. Image layers and snapshots depend on both."""

    def probe() -> ProbeResult:
        libc = _libc()
        try:
            _check_call(libc.unshare(ctypes.c_int(_CLONE_NEWNS)), "unshare(mnt)")
            # Private, so nothing mounted below propagates back to the host.
            _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
            # On a tmpfs, so we test the kernel, not whatever filesystem /tmp is on.
            _mount(libc, "gantry-probe", scratch, "tmpfs", 0, "mode=0700")
        except OSError as exc:
            return _judge_errno(exc, "preparing a private scratch mount")
        lower, upper, work, merged = (os.path.join(scratch, d) for d in ("l", "u", "w", "m"))
        for directory in (lower, upper, work, merged):
            os.mkdir(directory)
        for name in ("hidden", "kept"):
            with open(os.path.join(lower, name), "w") as handle:
                handle.write(name)
        try:
            os.mknod(os.path.join(upper, "hidden"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
            _mount(
                libc,
                "overlay",
                merged,
                "overlay",
                0,
                f"lowerdir={lower},upperdir={upper},workdir={work}",
            )
        except OSError as exc:
            return _judge_errno(exc, "mounting an overlay over a whiteout")
        try:
            if os.path.lexists(os.path.join(merged, "hidden")):
                return False, "a whiteout in the upper layer did not hide the lower file"
            if not os.path.exists(os.path.join(merged, "kept")):
                return False, "a lower file is not visible through the overlay"
            os.unlink(os.path.join(merged, "kept"))
            st = os.lstat(os.path.join(upper, "kept"))
            if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)):
                return False, "deleting a lower file left no whiteout in the upper layer"
        finally:
            # The mount namespace dies with this child anyway; unmount to be tidy.
            libc.umount2(merged.encode(), _MNT_DETACH)
            libc.umount2(scratch.encode(), _MNT_DETACH)
        return True, "overlay hides whiteouts and records deletions as whiteouts"

    return probe


def _probe_cgroup(path: str) -> Probe:
    def probe() -> ProbeResult:
        try:
            os.mkdir(path)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return False, f"mkdir {path}: read-only (a container without cgroup delegation?)"
            return _judge_errno(exc, f"mkdir {path}")
        try:
            if not os.path.exists(os.path.join(path, "cgroup.procs")):
                return False, f"{path} has no cgroup.procs"
            extra = (
                "; cgroup.freeze present"
                if os.path.exists(os.path.join(path, "cgroup.freeze"))
                else ""
            )
        finally:
            os.rmdir(path)
        return True, f"created and removed {path}{extra}"

    return probe


def _probe_seccomp() -> ProbeResult:
    """Install an allow-everything filter (no_new_privs first, as an unprivileged caller
    must) and read the mode back from /proc/self/status."""

    class SockFilter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    libc = _libc()
    program = (SockFilter * 1)(SockFilter(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW))
    fprog = SockFprog(1, program)
    ulong = ctypes.c_ulong
    try:
        _check_call(
            libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ulong(1), ulong(0), ulong(0), ulong(0)),
            "prctl(PR_SET_NO_NEW_PRIVS)",
        )
        _check_call(
            libc.prctl(
                ctypes.c_int(_PR_SET_SECCOMP),
                ulong(_SECCOMP_MODE_FILTER),
                ulong(ctypes.addressof(fprog)),
                ulong(0),
                ulong(0),
            ),
            "prctl(PR_SET_SECCOMP)",
        )
    except OSError as exc:
        return _judge_errno(exc, "loading a seccomp filter")
    mode = re.search(r"^Seccomp:\s*(\d+)", _read_text("/proc/self/status") or "", re.MULTILINE)
    if not mode or mode.group(1) != "2":
        return False, "the filter loaded but /proc/self/status does not say Seccomp: 2"
    actions = _read_value("/proc/sys/kernel/seccomp/actions_avail")
    return True, "filter mode works" + (f"; actions: {actions}" if actions else "")


def _spawn(probe: Probe) -> Tuple[int, int]:
    """Run ``probe`` in a forked child that reports through a pipe and never returns."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        message = "probe crashed"
        try:
            os.close(read_fd)
            works, message = probe()
            code = {True: 0, False: 1, None: 3}[works]
        except BaseException as exc:  # the child must reach os._exit whatever happens
            message = f"probe error: {_describe_errno(exc)}"
        try:
            os.write(write_fd, message.encode("utf-8", "replace")[:_PROBE_MESSAGE_MAX])
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, read_fd: int, deadline: float) -> ProbeResult:
    chunks = []
    timed_out = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
                timed_out = True
                break
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    if timed_out:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    status: Optional[int] = None
    # ChildProcessError: the caller ignores SIGCHLD, so the child reaped itself.
    with contextlib.suppress(ChildProcessError):
        status = os.waitpid(pid, 0)[1]
    message = b"".join(chunks).decode("utf-8", "replace")
    if timed_out:
        return None, f"probe timed out after {_PROBE_TIMEOUT:.0f} s"
    if status is None:
        return None, message or "probe exit status lost"
    if os.WIFSIGNALED(status):
        return None, f"probe killed by signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    if code in (0, 1):
        return code == 0, message
    return None, message or "probe failed"


def _run_probes(probes: Sequence[Tuple[str, Probe, Callable[[], None]]]) -> Dict[str, ProbeResult]:
    """Start every probe at once, then collect each and run its clean-up in the parent."""
    started = []
    results: Dict[str, ProbeResult] = {}
    for item_id, probe, cleanup in probes:
        try:
            started.append((item_id, _spawn(probe), cleanup))
        except OSError as exc:
            results[item_id] = (None, f"could not fork a probe: {_describe_errno(exc)}")
            cleanup()
    deadline = time.monotonic() + _PROBE_TIMEOUT
    for item_id, (pid, read_fd), cleanup in started:
        try:
            results[item_id] = _collect(pid, read_fd, deadline)
        finally:
            cleanup()
    return results


def _nothing() -> None:
    return None


def _remove_dir(path: str) -> Callable[[], None]:
    """A clean-up that removes ``path`` in case the probe died before it could."""

    def cleanup() -> None:
        with contextlib.suppress(OSError):
            os.rmdir(path)

    return cleanup


# --------------------------------------------------------------------------------------------
# Items


def _new_item(item_id: str, kind: str, section: str, label: str, features: Dict[str, str]) -> Item:
    return {
        "id": item_id,
        "kind": kind,
        "section": section,
        "label": label,
        "features": dict(features),
        "value": None,
        "module": None,
        "status": "unknown",
        "detail": "",
        "hint": None,
        # Private while the report is built: True there/works, False absent/fails, None unknown.
        "_present": None,
        "_skipped": False,
    }


def _skip(item: Item, detail: str, hint: str) -> Item:
    item["_skipped"] = True
    item["detail"] = detail
    item["hint"] = hint
    return item


class _Context:
    """What every check needs to know about the kernel and the host being checked."""

    def __init__(
        self,
        sysroot: str,
        environ: Mapping[str, str],
        release: Optional[str],
        running: bool,
        version: Optional[Version],
        config: Dict[str, Any],
        environment: Dict[str, Any],
        cgroup: Dict[str, Any],
    ) -> None:
        self.sysroot = sysroot
        self.environ = environ
        self.release = release
        self.running = running
        self.version = version or _NEWEST
        self.config = config
        self.options: Dict[str, str] = config["options"]
        self.environment = environment
        self.cgroup = cgroup
        self.modules_supported: Optional[bool] = None
        if config["readable"]:
            self.modules_supported = self.options.get("MODULES") == "y"
        self.builtin = _builtin_modules(sysroot, release) if running else None
        self.config_hint = _config_hint(release, environment.get("container"))
        if config["chosen"] and not config["readable"]:
            self.config_hint = (
                "point --config (config_path) at a readable kernel configuration, plain or "
                "gzip, or leave it out to check the running kernel's"
            )

    def path(self, path: str) -> str:
        return _under(self.sysroot, path)

    def is_set(self, option: str) -> Optional[bool]:
        """Whether the option is y or m; None when the configuration is not readable."""
        if not self.config["readable"]:
            return None
        return self.options.get(option, "n") in ("y", "m")

    def skip_not_running(self, item: Item) -> Item:
        version = self.config.get("version") or "given"
        return _skip(
            item,
            f"not checked: this describes the running kernel, not the {version} one checked",
            "boot that kernel and run the check again",
        )


def _gate_applies(spec: Dict[str, Any], ctx: _Context) -> bool:
    if spec["since"] is not None and ctx.version < spec["since"]:
        return False
    if spec["before"] is not None and ctx.version >= spec["before"]:
        return False
    return not (spec["only_if"] and ctx.is_set(spec["only_if"]) is False)


def _module_info(spec: Dict[str, Any], value: str, ctx: _Context) -> Optional[Dict[str, Any]]:
    """Built in, loaded or not: decided from modules.builtin and /sys/module, not lsmod,
    which lists only loadable modules and calls every built-in one "not loaded"."""
    names = spec["modules"]
    if not names:
        return None
    if value == "y":
        return {"name": names[0], "state": "builtin"}
    if not ctx.running or ctx.modules_supported is not True:
        # Another kernel we cannot look at; or no CONFIG_MODULES, where nothing can be
        # "not loaded" at all.
        return {"name": names[0], "state": "unknown"}
    for name in names:
        if ctx.builtin is not None and name in ctx.builtin:
            return {"name": name, "state": "builtin"}
    sys_module = ctx.path("/sys/module")
    if not os.path.isdir(sys_module):
        return {"name": names[0], "state": "unknown"}
    for name in names:
        if os.path.isdir(os.path.join(sys_module, name)):
            return {"name": name, "state": "loaded"}
    return {"name": names[0], "state": "not_loaded"}


def _kconfig_item(spec: Dict[str, Any], ctx: _Context) -> Item:
    option = spec["option"]
    item = _new_item(
        "CONFIG_" + option, "kconfig", spec["section"], spec["label"], spec["features"]
    )
    if not ctx.config["readable"]:
        item["detail"] = "kernel configuration not readable"
        item["hint"] = ctx.config_hint
        return item
    raw = ctx.options.get(option)
    value = "n" if raw is None else raw
    item["value"] = value
    if value not in ("y", "m"):
        item["_present"] = False
        item["detail"] = "not set" if raw is not None else "not in this configuration"
        either = " (or =m)" if spec["modules"] else ""
        item["hint"] = f"rebuild the kernel with CONFIG_{option}=y{either}"
        return item
    item["_present"] = True
    module = _module_info(spec, value, ctx)
    item["module"] = module
    if value == "y":
        item["detail"] = "built in"
    elif module is None:
        item["detail"] = "module"
    elif module["state"] == "loaded":
        item["detail"] = f"module {module['name']}, loaded"
    elif module["state"] == "builtin":
        item["detail"] = f"built in ({module['name']})"
    elif module["state"] == "not_loaded":
        item["detail"] = f"module {module['name']}, not loaded (loaded on first use)"
        item["hint"] = f"modprobe {module['name']}"
    else:
        item["detail"] = f"module {module['name']}"
    return item


def _kconfig_items(ctx: _Context) -> List[Item]:
    return [_kconfig_item(spec, ctx) for spec in KCONFIG if _gate_applies(spec, ctx)]


def _sysctl_items(ctx: _Context) -> List[Item]:
    items = []
    for key, section, label, features, minimum, suggest, absent_ok in _SYSCTLS:
        item = _new_item("sysctl:" + key, "sysctl", section, label, features)
        items.append(item)
        if not ctx.running:
            ctx.skip_not_running(item)
            continue
        fix = f"sysctl -w {key}={suggest} (and persist it in /etc/sysctl.d/)"
        raw = _read_value(ctx.path("/proc/sys/" + key.replace(".", "/")))
        if raw is None:
            if absent_ok:
                item["_present"] = True
                item["detail"] = "not present: this kernel has no such switch"
            else:
                item["detail"] = "not present"
                item["hint"] = f"check that this kernel supports {key}"
            continue
        item["value"] = raw
        try:
            number = int(raw.split()[0])
        except (ValueError, IndexError):
            item["detail"] = f"unexpected value {raw!r}"
            item["hint"] = fix
            continue
        item["_present"] = number >= minimum
        if item["_present"]:
            item["detail"] = raw
        elif key == "net.ipv4.ip_forward":
            item["detail"] = "off; the CNI bridge plugin turns it on when it sets up a network"
            item["hint"] = fix
        else:
            item["detail"] = f"{raw} (needs at least {minimum})"
            item["hint"] = fix
    return items


def _find_binary(name: str, ctx: _Context) -> Optional[str]:
    """The binary on PATH or in the sbin directories, where root's tools live."""
    dirs = (ctx.environ.get("PATH") or "").split(os.pathsep) + _PATH_DEFAULT.split(":")
    seen = set()
    for directory in dirs:
        if not directory or directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        full = ctx.path(candidate)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return candidate
    return None


def _binary_item(
    name: str,
    section: str,
    label: str,
    features: Dict[str, str],
    setuid: bool,
    package: str,
    ctx: _Context,
) -> Item:
    item = _new_item("binary:" + name, "binary", section, label, features)
    path = _find_binary(name, ctx)
    if path is None:
        item["_present"] = False
        item["detail"] = "not installed"
        item["hint"] = f"apt-get install {package} (or your distribution's {package} package)"
        return item
    item["value"] = path
    item["_present"] = True
    item["detail"] = path
    if setuid:
        st = os.stat(ctx.path(path))
        if st.st_mode & stat.S_ISUID and st.st_uid == 0:
            item["detail"] = f"{path}, setuid root"
        else:
            item["_present"] = False
            item["detail"] = f"{path} is not setuid root"
            item["hint"] = f"chown root {path} && chmod u+s {path} (or reinstall {package})"
    return item


def _binary_items(ctx: _Context) -> List[Item]:
    return [
        _binary_item(name, section, label, features, setuid, package, ctx)
        for name, section, label, features, setuid, package in _BINARIES
    ]


def _v2_pseudo_controller(name: str, ctx: _Context) -> Optional[str]:
    """On a unified hierarchy three v1 controllers live on without a cgroup.controllers
    entry; say how, or None."""
    if name == "cpuacct":
        return "v2: CPU usage is in every cgroup's cpu.stat"
    if name == "devices" and ctx.is_set("CGROUP_BPF") is not False:
        return "v2: device access is a BPF program on the cgroup"
    if name == "freezer" and ctx.version >= (5, 2):
        return "v2: cgroup.freeze in every non-root cgroup"
    return None


def _controller_item(
    name: str,
    v1_name: str,
    v2_name: Optional[str],
    option: str,
    features: Dict[str, str],
    ctx: _Context,
) -> Item:
    """A controller is usable on either side of the hierarchy: a mounted, enabled v1
    hierarchy, or the v2 root's cgroup.controllers."""
    item = _new_item("cgroup:" + name, "cgroup", CGROUPS, f"{name} controller", features)
    if not ctx.running:
        return ctx.skip_not_running(item)
    facts = ctx.cgroup
    v2 = facts["v2"]
    table = facts["_proc_cgroups"]
    if not facts["_readable"]:
        item["detail"] = "mount table not readable"
        item["hint"] = "make /proc/self/mountinfo readable"
        return item
    entry = table.get(v1_name) if table is not None else None
    if v1_name in facts["v1"] and (entry is None or entry[1]):
        item.update(_present=True, value="v1", detail=f"v1 hierarchy at {facts['v1'][v1_name]}")
        return item
    if v2_name and v2_name in v2["controllers"]:
        later = (
            ""
            if v2_name in v2["subtree_control"]
            else " (the runtime adds it to cgroup.subtree_control)"
        )
        item.update(_present=True, value="v2", detail=f"v2 at {v2['mount']}{later}")
        return item
    pseudo = (
        _v2_pseudo_controller(name, ctx) if facts["layout"] == "unified" and not v2_name else None
    )
    if pseudo:
        item.update(_present=True, value="v2", detail=pseudo)
        return item
    item["_present"] = False
    if ctx.is_set(option) is False or (table is not None and entry is None):
        item["detail"] = "not in this kernel"
        item["hint"] = f"rebuild the kernel with CONFIG_{option}=y"
    elif entry is not None and not entry[1]:
        item["detail"] = "disabled on the kernel command line"
        item["hint"] = f"boot with cgroup_enable={v1_name} (and without cgroup_disable={v1_name})"
    elif facts["layout"] in ("legacy", "hybrid"):
        item["detail"] = "no v1 hierarchy has it" + (
            " and the v2 root does not offer it" if v2["mount"] else ""
        )
        item["hint"] = (
            f"mkdir -p /sys/fs/cgroup/{v1_name} && "
            f"mount -t cgroup -o {v1_name} cgroup /sys/fs/cgroup/{v1_name}"
        )
    elif facts["layout"] == "unified":
        item["detail"] = f"not in {v2['mount']}/cgroup.controllers"
        item["hint"] = (
            f"unmount the v1 hierarchy that holds {v1_name}, "
            "or boot with systemd.unified_cgroup_hierarchy=1"
        )
    else:
        item["detail"] = "no cgroup hierarchy is mounted"
        item["hint"] = "mount -t cgroup2 none /sys/fs/cgroup"
    return item


def _cgroup_items(ctx: _Context) -> List[Item]:
    facts = ctx.cgroup
    hierarchy = _new_item("cgroup:hierarchy", "cgroup", CGROUPS, "cgroup hierarchy", _CG)
    if not ctx.running:
        ctx.skip_not_running(hierarchy)
    elif not facts["_readable"]:
        hierarchy["detail"] = "mount table not readable"
        hierarchy["hint"] = "make /proc/self/mountinfo readable"
    else:
        hierarchy["value"] = facts["layout"]
        hierarchy["_present"] = facts["layout"] != "none"
        if hierarchy["_present"]:
            hierarchy["detail"] = facts["layout"]
        else:
            hierarchy["detail"] = "no cgroup or cgroup2 filesystem is mounted"
            hierarchy["hint"] = (
                "mount -t cgroup2 none /sys/fs/cgroup (systemd does this at boot; "
                "systemd.unified_cgroup_hierarchy=1 selects v2)"
            )
    controllers = [
        _controller_item(name, v1_name, v2_name, option, features, ctx)
        for name, v1_name, v2_name, option, features in _CONTROLLERS
    ]
    return [hierarchy, *controllers]


def _lsm_items(ctx: _Context) -> List[Item]:
    """AppArmor and SELinux: built in (the configuration) is not active (what the kernel
    enforces), so activity is read from securityfs, the module parameter and selinuxfs."""
    apparmor = _new_item("lsm:apparmor", "lsm", SECURITY, "AppArmor", {"lsm": REQUIRED})
    selinux = _new_item("lsm:selinux", "lsm", SECURITY, "SELinux", {"lsm": REQUIRED})
    parser = _new_item(
        "binary:apparmor_parser",
        "binary",
        SECURITY,
        "apparmor_parser (AppArmor active)",
        {"lsm": REQUIRED},
    )
    items = [apparmor, selinux, parser]
    if not ctx.running:
        return [ctx.skip_not_running(item) for item in items]
    lsm_list = _read_value(ctx.path("/sys/kernel/security/lsm"))
    active = lsm_list.split(",") if lsm_list else []
    aa_active = (
        "apparmor" in active
        or _read_value(ctx.path("/sys/module/apparmor/parameters/enabled")) == "Y"
    )
    enforce = _read_value(ctx.path("/sys/fs/selinux/enforce"))
    se_active = "selinux" in active or enforce is not None
    for item, is_active, option, boot in (
        (apparmor, aa_active, "SECURITY_APPARMOR", "apparmor=1 security=apparmor"),
        (selinux, se_active, "SECURITY_SELINUX", "selinux=1 security=selinux"),
    ):
        item["_present"] = is_active
        if is_active:
            item["value"] = "active"
            if item is selinux and enforce is not None:
                item["value"] = "enforcing" if enforce == "1" else "permissive"
            item["detail"] = item["value"]
        elif ctx.is_set(option) is False:
            item["value"] = "not built"
            item["detail"] = "not built into this kernel"
            item["hint"] = f"rebuild the kernel with CONFIG_{option}=y"
        else:
            item["value"] = "inactive"
            item["detail"] = "built in, not active" if ctx.is_set(option) else "not active"
            item["hint"] = f"boot with {boot} (or add it to lsm=)"
    if aa_active:
        found = _binary_item(
            "apparmor_parser", SECURITY, parser["label"], parser["features"], False, "apparmor", ctx
        )
        parser.update((key, found[key]) for key in ("value", "detail", "hint", "_present"))
    else:
        parser.update(_present=True, detail="not needed: AppArmor is not active")
    return items


def _probe_items(ctx: _Context, probes: bool) -> List[Item]:
    """The runtime probes: run only when we check the live, running kernel."""
    items: List[Item] = []
    pending: List[Tuple[str, Probe, Callable[[], None]]] = []
    for name, flag, section, label, features in _NAMESPACE_PROBES:
        item = _new_item("probe:unshare:" + name, "probe", section, label, features)
        items.append(item)
        pending.append((item["id"], _probe_unshare(name, flag), _nothing))
    overlay = _new_item(
        "probe:overlay", "probe", STORAGE, "Mount an overlay with whiteouts", {"overlay": REQUIRED}
    )
    seccomp = _new_item(
        "probe:seccomp", "probe", SECURITY, "Load a seccomp filter", {"seccomp": REQUIRED}
    )
    items += [overlay, seccomp]
    pending.append((seccomp["id"], _probe_seccomp, _nothing))
    probe_name = f"gantry-probe-{os.getpid()}"
    for mountpoint, names in ctx.cgroup["_hierarchies"]:
        joined = ",".join(names)
        item = _new_item(
            f"probe:cgroup:v1:{joined}", "probe", CGROUPS, f"Create a cgroup (v1 {joined})", _CG
        )
        items.append(item)
        path = os.path.join(mountpoint, probe_name)
        pending.append((item["id"], _probe_cgroup(path), _remove_dir(path)))
    if ctx.cgroup["v2"]["mount"]:
        item = _new_item("probe:cgroup:v2", "probe", CGROUPS, "Create a cgroup (v2)", _CG)
        items.append(item)
        path = os.path.join(ctx.cgroup["v2"]["mount"], probe_name)
        pending.append((item["id"], _probe_cgroup(path), _remove_dir(path)))

    live = os.path.realpath(ctx.sysroot) == "/"
    if not ctx.running:
        return [ctx.skip_not_running(item) for item in items]
    if not live:
        return [
            _skip(i, "not probed: probes only run on the live system", "run the check on the host")
            for i in items
        ]
    if not probes:
        return [
            _skip(i, "not probed (probes disabled)", "run the check with probes") for i in items
        ]

    try:
        scratch = tempfile.mkdtemp(prefix="gantry-probe-")
    except OSError as exc:
        overlay["detail"] = f"no scratch directory: {_describe_errno(exc)}"
        overlay["hint"] = "set TMPDIR to a writable directory"
    else:
        pending.append((overlay["id"], _probe_overlay(scratch), _remove_dir(scratch)))
    results = _run_probes(pending)
    for item in items:
        if item["id"] in results:
            works, message = results[item["id"]]
            item.update(
                _present=works,
                detail=message,
                value={True: "works", False: "fails", None: None}[works],
            )
            if works is not True:
                item["hint"] = _probe_hint(item["id"], works, ctx)
    return items


def _probe_hint(item_id: str, works: Optional[bool], ctx: _Context) -> str:
    if works is None:
        container = ctx.environment.get("container")
        where = (
            f" on the host (inside a {container} container the kernel may refuse)"
            if container
            else ""
        )
        return "run the check as root" + where
    if item_id.startswith("probe:unshare:"):
        name = item_id.rsplit(":", 1)[1]
        option = _NAMESPACE_OPTIONS.get(name, name.upper() + "_NS")
        limit = f"user.max_{name}_namespaces"
        return f"rebuild the kernel with CONFIG_{option}=y; check that sysctl {limit} > 0"
    if item_id == "probe:overlay":
        return "rebuild the kernel with CONFIG_OVERLAY_FS=y (or =m, then modprobe overlay)"
    if item_id == "probe:seccomp":
        return "rebuild the kernel with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y"
    return "mount the cgroup hierarchy read-write (inside a container: delegate a cgroup to it)"


# --------------------------------------------------------------------------------------------
# The report


def _requested_features(features: Optional[Sequence[str]]) -> List[str]:
    names = [feature[0] for feature in FEATURES]
    if not features:
        return [name for name, _description, default in FEATURES if default]
    if isinstance(features, str):
        features = [features]
    requested: List[str] = []
    for feature in features:
        if feature not in names:
            raise ValueError(f"unknown feature {feature!r}; valid features: {', '.join(names)}")
        if feature not in requested:
            requested.append(feature)
    return requested


def _settle(items: List[Item], requested: Sequence[str]) -> None:
    """Give each item its status from what was found and which features were requested."""
    by_id = {item["id"]: item for item in items}
    satisfied_by: Dict[str, str] = {}
    for group in _ALTERNATIVES:
        present = [i for i in group if i in by_id and by_id[i]["_present"] is True]
        for item_id in group if present else ():
            satisfied_by[item_id] = present[0]
    for item in items:
        present = item["_present"]
        if item["_skipped"]:
            item["status"] = "skipped"
        elif present is True:
            item["status"] = "ok"
        elif present is None:
            item["status"] = "unknown"
        elif item["id"] in satisfied_by:
            # An alternative to something that is there: nothing to fix.
            item["status"] = "ok"
            item["detail"] += f"; not needed, {by_id[satisfied_by[item['id']]]['label']} is there"
            item["hint"] = None
        elif any(item["features"].get(f) == REQUIRED for f in requested):
            item["status"] = "missing"
        else:
            item["status"] = "warn"
            needed = sorted(f for f, how in item["features"].items() if how == REQUIRED)
            if needed:
                item["detail"] += f"; needed by {', '.join(needed)} (not requested)"
            elif item["features"]:
                item["detail"] += f"; optional for {', '.join(sorted(item['features']))}"
        if item["status"] != "ok" and not item["hint"]:
            item["hint"] = "see the detail"


def _feature_report(items: List[Item], requested: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    report = {}
    for name, _description, _default in FEATURES:
        needed = [i for i in items if i["features"].get(name) == REQUIRED]
        missing = [i["id"] for i in needed if i["status"] in ("missing", "warn")]
        unknown = [i["id"] for i in needed if i["status"] == "unknown"]
        status = "missing" if missing else ("unknown" if unknown else "ok")
        report[name] = {"requested": name in requested, "status": status, "missing": missing}
    return report


def _kernel_release(sysroot: str) -> Tuple[Optional[str], Optional[str]]:
    if os.path.realpath(sysroot) == "/":
        uname = os.uname()
        return uname.release, uname.machine
    release = _read_value(_under(sysroot, "/proc/sys/kernel/osrelease"))
    return release, _read_value(_under(sysroot, "/proc/sys/kernel/arch"))


def run_checks(
    config_path: Optional[str] = None,
    features: Optional[Sequence[str]] = None,
    probes: bool = True,
    sysroot: str = "/",
    environ: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Check the kernel and host for the requested features (None or empty: the default
    set) and return the report, a JSON-serialisable dict. Raises ValueError naming an
    unknown feature."""
    requested = _requested_features(features)
    environ = os.environ if environ is None else environ
    sysroot = sysroot or "/"
    release, arch = _kernel_release(sysroot)
    environment = {
        "container": _detect_container(sysroot, environ),
        "in_user_namespace": _in_user_namespace(sysroot),
    }
    config = _load_config(config_path, environ, sysroot, release)
    running = _config_is_running_kernel(config, release, sysroot)
    version = config["version"]
    if version is None and running and release:
        match = re.match(r"\d+\.\d+(?:\.\d+)?", release)
        version = match.group(0) if match else None
    cgroup = _cgroup_facts(sysroot)
    ctx = _Context(
        sysroot, environ, release, running, _version_tuple(version), config, environment, cgroup
    )

    items = _kconfig_items(ctx) + _sysctl_items(ctx) + _binary_items(ctx)
    items += _cgroup_items(ctx) + _lsm_items(ctx) + _probe_items(ctx, probes)
    order = {section: index for index, section in enumerate(SECTIONS)}
    items.sort(key=lambda item: order[item["section"]])  # stable: keeps the table order
    _settle(items, requested)
    for item in items:
        del item["_present"], item["_skipped"]

    summary: Dict[str, Any] = {status: 0 for status in STATUSES}
    for item in items:
        summary[item["status"]] += 1
    summary["required_missing"] = [item["id"] for item in items if item["status"] == "missing"]
    if summary["required_missing"]:
        summary["exit_code"] = EXIT_MISSING
    elif not config["readable"]:
        summary["exit_code"] = EXIT_UNREADABLE
    else:
        summary["exit_code"] = EXIT_OK
    return {
        "schema": SCHEMA,
        "kernel": {
            "release": release if running else (config["version"] or release),
            "version": version,
            "running": running,
            "arch": arch if running else (config["arch"] or arch),
        },
        "config": {
            "path": config["path"],
            "readable": config["readable"],
            # The fix goes into the error too: it is often the only text a caller shows.
            "error": None if config["readable"] else f"{config['error']}. Fix: {ctx.config_hint}",
            "hint": None if config["readable"] else ctx.config_hint,
            "tried": config["tried"],
            "modules_supported": ctx.modules_supported,
        },
        "environment": environment,
        "cgroup": {"layout": cgroup["layout"], "v1": cgroup["v1"], "v2": cgroup["v2"]},
        "requested": requested,
        "features": _feature_report(items, requested),
        "items": items,
        "summary": summary,
    }


# --------------------------------------------------------------------------------------------
# Human output

_COLOURS = {
    "ok": "\033[1;32m",
    "missing": "\033[1;31m",
    "warn": "\033[1;33m",
    "unknown": "\033[1;36m",
    "skipped": "\033[2m",
}
_RESET = "\033[0m"
_OK_WORDS = {
    "kconfig": "enabled",
    "probe": "works",
    "sysctl": "ok",
    "binary": "found",
    "cgroup": "available",
    "lsm": "active",
}
_NOT_OK_WORDS = {
    "missing": "missing",
    "warn": "warning",
    "unknown": "unknown",
    "skipped": "skipped",
}


def _paint(text: str, status: str, color: bool) -> str:
    return _COLOURS[status] + text + _RESET if color else text


def _word(item: Item) -> str:
    status = str(item.get("status", "unknown"))
    if status != "ok":
        return _NOT_OK_WORDS.get(status, status)
    kind, value = str(item.get("kind", "")), item.get("value")
    # An alternative that is not needed (SELinux where AppArmor is absent, say) is ok
    # without being there: say what it is rather than "enabled".
    if kind == "kconfig" and value not in ("y", "m"):
        return "not set"
    if kind == "lsm" and value in ("inactive", "not built"):
        return str(value)
    if kind == "binary" and value is None:
        return "not installed" if "not installed" in (item.get("detail") or "") else "not needed"
    return _OK_WORDS.get(kind, "ok")


def _item_lines(item: Item, color: bool, show_hint: bool) -> List[str]:
    status = item.get("status", "unknown")
    word = _word(item)
    detail = item.get("detail") or ""
    if detail == "built in" and status == "ok":
        detail = ""
    if detail.startswith(word):  # "not installed (not installed; ...)" says it twice
        detail = detail[len(word) :].lstrip(";:, ")
    line = f"{item.get('label', item.get('id'))} [{item.get('id')}]: {_paint(word, status, color)}"
    lines = [line + (f" ({detail})" if detail else "")]
    if show_hint and status in ("missing", "warn", "unknown") and item.get("hint"):
        lines.append(f"    fix: {item['hint']}")
    return lines


def render_text(report: Dict[str, Any], color: bool = False) -> str:
    """The report in sections, as lxc-checkconfig prints; ANSI colours only with ``color``."""
    kernel = report.get("kernel") or {}
    config = report.get("config") or {}
    cgroup = report.get("cgroup") or {}
    environment = report.get("environment") or {}
    features = report.get("features") or {}
    lines = []
    running = "" if kernel.get("running", True) else ", not the running kernel"
    lines.append(
        f"Kernel: {kernel.get('release') or 'unknown'} "
        f"({kernel.get('arch') or 'unknown arch'}){running}"
    )
    if config.get("readable"):
        lines.append(f"Kernel configuration: {config.get('path')}")
    else:
        lines.append(f"Kernel configuration: {_paint('not readable', 'unknown', color)}")
        error, _fix, hint = (config.get("error") or "").partition(". Fix: ")
        lines.append(f"    {error}")
        if hint or config.get("hint"):
            lines.append(f"    fix: {hint or config.get('hint')}")
    if environment.get("container") or environment.get("in_user_namespace"):
        where = [f"{environment['container']} container"] if environment.get("container") else []
        where += ["in a user namespace"] if environment.get("in_user_namespace") else []
        lines.append(f"Environment: {', '.join(where)}")
    v1 = cgroup.get("v1") or {}
    v2 = cgroup.get("v2") or {}
    parts = [cgroup.get("layout") or "none"]
    if v1:
        parts.append(f"v1: {' '.join(sorted(v1))}")
    if v2.get("mount"):
        parts.append(
            f"v2 at {v2['mount']}: {' '.join(v2.get('controllers') or []) or 'no controllers'}"
        )
    lines.append(f"Cgroups: {'; '.join(parts)}")
    requested = [name for name, info in features.items() if info.get("requested")]
    lines.append(f"Requested features: {' '.join(requested)}")

    items = report.get("items") or []
    for section in SECTIONS:
        in_section = [item for item in items if item.get("section") == section]
        if in_section:
            lines += ["", f"--- {section} ---"]
        for item in in_section:
            # With no configuration, one fix (printed above) serves every kernel option.
            show_hint = config.get("readable", True) or item.get("kind") != "kconfig"
            lines += _item_lines(item, color, show_hint)

    lines += ["", "--- Summary ---"]
    words = []
    for name, info in features.items():
        status = info.get("status", "unknown")
        paint_as = status if status != "missing" or info.get("requested") else "warn"
        words.append(
            f"{name} {_paint(status, paint_as, color)}"
            + ("" if info.get("requested") else " (not requested)")
        )
    lines.append(f"Features: {', '.join(words)}")
    summary = report.get("summary") or {}
    counts = [summary.get(status, 0) for status in STATUSES]
    lines.append("Items: {} ok, {} missing, {} warnings, {} unknown, {} skipped".format(*counts))
    lines.append(f"Result: {missing_summary(report)}")
    return "\n".join(lines) + "\n"


def missing_summary(report: Dict[str, Any]) -> str:
    """One readable message: each missing required item with its fix, or why none is.
    Alternatives (AppArmor or SELinux) are named together, as "one of"."""
    missing = [item for item in report.get("items") or [] if item.get("status") == "missing"]
    config = report.get("config") or {}
    features = report.get("features") or {}
    if missing:
        by_id = {item.get("id"): item for item in missing}
        parts = []
        done: Set[Any] = set()
        for item in missing:
            if item.get("id") in done:
                continue
            group = next((g for g in _ALTERNATIVES if item.get("id") in g), (item.get("id"),))
            members = [by_id[i] for i in group if i in by_id]
            done.update(member.get("id") for member in members)
            needed_by = sorted(
                name
                for name, how in (item.get("features") or {}).items()
                if how == REQUIRED and (features.get(name) or {}).get("requested")
            )
            what = " or ".join(f"{m.get('label')} ({m.get('id')})" for m in members)
            fixes = " / ".join(str(m.get("hint")) for m in members)
            one_of = "one of " if len(members) > 1 else ""
            parts.append(f"{one_of}{what} for {', '.join(needed_by)}: {fixes}")
        plural = "" if len(parts) == 1 else "s"
        text = f"the kernel lacks {len(parts)} required item{plural}: " + "; ".join(parts)
        if not config.get("readable", True):
            text += f". The kernel configuration was not readable either: {config.get('hint')}"
        return text
    if not config.get("readable", True):
        return (
            "the kernel configuration could not be read, so kernel options are unknown and "
            f"nothing required is known to be missing: {config.get('hint') or config.get('error')}"
        )
    return "the kernel supports every requested feature"
