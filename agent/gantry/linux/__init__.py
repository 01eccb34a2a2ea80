"""Layer 1 of the agent: thin, typed wrappers over the Linux kernel. No policy.

Modules, each named after what it wraps:

- :mod:`gantry.linux.ns` -- unshare(2), setns(2), namespace kinds and their names
- :mod:`gantry.linux.mount` -- mount(2), umount2(2), pivot_root(2), the fd-based mount API
- :mod:`gantry.linux.fs` -- openat2(2) and a confined path walk, /proc fd paths, mknod
- :mod:`gantry.linux.prctl` -- prctl(2) operations
- :mod:`gantry.linux.caps` -- capability names and numbers, capget/capset, bounding, ambient
- :mod:`gantry.linux.proc` -- /proc stat, status and mountinfo readers, pidfds, close_range
- :mod:`gantry.linux.cgroupfs` -- cgroup membership, hierarchy mounts, cgroup file formats
- :mod:`gantry.linux.seccomp` -- loading a ready-made seccomp BPF program

Every failing call raises :class:`OSError` with the kernel's errno and a message naming the
call and the path or object it acted on. Calls that change the calling process (unshare,
setns, capset, prctl, pivot_root) are meant for a freshly forked, single-threaded child.
"""
