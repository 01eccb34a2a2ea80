"""The ``gantry`` client verbs for images, with Docker's names, flags and meanings:
``images``, ``pull``, ``push``, ``load -i``, ``save -o``, ``import``, ``export -o``,
``commit``, ``tag``, ``rmi``, ``image prune``, ``image inspect`` (docs/api.md, "Images").
Archives are streamed from and to files, never held in memory."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from gantry.cli.client import AgentClient, AgentError
from gantry.cli.containers import _client_options, _wrap

__all__ = ["VERBS", "register"]

VERBS = (
    "images",
    "pull",
    "push",
    "load",
    "save",
    "import",
    "export",
    "commit",
    "tag",
    "rmi",
    "image",
)


def _image_path(ref: str) -> str:
    return "/v1/images/" + quote(ref, safe="/:@")


def _size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1000
    return f"{amount:.1f}GB"


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    username = args.username or os.environ.get("GANTRY_REGISTRY_USERNAME")
    password = args.password or os.environ.get("GANTRY_REGISTRY_PASSWORD")
    if username is None and password is None:
        return {}
    return {"username": username, "password": password}


def _write_stream(chunks: Iterator[bytes], path: str) -> None:
    """``chunks`` to ``path`` (``-``: stdout), replacing it only once all arrived."""
    if path == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, staged = tempfile.mkstemp(prefix=".gantry-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.chmod(staged, 0o644)
        os.rename(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise


def _upload(client: AgentClient, path: str, route: str, query: dict[str, Any]) -> Any:
    try:
        handle = open(path, "rb") if path != "-" else sys.stdin.buffer  # noqa: SIM115
    except OSError as exc:
        raise AgentError(0, f"{path}: {exc.strerror}", "input") from None
    try:
        if path == "-":  # a pipe has no size: spool it so the agent is told the length
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                spool.write(chunk)
            spool.seek(0)
            handle = spool
        return client.request("POST", route, raw=handle, query=query)
    finally:
        handle.close()


# --- verbs ----------------------------------------------------------------------------------


def _images(args: argparse.Namespace, client: AgentClient) -> int:
    query: dict[str, Any] = {"reference": [args.reference] if args.reference else None}
    if args.filter_dangling is not None:
        query["dangling"] = args.filter_dangling == "true"
    rows = client.request("GET", "/v1/images", query=query)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.quiet:
        for image_id in dict.fromkeys(row["id"].removeprefix("sha256:")[:12] for row in rows):
            print(image_id)
        return 0
    print(f"{'REPOSITORY':<40}{'TAG':<16}{'IMAGE ID':<14}{'CREATED':<22}SIZE")
    for row in rows:
        short = row["id"].removeprefix("sha256:")[:12]
        created = (row["created"] or "")[:19].replace("T", " ")
        for tag in row["tags"] or ["<none>:<none>"]:
            repository, _sep, name = tag.rpartition(":")
            print(f"{repository:<40}{name:<16}{short:<14}{created:<22}{_size(row['size'])}")
    return 0


def _pull(args: argparse.Namespace, client: AgentClient) -> int:
    body = {"reference": args.reference, "platform": args.platform, **_credentials(args)}
    result = client.request("POST", "/v1/images/pull", body=body)
    image = result["image"]
    print(f"{args.reference}: {'pulled' if result['changed'] else 'image is up to date'}")
    print(image["id"])
    return 0


def _push(args: argparse.Namespace, client: AgentClient) -> int:
    body = {"reference": args.reference, **_credentials(args)}
    result = client.request("POST", "/v1/images/push", body=body)
    print(f"{result['reference']}: digest: {result['digest']}")
    return 0


def _load(args: argparse.Namespace, client: AgentClient) -> int:
    query = {"reference": args.reference}
    result = _upload(client, args.input, "/v1/images/load", query)
    for image in result["images"]:
        names = image["tags"] or [image["id"]]
        for name in names:
            print(f"Loaded image: {name}")
    return 0


def _import(args: argparse.Namespace, client: AgentClient) -> int:
    result = _upload(client, args.file, "/v1/images/import", {"reference": args.reference})
    print(result["image"]["id"])
    return 0


def _save(args: argparse.Namespace, client: AgentClient) -> int:
    if args.output == "-" and sys.stdout.isatty():
        raise AgentError(0, "save: refusing to write a tar to a terminal: give -o FILE", "output")
    body = {"references": args.references, "format": args.format}
    _write_stream(client.stream("POST", "/v1/images/save", body=body), args.output)
    return 0


def _export(args: argparse.Namespace, client: AgentClient) -> int:
    if args.output == "-" and sys.stdout.isatty():
        raise AgentError(0, "export: refusing to write a tar to a terminal: give -o FILE", "output")
    chunks = client.stream("GET", client.container_path(args.container, "export"))
    _write_stream(chunks, args.output)
    return 0


def _commit(args: argparse.Namespace, client: AgentClient) -> int:
    body = {
        "reference": args.reference,
        "message": args.message,
        "author": args.author,
        "pause": args.pause,
    }
    result = client.request("POST", client.container_path(args.container, "commit"), body=body)
    print(result["image"]["id"])
    return 0


def _tag(args: argparse.Namespace, client: AgentClient) -> int:
    client.request("POST", "/v1/images/tag", body={"source": args.source, "target": args.target})
    return 0


def _rmi(args: argparse.Namespace, client: AgentClient) -> int:
    status = 0
    for ref in args.references:
        try:
            result = client.request("DELETE", _image_path(ref), query={"force": args.force})
        except AgentError as exc:
            print(f"gantry rmi: {ref}: {exc.detail}", file=sys.stderr)
            status = 1
            continue
        for name in result["untagged"]:
            print(f"Untagged: {name}")
        for image_id in result["deleted"]:
            print(f"Deleted: {image_id}")
    return status


def _prune(args: argparse.Namespace, client: AgentClient) -> int:
    result = client.request("POST", "/v1/images/prune", body={"all": args.all})
    for image_id in result["deleted"]:
        print(f"Deleted: {image_id}")
    print(f"Total reclaimed space: {_size(result['reclaimed'])}")
    return 0


def _inspect(args: argparse.Namespace, client: AgentClient) -> int:
    found = [client.request("GET", _image_path(ref)) for ref in args.references]
    print(json.dumps(found, indent=2))
    return 0


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", help="registry user ($GANTRY_REGISTRY_USERNAME)")
    parser.add_argument("--password", help="registry password ($GANTRY_REGISTRY_PASSWORD)")


def register(subparsers: Any) -> None:
    common = _client_options()

    def add(verb: str, helptext: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            verb, parents=[common], help=helptext
        )
        parser.set_defaults(handler=_wrap(handler))
        return parser

    images = add("images", "list images", _images)
    _listing_options(images)

    pull = add("pull", "pull an image from a registry", _pull)
    pull.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    pull.add_argument("--platform", help="os/arch[/variant] (default: the agent host's)")
    _registry_options(pull)

    push = add("push", "push an image to a registry", _push)
    push.add_argument("reference", metavar="NAME[:TAG]")
    _registry_options(push)

    load = add("load", "load images from a docker-save archive or an OCI layout tar", _load)
    load.add_argument("-i", "--input", required=True, metavar="FILE", help="the archive (- stdin)")
    load.add_argument("--reference", help="name for an untagged OCI layout's image")

    save = add("save", "write images to a tar archive", _save)
    save.add_argument("-o", "--output", default="-", metavar="FILE", help="(default stdout)")
    save.add_argument("--format", choices=("docker", "oci"), default="docker")
    save.add_argument("references", nargs="+", metavar="IMAGE")

    import_ = add("import", "make an image from a rootfs tarball", _import)
    import_.add_argument("file", metavar="FILE", help="the tarball (- stdin)")
    import_.add_argument("reference", metavar="REPOSITORY[:TAG]")

    export = add("export", "write a container's filesystem as a tar archive", _export)
    export.add_argument("-o", "--output", default="-", metavar="FILE", help="(default stdout)")
    export.add_argument("container", metavar="CONTAINER")

    commit = add("commit", "make an image from a container's changes", _commit)
    commit.add_argument("container", metavar="CONTAINER")
    commit.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    commit.add_argument("-m", "--message")
    commit.add_argument("-a", "--author")
    commit.add_argument(
        "-p",
        "--pause",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pause the container while committing (default true)",
    )

    tag = add("tag", "name an image", _tag)
    tag.add_argument("source", metavar="SOURCE_IMAGE")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")

    rmi = add("rmi", "remove images", _rmi)
    rmi.add_argument("-f", "--force", action="store_true", help="untag even when in use")
    rmi.add_argument("references", nargs="+", metavar="IMAGE")

    image = subparsers.add_parser("image", help="manage images (ls, inspect, prune, rm)")
    verbs = image.add_subparsers(dest="image_command", metavar="VERB")
    listing = verbs.add_parser("ls", parents=[common], help="list images")
    _listing_options(listing)
    listing.set_defaults(handler=_wrap(_images))
    inspect = verbs.add_parser("inspect", parents=[common], help="images as JSON")
    inspect.add_argument("references", nargs="+", metavar="IMAGE")
    inspect.set_defaults(handler=_wrap(_inspect))
    prune = verbs.add_parser("prune", parents=[common], help="remove unused images")
    prune.add_argument("-a", "--all", action="store_true", help="every image no container uses")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask (never asks)")
    prune.set_defaults(handler=_wrap(_prune))
    remove = verbs.add_parser("rm", parents=[common], help="remove images")
    remove.add_argument("-f", "--force", action="store_true")
    remove.add_argument("references", nargs="+", metavar="IMAGE")
    remove.set_defaults(handler=_wrap(_rmi))
    image.set_defaults(handler=lambda _args: _usage(image))


def _listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "-a", "--all", action="store_true", help="accepted for Docker's sake (no hidden images)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="image ids only")
    parser.add_argument(
        "--filter-dangling",
        dest="filter_dangling",
        choices=("true", "false"),
        help="only untagged (true) or only tagged (false) images",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2
