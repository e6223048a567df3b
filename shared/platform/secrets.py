"""Secret values and where they come from.

A :class:`Secret` never shows its value in ``repr``/``str``, so it cannot leak through a log line,
an exception message or a dataclass repr by accident; code that needs the value calls ``reveal()``.

Secret stores are looked up by *secret name* (Key Vault naming: letters, digits, dashes). The
environment store serves local development and Azure app settings that hold Key Vault references;
the Key Vault store (tokens issue) serves production.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.platform.imports import late_imports


class Secret:
    """A secret string that refuses to print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretNotFoundError(LookupError):
    """The named secret does not exist in the store."""


class SecretStore(Protocol):
    def get(self, name: str) -> Secret:
        """Return the current value of secret ``name`` or raise :class:`SecretNotFoundError`."""
        ...


def environment_variable_for(secret_name: str) -> str:
    """Map a Key Vault-style secret name to an app setting name: ``sn-default-password`` → ``SN_DEFAULT_PASSWORD``."""
    return secret_name.upper().replace("-", "_")


class EnvironmentSecretStore:
    """Secrets from app settings (environment), e.g. Key Vault references resolved by App Service."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> Secret:
        variable = environment_variable_for(name)
        value = self._environ.get(variable)
        if not value:
            raise SecretNotFoundError(f"secret {name!r} not found: app setting {variable} is not set")
        return Secret(value)


class SecretStoreUnavailableError(RuntimeError):
    """The secret store could not be reached or throttled us past its retries: try again later."""


@dataclass(frozen=True)
class StoredSecret:
    value: Secret
    expires_on: datetime | None
    tags: Mapping[str, str]
    updated_on: datetime | None


class KeyVaultSecretStore:
    """Secrets in Azure Key Vault through the real SDK, cached in memory for ``ttl`` seconds."""

    def __init__(self, client: Any, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, StoredSecret]] = {}
        self._lock = threading.Lock()
        self.reads = 0

    @classmethod
    def connect(
        cls, url: str, credential: Any, ca_bundle: Path | None = None, ttl: float = 60.0
    ) -> KeyVaultSecretStore:
        with late_imports:
            from azure.keyvault.secrets import SecretClient  # noqa: PLC0415 - heavy; only when Key Vault is configured

        options: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.5, "retry_backoff_max": 8}
        if ca_bundle is not None:  # the local emulator: private CA, challenge resource on localhost
            options.update(connection_verify=str(ca_bundle), verify_challenge_resource=False)
        return cls(SecretClient(url, credential, **options), ttl)

    def _call(self, name: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except ResourceNotFoundError:
            raise SecretNotFoundError(f"secret {name!r} not found in Key Vault") from None
        except AzureError as exc:
            status = getattr(exc, "status_code", None)
            raise SecretStoreUnavailableError(
                f"Key Vault unavailable ({getattr(self.client, 'vault_url', '?')}) reading or writing {name!r}: "
                f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
            ) from None

    def read(self, name: str, *, fresh: bool = False) -> StoredSecret:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and not fresh and now - cached[0] < self.ttl:
            return cached[1]
        bundle = self._call(name, lambda: self.client.get_secret(name))
        self.reads += 1
        stored = StoredSecret(
            Secret(bundle.value or ""),
            bundle.properties.expires_on,
            dict(bundle.properties.tags or {}),
            bundle.properties.updated_on,
        )
        with self._lock:
            self._cache[name] = (now, stored)
        return stored

    def get(self, name: str) -> Secret:
        return self.read(name).value

    def write(
        self,
        name: str,
        value: Secret,
        *,
        content_type: str,
        expires_on: datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._call(
            name,
            lambda: self.client.set_secret(
                name, value.reveal(), content_type=content_type, expires_on=expires_on, tags=dict(tags or {})
            ),
        )
        with self._lock:
            self._cache[name] = (self.clock(), StoredSecret(value, expires_on, dict(tags or {}), None))
