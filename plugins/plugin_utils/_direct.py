# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a Gantry module inside the controller's worker when the host *is* the controller.

A Gantry module does one thing on the managed host: it asks that host's agent over HTTP.
When the task's connection is ``local`` and no privilege change is asked for, the worker
process already is on that host as that user, so packing the module with AnsiballZ,
writing it to a temporary directory and starting a new Python for each loop item only
adds time (about a tenth of a second per item). The action plugin then validates the
arguments with the module's own argument spec (the same validator AnsibleModule uses),
runs the module's ``run_module`` against a small stand-in for AnsibleModule, and removes
``no_log`` values from the result exactly as a module would.

Every other case runs the module the usual way: another connection, ``become`` to another
user, ``async``, a task ``environment`` (the options' environment fallbacks must see it),
or the variable ``gantry_fleet_direct: false``.
"""

from __future__ import annotations

import importlib
import json
import os
import pwd

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.validation import check_type_bool
from ansible.plugins.action import ActionBase

try:  # ansible-core 2.19 and later
    from ansible.module_utils.common.json import Direction, get_module_encoder

    _ENCODER = get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE)
    _ENCODER_ARGS = {}
except ImportError:  # earlier: the encoder AnsiballZ used
    from ansible.module_utils.common.json import AnsibleJSONEncoder as _ENCODER

    _ENCODER_ARGS = {"vault_to_text": True}

_LOCAL_TRANSPORTS = frozenset(("local", "ansible.builtin.local", "ansible.legacy.local"))
_VALIDATOR_KEYS = (
    "mutually_exclusive",
    "required_together",
    "required_one_of",
    "required_if",
    "required_by",
)


class _Done(Exception):
    """exit_json or fail_json was called: the module's result."""

    def __init__(self, result):
        super().__init__("module finished")
        self.result = result


class ControllerModule(object):
    """What a Gantry module's ``run_module`` uses of AnsibleModule, nothing more."""

    def __init__(self, name, params, check_mode, diff):
        self._name = name
        self.params = params
        self.check_mode = check_mode
        self._diff = diff
        self._warnings = []

    def warn(self, warning):
        self._warnings.append(warning)

    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        raise _Done(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs["failed"] = True
        kwargs["msg"] = msg
        raise _Done(kwargs)


def _current_user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


class DirectAction(ActionBase):
    """The action plugin of a Gantry module (set ``MODULE`` to its short name)."""

    MODULE = None
    _VALID_ARGS = None  # the module's own spec decides

    def _direct_allowed(self, task_vars):
        wanted = task_vars.get("gantry_fleet_direct", True)
        try:
            if not check_type_bool(wanted):
                return False
        except TypeError:
            return False
        transport = getattr(self._connection, "transport", None)
        load_name = getattr(self._connection, "_load_name", None)
        if transport not in _LOCAL_TRANSPORTS and load_name not in _LOCAL_TRANSPORTS:
            return False
        if self._task.async_val:
            return False
        # A task or play `environment` (a list of mappings, or templates naming them).
        if any(self._task.environment or ()):
            return False
        if self._play_context.become:
            become_user = self._play_context.become_user or "root"
            if become_user != _current_user():
                return False
        return True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(DirectAction, self).run(tmp, task_vars)
        if not self._direct_allowed(task_vars):
            result.update(self._execute_module(task_vars=task_vars))
            return result
        result.update(self._run_direct())
        return result

    def _run_direct(self):
        module_code = importlib.import_module(
            "ansible_collections.gantry.fleet.plugins.modules.%s" % self.MODULE
        )
        spec = module_code.module_spec()
        check_mode = bool(self._task.check_mode if self._task.check_mode is not None else False)
        check_mode = check_mode or bool(getattr(self._play_context, "check_mode", False))
        diff = bool(self._task.diff if self._task.diff is not None else False)
        diff = diff or bool(getattr(self._play_context, "diff", False))
        name = "gantry.fleet.%s" % self.MODULE
        if check_mode and not spec.get("supports_check_mode", False):
            return dict(
                skipped=True,
                changed=False,
                msg="remote module (%s) does not support check mode" % name,
            )
        validator = ArgumentSpecValidator(
            spec["argument_spec"],
            **dict((key, spec[key]) for key in _VALIDATOR_KEYS if key in spec),
        )
        # What the module would read from its JSON arguments: plain values (no controller
        # tags, vaulted values decrypted), not the worker's own objects.
        args = json.loads(json.dumps(dict(self._task.args), cls=_ENCODER, **_ENCODER_ARGS))
        validation = validator.validate(args)
        no_log_values = validation._no_log_values
        if validation.error_messages:
            msg = validation.errors.msg
            if validation.errors.errors and type(validation.errors.errors[0]).__name__ == (
                "UnsupportedError"
            ):
                msg = "Unsupported parameters for (%s) module: %s" % (name, msg)
            return dict(failed=True, changed=False, msg=msg)
        params = validation.validated_parameters
        module = ControllerModule(name, params, check_mode, diff)
        try:
            module_code.run_module(module)
            outcome = dict(changed=False)
        except _Done as done:
            outcome = done.result
        warnings = [
            "Both option %s and its alias %s are set." % (item["option"], item["alias"])
            for item in validation._warnings
        ] + module._warnings
        outcome = remove_values(outcome, no_log_values)
        if warnings:
            outcome["warnings"] = warnings
        if validation._deprecations:
            outcome["deprecations"] = [
                dict(msg=item["msg"], version=item.get("version"))
                for item in validation._deprecations
            ]
        outcome["invocation"] = dict(module_args=remove_values(params, no_log_values))
        return outcome
