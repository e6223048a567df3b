"""ServiceNow connections signed in and kept signed in: ``connect`` and the token_refresh job.

- :func:`connect` (operator command): username and password are used once, for the password grant;
  the refresh token and the access token go to Key Vault with their expiry; the password is forgotten.
- :func:`refresh_connection` (the token_refresh timer, one connection): renews the access token well
  before it expires and measures the refresh token's remaining life, because when it ends a person
  must run ``connect`` again; :func:`report` warns days ahead, then loudly. A failed refresh leaves the
  last good tokens in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.platform.secrets import KeyVaultSecretStore, Secret, SecretNotFoundError
from shared.platform.telemetry import REFRESH_TOKEN_DAYS_LEFT, TOKEN_REFRESH_FAILURES
from shared.servicenow.client import ServiceNowClient
from shared.servicenow.oauth import TokenEndpoint, TokenError, client_form, renew, store_access
from shared.servicenow.query import EncodedQuery
from shared.servicenow.settings import ServiceNowConnection, TokenSettings

logger = logging.getLogger("shared.connections")
MINIMUM_ACCESS_LIFESPAN = 3600  # seconds; the seed asks admins to raise ServiceNow's 1,800 s default


# -- connect (operator command) --------------------------------------------------------------
@dataclass(frozen=True)
class ConnectReport:
    access_lifespan_seconds: int
    refresh_expires_on: datetime | None
    warnings: tuple[str, ...]


def connect(
    connection: ServiceNowConnection,
    store: KeyVaultSecretStore,
    endpoint: TokenEndpoint,
    client: ServiceNowClient,
    username: str,
    password: Secret,
) -> ConnectReport:
    """Password grant once; tokens to Key Vault; one authenticated call through ``client`` (which signs in
    with the stored tokens) to prove them. The password is not kept."""
    form = client_form(connection, store)
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
    store_access(store, connection, grant)
    query = EncodedQuery().eq("user_name", username) if connection.auth == "oauth" else None
    list(client.query("sys_user", query, fields=["user_name"], limit=1))  # one authenticated call proves the token
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
