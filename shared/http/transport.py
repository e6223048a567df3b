"""The HTTP transport under every outbound call (ServiceNow, Defender sources): a pooled ``requests`` session.

The session never keeps cookies: ServiceNow queues the requests of one session cookie and answers
202 (dropping them) once about ten are queued, so every request must stand alone. Environment
proxy and CA variables are ignored (``trust_env=False``): the app settings are the one source of
truth, and TLS verification stays on unless a CA bundle is named.
"""

from __future__ import annotations

import http.cookiejar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from shared.http.errors import ConnectionFailedError, PermanentError

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


@dataclass
class HttpRequest:
    method: str
    url: str
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # None: decided by method (POST is not repeated unless the caller says it is safe).
    retry_safe: bool | None = None
    # Per-request options for the pipeline's policies, never sent (e.g. the ServiceNow budget's "priority"),
    # as azure-core's PipelineRequest.context carries them.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def may_repeat(self) -> bool:
        return self.retry_safe if self.retry_safe is not None else self.method in IDEMPOTENT_METHODS

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request certainly did not reach the server (so even a POST may be repeated)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.NameResolutionError)


class RequestsTransport:
    """Sends one request; converts ``requests`` exceptions into the typed errors of :mod:`shared.http.errors`."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        proxy_url: str | None = None,
        ca_bundle: Path | None = None,
        pool_maxsize: int = 32,
        ca_setting: str = "SERVICENOW_CA_BUNDLE",
    ) -> None:
        session = requests.Session()
        session.trust_env = False
        session.cookies.set_policy(_RejectAllCookies())
        # Retries are the retry policy's job, with ServiceNow-aware rules; urllib3 must not add its own.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        if proxy_url:
            session.proxies = {"https": proxy_url, "http": proxy_url}
        session.verify = str(ca_bundle) if ca_bundle else True
        self.session = session
        self.timeout = (connect_timeout, read_timeout)
        self.ca_setting = ca_setting  # the setting to name when TLS verification fails

    def send(self, request: HttpRequest) -> requests.Response:
        try:
            return self.session.request(
                request.method,
                request.url,
                params=request.params,
                headers=request.headers,
                data=request.body,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise PermanentError(
                f"TLS verification failed; set {self.ca_setting} only if the server or proxy uses a private CA",
                detail=type(exc).__name__,
                method=request.method,
                path=request.path,
                origin=request.origin,
            ) from None
        except requests.exceptions.ProxyError as exc:
            raise self._failure("the HTTPS proxy refused or failed the connection", exc, request, sent=False) from None
        except requests.exceptions.ConnectionError as exc:
            # ConnectTimeout is a ConnectionError and counts as never sent; ReadTimeout is not one.
            timed_out = isinstance(exc, requests.exceptions.Timeout)
            message = "connect timeout" if timed_out else "connection failed"
            raise self._failure(message, exc, request, sent=not _never_sent(exc), timed_out=timed_out) from None
        except requests.exceptions.Timeout as exc:
            message = f"no response within {self.timeout[1]:g} s (read timeout)"
            raise self._failure(message, exc, request, sent=True, timed_out=True) from None

    @staticmethod
    def _failure(
        message: str, exc: Exception, request: HttpRequest, *, sent: bool, timed_out: bool = False
    ) -> ConnectionFailedError:
        return ConnectionFailedError(
            message,
            request_sent=sent,
            timed_out=timed_out,
            detail=type(exc).__name__,
            method=request.method,
            path=request.path,
            origin=request.origin,
        )

    def close(self) -> None:
        self.session.close()
