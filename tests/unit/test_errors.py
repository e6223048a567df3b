"""Responses map to typed errors carrying ServiceNow's message, detail and transaction id."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from shared.http.errors import (
    AuthError,
    HttpError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    error_from_parts,
    retry_after_seconds,
)


def error(status: int, body: str, content_type: str = "application/json", **headers: str) -> HttpError:
    return error_from_parts(
        status,
        {"Content-Type": content_type, **headers},
        body,
        method="GET",
        path="/api/now/table/incident",
        now=1_000_000.0,
    )


def envelope(message: str, detail: str) -> str:
    return json.dumps({"error": {"message": message, "detail": detail}, "status": "failure"})


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, PermanentError),
        (401, AuthError),
        (403, PermanentError),
        (404, NotFoundError),
        (429, RateLimitedError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (202, TransientError),
    ],
)
def test_status_maps_to_the_type_callers_branch_on(status: int, kind: type) -> None:
    found = error(status, envelope("m", "d"))
    assert type(found) is kind
    assert found.retryable == issubclass(kind, TransientError)


def test_envelope_fields_and_transaction_id_are_carried() -> None:
    found = error(403, envelope("Operation Failed", "Data Policy Exception"), **{"X-Transaction-ID": "ab12cd34ef56"})
    assert (found.status, found.message, found.detail, found.transaction_id) == (
        403,
        "Operation Failed",
        "Data Policy Exception",
        "ab12cd34ef56",
    )
    assert str(found) == (
        "GET /api/now/table/incident → 403: Operation Failed (Data Policy Exception) [X-Transaction-ID ab12cd34ef56]"
    )


def test_html_error_page_becomes_a_short_excerpt() -> None:
    page = "<html><head><style>b{}</style><title>502 Bad Gateway</title></head><body>" + "<p>proxy</p>" * 200
    found = error(502, page, "text/html")
    assert isinstance(found, TransientError)
    assert found.message.endswith("(HTML page)")
    assert found.detail is not None and found.detail.startswith("502 Bad Gateway proxy proxy")
    assert "<" not in found.detail and len(found.detail) <= 201


def test_rate_limit_wait_from_retry_after_or_reset() -> None:
    by_header = error(429, envelope("Rate limit exceeded", ""), **{"Retry-After": "7"})
    by_reset = error(429, "", **{"X-RateLimit-Reset": "1000030"})
    assert isinstance(by_header, RateLimitedError) and by_header.retry_after == 7.0
    assert isinstance(by_reset, RateLimitedError) and by_reset.retry_after == 30.0


def test_retry_after_http_date() -> None:
    assert retry_after_seconds(formatdate(1_000_042.0, usegmt=True), now=1_000_000.0) == 42.0
    assert retry_after_seconds("soon", now=0) is None
