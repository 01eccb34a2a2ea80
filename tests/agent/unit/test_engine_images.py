"""Containers from images in the engine's spec: an image's config merged with the
container's own settings Docker's way (through a real image store in a temp dir), the
``[registries]`` settings, and the pull policy's refusals."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

import pytest
from gantry.cli.agent import SettingsError, load_settings
from gantry.cli.main import build_parser
from gantry.engine import images as engine_images
from gantry.engine.core import Engine
from gantry.engine.errors import Invalid
from gantry.engine.spec import normalise
from gantry.images.service import ImageService
from images_support import Member, oci_layout, tar_bytes

IMAGE_CONFIG = {
    "Cmd": ["/bin/sh", "-c", "serve"],
    "Env": ["PATH=/bin", "A=image", "B=image"],
    "WorkingDir": "/srv",
    "User": "app",
    "StopSignal": "SIGQUIT",
    "Labels": {"from": "image", "both": "image"},
}


@pytest.fixture
def service(tmp_path: Path) -> ImageService:
    """A store holding ``app:1``: two layers, the upper replacing /etc/passwd."""
    lower = tar_bytes(
        [
            Member("etc", "dir", mode=0o755),
            Member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\napp:x:1:1::/:/bin/sh\n"),
            Member("etc/group", data=b"root:x:0:\napp:x:1:\n"),
        ]
    )
    upper = tar_bytes(
        [
            Member("etc", "dir", mode=0o755),
            Member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\napp:x:1234:77::/:/bin/sh\n"),
        ]
    )
    oci_layout(tmp_path / "layout", [lower, upper], IMAGE_CONFIG, tag="1")
    svc = ImageService(tmp_path / "images")
    svc.load(tmp_path / "layout", name="app")
    return svc


def norm(service: ImageService, **fields: Any) -> dict[str, Any]:
    return normalise(
        {"image": "app:1", **fields},
        name="web",
        image_resolver=engine_images.resolver(service),
    )


def refused(service: ImageService, **fields: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        norm(service, **fields)
    return caught.value


def test_the_image_supplies_what_the_container_does_not_say(service: ImageService) -> None:
    spec = norm(service)
    assert spec["image"] == "app:1"
    assert spec["image_id"] == service.resolve("app:1").id
    assert spec["rootfs"] is None
    assert (spec["entrypoint"], spec["command"]) == ([], ["/bin/sh", "-c", "serve"])
    assert spec["env"] == {"A": "image", "B": "image", "PATH": "/bin"}
    assert spec["workdir"] == "/srv"
    # The name resolves in the image's own /etc/passwd, the upper layer's copy winning.
    assert spec["user"] == "1234:77"
    assert spec["stop_signal"] == "SIGQUIT"
    assert spec["labels"] == {"both": "image", "from": "image"}


def test_what_the_container_says_wins(service: ImageService) -> None:
    spec = norm(
        service,
        command=["/bin/true"],
        env={"A": "mine", "C": "mine"},
        workdir="/tmp",
        user="0:0",
        stop_signal="TERM",
        labels={"both": "mine"},
    )
    assert (spec["entrypoint"], spec["command"]) == ([], ["/bin/true"])
    assert spec["env"] == {"A": "mine", "B": "image", "C": "mine", "PATH": "/bin"}
    assert (spec["workdir"], spec["user"], spec["stop_signal"]) == ("/tmp", "0:0", "SIGTERM")
    assert spec["labels"] == {"both": "mine", "from": "image"}


def test_an_explicit_entrypoint_resets_the_image_cmd(service: ImageService) -> None:
    spec = norm(service, entrypoint=["/bin/echo"])
    assert (spec["entrypoint"], spec["command"]) == (["/bin/echo"], [])
    spec = norm(service, entrypoint=["/bin/echo"], command=["hi"])
    assert (spec["entrypoint"], spec["command"]) == (["/bin/echo"], ["hi"])
    # An empty entrypoint clears the image's, keeping its Cmd when no command is given.
    spec = norm(service, entrypoint=[], command=[])
    assert (spec["entrypoint"], spec["command"]) == ([], ["/bin/sh", "-c", "serve"])


def test_equal_meanings_normalise_equal(service: ImageService) -> None:
    assert norm(service) == norm(service, command=[], env=[], labels={})
    assert norm(service) == norm(service, image_id="sha256:" + "0" * 64)  # output only
    assert norm(service, env=["A=image"]) == norm(service)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rootfs": "/srv"}, "spec.image"),
        ({"image": "nothere:1"}, "spec.image"),
        ({"image": "Not A Reference"}, "spec.image"),
        ({"image": 7}, "spec.image"),
        ({"user": "nobody"}, "spec.user"),
        ({"entrypoint": "/bin/sh"}, "spec.entrypoint"),
        ({"command": [1]}, "spec.command[0]"),
        ({"workdir": "relative"}, "spec.workdir"),
        ({"env": {"A": None}}, "spec.env.A"),
        ({"stop_signal": "SIGNOPE"}, "spec.stop_signal"),
    ],
)
def test_refusals_name_the_field(service: ImageService, fields: dict[str, Any], field: str) -> None:
    error = refused(service, **fields)
    assert error.field == field
    assert error.detail.startswith(field.split("[")[0])


def test_an_image_without_a_command_needs_one(tmp_path: Path) -> None:
    oci_layout(tmp_path / "layout", [tar_bytes([Member("bin", "dir")])], {"Env": []}, tag="1")
    svc = ImageService(tmp_path / "images")
    svc.load(tmp_path / "layout", name="bare")
    with pytest.raises(Invalid) as caught:
        normalise({"image": "bare:1"}, name="x", image_resolver=engine_images.resolver(svc))
    assert caught.value.field == "spec.command"
    spec = normalise(
        {"image": "bare:1", "command": ["/x"]}, name="x", image_resolver=engine_images.resolver(svc)
    )
    assert spec["env"]["PATH"].startswith("/usr/local/sbin")  # Docker's default PATH


def test_without_a_resolver_an_image_is_refused() -> None:
    with pytest.raises(Invalid) as caught:
        normalise({"image": "app:1"}, name="x")
    assert caught.value.field == "spec.image"


def test_a_bad_pull_policy_is_refused_before_anything_else() -> None:
    nothing = cast(Engine, None)
    with pytest.raises(Invalid) as caught:
        engine_images.pull_for_apply(nothing, {"image": "a"}, "often", dry_run=False)
    assert caught.value.field == "pull"
    assert engine_images.pull_for_apply(nothing, {"rootfs": "/"}, "never", dry_run=False) is None


# --- [registries] ----------------------------------------------------------------------------


def test_registry_options_from_the_table(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    options = engine_images.registry_options(
        {
            "insecure": ["reg.lan:5000"],
            "ca_files": {"reg.corp:443": str(ca)},
            "credentials": {"reg.corp:443": {"username": "u", "password": "p"}},
        }
    )
    assert options.insecure == frozenset({"reg.lan:5000"})
    assert options.ca_files == {"reg.corp:443": ca}
    assert options.credentials["reg.corp:443"].username == "u"
    assert engine_images.registry_options(None).insecure == frozenset()


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"mirrors": []}, "registries.mirrors"),
        ({"insecure": "reg:5000"}, "registries.insecure"),
        ({"ca_files": {"reg": "/nonexistent/ca.pem"}}, "registries.ca_files.reg"),
        ({"credentials": {"reg": {"username": "u"}}}, "registries.credentials.reg"),
        ({"credentials": {"reg": {"username": "u", "password": 1}}}, "registries.credentials.reg"),
    ],
)
def test_bad_registry_settings_name_the_key(table: dict[str, Any], named: str) -> None:
    with pytest.raises(engine_images.RegistrySettingsError, match=named):
        engine_images.registry_options(table)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["agent", "serve", *argv])


def test_registries_from_the_file_and_flags(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    config = tmp_path / "agent.toml"
    config.write_text(
        '[registries]\ninsecure = ["a:1"]\n'
        '[registries.credentials."a:1"]\nusername = "u"\npassword = "p"\n'
    )
    settings = load_settings(
        parse("--config", str(config), "--insecure-registry", "b:2", "--registry-ca", f"c:3={ca}")
    )
    table = settings["registries"]
    assert table["insecure"] == ["a:1", "b:2"]
    assert table["ca_files"] == {"c:3": str(ca)}
    assert table["credentials"] == {"a:1": {"username": "u", "password": "p"}}
    engine_images.registry_options(table)  # valid as a whole
    config.write_text("registries = 3\n")
    with pytest.raises(SettingsError, match="registries"):
        load_settings(parse("--config", str(config)))
    with pytest.raises(SettingsError, match="registry-ca"):
        load_settings(parse("--registry-ca", "nofile"))
