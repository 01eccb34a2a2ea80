"""Helpers of the registry tests (no tests in here): a docker-registry process on a free
loopback port with its own storage, a CA and certificates made with ``cryptography``, a
bearer-token server issuing JWTs the registry verifies, a counting (and cutting) proxy,
and small OCI layouts built in code."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import http.client
import http.server
import io
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

# --- ports and processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a CA and certificates ----------------------------------------------------------------


@dataclass
class CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    path: Path
    """The CA certificate as PEM."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str = "gantry test CA") -> CA:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{cn.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(key, cert, path)


@dataclass
class Issued:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path


def issue(ca: CA, directory: Path, cn: str, *, ips: tuple[str, ...] = ()) -> Issued:
    """A leaf certificate signed by ``ca`` (server auth, with IP SANs if given)."""
    import ipaddress

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path = directory / f"{cn}.crt"
    key_path = directory / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(key, cert, cert_path, key_path)


# --- docker-registry -------------------------------------------------------------------------


@dataclass
class Registry:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    directory: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def blob_gets(self, digest: str) -> int:
        """GET requests for blob ``digest`` in the registry's access log (any repository)."""
        pattern = re.compile(rf'"GET /v2/\S+/blobs/{re.escape(digest)} HTTP/1\.1" 20[06] ')
        return sum(1 for line in self.log().splitlines() if pattern.search(line))


@contextlib.contextmanager
def docker_registry(
    directory: Path,
    *,
    auth: str = "",
    tls: Issued | None = None,
    ca: CA | None = None,
    address: str = "127.0.0.1",
) -> Iterator[Registry]:
    """docker-registry on a free loopback port serving ``directory/storage``; ``auth`` is
    YAML for the ``auth:`` section (indented by two spaces); ``tls`` serves HTTPS.
    The process is stopped and the directory removed however the block ends."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    text = (
        "version: 0.1\n"
        "log:\n  level: info\n  formatter: text\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}:{port}\n"
    )
    if tls is not None:
        text += f"  tls:\n    certificate: {tls.cert_path}\n    key: {tls.key_path}\n"
    if auth:
        text += f"auth:\n{auth}"
    config.write_text(text)
    log_path = directory / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    registry = Registry(f"{address}:{port}", directory, log_path, proc)
    try:
        _wait_ready(registry, tls is not None, ca)
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(registry: Registry, tls: bool, ca: CA | None) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if tls:
                context = ssl.create_default_context(cafile=str(ca.path) if ca else None)
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    registry.host, timeout=2, context=context
                )
            else:
                conn = http.client.HTTPConnection(registry.host, timeout=2)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if registry.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {registry.log()}") from None
            time.sleep(0.1)


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes (the only kind docker-registry reads)."""
    lines = []
    for user, password in users.items():
        done = subprocess.run(
            ["htpasswd", "-nbB", user, password],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        lines.append(done.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    return path


# --- a bearer-token server -----------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Docker's token protocol on loopback: ``GET /token?service=…&scope=…`` with HTTP
    Basic credentials answers a JWT (RS256, the signing certificate in ``x5c``) granting
    the intersection of the asked scopes and the user's rights."""

    signer: Issued
    issuer: str
    service: str
    users: dict[str, tuple[str, dict[str, set[str]]]]
    """user -> (password, {repository: {"pull", "push"}})."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    tls: Issued | None = None
    """Serve HTTPS with this certificate."""

    @property
    def realm(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/token"

    def token(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        der = self.signer.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.signer.key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    def answer(self, query: dict[str, list[str]], authorization: str) -> tuple[int, bytes]:
        user = ""
        if authorization.startswith("Basic "):
            user, _sep, password = base64.b64decode(authorization[6:]).decode().partition(":")
            known = self.users.get(user)
            if known is None or known[0] != password:
                self.requests.append({"user": user, "scopes": query.get("scope", []), "ok": False})
                return 401, b'{"details": "invalid credentials"}'
        rights = self.users[user][1] if user else {}
        access = []
        for scope in query.get("scope", []):
            kind, _sep, rest = scope.partition(":")
            name, _sep, actions = rest.rpartition(":")
            granted = sorted(set(actions.split(",")) & rights.get(name, set()))
            access.append({"type": kind, "name": name, "actions": granted})
        self.requests.append({"user": user, "scopes": query.get("scope", []), "ok": True})
        if query.get("service") != [self.service]:
            return 400, b'{"details": "wrong service"}'
        token = self.token(user or "anonymous", access)
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()

    @contextlib.contextmanager
    def serve(self) -> Iterator[TokenServer]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                if parts.path != "/token":
                    self.send_error(404)
                    return
                status, body = owner.answer(
                    urllib.parse.parse_qs(parts.query), self.headers.get("Authorization", "")
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert_path, self.tls.key_path)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def token_auth_yaml(tokens: TokenServer, bundle: Path) -> str:
    return (
        "  token:\n"
        f"    realm: {tokens.realm}\n"
        f"    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n"
        f"    rootcertbundle: {bundle}\n"
    )


# --- a counting proxy ------------------------------------------------------------------------


@dataclass
class Proxy:
    """Plain HTTP on loopback in front of ``upstream``: counts blob GETs by digest, records
    their ``Range`` headers, and can cut the first download of one blob half-way."""

    upstream: str
    cut: str = ""
    """Digest whose first GET is answered with only half of its body, then hung up."""
    gets: Counter[str] = field(default_factory=Counter)
    ranges: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def serve(self) -> Iterator[Proxy]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                match = re.search(r"/blobs/(sha256:[0-9a-f]{64})$", self.path.split("?")[0])
                digest = match.group(1) if match and self.command == "GET" else ""
                cut = False
                if digest:
                    with owner._lock:
                        owner.gets[digest] += 1
                        owner.ranges.append((digest, self.headers.get("Range", "")))
                        cut = digest == owner.cut and owner.gets[digest] == 1
                conn = http.client.HTTPConnection(owner.upstream, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


# --- OCI layouts built in code ----------------------------------------------------------------


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(layout: Path, data: bytes, media: str) -> dict[str, Any]:
    digest = sha(data)
    path = layout / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media, "digest": digest, "size": len(data)}


MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def image_manifest(
    layout: Path, layers: list[bytes], *, arch: str = "amd64", variant: str = ""
) -> dict[str, Any]:
    """Write one image's blobs into ``layout``; returns its manifest descriptor (with
    its platform)."""
    descs = [_blob(layout, layer, "application/vnd.oci.image.layer.v1.tar") for layer in layers]
    config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"arch": arch + variant}},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }
    if variant:
        config["variant"] = variant
    cfg = _blob(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": cfg, "layers": descs}
    desc = _blob(layout, json.dumps(manifest).encode(), MANIFEST)
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    return desc | {"platform": platform}


def write_layout(layout: Path, entries: list[dict[str, Any]]) -> None:
    """``index.json`` and ``oci-layout`` of ``layout`` listing ``entries``."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})
    )


def index_blob(layout: Path, platforms: list[dict[str, Any]]) -> dict[str, Any]:
    """An image index over ``platforms`` (manifest descriptors) stored as a blob."""
    doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": platforms}
    return _blob(layout, json.dumps(doc).encode(), INDEX)


def tagged(desc: dict[str, Any], tag: str) -> dict[str, Any]:
    return desc | {"annotations": {"org.opencontainers.image.ref.name": tag}}


def single_image_layout(layout: Path, layers: list[bytes], tag: str = "latest") -> dict[str, Any]:
    desc = image_manifest(layout, layers)
    entry = {k: v for k, v in desc.items() if k != "platform"}
    write_layout(layout, [tagged(entry, tag)])
    return desc


def skopeo_copy(source: str, dest: str, *extra: str) -> None:
    subprocess.run(
        ["skopeo", "copy", "--quiet", *extra, source, dest],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
