"""The settings reader: what every package's schema reads app settings with.

Each package declares the settings it reads beside its schema (:func:`declare`), so the names the app knows are
computed, never a hand-kept list; the reader refuses a name nobody declared. Every problem is collected before
start-up stops, so an operator fixes all of them in one pass; each message names the setting and the form it
expects. Secret values are never read here: the settings only name secrets, and the secret store resolves them
when a client is built. The schemas live beside what they configure (``shared.<package>.settings``); the whole
app's is :mod:`shared.settings`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shared.platform.ncrontab import Schedule, ScheduleError

T = TypeVar("T")

SECRET_NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")  # Key Vault's secret names
QUEUE_NAME_PATTERN = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
TABLE_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")  # Table storage's table names
CONNECTION_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # a ServiceNow connection's or a source's name

# How the app signs in to an Azure service (Key Vault, Resource Manager): its managed identity, a developer's
# sign-in, or, for a localhost emulator only, a fixed token.
Credential = Literal["managed_identity", "default", "emulator"]
CREDENTIALS: tuple[Credential, ...] = ("managed_identity", "default", "emulator")
LOCAL_HOSTS = ("localhost", "127.0.0.1")

_declared: set[str] = set()
_declared_prefixes: set[str] = set()


def declare(*names: str) -> tuple[str, ...]:
    """Record the app settings a schema reads (at import, beside its reader); returns them."""
    _declared.update(names)
    return names


def declare_prefix(prefix: str) -> str:
    """Record a family of settings read by a computed name, such as ``ALERTS_STORAGE__queueServiceUri``."""
    _declared_prefixes.add(prefix)
    return prefix


def known_settings() -> frozenset[str]:
    """Every app setting a schema declares it reads (the schemas whose modules are imported)."""
    return frozenset(_declared)


def is_declared(name: str) -> bool:
    return name in _declared or name.startswith(tuple(_declared_prefixes))


class SettingsError(ValueError):
    """One or more app settings are missing or malformed; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid app settings ({len(problems)} problem(s)):\n{lines}")


class Reader:
    """Reads settings from one mapping and collects every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        assert is_declared(name), f"declare {name} beside the schema that reads it"
        value = self.environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def required(self, name: str, expected: str) -> str | None:
        value = self.raw(name)
        if value is None:
            self.problems.append(f"{name} is not set; expected {expected}")
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not minimum <= number <= maximum:
            self.problems.append(f"{name}={value!r} is invalid; expected a number from {minimum:g} to {maximum:g}")
            return default
        return number

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if not re.fullmatch(r"[0-9]+", value) or not minimum <= int(value) <= maximum:
            self.problems.append(f"{name}={value!r} is invalid; expected a whole number from {minimum} to {maximum}")
            return default
        return int(value)

    def parsed(self, name: str, parse: Callable[[str, str], T]) -> T | None:
        """An optional setting through ``parse(value, name)``, whose ValueError becomes a problem; None if unset."""
        value = self.raw(name)
        if value is None:
            return None
        try:
            return parse(value, name)
        except ValueError as exc:
            self.problems.append(str(exc))
            return None

    def json_items(
        self, name: str, value: str, parse: Callable[[Any, int], T], what: str, non_empty: bool = False
    ) -> list[T]:
        """``value`` (the setting ``name``) as a JSON list of ``what``, each item through ``parse(item, index)``;
        a malformed document or item is a problem, the other items are still read."""
        try:
            document = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"{name} is not valid JSON ({exc.msg} at character {exc.pos})")
            return []
        if not isinstance(document, list) or (non_empty and not document):
            self.fail(f"{name} must be a {'non-empty ' if non_empty else ''}JSON list of {what}")
            return []
        items: list[T] = []
        for index, item in enumerate(document):
            try:
                items.append(parse(item, index))
            except ValueError as exc:
                self.fail(str(exc))
        return items

    def fail(self, message: str) -> None:
        self.problems.append(message)


def check_queue_name(reader: Reader, name: str) -> str:
    value = reader.required(name, "a storage queue name such as 'alerts'") or ""
    if value and not QUEUE_NAME_PATTERN.fullmatch(value):
        reader.fail(
            f"{name}={value!r} is not a valid queue name; expected 3-63 lower-case letters, digits and "
            "single dashes, starting and ending with a letter or digit"
        )
    return value


def check_schedule(reader: Reader, name: str, example: str) -> str:
    value = reader.required(name, f"an NCRONTAB expression such as '{example}'") or ""
    if value:
        try:
            Schedule.parse(value)  # the host parses it with NCrontab, and refuses to create the timer if it fails
        except ScheduleError as exc:
            reader.fail(
                f"{name}={value!r} is not an NCRONTAB expression the Functions host accepts: {exc}; e.g. '{example}'"
            )
    return value


def parse_credential(value: object, where: str, host: str | None, emulator_only: str) -> Credential:
    """An Azure credential choice; ``emulator_only`` is the problem when 'emulator' names a non-local host."""
    if value not in CREDENTIALS:
        raise ValueError(f"{where}={value!r} is invalid; expected managed_identity, default or emulator")
    if value == "emulator" and host not in LOCAL_HOSTS:
        raise ValueError(emulator_only)
    return value


def redact_url(url: str) -> str:
    """Hide the password part of ``scheme://user:password@host``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class ProxyUrl:
    """An outbound HTTPS proxy; the URL may carry credentials, so its repr redacts them."""

    url: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ProxyUrl({redact_url(self.url)!r})"


def parse_proxy_url(value: str, where: str) -> ProxyUrl:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(
            f"{where}={redact_url(value)!r} is invalid; expected http(s)://[user:password@]host:port, "
            "e.g. 'http://10.0.0.4:3128'"
        )
    return ProxyUrl(value)


def parse_ca_bundle(value: str, where: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"{where}={value!r} is invalid; expected the path of an existing PEM CA bundle file")
    return path


PLACEHOLDER_DOMAINS = (".example", ".invalid")  # RFC 2606: reserved for documentation, never a real host


def refuse_placeholder(url: str, where: str) -> None:
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(PLACEHOLDER_DOMAINS):
        raise ValueError(f"{where}={url!r} is a documentation placeholder (a reserved .example host); set the real one")


@dataclass(frozen=True)
class StorageConnection:
    """A storage account the code reaches: by connection string (locally) or by identity (in Azure).

    Connection strings carry the account key, so they never appear in a repr.
    """

    name: str
    connection_string: str | None = field(default=None, repr=False)
    queue_uri: str | None = None
    table_uri: str | None = None
    blob_uri: str | None = None
    client_id: str | None = None


def check_storage_connection(reader: Reader, name: str) -> StorageConnection:
    # The Functions host resolves a named connection either from a connection string setting or from
    # identity-based `__queueServiceUri` / `__accountName` settings; the code reads it the same way.
    if connection_string := reader.raw(name):
        return StorageConnection(name, connection_string=connection_string)
    account = reader.raw(f"{name}__accountName")
    queue_uri = reader.raw(f"{name}__queueServiceUri") or (account and f"https://{account}.queue.core.windows.net")
    if queue_uri:
        return StorageConnection(
            name,
            queue_uri=queue_uri,
            table_uri=reader.raw(f"{name}__tableServiceUri")
            or (account and f"https://{account}.table.core.windows.net"),
            blob_uri=reader.raw(f"{name}__blobServiceUri") or (account and f"https://{account}.blob.core.windows.net"),
            client_id=reader.raw(f"{name}__clientId"),
        )
    reader.fail(
        f"{name} is not set; expected a storage connection string (locally 'UseDevelopmentStorage=true') "
        f"or identity-based settings {name}__queueServiceUri (with {name}__credential=managedidentity "
        f"and {name}__clientId)"
    )
    return StorageConnection(name)


declare("KEY_VAULT_URL", "KEY_VAULT_CREDENTIAL", "KEY_VAULT_CA_BUNDLE", "AZURE_CLIENT_ID")


@dataclass(frozen=True)
class KeyVaultSettings:
    """Where secrets live in Azure. ``credential``: managed_identity (Azure), default (developer sign-in)
    or emulator (the local Key Vault emulator only)."""

    url: str
    credential: Credential = "managed_identity"
    client_id: str | None = None
    ca_bundle: Path | None = None


def check_key_vault(reader: Reader) -> KeyVaultSettings | None:
    url = reader.raw("KEY_VAULT_URL")
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        reader.fail(f"KEY_VAULT_URL={url!r} is invalid; expected https://<vault-name>.vault.azure.net")
        return None
    client_id = reader.raw("AZURE_CLIENT_ID")
    choice = reader.raw("KEY_VAULT_CREDENTIAL") or ("managed_identity" if client_id else "default")
    try:
        credential = parse_credential(
            choice,
            "KEY_VAULT_CREDENTIAL",
            parts.hostname,
            "KEY_VAULT_CREDENTIAL=emulator is for the local Key Vault emulator only (a localhost URL)",
        )
    except ValueError as exc:
        reader.fail(str(exc))
        return None
    ca_bundle = reader.parsed("KEY_VAULT_CA_BUNDLE", parse_ca_bundle)
    return KeyVaultSettings(url.rstrip("/"), credential, client_id, ca_bundle)
