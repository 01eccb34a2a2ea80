"""Run inside a fresh network namespace by test_images_registry_auth.py (no tests here):
a veth pair gives the namespace a non-loopback address, a docker-registry listens there
over plain HTTP, and the client is tried without and with the address listed insecure.
Prints one JSON object with the outcomes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import registry_support as rsup
from gantry.images.errors import ImageError
from gantry.images.registry import RegistryOptions
from gantry.images.service import ImageService

ADDRESS = "10.231.0.1"


def main(work: Path) -> None:
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", "gtr-a", "type", "veth", "peer", "name", "gtr-b"],
        ["ip", "addr", "add", f"{ADDRESS}/24", "dev", "gtr-a"],
        ["ip", "link", "set", "gtr-a", "up"],
        ["ip", "link", "set", "gtr-b", "up"],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    out: dict[str, object] = {}
    layout = work / "layout"
    rsup.single_image_layout(layout, [rsup.layer_tar({"hello": b"netns\n"})], "v1")
    with rsup.docker_registry(work / "registry", address=ADDRESS) as registry:
        host = registry.host
        out["host"] = host
        refused = ImageService(work / "refused")
        refused.load(layout, name=f"{host}/team/app")
        for verb in ("push", "pull"):
            try:
                getattr(refused, verb)(f"{host}/team/app:v1")
                out[f"refused_{verb}"] = None
            except ImageError as exc:
                out[f"refused_{verb}"] = str(exc)
        out["refused_blobs"] = len(list((work / "refused/ingest").iterdir()))
        allowed = ImageService(work / "allowed", RegistryOptions(insecure=frozenset({host})))
        allowed.load(layout, name=f"{host}/team/app")
        out["pushed"] = allowed.push(f"{host}/team/app:v1")
        fresh = ImageService(
            work / "fresh",
            RegistryOptions(insecure=frozenset({ADDRESS})),  # every port
        )
        out["pulled"] = fresh.pull(f"{host}/team/app:v1").manifest
        out["requests"] = registry.log().count('"PUT /v2/team/app/manifests/v1 HTTP/1.1" 201')
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
