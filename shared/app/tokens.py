"""Signs connections in and keeps their tokens fresh; the token_refresh function's entry point."""

from __future__ import annotations

import logging

from shared.app import key_vault, servicenow_client
from shared.connections import ConnectReport, RefreshOutcome, connect, refresh_connection, report
from shared.platform.secrets import Secret
from shared.platform.times import Deadline
from shared.servicenow.oauth import TokenEndpoint
from shared.servicenow.settings import OAUTH_MODES, ServiceNowConnection
from shared.settings import Settings, get_settings

logger = logging.getLogger("shared.app.tokens")


def connect_connection(
    settings: Settings, connection: ServiceNowConnection, username: str, password: Secret
) -> ConnectReport:
    """``connect``: sign a connection in, with its tokens in Key Vault, and prove them with one call."""
    store = key_vault(settings)
    client = servicenow_client(connection, store, settings.http)
    try:
        return connect(connection, store, TokenEndpoint(connection, settings.http), client, username, password)
    finally:
        client.close()


def refresh_tokens(settings: Settings | None = None) -> list[RefreshOutcome]:
    """The token_refresh function's entry point: every OAuth connection, renewed and checked."""
    settings = settings or get_settings()
    oauth = [c for c in settings.connections if c.auth in OAUTH_MODES]
    if not oauth:
        return []
    store = key_vault(settings)  # settings require Key Vault for OAuth connections
    deadline = Deadline(settings.run_seconds)  # the invocation's run time: never the host's functionTimeout
    outcomes: list[RefreshOutcome] = []
    for connection in oauth:
        if outcomes and deadline.passed():
            left = [c.name for c in oauth[len(outcomes) :]]
            logger.warning("token refresh stopped at %s; the next tick renews %s", deadline, ", ".join(left))
            break
        try:
            outcome = refresh_connection(connection, store, TokenEndpoint(connection, settings.http), settings.tokens)
        except Exception as exc:  # one connection's failure must not stop the others' renewal
            outcome = RefreshOutcome(connection.name, False, None, None, f"{type(exc).__name__}: {exc}")
        report(outcome, settings.tokens)
        outcomes.append(outcome)
    return outcomes
