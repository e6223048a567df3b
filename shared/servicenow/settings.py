"""The ServiceNow connections' settings: each instance, how the app signs in to it, and its share of the budget;
and when the OAuth tokens are renewed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from shared.platform.settings import (
    CONNECTION_NAME_PATTERN,
    SECRET_NAME_PATTERN,
    ProxyUrl,
    Reader,
    declare,
    parse_ca_bundle,
    parse_proxy_url,
    refuse_placeholder,
)

AuthMode = Literal["oauth", "client_credentials", "basic", "bearer"]
AUTH_MODES: tuple[str, ...] = ("oauth", "client_credentials", "basic", "bearer")
OAUTH_MODES = ("oauth", "client_credentials")

declare(
    "SERVICENOW_CONNECTIONS",
    "SERVICENOW_PROXY_URL",
    "SERVICENOW_CA_BUNDLE",
    "SERVICENOW_CONCURRENCY",
    "SERVICENOW_HOURLY_REQUESTS",
    "TOKEN_RENEW_BEFORE_MINUTES",
    "TOKEN_REFRESH_WARNING_DAYS",
    "TOKEN_REFRESH_ERROR_DAYS",
)
CONNECTION_FIELDS = (
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
)


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
class TokenSettings:
    renew_before_minutes: float = 20.0  # renew an access token that expires sooner than this
    warn_days: float = 14.0  # warn this long before a refresh token expires (a person must run `connect`)
    error_days: float = 3.0  # and log an error from this point on


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


class ConnectionDefaults(NamedTuple):
    """What a connection takes from the SERVICENOW_* settings unless it says otherwise (a tuple, not a
    dataclass: it is built at every start-up, and a dataclass costs more to define)."""

    proxy: ProxyUrl | None
    ca_bundle: Path | None
    concurrency: int
    hourly_requests: int | None


def _connection_name(raw: Any, where: str) -> str:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is a {type(raw).__name__}; expected an object")
    unknown = sorted(set(raw) - set(CONNECTION_FIELDS))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; expected only {sorted(CONNECTION_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not CONNECTION_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{where}.name={name!r} is invalid; expected 1-32 lower-case letters, digits or dashes")
    return name


def _sign_in(raw: dict[str, Any], where: str) -> tuple[AuthMode, str | None, str | None]:
    """The auth mode, the username and the OAuth client id, each required where the mode needs it."""
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
    return (
        auth,
        username if isinstance(username, str) else None,
        client_id if isinstance(client_id, str) else None,
    )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limits(raw: dict[str, Any], where: str, defaults: ConnectionDefaults) -> tuple[float, int, int | None]:
    """The refresh token's lifespan, and the connection's budget: concurrency and hourly requests."""
    lifespan = raw.get("refresh_token_lifespan_days", 100)
    if not isinstance(lifespan, int | float) or isinstance(lifespan, bool) or not 0 < lifespan <= 3650:
        raise ValueError(f"{where}.refresh_token_lifespan_days must be a number of days from 0 to 3650")
    concurrency = raw.get("concurrency", defaults.concurrency)
    if not _whole(concurrency) or not 1 <= concurrency <= 1000:
        raise ValueError(
            f"{where}.concurrency must be a whole number from 1 to 1000 (requests the whole app may have open at once)"
        )
    hourly = raw.get("hourly_requests", defaults.hourly_requests)
    if hourly is not None and (not _whole(hourly) or hourly < 1):
        raise ValueError(f"{where}.hourly_requests must be a whole number of requests an hour, at least 1")
    return float(lifespan), concurrency, hourly


def parse_connection(raw: Any, index: int, defaults: ConnectionDefaults) -> ServiceNowConnection:
    """One item of SERVICENOW_CONNECTIONS; a ValueError names the first thing wrong with it."""
    name = _connection_name(raw, f"SERVICENOW_CONNECTIONS[{index}]")
    where = f"SERVICENOW_CONNECTIONS[{name}]"
    instance_url = raw.get("instance_url")
    if not isinstance(instance_url, str):
        raise ValueError(f"{where}.instance_url is missing; expected 'https://<instance>.service-now.com'")
    instance_url = parse_instance_url(instance_url, f"{where}.instance_url")
    auth, username, client_id = _sign_in(raw, where)
    lifespan, concurrency, hourly = _limits(raw, where, defaults)
    secrets = raw.get("secrets", {})
    if not isinstance(secrets, dict) or not all(
        isinstance(v, str) and SECRET_NAME_PATTERN.fullmatch(v) for v in secrets.values()
    ):
        raise ValueError(f"{where}.secrets must map roles to secret names (letters, digits, dashes)")
    proxy = parse_proxy_url(str(raw["proxy_url"]), f"{where}.proxy_url") if raw.get("proxy_url") else defaults.proxy
    ca_bundle = (
        parse_ca_bundle(str(raw["ca_bundle"]), f"{where}.ca_bundle") if raw.get("ca_bundle") else defaults.ca_bundle
    )
    return ServiceNowConnection(
        name=name,
        instance_url=instance_url,
        auth=auth,
        username=username,
        secret_names=dict(secrets),
        proxy=proxy,
        ca_bundle=ca_bundle,
        client_id=client_id,
        refresh_token_lifespan_days=lifespan,
        concurrency=concurrency,
        hourly_requests=hourly,
    )


def read_network(reader: Reader) -> tuple[ProxyUrl | None, Path | None]:
    """The proxy and CA bundle every connection uses unless it names its own (read before the HTTP settings,
    so the problems keep their order)."""
    proxy = reader.parsed("SERVICENOW_PROXY_URL", parse_proxy_url)
    return proxy, reader.parsed("SERVICENOW_CA_BUNDLE", parse_ca_bundle)


def check_connections(reader: Reader, network: tuple[ProxyUrl | None, Path | None]) -> tuple[ServiceNowConnection, ...]:
    """SERVICENOW_CONNECTIONS, each connection with the SERVICENOW_* defaults it does not override."""
    defaults = ConnectionDefaults(
        *network,
        reader.integer("SERVICENOW_CONCURRENCY", ServiceNowConnection.concurrency, 1, 1000),
        reader.integer("SERVICENOW_HOURLY_REQUESTS", 0, 0, 10_000_000) or None,  # 0: no cap of the app's own
    )
    value = reader.required(
        "SERVICENOW_CONNECTIONS",
        'a JSON list such as [{"name": "default", "instance_url": "https://dev12345.service-now.com", '
        '"auth": "basic", "username": "svc_defender"}]',
    )
    if value is None:
        return ()
    connections = reader.json_items(
        "SERVICENOW_CONNECTIONS",
        value,
        lambda raw, index: parse_connection(raw, index, defaults),
        "connection objects",
        non_empty=True,
    )
    names = [c.name for c in connections]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        reader.fail(f"SERVICENOW_CONNECTIONS names must be unique; repeated: {', '.join(duplicates)}")
    return tuple(connections)


def read_tokens(reader: Reader) -> TokenSettings:
    return TokenSettings(
        renew_before_minutes=reader.number("TOKEN_RENEW_BEFORE_MINUTES", 20.0, 1, 24 * 60),
        warn_days=reader.number("TOKEN_REFRESH_WARNING_DAYS", 14.0, 0, 365),
        error_days=reader.number("TOKEN_REFRESH_ERROR_DAYS", 3.0, 0, 365),
    )
