"""gantry.runtime.rootfs against the real kernel: a busybox bundle assembled and entered by
a container init (pid 1 of fresh mount and pid namespaces, forked from the test)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import linux_support as support
import pytest
import rootfs_support as rs
from gantry.linux import mount, ns
from gantry.runtime.defaults import default_config, default_spec
from gantry.runtime.rootfs import RootfsError, hide_host_kernel_filesystems, prepare_rootfs
from gantry.runtime.spec import Spec, load_spec

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not rs.BUSYBOX.exists(), reason="needs a static /bin/busybox"),
]

# The container mounts of the default spec (and what masking and read-only paths add).
DEFAULT_NODES = tuple(
    f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty")
)
DEFAULT_MOUNT_POINTS = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}


@pytest.fixture(autouse=True)
def _host_unchanged() -> Iterator[None]:
    with support.host_unchanged():
        yield


@pytest.fixture
def bundle() -> Iterator[tuple[Path, Path]]:
    with rs.bundle_dir() as paths:
        yield paths


def _spec(rootfs: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Spec:
    config = default_config(["/bin/sh"], rootfs)
    if change is not None:
        change(config)
    return load_spec(config)


def _attempt(fn: Callable[[], None]) -> dict[str, Any] | None:
    """Run ``fn``; a RootfsError comes back as data so the test can look at it."""
    try:
        fn()
    except RootfsError as exc:
        return {"step": exc.step, "path": exc.path, "errno": exc.errno, "text": str(exc)}
    return None


def _read(path: str, size: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _first_writable_sysfs_file() -> str | None:
    for entry in os.scandir("/sys/kernel"):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o200:
            return entry.path
    return None


def _world(extra: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the container sees right after prepare_rootfs."""
    fds = sorted(os.listdir("/proc/self/fd"))
    umask = os.umask(0o022)
    sysfs_file = _first_writable_sysfs_file()
    ptmx_fd = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
    os.close(ptmx_fd)
    true = subprocess.run(["/bin/busybox", "true"], check=False)
    echo = subprocess.run(["/bin/sh", "-c", "echo hello"], capture_output=True, check=False)
    world = {
        "ls": sorted(os.listdir("/")),
        "cwd": os.getcwd(),
        "umask": umask,
        "pid": os.getpid(),
        "proc_self": os.readlink("/proc/self"),
        "pids": sorted(p for p in os.listdir("/proc") if p.isdigit()),
        "mount_points": rs.mount_points(Path("/proc/self/mountinfo").read_text()),
        "fds": fds,
        "null_write": rs.write_errno("/dev/null"),
        "null_read": _read("/dev/null").hex(),
        "zero_read": _read("/dev/zero", 8).hex(),
        "ptmx_link": os.readlink("/dev/ptmx"),
        "links": {name: os.readlink(f"/dev/{name}") for name in ("fd", "stdin", "stderr")},
        "null_rdev": [
            os.major(os.stat("/dev/null").st_rdev),
            os.minor(os.stat("/dev/null").st_rdev),
        ],
        "null_is_char": stat.S_ISCHR(os.stat("/dev/null").st_mode),
        "proc_sys_write": rs.write_errno("/proc/sys/kernel/hostname"),
        "sys_readonly": bool(os.statvfs("/sys").f_flag & os.ST_RDONLY),
        "sys_write": rs.write_errno(sysfs_file) if sysfs_file else errno.EROFS,
        "masked": {
            path: _read(path).hex()
            for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts")
            if os.path.exists(path)
        },
        "masked_dirs": {
            path: os.listdir(path)
            for path in ("/proc/acpi", "/sys/firmware")
            if os.path.isdir(path)
        },
        "true_exit": true.returncode,
        "echo": echo.stdout.decode(),
        "tmp_write": rs.write_errno("/tmp/x"),
    }
    if extra is not None:
        world.update(extra())
    return world


def _check_world(world: dict[str, Any], rootfs: Path, bundle: Path) -> None:
    assert world["ls"] == sorted(rs.ROOTFS_DIRS)
    assert world["cwd"] == "/"
    assert world["umask"] == 0o022
    assert world["pid"] == 1
    assert world["proc_self"] == "1"
    assert world["pids"] == ["1"], "only the container's own processes are in its /proc"
    points = world["mount_points"]
    assert set(points) >= DEFAULT_MOUNT_POINTS
    for point in points:
        assert not point.startswith(str(bundle)), point
        # Nothing of the host's table: only the container's mounts and the masks on them.
        assert point in DEFAULT_MOUNT_POINTS or point.startswith(("/proc/", "/sys/")), point
    assert world["null_write"] == 0
    assert world["null_read"] == ""
    assert world["zero_read"] == "00" * 8
    assert world["null_is_char"] and world["null_rdev"] == [1, 3]
    assert world["ptmx_link"] == "pts/ptmx"
    assert world["links"] == {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stderr": "/proc/self/fd/2",
    }
    assert world["proc_sys_write"] == errno.EROFS
    assert world["sys_readonly"]
    assert world["sys_write"] == errno.EROFS
    assert world["masked"], "some masked /proc file exists on this host"
    assert all(content == "" for content in world["masked"].values()), world["masked"]
    assert all(not entries for entries in world["masked_dirs"].values()), world["masked_dirs"]
    assert world["true_exit"] == 0
    assert world["echo"] == "hello\n"
    assert world["tmp_write"] == 0


def test_default_spec_gives_the_container_its_own_world(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = default_spec(["/bin/sh"], rootfs)

    def container() -> dict[str, Any]:
        fds_before = sorted(os.listdir("/proc/self/fd"))
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        return _world(lambda: {"fds_before": fds_before})

    world = rs.run_in_container(container)
    _check_world(world, rootfs, bundle_path)
    # prepare_rootfs closed every fd it opened (listing /proc/self/fd adds one, both times).
    assert world["fds"] == world["fds_before"]
    # The container's /dev lived in its own namespace only.
    assert not list((rootfs / "dev").iterdir())


def test_chroot_fallback_gives_the_same_world(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = default_spec(["/bin/sh"], rootfs)

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path, no_pivot=True)
        return _world()

    _check_world(rs.run_in_container(container), rootfs, bundle_path)


def test_readonly_root(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = _spec(rootfs, lambda c: c["root"].update(readonly=True))

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        return {
            "root": rs.write_errno("/x"),
            "tmp": rs.write_errno("/tmp/x"),
            "shm": rs.write_errno("/dev/shm/x"),
        }

    assert rs.run_in_container(container) == {"root": errno.EROFS, "tmp": errno.EROFS, "shm": 0}
    assert not (rootfs / "x").exists()


def _add_mounts(*mounts: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        config["mounts"].extend(mounts)

    return change


def _tmpfs(destination: str, *options: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": list(options),
    }


def test_absolute_and_escaping_symlinks_stay_inside_the_rootfs(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    probe = f"gantry-rootfs-probe-{os.getpid()}"
    (rootfs / "conf").symlink_to("/etc")  # pointing at the host's /etc if followed naively
    (rootfs / "up").symlink_to("../../../../../../../../etc")
    (bundle_path / "hosts").write_text("127.0.0.1 probe\n")
    spec = _spec(
        rootfs,
        _add_mounts(
            _tmpfs(f"/conf/{probe}", "size=1m"),
            _tmpfs(f"/up/{probe}-up", "size=1m"),
            # A relative source is the bundle's; the file target is created through the link.
            {"destination": f"/conf/{probe}.hosts", "type": "bind", "source": "hosts"},
        ),
    )

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        return {
            "points": rs.mount_points(Path("/proc/self/mountinfo").read_text()),
            "hosts": Path(f"/etc/{probe}.hosts").read_text(),
        }

    seen = rs.run_in_container(container)
    assert f"/etc/{probe}" in seen["points"]
    assert f"/etc/{probe}-up" in seen["points"]
    assert seen["hosts"] == "127.0.0.1 probe\n"
    # The mount points were made in the image's /etc, never in the host's.
    assert (rootfs / "etc" / probe).is_dir()
    assert (rootfs / "etc" / f"{probe}-up").is_dir()
    for name in (probe, f"{probe}-up", f"{probe}.hosts"):
        assert not os.path.lexists(f"/etc/{name}")


def test_etc_linked_to_the_host_etc_is_refused(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    probe = f"gantry-rootfs-probe-{os.getpid()}"
    for entry in (rootfs / "etc").iterdir():
        entry.unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to("/etc")  # inside the rootfs this names itself: a loop
    spec = _spec(rootfs, _add_mounts(_tmpfs(f"/etc/{probe}", "size=1m")))
    index = len(spec.mounts) - 1

    error = rs.run_in_container(
        lambda: _attempt(lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path))
    )
    assert error is not None
    assert error["step"] == f"mounts[{index}]"
    assert error["path"] == f"/etc/{probe}"
    assert error["errno"] == errno.ELOOP
    assert not os.path.lexists(f"/etc/{probe}")


def test_a_link_to_proc_cannot_smuggle_a_mount_into_proc(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    (rootfs / "p").symlink_to("/proc/sys")
    spec = _spec(rootfs, _add_mounts(_tmpfs("/p", "size=1m")))

    error = rs.run_in_container(
        lambda: _attempt(lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path))
    )
    assert error is not None
    assert error["step"] == f"mounts[{len(spec.mounts) - 1}]"
    assert "resolves to /proc/sys" in error["text"]


def test_missing_bind_source_names_the_mount(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = _spec(rootfs, _add_mounts({"destination": "/data", "type": "bind", "source": "nothere"}))

    error = rs.run_in_container(
        lambda: _attempt(lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path))
    )
    assert error is not None
    assert (error["step"], error["path"], error["errno"]) == (
        f"mounts[{len(spec.mounts) - 1}]",
        "/data",
        errno.ENOENT,
    )
    assert str(bundle_path / "nothere") in error["text"]


def test_a_fake_dev_null_is_never_bound_over_masked_paths(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    fake = bundle_path / "fakedev"
    fake.mkdir()
    (fake / "null").symlink_to("/proc/sys/kernel/core_pattern")  # CVE-2025-31133's trick

    def change(config: dict[str, Any]) -> None:
        config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
        config["mounts"].append({"destination": "/dev", "type": "bind", "source": "fakedev"})

    spec = _spec(rootfs, change)
    error = rs.run_in_container(
        lambda: _attempt(lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path))
    )
    assert error is not None
    assert (error["step"], error["path"]) == ("masked-paths", "/dev/null")
    assert (fake / "null").is_symlink()  # a bound /dev is the spec's: nothing created in it


def test_bind_options_propagation_and_recursive_readonly(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    data = bundle_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file").write_text("data\n")
    spec = _spec(
        rootfs,
        _add_mounts(
            {
                "destination": "/data",
                "type": "bind",
                "source": str(data),
                "options": ["rbind", "ro", "nosuid", "noexec", "noatime", "rprivate"],
            },
            _tmpfs("/data/sub", "size=1m"),  # a submount inside a read-only bind
            {"destination": "/rro", "source": str(data), "options": ["rbind", "rro"]},
            _tmpfs("/run", "ro", "mode=755"),  # read-only tmpfs: remounted ro at the end…
            _tmpfs("/run/inner", "size=1m"),  # …so its mount points can still be made
        ),
    )

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        options = {line.split(" ")[4]: line.split(" ")[5] for line in mountinfo}
        return {
            "options": options,
            "data_write": rs.write_errno("/data/new"),
            "file": Path("/data/file").read_text(),
            "rro_sub_write": rs.write_errno("/rro/sub/new"),
            "run_write": rs.write_errno("/run/x"),
            "inner_write": rs.write_errno("/run/inner/x"),
        }

    seen = rs.run_in_container(container)
    assert {"ro", "nosuid", "noexec", "noatime"} <= set(seen["options"]["/data"].split(","))
    assert seen["data_write"] == errno.EROFS
    assert seen["file"] == "data\n"
    assert seen["rro_sub_write"] == errno.EROFS
    assert seen["options"]["/run"].startswith("ro")
    assert seen["run_write"] == errno.EROFS
    assert seen["inner_write"] == 0
    # /run was made in the image; /run/inner inside the (then still writable) tmpfs.
    assert (rootfs / "run").is_dir()
    assert not (rootfs / "run" / "inner").exists()
    assert not (data / "new").exists()


def test_spec_devices_and_console(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle

    def change(config: dict[str, Any]) -> None:
        config["linux"]["devices"] = [
            {
                "path": "/dev/net/tun",
                "type": "c",
                "major": 10,
                "minor": 200,
                "fileMode": 0o600,
                "uid": 1,
                "gid": 2,
            },
            {"path": "/dev/fifo", "type": "p", "fileMode": 0o640},
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o660},
        ]

    spec = _spec(rootfs, change)

    def container() -> dict[str, Any]:
        _master, slave = os.openpty()
        console = os.ttyname(slave)
        prepare_rootfs(spec, rootfs, bundle=bundle_path, console_path=console)
        tun, fifo, null, cons = (
            os.stat(p) for p in ("/dev/net/tun", "/dev/fifo", "/dev/null", "/dev/console")
        )
        return {
            "tun": [
                stat.S_ISCHR(tun.st_mode),
                os.major(tun.st_rdev),
                os.minor(tun.st_rdev),
                stat.S_IMODE(tun.st_mode),
                tun.st_uid,
                tun.st_gid,
            ],
            "fifo": [stat.S_ISFIFO(fifo.st_mode), stat.S_IMODE(fifo.st_mode)],
            "null_mode": stat.S_IMODE(null.st_mode),
            "console_same": cons.st_rdev == os.fstat(slave).st_rdev,
        }

    seen = rs.run_in_container(container)
    assert seen["tun"] == [True, 10, 200, 0o600, 1, 2]
    assert seen["fifo"] == [True, 0o640]
    assert seen["null_mode"] == 0o660  # the spec's entry replaced the default one
    assert seen["console_same"]


def test_rootfs_propagation_from_the_spec(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = _spec(rootfs, lambda c: c["linux"].update(rootfsPropagation="rshared"))

    def container() -> list[str]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" ")
            if fields[4] == "/":
                return fields[6 : fields.index("-")]
        return []

    optional = rs.run_in_container(container)
    assert any(tag.startswith("shared:") for tag in optional), optional


def test_in_a_user_namespace_host_nodes_are_bound(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = default_spec(["/bin/sh"], rootfs)

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        return _world(
            lambda: {
                "uid_map": Path("/proc/self/uid_map").read_text().split(),
                "dev_mounts": [
                    p
                    for p in rs.mount_points(Path("/proc/self/mountinfo").read_text())
                    if p in DEFAULT_NODES
                ],
            }
        )

    world = rs.run_in_container(
        container, userns=True, extra_flags=ns.CLONE_NEWNET | ns.CLONE_NEWIPC
    )
    assert world["uid_map"] == ["0", "0", "65536"]
    # mknod is refused in a user namespace: each node is a bind of the host's.
    assert world["dev_mounts"] == list(DEFAULT_NODES)
    world["mount_points"] = [p for p in world["mount_points"] if p not in world["dev_mounts"]]
    _check_world(world, rootfs, bundle_path)


def test_errors_before_anything_is_mounted(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    spec = _spec(rootfs, _add_mounts(_tmpfs("/run", "tmpcopyup")))

    def container() -> dict[str, Any] | None:
        before = Path("/proc/self/mountinfo").read_text()
        error = _attempt(lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path))
        assert Path("/proc/self/mountinfo").read_text() == before
        return error

    error = rs.run_in_container(container)
    assert error is not None
    assert error["step"] == f"mounts[{len(spec.mounts) - 1}]"
    assert error["path"] == "/run"
    assert "tmpcopyup" in error["text"]


def test_no_pivot_hides_the_hosts_proc_and_sys(bundle: tuple[Path, Path]) -> None:
    _bundle_dir, rootfs = bundle

    def child() -> dict[str, Any]:
        ns.unshare(ns.CLONE_NEWNS)
        mount.make_rprivate("/")
        # Opened first: the file renders the table when read, after /proc itself is gone.
        fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            hide_host_kernel_filesystems(str(rootfs))
            text = b""
            while chunk := os.read(fd, 65536):
                text += chunk
        finally:
            os.close(fd)
        kinds = []
        points = rs.mount_points(text.decode())
        for line in text.decode().splitlines():
            point, fstype = line.split(" ")[4], line.split(" - ")[1].split(" ")[0]
            if fstype in ("proc", "sysfs") or point.startswith(("/proc", "/sys")):
                kinds.append(f"{fstype} {point}")
        return {"kinds": kinds, "points": points}

    seen = support.run_in_child(child)
    assert "/" in seen["points"]
    assert seen["kinds"] == []


def test_cgroup2_mount_is_read_only(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle

    def change(config: dict[str, Any]) -> None:
        for entry in config["mounts"]:
            if entry["destination"] == "/sys/fs/cgroup":
                entry.update(type="cgroup2", source="cgroup2", options=["nosuid", "nodev"])

    spec = _spec(rootfs, change)

    def container() -> dict[str, Any]:
        prepare_rootfs(spec, rootfs, bundle=bundle_path)
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        entry = next(line for line in lines if line.split(" ")[4] == "/sys/fs/cgroup")
        return {
            "fstype": entry.split(" - ")[1].split(" ")[0],
            "options": entry.split(" ")[5].split(","),
            "controllers": os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
            "write": rs.write_errno("/sys/fs/cgroup/cgroup.subtree_control"),
        }

    seen = rs.run_in_container(container)
    assert seen["fstype"] == "cgroup2"
    assert {"ro", "nosuid", "nodev"} <= set(seen["options"])
    assert seen["controllers"]
    assert seen["write"] == errno.EROFS


def test_a_console_symlink_is_refused_not_followed(bundle: tuple[Path, Path]) -> None:
    bundle_path, rootfs = bundle
    dev = bundle_path / "mydev"
    dev.mkdir()
    os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (dev / "console").symlink_to("/etc/passwd")  # CVE-2025-52565's trick

    def change(config: dict[str, Any]) -> None:
        config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
        config["mounts"].append({"destination": "/dev", "type": "bind", "source": "mydev"})

    spec = _spec(rootfs, change)

    def container() -> dict[str, Any] | None:
        _master, slave = os.openpty()
        console = os.ttyname(slave)
        return _attempt(
            lambda: prepare_rootfs(spec, rootfs, bundle=bundle_path, console_path=console)
        )

    error = rs.run_in_container(container)
    assert error is not None
    assert (error["step"], error["path"], error["errno"]) == (
        "console",
        "/dev/console",
        errno.EEXIST,
    )
    assert "symlink" in error["text"]
    assert (dev / "console").is_symlink()
    assert (rootfs / "etc" / "passwd").read_text() == "root:x:0:0:root:/root:/bin/sh\n"
