"""The timer trigger, with the Functions host's semantics against real storage (Azurite).

One listener per function across every host sharing a host id, through a blob lease on
``azure-webjobs-hosts/locks/{hostId}/Host.Functions.{name}.Listener``. With ``useMonitor`` the
schedule status lives in ``azure-webjobs-hosts/timers/{hostId}/Host.Functions.{name}/status``
(``Last``/``Next``/``LastUpdated``): on start, no status → one is written; a ``Next`` that the
schedule would not produce from ``Last`` means the schedule changed → ``Next`` is recomputed, not
past due; ``now > Next`` → one run at once with ``IsPastDue=true``. Runs never overlap: an
occurrence passed during a run is skipped. ``runOnStartup`` runs once at every start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions.timer
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.platform.ncrontab import Schedule
from tools.funchost.invoke import invoke

logger = logging.getLogger("funchost")
HOSTS_CONTAINER = "azure-webjobs-hosts"
NEVER = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimerTimings:
    lease_seconds: int = 15  # blob leases are 15-60 s
    lease_renew_every: float = 5.0
    lease_retry_every: float = 10.0  # how often a standby host tries to take the listener over


def format_time(moment: datetime) -> str:
    """.NET round-trip format, as the host writes it: 2026-11-21T22:55:00.0000000+00:00.

    isoformat, not strftime: glibc's %Y does not pad year 1 (NEVER) to four digits.
    """
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "0+00:00"


def parse_time(text: str | None) -> datetime:
    if not text:
        return NEVER
    text = text.replace("Z", "+00:00")
    head, _, rest = text.partition(".")
    if rest:  # trim .NET's seven fraction digits to Python's six
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class ScheduleStatus:
    last: datetime
    next: datetime
    last_updated: datetime

    def as_json(self) -> dict[str, str]:
        return {
            "Last": format_time(self.last),
            "Next": format_time(self.next),
            "LastUpdated": format_time(self.last_updated),
        }


class TimerListener:
    def __init__(
        self,
        function_name: str,
        user_function: Callable[..., Any],
        arg_name: str,
        schedule: Schedule,
        *,
        run_on_startup: bool,
        use_monitor: bool,
        container: ContainerClient,
        host_id: str,
        timings: TimerTimings = TimerTimings(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.function_name = function_name
        self.user_function = user_function
        self.arg_name = arg_name
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self.use_monitor = use_monitor
        self.container = container
        self.timings = timings
        self.clock = clock
        self.lock_blob = container.get_blob_client(f"locks/{host_id}/Host.Functions.{function_name}.Listener")
        self.status_blob = container.get_blob_client(f"timers/{host_id}/Host.Functions.{function_name}/status")
        self.stopping = threading.Event()
        self.lease: BlobLeaseClient | None = None
        self.lease_lost = threading.Event()
        self.thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"{self.function_name}-timer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop scheduling; a run in progress finishes first (timers are not cancelled mid-run)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=30)  # a run in progress finishes; a stuck storage call does not hold the exit
            if self.thread.is_alive():
                logger.warning("%s: the timer thread did not stop within 30 s; leaving it", self.function_name)
        if self.lease is not None:
            with contextlib.suppress(AzureError):
                self.lease.release()

    # -- singleton -------------------------------------------------------------------------
    def _acquire(self) -> bool:
        with contextlib.suppress(ResourceExistsError):
            self.container.create_container()
        with contextlib.suppress(ResourceExistsError, HttpResponseError):  # exists, maybe leased by another host
            self.lock_blob.upload_blob(b"", overwrite=False)
        lease = BlobLeaseClient(self.lock_blob)
        try:
            lease.acquire(lease_duration=self.timings.lease_seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # another host holds the listener
                return False
            raise
        self.lease = lease
        self.lease_lost.clear()
        threading.Thread(target=self._keep_lease, name=f"{self.function_name}-lease", daemon=True).start()
        return True

    def _keep_lease(self) -> None:
        while not self.stopping.wait(self.timings.lease_renew_every):
            try:
                assert self.lease is not None
                self.lease.renew()
            except AzureError as exc:
                logger.error("%s: lost the listener lease: %s", self.function_name, exc)
                self.lease_lost.set()
                return

    # -- schedule status -------------------------------------------------------------------
    def _read_status(self) -> ScheduleStatus | None:
        try:
            document = json.loads(self.status_blob.download_blob().readall())
        except ResourceNotFoundError:
            return None
        try:
            return ScheduleStatus(
                parse_time(document.get("Last")),
                parse_time(document.get("Next")),
                parse_time(document.get("LastUpdated")),
            )
        except (ValueError, AttributeError) as exc:  # written by something else, or by an older version
            logger.warning(
                "%s: unreadable schedule status %s (%s); starting without it", self.function_name, document, exc
            )
            return None

    def _write_status(self, status: ScheduleStatus) -> None:
        if self.use_monitor:
            self.status_blob.upload_blob(json.dumps(status.as_json()).encode(), overwrite=True)

    def _initial_status(self, now: datetime) -> tuple[ScheduleStatus, bool]:
        """The status to start from and whether the recorded next occurrence is past due."""
        status = self._read_status() if self.use_monitor else None
        if status is None:
            status = ScheduleStatus(NEVER, self.schedule.next_after(now), now)
            self._write_status(status)
            return status, False
        reference = status.last if status.last != NEVER else status.last_updated
        if self.schedule.next_after(reference) != status.next:
            logger.info(
                "%s: schedule changed to '%s'; next occurrence recomputed", self.function_name, self.schedule.expression
            )
            status = ScheduleStatus(status.last, self.schedule.next_after(now), now)
            self._write_status(status)
            return status, False
        return status, now > status.next

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                acquired = self._acquire()
            except AzureError as exc:
                logger.error("%s: cannot take the listener lease: %s", self.function_name, exc)
                acquired = False
            if acquired:
                logger.info(
                    "%s: this host runs the timer (schedule '%s')", self.function_name, self.schedule.expression
                )
                self._schedule_loop()
            if not self.stopping.is_set():
                self.stopping.wait(self.timings.lease_retry_every)

    def _fire(self, status: ScheduleStatus, past_due: bool, reason: str) -> None:
        request = azure.functions.timer.TimerRequest(
            past_due=past_due, schedule_status=status.as_json(), schedule={"AdjustForDST": True}
        )
        invoke(self.function_name, self.user_function, {self.arg_name: request}, reason)
        self.runs += 1

    def _schedule_loop(self) -> None:
        now = self.clock()
        status, past_due = self._initial_status(now)
        if past_due:
            self._fire(status, True, "Timer fired late (past due)")
            now = self.clock()
            status = ScheduleStatus(status.next, self.schedule.next_after(now), now)
            self._write_status(status)
        elif self.run_on_startup:
            self._fire(status, False, "Timer fired at startup (runOnStartup)")
        while not self.stopping.is_set() and not self.lease_lost.is_set():
            wait = (status.next - self.clock()).total_seconds()
            if wait > 0:
                self.stopping.wait(min(wait, 1.0))
                continue
            occurrence = status.next
            self._fire(status, False, f"Timer fired at {format_time(occurrence)}")
            now = self.clock()
            # Occurrences that passed while the function ran are skipped: runs never overlap.
            status = ScheduleStatus(occurrence, self.schedule.next_after(max(now, occurrence)), now)
            self._write_status(status)
