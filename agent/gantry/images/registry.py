"""A registry client for the OCI distribution API (pull and push).

- Authentication: anonymous, HTTP Basic, and bearer tokens from the realm a 401's
  ``WWW-Authenticate`` names (the Docker token protocol), with basic credentials passed
  to the token server when configured.
- Transport: HTTPS, verified against the system CAs or a configured CA file. Plain HTTP
  only for registries on loopback (as Docker allows) or ones named insecure; for those
  HTTPS is tried first.
- Blobs are written to the store's resumable ingests: a download that breaks resumes with
  a ``Range`` request, and nothing enters the store unless its digest matches. Concurrent
  pulls of a layer shared by several images fetch it once (the others wait for it).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gantry.images import digest as dg
from gantry.images import oci
from gantry.images.errors import CertificateError, DigestMismatch, ImageError, RegistryError
from gantry.images.reference import DEFAULT_REGISTRY, Reference
from gantry.images.store import ContentStore, ImageRecord

Progress = Callable[[dict[str, Any]], None]
"""Called with one dict per step (see docs/images.md, "Progress"):
``{"action": "pull"|"push", "digest": "sha256:…", "status": "exists"|"downloading"|
"uploading"|"done", "current": bytes so far, "total": bytes or None}``."""

MANIFEST_ACCEPT: Final = ", ".join(
    (oci.OCI_INDEX, oci.OCI_MANIFEST, oci.DOCKER_LIST, oci.DOCKER_MANIFEST)
)
_MANIFEST_LIMIT: Final = 4 << 20
_CHUNK: Final = 1 << 20
_RETRIES: Final = 3
_DOCKER_HUB: Final = "registry-1.docker.io"
_CHALLENGE: Final = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries (from the agent's config)."""

    insecure: frozenset[str] = frozenset()
    """Registry hosts (``host[:port]``) allowed over plain HTTP besides loopback ones."""
    credentials: dict[str, Credentials] = field(default_factory=dict)
    """Credentials by registry host."""
    ca_files: dict[str, Path] = field(default_factory=dict)
    """Extra CA bundle by registry host (``*`` for every registry)."""
    timeout: float = 60.0


def plain_http_allowed(registry: str, insecure: frozenset[str] | set[str]) -> bool:
    """Whether ``registry`` (``host[:port]``) may be spoken to over plain HTTP: only a
    loopback registry (as Docker allows) or one named in ``insecure`` (by ``host:port``,
    or by ``host`` alone for every port)."""
    return is_loopback(registry) or listed_insecure(registry, insecure)


def listed_insecure(registry: str, insecure: frozenset[str] | set[str]) -> bool:
    """Whether ``registry`` is named in ``insecure`` (as ``host:port`` or ``host``)."""
    host = registry[: registry.index("]") + 1] if registry.startswith("[") else registry
    if not registry.startswith("[") and registry.count(":") == 1:
        host = registry.split(":", 1)[0]
    return registry in insecure or host in insecure


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.index("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Response:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = resp.headers

    def read(self, limit: int | None = None) -> bytes:
        try:
            if limit is None:
                return self.resp.read()
            data = self.resp.read(limit + 1)
            if len(data) > limit:
                raise RegistryError(f"response larger than {limit} bytes")
            return data
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        try:
            while chunk := self.resp.read(_CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


class RegistryClient:
    """Pull and push images between one content store and registries."""

    def __init__(self, store: ContentStore, options: RegistryOptions | None = None) -> None:
        self.store = store
        self.options = options or RegistryOptions()
        self._tokens: dict[tuple[str, str], str] = {}
        self._schemes: dict[str, str] = {}
        self._lock = threading.Lock()

    # --- transport -----------------------------------------------------------------------

    def _host(self, registry: str) -> str:
        return _DOCKER_HUB if registry == DEFAULT_REGISTRY else registry

    def _plain_allowed(self, registry: str) -> bool:
        return plain_http_allowed(registry, self.options.insecure)

    def _ssl_context(self, *names: str) -> ssl.SSLContext:
        """The system CAs plus the configured CA files of ``names`` (or ``*``). A registry
        named insecure is not verified at all, as Docker does (loopback ones are)."""
        context = ssl.create_default_context()
        if any(listed_insecure(name, self.options.insecure) for name in names[:1]):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        cas = {self.options.ca_files[n] for n in names if n in self.options.ca_files}
        if not cas and "*" in self.options.ca_files:
            cas.add(self.options.ca_files["*"])
        for ca in sorted(cas):
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"ca_files: cannot load {ca}: {exc}") from None
        return context

    def _connect(
        self, scheme: str, netloc: str, registry: str, trust: str = ""
    ) -> http.client.HTTPConnection:
        timeout = self.options.timeout
        if scheme == "https":
            return http.client.HTTPSConnection(
                netloc, timeout=timeout, context=self._ssl_context(registry, trust or registry)
            )
        if not self._plain_allowed(registry):
            raise RegistryError(
                f"registry {registry}: plain HTTP is allowed only for registries on loopback "
                "or named in the agent's insecure registries"
            )
        return http.client.HTTPConnection(netloc, timeout=timeout)

    def _send(
        self,
        registry: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any = None,
        trust: str = "",
    ) -> _Response:
        """One request, following redirects (without our credentials to another host).
        HTTPS is verified with ``registry``'s CA files and those of ``trust`` (the
        registry a token server serves, as Docker trusts it with the registry's CA)."""
        for _hop in range(5):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts.scheme, parts.netloc, registry, trust)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise CertificateError(
                    f"registry {registry}: TLS certificate of {parts.netloc} not trusted: "
                    f"{exc.verify_message or exc.reason} (give the CA that signed it in "
                    f"ca_files for {registry})"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise RegistryError(f"registry {registry}: {method} {url}: {exc}") from None
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                location = urllib.parse.urljoin(url, resp.headers["Location"])
                resp.close()
                conn.close()
                if urllib.parse.urlsplit(location).netloc != parts.netloc:
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                url = location
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return _Response(conn, resp)
        raise RegistryError(f"registry {registry}: too many redirects for {url}")

    def _base(self, registry: str) -> str:
        with self._lock:
            scheme = self._schemes.get(registry)
        if scheme is None:
            scheme = self._probe_scheme(registry)
            with self._lock:
                self._schemes[registry] = scheme
        return f"{scheme}://{self._host(registry)}"

    def _probe_scheme(self, registry: str) -> str:
        """HTTPS, unless the registry may use plain HTTP and does not speak TLS at all. A
        registry that speaks TLS with a certificate we cannot verify is an error, not a
        reason to fall back."""
        try:
            self._send(registry, "GET", f"https://{self._host(registry)}/v2/", {}).close()
            return "https"
        except CertificateError:
            raise
        except RegistryError as exc:
            if not self._plain_allowed(registry):
                raise RegistryError(
                    f"{exc}; plain HTTP is allowed only for registries on loopback or named "
                    "in the agent's insecure registries"
                ) from None
        return "http"

    def request(
        self,
        ref: Reference,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        push: bool = False,
        ok: tuple[int, ...] = (200,),
    ) -> _Response:
        """An authenticated request to ``path`` (under ``/v2/<repository>/`` unless it is
        a full URL); a status outside ``ok`` raises :class:`RegistryError`."""
        url = path if "://" in path else f"{self._base(ref.registry)}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        sent = dict(headers or {})
        auth = self._cached_auth(ref.registry, scope)
        if auth:
            sent["Authorization"] = auth
        resp = self._send(ref.registry, method, url, sent, body)
        if resp.status == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.read()
            auth = self._authenticate(ref.registry, challenge, scope)
            sent["Authorization"] = auth
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self._send(ref.registry, method, url, sent, body)
            if resp.status in (401, 403) and resp.status not in ok:
                detail = _error_detail(resp.read(64 << 10))
                self._forget(ref.registry)
                raise RegistryError(self._denied(ref, push, resp.status, detail))
        if resp.status not in ok:
            detail = _error_detail(resp.read(64 << 10))
            raise RegistryError(
                f"registry {ref.registry}: {method} {ref.repository} {path.split('?')[0]}: "
                f"HTTP {resp.status}{detail}"
            )
        return resp

    def _denied(self, ref: Reference, push: bool, status: int, detail: str) -> str:
        creds = self.options.credentials.get(ref.registry)
        verb = "push to" if push else "pull from"
        if creds is None:
            return (
                f"registry {ref.registry}: authentication required to {verb} "
                f"{ref.repository} and no credentials are configured for {ref.registry} "
                f"(HTTP {status}{detail})"
            )
        return (
            f"registry {ref.registry}: access denied for user {creds.username!r} "
            f"to {verb} {ref.repository}: wrong username or password, or no "
            f"{'push' if push else 'pull'} right (HTTP {status}{detail})"
        )

    def _forget(self, registry: str) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == registry]:
                del self._tokens[key]

    def _cached_auth(self, registry: str, scope: str) -> str | None:
        with self._lock:
            return self._tokens.get((registry, scope)) or self._tokens.get((registry, ""))

    def _authenticate(self, registry: str, challenge: str, scope: str) -> str:
        scheme, _sep, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE.findall(params_text))
        creds = self.options.credentials.get(registry)
        if scheme.lower() == "basic":
            if creds is None:
                raise RegistryError(
                    f"registry {registry}: authentication required (HTTP Basic) and no "
                    f"credentials are configured for {registry}"
                )
            token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            auth = f"Basic {token}"
            with self._lock:
                self._tokens[(registry, "")] = auth
            return auth
        if scheme.lower() != "bearer" or "realm" not in params:
            raise RegistryError(
                f"registry {registry}: unsupported authentication challenge {challenge!r}"
            )
        # Ask for what this operation needs (pull, or pull and push) up front, and for
        # what the challenge names if that is something else.
        scopes = [scope]
        if params.get("scope") and params["scope"] != scope:
            scopes.append(params["scope"])
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", item) for item in scopes]
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        if creds is not None:
            basic = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        parts = urllib.parse.urlsplit(url)
        if (
            parts.scheme != "https"
            and not is_loopback(parts.netloc)
            and parts.netloc not in self.options.insecure
        ):
            raise RegistryError(f"registry {registry}: token realm {realm} is not HTTPS")
        resp = self._send(parts.netloc, "GET", url, headers, trust=registry)
        body = resp.read(1 << 20)
        if resp.status in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise RegistryError(
                f"registry {registry}: the token server {parts.netloc} refused {who} "
                f"(HTTP {resp.status}): wrong username or password"
                + ("" if creds else f", or no credentials are configured for {registry}")
            )
        if resp.status != 200:
            raise RegistryError(
                f"registry {registry}: token server answered "
                f"HTTP {resp.status}{_error_detail(body)}"
            )
        try:
            data = json.loads(body)
            bearer: object = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            bearer = None
        if not isinstance(bearer, str) or not bearer:
            raise RegistryError(f"registry {registry}: token server sent no token")
        auth = f"Bearer {bearer}"
        with self._lock:
            self._tokens[(registry, scope)] = auth
        return auth

    # --- pull ----------------------------------------------------------------------------

    def fetch_manifest(self, ref: Reference, reference: str) -> tuple[str, bytes, str]:
        """``(digest, body, media type)`` of manifest ``reference`` (a tag or a digest)."""
        resp = self.request(
            ref, "GET", f"manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
        )
        media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        body = resp.read(_MANIFEST_LIMIT)
        digest = dg.of_bytes(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(
                f"manifest {reference}: the registry sent content hashing to {digest}"
            )
        return digest, body, media

    def pull(
        self,
        ref: Reference,
        *,
        platform: tuple[str, str, str] | None = None,
        progress: Progress | None = None,
    ) -> ImageRecord:
        """Pull ``ref`` (the host's platform of a multi-platform image) into the store and
        tag it. Blobs already in the store are not fetched again."""
        with self.store.lease() as lease:
            digest, body, media = self.fetch_manifest(ref, ref.digest or ref.tag or "latest")
            self.store.put_bytes(body, digest)
            lease.add(digest)
            doc = oci.parse_json(body, f"manifest {digest}")
            extra: dict[str, Any] = {}
            if oci.media_type_of(doc, media) in oci.INDEXES:
                desc = oci.pick_platform(doc, platform, what=str(ref))
                index_digest = digest
                digest, body, media = self.fetch_manifest(
                    ref, dg.validate(desc.get("digest"), "index manifests[].digest")
                )
                self.store.put_bytes(body, digest)
                lease.add(digest)
                extra = {"index": index_digest, "blobs": [index_digest]}

            def fetch(desc: dict[str, Any]) -> None:
                # Leased before the download starts: gc keeps its partial ingest.
                lease.add(dg.validate(desc.get("digest"), "descriptor digest"))
                self.fetch_blob(ref, desc, progress=progress)

            image = oci.register_manifest(
                self.store, digest, fetch=fetch, extra=extra | {"source": str(ref)}
            )
            if ref.tag and not ref.digest:
                self.store.set_ref(ref.tagged, image.manifest)
            return image

    def fetch_blob(
        self, ref: Reference, desc: dict[str, Any], *, progress: Progress | None = None
    ) -> None:
        """Download blob ``desc`` into the store (once, however many pulls want it)."""
        digest = dg.validate(desc.get("digest"), "descriptor digest")
        size = desc.get("size")
        total = int(size) if isinstance(size, int) else None
        with self.store.exclusive(f"blob:{digest}"):
            if self.store.has_blob(digest):
                _emit(progress, "pull", digest, "exists", total or 0, total)
                return
            for attempt in range(_RETRIES):
                ingest = self.store.ingest(digest, total)
                try:
                    self._download(ref, digest, ingest, total, progress)
                    ingest.commit()
                    _emit(progress, "pull", digest, "done", ingest.offset, total)
                    return
                except DigestMismatch:
                    raise
                except RegistryError:
                    ingest.close()  # keep what arrived: the next attempt resumes
                    if attempt == _RETRIES - 1:
                        raise
                finally:
                    ingest.close()

    def _download(
        self, ref: Reference, digest: str, ingest: Any, total: int | None, progress: Progress | None
    ) -> None:
        headers = {}
        if ingest.offset:
            headers["Range"] = f"bytes={ingest.offset}-"
        resp = self.request(ref, "GET", f"blobs/{digest}", headers=headers, ok=(200, 206))
        if resp.status == 200 and ingest.offset:
            ingest.reset()  # the server ignored the range: start over
        _emit(progress, "pull", digest, "downloading", ingest.offset, total)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            for chunk in resp.chunks():
                ingest.write(chunk)
                received += len(chunk)
                _emit(progress, "pull", digest, "downloading", ingest.offset, total)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"blob {digest}: download broke off: {exc}") from None
        # http.client returns a short body without complaint when the connection closes
        # early: compare with what the server announced (and the descriptor's size).
        if (expected is not None and received < expected) or (
            total is not None and ingest.offset < total
        ):
            raise RegistryError(
                f"blob {digest}: download broke off after {ingest.offset} of "
                f"{total if total is not None else '?'} bytes"
            )

    # --- push ----------------------------------------------------------------------------

    def push(self, ref: Reference, image: ImageRecord, *, progress: Progress | None = None) -> str:
        """Push ``image`` as ``ref`` (its tag); returns the manifest digest the registry has."""
        if not ref.tag:
            raise ImageError("reference: pushing needs a tag")
        for digest in (*(layer.digest for layer in image.layers), image.config):
            self._push_blob(ref, digest, progress)
        body = self.store.read_blob(image.manifest)
        media = oci.media_type_of(oci.parse_json(body, "manifest"), oci.OCI_MANIFEST)
        resp = self.request(
            ref,
            "PUT",
            f"manifests/{ref.tag}",
            headers={"Content-Type": media, "Content-Length": str(len(body))},
            body=body,
            push=True,
            ok=(200, 201),
        )
        sent = resp.headers.get("Docker-Content-Digest")
        resp.read()
        if sent and sent != image.manifest:
            raise DigestMismatch(f"registry stored the manifest as {sent}, not {image.manifest}")
        _emit(progress, "push", image.manifest, "done", len(body), len(body))
        return image.manifest

    def _push_blob(self, ref: Reference, digest: str, progress: Progress | None) -> None:
        size = self.store.blob_size(digest)
        head = self.request(ref, "HEAD", f"blobs/{digest}", push=True, ok=(200, 404))
        head.close()
        if head.status == 200:
            _emit(progress, "push", digest, "exists", size, size)
            return
        start = self.request(
            ref,
            "POST",
            "blobs/uploads/",
            headers={"Content-Length": "0"},
            body=b"",
            push=True,
            ok=(202,),
        )
        location = start.headers.get("Location")
        start.read()
        if not location:
            raise RegistryError(f"registry {ref.registry}: upload started without a Location")
        url = urllib.parse.urljoin(
            f"{self._base(ref.registry)}/v2/{ref.repository}/blobs/uploads/", location
        )
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        _emit(progress, "push", digest, "uploading", 0, size)
        with open(self.store.blob_path(digest), "rb") as body:
            resp = self.request(
                ref,
                "PUT",
                url,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=body,
                push=True,
                ok=(201, 204),
            )
        resp.read()
        _emit(progress, "push", digest, "done", size, size)


def _emit(
    progress: Progress | None,
    action: str,
    digest: str,
    status: str,
    current: int,
    total: int | None,
) -> None:
    if progress is not None:
        progress(
            {
                "action": action,
                "digest": digest,
                "status": status,
                "current": current,
                "total": total,
            }
        )


def _error_detail(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        messages = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        return f" ({'; '.join(messages)})" if messages else ""
    except (ValueError, AttributeError):
        return ""
