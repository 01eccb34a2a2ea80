# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which manifest a registry's tag names, asked read-only from the managed host.

The agent pulls and pushes; it does not say, without pulling, whether a registry's tag
still names the manifest it holds (its dry-run pull answers from its own store). So that
``push`` changes nothing when the registry has the image already, and check mode predicts a
re-pull exactly, gantry.fleet.image and gantry.fleet.container ask the registry themselves:
one ``HEAD /v2/<repository>/manifests/<tag>`` (the distribution spec's way to read a tag's
digest without fetching anything), anonymous or with the task's credentials, following a
bearer-token challenge as registries such as Docker Hub send it.

Anything that keeps the answer from being certain (no such tag, refused credentials, TLS,
no answer) gives ``None``: "cannot tell". Callers then act, and report a change, instead of
guessing that nothing would change. Plain HTTP is used only for loopback registries, as the
agent does for them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import ipaddress
import json
import re
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import Request

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
DOCKER_HUB = "registry-1.docker.io"


def split_reference(reference):
    """(registry host, repository, tag) of a ``name[:tag]`` reference; None for a digest."""
    if "@" in reference:
        return None
    first, _sep, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, reference
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
    name, _sep, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    tag = tag or "latest"
    if host == DOCKER_HUB and "/" not in name:
        name = "library/" + name
    return host, name, tag


def is_loopback(host):
    """Whether ``host[:port]`` (``[v6]:port`` too) is a loopback address or localhost."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _challenge(header):
    """The parameters of a ``Bearer realm=...,service=...,scope=...`` challenge."""
    if not header or not header.lower().startswith("bearer "):
        return None
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


class RegistryProbe:
    """Reads tag digests; holds nothing between modules."""

    def __init__(self, username=None, password=None, timeout=30):
        self.username = username
        self.password = password
        self.request = Request(timeout=timeout, follow_redirects="all", use_proxy=True)

    def _basic(self):
        if self.username is None:
            return {}
        raw = ("%s:%s" % (self.username, self.password or "")).encode("utf-8")
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def _token(self, params):
        query = {"service": params.get("service", "")}
        if params.get("scope"):
            query["scope"] = params["scope"]
        url = params["realm"] + "?" + urlencode(query)
        response = self.request.open("GET", url, headers=self._basic())
        document = json.loads(response.read().decode("utf-8"))
        return document.get("token") or document.get("access_token")

    def tag_digest(self, reference):
        """The digest of the manifest the registry's tag names, or None when unknown."""
        parts = split_reference(reference)
        if parts is None:
            return None
        host, name, tag = parts
        scheme = "http" if is_loopback(host) else "https"
        url = "%s://%s/v2/%s/manifests/%s" % (scheme, host, name, tag)
        headers = {"Accept": MANIFEST_TYPES}
        headers.update(self._basic())
        try:
            try:
                response = self.request.open("HEAD", url, headers=headers)
            except HTTPError as error:
                params = (
                    _challenge(error.headers.get("WWW-Authenticate")) if error.code == 401 else None
                )
                if not params or not params.get("realm"):
                    return None
                token = self._token(params)
                if not token:
                    return None
                headers["Authorization"] = "Bearer " + token
                response = self.request.open("HEAD", url, headers=headers)
            digest = response.headers.get("Docker-Content-Digest")
        except (HTTPError, URLError, OSError, ValueError):
            return None
        return digest if digest and digest.startswith("sha256:") else None
