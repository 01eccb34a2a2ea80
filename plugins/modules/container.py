#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container
short_description: Converge a container on a Gantry agent to the desired state
version_added: 0.1.0
description:
  - Makes the Gantry agent on a host hold one container with exactly the configuration the
    task gives, in the run state it asks for.
  - The module sends the whole desired configuration (C(PUT /v1/containers/{name})). The agent
    fills every default, normalises both sides (so V(1g) and V(1073741824) are the same
    memory limit, and an environment given as V(A=1) strings or as a dictionary is one
    environment) and compares them; the
    module does not compare anything itself. An option left out of the task means the agent's
    default, so removing an option from a task undoes it.
  - What differs decides what happens. Resource limits (O(memory), O(memory_swap), O(cpus),
    O(cpu_shares), O(cpuset_cpus), O(pids_limit), O(blkio_weight), O(device_read_bps),
    O(device_write_bps), O(device_read_iops), O(device_write_iops)) and the agent's own bookkeeping
    (O(labels), O(restart_policy), O(healthcheck), O(stop_signal), O(stop_timeout)) change in
    place, without a restart, when the agent can write them to the live cgroup (its
    C(cgroup_update) feature); anything else recreates the container (stopped with its old
    stop signal and timeout, removed, created anew and started again if it ran).
  - Check mode asks the agent the same question with C(dry_run), so the prediction comes from
    the same code that would act; nothing changes. With O(pull=always) the module also reads
    the digest the registry's tag names (one C(HEAD) request from the managed host), which
    the agent's dry run does not ask, to predict whether the pull brings another image.
  - The diff shows the whole normalised configuration before and after, and names every field
    that differs (for example C(spec.resources.memory), or C(state) when only the run state
    changes).
  - The options below are the fields of the agent's container spec (see C(docs/api.md) in
    the collection). An option an older agent does not support fails with the agent's
    message naming the field, never silently.
author:
  - Gantry developers (!UNKNOWN)
options:
  name:
    description:
      - The container's name on the agent; a letter or digit first, then letters, digits,
        V(_), V(.) and V(-), at most 128 characters. The container's id also works.
    type: str
    required: true
  state:
    description:
      - V(started) - the container exists with this configuration and runs (a paused one is
        unpaused).
      - V(stopped) - it exists with this configuration and does not run.
      - V(present) - it exists with this configuration, in whatever run state it is in (a
        recreated container is started again if it ran).
      - V(absent) - it does not exist. A running container is stopped first (its stop signal,
        then C(SIGKILL) after its stop timeout). No other option is needed.
    type: str
    choices: [started, stopped, present, absent]
    default: started
  recreate:
    description:
      - Remove and create the container even when its configuration has not changed. The task
        then always reports a change (the module is not idempotent with this option).
    type: bool
    default: false
  restart:
    description:
      - Restart the container (stop, then start) even when its configuration has not changed,
        unless the task starts or recreates it anyway. Only with O(state=started). The task
        then always reports a change.
    type: bool
    default: false
  wait:
    description:
      - With O(state=started) and a O(healthcheck), wait until the agent reports the container
        C(healthy); fail when it turns C(unhealthy) (with the last check's output) or when
        O(wait_timeout) passes. Without a healthcheck, the container only has to be running.
      - Not in check mode.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds O(wait) waits at most.
    type: int
    default: 120
  image:
    description:
      - The image reference the container runs. Exactly one of O(image) and O(rootfs) is
        needed unless O(state=absent).
      - The agent pulls it as O(pull) says; the image's configuration supplies the
        entrypoint, command, environment, working directory, user, stop signal and labels
        the task does not set, as Docker does (an explicit O(entrypoint) also resets the
        image's command).
      - M(gantry.fleet.image) pulls, loads or imports images ahead of time.
    type: str
  rootfs:
    description:
      - An absolute path on the host of a directory to use as the container's root file
        system, as C(podman run --rootfs). It must exist.
    type: path
  entrypoint:
    description:
      - The start of the process's command line. The container runs O(entrypoint) followed by
        O(command); together they must not be empty.
      - A list is taken as it is. A string is split into words the way a POSIX shell would
        (quotes group, no variables, no globbing).
    type: raw
  command:
    description:
      - The command line, after O(entrypoint). A list or a string, as for O(entrypoint).
    type: raw
  env:
    description:
      - Environment variables. Values must be strings; quote values YAML would read as
        something else (V("yes"), V("010"), V("1.10")), or the module fails naming the key.
      - C(PATH) is added by the agent when missing.
    type: dict
  user:
    description:
      - The user the process runs as, V(uid), V(uid:gid), V(name) or V(name:group); names are
        looked up in the root file system's C(/etc/passwd) and C(/etc/group). The agent keeps
        it as V(uid:gid), so V(0) and V(root) are the same user. Default V(0:0).
    type: str
  workdir:
    description:
      - The absolute working directory of the process. Default V(/).
    type: str
    aliases: [working_dir]
  hostname:
    description:
      - The container's host name. Default the container's name.
    type: str
  mounts:
    description:
      - Bind mounts and tmpfs mounts, in addition to O(volumes). The agent keeps them sorted
        by target, so their order does not matter.
    type: list
    elements: dict
    suboptions:
      type:
        description: The kind of mount.
        type: str
        choices: [bind, tmpfs]
        default: bind
      source:
        description: For V(bind), an absolute path on the host that exists. Ignored for V(tmpfs).
        type: str
      target:
        description: The absolute path in the container.
        type: str
        required: true
      read_only:
        description: Mount it read-only.
        type: bool
      options:
        description: Extra mount options, for example V(nosuid), V(size=64m), V(mode=1777).
        type: list
        elements: str
  volumes:
    description:
      - Bind mounts in Docker's C(-v) syntax, V(SOURCE:TARGET) or V(SOURCE:TARGET:OPTIONS)
        where OPTIONS is a comma-separated list (V(ro), V(rw) and mount options such as
        V(nosuid)). Added to O(mounts).
    type: list
    elements: str
  memory:
    description:
      - The memory limit in bytes, or a size with a unit (V(512m), V(1g); binary multiples as
        Docker). At least V(6m). Changed in place.
    type: raw
  memory_swap:
    description:
      - Memory plus swap (Docker's meaning), as for O(memory); V(-1) is unlimited. Changed in
        place.
    type: raw
  cpus:
    description:
      - The CPU quota in CPUs (V(1.5) is one and a half CPUs). Changed in place.
    type: float
  cpu_shares:
    description:
      - The relative CPU weight, 2 to 262144. Changed in place.
    type: int
  cpuset_cpus:
    description:
      - The CPUs the container may run on, for example V(0-2,4). Changed in place.
    type: str
  pids_limit:
    description:
      - The most processes the container may have at once. Changed in place.
    type: int
  blkio_weight:
    description:
      - The relative block I/O weight, 10 to 1000 (the C(blkio)/C(io) controller's weight).
        Changed in place where the kernel allows.
    type: int
  device_read_bps:
    description:
      - Limits on the read rate from devices, in bytes per second. Changed in place where the
        kernel allows.
    type: list
    elements: dict
    suboptions:
      path:
        description: The device node on the host, for example V(/dev/sda).
        type: str
        required: true
      rate:
        description:
          - Bytes per second, as a number or a size with a unit (V(10m), V(1g); binary
            multiples as Docker).
        type: raw
        required: true
  device_write_bps:
    description:
      - Limits on the write rate to devices, in bytes per second, as for O(device_read_bps).
    type: list
    elements: dict
    suboptions:
      path:
        description: The device node on the host, for example V(/dev/sda).
        type: str
        required: true
      rate:
        description: Bytes per second, as a number or a size with a unit (V(10m)).
        type: raw
        required: true
  device_read_iops:
    description:
      - Limits on read operations per second from devices. Changed in place where the kernel
        allows.
    type: list
    elements: dict
    suboptions:
      path:
        description: The device node on the host, for example V(/dev/sda).
        type: str
        required: true
      rate:
        description: Operations per second.
        type: int
        required: true
  device_write_iops:
    description:
      - Limits on write operations per second to devices, as for O(device_read_iops).
    type: list
    elements: dict
    suboptions:
      path:
        description: The device node on the host, for example V(/dev/sda).
        type: str
        required: true
      rate:
        description: Operations per second.
        type: int
        required: true
  capabilities:
    description:
      - Capabilities to add to the default set; names with or without C(CAP_), any case, or
        V(ALL).
    type: list
    elements: str
    aliases: [cap_add]
  cap_drop:
    description:
      - Capabilities to drop from the default set, as for O(capabilities).
    type: list
    elements: str
  read_only:
    description:
      - Mount the root file system read-only.
    type: bool
  privileged:
    description:
      - All capabilities, no seccomp filter, no masked paths and a writable C(/sys). An explicit
        opt-in; default V(false).
    type: bool
  labels:
    description:
      - Labels (string keys and values). Changed in place.
      - The C(gantry.fleet.containers) role marks the containers it manages with the label
        C(io.gantry.managed-by).
    type: dict
  restart_policy:
    description:
      - What the agent does when the container's process ends. V(on-failure:N) is also accepted.
        Changed in place.
    type: str
  restart_retries:
    description:
      - With O(restart_policy=on-failure), how many restarts at most (V(0) is unlimited).
    type: int
  healthcheck:
    description:
      - A command the agent runs in the container (by exec) to tell whether it is healthy,
        with Docker's rules (C(starting) until the first success, failures within
        O(healthcheck.start_period) do not count, C(unhealthy) after O(healthcheck.retries)
        failures in a row). Changed in place. See also O(wait).
    type: dict
    suboptions:
      test:
        description:
          - The check. A list is V([CMD, argv...]), V([CMD-SHELL, "command line"]) or
            V([NONE]) (a bare list means V(CMD)); a string is a shell command line.
        type: raw
      interval:
        description: Seconds between checks.
        type: float
      timeout:
        description: Seconds one check may take.
        type: float
      retries:
        description: Failures in a row before the container counts as unhealthy.
        type: int
      start_period:
        description: Seconds after start during which failures do not count.
        type: float
  stop_signal:
    description:
      - The signal that asks the process to stop, by name (V(SIGTERM), V(TERM)) or number.
        Changed in place.
    type: str
  stop_timeout:
    description:
      - Seconds from the stop signal to C(SIGKILL). Changed in place. Default V(10).
    type: float
  init:
    description:
      - Run tini as process 1 (mounted at C(/dev/init), as Docker's C(--init)); it reaps
        orphaned processes and passes signals on to the command.
    type: bool
  tty:
    description:
      - Give the process a terminal.
    type: bool
  network_mode:
    description:
      - V(bridge) (the agent's default; a private network namespace attached to the networks
        of O(networks), or to the agent's default network C(gantry) when there are none),
        V(none) (a private network namespace with loopback only), V(host) (the host's network)
        or V(container:NAME) (the network namespace of the container NAME).
      - Left out, the agent's default (V(bridge)) applies, or V(bridge) when O(networks) is set.
      - A change recreates the container.
    type: str
  networks:
    description:
      - The networks (M(gantry.fleet.network)) to attach the container to, with
        O(network_mode=bridge). Left out, the container is on the agent's default network
        C(gantry). Their order does not matter; a change recreates the container.
      - Each network must exist; the agent names it when it does not.
    type: list
    elements: dict
    suboptions:
      name:
        description: The network's name.
        type: str
        required: true
      aliases:
        description: Further names the container answers to on this network.
        type: list
        elements: str
      ipv4_address:
        description:
          - A fixed IPv4 address inside the network's subnet (and inside its C(ip_range) when
            it has one). Left out, the agent picks a free one.
        type: str
  published_ports:
    description:
      - Ports to publish on the host, in Docker's syntax
        V([IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp]) (V(8080:80), V(127.0.0.1:8080:80),
        V(53:53/udp), V(80) for a random host port). Only with O(network_mode=bridge). The
        actual host ports are in C(network_settings.ports) of RV(container).
    type: list
    elements: str
    aliases: [ports]
  dns_servers:
    description:
      - Name servers for the container's C(/etc/resolv.conf). Left out, the host's resolvers
        (without loopback ones, which a private network cannot reach).
    type: list
    elements: str
  dns_search_domains:
    description:
      - Search domains for the container's C(/etc/resolv.conf).
    type: list
    elements: str
  dns_opts:
    description:
      - Resolver options for the container's C(/etc/resolv.conf), for example V(ndots:2).
    type: list
    elements: str
    aliases: [dns_options]
  pull:
    description:
      - With O(image), when the agent pulls the image.
      - V(missing) - only when the reference is not in the agent's image store.
      - V(always) - every run; when the reference then names another image, the container is
        recreated (RV(actions) holds C(pull) and C(recreate), the diff names C(image_id)).
      - V(never) - never; the task fails, naming C(spec.image), when the image is missing.
      - Not part of the container's configuration, so it never causes a change by itself.
      - Whatever this says, a container whose image reference now names another image than
        the one it was created from is recreated.
    type: str
    choices: [missing, always, never]
    default: missing
  sysctls:
    description:
      - Namespaced kernel parameters (C(net.*) needs a private network namespace). Values must
        be strings.
    type: dict
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
attributes:
  check_mode:
    support: full
    details:
      - The agent answers the same request with C(dry_run), from the same code that acts.
  diff_mode:
    support: full
    details:
      - The whole normalised configuration and run state, before and after; the header and
        RV(diff.fields) name each field that differs.
  idempotent:
    support: partial
    details:
      - Idempotent unless O(recreate) or O(restart) is set.
notes:
  - The agent, not the module, owns the comparison, so there is no C(comparisons) option.
    Every field of the spec is compared, after the agent has normalised both sides.
seealso:
  - module: gantry.fleet.container_info
  - module: gantry.fleet.agent_info
"""

EXAMPLES = r"""
- name: A busybox web server from a root file system on the host
  gantry.fleet.container:
    name: web
    rootfs: /srv/rootfs/busybox
    command: httpd -f -p 8080 -h /www
    volumes:
      - /srv/www:/www:ro
    memory: 64m
    cpus: 0.5
    pids_limit: 64
    restart_policy: unless-stopped
    labels:
      app: web

- name: Raise the memory limit (changed in place, the container keeps running)
  gantry.fleet.container:
    name: web
    rootfs: /srv/rootfs/busybox
    command: httpd -f -p 8080 -h /www
    volumes:
      - /srv/www:/www:ro
    memory: 128m
    cpus: 0.5
    pids_limit: 64
    restart_policy: unless-stopped
    labels:
      app: web

- name: Hardened
  gantry.fleet.container:
    name: worker
    rootfs: /srv/rootfs/busybox
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
    user: "1000:1000"
    read_only: true
    cap_drop: [ALL]
    mounts:
      - type: tmpfs
        target: /tmp
        options: [size=16m, mode=1777]
    env:
      LOG_LEVEL: debug
      RETRIES: "3"

- name: Stopped, but configured
  gantry.fleet.container:
    name: worker
    state: stopped
    rootfs: /srv/rootfs/busybox
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]

- name: Gone
  gantry.fleet.container:
    name: worker
    state: absent

- name: Talk to a remote agent over HTTPS with a client certificate, set once per play
  module_defaults:
    group/gantry.fleet.gantry:
      agent_url: https://node1.example.com:8443
      ca_path: /etc/gantry/ca.pem
      client_cert: /etc/gantry/client.pem
      client_key: /etc/gantry/client.key
  block:
    - name: Converge
      gantry.fleet.container:
        name: web
        rootfs: /srv/rootfs/busybox
        command: httpd -f -p 8080

- name: See what would change, and why
  gantry.fleet.container:
    name: web
    rootfs: /srv/rootfs/busybox
    command: httpd -f -p 9090
  check_mode: true
  register: plan

- name: Show it
  ansible.builtin.debug:
    msg: "{{ plan.actions }} because of {{ plan.diff.fields }}"
"""

RETURN = r"""
actions:
  description:
    - What the agent did (or, in check mode, would do), in order, from C(pull), C(create),
      C(recreate), C(update), C(start), C(stop), C(unpause), C(restart) and C(remove).
    - Empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: [update]
container:
  description:
    - The container as the agent reports it afterwards (its inspect document); in check mode,
      as it is now. Empty when it does not exist.
  returned: always
  type: dict
  contains:
    id:
      description: The container's id.
      type: str
      returned: when it exists
    name:
      description: Its name.
      type: str
      returned: when it exists
    spec:
      description: The whole normalised configuration, every default filled in.
      type: dict
      returned: when it exists
    desired_state:
      description: The run state the agent keeps it in (C(present), C(running), C(stopped)).
      type: str
      returned: when it exists
    image_id:
      description:
        - The id of the image it was created from (C(sha256:...)); null with a root file system.
      type: str
      returned: when it exists
    network_settings:
      description:
        - Its addresses on each network (C(networks), by name - C(ip), C(prefix_len),
          C(gateway), C(mac), C(aliases), C(interface)) and its published ports (C(ports),
          with the host port actually bound).
      type: dict
      returned: when it exists
    state:
      description:
        - The run state, C(status) (C(created), C(running), C(paused), C(stopped),
          C(restarting)), C(pid) on the host, C(exit_code), C(started_at), C(restart_count),
          C(health) and more.
      type: dict
      returned: when it exists
  sample:
    id: 3f9c2d51a0b7
    name: web
    desired_state: running
    spec:
      rootfs: /srv/rootfs/busybox
      command: [httpd, -f, -p, "8080"]
      resources: {memory: 67108864}
    state: {status: running, running: true, pid: 12345, exit_code: null}
diff:
  description:
    - The configuration and run state before and after (C(state) is C(absent) on the side
      where the container does not exist), as C(--diff) shows it.
  returned: always
  type: dict
  contains:
    before:
      description: C(state) and the normalised C(spec) before.
      type: dict
      returned: always
    after:
      description: C(state) and the normalised C(spec) after.
      type: dict
      returned: always
    fields:
      description:
        - Every field that differs, dotted and C(spec.)-prefixed, plus C(state) when the run
          state changes.
      type: list
      elements: str
      returned: always
      sample: [spec.resources.memory]
"""

import contextlib
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentConflict,
    AgentError,
    AgentNotFound,
    agent_argument_spec,
    client_from_module,
    quote_path,
)
from ansible_collections.gantry.fleet.plugins.module_utils._container_spec import (
    AGENT_STATES,
    SpecError,
    ansible_diff,
    build_spec,
    option_for_field,
)
from ansible_collections.gantry.fleet.plugins.module_utils._registry import RegistryProbe

# How long a converge that may pull an image waits for it, on top of the stop timeout.
PULL_TIMEOUT = 900


def argument_spec():
    return agent_argument_spec(
        name=dict(type="str", required=True),
        state=dict(
            type="str", default="started", choices=["started", "stopped", "present", "absent"]
        ),
        recreate=dict(type="bool", default=False),
        restart=dict(type="bool", default=False),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=120),
        image=dict(type="str"),
        rootfs=dict(type="path"),
        entrypoint=dict(type="raw"),
        command=dict(type="raw"),
        env=dict(type="dict"),
        user=dict(type="str"),
        workdir=dict(type="str", aliases=["working_dir"]),
        hostname=dict(type="str"),
        mounts=dict(
            type="list",
            elements="dict",
            options=dict(
                type=dict(type="str", choices=["bind", "tmpfs"], default="bind"),
                source=dict(type="str"),
                target=dict(type="str", required=True),
                read_only=dict(type="bool"),
                options=dict(type="list", elements="str"),
            ),
        ),
        volumes=dict(type="list", elements="str"),
        memory=dict(type="raw"),
        memory_swap=dict(type="raw"),
        cpus=dict(type="float"),
        cpu_shares=dict(type="int"),
        cpuset_cpus=dict(type="str"),
        pids_limit=dict(type="int"),
        blkio_weight=dict(type="int"),
        device_read_bps=device_rate_option("raw"),
        device_write_bps=device_rate_option("raw"),
        device_read_iops=device_rate_option("int"),
        device_write_iops=device_rate_option("int"),
        capabilities=dict(type="list", elements="str", aliases=["cap_add"]),
        cap_drop=dict(type="list", elements="str"),
        read_only=dict(type="bool"),
        privileged=dict(type="bool"),
        labels=dict(type="dict"),
        restart_policy=dict(type="str"),
        restart_retries=dict(type="int"),
        healthcheck=dict(
            type="dict",
            options=dict(
                test=dict(type="raw"),
                interval=dict(type="float"),
                timeout=dict(type="float"),
                retries=dict(type="int"),
                start_period=dict(type="float"),
            ),
        ),
        stop_signal=dict(type="str"),
        stop_timeout=dict(type="float"),
        init=dict(type="bool"),
        tty=dict(type="bool"),
        network_mode=dict(type="str"),
        networks=dict(
            type="list",
            elements="dict",
            options=dict(
                name=dict(type="str", required=True),
                aliases=dict(type="list", elements="str"),
                ipv4_address=dict(type="str"),
            ),
        ),
        published_ports=dict(type="list", elements="str", aliases=["ports"]),
        dns_servers=dict(type="list", elements="str"),
        dns_search_domains=dict(type="list", elements="str"),
        dns_opts=dict(type="list", elements="str", aliases=["dns_options"]),
        sysctls=dict(type="dict"),
        pull=dict(type="str", default="missing", choices=["missing", "always", "never"]),
    )


def device_rate_option(rate_type):
    """community.docker's shape of the block I/O limits: a list of {path, rate}."""
    return dict(
        type="list",
        elements="dict",
        options=dict(
            path=dict(type="str", required=True),
            rate=dict(type=rate_type, required=True),
        ),
    )


class ContainerModule:
    """One converge of one container: the agent decides, the module asks and reports."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = self.params["name"]
        self.path = "/v1/containers/%s" % quote_path(self.name)
        self.client = client_from_module(module)
        self.check_mode = module.check_mode

    def fail(self, error, **result):
        extra = dict(result)
        message = str(error)
        if isinstance(error, AgentError):
            if error.status is not None:
                extra["status"] = error.status
            if error.field:
                extra["field"] = error.field
                option = option_for_field(error.field)
                if option:
                    extra["option"] = option
                    message = "%s (option %s)" % (message, option)
        self.module.fail_json(msg=message, **extra)

    def slow_timeout(self, *inspects):
        """A request that may stop the container waits its stop timeout on top."""
        stop = [
            (inspect.get("spec") or {}).get("stop_timeout") or 10 for inspect in inspects if inspect
        ]
        wanted = self.params.get("stop_timeout")
        if wanted is not None:
            stop.append(wanted)
        return self.client.timeout + max(stop or [10])

    def inspect(self):
        return self.client.get_or_none(self.path)

    def run(self):
        state = self.params["state"]
        if state != "started" and self.params["restart"]:
            self.module.fail_json(
                msg="restart: only with state=started (state is %s)" % state, option="restart"
            )
        try:
            if state == "absent":
                return self.absent()
            try:
                spec = build_spec(self.params)
            except SpecError as error:
                self.module.fail_json(msg=str(error))
            if "image" not in spec and "rootfs" not in spec:
                self.module.fail_json(
                    msg="one of image or rootfs is needed for state=%s" % state,
                    option="image",
                )
            result = self.converge(state, spec)
            if self.params["wait"] and state == "started" and not self.check_mode:
                result["container"] = self.wait_healthy(result["container"])
            return result
        except AgentError as error:
            self.fail(error)
        return None  # not reached

    def wait_healthy(self, container):
        """Poll the container until it is healthy (or, without a healthcheck, running)."""
        deadline = time.monotonic() + self.params["wait_timeout"]
        while True:
            state = container.get("state") or {}
            has_check = (container.get("spec") or {}).get("healthcheck") is not None
            health = (state.get("health") or {}).get("status")
            if state.get("status") in ("stopped", "created") and not state.get("running"):
                exit_code = state.get("exit_code")
                if exit_code is None and state.get("status") == "stopped":
                    # The exit may not be recorded yet; the agent's wait answers once it is.
                    exit_code = self.client.post(
                        self.path + "/wait", body={"timeout": 10}, timeout=self.client.timeout + 10
                    ).body.get("exit_code")
                self.module.fail_json(
                    msg="container %s is %s (exit code %s) while waiting for it to be %s"
                    % (
                        self.name,
                        state.get("status"),
                        exit_code,
                        "healthy" if has_check else "running",
                    ),
                    container=container,
                )
            if not has_check and state.get("running"):
                return container
            if health == "healthy":
                return container
            if health == "unhealthy":
                log = (state.get("health") or {}).get("log") or []
                last = log[-1] if log else {}
                self.module.fail_json(
                    msg="container %s is unhealthy; last check exited %s: %s"
                    % (self.name, last.get("exit_code"), (last.get("output") or "").strip()),
                    container=container,
                )
            if time.monotonic() >= deadline:
                self.module.fail_json(
                    msg="container %s is still %s after wait_timeout (%s seconds)"
                    % (self.name, health or state.get("status"), self.params["wait_timeout"]),
                    container=container,
                )
            time.sleep(0.25)
            container = self.inspect() or {}

    def stop_gracefully(self, current):
        """Stop a running container with its stop signal and timeout before a forced removal
        (which, as docker rm -f, kills with SIGKILL), so its process can end cleanly."""
        status = (current.get("state") or {}).get("status")
        if status in ("running", "restarting"):
            # Gone or stopped meanwhile: the removal that follows settles it.
            with contextlib.suppress(AgentNotFound, AgentConflict):
                self.client.post(self.path + "/stop", body={}, timeout=self.slow_timeout(current))

    def absent(self):
        current = self.inspect()
        if current is None:
            return dict(changed=False, actions=[], container={}, diff=ansible_diff(self.name, None))
        plan = self.client.delete(self.path, query={"force": True, "dry_run": True}).body
        actions = list(plan.get("actions") or [])
        if self.check_mode:
            return dict(
                changed=bool(actions),
                actions=actions,
                container=current,
                diff=ansible_diff(self.name, plan.get("diff")),
            )
        self.stop_gracefully(current)
        try:
            answer = self.client.delete(
                self.path, query={"force": True}, timeout=self.slow_timeout(current)
            ).body
        except AgentNotFound:
            # Removed by someone else in between: what was asked holds.
            return dict(changed=False, actions=[], container={}, diff=ansible_diff(self.name, None))
        if "remove" not in actions:
            actions = list(answer.get("actions") or [])
        return dict(
            changed=True,
            actions=actions,
            container={},
            diff=ansible_diff(self.name, plan.get("diff")),
        )

    def put(self, agent_state, spec, dry_run, current):
        body = {"state": agent_state, "dry_run": dry_run, "spec": spec}
        if "image" in spec and self.params["pull"] != "missing":
            # Not part of the spec: how the agent gets the image (rootfs containers have none).
            # missing is the agent's default, so it is left out (an agent without images then
            # answers about spec.image, not about an unknown pull field).
            body["pull"] = self.params["pull"]
        if dry_run:
            return self.client.put(self.path, body=body).body
        # A converge may stop a container (its stop timeout), pull an image and start one: run
        # it as an operation and wait for it, so no single HTTP request stays open that long.
        response = self.client.put(self.path, body=body, query={"async": True})
        if response.status != 202:
            return response.body
        timeout = self.slow_timeout(current)
        if "image" in spec and self.params["pull"] != "never":
            timeout += PULL_TIMEOUT
        done = self.client.wait_operation(response.body, timeout=timeout)
        return done.get("result") or {}

    def converge(self, state, spec):
        agent_state = AGENT_STATES[state]
        current = None
        if self.params["recreate"] or self.params["restart"]:
            current = self.inspect()
        if self.params["recreate"] and current is not None:
            return self.forced_recreate(state, spec, current)

        answer = self.put(agent_state, spec, self.check_mode, current)
        if self.check_mode:
            answer = self.predict_pull(spec, agent_state, answer)
        actions = list(answer.get("actions") or [])
        container = answer.get("container") or {}
        if self.params["restart"] and not set(actions) & {"create", "recreate", "start"}:
            if not self.check_mode:
                container = self.client.post(
                    self.path + "/restart",
                    body={},
                    timeout=self.slow_timeout(container),
                ).body.get("container", container)
            actions.append("restart")
        return dict(
            changed=bool(actions),
            actions=actions,
            container=container,
            diff=ansible_diff(self.name, answer.get("diff")),
        )

    def predict_pull(self, spec, agent_state, answer):
        """Check mode with pull=always: will the pull move the tag (and so recreate)?

        The agent's dry run answers from its store, so for an image it holds it cannot tell
        whether the registry's tag names another image now. The module reads the tag's
        digest from the registry (one HEAD request, see _registry.py) and compares it with
        the image the agent holds under that name; when they differ, the real run pulls and
        creates the container anew from the pulled image. When the registry cannot be asked,
        the agent's answer stands.
        """
        actions = list(answer.get("actions") or [])
        if "image" not in spec or self.params["pull"] != "always" or "pull" in actions:
            return answer
        local = self.client.get_or_none("/v1/images/%s" % quote_path(spec["image"]))
        if not local:
            return answer
        remote = RegistryProbe(timeout=self.client.timeout).tag_digest(spec["image"])
        if remote is None or remote == local.get("digest"):
            return answer
        container = answer.get("container") or {}
        predicted = dict(answer)
        if "create" in actions:
            predicted["actions"] = ["pull", *actions]
        else:
            status = (container.get("state") or {}).get("status")
            runs = agent_state == "running" or (
                agent_state == "present" and status in ("running", "paused")
            )
            predicted["actions"] = ["pull", "recreate"] + (["start"] if runs else [])
        diff = dict(answer.get("diff") or {})
        fields = list(diff.get("fields") or [])
        if "spec.image_id" not in fields and "image_id" not in fields:
            fields.append("spec.image_id")
        diff["fields"] = fields
        if diff.get("before") is None and container:
            diff["before"] = {
                "state": (container.get("state") or {}).get("status"),
                "spec": container.get("spec"),
            }
        diff.setdefault("after", {"state": agent_state, "spec": None})
        predicted["diff"] = diff
        return predicted

    def forced_recreate(self, state, spec, current):
        """recreate=true: remove and create, whatever the agent thinks of the difference."""
        was_running = bool((current.get("state") or {}).get("running"))
        if state == "present":
            agent_state = "running" if was_running else "present"
        else:
            agent_state = AGENT_STATES[state]
        # The diff and the validation of the new spec come from the agent, as for any converge.
        plan = self.put(agent_state, spec, True, current)
        if self.check_mode:
            actions = ["recreate"] + (["start"] if agent_state == "running" else [])
            container = current
        else:
            self.stop_gracefully(current)
            self.client.delete(self.path, query={"force": True}, timeout=self.slow_timeout(current))
            answer = self.put(agent_state, spec, False, None)
            actions = [
                "recreate" if action == "create" else action
                for action in answer.get("actions") or []
            ]
            container = answer.get("container") or {}
        return dict(
            changed=True,
            actions=actions,
            container=container,
            diff=ansible_diff(self.name, plan.get("diff")),
        )


def module_spec():
    """The AnsibleModule arguments, shared with the controller-side action plugin."""
    return dict(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_by=AGENT_REQUIRED_BY,
        mutually_exclusive=[("image", "rootfs")],
    )


def run_module(module):
    result = ContainerModule(module).run()
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
