"""gantry.runtime.process and security, the pure part: what the init is told to do, decided
from a spec before anything is forked; capability planning; exit statuses."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gantry.linux import ns
from gantry.runtime.defaults import DEFAULT_CAPABILITIES, default_config
from gantry.runtime.process import ContainerInitError, HostFacts, exit_status, plan_init
from gantry.runtime.seccomp_default import default_seccomp_config
from gantry.runtime.security import CapabilityPlan, plan_capabilities, seccomp_goes_early
from gantry.runtime.spec import CAPABILITIES, RLIMITS, Capabilities, load_spec

BUNDLE = Path("/run/bundle")
ALL_CAPS = frozenset(range(41))
HOST = HostFacts(last_cap=40, held_caps=ALL_CAPS, may_set_groups=True)


def _plan(change: Callable[[dict[str, Any]], None] | None = None, host: HostFacts = HOST) -> Any:
    config = default_config(["/bin/sh", "-c", "true"], "rootfs")
    if change is not None:
        change(config)
    return plan_init(load_spec(config), BUNDLE, host)


def _numbers(names: tuple[str, ...] | list[str]) -> frozenset[int]:
    return frozenset(CAPABILITIES[name] for name in names)


def _userns(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 1000},
        {"containerID": 1000, "hostID": 200000, "size": 10},
    ]


# --- namespaces -------------------------------------------------------------------------------


def test_default_namespaces_are_unshared_pid_apart() -> None:
    plan = _plan()
    expected = ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWNET
    assert plan.unshare_flags == expected | ns.CLONE_NEWCGROUP
    assert plan.new_pid_ns and plan.new_net_ns
    assert not plan.new_user_ns
    assert plan.join == ()
    assert plan.uid_map == plan.gid_map == ""


def test_user_namespace_maps_are_rendered_one_line_each() -> None:
    plan = _plan(_userns)
    assert plan.new_user_ns
    assert not plan.unshare_flags & ns.CLONE_NEWUSER  # unshared alone, first
    assert plan.uid_map == "0 100000 65536\n"
    assert plan.gid_map == "0 100000 1000\n1000 200000 10\n"
    assert not plan.deny_setgroups


def test_setgroups_denied_only_for_a_runtime_that_cannot_set_groups() -> None:
    unprivileged = HostFacts(last_cap=40, held_caps=ALL_CAPS, may_set_groups=False)
    assert _plan(_userns, unprivileged).deny_setgroups
    assert not _plan(None, unprivileged).deny_setgroups  # no user namespace: nothing to deny


def test_joined_namespaces_come_user_first() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"] = [
            {"type": "mount"},
            {"type": "network", "path": "/run/netns/a"},
            {"type": "ipc", "path": "/proc/7/ns/ipc"},
            {"type": "user", "path": "/proc/7/ns/user"},
            {"type": "pid"},
        ]

    plan = _plan(change)
    assert plan.join == (
        (ns.Namespace.USER, "/proc/7/ns/user"),
        (ns.Namespace.NET, "/run/netns/a"),
        (ns.Namespace.IPC, "/proc/7/ns/ipc"),
    )
    assert plan.unshare_flags == ns.CLONE_NEWNS
    assert not plan.new_net_ns  # joined: the loopback is not ours to touch
    assert not plan.new_user_ns


def test_time_offsets_text() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["namespaces"].append({"type": "time"})
        config["linux"]["timeOffsets"] = {
            "monotonic": {"secs": -5, "nanosecs": 0},
            "boottime": {"secs": 86400, "nanosecs": 17},
        }

    plan = _plan(change)
    assert plan.unshare_flags & ns.CLONE_NEWTIME
    assert plan.time_offsets == "boottime 86400 17\nmonotonic -5 0\n"


def test_a_terminal_and_create_hooks_are_planned() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = True
        config["process"]["consoleSize"] = {"height": 30, "width": 100}
        config["hooks"] = {"createRuntime": [{"path": "/bin/true"}]}

    plan = _plan(change)
    assert plan.terminal and plan.console_size == (30, 100)
    assert plan.create_hooks
    assert not _plan(None).create_hooks and not _plan(None).terminal
    assert not any("hooks" in warning for warning in plan.warnings)


@pytest.mark.parametrize(
    ("change", "step", "fragment"),
    [
        (
            lambda c: c["linux"].update(namespaces=[{"type": "pid"}]),
            "spec",
            "new mount namespace",
        ),
        (
            lambda c: c["linux"].update(namespaces=[{"type": "mount", "path": "/proc/1/ns/mnt"}]),
            "spec",
            "new mount namespace",
        ),
        (lambda c: c["linux"].update(personality={"domain": "LINUX32"}), "spec", "personality"),
        (lambda c: c.pop("process"), "spec", "no process"),
    ],
)
def test_unsupported_specs_are_refused_before_forking(
    change: Callable[[dict[str, Any]], None], step: str, fragment: str
) -> None:
    with pytest.raises(ContainerInitError, match=fragment) as info:
        _plan(change)
    assert info.value.step == step


# --- process fields ---------------------------------------------------------------------------


def test_process_fields_are_carried_over() -> None:
    def change(config: dict[str, Any]) -> None:
        config["hostname"] = "box"
        config["domainname"] = "example.test"
        config["process"]["env"] = ["A=1", "B=x=y", "EMPTY="]
        config["process"]["cwd"] = "/srv"
        config["process"]["oomScoreAdj"] = 300
        config["process"]["user"] = {
            "uid": 5,
            "gid": 6,
            "umask": 0o027,
            "additionalGids": [7, 8],
            "username": "app",
        }
        config["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1},
        ]
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}

    plan = _plan(change)
    assert plan.args == ("/bin/sh", "-c", "true")
    assert plan.env == (("A", "1"), ("B", "x=y"), ("EMPTY", ""))
    assert plan.cwd == "/srv"
    assert (plan.hostname, plan.domainname) == ("box", "example.test")
    assert plan.oom_score_adj == 300
    assert (plan.uid, plan.gid, plan.umask, plan.additional_gids) == (5, 6, 0o027, (7, 8))
    assert plan.username == "app"
    assert plan.rlimits == (
        (RLIMITS["RLIMIT_NOFILE"], 100, 200),
        (RLIMITS["RLIMIT_CORE"], 2**64 - 1, 2**64 - 1),
    )
    assert plan.sysctls == (("net.ipv4.ip_forward", "1"),)
    assert plan.no_new_privs
    assert plan.rootfs == "rootfs" and plan.bundle == BUNDLE


def test_ignored_features_become_warnings() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["apparmorProfile"] = "docker-default"
        config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
        config["hooks"] = {"prestart": [{"path": "/bin/true"}]}

    warnings = _plan(change).warnings
    assert any(w.startswith("process.apparmorProfile") for w in warnings)
    assert any(w.startswith("process.selinuxLabel") for w in warnings)
    assert not any(w.startswith("hooks") for w in warnings)  # hooks are run now


# --- capabilities and seccomp -----------------------------------------------------------------


def test_default_capabilities_plan() -> None:
    caps = _plan().capabilities
    expected = _numbers(DEFAULT_CAPABILITIES)
    assert caps.bounding == caps.effective == caps.permitted == expected
    assert caps.inheritable == caps.ambient == frozenset()
    assert caps.mask("effective") == sum(1 << n for n in expected)
    assert _plan().last_cap == HOST.last_cap


def test_capabilities_unknown_to_the_kernel_are_left_out_with_a_warning() -> None:
    spec_caps = Capabilities(bounding=("CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"))
    plan, warnings = plan_capabilities(spec_caps, last_cap=39, held=ALL_CAPS)
    assert plan.bounding == _numbers(["CAP_CHOWN"])
    assert warnings == (
        "process.capabilities: CAP_CHECKPOINT_RESTORE is unknown to this kernel; left out",
    )


def test_capabilities_the_runtime_lacks_are_refused() -> None:
    spec_caps = Capabilities(effective=("CAP_SYS_RESOURCE",), permitted=("CAP_SYS_RESOURCE",))
    held = ALL_CAPS - {CAPABILITIES["CAP_SYS_RESOURCE"]}
    with pytest.raises(ValueError, match="does not hold itself: CAP_SYS_RESOURCE"):
        plan_capabilities(spec_caps, last_cap=40, held=held)


def test_plan_init_names_the_capabilities_step() -> None:
    host = HostFacts(last_cap=40, held_caps=frozenset(), may_set_groups=True)
    with pytest.raises(ContainerInitError) as info:
        _plan(None, host)
    assert info.value.step == "capabilities"


@pytest.mark.parametrize(
    ("spec_caps", "fragment"),
    [
        (Capabilities(effective=("CAP_KILL",)), "effective has CAP_KILL, which are not permitted"),
        (
            Capabilities(permitted=("CAP_KILL",), inheritable=("CAP_KILL",)),
            "inheritable has CAP_KILL, not in the bounding set",
        ),
    ],
)
def test_inconsistent_capability_sets_are_refused(spec_caps: Capabilities, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        plan_capabilities(spec_caps, last_cap=40, held=ALL_CAPS)


def test_no_capabilities_object_means_none() -> None:
    assert plan_capabilities(None, last_cap=40, held=ALL_CAPS) == (CapabilityPlan(), ())


def test_ambient_capabilities_not_inheritable_are_left_out_with_a_warning() -> None:
    # `runc spec` asks for ambient capabilities with no inheritable ones; runc runs it.
    kill = ("CAP_KILL",)
    spec_caps = Capabilities(bounding=kill, effective=kill, permitted=kill, ambient=kill)
    plan, warnings = plan_capabilities(spec_caps, last_cap=40, held=ALL_CAPS)
    assert plan.ambient == frozenset()
    assert plan.permitted == _numbers(kill)
    assert any("ambient: CAP_KILL" in text and "left out" in text for text in warnings)


def test_ambient_plan() -> None:
    kill = ("CAP_KILL",)
    spec_caps = Capabilities(
        bounding=kill, effective=kill, permitted=kill, inheritable=kill, ambient=kill
    )
    plan, _warnings = plan_capabilities(spec_caps, last_cap=40, held=ALL_CAPS)
    assert plan.ambient == _numbers(kill)


def test_seccomp_is_compiled_and_loaded_last_under_no_new_privs() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)

    plan = _plan(change)
    assert len(plan.seccomp) > 100
    assert not plan.seccomp_early


def test_seccomp_goes_early_without_no_new_privs_and_sys_admin() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = False
        config["linux"]["seccomp"] = default_seccomp_config(DEFAULT_CAPABILITIES)

    assert _plan(change).seccomp_early
    sys_admin = CapabilityPlan(effective=_numbers(["CAP_SYS_ADMIN"]))
    assert not seccomp_goes_early(no_new_privs=False, plan=sys_admin)
    assert not seccomp_goes_early(no_new_privs=True, plan=CapabilityPlan())
    assert seccomp_goes_early(no_new_privs=False, plan=CapabilityPlan())


def test_no_seccomp_section_means_no_filter() -> None:
    plan = _plan()
    assert plan.seccomp == ()
    assert not plan.seccomp_early


def test_seccomp_that_cannot_be_compiled_names_the_step() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}],
        }

    with pytest.raises(ContainerInitError) as info:
        _plan(change)
    assert info.value.step == "seccomp"


# --- exit statuses ----------------------------------------------------------------------------


def _wait_status_of(code: int | None = None, sig: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        if sig is not None:
            os.kill(os.getpid(), sig)
        os._exit(code or 0)
    return os.waitpid(pid, 0)[1]


def test_exit_status_in_shell_form() -> None:
    assert exit_status(_wait_status_of(code=7)) == 7
    assert exit_status(_wait_status_of(code=0)) == 0
    assert exit_status(_wait_status_of(sig=signal.SIGKILL)) == 137
    assert exit_status(_wait_status_of(sig=signal.SIGTERM)) == 143


def test_container_init_error_names_the_step() -> None:
    error = ContainerInitError("cwd", "No such file or directory: /nope", 2)
    assert (error.step, error.errno) == ("cwd", 2)
    assert str(error) == "container init failed at step cwd: No such file or directory: /nope"
