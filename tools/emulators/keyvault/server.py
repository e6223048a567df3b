"""A Key Vault-compatible secrets server (developer tooling, never deployed).

What the azure-keyvault-secrets SDK sees of a real vault: an unauthenticated first request answered
401 with the bearer challenge, then ``GET /secrets/{name}/`` (latest), ``/secrets/{name}/{version}``,
``PUT /secrets/{name}`` with ``value``, ``tags``, ``contentType`` and ``attributes`` (``exp``, ``nbf``,
``enabled``), ``PATCH /secrets/{name}/{version}`` (properties only), the listings ``GET /secrets`` and
``GET /secrets/{name}/versions`` in pages (``maxresults``, at most 25, and ``nextLink``), 404
``SecretNotFound``, any api-version, and injectable faults (429 with Retry-After, 503, latency). Any
non-empty bearer token is accepted: the challenge flow is what the tests exercise, not Azure AD.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tools.emulators.azure import azure_error, has_bearer_token
from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply, TlsEmulator

PAGE_SIZE = 25  # Key Vault's most items per listing page
CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", '
    'resource="https://vault.azure.net"'
)


@dataclass
class SecretVersion:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    attributes: dict[str, Any]


@dataclass
class Vault:
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeyVaultEmulator(TlsEmulator):
    thread_name = "keyvault-emulator"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tls_dir: Path = Path(".local/tls")) -> None:
        self.vault = Vault()
        self.faults = FaultPlan(time.time)
        self.stats: Counter[str] = Counter()
        super().__init__(host, port, tls_dir)

    def reset(self) -> None:
        with self.vault.lock:
            self.vault.secrets.clear()
        self.faults.clear()
        self.stats.clear()

    def secret_values(self) -> set[str]:
        with self.vault.lock:
            return {v.value for versions in self.vault.secrets.values() for v in versions}

    def value(self, name: str) -> str | None:
        with self.vault.lock:
            versions = self.vault.secrets.get(name)
            return versions[-1].value if versions else None

    # -- the wire --------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        path = unquote(urlsplit(target).path).rstrip("/")
        if path.startswith("/_emulator/"):
            return self.admin(method, path, body)
        if not has_bearer_token(headers):
            self.stats["challenges"] += 1
            return azure_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                {"WWW-Authenticate": CHALLENGE},
            )
        fault = self.faults.take()
        if fault is not None:
            self.stats["faults"] += 1
            if fault.kind == "reset":
                return None
            if fault.status == 429:
                return azure_error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                    {"Retry-After": fault.retry_after or "1"},
                )
            return azure_error(fault.status, "ServiceUnavailable", "The service is unavailable.")
        parts = path.strip("/").split("/")
        query = dict(parse_qsl(urlsplit(target).query))
        if parts == ["secrets"] and method == "GET":
            self.stats["reads"] += 1
            return self.listing(path, query, self.latest_of_each())
        if len(parts) < 2 or parts[0] != "secrets":
            return azure_error(400, "BadParameter", f"unsupported path {path}")
        name = parts[1]
        if method == "PUT" and len(parts) == 2:
            self.stats["writes"] += 1
            return self.put(name, body)
        if method == "PATCH" and len(parts) in (2, 3):
            self.stats["writes"] += 1
            return self.update(name, parts[2] if len(parts) == 3 else None, body)
        if method == "GET":
            self.stats["reads"] += 1
            if len(parts) == 3 and parts[2] == "versions":
                with self.vault.lock:
                    versions = [(name, v) for v in self.vault.secrets.get(name, [])]
                return self.listing(path, query, versions, versioned=True)
            return self.get(name, parts[2] if len(parts) == 3 else None)
        return azure_error(405, "MethodNotAllowed", f"{method} {path}")

    def _bundle(
        self, name: str, version: SecretVersion, *, with_value: bool = True, versioned: bool = True
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": f"{self.url}/secrets/{name}" + (f"/{version.version}" if versioned else ""),
            "attributes": {**version.attributes, "recoveryLevel": "Recoverable"},
            "tags": version.tags,
        }
        if version.content_type is not None:
            document["contentType"] = version.content_type
        if with_value:
            document["value"] = version.value
        return document

    def put(self, name: str, body: bytes) -> Reply:
        try:
            document = json.loads(body)
            value = document["value"]
        except (ValueError, KeyError, TypeError):
            return azure_error(400, "BadParameter", "The request body must be a JSON object with a 'value'.")
        if not isinstance(value, str):
            return azure_error(400, "BadParameter", "'value' must be a string.")
        now = int(time.time())
        attributes = {"enabled": True, **(document.get("attributes") or {}), "created": now, "updated": now}
        version = SecretVersion(
            uuid.uuid4().hex, value, document.get("contentType"), dict(document.get("tags") or {}), attributes
        )
        with self.vault.lock:
            self.vault.secrets.setdefault(name, []).append(version)
        return Reply(200, self._bundle(name, version))

    def get(self, name: str, version_id: str | None) -> Reply:
        with self.vault.lock:
            found = self._find(name, version_id)
        if found is None:
            return azure_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name}{'/' + version_id if version_id else ''} was not found in "
                "this key vault.",
            )
        return Reply(200, self._bundle(name, found))

    def _find(self, name: str, version_id: str | None) -> SecretVersion | None:
        """Holding the lock: one version, the latest when ``version_id`` is empty."""
        versions = self.vault.secrets.get(name, [])
        if not version_id:
            return versions[-1] if versions else None
        return next((v for v in versions if v.version == version_id), None)

    def update(self, name: str, version_id: str | None, body: bytes) -> Reply:
        """Properties only (content type, attributes, tags); the value of a version never changes."""
        try:
            document = json.loads(body or b"{}")
            if not isinstance(document, dict) or "value" in document:
                raise ValueError
        except ValueError:
            return azure_error(
                400, "BadParameter", "The request body must be a JSON object of properties, without 'value'."
            )
        with self.vault.lock:
            found = self._find(name, version_id)
            if found is not None:
                if "contentType" in document:
                    found.content_type = document["contentType"]
                if isinstance(document.get("tags"), dict):
                    found.tags = dict(document["tags"])
                found.attributes = {
                    **found.attributes,
                    **(document.get("attributes") or {}),
                    "updated": int(time.time()),
                }
        if found is None:
            return azure_error(
                404, "SecretNotFound", f"A secret with (name/id) {name}/{version_id} was not found in this key vault."
            )
        return Reply(200, self._bundle(name, found, with_value=False))

    def latest_of_each(self) -> list[tuple[str, SecretVersion]]:
        with self.vault.lock:
            return [(name, versions[-1]) for name, versions in sorted(self.vault.secrets.items()) if versions]

    def listing(
        self, path: str, query: dict[str, str], items: list[tuple[str, SecretVersion]], *, versioned: bool = False
    ) -> Reply:
        """One page of a listing: ``maxresults`` (1-25, default 25) items and a ``nextLink`` to the rest."""
        try:
            size = int(query.get("maxresults", PAGE_SIZE))
            start = int(query.get("$skiptoken", 0))
        except ValueError:
            return azure_error(400, "BadParameter", "maxresults and $skiptoken must be whole numbers")
        if not 1 <= size <= PAGE_SIZE:
            return azure_error(400, "BadParameter", f"maxresults must be from 1 to {PAGE_SIZE}")
        page = items[start : start + size]
        rest = start + size < len(items)
        next_link = f"{self.url}{path}?maxresults={size}&$skiptoken={start + size}" if rest else None
        values = [self._bundle(name, v, with_value=False, versioned=versioned) for name, v in page]
        return Reply(200, {"value": values, "nextLink": next_link})

    def admin(self, method: str, path: str, body: bytes) -> Reply:
        name = path[len("/_emulator/") :]
        if name == "faults":
            return Reply(200, self.faults.admin(method, json.loads(body or b"{}")))
        if name == "stats":
            return Reply(200, dict(self.stats))
        if name == "secrets":
            with self.vault.lock:
                return Reply(200, {"names": sorted(self.vault.secrets)})
        return azure_error(404, "NotFound", path)
