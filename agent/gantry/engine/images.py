"""Images in the engine: containers from images, and the image verbs of the API.

The image store (:class:`gantry.images.service.ImageService`) lives at ``<root>/images``.
A container whose spec names an ``image`` gets:

- at normalise time, the image resolved to its id and the image's config merged into the
  spec the way Docker merges them (:func:`resolver`): the stored spec is the *effective*
  one, so ``inspect`` shows what runs, and a PUT whose merged spec is equal is no change;
- at create, an overlay snapshot as its rootfs (``images/containers/<id>/rootfs``, with an
  init layer for hosts, hostname and resolv.conf), prepared before the container's row
  is committed and discarded when the create fails;
- at every start, the snapshot mounted again if it is not (agent restart, host reboot);
- at remove, the snapshot unmounted and deleted after the row is gone; a crash between
  the two leaves a snapshot without a row, which :func:`recover` removes at start-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from gantry.engine import spec as specs
from gantry.engine.errors import Conflict, EngineError, Invalid, NotFound
from gantry.engine.spec import ContainerSpecInput
from gantry.images import reference as refs
from gantry.images.errors import ImageError, RegistryError
from gantry.images.errors import NotFound as ImageNotFound
from gantry.images.imageconfig import ContainerSettings, merge
from gantry.images.registry import Credentials, RegistryClient, RegistryOptions
from gantry.images.service import ImageService
from gantry.images.store import ImageRecord
from gantry.runtime import supervisor, users

if TYPE_CHECKING:
    from gantry.engine.core import Engine
    from gantry.engine.store import ContainerRow

__all__ = [
    "PULL_POLICIES",
    "RegistrySettingsError",
    "image_json",
    "registry_options",
    "resolver",
]

_log = logging.getLogger(__name__)

PULL_POLICIES: Final = ("missing", "always", "never")
_CHUNK: Final = 1 << 20


class RegistrySettingsError(ValueError):
    """The ``[registries]`` settings are wrong; the message names the key."""


# --- settings ------------------------------------------------------------------------------


def registry_options(table: Mapping[str, Any] | None) -> RegistryOptions:
    """:class:`RegistryOptions` from the agent config's ``[registries]`` table:
    ``insecure = ["host:port"]``, ``ca_files = {"host:port" = "/ca.pem"}``,
    ``credentials = {"host:port" = {username = "...", password = "..."}}``."""
    data = dict(table or {})
    known = ("insecure", "ca_files", "credentials")
    for key in data:
        if key not in known:
            raise RegistrySettingsError(
                f"registries.{key}: unknown key (known: {', '.join(known)})"
            )
    insecure = data.get("insecure", [])
    if not isinstance(insecure, list) or not all(isinstance(h, str) and h for h in insecure):
        raise RegistrySettingsError("registries.insecure: must be a list of host[:port] strings")
    ca_files = data.get("ca_files", {})
    if not isinstance(ca_files, Mapping):
        raise RegistrySettingsError("registries.ca_files: must be a table of host = path")
    cas: dict[str, Path] = {}
    for host, path in ca_files.items():
        if not isinstance(path, str) or not path:
            raise RegistrySettingsError(f"registries.ca_files.{host}: must be a file path")
        if not Path(path).is_file():
            raise RegistrySettingsError(f"registries.ca_files.{host}: {path} is not a file")
        cas[str(host)] = Path(path)
    credentials = data.get("credentials", {})
    if not isinstance(credentials, Mapping):
        raise RegistrySettingsError(
            "registries.credentials: must be a table of host = {username, password}"
        )
    creds: dict[str, Credentials] = {}
    for host, value in credentials.items():
        where = f"registries.credentials.{host}"
        if not isinstance(value, Mapping) or set(value) != {"username", "password"}:
            raise RegistrySettingsError(f"{where}: must be {{username = ..., password = ...}}")
        if not all(isinstance(value[k], str) for k in ("username", "password")):
            raise RegistrySettingsError(f"{where}: username and password must be strings")
        creds[str(host)] = Credentials(value["username"], value["password"])
    return RegistryOptions(insecure=frozenset(insecure), credentials=creds, ca_files=cas)


# --- errors --------------------------------------------------------------------------------


def engine_error(exc: ImageError, field: str | None) -> EngineError:
    """The engine's error for an images-package error about ``field``."""
    text = str(exc)
    if isinstance(exc, ImageNotFound):
        return NotFound(text, field)
    if isinstance(exc, RegistryError):
        return Conflict(f"registry: {text}", field)
    return Invalid(text if field is None or text.startswith(field) else f"{field}: {text}", field)


@contextlib.contextmanager
def _field(field: str | None) -> Iterator[None]:
    try:
        yield
    except ImageError as exc:
        raise engine_error(exc, field) from None


# --- the container spec --------------------------------------------------------------------


def _layer_file(service: ImageService, record: ImageRecord, path: str) -> str | None:
    """The text of ``path`` (relative) as the image's merged layers show it."""
    parts = path.split("/")
    for layer in service.snapshots.lowers(record):
        for depth in range(1, len(parts)):  # a whiteout or opaque parent hides the file
            parent = layer.joinpath(*parts[:depth])
            whiteout = layer.joinpath(*parts[: depth - 1], parts[depth - 1])
            with contextlib.suppress(OSError):
                info = os.lstat(whiteout)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                    return None
            with contextlib.suppress(OSError):
                if os.getxattr(parent, "trusted.overlay.opaque") == b"y":
                    target = layer.joinpath(*parts)
                    if not target.exists():
                        return None
        target = layer.joinpath(*parts)
        try:
            info = os.lstat(target)
        except OSError:
            continue
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_size > 16 << 20:
            return None
        return target.read_text(encoding="utf-8", errors="replace")
    return None


def _resolve_user(service: ImageService, record: ImageRecord, user: str, field: str) -> str:
    name, _sep, group = user.partition(":")
    if name.isdigit() and group.isdigit():
        return f"{int(name)}:{int(group)}"
    passwd = users.parse_passwd(_layer_file(service, record, "etc/passwd") or "")
    groups = users.parse_group(_layer_file(service, record, "etc/group") or "")
    try:
        resolved = users.resolve_user(user, passwd=passwd, groups=groups)
    except users.UserLookupError as exc:
        raise Invalid(f"{field}: {exc} (in the image's /etc/passwd)", field) from None
    return f"{resolved.uid}:{resolved.gid}"


_MERGE_FIELDS: Final = {
    "cmd": "command",
    "entrypoint": "entrypoint",
    "env": "env",
    "working_dir": "workdir",
    "user": "user",
    "volumes": "mounts",
}


def merge_spec(
    service: ImageService, record: ImageRecord, spec: ContainerSpecInput, prefix: str = "spec"
) -> ContainerSpecInput:
    """``spec`` with the image's config merged in as Docker does: the entrypoint,
    command, env, workdir, user, stop signal and labels the container will run with."""
    config = service.config(record).get("config") or {}
    settings = ContainerSettings(
        entrypoint=spec.entrypoint,
        cmd=spec.command,
        env=spec.env,
        working_dir=spec.workdir,
        user=spec.user,
        labels=spec.labels,
        stop_signal=spec.stop_signal,
    )
    try:
        merged = merge(config, settings)
    except ImageError as exc:
        key = str(exc).partition(":")[0]
        field = f"{prefix}.{_MERGE_FIELDS.get(key, 'image')}"
        raise Invalid(f"{field}: {exc}", field) from None
    return spec.model_copy(
        update={
            "entrypoint": list(merged.entrypoint),
            "command": list(merged.cmd),
            "env": dict(sorted(item.partition("=")[::2] for item in merged.env)),
            "workdir": merged.working_dir,
            "user": _resolve_user(service, record, merged.user, f"{prefix}.user"),
            "labels": dict(sorted(merged.labels.items())),
            "stop_signal": specs.signal_name(merged.stop_signal, f"{prefix}.stop_signal"),
        }
    )


def resolver(service: ImageService) -> specs.ImageResolver:
    """The ``image_resolver`` of :func:`gantry.engine.spec.normalise`: the spec with the
    image's config merged in, and the image's id."""

    def resolve(
        image: str, spec: ContainerSpecInput, prefix: str
    ) -> tuple[ContainerSpecInput, str]:
        record = find(service, image, f"{prefix}.image", invalid=True)
        with _field(f"{prefix}.image"):  # a layer that cannot be read, say
            return merge_spec(service, record, spec, prefix), record.id

    return resolve


def find(service: ImageService, key: str, field: str, *, invalid: bool = False) -> ImageRecord:
    """The image ``key`` names; 404 (or 422 when ``invalid``) naming ``field`` if none."""
    try:
        return service.resolve(key)
    except ImageNotFound:
        if invalid:
            raise Invalid(f"{field}: no such image: {key}", field) from None
        raise NotFound(f"no such image: {key}", field) from None
    except ImageError as exc:
        raise Invalid(f"{field}: {exc}", field) from None


def is_local(service: ImageService, key: str) -> bool:
    try:
        service.resolve(key)
    except ImageError:
        return False
    return True


def pull_for_apply(engine: Engine, raw_spec: Any, policy: Any, *, dry_run: bool) -> str | None:
    """Pull the spec's image as ``policy`` says before a PUT. Answers ``"pull"`` when the
    store's image for the reference changed (or would, for a dry run), ``"pending"`` when a
    dry run cannot know the image's config because it is not here, else None."""
    if policy not in PULL_POLICIES:
        raise Invalid(f"pull: must be one of {', '.join(PULL_POLICIES)}, got {policy!r}", "pull")
    if isinstance(raw_spec, ContainerSpecInput):
        image: Any = raw_spec.image
    elif isinstance(raw_spec, Mapping):
        image = raw_spec.get("image")
    else:
        return None
    if not isinstance(image, str) or not image:
        return None
    local = is_local(engine.images, image)
    if policy == "never" or (policy == "missing" and local):
        if not local:
            raise Invalid(
                f"spec.image: no such image: {image} (pull is never: pull or load it first)",
                "spec.image",
            )
        return None
    if image.startswith("sha256:") or (not local and _is_id_prefix(image)):
        if local:
            return None
        raise Invalid(f"spec.image: no such image: {image} (an id cannot be pulled)", "spec.image")
    if dry_run:
        return None if local else "pending"
    changed, _record = pull(engine, image, field="spec.image")
    return "pull" if changed else None


def _is_id_prefix(text: str) -> bool:
    return len(text) >= 12 and all(c in "0123456789abcdef" for c in text)


def dry_run_pending(
    engine: Engine, name: str, state: str, row: ContainerRow | None, status: str | None
) -> dict[str, Any]:
    """A dry run's answer when the image must be pulled first: its config is unknown, so
    the container would be created (or recreated) from whatever the pull brings."""
    actions = ["pull", "create" if row is None else "recreate"]
    if state == "running" or (state == "present" and status in ("running", "paused")):
        actions.append("start")
    return {
        "changed": True,
        "actions": actions,
        "diff": {
            "before": None if row is None else {"state": status, "spec": row.spec},
            "after": {"state": "running" if "start" in actions else "created", "spec": None},
            "fields": ["image_id"],
        },
        "container": None if row is None else engine.inspect(row.id),
    }


# --- snapshots -----------------------------------------------------------------------------


def rootfs_of(engine: Engine, spec: Mapping[str, Any], container_id: str) -> str:
    """The container's root directory: its snapshot's mount point for an image."""
    if spec.get("image") is None:
        return str(spec["rootfs"])
    return str(engine.images.snapshots.snapshot(container_id).rootfs)


def with_rootfs(engine: Engine, spec: Mapping[str, Any], container_id: str) -> dict[str, Any]:
    """``spec`` with its rootfs filled in (for the bundle's config.json)."""
    return {**spec, "rootfs": rootfs_of(engine, spec, container_id)}


def _resolv_conf(network_mode: str) -> str:
    """The host's resolv.conf; for a private network without its loopback name servers
    (they do not answer inside the container), as Docker does."""
    try:
        text = Path("/etc/resolv.conf").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    if network_mode == "host":
        return text
    lines = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    continue
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def prepare_snapshot(engine: Engine, container_id: str, spec: Mapping[str, Any]) -> None:
    """Create and mount an image container's rootfs (no-op for a rootfs container, and
    for a snapshot mounted already)."""
    if spec.get("image") is None:
        return
    record = find(engine.images, spec["image_id"], "spec.image", invalid=True)
    network = spec.get("network") or {}
    mode = network.get("mode", "none") if isinstance(network, Mapping) else "none"
    with _field("spec.image"):
        engine.images.prepare_rootfs(
            container_id,
            record,
            hostname=spec["hostname"],
            resolv_conf=_resolv_conf(mode),
        )


def ensure_mounted(engine: Engine, row: ContainerRow) -> None:
    """Mount an image container's rootfs again (after a host reboot, or it was unmounted)."""
    if row.spec.get("image") is not None and not engine.images.snapshots.is_mounted(row.id):
        prepare_snapshot(engine, row.id, row.spec)


def discard_snapshot(engine: Engine, container_id: str) -> None:
    """Unmount and delete a snapshot; a missing one is fine."""
    try:
        engine.images.remove_rootfs(container_id)
    except (ImageError, OSError) as exc:
        _log.warning("container %s: removing its rootfs snapshot: %s", container_id, exc)


def recover(engine: Engine, live: Iterable[str]) -> None:
    """Remove snapshots no container owns (a create or remove that crashed half-way), the
    image store's staging directory, and blobs no image uses (a crashed pull or commit)."""
    owned = set(live)
    snapshots_dir = engine.images.snapshots.containers
    if snapshots_dir.is_dir():
        for entry in list(snapshots_dir.iterdir()):
            if entry.name not in owned:
                _log.info("removing the rootfs snapshot %s: no container owns it", entry)
                discard_snapshot(engine, entry.name)
                shutil.rmtree(entry, ignore_errors=True)
    tmp = engine.images.store.root / "tmp"
    for entry in list(tmp.iterdir()) if tmp.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    # Blobs and layers no image record names (a pull or commit that crashed before it
    # registered its manifest), and partial downloads: no operation runs yet, so they are
    # debris. Every image, tagged or not, is a root: nothing a user can see goes.
    try:
        roots = [record.manifest for record in engine.images.store.images()]
        result = engine.images.gc(roots)
    except (ImageError, OSError) as exc:
        _log.warning("cleaning the image store: %s", exc)
        return
    if result.blobs or result.layers:
        _log.info(
            "removed %d blobs and %d layers no image uses", len(result.blobs), len(result.layers)
        )


def images_in_use(engine: Engine) -> dict[str, list[str]]:
    """Image id → names of the containers made from it."""
    used: dict[str, list[str]] = {}
    for row in engine.store.containers():
        image_id = row.spec.get("image_id")
        if image_id:
            used.setdefault(image_id, []).append(row.name)
    return used


# --- image objects -------------------------------------------------------------------------


def _familiar(name: str) -> str:
    try:
        return refs.parse(name, "name").familiar
    except ImageError:
        return name


def image_json(
    engine: Engine,
    record: ImageRecord,
    *,
    detail: bool = False,
    store_refs: Mapping[str, str] | None = None,
    used: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The API's image object (docs/api.md, "Images")."""
    service = engine.images
    names = store_refs if store_refs is not None else service.store.refs()
    config = service.config(record)
    size = sum(layer.size for layer in record.layers)
    if service.store.has_blob(record.config):
        size += service.store.blob_size(record.config)
    os_name, _sep, arch = record.platform.partition("/")
    out: dict[str, Any] = {
        "id": record.id,
        "digest": record.manifest,
        "tags": sorted(_familiar(n) for n, m in names.items() if m == record.manifest),
        "size": size,
        "created": record.created or config.get("created"),
        "architecture": config.get("architecture") or arch.partition("/")[0] or None,
        "os": config.get("os") or os_name or None,
    }
    if detail:
        keys = (
            "Entrypoint",
            "Cmd",
            "Env",
            "WorkingDir",
            "User",
            "ExposedPorts",
            "Volumes",
            "Labels",
            "StopSignal",
        )
        image_config = config.get("config") or {}
        out["config"] = {key: image_config.get(key) for key in keys}
        out["layers"] = [
            {"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size}
            for layer in record.layers
        ]
        in_use = used if used is not None else images_in_use(engine)
        out["containers"] = sorted(in_use.get(record.id, []))
    return out


# --- the image verbs -----------------------------------------------------------------------


def list_images(
    engine: Engine, references: list[str] | None = None, dangling: bool | None = None
) -> list[dict[str, Any]]:
    service = engine.images
    store_refs = service.store.refs()
    wanted: list[tuple[str, str]] = []  # (tagged, id prefix)
    for index, text in enumerate(references or []):
        field = f"query.reference[{index}]"
        if not isinstance(text, str) or not text:
            raise Invalid(f"{field}: must not be empty", field)
        tagged = ""
        with contextlib.suppress(ImageError):
            tagged = refs.parse(text, field).tagged
        wanted.append((tagged, text.removeprefix("sha256:")))
    out = []
    for record in service.store.images():
        tags = [n for n, m in store_refs.items() if m == record.manifest]
        if dangling is not None and dangling != (not tags):
            continue
        if wanted and not any(
            (tagged and tagged in tags)
            or (len(prefix) >= 4 and record.id.removeprefix("sha256:").startswith(prefix))
            for tagged, prefix in wanted
        ):
            continue
        out.append(image_json(engine, record, store_refs=store_refs))
    return sorted(out, key=lambda image: (image["created"] or "", image["id"]), reverse=True)


def inspect_image(engine: Engine, ref: str) -> dict[str, Any]:
    record = find(engine.images, ref, "ref")
    return image_json(engine, record, detail=True)


def _platform(text: str | None) -> tuple[str, str, str] | None:
    if text is None:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise Invalid(f"platform: want os/arch[/variant], got {text!r}", "platform")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _client(engine: Engine, ref: refs.Reference, username: str | None, password: str | None) -> Any:
    if username is None and password is None:
        return engine.images.registry
    if not username or password is None:
        field = "username" if not username else "password"
        raise Invalid(f"{field}: username and password go together", field)
    options = engine.images.registry.options
    credentials = {**options.credentials, ref.registry: Credentials(username, password)}
    return RegistryClient(
        engine.images.store, dataclasses.replace(options, credentials=credentials)
    )


def pull(
    engine: Engine,
    reference: str,
    *,
    platform: str | None = None,
    username: str | None = None,
    password: str | None = None,
    field: str = "reference",
) -> tuple[bool, ImageRecord]:
    """Pull ``reference``; ``changed`` is False when the tag already named that manifest."""
    with _field(field):
        ref = refs.parse(reference, field)
    wanted = _platform(platform)
    client = _client(engine, ref, username, password)
    before = engine.images.store.refs().get(ref.tagged)
    with _field(field):
        record = client.pull(ref, platform=wanted)
    after = engine.images.store.refs().get(ref.tagged) if not ref.digest else record.manifest
    changed = before != after or (ref.digest is not None and before is None and after is None)
    engine.events.emit("pull", str(ref), record.id)
    return changed, record


def pull_json(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    reference = body["reference"]
    if body.get("dry_run"):
        with _field("reference"):
            refs.parse(reference, "reference")
        local = is_local(engine.images, reference)
        record = find(engine.images, reference, "reference") if local else None
        return {
            "changed": not local,
            "image": None if record is None else image_json(engine, record, detail=True),
        }
    changed, record = pull(
        engine,
        reference,
        platform=body.get("platform"),
        username=body.get("username"),
        password=body.get("password"),
    )
    return {"changed": changed, "image": image_json(engine, record, detail=True)}


def push(
    engine: Engine, reference: str, username: str | None = None, password: str | None = None
) -> dict[str, Any]:
    with _field("reference"):
        ref = refs.parse(reference, "reference")
    record = find(engine.images, reference, "reference")
    client = _client(engine, ref, username, password)
    with _field("reference"):
        digest = client.push(ref, record)
    engine.events.emit("push", str(ref), record.id)
    return {"reference": str(ref), "digest": digest}


def load(engine: Engine, path: Path, reference: str | None) -> dict[str, Any]:
    if reference is not None:
        with _field("query.reference"):
            refs.parse(reference, "query.reference")
    with _field("body"):
        imported = engine.images.load(path, name=reference)
    records = {item.image.manifest: item.image for item in imported}
    for record in records.values():
        engine.events.emit("load", record.id, record.id)
    return {"changed": True, "images": [image_json(engine, r) for r in records.values()]}


def import_rootfs(engine: Engine, path: Path, reference: str) -> dict[str, Any]:
    with _field("query.reference"):
        refs.parse(reference, "query.reference")
    with _field("body"):
        record = engine.images.import_rootfs(path, name=reference)
    engine.events.emit("import", reference, record.id)
    return {"changed": True, "image": image_json(engine, record)}


def save(engine: Engine, references: list[str], fmt: str) -> IO[bytes]:
    """A docker-save archive or an OCI layout tar of ``references``: an open file whose
    name is already gone (closing it frees the space)."""
    if not references:
        raise Invalid("references: name at least one image", "references")
    for index, text in enumerate(references):
        find(engine.images, text, f"references[{index}]")
    staging = Path(tempfile.mkdtemp(prefix="save-", dir=engine.tmp))
    try:
        target = staging / "image.tar"
        with _field("references"):
            engine.images.save(references, target, format=fmt)
        return open(target, "rb")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def tag(engine: Engine, source: str, target: str) -> dict[str, Any]:
    record = find(engine.images, source, "source")
    with _field("target"):
        ref = refs.parse(target, "target")
    if ref.digest:
        raise Invalid("target: a tag cannot hold a digest", "target")
    changed = engine.images.store.refs().get(ref.tagged) != record.manifest
    if changed:
        with _field("target"):
            engine.images.tag(record.manifest, target)
        engine.events.emit("tag", ref.familiar, record.id)
    return {"changed": changed, "image": image_json(engine, record)}


def remove(engine: Engine, ref: str, *, force: bool = False) -> dict[str, Any]:
    """``docker rmi``: untag a name, and remove the image when nothing else names it. An
    image a container uses is refused (409), or with ``force`` only untagged."""
    service = engine.images
    record = find(service, ref, "ref")
    store_refs = service.store.refs()
    tags = sorted(n for n, m in store_refs.items() if m == record.manifest)
    named: str | None = None
    with contextlib.suppress(ImageError):
        parsed = refs.parse(ref, "ref")
        if parsed.tagged in tags and not parsed.digest:
            named = parsed.tagged
    users_of = images_in_use(engine).get(record.id, [])
    untagged: list[str] = []
    deleted: list[str] = []
    if named is not None and len(tags) > 1:
        service.untag(named)
        untagged.append(_familiar(named))
    elif users_of:
        if not force:
            raise Conflict(
                f"ref: image {ref} is used by container(s) {', '.join(sorted(users_of))}", "ref"
            )
        for name in [named] if named is not None else tags:
            service.untag(name)
            untagged.append(_familiar(name))
    else:
        if len(tags) > 1 and named is None and not force:
            raise Conflict(
                f"ref: image {ref} has several tags ({', '.join(map(_familiar, tags))}): "
                "remove them by name, or use force",
                "ref",
            )
        with _field("ref"):
            service.remove(record.manifest)
        untagged.extend(_familiar(name) for name in tags)
        deleted.append(record.id)
        with _field("ref"):
            service.gc(images_in_use(engine))
    for name in untagged:
        engine.events.emit("untag", name, record.id)
    if deleted:
        engine.events.emit("delete", record.id, record.id)
    return {"changed": True, "untagged": untagged, "deleted": deleted}


def prune(engine: Engine, *, all_images: bool = False) -> dict[str, Any]:
    """Remove dangling images (``all``: every image no container uses) and what only they
    referenced. An image a container uses is never removed."""
    service = engine.images
    used = images_in_use(engine)
    ids = {record.manifest: record.id for record in service.store.images()}
    deleted = []
    if all_images:
        for record in service.store.images():
            if record.id not in used:
                with contextlib.suppress(ImageNotFound):
                    service.store.remove_image(record.manifest)
                    deleted.append(record.id)
    with _field(None):
        result = service.gc(used)
    deleted.extend(ids.get(manifest, manifest) for manifest in result.images)
    return {"deleted": sorted(set(deleted)), "reclaimed": result.bytes_freed}


def commit(
    engine: Engine,
    name: str,
    *,
    reference: str | None,
    message: str | None,
    author: str | None,
    pause: bool,
) -> dict[str, Any]:
    """A new image from the container's image and its changes (the upper directory)."""
    if reference is not None:
        with _field("reference"):
            if refs.parse(reference, "reference").digest:
                raise Invalid("reference: a tag cannot hold a digest", "reference")
    with engine._container(name) as row:
        if row.spec.get("image") is None:
            raise Conflict(
                f"name: container {row.name!r} runs from a rootfs directory, not an image: "
                "nothing to commit onto (import its rootfs instead)",
                "name",
            )
        base = find(engine.images, row.spec["image_id"], "name")
        runtime = engine.runtime_of(row.id)
        paused = False
        if pause and runtime is not None and runtime.status == "running":
            with contextlib.suppress(supervisor.RuntimeError_, OSError):
                supervisor.pause(runtime)
                paused = True
        try:
            with _field("reference"):
                record = engine.images.commit(
                    row.id,
                    base,
                    name=reference,
                    author=author or "",
                    comment=message or "",
                    changes=_commit_changes(row.spec),
                )
        finally:
            if paused and runtime is not None:
                with contextlib.suppress(supervisor.RuntimeError_, OSError):
                    supervisor.resume(runtime)
        engine.events.emit("commit", row.name, row.id, image=record.id)
    return {"image": image_json(engine, record, detail=True)}


def _commit_changes(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The container's effective config as the new image's config (``docker commit``)."""
    out: dict[str, Any] = {
        "Entrypoint": list(spec["entrypoint"]) or None,
        "Cmd": list(spec["command"]) or None,
        "Env": [f"{k}={v}" for k, v in spec["env"].items()],
        "WorkingDir": spec["workdir"] if spec["workdir"] != "/" else "",
        "User": spec["user"] if spec["user"] != "0:0" else "",
        "Labels": dict(spec["labels"]) or None,
    }
    if spec["stop_signal"] != "SIGTERM":
        out["StopSignal"] = spec["stop_signal"]
    return out


def export_root(engine: Engine, name: str) -> str:
    """The container's root directory, mounted (``docker export``'s source)."""
    row = engine.store.get(name)
    if row is None:
        raise NotFound(f"no container named {name!r}", "name")
    ensure_mounted(engine, row)
    return rootfs_of(engine, row.spec, row.id)


def write_tree(root: str, out: IO[bytes]) -> None:
    """A tar stream of the tree at ``root`` (symlinks kept as links, never followed)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(os.path.join(root, entry), arcname=entry, recursive=True)
