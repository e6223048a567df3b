"""Small composable policies around one transport, in the manner of azure-core's pipeline.

Each policy does one cross-cutting job and is tested alone. The order is fixed by :func:`build_pipeline`:
retry → auth → headers → wire log → transport, so a retried attempt carries the current credential and
every wire attempt is logged and counted. ``service`` names the remote side in log lines ("ServiceNow",
"console").
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from shared.http.errors import ConnectionFailedError, server_wait
from shared.http.settings import HttpSettings
from shared.http.transport import HttpRequest, RequestsTransport
from shared.platform.secrets import Secret

logger = logging.getLogger("shared.http")

Next = Callable[[HttpRequest], requests.Response]
RETRY_STATUSES = frozenset({502, 503, 504})


class Credential(Protocol):
    """What :class:`AuthPolicy` asks for the ``Authorization`` header; the credentials themselves (Basic,
    bearer, OAuth, a console token) live with the service they sign in to."""

    def authorization(self) -> Secret:
        """The current ``Authorization`` header value."""
        ...

    def refresh(self, rejected: Secret) -> Secret | None:
        """A credential other than ``rejected``, or None when no fresher one can be had."""
        ...


class Transport(Protocol):
    def send(self, request: HttpRequest) -> requests.Response: ...


class Policy(Protocol):
    def send(self, request: HttpRequest, next_: Next) -> requests.Response: ...


class Pipeline:
    """Runs a request through the policies, outermost first, then the transport."""

    def __init__(self, policies: Sequence[Policy], transport: Transport) -> None:
        self.policies = tuple(policies)
        self.transport = transport

    def send(self, request: HttpRequest) -> requests.Response:
        return self._call(0, request)

    def _call(self, index: int, request: HttpRequest) -> requests.Response:
        if index == len(self.policies):
            return self.transport.send(request)
        return self.policies[index].send(request, lambda r: self._call(index + 1, r))

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()


@dataclass
class HeadersPolicy:
    """Always send ``Accept`` and, with a body, ``Content-Type`` (ServiceNow answers 400 to a write without them)."""

    user_agent: str = "defender-iot-servicenow"

    def send(self, request: HttpRequest, next_: Next) -> requests.Response:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        headers.update(request.headers)
        return next_(dataclasses.replace(request, headers=headers))


@dataclass
class AuthPolicy:
    """Adds the credential; on 401 asks the provider for a fresh one and repeats once.

    A 401 means the server did not process the request, so repeating is safe even for a POST.
    """

    provider: Credential

    def send(self, request: HttpRequest, next_: Next) -> requests.Response:
        credential = self.provider.authorization()
        response = next_(self._with(request, credential.reveal()))
        if response.status_code != 401:
            return response
        fresh = self.provider.refresh(rejected=credential)
        if fresh is None or fresh == credential:
            return response
        logger.info("%s %s answered 401; repeating once with a fresh credential", request.method, request.path)
        response.close()
        return next_(self._with(request, fresh.reveal()))

    @staticmethod
    def _with(request: HttpRequest, authorization: str) -> HttpRequest:
        return dataclasses.replace(request, headers={**request.headers, "Authorization": authorization})


@dataclass
class CallStats:
    """Counts for telemetry and benchmarks: logical calls and wire attempts."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0


@dataclass
class WireLogPolicy:
    """Logs each wire attempt (method, path, status, duration, transaction id) — never headers or bodies."""

    stats: CallStats
    service: str = "HTTP"

    def send(self, request: HttpRequest, next_: Next) -> requests.Response:
        self.stats.attempts += 1
        started = time.perf_counter()
        try:
            response = next_(request)
        except ConnectionFailedError as exc:
            logger.debug("%s %s %s failed: %s", self.service, request.method, request.path, exc.message)
            raise
        logger.debug(
            "%s %s %s → %d in %.0f ms [X-Transaction-ID %s]",
            self.service,
            request.method,
            request.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            response.headers.get("X-Transaction-ID", "-"),
        )
        return response


@dataclass
class RetryPolicy:
    """Retries what can succeed later, within an attempt limit and a total time budget.

    Retried: connection failures and timeouts, 429, 502, 503, 504. A request that may not be
    repeated (a POST the caller did not mark safe) is retried only when the server certainly did
    not act on it: a 429 refusal or a connection that never opened. Waits honour ``Retry-After``
    (seconds or HTTP date) and ``X-RateLimit-Reset``; otherwise exponential back-off with jitter.
    When the server asks for a wait beyond the budget, the 429 is returned at once so the caller
    can defer for that long instead of blocking.
    """

    max_attempts: int = 5
    budget_seconds: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 15.0
    stats: CallStats = field(default_factory=CallStats)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    service: str = "HTTP"

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * float(2 ** (attempt - 1)))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def server_delay(self, response: requests.Response) -> float | None:
        return server_wait(response.status_code, response.headers, self.wall_clock())

    def send(self, request: HttpRequest, next_: Next) -> requests.Response:
        deadline = self.clock() + self.budget_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                response = next_(request)
            except ConnectionFailedError as exc:
                if exc.request_sent and not request.may_repeat:
                    raise
                delay = self.backoff(attempt)
                if attempt >= self.max_attempts or self.clock() + delay > deadline:
                    raise
                reason = exc.message
            else:
                status = response.status_code
                if status != 429 and not (status in RETRY_STATUSES and request.may_repeat):
                    return response
                server_delay = self.server_delay(response)
                delay = server_delay if server_delay is not None else self.backoff(attempt)
                if attempt >= self.max_attempts or self.clock() + delay > deadline:
                    return response
                reason = f"HTTP {status}"
                response.close()
            self.stats.retries += 1
            logger.info(
                "%s %s %s: %s; retry %d/%d in %.2f s",
                self.service,
                request.method,
                request.path,
                reason,
                attempt,
                self.max_attempts - 1,
                delay,
            )
            self.sleep(delay)


def build_pipeline(
    http: HttpSettings,
    *,
    service: str,
    auth: Policy | None = None,
    budget: Policy | None = None,
    stats: CallStats | None = None,
    proxy_url: str | None = None,
    ca_bundle: Path | None = None,
    ca_setting: str,
) -> Pipeline:
    """The one way a client gets its pipeline: its own pooled transport, retry → budget → auth → headers → wire log.

    ``budget`` (ServiceNow's) holds a slot for each attempt, so a retry waits for its turn again.

    ``ca_setting`` is the setting a TLS failure names (each service has its own CA bundle setting).
    """
    transport = RequestsTransport(
        connect_timeout=http.connect_timeout,
        read_timeout=http.read_timeout,
        proxy_url=proxy_url,
        ca_bundle=ca_bundle,
        ca_setting=ca_setting,
    )
    stats = stats if stats is not None else CallStats()
    retry = RetryPolicy(
        max_attempts=http.max_attempts, budget_seconds=http.retry_budget_seconds, stats=stats, service=service
    )
    policies: list[Policy] = [
        retry,
        *([budget] if budget is not None else []),
        *([auth] if auth is not None else []),
        HeadersPolicy(),
        WireLogPolicy(stats, service),
    ]
    return Pipeline(policies, transport)
