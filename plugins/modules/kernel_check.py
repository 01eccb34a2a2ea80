#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_check
short_description: Check that a host's kernel can run Gantry containers
version_added: 0.1.0
description:
  - Checks, for each requested feature, the kernel build configuration, the cgroup hierarchy,
    the active security modules, a few sysctls and helper binaries and, with O(probes=true),
    what the running kernel really allows (it creates namespaces, an overlay mount, a cgroup
    and a seccomp filter in a throw-away child process and removes them).
  - Only reads. It never changes the host, so check mode runs the whole check and returns the
    same report.
  - Returns the full report as the C(gantry_kernel) fact, the required items that are missing
    (with how to fix each one), the cgroup layout and an exit code.
  - Fails, unless O(fail_on_missing=false), with one readable message listing each missing
    required item and its fix. A failed result carries RV(missing), RV(exit_code) and
    RV(cgroup_layout) but not the full report, so the message stays readable.
  - When the kernel configuration cannot be read (no C(/proc/config.gz), no
    C(/boot/config-<release>), as in many containers), kernel options stay C(unknown). The
    module then does not fail unless something required is known to be missing, and returns
    a warning that says how to make the configuration readable.
  - The same engine answers C(gantry checkconfig) on hosts that run the agent.
author:
  - Gantry developers (!UNKNOWN)
requirements:
  - A Linux host. Python standard library only; no agent needed.
options:
  features:
    description:
      - The features to check. An item a requested feature requires makes the module fail when
        it is missing; items of features not requested are still reported, as warnings.
      - An empty list means the default set, like leaving the option out.
    type: list
    elements: str
    choices:
      namespaces: Mount, UTS, IPC, PID, network and cgroup namespaces for every container.
      cgroups: >-
        A usable cgroup hierarchy (v1, v2 or hybrid) with the controllers Gantry limits:
        cpu, memory, pids, devices, freezer.
      overlay: Overlay mounts with whiteouts, for layered container root filesystems.
      seccomp: Seccomp BPF filters, for the default syscall profile.
      bridge: >-
        The default container network: veth pairs on a Linux bridge with masquerading NAT
        (CNI bridge plugin).
      ports: Publishing container ports on the host with DNAT rules (CNI portmap plugin).
      userns: "User namespaces: user-mapped and rootless containers."
      checkpoint: Checkpoint and restore of running containers with CRIU.
      macvlan: "macvlan networks: containers with their own MAC address on a host link."
      ipvlan: "ipvlan networks: containers sharing a host link's MAC address."
      vlan: 802.1Q VLAN sub-interfaces for container networks.
      vxlan: VXLAN overlay networks that span hosts.
      lsm: An active mandatory access control module (AppArmor or SELinux).
      fuse: FUSE file systems inside containers (lxcfs, fuse-overlayfs, sshfs).
      timens: "Time namespaces: per-container monotonic and boot-time clock offsets."
    default: [namespaces, cgroups, overlay, seccomp, bridge, ports]
  config_path:
    description:
      - The kernel build configuration to check, plain or gzip-compressed, for example
        C(/boot/config-6.1.0-28-amd64) to check a kernel that is installed but not running yet.
        Only this file is read; there is no fallback to another one.
      - When it is not the running kernel's configuration, what only the running kernel can
        tell (probes, sysctls, cgroup controllers, security modules) is reported as C(skipped).
      - When not set, the running kernel's configuration is looked for in C(/proc/config.gz),
        C(/boot/config-<release>), C(/lib/modules/<release>/build/.config),
        C(/usr/src/linux-<release>/.config) and C(/usr/src/linux/.config), in that order.
    type: path
  probes:
    description:
      - Ask the running kernel what it really allows, in a throw-away child process.
      - With V(false) the probes are reported as C(skipped).
    type: bool
    default: true
  fail_on_missing:
    description:
      - Fail when an item a requested feature requires is missing.
      - With V(false) the module succeeds and the caller decides, from RV(missing) or
        RV(exit_code); the C(gantry.fleet.kernel_check) role works that way.
    type: bool
    default: true
extends_documentation_fragment:
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
  - gantry.fleet.attributes.facts
  - gantry.fleet.attributes.facts_module
notes:
  - Run it as root (C(become)) for every probe; as another user some probes report
    C(unknown) rather than C(missing).
  - The exit code is the one of C(gantry checkconfig) (V(0) every required item is there,
    V(1) a required item is missing, V(2) the configuration could not be read).
"""

EXAMPLES = r"""
- name: Check that the kernel runs Gantry containers (fails with the fix for each missing item)
  gantry.fleet.kernel_check:

- name: Check extra features as well
  gantry.fleet.kernel_check:
    features: [namespaces, cgroups, overlay, seccomp, bridge, ports, userns, vxlan]

- name: Check the kernel the next reboot will run (its version is read from the file)
  gantry.fleet.kernel_check:
    config_path: /boot/config-6.1.0-28-amd64

- name: Check without failing, then decide
  gantry.fleet.kernel_check:
    fail_on_missing: false
  register: kernel

- name: Show what is missing
  ansible.builtin.debug:
    msg: "{{ item.id }}: {{ item.hint }}"
  loop: "{{ kernel.missing }}"

- name: Use the fact later in the play
  ansible.builtin.debug:
    msg: "cgroup layout {{ ansible_facts.gantry_kernel.cgroup.layout }}"
"""

RETURN = r"""
ansible_facts:
  description:
    - Facts added to the host.
    - Not returned when the module fails; use O(fail_on_missing=false) to get the report of a
      kernel that misses something.
  returned: success
  type: dict
  contains:
    gantry_kernel:
      description:
        - The full report, the same document C(gantry checkconfig) reports.
      returned: success
      type: dict
      contains:
        schema:
          description: Version of the report's layout.
          type: int
          returned: always
          sample: 1
        kernel:
          description: The kernel checked.
          type: dict
          returned: always
          contains:
            release:
              description:
                - The running kernel's release (C(uname -r)), or the version in the header of
                  the configuration of a kernel that is not running.
              type: str
              returned: always
              sample: 6.1.0-28-amd64
            version:
              description: The kernel version the version-gated items were judged by.
              type: str
              returned: always
              sample: 6.1.119
            running:
              description: Whether the checked kernel is the running one.
              type: bool
              returned: always
              sample: true
            arch:
              description: Machine architecture.
              type: str
              returned: always
              sample: x86_64
        config:
          description: The kernel configuration read.
          type: dict
          returned: always
          contains:
            path:
              description: The file read, or null when none could be.
              type: str
              returned: always
              sample: /proc/config.gz
            readable:
              description: Whether a configuration could be read.
              type: bool
              returned: always
              sample: true
            error:
              description: Why no configuration could be read (each place tried), else null.
              type: str
              returned: always
            hint:
              description: How to make the configuration readable, when it was not.
              type: str
              returned: always
            tried:
              description: The files tried, in order.
              type: list
              elements: str
              returned: always
              sample: [/proc/config.gz]
            modules_supported:
              description: Whether the kernel loads modules (C(CONFIG_MODULES)); null if unknown.
              type: bool
              returned: always
        environment:
          description:
            - Where the check ran, C(container) (the container manager's name, or null) and
              C(in_user_namespace).
          type: dict
          returned: always
          sample: {"container": null, "in_user_namespace": false}
        cgroup:
          description: The cgroup hierarchy.
          type: dict
          returned: always
          contains:
            layout:
              description:
                - V(unified) (cgroup v2 only), V(hybrid) (v1 controllers and a v2 mount),
                  V(legacy) (v1 only) or V(none).
              type: str
              returned: always
              sample: unified
            v1:
              description: Mount point of each v1 hierarchy, by controller.
              type: dict
              returned: always
              sample: {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
            v2:
              description:
                - The v2 C(mount) (or null), its C(controllers) and the controllers enabled for
                  its children (C(subtree_control)).
              type: dict
              returned: always
              sample:
                mount: /sys/fs/cgroup
                controllers: [cpuset, cpu, io, memory, pids]
                subtree_control: [cpu, memory, pids]
        requested:
          description: The features checked, in order.
          type: list
          elements: str
          returned: always
          sample: [namespaces, cgroups, overlay, seccomp, bridge, ports]
        features:
          description:
            - One entry per feature (requested or not), with C(requested), C(status) (V(ok),
              V(missing) or V(unknown)) and C(missing) (ids of the items it requires that are
              missing).
          type: dict
          returned: always
          sample: {"namespaces": {"requested": true, "status": "ok", "missing": []}}
        items:
          description:
            - Every item checked. C(id) (V(CONFIG_PID_NS), V(probe:overlay),
              V(sysctl:user.max_user_namespaces), …), C(kind) (V(kconfig), V(probe),
              V(sysctl), V(binary), V(cgroup), V(lsm)), C(section), C(label), C(features)
              (feature to V(required) or V(optional)), C(value), C(module) (for options that
              can be built as a module), C(status) (V(ok), V(missing), V(warn), V(unknown) or
              V(skipped)), C(detail) and C(hint) (how to fix it, or null).
          type: list
          elements: dict
          returned: always
          sample:
            - id: CONFIG_PID_NS
              kind: kconfig
              section: Namespaces
              label: PID namespace
              features: {namespaces: required}
              value: "y"
              module: null
              status: ok
              detail: built in
              hint: null
        summary:
          description:
            - Counts by status, C(required_missing) (ids) and C(exit_code).
          type: dict
          returned: always
          sample:
            ok: 118
            missing: 0
            warn: 4
            unknown: 0
            skipped: 0
            required_missing: []
            exit_code: 0
missing:
  description: The items a requested feature requires that are missing, each with how to fix it.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The item's id.
      type: str
      sample: CONFIG_PID_NS
    label:
      description: What the item is, in words.
      type: str
      sample: PID namespace
    hint:
      description: How to fix it.
      type: str
      sample: rebuild the kernel with CONFIG_PID_NS=y
cgroup_layout:
  description: The host's cgroup layout, as in the fact.
  returned: always
  type: str
  sample: unified
exit_code:
  description:
    - V(0) when every required item is there, V(1) when a required item is missing, V(2) when
      the kernel configuration could not be read and nothing required is known to be missing.
  returned: always
  type: int
  sample: 0
msg:
  description:
    - The one-message summary. When required items are missing, each one with its fix (the
      message the module fails with unless O(fail_on_missing=false)).
  returned: always
  type: str
  sample: >-
    the kernel lacks 1 required item: PID namespace (CONFIG_PID_NS) for namespaces:
    rebuild the kernel with CONFIG_PID_NS=y
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._kernel_check import (
    FEATURES,
    missing_summary,
    run_checks,
)


def argument_spec():
    return dict(
        features=dict(
            type="list",
            elements="str",
            choices=[name for name, _description, _default in FEATURES],
            default=[name for name, _description, default in FEATURES if default],
        ),
        config_path=dict(type="path"),
        probes=dict(type="bool", default=True),
        fail_on_missing=dict(type="bool", default=True),
    )


def missing_items(report):
    """The required items that are missing, with what they are and how to fix them."""
    wanted = set(report["summary"]["required_missing"])
    return [
        dict(id=item["id"], label=item["label"], hint=item["hint"])
        for item in report["items"]
        if item["id"] in wanted
    ]


def unreadable_warning(report, config_path):
    """Why the kernel options are unknown, and how to make the check whole."""
    config = report["config"]
    unconfirmed = [
        name
        for name, feature in report["features"].items()
        if feature["requested"] and feature["status"] == "unknown"
    ]
    # The engine says "kernel configuration not readable; tried A: why; B: why".
    tried = (config["error"] or "").partition("; tried ")[2]
    message = "The kernel configuration could not be read (%s), so kernel options are unknown" % (
        "tried " + tried if tried else config["error"] or "none found"
    )
    if unconfirmed:
        message += " and these features are not confirmed: %s" % ", ".join(unconfirmed)
    message += "."
    if config_path:
        return message + " Check config_path: it must name a kernel configuration, plain or gzip."
    container = report["environment"].get("container")
    if container:
        message += (
            " Inside a %s container the host's configuration is usually not visible;"
            " check the host itself." % container
        )
    return message + (
        " To fix: `modprobe configs` (CONFIG_IKCONFIG_PROC), install the kernel's config as"
        " /boot/config-%s, or give config_path." % report["kernel"]["release"]
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params

    # The engine also honours a CONFIG variable (as lxc-checkconfig does). Here the option
    # says which configuration to check; a stray CONFIG in the remote environment must not.
    environ = dict(os.environ)
    environ.pop("CONFIG", None)
    try:
        report = run_checks(
            config_path=params["config_path"],
            # An empty list asks for the default set, like leaving the option out.
            features=params["features"] or None,
            probes=params["probes"],
            environ=environ,
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    result = dict(
        changed=False,
        missing=missing_items(report),
        cgroup_layout=report["cgroup"]["layout"],
        exit_code=report["summary"]["exit_code"],
        msg=missing_summary(report),
    )
    if result["missing"] and params["fail_on_missing"]:
        # Without the report: a failed task is printed whole, and the one message that says
        # what to fix must not drown in it (Ansible does not set facts from a failed task).
        module.fail_json(**result)
    if not report["config"]["readable"]:
        module.warn(unreadable_warning(report, params["config_path"]))
    module.exit_json(ansible_facts=dict(gantry_kernel=report), **result)


if __name__ == "__main__":
    main()
