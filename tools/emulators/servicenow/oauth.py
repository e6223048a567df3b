"""ServiceNow's ``/oauth_token.do`` and credential checks, on the emulator's clock.

Password grant issues an access and a refresh token (the same access token while it is still
valid); refresh grant issues a new access token and returns the same refresh token without
extending it; client-credentials grant works only for clients that enable it. ``expires_in`` is
the remaining lifespan minus about a second, as the real instance reports it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    access_lifespan: int = 1800
    refresh_lifespan: int = 8_640_000
    client_credentials_user: str | None = None  # set: the client-credentials grant is enabled


@dataclass
class Token:
    value: str
    user: str
    client_id: str
    expires_at: float
    kind: str  # "access" | "refresh"


class OAuthDeniedError(Exception):
    """Bad credentials or an expired/revoked token: 401 access_denied."""


@dataclass
class OAuthServer:
    clock: Callable[[], float]
    users: dict[str, str] = field(default_factory=dict)
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    grants: dict[str, int] = field(default_factory=dict)
    # Every token ever issued, revoked or not: what the test suite's secret scan looks for.
    issued: set[str] = field(default_factory=set)

    def _issue(self, kind: str, user: str, client: OAuthClient, lifespan: int) -> Token:
        token = Token(secrets.token_urlsafe(48), user, client.client_id, self.clock() + lifespan, kind)
        self.tokens[token.value] = token
        self.issued.add(token.value)
        return token

    def _client(self, form: dict[str, str]) -> OAuthClient:
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(client.client_secret, form.get("client_secret", "")):
            raise OAuthDeniedError("client")
        return client

    def _body(self, access: Token, refresh: Token | None) -> dict[str, object]:
        now = self.clock()
        body: dict[str, object] = {
            "access_token": access.value,
            "scope": "useraccount",
            "token_type": "Bearer",  # the OAuth token type, not a secret  # nosec B105
            "expires_in": max(0, round(access.expires_at - now) - 1),
        }
        if refresh is not None:
            body["refresh_token"] = refresh.value
        return body

    def grant(self, form: dict[str, str]) -> dict[str, object]:
        grant_type = form.get("grant_type", "")
        with self.lock:
            self.grants[grant_type] = self.grants.get(grant_type, 0) + 1
            client = self._client(form)
            now = self.clock()
            if grant_type == "password":
                user = form.get("username", "")
                password = self.users.get(user)
                if password is None or not secrets.compare_digest(password, form.get("password", "")):
                    raise OAuthDeniedError("password")
                access = next(
                    (
                        t
                        for t in self.tokens.values()
                        if t.kind == "access"
                        and t.user == user
                        and t.client_id == client.client_id
                        and t.expires_at > now
                    ),
                    None,
                ) or self._issue("access", user, client, client.access_lifespan)
                return self._body(access, self._issue("refresh", user, client, client.refresh_lifespan))
            if grant_type == "refresh_token":
                refresh = self.tokens.get(form.get("refresh_token", ""))
                if (
                    refresh is None
                    or refresh.kind != "refresh"
                    or refresh.client_id != client.client_id
                    or refresh.expires_at <= now
                ):
                    raise OAuthDeniedError("refresh")
                return self._body(self._issue("access", refresh.user, client, client.access_lifespan), refresh)
            if grant_type == "client_credentials" and client.client_credentials_user:
                return self._body(
                    self._issue("access", client.client_credentials_user, client, client.access_lifespan), None
                )
            raise OAuthDeniedError("grant")

    def user_for_bearer(self, value: str) -> str | None:
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.kind != "access" or token.expires_at <= self.clock():
                return None
            return token.user

    def user_for_basic(self, username: str, password: str) -> str | None:
        expected = self.users.get(username)
        return username if expected is not None and secrets.compare_digest(expected, password) else None

    def revoke(self, value: str | None = None) -> int:
        """Revoke one token (and, for a refresh token, nothing else) or, with None, every token."""
        with self.lock:
            if value is None:
                count = len(self.tokens)
                self.tokens.clear()
                return count
            return 1 if self.tokens.pop(value, None) is not None else 0
