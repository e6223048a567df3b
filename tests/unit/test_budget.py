"""The ServiceNow budget's arithmetic: AIMD concurrency, priority order, the pause and the hourly reserve."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest
import requests

from shared.http.errors import RateLimitedError
from shared.platform.budget_board import BoardView
from shared.servicenow.budget import Budget
from tests.support.metrics import count


class Board:
    def __init__(self, instances: int = 1, used: int = 0) -> None:
        self.view = BoardView(instances, paused_until={}, used_this_hour={"sn": used})
        self.paused: list[tuple[str, float]] = []

    def sync(self, used: Mapping[str, int]) -> BoardView:
        return self.view

    def pause(self, connection: str, until: float) -> None:
        self.paused.append((connection, until))


def answer(status: int, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_halves_on_429s_once_per_episode_and_grows_back_one_per_round() -> None:
    clock = Clock()
    budget = Budget("sn", 16, board=Board(instances=2), clock=clock)
    budget.acquire(3)
    assert budget.share == 8 and budget.limit == 8  # two instances: half of the connection's 16 each
    budget.release(answer(429))
    for _ in range(5):  # the same overload answering the requests already in flight
        budget.acquire(3)
        budget.release(answer(429))
    assert budget.limit == 4 and budget.stats.decreases == 1
    clock.now += 1.5
    budget.acquire(3)
    budget.release(answer(429))
    assert budget.limit == 2
    for _ in range(40):
        budget.acquire(3)
        budget.release(answer(201))
    assert budget.limit == 8  # back to the share, never above it


def test_waiters_are_served_most_severe_first() -> None:
    budget = Budget("sn", 1, board=Board())
    budget.acquire(1)  # the one slot is taken
    order: list[int] = []
    started = threading.Barrier(4)

    def wait(level: int) -> None:
        started.wait()
        budget.acquire(level)
        order.append(level)
        budget.release(answer(201))

    threads = [threading.Thread(target=wait, args=(level,)) for level in (1, 4, 2)]
    for thread in threads:
        thread.start()
    started.wait()
    deadline = time.monotonic() + 10
    while len(budget._waiting) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    budget.release(answer(201))
    for thread in threads:
        thread.join()
    assert order == [4, 2, 1]


def test_a_waiter_is_refused_after_max_wait_so_its_alert_is_deferred() -> None:
    budget = Budget("sn", 1, board=Board(), max_wait=0.2)
    budget.acquire(4)
    with pytest.raises(RateLimitedError) as refused:
        budget.acquire(4)
    assert "no free slot within 0.2 s" in str(refused.value) and refused.value.retry_after is not None


def test_a_rate_limit_429_pauses_every_caller_until_the_reset_most_severe_back_first() -> None:
    board = Board()
    budget = Budget("sn", 8, board=board)
    reset = time.time() + 600
    budget.acquire(3)
    budget.release(answer(429, **{"X-RateLimit-Limit": "100", "X-RateLimit-Reset": str(int(reset))}))
    assert board.paused == [("sn", int(reset))]
    waits: dict[int, float] = {}
    for level in (4, 1):
        with pytest.raises(RateLimitedError) as refused:
            budget.acquire(level)
        waits[level] = refused.value.retry_after or 0.0
    assert 590 < waits[4] < 606 and waits[1] >= waits[4] + 40


def test_the_pause_another_instance_shared_is_honoured_without_a_request() -> None:
    board = Board()
    board.view = BoardView(2, paused_until={"sn": time.time() + 300}, used_this_hour={})
    budget = Budget("sn", 8, board=board)
    with pytest.raises(RateLimitedError) as refused:
        budget.acquire(4)
    assert "paused until the rate-limit window resets" in str(refused.value)
    assert budget.stats.granted == 0


def test_the_end_of_the_hourly_budget_is_kept_for_the_more_severe() -> None:
    budget = Budget("sn", 8, hourly_requests=100, board=Board(used=85))
    with pytest.raises(RateLimitedError) as refused:
        budget.acquire(1)  # Warning needs 20 % left; 15 % is
    assert "15 of the hourly budget's 100 requests left, kept for more severe alerts" in str(refused.value)
    budget.acquire(3)  # Major needs 5 %
    budget.release(answer(201))
    budget.view = BoardView(1, paused_until={}, used_this_hour={"sn": 100})
    with pytest.raises(RateLimitedError):
        budget.acquire(4)  # spent: even Critical waits for the next hour


def test_the_shares_add_up_to_the_concurrency_however_many_instances_run() -> None:
    """Flex scales the forwarder out to 40 instances at least: past the concurrency, some instances get no share."""
    for instances in (1, 3, 16, 17, 40, 100):
        shares = []
        for rank in range(instances):
            budget = Budget("sn", 16, board=None)
            budget.view = BoardView(instances, rank)
            shares.append(budget.share)
        assert sum(shares) == 16, (instances, shares)
        assert max(shares) - min(shares) <= 1


def test_an_instance_without_a_share_sends_nothing_and_its_alert_is_deferred() -> None:
    budget = Budget("sn", 16, board=None, max_wait=0.05)
    budget.view = BoardView(40, 30)  # 40 live instances: ranks 16 and up hold no part of the 16
    with pytest.raises(RateLimitedError, match="0 of 0 in use"):
        budget.acquire(3)
    assert budget.in_flight == 0


def test_429s_and_the_pauses_they_start_are_counted_per_connection() -> None:
    def counts() -> tuple[float, float]:
        names = ("servicenow.throttled", "servicenow.budget.pauses")
        return count(names[0], connection="metered"), count(names[1], connection="metered")

    before = counts()
    budget = Budget("metered", 8, board=Board())
    limited = {"X-RateLimit-Limit": "100", "X-RateLimit-Reset": str(int(time.time() + 600))}
    for _ in range(3):
        budget.acquire(3)
    budget.release(answer(429))  # a full semaphore's: the concurrency adapts, no pause
    budget.release(answer(429, **limited))
    budget.release(answer(429, **limited))  # the same window's answer to a request already in flight
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)


def test_a_later_board_sync_is_off_the_requests_path_the_first_is_on_it() -> None:
    """The first sync gives the share before any request goes; a later one (every ``sync_seconds``) runs beside
    the request that finds it due, so a slow board (storage under load) never holds an alert."""

    class SlowBoard(Board):
        def __init__(self) -> None:
            super().__init__(instances=2)
            self.syncs = 0
            self.entered = threading.Event()
            self.gate = threading.Event()
            self.finished = threading.Event()

        def sync(self, used: Mapping[str, int]) -> BoardView:
            self.syncs += 1
            if self.syncs > 1:
                self.entered.set()
                self.gate.wait(5)
                self.finished.set()
            return self.view

    clock = Clock()
    board = SlowBoard()
    budget = Budget("sn", 16, board=board, clock=clock)
    budget.acquire(3)
    assert board.syncs == 1 and budget.share == 8  # known before the first request
    budget.release(answer(201))
    clock.now += budget.sync_seconds
    budget.acquire(3)  # the board is stuck: the request goes all the same
    assert not board.finished.is_set() and budget.stats.granted == 2
    budget.release(answer(201))
    assert board.entered.wait(5)  # the due sync did start, beside the request
    board.gate.set()
    assert board.finished.wait(5)
