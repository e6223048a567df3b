"""What the console's and a sensor's REST APIs share: a bare API token in ``Authorization`` and JSON
answers whose failures say whether a later attempt may succeed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from shared.http.errors import HttpError, error_from_response
from shared.http.policies import CallStats, Next, Pipeline
from shared.http.transport import HttpRequest
from shared.platform.secrets import Secret


class DefenderApiError(Exception):
    """A Defender REST call failed; ``retryable`` says whether a later attempt may succeed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


@dataclass
class TokenAuthPolicy:
    """The console and the sensors take their API token bare in ``Authorization`` (no scheme)."""

    token: Callable[[], Secret]

    def send(self, request: HttpRequest, next_: Next) -> requests.Response:
        return next_(dataclasses.replace(request, headers={**request.headers, "Authorization": self.token().reveal()}))


def get_json(
    pipeline: Pipeline,
    stats: CallStats,
    url: str,
    path: str,
    params: dict[str, str] | None,
    *,
    service: str,
    error: type[DefenderApiError] = DefenderApiError,
) -> Any:
    """GET ``url`` and return its JSON; ``path`` names the call in errors (never the token, never a query)."""
    stats.calls += 1
    try:
        response = pipeline.send(HttpRequest("GET", url, params=params))
    except HttpError as exc:
        raise error(f"{service} GET {path} failed: {exc}", retryable=exc.retryable) from None
    if response.status_code != 200:
        problem = error_from_response(response, method="GET", path=path, now=time.time())
        raise error(
            f"{service} GET {path} → {response.status_code}: {problem.message}",
            status=response.status_code,
            retryable=response.status_code in (408, 429) or response.status_code >= 500,
        )
    try:
        return response.json()
    except ValueError:
        raise error(f"{service} GET {path}: the answer is not JSON", retryable=True) from None
