"""gantry.linux.ns against the real kernel: unshare, setns, namespace identity."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import linux_support as support
import pytest
from gantry.linux import mount, ns
from gantry.linux.ns import Namespace
from gantry.linux.proc import pidfd_open

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


def test_unshare_uts_and_mount_then_sethostname_changes_only_the_child() -> None:
    host_name = os.uname().nodename
    host_uts = ns.ns_inode("self", Namespace.UTS)

    def child() -> dict[str, object]:
        ns.unshare(ns.CLONE_NEWNS | ns.CLONE_NEWUTS)
        mount.make_rprivate("/")
        ns.sethostname("gantry-uts-test")
        ns.setdomainname("gantry.test")
        return {
            "nodename": os.uname().nodename,
            "domain": open("/proc/sys/kernel/domainname").read().strip(),
            "uts": ns.ns_inode("self", Namespace.UTS),
            "mnt": ns.ns_inode("self", Namespace.MOUNT),
        }

    seen = support.run_in_child(child)
    assert seen["nodename"] == "gantry-uts-test"
    assert seen["domain"] == "gantry.test"
    assert seen["uts"] != host_uts
    assert seen["mnt"] != ns.ns_inode("self", Namespace.MOUNT)
    assert os.uname().nodename == host_name
    assert ns.ns_inode("self", Namespace.UTS) == host_uts


def _private_uts_and_net() -> None:
    ns.unshare(ns.CLONE_NEWUTS | ns.CLONE_NEWNET)
    ns.sethostname("gantry-holder")


def test_setns_joins_uts_and_net_by_proc_path() -> None:
    with support.holder(_private_uts_and_net) as held:
        holder_net = ns.ns_inode(held.pid, Namespace.NET)

        def child() -> dict[str, object]:
            ns.join(ns.ns_path(held.pid, Namespace.UTS), Namespace.UTS)
            ns.join(ns.ns_path(held.pid, Namespace.NET), Namespace.NET)
            return {
                "nodename": os.uname().nodename,
                "links": sorted(name for _index, name in socket.if_nameindex()),
                "net": ns.ns_inode("self", Namespace.NET),
            }

        seen = support.run_in_child(child)
        assert held.release() == 0
    assert seen == {"nodename": "gantry-holder", "links": ["lo"], "net": holder_net}
    assert holder_net != ns.ns_inode("self", Namespace.NET)


def test_setns_by_pidfd_joins_several_at_once() -> None:
    with support.holder(_private_uts_and_net) as held:

        def child() -> list[object]:
            pidfd = pidfd_open(held.pid)
            ns.setns_pidfd(pidfd, {Namespace.UTS, Namespace.NET})
            os.close(pidfd)
            return [os.uname().nodename, ns.ns_inode("self", Namespace.NET)]

        assert support.run_in_child(child) == [
            "gantry-holder",
            ns.ns_inode(held.pid, Namespace.NET),
        ]


def test_setns_refuses_an_fd_of_another_kind() -> None:
    def child() -> list[object]:
        fd = ns.open_ns("self", Namespace.UTS)
        try:
            ns.setns(fd, Namespace.NET)
        except OSError as exc:
            return [exc.errno, str(exc)]
        finally:
            os.close(fd)
        return ["joined"]

    err, message = support.run_in_child(child)
    assert err == errno.EINVAL
    assert "setns" in message


def test_ns_inode_names_the_namespace_file() -> None:
    for kind in Namespace:
        path = f"/proc/self/ns/{kind.proc_name}"
        if os.path.exists(path):
            assert ns.ns_inode("self", kind) == os.stat(path).st_ino
    assert ns.ns_inode(os.getpid(), Namespace.NET) == ns.ns_inode("self", Namespace.NET)
