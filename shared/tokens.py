"""ServiceNow OAuth tokens, kept in Key Vault and fresh.

- ``connect`` (operator command): username and password are used once, for the password grant; the
  refresh token and the access token go to Key Vault with their expiry; the password is forgotten.
- ``OAuthTokenProvider`` (the client's credential): memory → Key Vault → refresh grant, and on a 401
  one refresh shared by every thread that saw it, not one each.
- ``refresh_all_connections`` (the token_refresh timer): renews access tokens well before they expire
  and warns — days ahead, then loudly — when a refresh token nears its end, because then a person
  must run ``connect`` again. A failed refresh leaves the last good tokens in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from opentelemetry import metrics

from shared.secrets import KeyVaultSecretStore, Secret, SecretNotFoundError, SecretStore, secret_store
from shared.servicenow.errors import error_from_response
from shared.servicenow.policies import CallStats, HeadersPolicy, Pipeline, RetryPolicy, WireLogPolicy
from shared.servicenow.transport import HttpRequest, RequestsTransport
from shared.settings import OAUTH_MODES, HttpSettings, ServiceNowConnection, Settings, TokenSettings, get_settings

logger = logging.getLogger("shared.tokens")
EXPIRY_MARGIN = timedelta(seconds=60)  # an access token this close to expiry is treated as expired
MINIMUM_ACCESS_LIFESPAN = 3600  # seconds; the seed asks admins to raise ServiceNow's 1,800 s default
_meter = metrics.get_meter("defender_iot_servicenow")
REFRESH_TOKEN_DAYS_LEFT = _meter.create_gauge("servicenow.refresh_token.days_left", unit="d")
TOKEN_REFRESH_FAILURES = _meter.create_counter("servicenow.token_refresh.failures", unit="{refresh}")


class TokenError(Exception):
    """A token could not be obtained; the message names the connection and what to do."""


class RefreshTokenRejectedError(TokenError):
    """ServiceNow refused the refresh token (revoked or expired): a person must run ``connect``."""


@dataclass(frozen=True)
class Grant:
    access_token: Secret
    expires_in: int
    refresh_token: Secret | None

    @property
    def access_expires_at(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.expires_in)


class TokenEndpoint:
    """``POST /oauth_token.do`` with a form body, through the client's own transport and retry policy."""

    def __init__(self, connection: ServiceNowConnection, http: HttpSettings) -> None:
        transport = RequestsTransport(
            connect_timeout=http.connect_timeout,
            read_timeout=http.read_timeout,
            proxy_url=connection.proxy.url if connection.proxy else None,
            ca_bundle=connection.ca_bundle,
        )
        self.stats = CallStats()
        retry = RetryPolicy(max_attempts=http.max_attempts, budget_seconds=http.retry_budget_seconds, stats=self.stats)
        self.pipeline = Pipeline([retry, HeadersPolicy(), WireLogPolicy(self.stats)], transport)
        self.connection = connection

    def grant(self, form: Mapping[str, str]) -> Grant:
        request = HttpRequest(
            "POST",
            self.connection.instance_url + "/oauth_token.do",
            body=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            retry_safe=True,
        )
        response = self.pipeline.send(request)
        if response.status_code != 200:
            error = error_from_response(response, method="POST", path="/oauth_token.do", now=time.time())
            if response.status_code == 401 and form.get("grant_type") == "refresh_token":
                raise RefreshTokenRejectedError(
                    f"ServiceNow refused the refresh token of connection '{self.connection.name}' (revoked or "
                    f"expired): run `python -m shared connect {self.connection.name}` to sign in again"
                ) from None
            if response.status_code == 401:
                raise TokenError(self._refused(form, error.message, error.detail)) from None
            raise TokenError(f"token request for connection '{self.connection.name}' failed: {error}") from None
        document: dict[str, Any] = response.json()
        refresh = document.get("refresh_token")
        return Grant(
            Secret(str(document["access_token"])),
            int(document.get("expires_in", 0)),
            Secret(str(refresh)) if refresh else None,
        )

    def _refused(self, form: Mapping[str, str], error: str, description: str | None) -> str:
        """What a refused grant means, as far as ServiceNow's answer tells, and what to check."""
        connection = self.connection
        answer = f"401 {error}" + (f": {description}" if description else "")
        client = (
            f"the OAuth client: client_id {connection.client_id!r} and the secret in Key Vault secret "
            f"{connection.secret_name('client-secret')!r} must match the Application Registry record "
            "(System OAuth > Application Registry)"
        )
        if error in ("invalid_client", "unauthorized_client"):
            return f"ServiceNow refused {client} ({answer})"
        if form.get("grant_type") == "client_credentials":
            return (
                f"ServiceNow refused the client-credentials sign-in of connection '{connection.name}' ({answer}); "
                f"check {client}, and that the instance allows the grant (system property "
                "glide.oauth.inbound.client.credential.grant_type.enabled=true and an OAuth Application User on "
                "the registry record)"
            )
        # ServiceNow answers a wrong password and a wrong client alike (401 server_error/access_denied).
        return (
            f"ServiceNow refused the sign-in of connection '{connection.name}' ({answer}); it gives the same "
            f"answer for a wrong user password and for a wrong OAuth client, so check both: the password of "
            f"user {form.get('username', '')!r} (the account active and not locked out), and {client}"
        )


def _client_form(connection: ServiceNowConnection, secrets: SecretStore) -> dict[str, str]:
    assert connection.client_id is not None  # settings require it for OAuth modes
    try:
        client_secret = secrets.get(connection.secret_name("client-secret")).reveal()
    except SecretNotFoundError:
        raise TokenError(
            f"connection '{connection.name}': Key Vault secret {connection.secret_name('client-secret')!r} (the OAuth "
            "client secret) is missing; set it, then run connect"
        ) from None
    return {"client_id": connection.client_id, "client_secret": client_secret}


def _store_access(store: KeyVaultSecretStore, connection: ServiceNowConnection, grant: Grant) -> None:
    store.write(
        connection.secret_name("access-token"),
        grant.access_token,
        content_type="application/vnd.servicenow.access-token",
        expires_on=grant.access_expires_at,
        tags={"connection": connection.name, "kind": "access-token"},
    )


class OAuthTokenProvider:
    """The client's credential for ``oauth`` and ``client_credentials`` connections."""

    def __init__(self, connection: ServiceNowConnection, store: KeyVaultSecretStore, endpoint: TokenEndpoint) -> None:
        self.connection = connection
        self.store = store
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._current: tuple[Secret, datetime | None] | None = None
        self.refreshes = 0

    def _usable(self, expires_at: datetime | None) -> bool:
        return expires_at is None or expires_at - EXPIRY_MARGIN > datetime.now(UTC)

    def _bearer(self, token: Secret) -> Secret:
        return Secret("Bearer " + token.reveal())

    def authorization(self) -> Secret:
        with self._lock:
            if self._current is not None and self._usable(self._current[1]):
                return self._bearer(self._current[0])
            try:
                stored = self.store.read(self.connection.secret_name("access-token"), fresh=self._current is not None)
                if stored.value and self._usable(stored.expires_on):
                    self._current = (stored.value, stored.expires_on)
                    return self._bearer(stored.value)
            except SecretNotFoundError:
                pass
            return self._bearer(self._renew())

    def refresh(self, rejected: Secret) -> Secret | None:
        with self._lock:
            if self._current is not None and self._bearer(self._current[0]) != rejected:
                return self._bearer(self._current[0])  # another thread already renewed it
            try:  # token_refresh (or another instance) may have written a newer one
                stored = self.store.read(self.connection.secret_name("access-token"), fresh=True)
                if self._bearer(stored.value) != rejected and self._usable(stored.expires_on):
                    self._current = (stored.value, stored.expires_on)
                    return self._bearer(stored.value)
            except SecretNotFoundError:
                pass
            fresh = self._bearer(self._renew())
            return None if fresh == rejected else fresh

    def _renew(self) -> Secret:
        """Holding the lock: a new access token from ServiceNow, written to Key Vault."""
        grant = renew(self.connection, self.store, self.endpoint)
        self._current = (grant.access_token, grant.access_expires_at)
        self.refreshes += 1
        return grant.access_token


def renew(connection: ServiceNowConnection, store: KeyVaultSecretStore, endpoint: TokenEndpoint) -> Grant:
    """A new access token by the refresh-token grant (``oauth``) or the client-credentials grant."""
    form = _client_form(connection, store)
    if connection.auth == "client_credentials":
        grant = endpoint.grant({**form, "grant_type": "client_credentials"})
    else:
        try:
            refresh_token = store.read(connection.secret_name("refresh-token"), fresh=True).value
        except SecretNotFoundError:
            raise TokenError(
                f"connection '{connection.name}' has no refresh token in Key Vault: run "
                f"`python -m shared connect {connection.name}`"
            ) from None
        grant = endpoint.grant({**form, "grant_type": "refresh_token", "refresh_token": refresh_token.reveal()})
    _store_access(store, connection, grant)
    return grant


# -- connect (operator command) --------------------------------------------------------------
@dataclass(frozen=True)
class ConnectReport:
    access_lifespan_seconds: int
    refresh_expires_on: datetime | None
    warnings: tuple[str, ...]


def connect(connection: ServiceNowConnection, settings: Settings, username: str, password: Secret) -> ConnectReport:
    """Password grant once; tokens to Key Vault; one authenticated call to prove them. The password is not kept."""
    store = secret_store(settings)
    if not isinstance(store, KeyVaultSecretStore):
        raise TokenError("connect stores tokens in Key Vault: set KEY_VAULT_URL")
    endpoint = TokenEndpoint(connection, settings.http)
    form = _client_form(connection, store)
    if connection.auth == "client_credentials":
        grant = endpoint.grant({**form, "grant_type": "client_credentials"})
        refresh_expires = None
    else:
        grant = endpoint.grant({**form, "grant_type": "password", "username": username, "password": password.reveal()})
        if grant.refresh_token is None:
            raise TokenError(f"connection '{connection.name}': ServiceNow issued no refresh token")
        refresh_expires = datetime.now(UTC) + timedelta(days=connection.refresh_token_lifespan_days)
        store.write(
            connection.secret_name("refresh-token"),
            grant.refresh_token,
            content_type="application/vnd.servicenow.refresh-token",
            expires_on=refresh_expires,
            tags={"connection": connection.name, "kind": "refresh-token", "user": username},
        )
    _store_access(store, connection, grant)
    from shared.servicenow.client import ServiceNowClient  # noqa: PLC0415 - avoids an import cycle
    from shared.servicenow.query import EncodedQuery  # noqa: PLC0415

    client = ServiceNowClient.for_connection(connection, store, settings.http)
    query = EncodedQuery().eq("user_name", username) if connection.auth == "oauth" else None
    list(client.query("sys_user", query, fields=["user_name"], limit=1))  # one authenticated call proves the token
    client.close()
    warnings = []
    lifespan = grant.expires_in + 1  # ServiceNow reports the lifespan minus about a second
    if lifespan < MINIMUM_ACCESS_LIFESPAN:
        warnings.append(
            f"the access-token lifespan is {lifespan} s; raise it to at least {MINIMUM_ACCESS_LIFESPAN} s on the "
            "OAuth application registry record (System OAuth > Application Registry)"
        )
    return ConnectReport(lifespan, refresh_expires, tuple(warnings))


# -- token_refresh (timer) -------------------------------------------------------------------
@dataclass
class RefreshOutcome:
    connection: str
    renewed: bool
    access_expires_on: datetime | None
    refresh_days_left: float | None
    error: str | None = None


def refresh_connection(
    connection: ServiceNowConnection,
    store: KeyVaultSecretStore,
    endpoint: TokenEndpoint,
    tokens: TokenSettings,
    now: datetime | None = None,
) -> RefreshOutcome:
    now = now or datetime.now(UTC)
    outcome = RefreshOutcome(connection.name, False, None, None)
    if connection.auth == "oauth":
        try:
            refresh = store.read(connection.secret_name("refresh-token"), fresh=True)
            if refresh.expires_on is not None:
                outcome.refresh_days_left = (refresh.expires_on - now).total_seconds() / 86400
        except SecretNotFoundError:
            outcome.error = f"no refresh token in Key Vault: run `python -m shared connect {connection.name}`"
            return outcome
    try:
        access = store.read(connection.secret_name("access-token"), fresh=True)
        outcome.access_expires_on = access.expires_on
        due = access.expires_on is None or access.expires_on - now < timedelta(minutes=tokens.renew_before_minutes)
    except SecretNotFoundError:
        due = True
    if due:
        try:
            grant = renew(connection, store, endpoint)
        except TokenError as exc:
            outcome.error = str(exc)
            return outcome
        outcome.renewed = True
        outcome.access_expires_on = grant.access_expires_at
    return outcome


def refresh_all_connections(settings: Settings | None = None) -> list[RefreshOutcome]:
    """The token_refresh function's entry point: every OAuth connection, renewed and checked."""
    settings = settings or get_settings()
    store = secret_store(settings)
    outcomes = []
    for connection in settings.connections:
        if connection.auth not in OAUTH_MODES:
            continue
        assert isinstance(store, KeyVaultSecretStore)  # settings require Key Vault for OAuth connections
        try:
            outcome = refresh_connection(connection, store, TokenEndpoint(connection, settings.http), settings.tokens)
        except Exception as exc:  # one connection's failure must not stop the others' renewal
            outcome = RefreshOutcome(connection.name, False, None, None, f"{type(exc).__name__}: {exc}")
        report(outcome, settings.tokens)
        outcomes.append(outcome)
    return outcomes


def report(outcome: RefreshOutcome, tokens: TokenSettings) -> None:
    attributes = {"connection": outcome.connection}
    if outcome.error:
        TOKEN_REFRESH_FAILURES.add(1, attributes)
        logger.error(
            "token refresh for connection '%s' failed; the last good tokens stay in place: %s",
            outcome.connection,
            outcome.error,
        )
    elif outcome.renewed:
        logger.info(
            "access token of connection '%s' renewed; valid until %s",
            outcome.connection,
            outcome.access_expires_on.isoformat() if outcome.access_expires_on else "?",
        )
    days = outcome.refresh_days_left
    if days is None:
        return
    REFRESH_TOKEN_DAYS_LEFT.set(days, attributes)
    fix = f"run `python -m shared connect {outcome.connection}` to sign in again before then"
    if days <= tokens.error_days:
        logger.error("refresh token of connection '%s' expires in %.1f day(s): %s", outcome.connection, days, fix)
    elif days <= tokens.warn_days:
        logger.warning("refresh token of connection '%s' expires in %.1f day(s): %s", outcome.connection, days, fix)
