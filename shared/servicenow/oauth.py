"""ServiceNow OAuth: the token endpoint, and the client's credential that keeps an access token fresh.

- :class:`TokenEndpoint`: ``POST /oauth_token.do`` with a form body, through the usual retry pipeline;
  a refused grant says what ServiceNow's answer lets it say about which credential was wrong.
- :class:`OAuthTokenProvider`: memory → Key Vault → refresh grant, and on a 401 one refresh shared by
  every thread that saw it, not one each.
- :func:`renew`: a new access token (refresh-token or client-credentials grant), written to Key Vault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from shared.http.errors import error_from_response
from shared.http.policies import build_pipeline
from shared.http.settings import HttpSettings
from shared.http.transport import HttpRequest
from shared.platform.secrets import KeyVaultSecretStore, Secret, SecretNotFoundError, SecretStore
from shared.servicenow.errors import json_answer
from shared.servicenow.settings import ServiceNowConnection

EXPIRY_MARGIN = timedelta(seconds=60)  # an access token this close to expiry is treated as expired


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
        self.pipeline = build_pipeline(
            http,
            service="ServiceNow OAuth",
            proxy_url=connection.proxy.url if connection.proxy else None,
            ca_bundle=connection.ca_bundle,
            ca_setting="SERVICENOW_CA_BUNDLE",
        )
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
        document = json_answer(response, method="POST", path="/oauth_token.do")
        if not isinstance(document, dict) or not document.get("access_token"):
            raise TokenError(f"token answer for connection '{self.connection.name}' carries no access_token")
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


def client_form(connection: ServiceNowConnection, secrets: SecretStore) -> dict[str, str]:
    assert connection.client_id is not None  # settings require it for OAuth modes
    try:
        client_secret = secrets.get(connection.secret_name("client-secret")).reveal()
    except SecretNotFoundError:
        raise TokenError(
            f"connection '{connection.name}': Key Vault secret {connection.secret_name('client-secret')!r} (the OAuth "
            "client secret) is missing; set it, then run connect"
        ) from None
    return {"client_id": connection.client_id, "client_secret": client_secret}


def store_access(store: KeyVaultSecretStore, connection: ServiceNowConnection, grant: Grant) -> None:
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
    form = client_form(connection, store)
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
    store_access(store, connection, grant)
    return grant
