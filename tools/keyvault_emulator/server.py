"""A Key Vault-compatible secrets server (developer tooling, never deployed).

What the azure-keyvault-secrets SDK sees of a real vault: an unauthenticated first request answered
401 with the bearer challenge, then ``GET /secrets/{name}/`` (latest), ``/secrets/{name}/{version}``,
``/secrets/{name}/versions`` and ``PUT /secrets/{name}`` with ``value``, ``tags``, ``contentType``
and ``attributes`` (``exp``, ``nbf``, ``enabled``), 404 ``SecretNotFound``, any api-version, and
injectable faults (429 with Retry-After, 503, latency). Any non-empty bearer token is accepted: the
challenge flow is what the tests exercise, not Azure AD.
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
from urllib.parse import unquote, urlsplit

from tools.faults import FaultPlan
from tools.httpserver import Reply, TlsEmulator

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


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"code": code, "message": message}},
        headers or {},
        content_type="application/json; charset=utf-8",
    )


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
        if (
            not headers.get("authorization", "").lower().startswith("bearer ")
            or not headers["authorization"][7:].strip()
        ):
            self.stats["challenges"] += 1
            return error(
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
                return error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                    {"Retry-After": fault.retry_after or "1"},
                )
            return error(fault.status, "ServiceUnavailable", "The service is unavailable.")
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "secrets":
            return error(400, "BadParameter", f"unsupported path {path}")
        name = parts[1]
        if method == "PUT" and len(parts) == 2:
            self.stats["writes"] += 1
            return self.put(name, body)
        if method == "GET":
            self.stats["reads"] += 1
            if len(parts) == 3 and parts[2] == "versions":
                return self.versions(name)
            return self.get(name, parts[2] if len(parts) == 3 else None)
        return error(405, "MethodNotAllowed", f"{method} {path}")

    def _bundle(self, name: str, version: SecretVersion, *, with_value: bool = True) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": f"{self.url}/secrets/{name}/{version.version}",
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
            return error(400, "BadParameter", "The request body must be a JSON object with a 'value'.")
        if not isinstance(value, str):
            return error(400, "BadParameter", "'value' must be a string.")
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
            versions = list(self.vault.secrets.get(name, []))
        found = (
            versions[-1]
            if versions and version_id in (None, "")
            else next((v for v in versions if v.version == version_id), None)
        )
        if found is None:
            return error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name}{'/' + version_id if version_id else ''} was not found in "
                "this key vault.",
            )
        return Reply(200, self._bundle(name, found))

    def versions(self, name: str) -> Reply:
        with self.vault.lock:
            versions = list(self.vault.secrets.get(name, []))
        return Reply(200, {"value": [self._bundle(name, v, with_value=False) for v in versions], "nextLink": None})

    def admin(self, method: str, path: str, body: bytes) -> Reply:
        name = path[len("/_emulator/") :]
        if name == "faults":
            return Reply(200, self.faults.admin(method, json.loads(body or b"{}")))
        if name == "stats":
            return Reply(200, dict(self.stats))
        if name == "secrets":
            with self.vault.lock:
                return Reply(200, {"names": sorted(self.vault.secrets)})
        return error(404, "NotFound", path)
