# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What an image archive on the host holds, read without unpacking it.

gantry.fleet.image uses it to decide, before touching the agent, whether an archive at
``archive_path`` already holds the image (so a second export changes nothing) and which
image a ``load`` would bring (so check mode predicts exactly). It reads the two layouts the
agent loads and saves:

- a docker-save archive: ``manifest.json`` lists each image's config file (``Config``) and
  names (``RepoTags``); the image id is the sha256 of the config file's bytes;
- an OCI image layout: ``index.json`` lists manifests (their names in the annotation
  ``org.opencontainers.image.ref.name``); each manifest's ``config.digest`` is the image id.

Compression is whatever Python's tarfile reads by itself (gzip, bzip2, xz). Anything else,
or an archive that is not one of these, gives ``None``: "cannot tell", never a guess.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import tarfile

OCI_REF_NAME = "org.opencontainers.image.ref.name"
# Manifests and index files are small; a bigger one is not what this reader expects.
MAX_JSON = 16 << 20


class ArchiveImage:
    """One image of an archive: its id (``sha256:...``) and the names the archive gives it."""

    def __init__(self, image_id, names):
        self.id = image_id
        self.names = list(names)

    def __repr__(self):
        return "ArchiveImage(%r, %r)" % (self.id, self.names)


def _member(tar, name):
    """The bytes of one regular file of the archive, or None."""
    for candidate in (name, "./" + name):
        try:
            info = tar.getmember(candidate)
        except KeyError:
            continue
        if not info.isfile() or info.size > MAX_JSON * 64:
            return None
        handle = tar.extractfile(info)
        return handle.read() if handle is not None else None
    return None


def _json(tar, name):
    data = _member(tar, name)
    if data is None or len(data) > MAX_JSON:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        return None


def _blob(tar, digest):
    algorithm, _sep, hexdigest = str(digest).partition(":")
    if not hexdigest or "/" in hexdigest or "/" in algorithm:
        return None
    return _json(tar, "blobs/%s/%s" % (algorithm, hexdigest))


def _docker_images(tar, manifest):
    images = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            return None
        config = entry["Config"]
        if config.startswith("blobs/sha256/"):
            # docker save since 25 points into an OCI layout: the file name is the digest.
            image_id = "sha256:" + config[len("blobs/sha256/") :]
        else:
            data = _member(tar, config)
            if data is None:
                return None
            image_id = "sha256:" + hashlib.sha256(data).hexdigest()
        images.append(ArchiveImage(image_id, entry.get("RepoTags") or []))
    return images


def _oci_images(tar, index):
    images = []
    for descriptor in index.get("manifests") or []:
        if not isinstance(descriptor, dict):
            return None
        manifest = _blob(tar, descriptor.get("digest"))
        if not isinstance(manifest, dict):
            return None
        if "manifests" in manifest:
            # An image index (several platforms) inside: this reader does not pick one.
            return None
        config = manifest.get("config") or {}
        if not isinstance(config, dict) or not config.get("digest"):
            return None
        name = (descriptor.get("annotations") or {}).get(OCI_REF_NAME)
        images.append(ArchiveImage(config["digest"], [name] if name else []))
    return images


def archive_images(path):
    """The images of the archive at ``path`` (a list of ArchiveImage), or None when unknown."""
    try:
        with tarfile.open(path, "r:*") as tar:
            manifest = _json(tar, "manifest.json")
            if isinstance(manifest, list):
                return _docker_images(tar, manifest)
            index = _json(tar, "index.json")
            if isinstance(index, dict):
                return _oci_images(tar, index)
    except (OSError, tarfile.TarError, EOFError, ValueError):
        return None
    return None


def archive_holds(path, image_id, name=None):
    """True when the archive holds exactly this one image (and, if given, names it so)."""
    images = archive_images(path)
    if not images or len(images) != 1 or images[0].id != image_id:
        return False
    if name is None or not images[0].names:
        return True
    return any(_same_name(name, held) for held in images[0].names)


def _same_name(wanted, held):
    """``busybox:1`` and ``docker.io/library/busybox:1`` are one name."""
    return _normal(wanted) == _normal(held)


def _normal(reference):
    reference = str(reference)
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        reference += ":latest"
    first, _sep, rest = reference.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        # No registry host: Docker Hub, and official images live under library/.
        path = reference if rest else "library/" + reference
        return "docker.io/" + path
    return reference
