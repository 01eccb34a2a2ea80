"""The container's privileges against the real kernel: capabilities, no_new_privs,
seccomp, masked and read-only paths, users from the container's own /etc/passwd, a user
namespace, and the init staying non-dumpable until exec (CVE-2019-5736)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import container_support as cs
import linux_support as support
import pytest
import rootfs_support as rs
from gantry.linux import ns
from gantry.runtime import seccomp_default
from gantry.runtime.defaults import DEFAULT_CAPABILITIES
from gantry.runtime.process import InitHandle
from gantry.runtime.spec import CAPABILITIES

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

PERMISSION_DENIED = "Operation not permitted"


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    with support.host_unchanged():
        yield


def _ok(outcome: cs.Outcome, status: int = 0) -> cs.Outcome:
    assert outcome.error is None, outcome.error
    assert outcome.status == status, outcome.output
    assert outcome.children_left == []
    return outcome


def _mask(names: tuple[str, ...] | list[str]) -> str:
    return f"{sum(1 << CAPABILITIES[name] for name in names):016x}"


def _caps(config: dict[str, Any], names: list[str], *, ambient: bool = False) -> None:
    sets = ["bounding", "effective", "permitted"]
    if ambient:
        sets += ["inheritable", "ambient"]
    config["process"]["capabilities"] = {which: list(names) for which in sets}


def _default_seccomp(config: dict[str, Any]) -> None:
    config["linux"]["seccomp"] = seccomp_default.default_seccomp_config(DEFAULT_CAPABILITIES)


STATUS = "cat /proc/self/status"


# --- capabilities -----------------------------------------------------------------------------


def test_default_capabilities_are_exactly_the_default_set() -> None:
    fields = cs.status_fields(_ok(cs.sh(STATUS)).output)
    expected = _mask(DEFAULT_CAPABILITIES)
    assert fields["CapEff"] == expected
    assert fields["CapPrm"] == expected
    assert fields["CapBnd"] == expected
    assert fields["CapInh"] == fields["CapAmb"] == "0" * 16


def test_reduced_capability_set() -> None:
    names = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    outcome = _ok(cs.sh(STATUS, change=lambda c: _caps(c, names)))
    fields = cs.status_fields(outcome.output)
    assert fields["CapEff"] == fields["CapBnd"] == _mask(names)


def test_no_capabilities_at_all() -> None:
    outcome = _ok(cs.sh(f"{STATUS}; chown 1 /tmp", change=lambda c: _caps(c, [])), status=1)
    fields = cs.status_fields(outcome.output)
    assert fields["CapEff"] == fields["CapBnd"] == "0" * 16
    assert PERMISSION_DENIED in outcome.output


def test_non_root_user_keeps_only_ambient_capabilities() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        _caps(config, ["CAP_NET_BIND_SERVICE"], ambient=True)

    outcome = _ok(cs.sh(f"id -u; id -g; {STATUS}", change=change))
    assert outcome.lines[:2] == ["1000", "1000"]
    fields = cs.status_fields(outcome.output)
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["CapEff"] == fields["CapAmb"] == _mask(["CAP_NET_BIND_SERVICE"])


def test_non_root_user_without_ambient_has_no_capabilities() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [20, 30]}

    outcome = _ok(cs.sh(f"id -G; {STATUS}", change=change))
    assert outcome.lines[0].split() == ["1000", "20", "30"]
    fields = cs.status_fields(outcome.output)
    assert fields["CapEff"] == fields["CapPrm"] == "0" * 16
    assert fields["CapBnd"] == _mask(DEFAULT_CAPABILITIES)


# --- no_new_privs and seccomp -----------------------------------------------------------------


def test_no_new_privs_and_default_seccomp_profile() -> None:
    outcome = _ok(cs.sh(f"{STATUS}; unshare -m true", change=_default_seccomp), status=1)
    fields = cs.status_fields(outcome.output)
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"
    assert f"unshare(0x20000): {PERMISSION_DENIED}" in outcome.output


def test_seccomp_denies_with_eperm_what_root_could_do() -> None:
    def change(config: dict[str, Any]) -> None:
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ],
        }

    outcome = _ok(cs.sh("touch /tmp/file && echo touched; mkdir /tmp/dir", change=change), 1)
    assert outcome.lines[0] == "touched"
    assert PERMISSION_DENIED in outcome.output


def test_seccomp_without_no_new_privs_is_loaded_before_dropping_capabilities() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["noNewPrivileges"] = False
        _default_seccomp(config)

    fields = cs.status_fields(_ok(cs.sh(STATUS, change=change)).output)
    assert fields["NoNewPrivs"] == "0"
    assert fields["Seccomp"] == "2"
    assert fields["CapEff"] == _mask(DEFAULT_CAPABILITIES)


def test_no_seccomp_section_no_filter() -> None:
    fields = cs.status_fields(_ok(cs.sh(STATUS)).output)
    assert fields["Seccomp"] == "0"
    assert fields["NoNewPrivs"] == "1"


# --- masked and read-only paths ---------------------------------------------------------------


def test_masked_paths_read_empty() -> None:
    present = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if Path(p).exists()]
    outcome = _ok(cs.sh(f"cat {' '.join(present)} | wc -c; ls -A /proc/acpi | wc -l"))
    assert outcome.lines == ["0", "0"]


def test_readonly_paths_refuse_writes() -> None:
    outcome = _ok(cs.sh("echo x > /proc/sys/kernel/domainname"), status=1)
    assert "Read-only file system" in outcome.output


# --- users ------------------------------------------------------------------------------------


def _users(_bundle: Path, rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n# a comment\napp:x:1000:1000:App:/home/app:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text(
        "root:x:0:\napp:x:1000:\nextra:x:2000:someone,app\nother:x:3000:someone\n"
    )


def test_username_is_looked_up_in_the_containers_passwd() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 0, "gid": 0, "username": "app"}

    outcome = _ok(cs.sh('id -u; id -g; id -G; echo "$HOME"', prepare=_users, change=change))
    assert outcome.lines == ["1000", "1000", "1000 2000", "/home/app"]


def test_username_with_group() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 0, "gid": 0, "username": "app:other"}

    outcome = _ok(cs.sh("id -u; id -G", prepare=_users, change=change))
    assert outcome.lines == ["1000", "3000"]


def test_unknown_username_fails_at_the_user_step() -> None:
    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 0, "gid": 0, "username": "ghost"}

    outcome = cs.sh("true", prepare=_users, change=change)
    assert outcome.error is not None
    assert outcome.error["step"] == "user"
    assert "ghost" in outcome.error["message"]
    assert outcome.children_left == []


def test_passwd_link_to_the_host_is_not_followed() -> None:
    def prepare(bundle: Path, rootfs: Path) -> None:
        (rootfs / "etc" / "passwd").unlink()
        # Inside the container this is /proc/1/root/etc/shadow: a magic link, refused.
        (rootfs / "etc" / "passwd").symlink_to("/proc/1/root/etc/shadow")

    def change(config: dict[str, Any]) -> None:
        config["process"]["user"] = {"uid": 0, "gid": 0, "username": "root"}

    outcome = cs.sh("true", prepare=prepare, change=change)
    assert outcome.error is not None
    assert outcome.error["step"] == "user"


# --- user namespace ---------------------------------------------------------------------------


def _userns(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["uidMappings"] = mapping
    config["linux"]["gidMappings"] = mapping


def test_user_namespace_maps_container_root_to_host_100000() -> None:
    def host_view(handle: InitHandle, output: cs.Output) -> dict[str, str]:
        assert output.wait_for("ready\n")
        return {
            "uid": cs.status_field(handle.pid, "Uid"),
            "gid": cs.status_field(handle.pid, "Gid"),
        }

    outcome = _ok(
        cs.sh("id -u; id -g; echo ready; sleep 0.5", change=_userns, after_start=host_view)
    )
    assert outcome.lines[:2] == ["0", "0"]
    assert outcome.after_start["uid"].split() == ["100000"] * 4
    assert outcome.after_start["gid"].split() == ["100000"] * 4


def test_init_is_not_dumpable_until_exec() -> None:
    """Until execve the init is the host's python: its /proc files belong to the host's
    root (non-dumpable), so the container's root (uid 100000) cannot open its exe."""

    # Not /proc/<pid> itself: that directory always shows the effective uid.
    def before(handle: InitHandle, _output: cs.Output) -> dict[str, int]:
        return {
            "owner": os.stat(f"/proc/{handle.pid}/status").st_uid,
            "uid": int(cs.status_field(handle.pid, "Uid").split()[0]),
        }

    def after(handle: InitHandle, output: cs.Output) -> int:
        assert output.wait_for("ready\n")
        return os.stat(f"/proc/{handle.pid}/status").st_uid

    outcome = _ok(
        cs.sh("echo ready; sleep 0.5", change=_userns, before_start=before, after_start=after)
    )
    assert outcome.before_start == {"owner": 0, "uid": 100000}
    assert outcome.after_start == 100000  # the container's own binary now: dumpable again


def test_user_namespace_with_default_seccomp_and_sysctls() -> None:
    def change(config: dict[str, Any]) -> None:
        _userns(config)
        _default_seccomp(config)
        config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}

    outcome = _ok(cs.sh(f"cat /proc/sys/net/ipv4/ip_forward; {STATUS}", change=change))
    assert outcome.lines[0] == "1"
    fields = cs.status_fields(outcome.output)
    assert fields["Seccomp"] == "2"
    assert fields["CapEff"] == _mask(DEFAULT_CAPABILITIES)


def test_joins_a_user_namespace_by_path_before_the_others() -> None:
    with support.holder(lambda: ns.unshare(ns.CLONE_NEWUSER)) as held:
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{held.pid}/{name}").write_text("0 200000 65536\n")
        path = f"/proc/{held.pid}/ns/user"
        expected = os.readlink(path)

        def change(config: dict[str, Any]) -> None:
            config["linux"]["namespaces"].append({"type": "user", "path": path})

        def host_view(handle: InitHandle, output: cs.Output) -> str:
            assert output.wait_for("ready\n")
            return cs.status_field(handle.pid, "Uid")

        outcome = _ok(
            cs.sh(
                "id -u; readlink /proc/self/ns/user; echo ready; sleep 0.3",
                change=change,
                after_start=host_view,
            )
        )
    assert outcome.lines[:2] == ["0", expected]
    assert outcome.after_start.split() == ["200000"] * 4
