# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""gantry.fleet.network: run in the worker when the host is the controller (_direct.py)."""

from __future__ import annotations

from ansible_collections.gantry.fleet.plugins.plugin_utils._direct import DirectAction


class ActionModule(DirectAction):
    MODULE = "network"
