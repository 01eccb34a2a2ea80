"""gantry.runtime.spec: each validation rule, one crafted bad spec per case.

Every case edits a valid base spec in one way and expects exactly one error, at the named
field path, whose message contains the given fragment.
"""

import copy
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from gantry.runtime.spec import SpecError, load_spec

Doc = dict[str, Any]
Edit = Callable[[Doc], None]

BASE: Doc = {
    "ociVersion": "1.2.0",
    "process": {
        "user": {"uid": 0, "gid": 0},
        "args": ["/bin/sh", "-c", "true"],
        "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
        "cwd": "/",
        "capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        },
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024},
            {"type": "RLIMIT_NPROC", "hard": 512, "soft": 256},
        ],
        "noNewPrivileges": True,
        "oomScoreAdj": 0,
    },
    "root": {"path": "rootfs"},
    "hostname": "box",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
    ],
    "hooks": {
        "createRuntime": [{"path": "/usr/libexec/setup", "timeout": 5}],
        "poststop": [{"path": "/usr/libexec/teardown", "timeout": 5}],
    },
    "annotations": {"owner": "tests"},
    "linux": {
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229}],
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": 1048576, "swap": 2097152},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "pids": {"limit": 100},
            "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 500}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        },
        "cgroupsPath": "/gantry/box",
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}],
                }
            ],
        },
        "rootfsPropagation": "rprivate",
        "maskedPaths": ["/proc/kcore", "/proc/keys"],
        "readonlyPaths": ["/proc/sys", "/proc/bus"],
    },
}

USERNS_MAPS = {
    "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
}


def base() -> Doc:
    return copy.deepcopy(BASE)


# --- field paths ----------------------------------------------------------------------------


def _steps(path: str) -> list[str | int]:
    """Split 'a.b[2]["k.x"].c' into ['a', 'b', 2, 'k.x', 'c']."""
    steps: list[str | int] = []
    i = 0
    while i < len(path):
        if path[i] == ".":
            i += 1
        elif path.startswith('["', i):
            end = path.index('"]', i) + 1
            steps.append(json.loads(path[i + 1 : end]))
            i = end + 1
        elif path[i] == "[":
            end = path.index("]", i)
            steps.append(int(path[i + 1 : end]))
            i = end + 1
        else:
            end = i
            while end < len(path) and path[end] not in ".[":
                end += 1
            steps.append(path[i:end])
            i = end
    return steps


def _parent(doc: Doc, path: str) -> tuple[Any, str | int]:
    *parents, last = _steps(path)
    node: Any = doc
    for step in parents:
        node = node[step]
    return node, last


def put(path: str, value: object) -> Edit:
    def edit(doc: Doc) -> None:
        node, last = _parent(doc, path)
        if isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)

    return edit


def drop(path: str) -> Edit:
    def edit(doc: Doc) -> None:
        node, last = _parent(doc, path)
        del node[last]

    return edit


def both(*edits: Edit) -> Edit:
    def edit(doc: Doc) -> None:
        for one in edits:
            one(doc)

    return edit


def with_userns(doc: Doc) -> None:
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"].update(copy.deepcopy(USERNS_MAPS))


def test_base_spec_is_valid() -> None:
    assert load_spec(base()).to_dict() == BASE


def test_path_helper_reads_paths_like_the_errors_write_them() -> None:
    assert _steps('linux.sysctl["net.ipv4.ip_forward"]') == [
        "linux",
        "sysctl",
        "net.ipv4.ip_forward",
    ]
    assert _steps("linux.namespaces[1].type") == ["linux", "namespaces", 1, "type"]


# --- the rules ------------------------------------------------------------------------------


class Case(NamedTuple):
    edit: Edit
    path: str
    fragment: str


RULES: dict[str, Case] = {
    # required fields
    "ociVersion required": Case(drop("ociVersion"), "ociVersion", "is required"),
    "ociVersion semver 1.x": Case(put("ociVersion", "2.0.0"), "ociVersion", "1.x.y SemVer"),
    "ociVersion not a version": Case(put("ociVersion", "latest"), "ociVersion", "SemVer"),
    "root required": Case(drop("root"), "root", "is required"),
    "root.path required": Case(drop("root.path"), "root.path", "is required"),
    "root.path not empty": Case(put("root.path", ""), "root.path", "must not be empty"),
    "process.args required": Case(drop("process.args"), "process.args", "is required"),
    "process.args not empty": Case(put("process.args", []), "process.args", "must not be empty"),
    "process.cwd required": Case(drop("process.cwd"), "process.cwd", "is required"),
    "process.cwd absolute": Case(put("process.cwd", "srv"), "process.cwd", "absolute path"),
    "process.user required": Case(drop("process.user"), "process.user", "is required"),
    "user.uid required": Case(drop("process.user.uid"), "process.user.uid", "is required"),
    "user.umask range": Case(put("process.user.umask", 0o1000), "process.user.umask", "between 0"),
    "args without NUL": Case(put("process.args[1]", "a\0b"), "process.args[1]", "NUL"),
    "env is NAME=VALUE": Case(put("process.env[1]", "HOME"), "process.env[1]", "NAME=VALUE"),
    "env name not empty": Case(put("process.env[0]", "=x"), "process.env[0]", "NAME=VALUE"),
    # namespaces
    "namespace type known": Case(
        put("linux.namespaces[1].type", "net"), "linux.namespaces[1].type", "unknown namespace"
    ),
    "namespace no duplicates": Case(
        put("linux.namespaces[5]", {"type": "ipc"}), "linux.namespaces[5].type", "duplicate 'ipc'"
    ),
    "namespace path absolute": Case(
        put("linux.namespaces[0].path", "proc/1/ns/pid"), "linux.namespaces[0].path", "absolute"
    ),
    # user namespace and ID mappings
    "uidMappings need userns": Case(
        put("linux.uidMappings", USERNS_MAPS["uidMappings"]), "linux.uidMappings", "user namespace"
    ),
    "gidMappings need userns": Case(
        put("linux.gidMappings", USERNS_MAPS["gidMappings"]), "linux.gidMappings", "user namespace"
    ),
    "new userns needs uidMappings": Case(
        both(with_userns, drop("linux.uidMappings")), "linux.uidMappings", "is required"
    ),
    "new userns needs gidMappings": Case(
        both(with_userns, drop("linux.gidMappings")), "linux.gidMappings", "is required"
    ),
    "mapping size positive": Case(
        both(with_userns, put("linux.uidMappings[0].size", 0)),
        "linux.uidMappings[0].size",
        "at least 1",
    ),
    "mappings do not overlap": Case(
        both(
            with_userns,
            put("linux.uidMappings[1]", {"containerID": 100, "hostID": 900000, "size": 10}),
        ),
        "linux.uidMappings[1]",
        "containerID range overlaps uidMappings[0]",
    ),
    "mapping fits in 32 bits": Case(
        both(
            with_userns,
            put("linux.gidMappings[0]", {"containerID": 0, "hostID": 4294967295, "size": 2}),
        ),
        "linux.gidMappings[0].size",
        "runs past",
    ),
    # capabilities and rlimits
    "capability known": Case(
        put("process.capabilities.bounding[2]", "CAP_FLY"),
        "process.capabilities.bounding[2]",
        "unknown capability 'CAP_FLY'",
    ),
    "capability needs CAP_ prefix": Case(
        put("process.capabilities.effective[0]", "CHOWN"),
        "process.capabilities.effective[0]",
        "did you mean 'CAP_CHOWN'",
    ),
    "ambient capability known": Case(
        put("process.capabilities.ambient", ["CAP_SYS_ADMIN", "cap_kill"]),
        "process.capabilities.ambient[1]",
        "unknown capability",
    ),
    "rlimit type known": Case(
        put("process.rlimits[0].type", "RLIMIT_FILES"), "process.rlimits[0].type", "unknown rlimit"
    ),
    "rlimit soft <= hard": Case(
        put("process.rlimits[1].soft", 1024), "process.rlimits[1].soft", "above the hard limit"
    ),
    "rlimit no duplicates": Case(
        put("process.rlimits[1].type", "RLIMIT_NOFILE"), "process.rlimits[1].type", "duplicate"
    ),
    "oomScoreAdj at most 1000": Case(
        put("process.oomScoreAdj", 1001), "process.oomScoreAdj", "between -1000 and 1000"
    ),
    "oomScoreAdj at least -1000": Case(
        put("process.oomScoreAdj", -1001), "process.oomScoreAdj", "between -1000 and 1000"
    ),
    "ioPriority class known": Case(
        put("process.ioPriority", {"class": "IOPRIO_CLASS_NONE", "priority": 0}),
        "process.ioPriority.class",
        "unknown I/O priority class",
    ),
    "ioPriority level 0-7": Case(
        put("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}),
        "process.ioPriority.priority",
        "between 0 and 7",
    ),
    "scheduler policy known": Case(
        put("process.scheduler", {"policy": "SCHED_FAST"}),
        "process.scheduler.policy",
        "unknown scheduling policy",
    ),
    "realtime priority 1-99": Case(
        put("process.scheduler", {"policy": "SCHED_RR", "priority": 0}),
        "process.scheduler.priority",
        "between 1 and 99",
    ),
    "non-realtime priority 0": Case(
        put("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5}),
        "process.scheduler.priority",
        "must be 0",
    ),
    "deadline runtime <= deadline": Case(
        put("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10, "deadline": 5}),
        "process.scheduler.runtime",
        "must not exceed deadline",
    ),
    "execCPUAffinity is a cpu list": Case(
        put("process.execCPUAffinity", {"initial": "0,a"}),
        "process.execCPUAffinity.initial",
        "list like",
    ),
    # mounts
    "mount destination required": Case(
        drop("mounts[2].destination"), "mounts[2].destination", "is required"
    ),
    "mount destination absolute": Case(
        put("mounts[3].destination", "dev/shm"), "mounts[3].destination", "absolute path"
    ),
    "idmapped mount needs both maps": Case(
        put("mounts[0].uidMappings", USERNS_MAPS["uidMappings"]),
        "mounts[0].gidMappings",
        "is required when uidMappings is set",
    ),
    # devices
    "device type known": Case(
        put("linux.devices[0].type", "x"), "linux.devices[0].type", "unknown device type"
    ),
    "device path absolute": Case(
        put("linux.devices[0].path", "dev/fuse"), "linux.devices[0].path", "absolute path"
    ),
    "device path under /dev": Case(
        put("linux.devices[0].path", "/dev/../etc/shadow"), "linux.devices[0].path", "under /dev"
    ),
    "char device needs major": Case(
        drop("linux.devices[0].major"), "linux.devices[0].major", "is required for a 'c' device"
    ),
    "device rule type known": Case(
        put("linux.resources.devices[0].type", "p"),
        "linux.resources.devices[0].type",
        "unknown device rule type",
    ),
    "device rule access rwm": Case(
        put("linux.resources.devices[0].access", "rwx"),
        "linux.resources.devices[0].access",
        "'r', 'w' and 'm'",
    ),
    # sysctls
    "ipc sysctl needs ipc ns": Case(
        both(drop("linux.namespaces[2]"), put('linux.sysctl["kernel.shmmax"]', "1")),
        'linux.sysctl["kernel.shmmax"]',
        "ipc namespace",
    ),
    "msg sysctl needs ipc ns": Case(
        both(drop("linux.namespaces[2]"), put('linux.sysctl["kernel.msgmax"]', "1")),
        'linux.sysctl["kernel.msgmax"]',
        "ipc namespace",
    ),
    "sem sysctl needs ipc ns": Case(
        both(drop("linux.namespaces[2]"), put('linux.sysctl["kernel.sem"]', "1 2 3 4")),
        'linux.sysctl["kernel.sem"]',
        "ipc namespace",
    ),
    "mqueue sysctl needs ipc ns": Case(
        both(drop("linux.namespaces[2]"), put('linux.sysctl["fs.mqueue.msg_max"]', "1")),
        'linux.sysctl["fs.mqueue.msg_max"]',
        "ipc namespace",
    ),
    "net sysctl needs net ns": Case(
        drop("linux.namespaces[1]"),
        'linux.sysctl["net.ipv4.ip_forward"]',
        "network namespace that is not the host's",
    ),
    "net sysctl refused in host netns": Case(
        put("linux.namespaces[1].path", "/proc/1/ns/net"),
        'linux.sysctl["net.ipv4.ip_forward"]',
        "not the host's",
    ),
    "slash-form sysctl checked too": Case(
        both(
            drop("linux.namespaces[1]"),
            drop('linux.sysctl["net.ipv4.ip_forward"]'),
            put('linux.sysctl["net/core/somaxconn"]', "1024"),
        ),
        'linux.sysctl["net/core/somaxconn"]',
        "network namespace",
    ),
    "uts sysctl needs uts ns": Case(
        both(
            drop("hostname"),
            drop("linux.namespaces[3]"),
            put('linux.sysctl["kernel.domainname"]', "example"),
        ),
        'linux.sysctl["kernel.domainname"]',
        "uts namespace",
    ),
    "kernel.hostname conflicts with hostname": Case(
        put('linux.sysctl["kernel.hostname"]', "other"),
        'linux.sysctl["kernel.hostname"]',
        "conflicts with the hostname field",
    ),
    "host-wide sysctl refused": Case(
        put('linux.sysctl["vm.swappiness"]', "10"),
        'linux.sysctl["vm.swappiness"]',
        "not namespaced",
    ),
    "kernel sysctl refused": Case(
        put('linux.sysctl["kernel.pid_max"]', "10"),
        'linux.sysctl["kernel.pid_max"]',
        "not namespaced",
    ),
    # hostname and domainname
    "hostname needs uts ns": Case(drop("linux.namespaces[3]"), "hostname", "uts namespace"),
    "domainname needs uts ns": Case(
        both(drop("hostname"), drop("linux.namespaces[3]"), put("domainname", "example")),
        "domainname",
        "uts namespace",
    ),
    # seccomp
    "seccomp defaultAction required": Case(
        drop("linux.seccomp.defaultAction"), "linux.seccomp.defaultAction", "is required"
    ),
    "seccomp defaultAction known": Case(
        put("linux.seccomp.defaultAction", "SCMP_ACT_DENY"),
        "linux.seccomp.defaultAction",
        "unknown seccomp action",
    ),
    "seccomp action known": Case(
        put("linux.seccomp.syscalls[0].action", "ALLOW"),
        "linux.seccomp.syscalls[0].action",
        "unknown seccomp action",
    ),
    "seccomp operator known": Case(
        put("linux.seccomp.syscalls[0].args[0].op", "SCMP_CMP_IN"),
        "linux.seccomp.syscalls[0].args[0].op",
        "unknown seccomp operator",
    ),
    "seccomp arg index 0-5": Case(
        put("linux.seccomp.syscalls[0].args[0].index", 6),
        "linux.seccomp.syscalls[0].args[0].index",
        "between 0 and 5",
    ),
    "seccomp names not empty": Case(
        put("linux.seccomp.syscalls[0].names", []),
        "linux.seccomp.syscalls[0].names",
        "must not be empty",
    ),
    "seccomp architecture known": Case(
        put("linux.seccomp.architectures[0]", "x86_64"),
        "linux.seccomp.architectures[0]",
        "unknown seccomp architecture",
    ),
    "seccomp flag known": Case(
        put("linux.seccomp.flags", ["SECCOMP_FILTER_FLAG_FAST"]),
        "linux.seccomp.flags[0]",
        "unknown seccomp flag",
    ),
    "seccomp notify needs listenerPath": Case(
        put("linux.seccomp.syscalls[0].action", "SCMP_ACT_NOTIFY"),
        "linux.seccomp.syscalls[0].action",
        "needs seccomp.listenerPath",
    ),
    "seccomp notify not as default": Case(
        both(
            put("linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY"),
            put("linux.seccomp.listenerPath", "/run/listener.sock"),
        ),
        "linux.seccomp.defaultAction",
        "cannot be the default action",
    ),
    "seccomp listenerPath absolute": Case(
        put("linux.seccomp.listenerPath", "listener.sock"),
        "linux.seccomp.listenerPath",
        "absolute path",
    ),
    "seccomp errnoRet needs errno action": Case(
        put("linux.seccomp.syscalls[0].errnoRet", 1),
        "linux.seccomp.syscalls[0].errnoRet",
        "only valid with SCMP_ACT_ERRNO",
    ),
    "seccomp defaultErrnoRet needs errno action": Case(
        both(
            put("linux.seccomp.defaultAction", "SCMP_ACT_KILL"),
            put("linux.seccomp.defaultErrnoRet", 1),
        ),
        "linux.seccomp.defaultErrnoRet",
        "only valid with SCMP_ACT_ERRNO",
    ),
    # rootfs, paths, cgroups
    "rootfsPropagation known": Case(
        put("linux.rootfsPropagation", "rshared-ish"),
        "linux.rootfsPropagation",
        "unknown propagation",
    ),
    "maskedPaths absolute": Case(
        put("linux.maskedPaths[1]", "proc/keys"), "linux.maskedPaths[1]", "absolute path"
    ),
    "readonlyPaths absolute": Case(
        put("linux.readonlyPaths[0]", "proc/sys"), "linux.readonlyPaths[0]", "absolute path"
    ),
    "cgroupsPath not empty": Case(put("linux.cgroupsPath", ""), "linux.cgroupsPath", "empty"),
    "cgroupsPath without ..": Case(
        put("linux.cgroupsPath", "/gantry/../../escape"), "linux.cgroupsPath", "'..'"
    ),
    "cgroupsPath systemd form has 3 parts": Case(
        put("linux.cgroupsPath", "system.slice:gantry"), "linux.cgroupsPath", "slice:prefix:name"
    ),
    "cgroupsPath systemd slice name": Case(
        put("linux.cgroupsPath", "system:gantry:box"), "linux.cgroupsPath", "end in '.slice'"
    ),
    # time namespace
    "timeOffsets need time ns": Case(
        put("linux.timeOffsets", {"monotonic": {"secs": 1}}),
        "linux.timeOffsets",
        "needs a time namespace",
    ),
    "timeOffsets not with joined time ns": Case(
        both(
            put("linux.namespaces[5]", {"type": "time", "path": "/proc/42/ns/time"}),
            put("linux.timeOffsets", {"boottime": {"secs": 1}}),
        ),
        "linux.timeOffsets",
        "joining an existing time namespace",
    ),
    "timeOffsets clock known": Case(
        both(
            put("linux.namespaces[5]", {"type": "time"}),
            put("linux.timeOffsets", {"realtime": {"secs": 1}}),
        ),
        'linux.timeOffsets["realtime"]',
        "unknown clock",
    ),
    "timeOffsets nanosecs below a second": Case(
        both(
            put("linux.namespaces[5]", {"type": "time"}),
            put("linux.timeOffsets", {"monotonic": {"nanosecs": 1_000_000_000}}),
        ),
        'linux.timeOffsets["monotonic"].nanosecs',
        "between 0 and 999999999",
    ),
    # resources
    "memory swap >= limit": Case(
        put("linux.resources.memory.swap", 1024),
        "linux.resources.memory.swap",
        "below the memory limit",
    ),
    "memory limit >= -1": Case(
        put("linux.resources.memory.limit", -2), "linux.resources.memory.limit", "at least -1"
    ),
    "memory swappiness 0-100": Case(
        put("linux.resources.memory.swappiness", 101),
        "linux.resources.memory.swappiness",
        "between 0 and 100",
    ),
    "cpu shares >= 2": Case(
        put("linux.resources.cpu.shares", 1), "linux.resources.cpu.shares", "between 2 and 262144"
    ),
    "cpu shares <= 262144": Case(
        put("linux.resources.cpu.shares", 262145),
        "linux.resources.cpu.shares",
        "between 2 and 262144",
    ),
    "cpu quota >= 1ms": Case(
        put("linux.resources.cpu.quota", 500), "linux.resources.cpu.quota", "at least 1000"
    ),
    "cpu period 1ms-1s": Case(
        put("linux.resources.cpu.period", 2_000_000),
        "linux.resources.cpu.period",
        "between 1000 and 1000000",
    ),
    "cpu cpus ranges ascend": Case(
        put("linux.resources.cpu.cpus", "3-1"), "linux.resources.cpu.cpus", "runs backwards"
    ),
    "cpu idle 0 or 1": Case(
        put("linux.resources.cpu.idle", 2), "linux.resources.cpu.idle", "between 0 and 1"
    ),
    "pids limit >= -1": Case(
        put("linux.resources.pids.limit", -2), "linux.resources.pids.limit", "at least -1"
    ),
    "blkio weight 10-1000": Case(
        put("linux.resources.blockIO.weight", 5),
        "linux.resources.blockIO.weight",
        "between 10 and 1000",
    ),
    "blkio device weight 10-1000": Case(
        put("linux.resources.blockIO.weightDevice[0].weight", 2000),
        "linux.resources.blockIO.weightDevice[0].weight",
        "between 10 and 1000",
    ),
    "hugepage size format": Case(
        put("linux.resources.hugepageLimits[0].pageSize", "2M"),
        "linux.resources.hugepageLimits[0].pageSize",
        "'2MB'",
    ),
    "unified key is a file name": Case(
        put("linux.resources.unified", {"../memory.max": "1"}),
        'linux.resources.unified["../memory.max"]',
        "cgroup file name",
    ),
    "network priority interface name": Case(
        put("linux.resources.network", {"priorities": [{"name": "eth 0", "priority": 1}]}),
        "linux.resources.network.priorities[0].name",
        "interface name",
    ),
    # newer linux sections
    "netDevices need a private netns": Case(
        both(
            drop("linux.namespaces[1]"), drop("linux.sysctl"), put("linux.netDevices", {"eth1": {}})
        ),
        "linux.netDevices",
        "network namespace",
    ),
    "netDevices names are interface names": Case(
        put("linux.netDevices", {"eth1": {"name": "a-very-long-interface-name"}}),
        'linux.netDevices["eth1"].name',
        "interface name",
    ),
    "memoryPolicy bind needs nodes": Case(
        put("linux.memoryPolicy", {"mode": "MPOL_BIND"}), "linux.memoryPolicy.nodes", "required"
    ),
    "memoryPolicy mode known": Case(
        put("linux.memoryPolicy", {"mode": "MPOL_FAST"}),
        "linux.memoryPolicy.mode",
        "unknown memory policy mode",
    ),
    "personality domain known": Case(
        put("linux.personality", {"domain": "LINUX64"}),
        "linux.personality.domain",
        "unknown personality domain",
    ),
    # hooks and annotations
    "hook path required": Case(
        drop("hooks.createRuntime[0].path"), "hooks.createRuntime[0].path", "is required"
    ),
    "hook path absolute": Case(
        put("hooks.createRuntime[0].path", "setup"), "hooks.createRuntime[0].path", "absolute"
    ),
    "hook timeout > 0": Case(
        put("hooks.poststop[0].timeout", 0), "hooks.poststop[0].timeout", "at least 1"
    ),
    "hook env is NAME=VALUE": Case(
        put("hooks.poststop[0].env", ["OK=1", "BAD"]), "hooks.poststop[0].env[1]", "NAME=VALUE"
    ),
    "annotation keys not empty": Case(
        put('annotations[""]', "x"), 'annotations[""]', "must not be empty"
    ),
}


@pytest.mark.parametrize("case", list(RULES.values()), ids=list(RULES))
def test_rule(case: Case) -> None:
    doc = base()
    case.edit(doc)

    with pytest.raises(SpecError) as caught:
        load_spec(doc)

    assert len(caught.value.errors) == 1, caught.value.errors
    path, message = caught.value.errors[0]
    assert path == case.path
    assert case.fragment in message
    assert f"{case.path}: {message}" in str(caught.value)


# Things the rules must not refuse: valid variations next to the refused ones.
ALLOWED: dict[str, Edit] = {
    "userns with maps": with_userns,
    "joined userns without maps": put(
        "linux.namespaces[5]", {"type": "user", "path": "/proc/9/ns/user"}
    ),
    "net sysctl in joined netns": put("linux.namespaces[1].path", "/var/run/netns/blue"),
    "ipc sysctl with ipc ns": put('linux.sysctl["kernel.shm_rmid_forced"]', "1"),
    "domainname sysctl with uts ns": put('linux.sysctl["kernel.domainname"]', "example"),
    "unlimited memory and swap": put("linux.resources.memory", {"limit": -1, "swap": -1}),
    "swap unlimited, memory limited": put("linux.resources.memory.swap", -1),
    "zero cpu shares means unset": put("linux.resources.cpu.shares", 0),
    "unlimited cpu quota": put("linux.resources.cpu.quota", -1),
    "relative cgroupsPath": put("linux.cgroupsPath", "gantry/box"),
    "systemd cgroupsPath": put("linux.cgroupsPath", "system.slice:gantry:box"),
    "systemd cgroupsPath default slice": put("linux.cgroupsPath", ":gantry:box"),
    "fifo device without numbers": put("linux.devices[1]", {"type": "p", "path": "/dev/fifo0"}),
    "notify with listener": both(
        put("linux.seccomp.syscalls[0].action", "SCMP_ACT_NOTIFY"),
        put("linux.seccomp.listenerPath", "/run/listener.sock"),
    ),
    "errno action with errnoRet": both(
        put("linux.seccomp.syscalls[0].action", "SCMP_ACT_ERRNO"),
        put("linux.seccomp.syscalls[0].errnoRet", 38),
    ),
    "time offsets with new time ns": both(
        put("linux.namespaces[5]", {"type": "time"}),
        put("linux.timeOffsets", {"monotonic": {"secs": -5}}),
    ),
    "no process at all": drop("process"),
    "empty hostname without uts": both(drop("linux.namespaces[3]"), put("hostname", "")),
    "capability sets may differ": put("process.capabilities.ambient", ["CAP_KILL"]),
    "big uint64 rlimit": put(
        "process.rlimits[0]", {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 0}
    ),
}


@pytest.mark.parametrize("edit", list(ALLOWED.values()), ids=list(ALLOWED))
def test_allowed(edit: Edit) -> None:
    doc = base()
    edit(doc)

    spec = load_spec(doc)

    assert load_spec(spec.to_dict()) == spec


# --- wrong JSON types -----------------------------------------------------------------------

WRONG_TYPES: dict[str, tuple[str, object, str]] = {
    "object as string": ("process", "sh", "expected an object, got string"),
    "boolean as string": ("process.noNewPrivileges", "yes", "expected a boolean, got string"),
    "integer as string": ("process.user.uid", "0", "expected an integer, got string"),
    "integer as float": ("process.user.uid", 1.5, "expected an integer, got number"),
    "integer as boolean": ("process.user.gid", True, "expected an integer, got boolean"),
    "uint32 overflow": ("process.user.uid", 2**32, "out of range for uint32"),
    "uint32 negative": ("process.user.uid", -1, "out of range for uint32"),
    "uint64 negative": ("process.rlimits[0].hard", -1, "out of range for uint64"),
    "int64 overflow": ("linux.resources.memory.limit", 2**63, "out of range for int64"),
    "array as string": ("process.args", "sh", "expected an array, got string"),
    "array item": ("process.args[1]", 7, "expected a string, got integer"),
    "array item null": ("process.env[0]", None, "expected a string, got null"),
    "caps as object": ("process.capabilities.bounding", {}, "expected an array, got object"),
    "options as string": ("mounts[1].options", "ro", "expected an array, got string"),
    "hook as string": ("hooks.poststop[0]", "/bin/true", "expected an object, got string"),
    "namespaces as object": ("linux.namespaces", {"pid": {}}, "expected an array, got object"),
    "sysctl as array": ("linux.sysctl", [], "expected an object, got array"),
    "sysctl value": ('linux.sysctl["net.ipv4.ip_forward"]', 1, "expected a string, got integer"),
    "memory as string": ("linux.resources.memory.limit", "1G", "expected an integer, got string"),
    "pointer bool": ("linux.resources.memory.disableOOMKiller", 0, "expected a boolean"),
    "rule allow": ("linux.resources.devices[0].allow", "false", "expected a boolean, got string"),
    "seccomp names": ("linux.seccomp.syscalls[0].names", "read", "expected an array, got string"),
    "annotations as array": ("annotations", ["a"], "expected an object, got array"),
    "annotation value": ('annotations["owner"]', 1, "expected a string, got integer"),
    "root as string": ("root", "rootfs", "expected an object, got string"),
}


@pytest.mark.parametrize(
    ("path", "value", "expected"), list(WRONG_TYPES.values()), ids=list(WRONG_TYPES)
)
def test_wrong_type_names_the_field(path: str, value: object, expected: str) -> None:
    doc = base()
    put(path, value)(doc)

    with pytest.raises(SpecError) as caught:
        load_spec(doc)

    assert len(caught.value.errors) == 1, caught.value.errors
    assert caught.value.errors[0][0] == path
    assert expected in caught.value.errors[0][1]
