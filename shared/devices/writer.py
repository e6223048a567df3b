"""The device sync's ServiceNow writes in parallel: IRE payloads and vulnerable-item Batch calls.

Up to ``concurrency`` calls are in flight (``DEVICE_SYNC_CONCURRENCY``), every one through the connection's
one budget at the sync's low priority, so alerts go first when slots are short. Two rules keep the CMDB
right: a job names the CIs it writes (their source native keys), and a job is not sent while another in
flight writes one of them (it waits for that one); and a job's result is handled on the sync's own thread,
in :meth:`Writer.reap`, so counts and state need no locks. Jobs are grouped in *pages*, settled in the order
they were opened once all their jobs are done: a watermark moves in source order, past confirmed work only.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("shared.devices.writer")

Done = Callable[[Any, BaseException | None], None]


@dataclass
class Page:
    """Jobs whose results settle together: ``finish`` runs once every one is done and earlier pages finished."""

    finish: Callable[[], None]
    outstanding: int = 0
    closed: bool = False


@dataclass
class _Job:
    keys: frozenset[str]
    done: Done
    page: Page | None


@dataclass
class Writer:
    concurrency: int
    pool: ThreadPoolExecutor = field(init=False)
    jobs: dict[Future[Any], _Job] = field(default_factory=dict)
    pages: deque[Page] = field(default_factory=deque)
    error: BaseException | None = None  # the first call that raised: the sync stops sending and reports it
    sent: int = 0

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="device-sync-write")

    @property
    def in_flight(self) -> int:
        return len(self.jobs)

    def open_page(self, finish: Callable[[], None]) -> Page:
        page = Page(finish)
        self.pages.append(page)
        return page

    def close_page(self, page: Page) -> None:
        page.closed = True
        self._settle()

    def submit(self, keys: Iterable[str], send: Callable[[], Any], done: Done, page: Page | None = None) -> None:
        """Send ``send()`` when no job in flight writes one of ``keys`` and a slot is free; ``done(result,
        error)`` runs on this thread when it is over."""
        wanted = frozenset(keys)
        while True:
            clashing = [future for future, job in self.jobs.items() if job.keys & wanted]
            if not clashing and len(self.jobs) < self.concurrency:
                break
            self._reap(clashing or list(self.jobs))
        if page is not None:
            page.outstanding += 1
        self.jobs[self.pool.submit(send)] = _Job(wanted, done, page)
        self.sent += 1

    def reap(self) -> None:
        """Handle the jobs that are over, without waiting."""
        finished = [future for future in self.jobs if future.done()]
        for future in finished:
            self._finish(future)
        self._settle()

    def drain(self) -> None:
        """Wait for every job in flight and settle every closed page."""
        while self.jobs:
            self._reap(list(self.jobs))
        self._settle()

    def close(self) -> None:
        self.drain()
        self.pool.shutdown(wait=True)

    def _reap(self, waiting_for: list[Future[Any]]) -> None:
        finished, _ = wait(waiting_for, return_when=FIRST_COMPLETED)
        for future in [f for f in self.jobs if f.done()] if finished else []:
            self._finish(future)
        self._settle()

    def _finish(self, future: Future[Any]) -> None:
        job = self.jobs.pop(future)
        error = future.exception()
        if error is not None and self.error is None:
            self.error = error
        job.done(None if error is not None else future.result(), error)
        if job.page is not None:
            job.page.outstanding -= 1

    def _settle(self) -> None:
        while self.pages and self.pages[0].closed and self.pages[0].outstanding == 0:
            self.pages.popleft().finish()
