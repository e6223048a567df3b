"""One ServiceNow budget for the whole app: adaptive concurrency, a shared pause, an hourly budget, and
higher severities first when there is not enough for everything.

Per process and connection, a :class:`Budget` gates every wire attempt (:class:`BudgetPolicy`, inside the
retry policy, so a retried attempt queues again):

- **Concurrency.** At most ``limit`` requests at once. The limit starts at this instance's share of the
  connection's ``concurrency`` (divided among the live instances, the shares adding up to it), halves on a
  429 — a rate-limit rule's or a full semaphore's, which carries no Retry-After — at most once a second,
  and grows by one per round of successes back to the share (additive increase, multiplicative decrease).
  Waiters are served highest priority first; one that waits longer than ``max_wait`` is refused, so its
  alert is deferred instead of holding a worker.
- **Pause.** A 429 that says when its rate-limit window resets (``X-RateLimit-Reset``) pauses *every*
  instance until then, through the shared board; until the reset every call is refused before it is
  sent, with the wait, so alerts are deferred to it — the most severe first, the others staggered after.
- **Hourly budget.** With ``hourly_requests`` set (below the instance's rate-limit rule, whose answers say
  only the limit and the reset, not what is left), the whole app counts its requests on the board and keeps
  the last part of the hour's budget for the more severe alerts (:data:`RESERVE`).

A refusal is a :class:`~shared.http.errors.RateLimitedError` carrying the wait: the forwarder defers the
alert for that long, the other callers fail their cycle and try again on the next.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import requests

from shared.http.errors import RateLimitedError
from shared.http.transport import HttpRequest
from shared.platform.budget_board import BoardView, hour_of
from shared.platform.telemetry import PAUSES, THROTTLED

logger = logging.getLogger("shared.servicenow.budget")

# What a request is for, carried on it (``HttpRequest.context["priority"]``, set by
# ``ServiceNowClient.with_context(priority=...)``): an alert's severity (1 Warning … 4 Critical); 0 for the
# rest (device sync, write-back, checks), which yield to alerts.
PRIORITY = "priority"
# The share of the hour's budget that must be left for a call of this priority to go ahead.
RESERVE = {4: 0.0, 3: 0.05, 2: 0.10, 1: 0.20, 0: 0.25}
STAGGER_SECONDS = 15.0  # after a pause, each lower severity comes back this much later


def _stagger(level: int) -> float:
    """How much later than the most severe a refused call of this priority comes back, spread a little."""
    return (4 - min(max(level, 0), 4)) * STAGGER_SECONDS + random.uniform(0, 5)  # noqa: S311  # nosec B311


class Board(Protocol):
    def sync(self, used: Mapping[str, int]) -> BoardView: ...

    def pause(self, connection: str, until: float) -> None: ...


@dataclass
class BudgetStats:
    granted: int = 0
    refused: int = 0
    rejections: int = 0  # 429 answers seen
    decreases: int = 0


class Budget:
    def __init__(
        self,
        connection: str,
        concurrency: int,
        *,
        hourly_requests: int | None = None,
        board: Board | None = None,
        sync_seconds: float = 10.0,
        max_wait: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.concurrency = concurrency
        self.hourly_requests = hourly_requests
        self.board = board
        self.sync_seconds = sync_seconds
        self.max_wait = max_wait
        self.clock = clock
        self.wall_clock = wall_clock
        self.view = BoardView()
        self.limit = float(concurrency)
        self.in_flight = 0
        self.paused_until = 0.0
        self.hour = hour_of(wall_clock())
        self.used = 0  # this instance's requests this hour
        self.stats = BudgetStats()
        self._condition = threading.Condition()
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()
        self._last_decrease = float("-inf")
        self._last_sync = float("-inf")
        self._syncing = threading.Lock()

    @property
    def share(self) -> int:
        """This instance's part of the connection's concurrency: the parts of all live instances add up to it
        exactly, so with more instances than the concurrency (Flex scales the forwarder out to 40 at least)
        some get none, and their alerts wait or are deferred rather than exceed the instance's limit."""
        instances = max(1, self.view.instances)
        return self.concurrency // instances + (1 if self.view.rank < self.concurrency % instances else 0)

    def _slots(self) -> int:
        """Requests this instance may have open now: the adaptive limit, within the share."""
        return min(max(1, int(self.limit)), self.share)

    # -- before a request ------------------------------------------------------------------------
    def acquire(self, level: int) -> None:
        self._sync_if_due()
        wait = self.refusal(level)
        if wait is not None:
            with self._condition:
                self.stats.refused += 1
            raise RateLimitedError(f"ServiceNow budget: {wait[1]}", retry_after=wait[0])
        deadline = self.clock() + self.max_wait
        with self._condition:
            entry = (-level, next(self._order))
            heapq.heappush(self._waiting, entry)
            try:
                while not (self.in_flight < self._slots() and self._waiting[0] == entry):
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        self.stats.refused += 1
                        raise RateLimitedError(
                            f"ServiceNow budget: no free slot within {self.max_wait:g} s "
                            f"({self.in_flight} of {self._slots()} in use)",
                            retry_after=self.max_wait * random.uniform(1, 2),  # noqa: S311 - spread, not security  # nosec B311
                        )
                    self._condition.wait(remaining)
                heapq.heappop(self._waiting)
                self.in_flight += 1
                self.stats.granted += 1
            finally:
                if entry in self._waiting:  # refused: leave the line
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                self._condition.notify_all()

    def refusal(self, level: int) -> tuple[float, str] | None:
        """How long a call of this priority must wait before it may be sent, and why (None: it may go now)."""
        now = self.wall_clock()
        paused = max(self.paused_until, self.view.paused_until.get(self.connection, 0.0))
        if paused > now:
            return paused - now + _stagger(level), f"paused until the rate-limit window resets in {paused - now:.0f} s"
        reserve = RESERVE.get(level, RESERVE[0])
        if self.hourly_requests:
            self._roll_hour(now)
            used = max(self.used, self.view.used_this_hour.get(self.connection, 0))
            left = self.hourly_requests - used
            if left <= self.hourly_requests * reserve or left <= 0:
                hour_end = (hour_of(now) + 1) * 3600
                return hour_end - now + _stagger(level), (
                    f"{max(0, left)} of the hourly budget's {self.hourly_requests} requests left"
                    + (", kept for more severe alerts" if left > 0 else "")
                )
        return None

    # -- after it --------------------------------------------------------------------------------
    def release(self, response: requests.Response | None) -> None:
        status = response.status_code if response is not None else 0
        now = self.clock()
        with self._condition:
            self.in_flight -= 1
            if response is not None:
                self._roll_hour(self.wall_clock())
                self.used += 1
            if status == 429:
                self.stats.rejections += 1
                THROTTLED.add(1, {"connection": self.connection})
                self._last_sync = float("-inf")  # the share may be stale (another instance started): look again
                # One halving per episode: a burst of 429s from one overload is one signal, not ten.
                if now - self._last_decrease >= 1.0:
                    self.limit = max(1.0, self.limit / 2)
                    self._last_decrease = now
                    self.stats.decreases += 1
            elif 200 <= status < 500:
                self.limit = min(float(self.share), self.limit + 1.0 / max(1.0, self.limit))
            self._condition.notify_all()
        if response is not None:
            self._read_rate_limit(response)

    def _read_rate_limit(self, response: requests.Response) -> None:
        """A rate-limit rule's 429 (it names the hour's limit and when the window resets) pauses the app."""
        headers = response.headers
        if response.status_code != 429:
            return
        try:
            limit = int(headers["X-RateLimit-Limit"])
            reset = float(headers["X-RateLimit-Reset"])
        except (KeyError, ValueError):
            return  # a full semaphore's 429: the concurrency adapts instead
        if reset <= max(self.paused_until, self.wall_clock()):
            return
        self.paused_until = reset
        PAUSES.add(1, {"connection": self.connection})
        logger.warning(
            "ServiceNow connection '%s': its rate limit of %d requests an hour is reached; every instance pauses "
            "until the window resets in %.0f s",
            self.connection,
            limit,
            reset - self.wall_clock(),
        )
        if self.board is not None:
            try:
                self.board.pause(self.connection, reset)
            except Exception as exc:  # the local pause stands; the others meet the limit themselves
                logger.warning("could not share the ServiceNow pause: %s", exc)

    # -- the shared board ------------------------------------------------------------------------
    def _roll_hour(self, now: float) -> None:
        if hour_of(now) != self.hour:
            self.hour, self.used = hour_of(now), 0

    def _sync_if_due(self) -> None:
        if self.board is None or self.clock() - self._last_sync < self.sync_seconds:
            return
        if not self._syncing.acquire(blocking=False):
            return  # another thread is syncing; this one goes on with the last view
        if self._last_sync == float("-inf"):  # the first: the share must be known before a request goes
            self._sync_board()
        else:  # later ones off the request's path: the request that finds one due does not wait for storage
            threading.Thread(target=self._sync_board, name="budget-board", daemon=True).start()

    def _sync_board(self) -> None:
        """One round trip to the board (holding ``_syncing``, which it releases)."""
        assert self.board is not None
        try:
            self._last_sync = self.clock()
            self._roll_hour(self.wall_clock())
            try:
                self.view = self.board.sync({self.connection: self.used})
            except Exception as exc:  # the budget keeps working on the last view
                logger.warning("could not sync the ServiceNow budget: %s", exc)
                return
            with self._condition:
                self.limit = min(self.limit, float(self.share))
                self._condition.notify_all()
        finally:
            self._syncing.release()


@dataclass
class BudgetPolicy:
    """Holds a slot of the connection's budget for each wire attempt (inside the retry policy)."""

    budget: Budget

    def send(self, request: HttpRequest, next_: Callable[[HttpRequest], requests.Response]) -> requests.Response:
        self.budget.acquire(int(request.context.get(PRIORITY, 0)))
        response = None
        try:
            response = next_(request)
            return response
        finally:
            self.budget.release(response)
