"""Credentials for the ServiceNow client (:class:`shared.http.policies.Credential`).

A credential gives the ``Authorization`` header value and, when ServiceNow answers 401, a fresh one
if it can get one. This module holds the legacy Basic mode and a static bearer token; the OAuth
provider (:mod:`shared.servicenow.oauth`) plugs in the same way.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable

from shared.platform.secrets import Secret

SecretSource = Callable[[], Secret]


class _CachedSource:
    """Holds the last value read from a secret source; re-reads only when told the value was rejected."""

    def __init__(self, source: SecretSource, render: Callable[[Secret], Secret]) -> None:
        self._source = source
        self._render = render
        self._lock = threading.Lock()
        self._current: Secret | None = None

    def authorization(self) -> Secret:
        with self._lock:
            if self._current is None:
                self._current = self._render(self._source())
            return self._current

    def refresh(self, rejected: Secret) -> Secret | None:
        with self._lock:
            if self._current is not None and self._current != rejected:
                return self._current  # another thread already fetched a newer one
            fresh = self._render(self._source())
            self._current = fresh
            return None if fresh == rejected else fresh


class BasicAuth(_CachedSource):
    """Legacy HTTP Basic on every call (discouraged: the password lives in the secret store)."""

    def __init__(self, username: str, password: SecretSource) -> None:
        def render(secret: Secret) -> Secret:
            pair = f"{username}:{secret.reveal()}".encode()
            return Secret("Basic " + base64.b64encode(pair).decode("ascii"))

        super().__init__(password, render)


class StaticBearerToken(_CachedSource):
    """A bearer token kept in the secret store and rotated by someone else; re-read after a 401."""

    def __init__(self, token: SecretSource) -> None:
        super().__init__(token, lambda secret: Secret("Bearer " + secret.reveal()))
