#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: container_exec
short_description: Run a command in a running container on a Gantry agent
version_added: 0.1.0
description:
  - Runs one command to completion inside a running container (C(POST
    /v1/containers/{name}/exec)) and returns its exit status, standard output and standard
    error, like C(docker exec) without a terminal.
  - The process joins the container's namespaces and cgroups and keeps its capabilities,
    C(no_new_privs) and seccomp profile; O(env) adds to the container's environment, and
    O(user) and O(chdir) default to the container's.
  - A non-zero exit status fails the task unless O(fail_on_rc=false).
  - Needs the agent's exec feature (C(features.exec) of M(gantry.fleet.agent_info)).
author:
  - Gantry developers (!UNKNOWN)
options:
  container:
    description:
      - The container (its name or id). It must be running.
    type: str
    required: true
  argv:
    description:
      - The command as a list of arguments, run as it is.
      - Exactly one of O(argv) and O(command) is needed.
    type: list
    elements: str
  command:
    description:
      - The command as a string, split into arguments the way a POSIX shell would (quotes
        group; no variables, pipes or globbing; use O(argv) with C(sh -c) for those).
    type: str
  chdir:
    description:
      - The absolute working directory of the command. Default the container's.
    type: str
  env:
    description:
      - Environment variables added to the container's for this command. Values must be
        strings.
    type: dict
  user:
    description:
      - The user to run as (V(uid), V(uid:gid), V(name) or V(name:group)). Default the
        container's.
    type: str
  stdin:
    description:
      - Text given to the command on its standard input. Without it, standard input is empty.
    type: str
  strip_empty_ends:
    description:
      - Strip empty lines from the end of RV(stdout) and RV(stderr).
    type: bool
    default: true
  exec_timeout:
    description:
      - Seconds the command may run; it is then killed and the task fails, reporting
        RV(timed_out).
    type: int
    default: 60
  fail_on_rc:
    description:
      - Fail the task when the command exits with a status other than 0.
    type: bool
    default: true
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
attributes:
  check_mode:
    support: none
    details:
      - The module cannot know what the command would change, so in check mode it is skipped.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - The command runs each time; use C(changed_when) to say when it changed something.
notes:
  - Like M(ansible.builtin.command), the module always reports a change; say when the command
    changed nothing with C(changed_when).
seealso:
  - module: gantry.fleet.container
"""

EXAMPLES = r"""
- name: Read a file in the container
  gantry.fleet.container_exec:
    container: web
    argv: [cat, /etc/hostname]
  register: hostname
  changed_when: false

- name: A shell pipeline, as another user, in a directory, with extra environment
  gantry.fleet.container_exec:
    container: web
    argv: [sh, -c, "ls -1 | wc -l"]
    chdir: /www
    user: nobody
    env:
      LC_ALL: C
  register: count
  changed_when: false

- name: Feed a command its standard input
  gantry.fleet.container_exec:
    container: worker
    command: sh -c 'cat > /tmp/job.json'
    stdin: "{{ job | to_json }}"

- name: Decide from the exit status yourself
  gantry.fleet.container_exec:
    container: web
    command: test -f /www/index.html
    fail_on_rc: false
  register: page
  changed_when: false
"""

RETURN = r"""
rc:
  description: The command's exit status (137 when it was killed at O(exec_timeout)).
  returned: success or when the command failed
  type: int
  sample: 0
stdout:
  description: Its standard output (invalid UTF-8 replaced).
  returned: success or when the command failed
  type: str
  sample: web
stderr:
  description: Its standard error.
  returned: success or when the command failed
  type: str
  sample: ""
stdout_lines:
  description: RV(stdout) split into lines.
  returned: success or when the command failed
  type: list
  elements: str
stderr_lines:
  description: RV(stderr) split into lines.
  returned: success or when the command failed
  type: list
  elements: str
timed_out:
  description: Whether the command was killed because it ran longer than O(exec_timeout).
  returned: success or when the command failed
  type: bool
  sample: false
truncated:
  description: Whether the agent cut an output stream at its limit (64 MiB).
  returned: success or when the command failed
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentError,
    agent_argument_spec,
    client_from_module,
    fail_with,
    quote_path,
)
from ansible_collections.gantry.fleet.plugins.module_utils._container_spec import (
    SpecError,
    argv,
    string_map,
)


def argument_spec():
    return agent_argument_spec(
        container=dict(type="str", required=True),
        argv=dict(type="list", elements="str"),
        command=dict(type="str"),
        chdir=dict(type="str"),
        env=dict(type="dict"),
        user=dict(type="str"),
        stdin=dict(type="str"),
        strip_empty_ends=dict(type="bool", default=True),
        exec_timeout=dict(type="int", default=60),
        fail_on_rc=dict(type="bool", default=True),
    )


def strip_end(text):
    return text.rstrip("\r\n") if text else ""


def module_spec():
    """The AnsibleModule arguments, shared with the controller-side action plugin."""
    return dict(
        argument_spec=argument_spec(),
        supports_check_mode=False,
        required_by=AGENT_REQUIRED_BY,
        mutually_exclusive=[("argv", "command")],
        required_one_of=[("argv", "command")],
    )


def run_module(module):
    params = module.params
    try:
        command = (
            params["argv"] if params["argv"] is not None else argv("command", params["command"])
        )
        env = string_map("env", params["env"])
    except SpecError as error:
        module.fail_json(msg=str(error))
        return
    if not command:
        module.fail_json(msg="command: names nothing to run")
    body = {"command": command, "timeout": params["exec_timeout"]}
    if env is not None:
        body["env"] = env
    if params["user"] is not None:
        body["user"] = params["user"]
    if params["chdir"] is not None:
        body["workdir"] = params["chdir"]
    if params["stdin"] is not None:
        body["stdin"] = params["stdin"]
    client = client_from_module(module)
    try:
        answer = client.post(
            "/v1/containers/%s/exec" % quote_path(params["container"]),
            body=body,
            timeout=client.timeout + params["exec_timeout"],
        ).body
    except AgentError as error:
        fail_with(module, error)
        return
    stdout = answer.get("stdout") or ""
    stderr = answer.get("stderr") or ""
    if params["strip_empty_ends"]:
        stdout, stderr = strip_end(stdout), strip_end(stderr)
    result = dict(
        changed=True,
        rc=answer.get("rc"),
        stdout=stdout,
        stderr=stderr,
        stdout_lines=stdout.splitlines(),
        stderr_lines=stderr.splitlines(),
        timed_out=bool(answer.get("timed_out")),
        truncated=bool(answer.get("truncated")),
    )
    if result["timed_out"]:
        module.fail_json(
            msg="command ran longer than exec_timeout (%s seconds) and was killed"
            % params["exec_timeout"],
            **result,
        )
    if params["fail_on_rc"] and result["rc"] != 0:
        module.fail_json(msg="command exited with status %s" % result["rc"], **result)
    # Ansible counts a non-zero rc as a failure unless the result says otherwise.
    module.exit_json(failed=False, **result)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
