"""The OAuth connections' lines, from the tokens' metadata in Key Vault (expiry dates, never a value)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from shared.app import vault_store
from shared.app.status.findings import Figure, Finding, Level, stamp
from shared.platform.secrets import KeyVaultSecretStore, SecretNotFoundError, SecretStoreUnavailableError
from shared.servicenow.settings import OAUTH_MODES, ServiceNowConnection
from shared.settings import Settings

# Refresh tokens: TOKEN_REFRESH_WARNING_DAYS and TOKEN_REFRESH_ERROR_DAYS, as token_refresh logs them.


def connection_findings(settings: Settings, now: datetime) -> Iterator[Finding]:
    oauth = [c for c in settings.connections if c.auth in OAUTH_MODES]
    if not oauth:
        return
    store = vault_store(settings.key_vault)
    assert isinstance(store, KeyVaultSecretStore)  # settings require Key Vault for OAuth connections
    for connection in oauth:
        try:
            yield _tokens(connection, store, settings, now)
        except SecretStoreUnavailableError as exc:
            yield Finding("connection", connection.name, Level.FAIL, str(exc), "FAIL when Key Vault cannot be read")


def _tokens(connection: ServiceNowConnection, store: KeyVaultSecretStore, settings: Settings, now: datetime) -> Finding:
    tokens = settings.tokens
    threshold = f"WARN ≤ {tokens.warn_days:g} days left, FAIL ≤ {tokens.error_days:g} or not signed in"
    figures: dict[str, Figure] = {"signed_in": False, "refresh_days_left": None, "access_expires_on": None}
    parts = []
    level = Level.OK
    if connection.auth == "oauth":
        try:
            refresh = store.read(connection.secret_name("refresh-token"), fresh=True)
        except SecretNotFoundError:
            summary = f"not signed in: no refresh token in Key Vault (run `connect {connection.name}`)"
            return Finding("connection", connection.name, Level.FAIL, summary, threshold, figures)
        if refresh.expires_on is None:
            parts.append("signed in; refresh token with no expiry recorded")
        else:
            days = (refresh.expires_on - now).total_seconds() / 86400
            figures["refresh_days_left"] = round(days, 1)
            parts.append(f"signed in; refresh token expires in {days:.1f} day(s) ({stamp(refresh.expires_on)})")
            level = Level.FAIL if days <= tokens.error_days else Level.WARN if days <= tokens.warn_days else level
    figures["signed_in"] = True
    try:
        access = store.read(connection.secret_name("access-token"), fresh=True)
    except SecretNotFoundError:
        access = None
    if access is None or access.expires_on is None:
        parts.append("no access token yet (token_refresh gets one)")
    else:
        figures["access_expires_on"] = access.expires_on.isoformat()
        state = "valid until" if access.expires_on > now else "expired at"
        parts.append(f"access token {state} {stamp(access.expires_on)}")
        if access.expires_on <= now:  # token_refresh renews it well before: is the timer running?
            level = max(level, Level.WARN)
    return Finding("connection", connection.name, level, "; ".join(parts), threshold + ", WARN access expired", figures)
