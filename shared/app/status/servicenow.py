"""``status --check-servicenow``: the only lines that call ServiceNow — per connection, a sign-in and one read
of a row (the integration user's own, as ``verify`` reads it). Not counted on the budget board: an operator's
one request per connection."""

from __future__ import annotations

import time
from collections.abc import Iterator

from shared.app import secret_store, servicenow_client
from shared.app.status.findings import Finding, Level
from shared.http.errors import AuthError, HttpError
from shared.platform.secrets import SecretNotFoundError, SecretStore, SecretStoreUnavailableError
from shared.servicenow import EncodedQuery
from shared.servicenow.oauth import TokenError
from shared.servicenow.settings import ServiceNowConnection
from shared.settings import Settings

THRESHOLD = "FAIL sign-in refused, a secret missing, or no answer"


def servicenow_findings(settings: Settings) -> Iterator[Finding]:
    secrets = secret_store(settings)
    for connection in settings.connections:
        yield _check(connection, secrets, settings)


def _check(connection: ServiceNowConnection, secrets: SecretStore, settings: Settings) -> Finding:
    client = servicenow_client(connection, secrets, settings.http)
    started = time.perf_counter()
    try:
        query = EncodedQuery().eq("user_name", connection.username or "")
        next(iter(client.query("sys_user", query, fields=["sys_id"], limit=1)), None)
    except (AuthError, TokenError) as exc:
        summary = f"sign-in refused: {exc} (`connect {connection.name}`, or the user's password)"
        return Finding("servicenow", connection.name, Level.FAIL, summary, THRESHOLD, {"answered_ms": None})
    except (SecretNotFoundError, SecretStoreUnavailableError) as exc:
        return Finding("servicenow", connection.name, Level.FAIL, str(exc), THRESHOLD, {"answered_ms": None})
    except (HttpError, ValueError) as exc:
        summary = f"no answer from {connection.instance_url}: {exc}"
        return Finding("servicenow", connection.name, Level.FAIL, summary, THRESHOLD, {"answered_ms": None})
    finally:
        client.close()
    answered = round((time.perf_counter() - started) * 1000)
    summary = f"signed in at {connection.instance_url}; a read answered in {answered} ms"
    return Finding("servicenow", connection.name, Level.OK, summary, THRESHOLD, {"answered_ms": answered})
