"""Typed HTTP errors that callers branch on, whichever service answered (ServiceNow, a Defender source).

``TransientError`` (retry later: 5xx, timeouts, connection failures, 429) versus ``PermanentError``
(retrying the same request cannot help: 400, 403, TLS verification), ``AuthError`` (401 even with a
fresh credential: a person must fix the credential) and ``NotFoundError`` (404).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

EXCERPT_LENGTH = 200


class HttpError(Exception):
    """Base class: every failure of a call. Never carries request headers or bodies."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        transaction_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        origin: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.detail = detail
        self.transaction_id = transaction_id
        self.method = method
        self.path = path
        self.origin = origin  # scheme://host[:port], named when the host itself could not be reached
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.method} {self.origin or ''}{self.path}" if self.method and self.path else "HTTP call"
        status = f" → {self.status}" if self.status is not None else ""
        text = f"{where}{status}: {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        if self.transaction_id:
            text += f" [X-Transaction-ID {self.transaction_id}]"
        return text


class TransientError(HttpError):
    """The call may succeed later: 5xx, timeout, connection failure."""

    retryable = True


class RateLimitedError(TransientError):
    """HTTP 429; ``retry_after`` is the server's requested wait in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ConnectionFailedError(TransientError):
    """No HTTP response: connection refused or reset, DNS failure, timeout, proxy failure.

    ``request_sent`` is False only when the request certainly never reached the server, which makes
    repeating even a non-idempotent POST safe.
    """

    def __init__(self, message: str, *, request_sent: bool, timed_out: bool = False, **kwargs: Any) -> None:
        self.request_sent = request_sent
        self.timed_out = timed_out  # no answer in time (connect or read), rather than a refused or reset connection
        super().__init__(message, **kwargs)


class PermanentError(HttpError):
    """Retrying the same request cannot succeed: bad request, ACL or data policy, TLS misconfiguration."""


class AuthError(HttpError):
    """401 even with a freshly obtained credential: the credential itself is wrong or revoked. Neither
    transient nor permanent: nothing succeeds until a person fixes the credential, then everything does."""


class NotFoundError(PermanentError):
    """404: no such record (or table API v1 with an empty result)."""


def excerpt(text: str) -> str:
    """A short, single-line, tag-free excerpt of an error page (proxies answer with HTML)."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", text, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text[:EXCERPT_LENGTH] + ("…" if len(text) > EXCERPT_LENGTH else "")


def _envelope(status: int, reason: str, content_type: str, body: str) -> tuple[str, str | None]:
    """ServiceNow's ``{"error": {"message", "detail"}}`` envelope, or an excerpt of whatever came back."""
    if "json" in content_type or body.lstrip().startswith("{"):
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict):
            error = document.get("error")
            if isinstance(error, dict):
                detail = error.get("detail")
                return str(error.get("message") or reason or "error"), str(detail) if detail else None
            if "error_description" in document or "error" in document:
                # The OAuth endpoint's own shape.
                return str(document.get("error") or "error"), str(document.get("error_description") or "") or None
    if not body:
        return (reason or f"HTTP {status}"), None
    kind = "HTML page" if "html" in content_type or body.lstrip().startswith("<") else "non-JSON body"
    return f"{reason or 'error'} ({kind})", excerpt(body)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Parse ``Retry-After`` given as delta-seconds or as an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def server_wait(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """How long the server asked to wait: ``Retry-After`` (seconds or an HTTP date), else, on a 429, the
    rate-limit window's end (``X-RateLimit-Reset``, epoch seconds). None when it did not say."""
    wait = retry_after_seconds(headers.get("Retry-After"), now)
    reset = headers.get("X-RateLimit-Reset", "").strip()
    if wait is None and status == 429 and reset.isdigit():
        wait = max(0.0, float(reset) - now)
    return wait


def error_from_parts(
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    method: str,
    path: str,
    now: float,
    reason: str = "",
) -> HttpError:
    """Map a non-success status (of a call, or of one Batch API item) to the typed error."""
    message, detail = _envelope(status, reason, headers.get("Content-Type", ""), body)
    common: dict[str, Any] = {
        "status": status,
        "detail": detail,
        "transaction_id": headers.get("X-Transaction-ID"),
        "method": method,
        "path": path,
    }
    if status == 429:
        return RateLimitedError(message, retry_after=server_wait(status, headers, now), **common)
    if status == 401:
        return AuthError(message, **common)
    if status == 404:
        return NotFoundError(message, **common)
    if status == 202 or status >= 500:
        # 202 on a Table API call means ServiceNow's session queue dropped the request.
        return TransientError(message, **common)
    return PermanentError(message, **common)


def error_from_response(response: requests.Response, *, method: str, path: str, now: float) -> HttpError:
    body = response.text if response.content else ""
    return error_from_parts(
        response.status_code, response.headers, body, method=method, path=path, now=now, reason=response.reason or ""
    )
