"""Registries as operators run them, each test with its own docker-registry on a free
loopback port: HTTP Basic (htpasswd, bcrypt), bearer tokens from a token server this test
runs (JWTs signed by a key whose certificate is in the registry's rootcertbundle), HTTPS
with a CA made here, multi-platform indexes, shared layers fetched once, and a blob
download broken off half-way that resumes with ``Range``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import registry_support as rsup
from gantry.images import oci
from gantry.images.errors import CertificateError, NotFound, RegistryError
from gantry.images.registry import Credentials, RegistryOptions
from gantry.images.service import ImageService

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs docker-registry (make setup)"
    ),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (make setup)"),
]

ISSUER = "gantry-test-issuer"
SERVICE = "gantry-test-registry"


@pytest.fixture(autouse=True)
def _nothing_left(no_leftovers: None) -> Iterator[None]:
    yield


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """This test's own directory (registry storage, PKI, stores), removed after."""
    path = tmp_path / f"reg-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _store_is_empty(service: ImageService) -> None:
    """Nothing half-written: no blob, partial ingest, staging entry, image or reference."""
    root = service.store.root
    assert list((root / "blobs" / "sha256").iterdir()) == []
    assert list((root / "ingest").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []
    assert list((root / "layers").iterdir()) == []
    assert service.store.images() == []
    assert service.store.refs() == {}


def _layout(work: Path, name: str, files: dict[str, bytes], tag: str = "v1") -> Path:
    layout = work / name
    rsup.single_image_layout(layout, [rsup.layer_tar(files)], tag)
    return layout


def _layer_file(service: ImageService, image: Any, name: str) -> bytes:
    return bytes((service.store.layer_dir(image.layers[-1].diff_id) / name).read_bytes())


# --- HTTP Basic --------------------------------------------------------------------------


@pytest.fixture
def basic_registry(work: Path) -> Iterator[rsup.Registry]:
    users = rsup.htpasswd_file(work / "htpasswd", {"alice": "s3cret-Alice"})
    auth = f"  htpasswd:\n    realm: gantry-test\n    path: {users}\n"
    with rsup.docker_registry(work / "registry", auth=auth) as registry:
        yield registry


def test_basic_auth_pull_and_push(work: Path, basic_registry: rsup.Registry) -> None:
    host = basic_registry.host
    layout = _layout(work, "layout", {"hello": b"basic\n"})
    rsup.skopeo_copy(
        f"oci:{layout}:v1", f"docker://{host}/team/app:v1",
        "--dest-tls-verify=false", "--dest-creds", "alice:s3cret-Alice",
    )  # fmt: skip
    options = RegistryOptions(credentials={host: Credentials("alice", "s3cret-Alice")})
    service = ImageService(work / "store", options)
    image = service.pull(f"{host}/team/app:v1")
    assert _layer_file(service, image, "hello") == b"basic\n"
    assert service.resolve(f"{host}/team/app:v1").manifest == image.manifest

    digest = service.push(f"{host}/team/copy:v2", source=f"{host}/team/app:v1")
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds", "alice:s3cret-Alice",
             f"docker://{host}/team/copy:v2"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    )  # fmt: skip
    assert inspected["Digest"] == digest == image.manifest

    # Credentials given for one operation (as the agent's API takes them) instead of the
    # configured ones.
    unconfigured = ImageService(work / "unconfigured")
    again = unconfigured.pull(
        f"{host}/team/copy:v2", credentials=Credentials("alice", "s3cret-Alice")
    )
    assert again.manifest == digest
    with pytest.raises(RegistryError, match="no credentials"):
        unconfigured.pull(f"{host}/team/app:v1")  # not kept for later operations


def test_basic_auth_wrong_password_names_the_registry_and_writes_nothing(
    work: Path, basic_registry: rsup.Registry
) -> None:
    host = basic_registry.host
    layout = _layout(work, "layout", {"hello": b"basic\n"})
    rsup.skopeo_copy(
        f"oci:{layout}:v1", f"docker://{host}/team/app:v1",
        "--dest-tls-verify=false", "--dest-creds", "alice:s3cret-Alice",
    )  # fmt: skip
    options = RegistryOptions(credentials={host: Credentials("alice", "wrong")})
    service = ImageService(work / "store", options)
    with pytest.raises(RegistryError) as caught:
        service.pull(f"{host}/team/app:v1")
    message = str(caught.value)
    assert host in message
    assert "'alice'" in message and "wrong username or password" in message
    assert "wrong" not in message.replace("wrong username", "")  # the password is never shown
    _store_is_empty(service)


def test_basic_auth_without_credentials_is_a_clear_error(
    work: Path, basic_registry: rsup.Registry
) -> None:
    service = ImageService(work / "store")
    with pytest.raises(RegistryError) as caught:
        service.pull(f"{basic_registry.host}/team/app:v1")
    message = str(caught.value)
    assert basic_registry.host in message
    assert "no credentials" in message
    _store_is_empty(service)


# --- bearer tokens -------------------------------------------------------------------------


@pytest.fixture
def token_registry(work: Path) -> Iterator[tuple[rsup.Registry, rsup.TokenServer]]:
    """docker-registry in ``auth: token`` mode trusting a CA made here; the token server
    signs with a certificate from that CA. alice may pull and push team/app, bob only
    pull."""
    ca = rsup.make_ca(work / "pki", "token CA")
    signer = rsup.issue(ca, work / "pki", "token-signer")
    tokens = rsup.TokenServer(
        signer,
        ISSUER,
        SERVICE,
        {
            "alice": ("alice-pw", {"team/app": {"pull", "push"}}),
            "bob": ("bob-pw", {"team/app": {"pull"}}),
        },
    )
    with (
        tokens.serve(),
        rsup.docker_registry(
            work / "registry", auth=rsup.token_auth_yaml(tokens, ca.path)
        ) as registry,
    ):
        yield registry, tokens


def _token_options(host: str, user: str, password: str) -> RegistryOptions:
    return RegistryOptions(credentials={host: Credentials(user, password)})


def test_bearer_token_pull_and_push_ask_for_their_scopes(
    work: Path, token_registry: tuple[rsup.Registry, rsup.TokenServer]
) -> None:
    registry, tokens = token_registry
    host = registry.host
    first = ImageService(work / "first", _token_options(host, "alice", "alice-pw"))
    (loaded,) = first.load(_layout(work, "layout", {"hello": b"token\n"}), name="team/app")
    first.tag("team/app:v1", f"{host}/team/app:v1")
    tokens.requests.clear()
    digest = first.push(f"{host}/team/app:v1")
    assert digest == loaded.image.manifest
    pushed_scopes = {scope for r in tokens.requests for scope in r["scopes"]}
    assert "repository:team/app:pull,push" in pushed_scopes
    assert all(r["user"] == "alice" and r["ok"] for r in tokens.requests)

    tokens.requests.clear()
    second = ImageService(work / "second", _token_options(host, "bob", "bob-pw"))
    image = second.pull(f"{host}/team/app:v1")
    assert image.manifest == digest
    assert _layer_file(second, image, "hello") == b"token\n"
    assert tokens.requests, "the registry sent the client to the token server"
    assert {scope for r in tokens.requests for scope in r["scopes"]} == {"repository:team/app:pull"}


def test_bearer_token_pull_only_user_cannot_push(
    work: Path, token_registry: tuple[rsup.Registry, rsup.TokenServer]
) -> None:
    registry, _tokens = token_registry
    host = registry.host
    service = ImageService(work / "store", _token_options(host, "bob", "bob-pw"))
    service.load(_layout(work, "layout", {"hello": b"token\n"}), name=f"{host}/team/app")
    with pytest.raises(RegistryError) as caught:
        service.push(f"{host}/team/app:v1")
    message = str(caught.value)
    assert host in message and "'bob'" in message and "push" in message
    listed = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", "--creds", "alice:alice-pw",
         f"docker://{host}/team/app"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert "v1" not in listed.stdout


def test_bearer_token_wrong_password_is_refused_by_the_token_server(
    work: Path, token_registry: tuple[rsup.Registry, rsup.TokenServer]
) -> None:
    registry, tokens = token_registry
    host = registry.host
    service = ImageService(work / "store", _token_options(host, "alice", "nope"))
    with pytest.raises(RegistryError) as caught:
        service.pull(f"{host}/team/app:v1")
    message = str(caught.value)
    assert host in message and "'alice'" in message and "token server" in message
    assert tokens.requests and not tokens.requests[-1]["ok"]
    _store_is_empty(service)


def test_bearer_token_without_credentials_is_a_clear_error(
    work: Path, token_registry: tuple[rsup.Registry, rsup.TokenServer]
) -> None:
    registry, _tokens = token_registry
    service = ImageService(work / "store")
    with pytest.raises(RegistryError) as caught:
        service.pull(f"{registry.host}/team/app:v1")
    assert registry.host in str(caught.value)
    assert "no credentials" in str(caught.value)
    _store_is_empty(service)


# --- TLS with a custom CA ------------------------------------------------------------------


@pytest.fixture
def tls_registry(work: Path) -> Iterator[tuple[rsup.Registry, rsup.CA]]:
    ca = rsup.make_ca(work / "pki", "registry CA")
    server = rsup.issue(ca, work / "pki", "registry", ips=("127.0.0.1",))
    with rsup.docker_registry(work / "registry", tls=server, ca=ca) as registry:
        yield registry, ca


def test_tls_registry_needs_its_ca(work: Path, tls_registry: tuple[rsup.Registry, rsup.CA]) -> None:
    registry, ca = tls_registry
    host = registry.host
    certs = work / "skopeo-certs"
    certs.mkdir()
    shutil.copy(ca.path, certs / "ca.crt")
    layout = _layout(work, "layout", {"hello": b"tls\n"})
    rsup.skopeo_copy(
        f"oci:{layout}:v1", f"docker://{host}/team/app:v1", "--dest-cert-dir", str(certs)
    )

    # Loopback allows plain HTTP, but a registry that speaks TLS with a certificate we
    # cannot verify is an error, never a reason to fall back.
    untrusting = ImageService(work / "untrusting")
    with pytest.raises(CertificateError) as caught:
        untrusting.pull(f"{host}/team/app:v1")
    assert "certificate" in str(caught.value) and host in str(caught.value)
    _store_is_empty(untrusting)

    trusting = ImageService(work / "trusting", RegistryOptions(ca_files={host: ca.path}))
    image = trusting.pull(f"{host}/team/app:v1")
    assert _layer_file(trusting, image, "hello") == b"tls\n"
    digest = trusting.push(f"{host}/team/copy:v1", source=f"{host}/team/app:v1")
    assert digest == image.manifest
    # A CA for every registry ("*") works the same.
    everywhere = ImageService(work / "everywhere", RegistryOptions(ca_files={"*": ca.path}))
    assert everywhere.pull(f"{host}/team/copy:v1").manifest == digest
    # A registry named insecure is spoken to over TLS without verification, as Docker does
    # (being on loopback alone does not do that).
    insecure = ImageService(work / "insecure", RegistryOptions(insecure=frozenset({host})))
    assert insecure.pull(f"{host}/team/copy:v1").manifest == digest
    assert insecure.registry._base(host).startswith("https://")


def test_tls_registry_with_an_https_token_realm_trusts_the_registry_ca(work: Path) -> None:
    """As Docker does, the token server of a registry is verified with that registry's
    CA files too (here both certificates come from one CA made in the test)."""
    ca = rsup.make_ca(work / "pki", "site CA")
    server = rsup.issue(ca, work / "pki", "registry", ips=("127.0.0.1",))
    token_cert = rsup.issue(ca, work / "pki", "token-server", ips=("127.0.0.1",))
    signer = rsup.issue(ca, work / "pki", "token-signer")
    tokens = rsup.TokenServer(
        signer, ISSUER, SERVICE, {"alice": ("alice-pw", {"team/app": {"pull", "push"}})},
        tls=token_cert,
    )  # fmt: skip
    with (
        tokens.serve(),
        rsup.docker_registry(
            work / "registry", auth=rsup.token_auth_yaml(tokens, ca.path), tls=server, ca=ca
        ) as registry,
    ):
        host = registry.host
        assert tokens.realm.startswith("https://")
        options = RegistryOptions(
            credentials={host: Credentials("alice", "alice-pw")}, ca_files={host: ca.path}
        )
        service = ImageService(work / "store", options)
        (loaded,) = service.load(
            _layout(work, "layout", {"hello": b"tls+token\n"}), name=f"{host}/team/app"
        )
        assert service.push(f"{host}/team/app:v1") == loaded.image.manifest
        fresh = ImageService(work / "fresh", options)
        image = fresh.pull(f"{host}/team/app:v1")
        assert _layer_file(fresh, image, "hello") == b"tls+token\n"
        assert all(r["ok"] and r["user"] == "alice" for r in tokens.requests)


# --- multi-platform images -------------------------------------------------------------------


def _two_platform_layout(work: Path) -> Path:
    """An OCI layout whose ``v1`` is an index of linux/amd64 and linux/arm64/v8 images
    (a label in each config says which)."""
    layout = work / "multi"
    amd = rsup.image_manifest(layout, [rsup.layer_tar({"arch": b"amd64\n"})], arch="amd64")
    arm = rsup.image_manifest(
        layout, [rsup.layer_tar({"arch": b"arm64\n"})], arch="arm64", variant="v8"
    )
    index = rsup.index_blob(layout, [amd, arm])
    rsup.write_layout(layout, [rsup.tagged(index, "v1")])
    return layout


def _label(service: ImageService, image: Any) -> str:
    return str(service.config(image)["config"]["Labels"]["arch"])


@pytest.mark.parametrize("manifest_format", ["oci", "v2s2"])
def test_multi_platform_pull_picks_the_host_or_the_asked_platform(
    work: Path, manifest_format: str
) -> None:
    host_os, host_arch, _variant = oci.host_platform_tuple()
    if host_arch not in ("amd64", "arm64"):
        pytest.skip(f"the index holds amd64 and arm64 images, this host is {host_arch}")
    layout = _two_platform_layout(work)
    with rsup.docker_registry(work / "registry") as registry:
        host = registry.host
        rsup.skopeo_copy(
            f"oci:{layout}:v1", f"docker://{host}/team/multi:v1",
            "--all", "--dest-tls-verify=false", "--format", manifest_format,
        )  # fmt: skip
        service = ImageService(work / "store")
        image = service.pull(f"{host}/team/multi:v1")
        assert _label(service, image) == {"amd64": "amd64", "arm64": "arm64v8"}[host_arch]
        assert image.platform.startswith(f"{host_os}/{host_arch}")
        assert "index" in image.extra

        arm = service.pull(f"{host}/team/multi:v1", platform="linux/arm64")
        assert _label(service, arm) == "arm64v8"
        assert arm.platform == "linux/arm64/v8"
        assert service.resolve(f"{host}/team/multi:v1").manifest == arm.manifest
        assert _label(service, service.pull(f"{host}/team/multi:v1", platform="linux/amd64")) == (
            "amd64"
        )

        before = set(service.store.refs().items())
        with pytest.raises(NotFound) as caught:
            service.pull(f"{host}/team/multi:v1", platform="linux/arm/v7")
        message = str(caught.value)
        assert "linux/arm/v7" in message
        assert "linux/amd64, linux/arm64/v8" in message
        assert f"{host}/team/multi:v1" in message
        assert set(service.store.refs().items()) == before


def test_multi_platform_archives_load_the_asked_platform(work: Path) -> None:
    layout = _two_platform_layout(work)
    tar = work / "multi.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(tar), "."], check=True, timeout=60)
    for source in (layout, tar):
        service = ImageService(work / f"store-{source.name}")
        (arm,) = service.load(source, name="team/multi", platform="linux/arm64/v8")
        assert _label(service, arm.image) == "arm64v8"
        assert arm.tags == ("docker.io/team/multi:v1",)
        (amd,) = service.load(source, name="team/multi", platform="linux/amd64")
        assert _label(service, amd.image) == "amd64"
        with pytest.raises(NotFound, match=r"linux/amd64, linux/arm64/v8"):
            service.load(source, name="team/multi", platform="linux/s390x")


# --- shared layers, resumable downloads ----------------------------------------------------------


def test_concurrent_pulls_of_images_sharing_a_layer_fetch_it_once(work: Path) -> None:
    base = rsup.layer_tar({"base": b"shared base layer\n" * 4096})
    layouts = []
    for name in ("one", "two"):
        layout = work / name
        rsup.single_image_layout(layout, [base, rsup.layer_tar({name: name.encode()})], "v1")
        layouts.append(layout)
    shared = rsup.sha(base)
    with rsup.docker_registry(work / "registry") as registry:
        host = registry.host
        for name, layout in zip(("one", "two"), layouts, strict=True):
            rsup.skopeo_copy(
                f"oci:{layout}:v1", f"docker://{host}/team/{name}:v1",
                "--dest-tls-verify=false", "--preserve-digests",
            )  # fmt: skip
        assert registry.blob_gets(shared) == 0
        service = ImageService(work / "store")
        results: dict[str, Any] = {}
        barrier = threading.Barrier(2)

        def pull(name: str) -> None:
            barrier.wait()
            try:
                results[name] = service.pull(f"{host}/team/{name}:v1")
            except Exception as exc:
                results[name] = exc

        threads = [threading.Thread(target=pull, args=(n,)) for n in ("one", "two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        one, two = results["one"], results["two"]
        assert not isinstance(one, Exception) and not isinstance(two, Exception), results
        assert one.layers[0] == two.layers[0]
        assert one.layers[0].digest == shared
        assert registry.blob_gets(shared) == 1
        assert registry.blob_gets(one.layers[1].digest) == 1


def test_interrupted_blob_download_resumes_with_range(work: Path) -> None:
    big = rsup.layer_tar({"big": bytes(range(256)) * (12 * 1024)})  # ~3 MB
    layout = work / "layout"
    rsup.single_image_layout(layout, [big], "v1")
    digest = rsup.sha(big)
    with rsup.docker_registry(work / "registry") as registry:
        rsup.skopeo_copy(
            f"oci:{layout}:v1", f"docker://{registry.host}/team/big:v1",
            "--dest-tls-verify=false", "--preserve-digests",
        )  # fmt: skip
        with rsup.Proxy(registry.host, cut=digest).serve() as proxy:
            events: list[dict[str, Any]] = []
            service = ImageService(work / "store")
            image = service.pull(f"{proxy.host}/team/big:v1", progress=events.append)
            assert image.layers[0].digest == digest
            assert proxy.gets[digest] == 2
            first, second = [r for d, r in proxy.ranges if d == digest]
            assert first == ""
            assert second == f"bytes={len(big) // 2}-"
        assert (service.store.layer_dir(image.layers[0].diff_id) / "big").stat().st_size == (
            256 * 12 * 1024
        )
        assert list((service.store.root / "ingest").iterdir()) == []
        mine = [e for e in events if e["digest"] == digest]
        assert mine[-1] == {
            "action": "pull",
            "digest": digest,
            "status": "done",
            "current": len(big),
            "total": len(big),
        }
        resumed = [e for e in mine if e["status"] == "downloading"]
        assert any(e["current"] == len(big) // 2 for e in resumed)


# --- plain HTTP to a registry that is not on loopback ------------------------------------------


def test_plain_http_to_a_non_loopback_registry_only_when_insecure(work: Path) -> None:
    """In a network namespace of its own (a veth gives it 10.231.0.1): refused over plain
    HTTP until the registry is listed insecure (by host:port, or by host for every port)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    probe = Path(__file__).with_name("registry_netns_probe.py")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(probe), str(work)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        cwd=probe.parent,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    host = out["host"]
    for verb in ("push", "pull"):
        message = out[f"refused_{verb}"]
        assert message is not None, f"{verb} over plain HTTP was not refused"
        assert host in message and "plain HTTP is allowed only" in message
    assert out["refused_blobs"] == 0
    assert out["pushed"] == out["pulled"]
    assert out["requests"] == 1
