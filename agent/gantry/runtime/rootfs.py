"""Assemble a container's root filesystem inside its own mount namespace.

The container init calls :func:`prepare_rootfs` after ``unshare(CLONE_NEWNS)`` (and as the
first process of its pid namespace, so /proc shows the container's processes). It reads
top-down as the steps the kernel needs, in runc's and crun's order:

1. root propagation: ``/`` becomes a slave (or ``linux.rootfsPropagation``), and the mount
   holding the rootfs becomes private, as pivot_root(2) refuses a shared parent;
2. the rootfs is bind-mounted on itself, so it is a mount pivot_root can move;
3. the spec's mounts, in order, each onto a target resolved once inside the rootfs;
4. /dev: device nodes (or binds of the host's nodes in a user namespace), links, console;
5. pivot_root with the old root detached (or MS_MOVE + chroot where pivot_root cannot work);
6. masked paths, read-only paths, deferred read-only remounts, read-only root, umask.

The spec is planned first (:func:`plan_mounts`): a mount the runtime cannot do is refused
before anything is mounted. Every failure is a :class:`RootfsError` naming the step and the
mount or path. Mount targets are never used by path: each is resolved inside the rootfs to
an O_PATH fd (``openat2(RESOLVE_IN_ROOT)``) and mounted through ``/proc/thread-self/fd/N``,
so a symlink in the image, or one swapped in meanwhile, cannot send a mount outside the
rootfs (CVE-2021-30465).

Left to the callers: user/pid namespaces, hooks, the pty itself, reopening stdio, and
everything after step 6 (hostname, sysctls, capabilities, seccomp, exec).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gantry.linux import mount as mnt
from gantry.linux.cgroupfs import cgroup_mounts, hierarchy_mode
from gantry.linux.fs import fd_path, is_device, mkdir_in_root, open_in_root, open_root
from gantry.linux.proc import find_mount, read_mountinfo
from gantry.runtime import devices
from gantry.runtime.spec import Linux, Mount, Spec

__all__ = [
    "PER_MOUNT_FLAGS",
    "MountStep",
    "ParsedOptions",
    "RootfsError",
    "parse_mount_options",
    "plan_mount",
    "plan_mounts",
    "prepare_rootfs",
    "proc_destination_problem",
]

Log = logging.Logger | logging.LoggerAdapter[Any]

_log = logging.getLogger(__name__)

#: Flags that belong to one mount (not to the filesystem): what a bind remount can change.
PER_MOUNT_FLAGS: Final = (
    mnt.MS_RDONLY
    | mnt.MS_NOSUID
    | mnt.MS_NODEV
    | mnt.MS_NOEXEC
    | mnt.MS_NOATIME
    | mnt.MS_NODIRATIME
    | mnt.MS_RELATIME
    | mnt.MS_STRICTATIME
    | mnt.MS_NOSYMFOLLOW
)
_ATIME_FLAGS: Final = mnt.MS_NOATIME | mnt.MS_RELATIME | mnt.MS_STRICTATIME
_HARDENED: Final = mnt.MS_NOSUID | mnt.MS_NODEV | mnt.MS_NOEXEC

# Recursive per-mount attributes (runc's "rro", "rnosuid"…), applied to a whole bind tree
# with mount_setattr(AT_RECURSIVE): option -> (attributes to set, attributes to clear).
_RECURSIVE_ATTRS: Final[dict[str, tuple[int, int]]] = {
    "rro": (mnt.MOUNT_ATTR_RDONLY, 0),
    "rrw": (0, mnt.MOUNT_ATTR_RDONLY),
    "rnosuid": (mnt.MOUNT_ATTR_NOSUID, 0),
    "rsuid": (0, mnt.MOUNT_ATTR_NOSUID),
    "rnodev": (mnt.MOUNT_ATTR_NODEV, 0),
    "rdev": (0, mnt.MOUNT_ATTR_NODEV),
    "rnoexec": (mnt.MOUNT_ATTR_NOEXEC, 0),
    "rexec": (0, mnt.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (mnt.MOUNT_ATTR_NODIRATIME, 0),
    "rdiratime": (0, mnt.MOUNT_ATTR_NODIRATIME),
    # The atime modes are one field: the kernel wants all of MOUNT_ATTR__ATIME cleared.
    "rrelatime": (mnt.MOUNT_ATTR_RELATIME, mnt.MOUNT_ATTR__ATIME),
    "rnoatime": (mnt.MOUNT_ATTR_NOATIME, mnt.MOUNT_ATTR__ATIME),
    "rstrictatime": (mnt.MOUNT_ATTR_STRICTATIME, mnt.MOUNT_ATTR__ATIME),
    "rnosymfollow": (mnt.MOUNT_ATTR_NOSYMFOLLOW, 0),
    "rsymfollow": (0, mnt.MOUNT_ATTR_NOSYMFOLLOW),
}
_UNSUPPORTED_OPTIONS: Final[dict[str, str]] = {
    "tmpcopyup": "copying the image's content into a tmpfs (tmpcopyup) is not supported",
    "idmap": "idmapped mounts are not supported",
    "ridmap": "idmapped mounts are not supported",
}

# The /proc files lxcfs emulates: the only mounts runc lets inside /proc, so a container's
# view of memory and CPUs can be virtualised without exposing anything else there.
_LXCFS_PROC_FILES: Final = frozenset(
    {"cpuinfo", "diskstats", "loadavg", "meminfo", "slabinfo", "stat", "swaps", "uptime"}
)

# runc masks directories with a tmpfs this small; newer kernels count the root inode
# against nr_inodes, hence the second try.
_MASK_TMPFS_DATA: Final = ("nr_blocks=1,nr_inodes=1", "nr_blocks=1,nr_inodes=2")

_CGROUP_ROOT: Final = "/sys/fs/cgroup"


class RootfsError(Exception):
    """Assembling the rootfs failed at ``step`` on ``path`` (a mount's destination or a
    path inside the container); ``errno`` is the kernel's when a call failed."""

    def __init__(self, step: str, path: str, message: str, err: int | None = None) -> None:
        super().__init__(step, path, message)
        self.step = step
        self.path = path
        self.message = message
        self.errno = err

    def __str__(self) -> str:
        return f"rootfs: {self.step}: {self.path}: {self.message}"


def _describe(exc: OSError, path: str) -> str:
    text = exc.strerror or str(exc)
    # The /proc/thread-self/fd/N the kernel was handed says nothing to a reader.
    for name in (exc.filename, exc.filename2):
        shown = os.fsdecode(name) if isinstance(name, str | bytes) else None
        if shown and shown != path and not shown.startswith("/proc/thread-self/fd/"):
            text += f" [{shown}]"
    return text


@contextlib.contextmanager
def _step(step: str, path: str) -> Iterator[None]:
    """Turn an OSError inside the block into a RootfsError naming ``step`` and ``path``."""
    try:
        yield
    except OSError as exc:
        raise RootfsError(step, path, _describe(exc, path), exc.errno) from exc


# --- options and the mount plan (pure) ----------------------------------------------------


@dataclass(frozen=True)
class ParsedOptions:
    """A spec mount's options, split the way the kernel takes them."""

    flags: int = 0
    """``MS_*`` flags set, including ``MS_BIND``/``MS_REC``/``MS_REMOUNT``."""
    clear: int = 0
    """``MS_*`` flags an option turned off (``rw``, ``suid``, ``exec``…)."""
    propagation: tuple[int, ...] = ()
    """Propagation changes (``MS_SHARED``… possibly with ``MS_REC``), applied in order."""
    attr_set: int = 0
    """``MOUNT_ATTR_*`` to set on the whole tree (the ``r*`` options)."""
    attr_clr: int = 0
    """``MOUNT_ATTR_*`` to clear on the whole tree."""
    data: str = ""
    """Everything else, comma-joined, for the filesystem."""


def parse_mount_options(options: Iterable[str]) -> ParsedOptions:
    """Split OCI mount options into flags, propagation, recursive attributes and data.

    Later options win over earlier ones; unknown options are passed on as data. Raises
    ``ValueError`` for options the runtime knows but does not support (``tmpcopyup``).
    """
    attr_set = attr_clr = 0
    rest: list[str] = []
    for option in options:
        if option in _UNSUPPORTED_OPTIONS:
            raise ValueError(f"option {option!r}: {_UNSUPPORTED_OPTIONS[option]}")
        if option in _RECURSIVE_ATTRS:
            on, off = _RECURSIVE_ATTRS[option]
            attr_set = (attr_set & ~off) | on
            attr_clr = (attr_clr & ~on) | off
        else:
            rest.append(option)
    base = mnt.parse_options(rest)
    return ParsedOptions(base.flags, base.clear, base.propagation, attr_set, attr_clr, base.data)


@dataclass(frozen=True)
class MountStep:
    """One spec mount, planned: what to mount where, and what to do to it afterwards."""

    index: int
    """Position in ``spec.mounts`` (errors say ``mounts[3]``)."""
    destination: str
    """Normalised absolute path inside the container."""
    fstype: str
    """The filesystem type, or ``bind`` for a bind mount."""
    source: str | None
    recursive: bool = False
    """A recursive bind (``rbind``)."""
    flags: int = 0
    """``MS_*`` flags for the mount itself, without bind, recursion or propagation."""
    clear: int = 0
    """Per-mount flags to clear when a bind is remounted (``rw``, ``suid``…)."""
    data: str = ""
    propagation: tuple[int, ...] = ()
    attr_set: int = 0
    attr_clr: int = 0
    readonly_later: bool = False
    """Mounted writable and remounted read-only only after /dev is populated and every
    mount below it exists (a read-only tmpfs or /dev, as runc does)."""

    @property
    def name(self) -> str:
        """How errors name this mount: ``mounts[3]``."""
        return f"mounts[{self.index}]"

    @property
    def is_bind(self) -> bool:
        return self.fstype == "bind"

    @property
    def flags_now(self) -> int:
        """The flags to mount with now (read-only waits when ``readonly_later``)."""
        return self.flags & ~mnt.MS_RDONLY if self.readonly_later else self.flags


def _normalise(path: str) -> str:
    # posixpath.normpath keeps a leading "//"; a container path has exactly one slash.
    return "/" + posixpath.normpath(path).lstrip("/")


def proc_destination_problem(fstype: str, destination: str) -> str | None:
    """Why ``fstype`` may not be mounted at ``destination`` (a normalised path relative to
    the container root, with or without the leading slash), or ``None``.

    Only a real procfs goes on /proc, and inside /proc only binds over the files lxcfs
    emulates: anything else there could hide or fake the kernel's files (runc's rule).
    """
    rel = destination.strip("/")
    if rel == "proc":
        if fstype != "proc":
            return f"only a procfs may be mounted on /proc, not {fstype}"
        return None
    if rel.startswith("proc/"):
        if fstype == "bind" and rel[len("proc/") :] in _LXCFS_PROC_FILES:
            return None
        allowed = ", ".join(f"/proc/{name}" for name in sorted(_LXCFS_PROC_FILES))
        return f"mounts inside /proc are refused except binds over {allowed}"
    return None


def plan_mount(mount: Mount, index: int, *, private_network: bool = True) -> MountStep:
    """Plan ``spec.mounts[index]``; ``RootfsError`` when the runtime cannot do it."""
    destination = _normalise(mount.destination)
    name = f"mounts[{index}]"
    try:
        options = parse_mount_options(mount.options)
    except ValueError as exc:
        raise RootfsError(name, destination, str(exc)) from None
    if mount.uid_mappings or mount.gid_mappings:
        raise RootfsError(name, destination, "idmapped mounts are not supported")
    is_bind = mount.type == "bind" or bool(options.flags & mnt.MS_BIND)
    if not is_bind and not mount.type:
        raise RootfsError(name, destination, "needs a type (or the bind option)")
    if is_bind and not mount.source:
        raise RootfsError(name, destination, "a bind mount needs a source")
    fstype = "bind" if is_bind else str(mount.type)
    flags = options.flags & ~(mnt.MS_BIND | mnt.MS_REC)
    clear = options.clear
    data = options.data
    if fstype == "sysfs" and not private_network:
        # The host's network namespace: its /sys/class/net would be the host's, writable.
        flags |= mnt.MS_RDONLY
    if fstype in ("cgroup", "cgroup2") and not clear & mnt.MS_RDONLY:
        flags |= mnt.MS_RDONLY  # read-only unless the spec says "rw" in so many words
    if fstype == "devpts":
        data = _devpts_data(data)
    problem = proc_destination_problem(fstype, destination)
    if problem:
        raise RootfsError(name, destination, problem)
    return MountStep(
        index=index,
        destination=destination,
        fstype=fstype,
        source=mount.source,
        recursive=is_bind and bool(options.flags & mnt.MS_REC),
        flags=flags,
        clear=clear,
        data=data,
        propagation=options.propagation,
        attr_set=options.attr_set,
        attr_clr=options.attr_clr,
        readonly_later=bool(flags & mnt.MS_RDONLY) and (fstype == "tmpfs" or destination == "/dev"),
    )


def _devpts_data(data: str) -> str:
    # Every devpts mount is a new instance since Linux 4.7; saying so costs nothing on newer
    # kernels and keeps older ones from handing out the host's ptys. Without ptmxmode the
    # instance's ptmx is mode 000 and the /dev/ptmx link would be useless.
    options = [option for option in data.split(",") if option]
    if "newinstance" not in options:
        options.append("newinstance")
    if not any(option.startswith("ptmxmode=") for option in options):
        options.append("ptmxmode=0666")
    return ",".join(options)


def plan_mounts(spec: Spec) -> tuple[MountStep, ...]:
    """Plan every spec mount, in the spec's order (the order the kernel will see)."""
    linux = spec.linux or Linux()
    private_network = linux.has_private_network()
    return tuple(
        plan_mount(mount, index, private_network=private_network)
        for index, mount in enumerate(spec.mounts)
    )


def binds_dev(steps: Sequence[MountStep]) -> bool:
    """True when the spec bind-mounts /dev: the runtime then creates no nodes in it."""
    return any(step.is_bind and step.destination == "/dev" for step in steps)


# --- the entry point ------------------------------------------------------------------------


def prepare_rootfs(
    spec: Spec,
    rootfs: str | os.PathLike[str],
    *,
    bundle: Path,
    console_path: str | None = None,
    no_pivot: bool = False,
    log: Log | None = None,
    before_pivot: Callable[[], None] | None = None,
) -> None:
    """Make ``rootfs`` the root of the calling process's (new, unshared) mount namespace.

    ``rootfs`` and relative bind sources are taken relative to ``bundle``. ``console_path``
    is the pty slave to bind over /dev/console. With ``no_pivot`` (or when the host root is
    an initramfs, where pivot_root(2) fails) the rootfs is moved over ``/`` and chrooted
    into instead. Raises :class:`RootfsError`; the namespace is then half-built and the
    caller must exit. ``before_pivot`` is called once every mount is made and /dev is
    populated, right before pivot_root: where the OCI create-time hooks run.
    """
    log = log or _log
    linux = spec.linux or Linux()
    root = os.path.realpath(Path(bundle) / rootfs)
    steps = plan_mounts(spec)  # refuse what cannot be done before changing anything
    if not os.path.isdir(root):
        raise RootfsError("rootfs", root, "is not a directory")

    set_root_propagation(linux.rootfs_propagation)
    make_parent_private(root)
    bind_rootfs(root)
    root_fd = _open_dir(root, "bind-rootfs")
    try:
        mount_spec_mounts(steps, root_fd, root, Path(bundle), log)
        if not binds_dev(steps):
            populate_dev(linux, root_fd, console_path)
        elif console_path:
            bind_console(root_fd, console_path)
    finally:
        os.close(root_fd)
    if before_pivot is not None:
        before_pivot()
    enter_rootfs(root, no_pivot=no_pivot, log=log)
    if linux.rootfs_propagation is not None:
        # "/" is now the rootfs bind, whose propagation came from the parent made private
        # above; give it the one the spec asked for.
        set_root_propagation(linux.rootfs_propagation)

    mask_paths(linux.masked_paths)
    make_paths_readonly(linux.readonly_paths)
    remount_deferred_readonly(steps)
    if spec.root.readonly:
        remount_root_readonly()
    os.umask(0o022)
    log.debug("rootfs ready: %s", root)


# --- steps 1 and 2: propagation and the rootfs mount ----------------------------------------


def _propagation_flags(value: str | None) -> int:
    if value is None:
        # A slave sees the host's new mounts (a USB stick, a new volume) but sends none back.
        return mnt.MS_SLAVE | mnt.MS_REC
    (flags,) = mnt.parse_options([value]).propagation
    return flags


def set_root_propagation(value: str | None) -> None:
    """Apply ``linux.rootfsPropagation`` (default ``rslave``) to ``/``."""
    with _step("root-propagation", "/"):
        mnt.mount(None, "/", None, _propagation_flags(value))


def make_parent_private(root: str) -> None:
    """Make the mount that holds ``root`` private: pivot_root(2) and MS_MOVE refuse a
    shared parent, and our bind of the rootfs must not propagate to the host."""
    path = root
    with _step("parent-private", root):
        while True:
            try:
                mnt.mount(None, path, None, mnt.MS_PRIVATE)
                return
            except OSError as exc:
                # EINVAL: not a mount point; climb to the one that holds it.
                if exc.errno != errno.EINVAL or path == "/":
                    raise
            path = posixpath.dirname(path)


def bind_rootfs(root: str) -> None:
    """Bind the rootfs on itself (with its submounts) so it is a mount of its own."""
    with _step("bind-rootfs", root):
        mnt.bind(root, root, recursive=True)


def _open_dir(path: str, step: str) -> int:
    with _step(step, path):
        return open_root(path)


# --- step 3: the spec's mounts ------------------------------------------------------------


def mount_spec_mounts(
    steps: Sequence[MountStep], root_fd: int, root: str, bundle: Path, log: Log
) -> None:
    """Mount every planned step inside the rootfs, in order."""
    for step in steps:
        log.debug("rootfs: %s %s on %s", step.name, step.fstype, step.destination)
        with _step(step.name, step.destination):
            _mount_step(step, root_fd, root, bundle, log)


def _host_source(source: str, bundle: Path) -> str:
    # The runtime spec: a bind source may be relative to the bundle.
    return source if source.startswith("/") else os.fspath(bundle / source)


def _mount_step(step: MountStep, root_fd: int, root: str, bundle: Path, log: Log) -> None:
    source_fd = -1
    try:
        target_is_dir = True
        if step.is_bind:
            assert step.source is not None  # plan_mount refused a bind without one
            source_fd = os.open(_host_source(step.source, bundle), os.O_PATH | os.O_CLOEXEC)
            target_is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
            if step.data:
                log.warning("rootfs: %s: options %r mean nothing to a bind", step.name, step.data)
        target_fd = _open_target(root_fd, step.destination, is_dir=target_is_dir)
        try:
            where = fd_path(target_fd)
            rel = _inside(root, where, step)
            # Checked again on the resolved path: a link in the image may lead to /proc.
            problem = proc_destination_problem(step.fstype, rel)
            if problem:
                raise RootfsError(step.name, step.destination, f"resolves to /{rel}: {problem}")
            if step.is_bind:
                mnt.mount(source_fd, target_fd, None, mnt.MS_BIND | _rec(step.recursive))
            elif step.fstype == "sysfs":
                _mount_sysfs(step, target_fd, root_fd, where)
            elif step.fstype in ("cgroup", "cgroup2"):
                _mount_cgroup(step, target_fd, root_fd, where)
            else:
                source = step.source or step.fstype
                mnt.mount(source, target_fd, step.fstype, step.flags_now, step.data or None)
        finally:
            os.close(target_fd)
        _after_mount(step, root_fd, where)
    finally:
        if source_fd >= 0:
            os.close(source_fd)


def _rec(recursive: bool) -> int:
    return mnt.MS_REC if recursive else 0


def _open_target(root_fd: int, destination: str, *, is_dir: bool) -> int:
    """An O_PATH fd of ``destination`` inside the root, created (a directory, or an empty
    file when a file is to be bound there) when missing."""
    rel = destination.lstrip("/")
    with contextlib.suppress(FileNotFoundError):
        return open_in_root(root_fd, rel, os.O_PATH)
    if is_dir:
        return mkdir_in_root(root_fd, rel)
    parent = posixpath.dirname(rel)
    if parent:
        os.close(mkdir_in_root(root_fd, parent))
    # O_NONBLOCK: should a fifo appear here meanwhile, fail instead of waiting for a reader.
    fd = open_in_root(root_fd, rel, os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK, 0o644)
    os.close(fd)
    return open_in_root(root_fd, rel, os.O_PATH)


def _inside(root: str, where: str, step: MountStep) -> str:
    """``where`` relative to the rootfs; refuses a path outside it (which RESOLVE_IN_ROOT
    should make impossible: this is the belt to its braces)."""
    if where == root:
        return ""
    prefix = root.rstrip("/") + "/"
    if not where.startswith(prefix):
        raise RootfsError(step.name, step.destination, f"resolves to {where}, outside the rootfs")
    return where[len(prefix) :]


def _reopen(root_fd: int, destination: str, expected: str, name: str) -> int:
    """An O_PATH fd of the mount now at ``destination``.

    The fd a mount went through still names the covered directory, and a remount or
    propagation change there would act on the wrong mount (EINVAL at best), so look the
    path up again, and make sure it still leads where the mount went.
    """
    fd = open_in_root(root_fd, destination.lstrip("/"), os.O_PATH)
    found = fd_path(fd)
    if found != expected:
        os.close(fd)
        raise RootfsError(name, destination, f"moved while being mounted (now {found})")
    return fd


def _after_mount(step: MountStep, root_fd: int, where: str) -> None:
    """Bind flags (which need a remount), propagation and recursive attributes."""
    bind_set = step.flags_now & PER_MOUNT_FLAGS if step.is_bind else 0
    bind_clear = step.clear & PER_MOUNT_FLAGS if step.is_bind else 0
    if not (bind_set or bind_clear or step.propagation or step.attr_set or step.attr_clr):
        return
    fd = _reopen(root_fd, step.destination, where, step.name)
    try:
        if bind_set or bind_clear:
            # The kernel ignores every flag but MS_REC on the bind itself.
            if bind_set & _ATIME_FLAGS:
                bind_clear |= _ATIME_FLAGS & ~bind_set
            mnt.remount(fd, set_flags=bind_set, clear_flags=bind_clear)
        for propagation in step.propagation:
            mnt.mount(None, fd, None, propagation)
        if step.attr_set or step.attr_clr:
            mnt.mount_setattr(
                "",
                dirfd=fd,
                flags=mnt.AT_EMPTY_PATH | mnt.AT_RECURSIVE,
                attr_set=step.attr_set,
                attr_clr=step.attr_clr,
            )
    finally:
        os.close(fd)


def _mount_sysfs(step: MountStep, target_fd: int, root_fd: int, where: str) -> None:
    try:
        mnt.mount(step.source or "sysfs", target_fd, "sysfs", step.flags_now, step.data or None)
    except PermissionError:
        # In a user namespace without a network namespace of its own the kernel refuses a
        # new sysfs (runc meets the same); show the host's instead, and only read-only.
        mnt.mount("/sys", target_fd, None, mnt.MS_BIND | mnt.MS_REC)
        flags = (step.flags & PER_MOUNT_FLAGS) | mnt.MS_RDONLY
        _remount_at(root_fd, step.destination, where, step.name, flags)


def _mount_cgroup(step: MountStep, target_fd: int, root_fd: int, where: str) -> None:
    """cgroupfs at ``step.destination``, read-only unless the spec said ``rw``.

    Kept simple for now: on a unified host (or for ``cgroup2``) a new cgroup2 mount, which
    in the container's cgroup namespace shows only its own subtree; on a v1 or hybrid host
    a tmpfs holding a bind of each host hierarchy (the whole hierarchy, not only the
    container's cgroup: read-only, but it does show the host's cgroup tree).
    """
    hosts = cgroup_mounts(read_mountinfo())
    if step.fstype == "cgroup2" or hierarchy_mode(hosts) in ("unified", "none"):
        source = step.source if step.source and step.source != "cgroup" else "cgroup2"
        mnt.mount(source, target_fd, "cgroup2", step.flags, step.data or None)
        return
    mnt.mount("tmpfs", target_fd, "tmpfs", step.flags & _HARDENED, "mode=755")
    per_mount = step.flags & PER_MOUNT_FLAGS
    for host in hosts:
        name = posixpath.relpath(host.mount_point, _CGROUP_ROOT)
        if name.startswith("..") or "/" in name or name == ".":
            continue  # only the hierarchies mounted right under /sys/fs/cgroup
        source_fd = os.open(host.mount_point, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sub = posixpath.join(step.destination, name)
            sub_fd = mkdir_in_root(root_fd, sub.lstrip("/"))
            try:
                sub_where = fd_path(sub_fd)
                mnt.mount(source_fd, sub_fd, None, mnt.MS_BIND)
            finally:
                os.close(sub_fd)
            _remount_at(root_fd, sub, sub_where, step.name, per_mount)
        finally:
            os.close(source_fd)
    top = _reopen(root_fd, step.destination, where, step.name)
    try:
        # Systemd links the co-mounted controllers (cpu -> cpu,cpuacct); so do we.
        with os.scandir(_CGROUP_ROOT) as entries:
            for entry in entries:
                if entry.is_symlink():
                    with contextlib.suppress(FileExistsError):
                        os.symlink(os.readlink(entry.path), entry.name, dir_fd=top)
        mnt.remount(top, set_flags=per_mount)
    finally:
        os.close(top)


def _remount_at(root_fd: int, destination: str, where: str, name: str, flags: int) -> None:
    fd = _reopen(root_fd, destination, where, name)
    try:
        mnt.remount(fd, set_flags=flags)
    finally:
        os.close(fd)


# --- step 4: /dev -----------------------------------------------------------------------------


def populate_dev(linux: Linux, root_fd: int, console_path: str | None) -> None:
    """Create the device nodes, the standard links and the console in the container's /dev.

    Inside a user namespace mknod(2) is refused, so the host's nodes are bound instead.
    """
    in_userns = devices.in_user_namespace(Path("/proc/self/uid_map").read_text())
    old_umask = os.umask(0)  # the nodes get exactly the spec's fileMode
    try:
        for node in devices.device_nodes(linux.devices):
            with _step("devices", node.path):
                if in_userns:
                    devices.bind_node(root_fd, node)
                else:
                    devices.make_node(root_fd, node)
    finally:
        os.umask(old_umask)
    links = devices.dev_symlinks(have_kcore=os.path.exists("/proc/kcore"))
    with _step("devices", "/dev"):
        devices.make_symlinks(root_fd, links)
    if console_path:
        bind_console(root_fd, console_path)


def bind_console(root_fd: int, console_path: str) -> None:
    """Bind the pty slave ``console_path`` over /dev/console."""
    with _step("console", "/dev/console"):
        devices.bind_console(root_fd, console_path)


# --- step 5: entering the rootfs -------------------------------------------------------------


def enter_rootfs(root: str, *, no_pivot: bool = False, log: Log = _log) -> None:
    """Make ``root`` the process's ``/``: pivot_root, or MS_MOVE + chroot as a fallback."""
    if not no_pivot and pivot_into(root):
        return
    log.debug("rootfs: entering %s with MS_MOVE and chroot", root)
    move_root_into(root)


def pivot_into(root: str) -> bool:
    """pivot_root into ``root`` and detach the old root; False when the host root is an
    initramfs, which pivot_root(2) cannot move (the caller then falls back)."""
    with _step("pivot_root", root):
        old_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            new_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fchdir(new_fd)
            finally:
                os.close(new_fd)
            try:
                # pivot_root(".", "."): the old root ends up mounted on top of the new one,
                # with no directory needed for it in the image (LXC's trick, runc's too).
                mnt.pivot_root(".", ".")
            except OSError as exc:
                if exc.errno == errno.EINVAL and _root_is_initramfs():
                    return False
                raise
            os.fchdir(old_fd)
            # Slave first, so detaching the old root cannot propagate an unmount to the host.
            mnt.mount(None, ".", None, mnt.MS_SLAVE | mnt.MS_REC)
            mnt.umount2(".", mnt.MNT_DETACH)
        finally:
            os.close(old_fd)
        os.chdir("/")
    return True


def _root_is_initramfs() -> bool:
    entry = find_mount(read_mountinfo(), "/")
    return entry is not None and entry.fstype in ("rootfs", "ramfs")


def move_root_into(root: str) -> None:
    """Move the rootfs mount over ``/`` and chroot into it (runc's ``--no-pivot``).

    The old root stays in the namespace under the chroot, so first hide every full
    procfs and sysfs of the host in it: while one is reachable, the kernel would let the
    container mount a fresh, unmasked proc or sysfs (it checks for a fully visible one).
    """
    with _step("move-root", root):
        os.chdir(root)
        hide_host_kernel_filesystems(root)
        mnt.move(root, "/")
        os.chroot(".")
        os.chdir("/")


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def hide_host_kernel_filesystems(root: str) -> None:
    """Detach (or, where that is refused, cover with an empty read-only tmpfs) every
    proc and sysfs mount outside ``root``."""
    hidden: list[str] = []
    for entry in read_mountinfo():
        point = entry.mount_point
        if entry.fstype not in ("proc", "sysfs") or _within(point, root):
            continue
        if any(_within(point, done) for done in hidden):
            continue  # went with a mount above it
        try:
            mnt.umount2(point, mnt.MNT_DETACH)
        except OSError:
            # A mount locked by a user namespace cannot be unmounted alone; cover it.
            flags = mnt.MS_RDONLY | _HARDENED
            mnt.mount("tmpfs", point, "tmpfs", flags, _MASK_TMPFS_DATA[1])
        hidden.append(point)


# --- step 6: masked and read-only paths, final remounts ------------------------------------


def _open_existing(root_fd: int, path: str) -> int | None:
    """An O_PATH fd of ``path`` inside the root, ``None`` when it does not exist."""
    try:
        return open_in_root(root_fd, path.lstrip("/"), os.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _verified_dev_null(root_fd: int) -> int:
    """An O_PATH fd of the container's /dev/null, after checking it is the null device.

    A symlink or another node put there by the image would otherwise be bound over every
    masked file: CVE-2025-31133 used that to make /proc/sys/kernel/core_pattern writable.
    """
    fd = open_in_root(root_fd, "dev/null", os.O_PATH | os.O_NOFOLLOW)
    if not is_device(fd, "c", 1, 3):
        os.close(fd)
        raise RootfsError(
            "masked-paths", "/dev/null", "is not the null device (char 1:3); refusing to mask"
        )
    return fd


def _mask_directory(fd: int) -> None:
    flags = mnt.MS_RDONLY | _HARDENED
    for data in _MASK_TMPFS_DATA:
        try:
            mnt.mount("tmpfs", fd, "tmpfs", flags, data)
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL or data == _MASK_TMPFS_DATA[-1]:
                raise


def mask_paths(paths: Iterable[str]) -> None:
    """Hide each path: a file under a bind of /dev/null, a directory under an empty
    read-only tmpfs. Paths the container does not have are skipped."""
    root_fd = _open_dir("/", "masked-paths")
    null_fd = -1
    try:
        for path in paths:
            with _step("masked-paths", path):
                fd = _open_existing(root_fd, path)
                if fd is None:
                    continue
                try:
                    if stat.S_ISDIR(os.fstat(fd).st_mode):
                        _mask_directory(fd)
                    else:
                        if null_fd < 0:
                            null_fd = _verified_dev_null(root_fd)
                        mnt.bind(null_fd, fd, recursive=False)
                finally:
                    os.close(fd)
    finally:
        if null_fd >= 0:
            os.close(null_fd)
        os.close(root_fd)


def make_paths_readonly(paths: Iterable[str]) -> None:
    """Bind each path on itself and make that bind read-only, keeping its nosuid, nodev
    and noexec. Paths the container does not have are skipped."""
    root_fd = _open_dir("/", "readonly-paths")
    try:
        for path in paths:
            with _step("readonly-paths", path):
                fd = _open_existing(root_fd, path)
                if fd is None:
                    continue
                try:
                    where = fd_path(fd)
                    mnt.bind(fd, fd, recursive=True)
                finally:
                    os.close(fd)
                _remount_at(root_fd, path, where, "readonly-paths", mnt.MS_RDONLY)
    finally:
        os.close(root_fd)


def remount_deferred_readonly(steps: Iterable[MountStep]) -> None:
    """Make read-only the mounts that had to stay writable until now (/dev, tmpfs)."""
    root_fd = _open_dir("/", "readonly-mounts")
    try:
        for step in steps:
            if step.readonly_later:
                with _step(step.name, step.destination):
                    fd = open_in_root(root_fd, step.destination.lstrip("/"), os.O_PATH)
                    try:
                        mnt.remount(fd, set_flags=mnt.MS_RDONLY)
                    finally:
                        os.close(fd)
    finally:
        os.close(root_fd)


def remount_root_readonly() -> None:
    """Make the container's ``/`` read-only (``root.readonly``)."""
    with _step("readonly-root", "/"):
        fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            mnt.remount(fd, set_flags=mnt.MS_RDONLY)
        finally:
            os.close(fd)
