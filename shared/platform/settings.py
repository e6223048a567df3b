"""App settings: read once from the environment, validated once, typed.

Every problem is collected before start-up stops, so an operator fixes all of them in one pass;
each message names the setting and the form it expects. Secret values are never read here: the
settings only name secrets, and the secret store resolves them when a client is built.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shared.platform.ncrontab import Schedule, ScheduleError

T = TypeVar("T")
AuthMode = Literal["oauth", "client_credentials", "basic", "bearer"]
AUTH_MODES: tuple[str, ...] = ("oauth", "client_credentials", "basic", "bearer")
OAUTH_MODES = ("oauth", "client_credentials")

# Every app setting the product reads; a setting with one of PREFIXES that is not here is a typo or left over.
KNOWN_SETTINGS = frozenset(
    {
        "ALERTS_QUEUE",
        "ALERTS_STORAGE",
        "TOKEN_REFRESH_SCHEDULE",
        "DEVICE_SYNC_SCHEDULE",
        "SERVICENOW_CONNECTIONS",
        "SERVICENOW_PROXY_URL",
        "SERVICENOW_CA_BUNDLE",
        "SERVICENOW_CONNECT_TIMEOUT_SECONDS",
        "SERVICENOW_READ_TIMEOUT_SECONDS",
        "SERVICENOW_RETRY_BUDGET_SECONDS",
        "SERVICENOW_MAX_ATTEMPTS",
        "SERVICENOW_CONCURRENCY",
        "SERVICENOW_HOURLY_REQUESTS",
        "FORWARDING_RULES_LOCATION",
        "FORWARDING_LEDGER_TABLE",
        "FORWARDING_MAX_AGE_HOURS",
        "FORWARDING_RETRY_BASE_SECONDS",
        "FORWARDING_RETRY_MAX_SECONDS",
        "FORWARDING_CLAIM_SECONDS",
        "FORWARDING_RULES_CHECK_SECONDS",
        "KEY_VAULT_URL",
        "KEY_VAULT_CREDENTIAL",
        "KEY_VAULT_CA_BUNDLE",
        "AZURE_CLIENT_ID",
        "DEVICE_SYNC_ENABLED",
        "DEVICE_SYNC_FREQUENCY_MINUTES",
        "DEVICE_SYNC_CONNECTION",
        "DEVICE_SYNC_STATE_TABLE",
        "DEVICE_SYNC_DATA_SOURCE",
        "DEVICE_SYNC_BATCH_SIZE",
        "DEVICE_SYNC_PAGE_SIZE",
        "DEVICE_SYNC_CLASS_MAP",
        "DEVICE_SYNC_ABSENCE_HOURS",
        "DEVICE_SYNC_CLOUD_DATA_SOURCES",
        "CONSOLE_URL",
        "CONSOLE_CA_BUNDLE",
        "CONSOLE_PROXY_URL",
        "CONSOLE_TOKEN_SECRET",
        "ALERT_INTAKE_SCHEDULE",
        "ALERT_INTAKE_STATE_TABLE",
        "ALERT_INTAKE_OVERLAP_MINUTES",
        "DEFENDER_SOURCES",
        "TOKEN_RENEW_BEFORE_MINUTES",
        "TOKEN_REFRESH_WARNING_DAYS",
        "TOKEN_REFRESH_ERROR_DAYS",
    }
)
# The identity-based form of a storage connection: the host reads <NAME>__queueServiceUri, __clientId, …
STORAGE_IDENTITY_PREFIX = "ALERTS_STORAGE__"
PREFIXES = (
    "ALERTS_",
    "ALERT_INTAKE_",
    "DEFENDER_",
    "SERVICENOW_",
    "FORWARDING_",
    "DEVICE_SYNC_",
    "CONSOLE_",
    "KEY_VAULT_",
    "TOKEN_",
)

# How far the intake and the cloud device reads reach back behind their watermarks: Microsoft documents that
# Defender's data can show up to an hour late, and an alert that opens and closes inside a shorter reach-back
# is never seen (docs/platform-checks.md).
OVERLAP_MINUTES = 60.0
SECRET_NAME_PATTERN = re.compile(r"^[0-9A-Za-z-]{1,127}$")  # Key Vault's secret names
QUEUE_NAME_PATTERN = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
CONNECTION_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class SettingsError(ValueError):
    """One or more app settings are missing or malformed; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid app settings ({len(problems)} problem(s)):\n{lines}")


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


@dataclass(frozen=True)
class RulesLocation:
    """Where the forwarding rules document lives: ``file:/path`` (or an absolute path), or a blob
    ``container/name`` in the alerts storage account."""

    text: str
    path: Path | None = None
    container: str = ""
    blob: str = ""

    @classmethod
    def parse(cls, value: str, where: str = "FORWARDING_RULES_LOCATION") -> RulesLocation:
        if value.startswith(("file:", "/")):
            return cls(value, path=Path(value.removeprefix("file:")))
        container, _, blob = value.partition("/")
        if not container or not blob:
            raise ValueError(
                f"{where}={value!r} is invalid; expected a blob 'container/name' in the alerts storage account, "
                "or 'file:/path'"
            )
        return cls(value, container=container, blob=blob)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ForwardingSettings:
    rules_location: RulesLocation = RulesLocation(
        "rules/forwarding-rules.json", container="rules", blob="forwarding-rules.json"
    )
    ledger_table: str = "forwardedalerts"
    max_age_hours: float = 24.0
    claim_seconds: float = 300.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 900.0
    rules_check_seconds: float = 30.0  # how often the forwarder looks for a new rules document


@dataclass(frozen=True)
class CloudSourceSettings:
    """A cloud source: Defender for IoT's data in Azure Resource Graph, for these subscriptions.

    ``resource_graph_url`` is Azure Resource Manager (locally, the emulator); ``credential`` how the app
    signs in to it: its managed identity, a developer's sign-in, or, for a localhost emulator only, a
    fixed token."""

    name: str
    subscriptions: tuple[str, ...]
    resource_graph_url: str = "https://management.azure.com"
    credential: Literal["managed_identity", "default", "emulator"] = "managed_identity"
    ca_bundle: Path | None = None
    client_id: str | None = None  # the user-assigned managed identity (AZURE_CLIENT_ID)
    devices: bool = True  # the device sync reads it
    alerts: bool = True  # the alert intake reads it
    data_source: str | None = None  # the CIs' source name; DEVICE_SYNC_DATA_SOURCE when not set
    # Write-back by the alert's learn action: no public contract documents it, so only on request (and a
    # refusal closes the alert with PATCH status=Closed, the documented write, instead).
    learn: bool = False
    kind: Literal["cloud"] = "cloud"


@dataclass(frozen=True)
class SensorSourceSettings:
    """A locally managed sensor, read through its own REST API with an API token kept in Key Vault.

    ``site`` and ``zone`` say where it is: a locally managed sensor does not report them."""

    name: str
    url: str
    token_secret: str
    ca_bundle: Path | None = None
    proxy: ProxyUrl | None = None
    site: str = ""
    zone: str = ""
    alerts_api: Literal["v1", "v2"] = "v2"
    devices: bool = True
    alerts: bool = True
    data_source: str | None = None
    kind: Literal["sensor"] = "sensor"


@dataclass(frozen=True)
class ConsoleSourceSettings:
    """A legacy on-premises management console: devices (integration API v3), alerts and sensor health.

    ``legacy`` marks the one the ``CONSOLE_*`` settings describe: its sync state keeps its old keys, and
    it stays a device source only, as it was (its alerts may already reach the queue another way)."""

    name: str
    url: str
    token_secret: str = "defender-console-api-token"  # noqa: S105 - the secret's name, not a secret
    ca_bundle: Path | None = None
    proxy: ProxyUrl | None = None
    devices: bool = True
    alerts: bool = True
    data_source: str | None = None
    legacy: bool = False
    kind: Literal["console"] = "console"


SourceSettings = CloudSourceSettings | SensorSourceSettings | ConsoleSourceSettings


@dataclass(frozen=True)
class IntakeSettings:
    sources: tuple[SourceSettings, ...] = ()
    state_table: str = "alertintake"
    overlap_minutes: float = 60.0  # how far each read reaches back (Resource Graph shows changes late)


@dataclass(frozen=True)
class DeviceSyncSettings:
    """The device sync: the sources it reads and how often it runs."""

    enabled: bool = False
    frequency_minutes: int = 60
    console_url: str = ""
    console_ca_bundle: Path | None = None
    console_proxy: ProxyUrl | None = None
    console_token_secret: str = "defender-console-api-token"  # noqa: S105 - the secret's name, not a secret
    connection: str = "default"
    state_table: str = "devicesync"
    data_source: str = "MicrosoftDefenderForIoT"
    batch_size: int = 100
    page_size: int = 500
    class_map: Mapping[str, str] = field(default_factory=dict)
    absence_hours: float = 24.0  # a device missing this long from a source without a deletions feed is retired
    sources: tuple[SourceSettings, ...] = ()  # every source the sync reads (DEFENDER_SOURCES, CONSOLE_URL)
    overlap_minutes: float = 60.0  # incremental cloud reads reach back this far (Resource Graph shows changes late)
    # The cloud's deviceDataSource values that become CIs: OT sensors' devices only, as Microsoft's own samples
    # and ServiceNow's connector read them (Defender for Endpoint's or enterprise sensors' are not OT assets).
    cloud_data_sources: tuple[str, ...] = ("OtSensor",)


# deviceDataSource as the REST spec (devices.json) and later Microsoft material name it.
CLOUD_DATA_SOURCES = ("OtSensor", "CorpSensor", "Mde", "MicroAgent", "Other")


@dataclass(frozen=True)
class TokenSettings:
    renew_before_minutes: float = 20.0  # renew an access token that expires sooner than this
    warn_days: float = 14.0  # warn this long before a refresh token expires (a person must run `connect`)
    error_days: float = 3.0  # and log an error from this point on


@dataclass(frozen=True)
class KeyVaultSettings:
    """Where secrets live in Azure. ``credential``: managed_identity (Azure), default (developer sign-in)
    or emulator (the local Key Vault emulator only)."""

    url: str
    credential: Literal["managed_identity", "default", "emulator"] = "managed_identity"
    client_id: str | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry_budget_seconds: float = 30.0
    max_attempts: int = 5


@dataclass(frozen=True)
class ServiceNowConnection:
    """A named ServiceNow instance and how to authenticate to it.

    Secrets are referenced by name; the default names derive from the connection name so a
    one-connection deployment needs no secret configuration beyond putting the values in place.
    """

    name: str
    instance_url: str
    auth: AuthMode
    username: str | None = None
    secret_names: Mapping[str, str] = field(default_factory=dict)
    proxy: ProxyUrl | None = None
    ca_bundle: Path | None = None
    client_id: str | None = None  # OAuth application registry client id (not a secret)
    refresh_token_lifespan_days: float = 100.0  # the registry record's setting; ServiceNow does not report it
    # The budget (shared.servicenow.budget): requests the whole app may have open at once, across all its
    # instances (the instance's API semaphore: about 4 per node, plus its queue), and an optional hourly cap.
    concurrency: int = 16
    hourly_requests: int | None = None

    def secret_name(self, role: str) -> str:
        return self.secret_names.get(role, f"servicenow-{self.name}-{role}")


@dataclass(frozen=True)
class Settings:
    alerts_queue: str
    token_refresh_schedule: str
    device_sync_schedule: str
    connections: tuple[ServiceNowConnection, ...]
    http: HttpSettings = HttpSettings()
    alerts_storage: StorageConnection = StorageConnection("ALERTS_STORAGE", "UseDevelopmentStorage=true")
    forwarding: ForwardingSettings = ForwardingSettings()
    key_vault: KeyVaultSettings | None = None
    tokens: TokenSettings = TokenSettings()
    device_sync: DeviceSyncSettings = DeviceSyncSettings()
    intake_schedule: str = "0 */1 * * * *"
    intake: IntakeSettings = IntakeSettings()
    run_seconds: float = 470.0  # how long one invocation may work: see run_seconds()

    def connection(self, name: str) -> ServiceNowConnection:
        for connection in self.connections:
            if connection.name == name:
                return connection
        known = ", ".join(c.name for c in self.connections)
        raise KeyError(f"no ServiceNow connection named {name!r} (SERVICENOW_CONNECTIONS defines: {known})")


class _Reader:
    """Reads settings from one mapping and collects every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        assert name in KNOWN_SETTINGS or name.startswith(STORAGE_IDENTITY_PREFIX), f"declare {name} in KNOWN_SETTINGS"
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

    def fail(self, message: str) -> None:
        self.problems.append(message)


def _check_queue_name(reader: _Reader, name: str) -> str:
    value = reader.required(name, "a storage queue name such as 'alerts'") or ""
    if value and not QUEUE_NAME_PATTERN.fullmatch(value):
        reader.fail(
            f"{name}={value!r} is not a valid queue name; expected 3-63 lower-case letters, digits and "
            "single dashes, starting and ending with a letter or digit"
        )
    return value


def _check_schedule(reader: _Reader, name: str, example: str) -> str:
    value = reader.required(name, f"an NCRONTAB expression such as '{example}'") or ""
    if value:
        try:
            Schedule.parse(value)  # the host parses it with NCrontab, and refuses to create the timer if it fails
        except ScheduleError as exc:
            reader.fail(
                f"{name}={value!r} is not an NCRONTAB expression the Functions host accepts: {exc}; e.g. '{example}'"
            )
    return value


def _check_storage_connection(reader: _Reader, name: str) -> StorageConnection:
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


def parse_instance_url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(
            f"{where}={value!r} is invalid; expected an https:// ServiceNow instance URL such as "
            "'https://dev12345.service-now.com' (ServiceNow is HTTPS-only; http:// is refused)"
        )
    refuse_placeholder(value, where)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{where} must not carry credentials, a query or a fragment; expected 'https://host[:port]'")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _parse_connection(
    raw: Any,
    index: int,
    default_proxy: ProxyUrl | None,
    default_ca: Path | None,
    default_concurrency: int = 16,
    default_hourly: int | None = None,
) -> ServiceNowConnection:
    where = f"SERVICENOW_CONNECTIONS[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is a {type(raw).__name__}; expected an object")
    known = {
        "name",
        "instance_url",
        "auth",
        "username",
        "secrets",
        "proxy_url",
        "ca_bundle",
        "client_id",
        "refresh_token_lifespan_days",
        "concurrency",
        "hourly_requests",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; expected only {sorted(known)}")
    name = raw.get("name")
    if not isinstance(name, str) or not CONNECTION_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{where}.name={name!r} is invalid; expected 1-32 lower-case letters, digits or dashes")
    where = f"SERVICENOW_CONNECTIONS[{name}]"
    instance_url = raw.get("instance_url")
    if not isinstance(instance_url, str):
        raise ValueError(f"{where}.instance_url is missing; expected 'https://<instance>.service-now.com'")
    instance_url = parse_instance_url(instance_url, f"{where}.instance_url")
    auth = raw.get("auth")
    if auth not in AUTH_MODES:
        raise ValueError(f"{where}.auth={auth!r} is invalid; expected one of {', '.join(AUTH_MODES)}")
    username = raw.get("username")
    if auth in ("basic", "oauth") and (not isinstance(username, str) or not username):
        raise ValueError(f"{where}.username is required with auth '{auth}'")
    client_id = raw.get("client_id")
    if auth in OAUTH_MODES and (not isinstance(client_id, str) or not client_id):
        raise ValueError(
            f"{where}.client_id is required with auth '{auth}' (the OAuth application registry's client id)"
        )
    lifespan = raw.get("refresh_token_lifespan_days", 100)
    if not isinstance(lifespan, int | float) or isinstance(lifespan, bool) or not 0 < lifespan <= 3650:
        raise ValueError(f"{where}.refresh_token_lifespan_days must be a number of days from 0 to 3650")
    concurrency = raw.get("concurrency", default_concurrency)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 1000:
        raise ValueError(
            f"{where}.concurrency must be a whole number from 1 to 1000 (requests the whole app may have open at once)"
        )
    hourly = raw.get("hourly_requests", default_hourly)
    if hourly is not None and (not isinstance(hourly, int) or isinstance(hourly, bool) or hourly < 1):
        raise ValueError(f"{where}.hourly_requests must be a whole number of requests an hour, at least 1")
    secrets = raw.get("secrets", {})
    if not isinstance(secrets, dict) or not all(
        isinstance(v, str) and SECRET_NAME_PATTERN.fullmatch(v) for v in secrets.values()
    ):
        raise ValueError(f"{where}.secrets must map roles to secret names (letters, digits, dashes)")
    proxy = default_proxy
    if raw.get("proxy_url"):
        proxy = parse_proxy_url(str(raw["proxy_url"]), f"{where}.proxy_url")
    ca_bundle = default_ca
    if raw.get("ca_bundle"):
        ca_bundle = parse_ca_bundle(str(raw["ca_bundle"]), f"{where}.ca_bundle")
    return ServiceNowConnection(
        name=name,
        instance_url=instance_url,
        auth=auth,
        username=username if isinstance(username, str) else None,
        secret_names=dict(secrets),
        proxy=proxy,
        ca_bundle=ca_bundle,
        client_id=client_id if isinstance(client_id, str) else None,
        refresh_token_lifespan_days=float(lifespan),
        concurrency=concurrency,
        hourly_requests=hourly,
    )


def _check_connections(
    reader: _Reader, http_proxy: ProxyUrl | None, ca: Path | None
) -> tuple[ServiceNowConnection, ...]:
    concurrency = reader.integer("SERVICENOW_CONCURRENCY", ServiceNowConnection.concurrency, 1, 1000)
    hourly = reader.integer("SERVICENOW_HOURLY_REQUESTS", 0, 0, 10_000_000) or None  # 0: no cap of the app's own
    value = reader.required(
        "SERVICENOW_CONNECTIONS",
        'a JSON list such as [{"name": "default", "instance_url": "https://dev12345.service-now.com", '
        '"auth": "basic", "username": "svc_defender"}]',
    )
    if value is None:
        return ()
    try:
        document = json.loads(value)
    except json.JSONDecodeError as exc:
        reader.fail(f"SERVICENOW_CONNECTIONS is not valid JSON ({exc.msg} at character {exc.pos})")
        return ()
    if not isinstance(document, list) or not document:
        reader.fail("SERVICENOW_CONNECTIONS must be a non-empty JSON list of connection objects")
        return ()
    connections: list[ServiceNowConnection] = []
    for index, raw in enumerate(document):
        try:
            connections.append(_parse_connection(raw, index, http_proxy, ca, concurrency, hourly))
        except ValueError as exc:
            reader.fail(str(exc))
    names = [c.name for c in connections]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        reader.fail(f"SERVICENOW_CONNECTIONS names must be unique; repeated: {', '.join(duplicates)}")
    return tuple(connections)


def _check_device_sync(
    reader: _Reader, connections: tuple[ServiceNowConnection, ...], defender_sources: tuple[SourceSettings, ...]
) -> DeviceSyncSettings:
    raw_enabled = (reader.raw("DEVICE_SYNC_ENABLED") or "false").lower()
    if raw_enabled not in ("true", "false", "1", "0"):
        reader.fail(f"DEVICE_SYNC_ENABLED={raw_enabled!r} is invalid; expected true or false")
    enabled = raw_enabled in ("true", "1")
    frequency_text = reader.raw("DEVICE_SYNC_FREQUENCY_MINUTES") or "60"
    frequency = 60
    if not frequency_text.isdigit() or int(frequency_text) < 5:
        reader.fail(
            f"DEVICE_SYNC_FREQUENCY_MINUTES={frequency_text!r} is invalid; expected whole minutes, at least 5 "
            "(the console is polled, and more often than every 5 minutes only loads it)"
        )
    else:
        frequency = int(frequency_text)
    console_url = reader.raw("CONSOLE_URL") or ""
    if console_url and urlsplit(console_url).scheme != "https":
        reader.fail(f"CONSOLE_URL={console_url!r} is invalid; expected https://<management console>")
    elif console_url:
        try:
            refuse_placeholder(console_url, "CONSOLE_URL")
        except ValueError as exc:
            reader.fail(str(exc))
    ca_bundle = reader.parsed("CONSOLE_CA_BUNDLE", parse_ca_bundle)
    proxy = reader.parsed("CONSOLE_PROXY_URL", parse_proxy_url)
    connection = reader.raw("DEVICE_SYNC_CONNECTION") or (connections[0].name if connections else "default")
    if enabled and connections and connection not in {c.name for c in connections}:
        reader.fail(f"DEVICE_SYNC_CONNECTION={connection!r} is not in SERVICENOW_CONNECTIONS")
    class_map: dict[str, str] = {}
    if (raw_map := reader.raw("DEVICE_SYNC_CLASS_MAP")) is not None:
        try:
            class_map = json.loads(raw_map)
            if not isinstance(class_map, dict) or not all(isinstance(v, str) for v in class_map.values()):
                raise ValueError
        except ValueError:
            reader.fail('DEVICE_SYNC_CLASS_MAP is invalid; expected a JSON object such as {"PLC": "cmdb_ci_ot_plc"}')
            class_map = {}
    token_secret = reader.raw("CONSOLE_TOKEN_SECRET") or DeviceSyncSettings.console_token_secret
    sources = tuple(s for s in defender_sources if s.devices)
    if console_url:  # the console of the CONSOLE_* settings: one source more, keeping its state as it was
        if "console" in {s.name for s in defender_sources}:
            reader.fail(
                "CONSOLE_URL describes a source named 'console', and DEFENDER_SOURCES has one too; "
                "rename that one, or describe the console in DEFENDER_SOURCES only"
            )
        legacy = ConsoleSourceSettings(
            "console", console_url.rstrip("/"), token_secret, ca_bundle, proxy, alerts=False, legacy=True
        )
        sources = (legacy, *sources)
    if enabled and not sources:
        reader.fail(
            "DEVICE_SYNC_ENABLED is true but no source reads devices; set DEFENDER_SOURCES (a cloud, sensor or "
            "console source) or CONSOLE_URL (a management console's https:// URL)"
        )
    return DeviceSyncSettings(
        enabled=enabled,
        frequency_minutes=frequency,
        console_url=console_url.rstrip("/"),
        console_ca_bundle=ca_bundle,
        console_proxy=proxy,
        console_token_secret=token_secret,
        connection=connection,
        state_table=reader.raw("DEVICE_SYNC_STATE_TABLE") or DeviceSyncSettings.state_table,
        data_source=reader.raw("DEVICE_SYNC_DATA_SOURCE") or DeviceSyncSettings.data_source,
        batch_size=reader.integer("DEVICE_SYNC_BATCH_SIZE", 100, 1, 1000),
        page_size=reader.integer("DEVICE_SYNC_PAGE_SIZE", 500, 10, 10_000),
        class_map=class_map,
        absence_hours=reader.number("DEVICE_SYNC_ABSENCE_HOURS", 24.0, 1, 24 * 90),
        sources=sources,
        overlap_minutes=reader.number("ALERT_INTAKE_OVERLAP_MINUTES", OVERLAP_MINUTES, 0, 24 * 60),
        cloud_data_sources=_check_cloud_data_sources(reader),
    )


def _check_cloud_data_sources(reader: _Reader) -> tuple[str, ...]:
    raw = reader.raw("DEVICE_SYNC_CLOUD_DATA_SOURCES")
    if raw is None:
        return DeviceSyncSettings.cloud_data_sources
    by_name = {name.lower(): name for name in CLOUD_DATA_SOURCES}
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown or not names:
        reader.fail(
            f"DEVICE_SYNC_CLOUD_DATA_SOURCES={raw!r} is invalid; expected a comma-separated list of "
            f"{', '.join(CLOUD_DATA_SOURCES)} (Resource Graph's deviceDataSource values)"
        )
        return DeviceSyncSettings.cloud_data_sources
    return tuple(dict.fromkeys(by_name[name.lower()] for name in names))


SUBSCRIPTION_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
COMMON_FIELDS = {"name", "kind", "devices", "alerts", "data_source"}
SOURCE_FIELDS = {
    "cloud": COMMON_FIELDS | {"subscriptions", "resource_graph_url", "credential", "ca_bundle", "learn"},
    "sensor": COMMON_FIELDS | {"url", "token_secret", "ca_bundle", "proxy_url", "site", "zone", "alerts_api"},
    "console": COMMON_FIELDS | {"url", "token_secret", "ca_bundle", "proxy_url"},
}
SOURCE_KINDS = (
    "'cloud' (Azure Resource Graph: cloud-connected sensors), 'sensor' (a locally managed sensor's API) "
    "or 'console' (a legacy management console)"
)


def _flag(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}={value!r} is invalid; expected true or false")
    return value


def _https_url(raw: dict[str, Any], key: str, where: str, example: str) -> str:
    url = raw.get(key)
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{where}.{key}={url!r} is invalid; expected {example} (https, no credentials)")
    refuse_placeholder(str(url), f"{where}.{key}")
    return str(url).rstrip("/")


def _secret_name(raw: dict[str, Any], where: str, default: str) -> str:
    name = raw.get("token_secret", default)
    if not isinstance(name, str) or not SECRET_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{where}.token_secret={name!r} is invalid; expected a Key Vault secret name (letters, digits, -)"
        )
    return name


def _parse_source(raw: Any, index: int, client_id: str | None) -> SourceSettings:
    where = f"DEFENDER_SOURCES[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is a {type(raw).__name__}; expected an object")
    name = raw.get("name")
    if not isinstance(name, str) or not CONNECTION_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{where}.name={name!r} is invalid; expected 1-32 lower-case letters, digits or dashes")
    where = f"DEFENDER_SOURCES[{name}]"
    kind = raw.get("kind")
    if kind not in SOURCE_FIELDS:
        raise ValueError(f"{where}.kind={kind!r} is not supported; expected {SOURCE_KINDS}")
    unknown = sorted(set(raw) - SOURCE_FIELDS[kind])
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; expected only {sorted(SOURCE_FIELDS[kind])}")
    devices = _flag(raw, "devices", True, where)
    data_source = raw.get("data_source")
    if data_source is not None and (not isinstance(data_source, str) or not data_source.strip()):
        raise ValueError(f"{where}.data_source must be a ServiceNow discovery source name")
    ca_bundle = parse_ca_bundle(str(raw["ca_bundle"]), f"{where}.ca_bundle") if raw.get("ca_bundle") else None
    if kind == "cloud":
        return _parse_cloud(raw, where, client_id, ca_bundle, devices, data_source, name)
    proxy = parse_proxy_url(str(raw["proxy_url"]), f"{where}.proxy_url") if raw.get("proxy_url") else None
    if kind == "console":
        url = _https_url(raw, "url", where, "https://<management console>")
        token = _secret_name(raw, where, f"defender-console-{name}-token")
        alerts = _flag(raw, "alerts", True, where)
        return ConsoleSourceSettings(name, url, token, ca_bundle, proxy, devices, alerts, data_source)
    url = _https_url(raw, "url", where, "https://<sensor address>")
    alerts_api = raw.get("alerts_api", "v2")
    if alerts_api not in ("v1", "v2"):
        raise ValueError(f"{where}.alerts_api={alerts_api!r} is invalid; expected v1 or v2")
    place = {key: raw.get(key, "") for key in ("site", "zone")}
    if not all(isinstance(v, str) for v in place.values()):
        raise ValueError(f"{where}.site and .zone must be text")
    return SensorSourceSettings(
        name,
        url,
        _secret_name(raw, where, f"defender-sensor-{name}-token"),
        ca_bundle,
        proxy,
        place["site"],
        place["zone"],
        alerts_api,
        devices,
        _flag(raw, "alerts", True, where),
        data_source,
    )


def _parse_cloud(
    raw: dict[str, Any],
    where: str,
    client_id: str | None,
    ca_bundle: Path | None,
    devices: bool,
    data_source: str | None,
    name: str,
) -> CloudSourceSettings:
    subscriptions = raw.get("subscriptions")
    if (
        not isinstance(subscriptions, list)
        or not subscriptions
        or not all(isinstance(s, str) and SUBSCRIPTION_PATTERN.fullmatch(s) for s in subscriptions)
    ):
        raise ValueError(f"{where}.subscriptions must be a non-empty list of subscription ids (GUIDs)")
    url = str(raw.get("resource_graph_url") or CloudSourceSettings.resource_graph_url).rstrip("/")
    host = urlsplit(url).hostname
    if urlsplit(url).scheme != "https" or not host:
        raise ValueError(f"{where}.resource_graph_url={url!r} is invalid; expected https://management.azure.com")
    credential = raw.get("credential", "managed_identity")
    if credential not in ("managed_identity", "default", "emulator"):
        raise ValueError(
            f"{where}.credential={credential!r} is invalid; expected managed_identity, default or emulator"
        )
    if credential == "emulator" and host not in ("localhost", "127.0.0.1"):
        raise ValueError(f"{where}.credential 'emulator' is for a localhost Resource Graph emulator only")
    alerts = _flag(raw, "alerts", True, where)
    return CloudSourceSettings(
        name,
        tuple(subscriptions),
        url,
        credential,
        ca_bundle,
        client_id,
        devices,
        alerts,
        data_source,
        _flag(raw, "learn", False, where),
    )


def _check_sources(reader: _Reader) -> tuple[SourceSettings, ...]:
    sources: list[SourceSettings] = []
    if (raw := reader.raw("DEFENDER_SOURCES")) is not None:
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            reader.fail(f"DEFENDER_SOURCES is not valid JSON ({exc.msg} at character {exc.pos})")
            document = []
        if not isinstance(document, list):
            reader.fail("DEFENDER_SOURCES must be a JSON list of source objects")
            document = []
        for index, item in enumerate(document):
            try:
                sources.append(_parse_source(item, index, reader.raw("AZURE_CLIENT_ID")))
            except ValueError as exc:
                reader.fail(str(exc))
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            reader.fail("DEFENDER_SOURCES names must be unique")
    return tuple(sources)


def _check_intake(reader: _Reader, sources: tuple[SourceSettings, ...]) -> IntakeSettings:
    table = reader.raw("ALERT_INTAKE_STATE_TABLE") or IntakeSettings.state_table
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", table):
        reader.fail(f"ALERT_INTAKE_STATE_TABLE={table!r} is not a table name; expected 3-63 letters and digits")
    return IntakeSettings(
        sources=tuple(s for s in sources if s.alerts),
        state_table=table,
        overlap_minutes=reader.number("ALERT_INTAKE_OVERLAP_MINUTES", OVERLAP_MINUTES, 0, 24 * 60),
    )


def _check_key_vault(reader: _Reader) -> KeyVaultSettings | None:
    url = reader.raw("KEY_VAULT_URL")
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        reader.fail(f"KEY_VAULT_URL={url!r} is invalid; expected https://<vault-name>.vault.azure.net")
        return None
    client_id = reader.raw("AZURE_CLIENT_ID")
    credential = reader.raw("KEY_VAULT_CREDENTIAL") or ("managed_identity" if client_id else "default")
    if credential not in ("managed_identity", "default", "emulator"):
        reader.fail(f"KEY_VAULT_CREDENTIAL={credential!r} is invalid; expected managed_identity, default or emulator")
        return None
    if credential == "emulator" and parts.hostname not in ("localhost", "127.0.0.1"):
        reader.fail("KEY_VAULT_CREDENTIAL=emulator is for the local Key Vault emulator only (a localhost URL)")
        return None
    ca_bundle = reader.parsed("KEY_VAULT_CA_BUNDLE", parse_ca_bundle)
    return KeyVaultSettings(url.rstrip("/"), credential, client_id, ca_bundle)  # type: ignore[arg-type]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise :class:`SettingsError` listing every problem."""
    reader = _Reader(os.environ if environ is None else environ)
    alerts_queue = _check_queue_name(reader, "ALERTS_QUEUE")
    alerts_storage = _check_storage_connection(reader, "ALERTS_STORAGE")
    token_schedule = _check_schedule(reader, "TOKEN_REFRESH_SCHEDULE", "0 */10 * * * *")
    sync_schedule = _check_schedule(reader, "DEVICE_SYNC_SCHEDULE", "0 */5 * * * *")
    intake_schedule = _check_schedule(reader, "ALERT_INTAKE_SCHEDULE", "0 */1 * * * *")

    proxy = reader.parsed("SERVICENOW_PROXY_URL", parse_proxy_url)
    ca_bundle = reader.parsed("SERVICENOW_CA_BUNDLE", parse_ca_bundle)
    http = HttpSettings(
        connect_timeout=reader.number("SERVICENOW_CONNECT_TIMEOUT_SECONDS", 5.0, 0.1, 120),
        read_timeout=reader.number("SERVICENOW_READ_TIMEOUT_SECONDS", 30.0, 0.1, 300),
        retry_budget_seconds=reader.number("SERVICENOW_RETRY_BUDGET_SECONDS", 30.0, 0, 3600),
        max_attempts=reader.integer("SERVICENOW_MAX_ATTEMPTS", 5, 1, 20),
    )
    connections = _check_connections(reader, proxy, ca_bundle)
    forwarding = ForwardingSettings(
        rules_location=reader.parsed("FORWARDING_RULES_LOCATION", RulesLocation.parse)
        or ForwardingSettings.rules_location,
        ledger_table=reader.raw("FORWARDING_LEDGER_TABLE") or ForwardingSettings.ledger_table,
        max_age_hours=reader.number("FORWARDING_MAX_AGE_HOURS", 24.0, 0.01, 24 * 7),
        retry_base_seconds=reader.number("FORWARDING_RETRY_BASE_SECONDS", 30.0, 1, 3600),
        retry_max_seconds=reader.number("FORWARDING_RETRY_MAX_SECONDS", 900.0, 1, 24 * 3600),
        claim_seconds=reader.number("FORWARDING_CLAIM_SECONDS", 300.0, 5, 3600),
        rules_check_seconds=reader.number("FORWARDING_RULES_CHECK_SECONDS", 30.0, 0, 3600),
    )
    # A claim older than this is taken for a crashed worker's; a live worker's write must never last that long.
    longest_write = http.retry_budget_seconds + http.connect_timeout + http.read_timeout
    if forwarding.claim_seconds <= longest_write:
        reader.fail(
            f"FORWARDING_CLAIM_SECONDS={forwarding.claim_seconds:g} must be longer than one ServiceNow write can "
            f"take (SERVICENOW_RETRY_BUDGET_SECONDS + SERVICENOW_CONNECT_TIMEOUT_SECONDS + "
            f"SERVICENOW_READ_TIMEOUT_SECONDS = {longest_write:g} s); otherwise a slow write could be repeated"
        )
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", forwarding.ledger_table):
        reader.fail(
            f"FORWARDING_LEDGER_TABLE={forwarding.ledger_table!r} is not a table name; expected 3-63 "
            "letters and digits starting with a letter"
        )
    key_vault = _check_key_vault(reader)
    if key_vault is None:
        for connection in connections:
            if connection.auth in OAUTH_MODES:
                reader.fail(
                    f"SERVICENOW_CONNECTIONS[{connection.name}] uses auth '{connection.auth}', which keeps its "
                    "tokens in Key Vault; set KEY_VAULT_URL"
                )
    sources = _check_sources(reader)
    device_sync = _check_device_sync(reader, connections, sources)
    intake = _check_intake(reader, sources)
    tokens = TokenSettings(
        renew_before_minutes=reader.number("TOKEN_RENEW_BEFORE_MINUTES", 20.0, 1, 24 * 60),
        warn_days=reader.number("TOKEN_REFRESH_WARNING_DAYS", 14.0, 0, 365),
        error_days=reader.number("TOKEN_REFRESH_ERROR_DAYS", 3.0, 0, 365),
    )
    run = run_seconds(reader, HOST_JSON, longest_write)
    if reader.problems:
        raise SettingsError(reader.problems)
    return Settings(
        alerts_queue=alerts_queue,
        token_refresh_schedule=token_schedule,
        device_sync_schedule=sync_schedule,
        connections=connections,
        http=http,
        alerts_storage=alerts_storage,
        forwarding=forwarding,
        key_vault=key_vault,
        tokens=tokens,
        device_sync=device_sync,
        intake_schedule=intake_schedule,
        intake=intake,
        run_seconds=run,
    )


HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"  # deployed beside function_app.py
FLEX_DEFAULT_TIMEOUT = 1800.0  # the host's functionTimeout when host.json sets none (Flex Consumption)
TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})")


def run_seconds(reader: _Reader, host_json: Path, longest_call: float) -> float:
    """How long one invocation may work before it stops at a point where its progress is saved.

    host.json's ``functionTimeout`` less a margin: reaching the timeout restarts the worker, which kills every
    invocation on it. The margin is two of one call's longest (retry budget + connect + read timeout): the
    step running when the deadline passes finishes, and the job still records where it stopped.
    """
    try:
        value = json.loads(host_json.read_text()).get("functionTimeout")
    except (OSError, ValueError) as exc:
        reader.fail(f"{host_json} cannot be read for its functionTimeout: {exc}")
        return 0.0
    if value is None:
        timeout = FLEX_DEFAULT_TIMEOUT
    elif str(value) == "-1":
        return float("inf")  # no timeout: nothing to stop for
    elif match := TIMESPAN.fullmatch(str(value)):
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        timeout = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    else:
        reader.fail(f"host.json functionTimeout={value!r} is invalid; expected hh:mm:ss (e.g. 00:10:00) or -1")
        return 0.0
    budget = timeout - 2 * longest_call
    if budget < 60:
        reader.fail(
            f"host.json functionTimeout={value!r} leaves {budget:g} s of work per invocation after twice one call's "
            f"longest ({longest_call:g} s: the SERVICENOW_ retry budget and timeouts); allow at least 60 s"
        )
    return budget


def unknown_settings(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """Settings that look like the product's (one of PREFIXES) but that it does not read: typos, mostly."""
    # Secrets kept in app settings (no Key Vault) are read under their secret's name: SERVICENOW_<NAME>_<ROLE>.
    secrets = {
        connection.secret_name(role).upper().replace("-", "_")
        for connection in settings.connections
        for role in ("password", "token", "client-secret", "access-token", "refresh-token")
    }
    warnings = []
    for name in sorted(environ):
        if not name.startswith(PREFIXES) or name in KNOWN_SETTINGS or name in secrets:
            continue
        if name.startswith(STORAGE_IDENTITY_PREFIX):
            continue
        close = difflib.get_close_matches(name, KNOWN_SETTINGS, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"app setting {name} is not one this app reads, so it has no effect{hint}")
    return warnings


def start_up_warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What works but should not stay as it is: legacy Basic authentication, settings the app ignores."""
    return [
        f"ServiceNow connection '{c.name}' uses legacy Basic authentication; prefer auth 'oauth' (tokens in Key Vault, "
        "the password used once by `connect` and never stored)"
        for c in settings.connections
        if c.auth == "basic"
    ] + unknown_settings(settings, os.environ if environ is None else environ)


@dataclass(frozen=True)
class RelaySettings:
    """What the relay next to a sensor needs, and nothing else: the queue it sends to, the one sensor source
    it reads, and where that source's token is (Key Vault when reachable, else the environment)."""

    alerts_queue: str
    alerts_storage: StorageConnection
    source: SensorSourceSettings
    http: HttpSettings = HttpSettings()
    key_vault: KeyVaultSettings | None = None
    overlap_minutes: float = 60.0


def load_relay_settings(source_name: str, environ: Mapping[str, str] | None = None) -> RelaySettings:
    """The relay's settings (ALERTS_QUEUE, ALERTS_STORAGE, DEFENDER_SOURCES with the named sensor source);
    raise :class:`SettingsError` listing every problem."""
    reader = _Reader(os.environ if environ is None else environ)
    alerts_queue = _check_queue_name(reader, "ALERTS_QUEUE")
    alerts_storage = _check_storage_connection(reader, "ALERTS_STORAGE")
    sources = _check_sources(reader)
    chosen = [s for s in sources if s.name == source_name]
    source = chosen[0] if chosen else None
    if reader.raw("DEFENDER_SOURCES") is None:
        reader.fail("DEFENDER_SOURCES is not set; the relay reads the sensor source it names")
    elif not chosen and not reader.problems:
        known = ", ".join(s.name for s in sources) or "none"
        reader.fail(f"DEFENDER_SOURCES has no source named {source_name!r} (it has: {known})")
    elif source is not None and not isinstance(source, SensorSourceSettings):
        reader.fail(f"DEFENDER_SOURCES[{source_name}] is a {source.kind} source; the relay reads a sensor source")
    http = HttpSettings(
        connect_timeout=reader.number("SERVICENOW_CONNECT_TIMEOUT_SECONDS", 5.0, 0.1, 120),
        read_timeout=reader.number("SERVICENOW_READ_TIMEOUT_SECONDS", 30.0, 0.1, 300),
    )
    key_vault = _check_key_vault(reader)
    overlap = reader.number("ALERT_INTAKE_OVERLAP_MINUTES", OVERLAP_MINUTES, 0, 24 * 60)
    if reader.problems:
        raise SettingsError(reader.problems)
    assert isinstance(source, SensorSourceSettings)
    return RelaySettings(alerts_queue, alerts_storage, source, http, key_vault, overlap)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (at start-up: ``function_app.py`` calls it)."""
    return load_settings()
