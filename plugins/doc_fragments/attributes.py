# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# SPDX-License-Identifier: Apache-2.0

"""Attribute documentation shared by every gantry.fleet module.

A module extends ``gantry.fleet.attributes`` (the descriptions of check_mode, diff_mode and
idempotent) and adds the presets it needs: ``.actiongroup_gantry``, ``.facts``,
``.info_module``, ``.facts_module``, ``.idempotent_not_modify_state``.
"""

from __future__ import annotations


class ModuleDocFragment:
    # The descriptions; a module states its own support level for each.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description:
      - Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in C(check_mode)),
        when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second
        invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a
        relevant way.
"""

    # Membership of the gantry action group (meta/runtime.yml); use with the standard fragment.
    ACTIONGROUP_GANTRY = r"""
options: {}
attributes:
  action_group:
    description:
      - Use C(group/gantry.fleet.gantry) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - gantry.fleet.gantry
"""

    # Use with the standard fragment for modules that do not change the target.
    IDEMPOTENT_NOT_MODIFY_STATE = r"""
options: {}
attributes:
  idempotent:
    support: full
    details:
      - This action does not modify state.
"""

    # Use with the standard fragment for modules that only read.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
"""

    # The description of the facts attribute; a module states its support.
    FACTS = r"""
options: {}
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
"""

    # Use with the standard fragment and FACTS for modules that only read and return facts.
    FACTS_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state; check mode runs it in full and returns the same result.
  diff_mode:
    support: none
    details:
      - This action does not modify state; there is nothing to show a difference of.
  idempotent:
    support: full
    details:
      - This action does not modify state.
  facts:
    support: full
"""
