"""The container core: from an OCI runtime spec and a rootfs to a supervised process tree.

`gantry.runtime.spec` is the input: the runtime spec as one typed, validated, frozen value.
Everything below it (namespaces, rootfs, cgroups, security, supervision) takes that value
and never re-checks it.
"""
