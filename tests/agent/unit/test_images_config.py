"""An image config merged with a container's settings the way Docker merges them."""

from __future__ import annotations

import pytest
from gantry.images.errors import ImageError
from gantry.images.imageconfig import DEFAULT_PATH, ContainerSettings, merge

IMAGE = {
    "Entrypoint": ["/entry.sh"],
    "Cmd": ["serve", "--port", "80"],
    "Env": ["PATH=/opt/bin:/bin", "MODE=prod", "LANG=C.UTF-8"],
    "WorkingDir": "/srv",
    "User": "app",
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": {"/data": {}},
    "Labels": {"tier": "web", "team": "a"},
    "StopSignal": "SIGQUIT",
}


def test_image_defaults_apply_when_the_container_sets_nothing() -> None:
    merged = merge(IMAGE, ContainerSettings())
    assert merged.args == ("/entry.sh", "serve", "--port", "80")
    assert merged.env == ("PATH=/opt/bin:/bin", "MODE=prod", "LANG=C.UTF-8")
    assert (merged.working_dir, merged.user, merged.stop_signal) == ("/srv", "app", "SIGQUIT")
    assert merged.exposed_ports == ("80/tcp",)
    assert merged.volumes == ("/data",)


def test_container_cmd_replaces_cmd_keeps_entrypoint() -> None:
    merged = merge(IMAGE, ContainerSettings(cmd=["migrate"]))
    assert merged.args == ("/entry.sh", "migrate")


def test_container_entrypoint_drops_the_image_cmd() -> None:
    merged = merge(IMAGE, ContainerSettings(entrypoint=["/bin/sh"]))
    assert merged.args == ("/bin/sh",)
    merged = merge(IMAGE, ContainerSettings(entrypoint=["/bin/sh"], cmd=["-c", "true"]))
    assert merged.args == ("/bin/sh", "-c", "true")


def test_empty_entrypoint_clears_it_and_keeps_the_image_cmd() -> None:
    # `docker run --entrypoint ""`: no entrypoint, the image's Cmd is the command.
    merged = merge(IMAGE, ContainerSettings(entrypoint=[]))
    assert merged.entrypoint == ()
    assert merged.args == ("serve", "--port", "80")


def test_env_container_wins_image_fills_in() -> None:
    merged = merge(IMAGE, ContainerSettings(env={"MODE": "dev", "EXTRA": "1"}))
    assert merged.env == ("MODE=dev", "EXTRA=1", "PATH=/opt/bin:/bin", "LANG=C.UTF-8")


def test_default_path_when_neither_sets_one() -> None:
    merged = merge({"Cmd": ["/bin/sh"]}, ContainerSettings(env=["A=1"]))
    assert merged.env == ("A=1", DEFAULT_PATH)


def test_workdir_user_stop_signal_fall_back() -> None:
    merged = merge({"Cmd": ["x"]}, ContainerSettings())
    assert (merged.working_dir, merged.user, merged.stop_signal) == ("/", "0", "SIGTERM")
    merged = merge(IMAGE, ContainerSettings(working_dir="/tmp", user="1000:1000"))
    assert (merged.working_dir, merged.user) == ("/tmp", "1000:1000")


def test_ports_volumes_union_labels_overlay() -> None:
    merged = merge(
        IMAGE,
        ContainerSettings(exposed_ports=["443", "53/udp"], volumes=["/logs"], labels={"team": "b"}),
    )
    assert merged.exposed_ports == ("80/tcp", "443/tcp", "53/udp")
    assert merged.volumes == ("/data", "/logs")
    assert merged.labels == {"tier": "web", "team": "b"}


@pytest.mark.parametrize(
    ("image", "settings", "field"),
    [
        ({"Cmd": "echo hi"}, ContainerSettings(), "image Cmd"),
        ({}, ContainerSettings(), "cmd"),
        ({"Cmd": ["x"]}, ContainerSettings(working_dir="rel"), "working_dir"),
        ({"Cmd": ["x"]}, ContainerSettings(exposed_ports=["99999"]), "exposed_ports"),
        ({"Cmd": ["x"]}, ContainerSettings(volumes=["data"]), "volumes"),
        ({"Cmd": ["x"]}, ContainerSettings(env=["=x"]), "env"),
    ],
)
def test_bad_input_names_the_field(
    image: dict[str, object], settings: ContainerSettings, field: str
) -> None:
    with pytest.raises(ImageError, match=f"^{field}:"):
        merge(image, settings)
