"""The timer trigger, with the Functions host's semantics against real storage (Azurite).

As Azure/azure-webjobs-sdk-extensions ``Timers/Listener/TimerListener.cs`` and
``Timers/Scheduling/ScheduleMonitor.cs`` do it. One listener per function across every host sharing
a host id, through a blob lease on ``azure-webjobs-hosts/locks/{hostId}/Host.Functions.{name}.Listener``
(the host's listener lock: 60 s, renewed at half that; a standby host tries again every minute).
With ``useMonitor`` the schedule status lives in
``azure-webjobs-hosts/timers/{hostId}/Host.Functions.{name}/status`` (``Last``/``Next``/``LastUpdated``):
on start, no status → one is written; a ``Next`` that the schedule would not produce from ``Last`` (or
``LastUpdated``) means the schedule changed → ``Next`` is recomputed, not past due; ``now > Next`` →
one run at once with ``IsPastDue=true``. ``runOnStartup`` runs once at every start. After each run the
next occurrence is computed from the run's start (or from the occurrence, if it fired a moment early),
so a run that overran its next occurrence is followed by one catch-up run at once; runs never overlap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions.timer
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.platform.ncrontab import FIELDS, Schedule
from tools.funchost.invoke import Worker

logger = logging.getLogger("funchost")
HOSTS_CONTAINER = "azure-webjobs-hosts"
NEVER = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimerTimings:
    """The host's singleton listener lock (azure-webjobs-sdk SingletonOptions, SingletonManager)."""

    lease_seconds: int = 60  # ListenerLockPeriod
    lease_renew_every: float = 30.0  # renewed at half the lock period
    lease_retry_every: float = 60.0  # ListenerLockRecoveryPollingInterval: a standby host tries to take over


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
        worker: Worker,
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
        self.worker = worker
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
        """Stop scheduling; a run in progress finishes first, up to functionTimeout."""
        self.stopping.set()
        if self.thread is not None:
            # A run in progress ends within functionTimeout (or is killed); a stuck storage call does not
            # hold the exit longer than a minute.
            self.thread.join(timeout=(self.worker.function_timeout or 0) + 60)
            if self.thread.is_alive():
                logger.warning("%s: the timer run did not end at shutdown; leaving it", self.function_name)
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
        """The status to start from and whether the recorded next occurrence is past due (CheckPastDueAsync)."""
        status = self._read_status() if self.use_monitor else None
        if status is None:
            status = ScheduleStatus(NEVER, self.schedule.next_after(now), now if self.use_monitor else NEVER)
            self._write_status(status)
            return status, False
        reference = status.last if status.last != NEVER else status.last_updated
        if reference == NEVER:
            reference = now
        expected = self.schedule.next_after(reference)
        if expected != status.next:
            logger.info(
                "%s: schedule changed to '%s'; next occurrence recomputed", self.function_name, self.schedule.expression
            )
            if now > expected:  # not past due merely because the schedule changed
                expected, reference = self.schedule.next_after(now), now
            status = ScheduleStatus(NEVER, expected, reference)
            self._write_status(status)
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

    def _fire(
        self, status: ScheduleStatus, reason: str, *, past_due: bool = False, startup: bool = False
    ) -> ScheduleStatus:
        """One run on the worker, then the status the next occurrence is computed from (InvokeJobFunction)."""
        started = self.clock()
        request = azure.functions.timer.TimerRequest(
            past_due=past_due,
            schedule_status=status.as_json() if self.use_monitor else None,
            schedule={"AdjustForDST": True},
        )
        self.worker.submit(self.function_name, self.user_function, {self.arg_name: request}, reason).done.wait()
        self.runs += 1
        # Fired a moment before its occurrence (clock skew): count from the occurrence, or it would fire twice.
        reference = status.next if not (past_due or startup) and status.next > started else started
        status = ScheduleStatus(reference, self.schedule.next_after(reference), reference)
        self._write_status(status)
        return status

    def _schedule_loop(self) -> None:
        status, past_due = self._initial_status(self.clock())
        if past_due:
            status = self._fire(status, "Timer fired late (past due)", past_due=True)
        elif self.run_on_startup:
            status = self._fire(status, "Timer fired at startup (runOnStartup)", startup=True)
        while not self.stopping.is_set() and not self.lease_lost.is_set():
            wait = (status.next - self.clock()).total_seconds()
            if wait > 0:
                self.stopping.wait(min(wait, 1.0))
                continue
            # An occurrence that passed during the last run fires now, once: Next came from that run's start.
            status = self._fire(status, f"Timer fired at {format_time(status.next)}")


def fires_more_than_once_a_minute(schedule: Schedule, now: datetime) -> bool:
    """The host's test for forcing ``useMonitor`` off (TimerSchedule.ShouldDisableScheduleMonitor): every
    field above seconds unrestricted, and more than one occurrence in the minute after ``now``."""
    fields = (schedule.minutes, schedule.hours, schedule.days, schedule.months, schedule.weekdays)
    if any(values != spec.every_value for values, spec in zip(fields, FIELDS[1:], strict=True)):
        return False
    end = now + timedelta(minutes=1)
    first = schedule.next_after(now)
    return first < end and schedule.next_after(first) < end
