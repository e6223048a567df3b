"""The retry policy alone: back-off bounds, budget and the rules for repeating a POST.

The downstream is a scripted stand-in for the wire (the policy's only collaborator); the policy
itself is the real one, with its clock and sleep injected so no test waits.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest
import requests

from shared.http.errors import ConnectionFailedError
from shared.http.policies import RetryPolicy
from shared.http.transport import HttpRequest


def response(status: int, **headers: str) -> requests.Response:
    result = requests.Response()
    result.status_code = status
    result.headers.update(headers)
    result.raw = io.BytesIO(b"")
    return result


class Script:
    """Plays back responses or raises errors, one per attempt; records the waits."""

    def __init__(self, *outcomes: requests.Response | Exception) -> None:
        self.outcomes: Iterator[requests.Response | Exception] = iter(outcomes)
        self.attempts = 0
        self.waits: list[float] = []
        self.now = 1000.0

    def __call__(self, request: HttpRequest) -> requests.Response:
        self.attempts += 1
        outcome = next(self.outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def policy(self, max_attempts: int = 5, budget_seconds: float = 30.0) -> RetryPolicy:
        def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            self.now += seconds

        return RetryPolicy(
            max_attempts=max_attempts,
            budget_seconds=budget_seconds,
            clock=lambda: self.now,
            wall_clock=lambda: self.now,
            sleep=sleep,
            rng=random.Random(1),
        )


GET = HttpRequest("GET", "https://x/api/now/table/incident")
POST = HttpRequest("POST", "https://x/api/now/table/incident", body=b"{}")


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=15, rng=random.Random(3))
    for attempt in range(1, 10):
        ceiling = min(15, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


def test_x_ratelimit_reset_sets_the_wait() -> None:
    script = Script(response(429, **{"X-RateLimit-Reset": "1004"}), response(200))
    assert script.policy().send(GET, script).status_code == 200
    assert script.waits == [4.0]


def test_post_is_not_repeated_on_503_unless_safe() -> None:
    script = Script(response(503), response(201))
    assert script.policy().send(POST, script).status_code == 503
    script = Script(response(503), response(201))
    safe = HttpRequest("POST", POST.url, body=b"{}", retry_safe=True)
    assert script.policy().send(safe, script).status_code == 201


def test_get_marked_unsafe_is_not_repeated() -> None:
    script = Script(response(502), response(200))
    unsafe = HttpRequest("PATCH", GET.url, body=b"{}", retry_safe=False)
    assert script.policy().send(unsafe, script).status_code == 502


def test_attempt_limit_returns_the_last_response() -> None:
    script = Script(*[response(504)] * 3)
    assert script.policy(max_attempts=3).send(GET, script).status_code == 504
    assert script.attempts == 3 and len(script.waits) == 2


def test_connection_error_raised_after_budget() -> None:
    failure = ConnectionFailedError("connection failed", request_sent=False)
    script = Script(*[failure] * 10)
    with pytest.raises(ConnectionFailedError):
        script.policy(budget_seconds=2, max_attempts=10).send(POST, script)
    assert sum(script.waits) <= 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
def test_other_statuses_are_returned_untouched(status: int) -> None:
    script = Script(response(status))
    assert script.policy().send(GET, script).status_code == status
    assert script.attempts == 1
