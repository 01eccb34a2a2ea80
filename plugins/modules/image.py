#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Gantry developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image
short_description: Pull, load, import, commit, tag, push, export and remove images on a Gantry agent
version_added: 0.2.0
description:
  - Makes the image store of the Gantry agent on a host hold (or not hold) the image O(name),
    got the way O(source) says, and optionally gives it further names (O(tag)), pushes them
    to a registry (O(push)) and exports it to an archive on the host (O(archive_path)).
  - The agent resolves and compares; the module asks it what is there (C(GET /v1/images/NAME))
    and acts only when something would change, so a second identical run reports no change.
  - Without O(force), an image that is already present is not fetched again, whatever
    O(source) says. With O(force), it is fetched again and the task reports a change only
    when the name then points to another image (a pull of an unchanged tag, or a load of the
    same archive, changes nothing).
  - Check mode changes nothing; it predicts from the agent's answers, from the registry (the
    digest its tag names, read with one C(HEAD) request from the managed host, for a forced
    pull and for O(push)), from the archive itself for O(source=load) and O(archive_path),
    and from the image's inspect for O(tag) and O(state=absent). What cannot be told (a
    registry that cannot be asked) is predicted as a change.
author:
  - Gantry developers (!UNKNOWN)
options:
  name:
    description:
      - The image reference, V(NAME[:TAG]) (V(busybox:1.36), V(localhost:5000/team/app:2));
        without a tag, V(latest). For O(state=absent) an image id (V(sha256:...), or a
        prefix of it) also works.
    type: str
    required: true
  state:
    description:
      - V(present) - the agent holds an image named O(name).
      - V(absent) - it does not. Only the name O(name) is removed; the image's content goes
        when no other name and no container uses it.
    type: str
    choices: [present, absent]
    default: present
  source:
    description:
      - Where the image comes from when it is missing (or with O(force)).
      - V(pull) - from its registry (C(POST /v1/images/pull)), with O(username)/O(password)
        or the agent's configured credentials.
      - V(load) - from the archive O(path) on the host, a C(docker save) archive or an OCI
        image layout in a tar (C(POST /v1/images/load)). The archive must name the image
        O(name) (an untagged OCI layout is given that name).
      - V(import) - a new single-layer image from the root file system tarball O(path) on the
        host (C(POST /v1/images/import)), named O(name).
      - V(commit) - a new image from the file system of the container O(container)
        (C(POST /v1/containers/NAME/commit)), named O(name).
      - V(local) - nothing is fetched; the task fails when the agent does not hold O(name).
        For tasks that only tag, push or export.
    type: str
    choices: [pull, load, import, commit, local]
    default: pull
  path:
    description:
      - With O(source=load) or O(source=import), the archive or tarball on the host (plain, or
        compressed with gzip, bzip2, xz or zstd).
    type: path
  container:
    description:
      - With O(source=commit), the name of the container whose file system becomes the image.
        It is paused while the agent copies its file system.
    type: str
  commit_message:
    description:
      - With O(source=commit), the commit message (kept in the image's history).
    type: str
  commit_author:
    description:
      - With O(source=commit), the author kept in the image.
    type: str
  platform:
    description:
      - With O(source=pull), the platform to pull from a multi-platform image, V(linux/amd64);
        default the host's.
    type: str
  force:
    description:
      - With O(state=present), fetch the image again even when the agent holds O(name)
        (pull, load, import or commit again), and write O(archive_path) again even when it
        holds the image already. The task reports a change only when something differs
        afterwards; an import or a commit always makes a new image (a new creation time).
      - With O(state=absent), remove the name even while containers use the image (their
        image stays until they are removed).
    type: bool
    default: false
  tag:
    description:
      - Further names for the image (C(POST /v1/images/tag)). A name that already points to
        the image is left alone; one that points to another image is moved.
    type: list
    elements: str
    default: []
  push:
    description:
      - Push the image to its registry (C(POST /v1/images/push)), each name of O(tag), or
        O(name) when O(tag) is empty.
      - A name whose registry tag already names the image's manifest is not pushed again (the
        module reads the tag's digest with one C(HEAD) request to the registry, anonymously or
        with O(username)/O(password)), so a second run changes nothing. When the registry
        cannot be asked, the image is pushed and the task reports a change.
    type: bool
    default: false
  username:
    description:
      - The registry user for O(source=pull) and O(push). Without it, the agent's own
        credentials for the registry (its C([registries]) settings) apply.
    type: str
  password:
    description:
      - The password or token of O(username). Never logged.
    type: str
  archive_path:
    description:
      - Export the image to this file on the host (C(POST /v1/images/save)), as O(archive_format).
      - When the file already holds exactly this image (under the name O(name)), it is left
        alone unless O(force); otherwise it is written anew (to a temporary file first, then
        renamed, so a failed export leaves the old file).
    type: path
  archive_format:
    description:
      - V(docker) - a C(docker save) archive (C(manifest.json), loadable by C(docker load)).
      - V(oci) - an OCI image layout in a tar.
    type: str
    choices: [docker, oci]
    default: docker
  wait_timeout:
    description:
      - Seconds a pull or a push may take in all (it runs as one of the agent's operations,
        waited for in requests no longer than O(timeout)).
    type: int
    default: 900
extends_documentation_fragment:
  - gantry.fleet.agent_options
  - gantry.fleet.attributes
  - gantry.fleet.attributes.actiongroup_gantry
attributes:
  check_mode:
    support: full
    details:
      - A forced pull and a push are predicted from the digest the registry's tag names; a
        load from the archive's own manifest; tags, exports and removals from the image's
        inspect. An import or a commit with O(force) always makes a new image, so it is
        predicted as a change.
  diff_mode:
    support: full
    details:
      - The image's id and names, the export and the registry state before and after;
        RV(diff.fields) names each that differs.
  idempotent:
    support: partial
    details:
      - Idempotent unless O(force) with O(source=import) or O(source=commit) (each makes a new
        image).
notes:
  - O(path) and O(archive_path) are files on the managed host, where the agent runs.
  - The registry is read (never written) from the managed host for the predictions above,
    over HTTPS, or plain HTTP for loopback registries as the agent does.
seealso:
  - module: gantry.fleet.image_info
  - module: gantry.fleet.container
"""

EXAMPLES = r"""
- name: Pull an image (once; a second run changes nothing)
  gantry.fleet.image:
    name: docker.io/library/busybox:1.36

- name: Pull again, to pick up a moved tag
  gantry.fleet.image:
    name: docker.io/library/busybox:1.36
    force: true

- name: From a private registry
  gantry.fleet.image:
    name: registry.example.com:5000/team/app:2.1
    username: deploy
    password: "{{ vault_registry_password }}"

- name: Load a docker-save archive copied to the host
  gantry.fleet.image:
    name: app:2.1
    source: load
    path: /srv/images/app-2.1.tar

- name: Import a root file system tarball as an image
  gantry.fleet.image:
    name: local/rootfs:1
    source: import
    path: /srv/rootfs.tar.gz

- name: Commit a container, name it for the registry and push it
  gantry.fleet.image:
    name: local/snapshot:1
    source: commit
    container: web
    commit_message: before the upgrade
    tag:
      - localhost:5000/snapshots/web:1
    push: true

- name: Export an image for another host
  gantry.fleet.image:
    name: app:2.1
    source: local
    archive_path: /srv/export/app-2.1.tar
    archive_format: oci

- name: Remove a name
  gantry.fleet.image:
    name: app:2.0
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What was done (or, in check mode, would be done), in order, from C(pull), C(load),
      C(import), C(commit), C(tag), C(push), C(save) and C(remove).
  returned: always
  type: list
  elements: str
  sample: [pull, tag]
image:
  description:
    - The image as the agent reports it afterwards (its inspect document - C(id), C(digest),
      C(tags), C(size), C(created), C(architecture), C(os), C(config), C(layers),
      C(containers)); in check mode, as it is now. Empty when it does not exist.
  returned: always
  type: dict
  sample:
    id: sha256:9a2b3c...
    digest: sha256:51de9f...
    tags: [docker.io/library/busybox:1.36]
    size: 4261550
    architecture: amd64
    os: linux
pushed:
  description: The names pushed, each with the digest of the manifest the registry now holds.
  returned: when O(push) pushed something
  type: list
  elements: dict
  sample: [{reference: "localhost:5000/snapshots/web:1", digest: "sha256:0f3e..."}]
removed:
  description: The agent's answer to a removal, C(untagged) names and C(deleted) image ids.
  returned: when O(state=absent) removed something
  type: dict
  sample: {untagged: ["app:2.0"], deleted: ["sha256:9a2b3c..."]}
diff:
  description: Before and after, as C(--diff) shows it.
  returned: always
  type: dict
  contains:
    before:
      description:
        - C(state), C(id) and C(tags) of the image, and, when asked for, C(archive) and
          C(registry).
      type: dict
      returned: always
    after:
      description: The same afterwards.
      type: dict
      returned: always
    fields:
      description: Each field that differs (C(state), C(id), C(tags), C(archive), C(registry.NAME)).
      type: list
      elements: str
      returned: always
      sample: [id, tags]
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gantry.fleet.plugins.module_utils._agent_client import (
    AGENT_REQUIRED_BY,
    AgentError,
    AgentNotFound,
    agent_argument_spec,
    client_from_module,
    fail_with,
    quote_path,
)
from ansible_collections.gantry.fleet.plugins.module_utils._image_archive import (
    archive_holds,
    archive_images,
)
from ansible_collections.gantry.fleet.plugins.module_utils._registry import RegistryProbe


def argument_spec():
    return agent_argument_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        source=dict(
            type="str", default="pull", choices=["pull", "load", "import", "commit", "local"]
        ),
        path=dict(type="path"),
        container=dict(type="str"),
        commit_message=dict(type="str"),
        commit_author=dict(type="str"),
        platform=dict(type="str"),
        force=dict(type="bool", default=False),
        tag=dict(type="list", elements="str", default=[]),
        push=dict(type="bool", default=False),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        archive_path=dict(type="path"),
        archive_format=dict(type="str", default="docker", choices=["docker", "oci"]),
        wait_timeout=dict(type="int", default=900),
    )


def describe(image):
    """The part of an image the diff shows."""
    if not image:
        return {"state": "absent"}
    return {"state": "present", "id": image.get("id"), "tags": sorted(image.get("tags") or [])}


class ImageModule:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = self.params["name"]
        self.client = client_from_module(module)
        self.check_mode = module.check_mode
        self.actions = []
        self.fields = []
        self.before = {}
        self.after = {}
        self.result = {}

    # -- agent requests ---------------------------------------------------------------------

    def inspect(self, reference):
        return self.client.get_or_none("/v1/images/%s" % quote_path(reference))

    def long_post(self, path, body):
        """A pull or push, run as the agent's operation and waited for; its sync answer."""
        response = self.client.post(path, body=body, query={"async": True})
        if response.status != 202:
            return response.body or {}
        done = self.client.wait_operation(response.body, timeout=self.params["wait_timeout"])
        return done.get("result") or {}

    def credentials(self):
        return {"username": self.params["username"], "password": self.params["password"]}

    def registry_digest(self, reference):
        """The digest of the manifest the registry's tag names now, or None (cannot tell)."""
        probe = RegistryProbe(
            self.params["username"], self.params["password"], timeout=self.client.timeout
        )
        return probe.tag_digest(reference)

    def registry_has(self, reference, image):
        """Whether the registry's tag already names this image's manifest (asked read-only;
        the agent's own dry-run pull answers from its store, not from the registry)."""
        digest = self.registry_digest(reference)
        return digest is not None and digest == image.get("digest")

    # -- present ------------------------------------------------------------------------------

    def present(self):
        current = self.inspect(self.name)
        self.before.update(describe(current))
        image = self.acquire(current)
        known = image is not None
        if image is None:
            # Check mode, and the image would be fetched: later steps cannot know its id.
            image = {}
        self.tags(image, known)
        if known and not self.check_mode and "tag" in self.actions:
            image = self.inspect(self.name) or image
        self.export(image, known)
        self.push_names(image, known)
        if known:
            after = describe(image)
            if self.check_mode and "tag" in self.actions:
                after["tags"] = sorted(set(after["tags"]) | set(self.params["tag"]))
        else:
            # Check mode, and the image would be fetched: its id is known only afterwards.
            after = {
                "state": "present",
                "id": "(new)",
                "tags": sorted({self.name, *self.params["tag"]}),
            }
        self.after.update(after)
        for field in ("state", "id", "tags"):
            if self.before.get(field) != self.after.get(field):
                self.fields.append(field)
        self.result["image"] = image if known else (current or {})
        return self.finish()

    def acquire(self, current):
        """The image named ``name`` after fetching it as ``source`` says (None: check mode)."""
        source = self.params["source"]
        if current is not None and not self.params["force"]:
            return current
        if source == "local":
            if current is None:
                self.module.fail_json(
                    msg="no such image: %s (source=local fetches nothing; use source pull, load, "
                    "import or commit)" % self.name,
                    field="name",
                )
            return current
        method = getattr(self, "acquire_" + source)
        return method(current)

    def acquire_pull(self, current):
        body = dict(
            reference=self.name,
            platform=self.params["platform"],
            dry_run=self.check_mode,
            **self.credentials(),
        )
        if self.check_mode:
            if current is None:
                self.actions.append("pull")
                return None
            # With force and the name here: a pull changes something only when the
            # registry's tag names another manifest now. When that cannot be told, the pull
            # is predicted (check mode never claims "no change" it cannot know).
            self.client.post("/v1/images/pull", body=body)  # the agent's checks of the name
            digest = self.registry_digest(self.name)
            if digest is not None and digest == current.get("digest"):
                return current
            self.actions.append("pull")
            return None
        answer = self.long_post("/v1/images/pull", body)
        image = answer.get("image") or self.inspect(self.name)
        if current is None or answer.get("changed") or image.get("id") != current.get("id"):
            self.actions.append("pull")
        return image

    def named_after(self, what, current, answer_images):
        """The image ``name`` names after a load/import/commit; fail if the name is missing."""
        image = self.inspect(self.name)
        if image is None:
            held = sorted(set(tag for item in answer_images for tag in item.get("tags") or []))
            self.module.fail_json(
                msg="%s: %s brought no image named %s (it holds: %s)"
                % (
                    what,
                    self.params.get("path") or self.params.get("container"),
                    self.name,
                    ", ".join(held) or "untagged images only",
                ),
                field="name",
            )
        if current is None or image.get("id") != current.get("id"):
            self.actions.append(self.params["source"])
        return image

    def open_path(self):
        path = self.params["path"]
        try:
            return open(path, "rb")
        except OSError as error:
            self.module.fail_json(
                msg="path: cannot read %s: %s" % (path, error.strerror), field="path"
            )
        return None  # not reached

    def acquire_load(self, current):
        if self.check_mode:
            handle = self.open_path()
            handle.close()
            if current is None:
                self.actions.append("load")
                return None
            images = archive_images(self.params["path"])
            if images is not None and archive_holds(
                self.params["path"], current.get("id"), self.name
            ):
                return current
            self.actions.append("load")
            return None
        with self.open_path() as handle:
            answer = (
                self.client.post(
                    "/v1/images/load",
                    query={"reference": self.name},
                    upload=handle,
                    content_type="application/x-tar",
                    timeout=self.params["wait_timeout"],
                ).body
                or {}
            )
        return self.named_after("load", current, answer.get("images") or [])

    def acquire_import(self, current):
        if self.check_mode:
            self.open_path().close()
            self.actions.append("import")
            return None
        with self.open_path() as handle:
            answer = (
                self.client.post(
                    "/v1/images/import",
                    query={"reference": self.name},
                    upload=handle,
                    content_type="application/x-tar",
                    timeout=self.params["wait_timeout"],
                ).body
                or {}
            )
        return self.named_after("import", current, [answer.get("image") or {}])

    def acquire_commit(self, current):
        container = self.params["container"]
        if self.check_mode:
            # The commit would fail the same way when the container is missing.
            self.client.get("/v1/containers/%s" % quote_path(container))
            self.actions.append("commit")
            return None
        answer = (
            self.client.post(
                "/v1/containers/%s/commit" % quote_path(container),
                body={
                    "reference": self.name,
                    "message": self.params["commit_message"],
                    "author": self.params["commit_author"],
                    "pause": True,
                },
                timeout=self.params["wait_timeout"],
            ).body
            or {}
        )
        return self.named_after("commit", current, [answer.get("image") or {}])

    def tags(self, image, known):
        image_id = image.get("id")
        for target in self.params["tag"]:
            if known:
                # A name the agent cannot even parse is "not there"; the tag request that
                # follows fails with the agent's message about it.
                answer = self.client.request(
                    "GET", "/v1/images/%s" % quote_path(target), ok=(400, 404, 422)
                )
                held = answer.body if answer.status == 200 else None
                if held is not None and held.get("id") == image_id:
                    continue
            if "tag" not in self.actions:
                self.actions.append("tag")
            if self.check_mode:
                continue
            self.client.post("/v1/images/tag", body={"source": self.name, "target": target})

    def export(self, image, known):
        path = self.params["archive_path"]
        if not path:
            return
        image_id = image.get("id")
        held = archive_images(path) if os.path.exists(path) else None
        held_id = held[0].id if held and len(held) == 1 else None
        self.before["archive"] = {"path": path, "id": held_id}
        up_to_date = (
            known
            and not self.params["force"]
            and held_id == image_id
            and archive_holds(path, image_id, self.name)
        )
        self.after["archive"] = {"path": path, "id": image_id if known else "(new)"}
        if up_to_date:
            return
        self.actions.append("save")
        self.fields.append("archive")
        if self.check_mode:
            return
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            self.module.fail_json(
                msg="archive_path: directory %s does not exist" % directory,
                field="archive_path",
            )
        handle, temporary = tempfile.mkstemp(prefix=".gantry-save-", dir=directory)
        try:
            with os.fdopen(handle, "wb") as sink:
                self.client.post(
                    "/v1/images/save",
                    body={"references": [self.name], "format": self.params["archive_format"]},
                    sink=sink,
                    timeout=self.params["wait_timeout"],
                )
            os.chmod(temporary, 0o644)
            os.rename(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def push_names(self, image, known):
        if not self.params["push"]:
            return
        names = list(self.params["tag"]) or [self.name]
        before = {}
        after = {}
        pushed = []
        for reference in names:
            if known and self.registry_has(reference, image):
                before[reference] = after[reference] = "up to date"
                continue
            before[reference] = "differs"
            after[reference] = "pushed"
            self.fields.append("registry." + reference)
            if "push" not in self.actions:
                self.actions.append("push")
            if self.check_mode:
                continue
            answer = self.long_post(
                "/v1/images/push", dict(reference=reference, **self.credentials())
            )
            pushed.append(
                {"reference": answer.get("reference", reference), "digest": answer.get("digest")}
            )
        self.before["registry"] = before
        self.after["registry"] = after
        if pushed:
            self.result["pushed"] = pushed

    # -- absent -------------------------------------------------------------------------------

    def absent(self):
        current = self.inspect(self.name)
        self.before.update(describe(current))
        if current is None:
            self.after.update(describe(None))
            self.result["image"] = {}
            return self.finish()
        users = current.get("containers") or []
        if users and not self.params["force"] and self.check_mode:
            # What the agent answers (409) for a real run; check mode says it too.
            self.module.fail_json(
                msg="image %s is in use by containers: %s (force removes the name anyway)"
                % (self.name, ", ".join(users)),
                status=409,
                field="name",
            )
        self.actions.append("remove")
        if not self.check_mode:
            try:
                answer = (
                    self.client.delete(
                        "/v1/images/%s" % quote_path(self.name),
                        query={"force": self.params["force"]},
                    ).body
                    or {}
                )
            except AgentNotFound:
                # Removed by someone else in between: what was asked holds.
                self.actions = []
                answer = None
            if answer is not None:
                self.result["removed"] = {
                    "untagged": answer.get("untagged") or [],
                    "deleted": answer.get("deleted") or [],
                }
        left = self.inspect(self.name) if not self.check_mode else None
        self.after.update(describe(left) if left is not None else {"state": "absent"})
        for field in ("state", "id", "tags"):
            if self.before.get(field) != self.after.get(field):
                self.fields.append(field)
        self.result["image"] = {}
        return self.finish()

    # -- result -------------------------------------------------------------------------------

    def finish(self):
        fields = []
        for field in self.fields:
            if field not in fields:
                fields.append(field)
        self.result.update(
            changed=bool(self.actions),
            actions=self.actions,
            diff={
                "before": self.before,
                "after": self.after,
                "before_header": "image %s" % self.name,
                "after_header": "image %s (differs: %s)"
                % (self.name, ", ".join(fields) or "nothing"),
                "fields": fields,
            },
        )
        return self.result

    def run(self):
        try:
            if self.params["state"] == "absent":
                return self.absent()
            return self.present()
        except AgentError as error:
            fail_with(self.module, error, actions=self.actions)
        return None  # not reached


def module_spec():
    """The AnsibleModule arguments (kept apart from the run, as the other modules do)."""
    return dict(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[
            ("source", "load", ("path",)),
            ("source", "import", ("path",)),
            ("source", "commit", ("container",)),
        ],
        required_by=dict(AGENT_REQUIRED_BY, password=("username",)),
    )


def run_module(module):
    result = ImageModule(module).run()
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(**module_spec()))


if __name__ == "__main__":
    main()
