"""``status``: the app's health at a glance, from what it already keeps — the queues, its tables, the budget
board and the tokens' metadata in Key Vault. Nothing here calls ServiceNow or Defender.

Each finding is OK, WARN or FAIL by a threshold named with it; the thresholds are below, each with why
(docs/operations.md says what to do about each). Storage errors are not caught here: without the storage
account there is nothing to show, and the command says so in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.alerting.intake import IntakeState, last_cycle
from shared.alerting.poison import PoisonEntry, poison_queue_name
from shared.alerting.writeback import SN_TIME, WritebackState
from shared.app import vault_store
from shared.app.devices import sync_state
from shared.app.writeback import write_back_tables
from shared.platform.budget_board import BoardView, read_board
from shared.platform.ncrontab import Schedule
from shared.platform.secrets import KeyVaultSecretStore, SecretNotFoundError, SecretStoreUnavailableError
from shared.platform.storage import queue_service, table_service
from shared.servicenow.settings import OAUTH_MODES, ServiceNowConnection
from shared.settings import Settings

# The thresholds. Queue age: the forwarder takes a message within seconds, and defers one (ServiceNow down)
# for at most FORWARDING_RETRY_MAX_SECONDS (15 min by default) at a time; half an hour means it is stuck.
QUEUE_AGE_WARN = timedelta(minutes=5)
QUEUE_AGE_FAIL = timedelta(minutes=30)
# Any poison message is WARN, as alerts.bicep's 'poisoned' rule fires on any: a person looks, nothing is lost.
HOURLY_WARN = 0.8  # of a connection's hourly cap: past it, forwarding soon waits for the next hour
# A timer's last cycle is late past this many of its schedule's intervals (a missed tick or two is normal).
CYCLE_LATE_WARN = 3
CYCLE_LATE_FAIL = 10
# The intake's watermark (the newest alert start seen) lagging more than twice its reach-back: a source that
# stopped reporting new alerts — or a quiet one, hence WARN only.
INTAKE_LAG_FACTOR = 2
# A device sync older than twice its frequency: alerts.bicep's 'devicesync' rule (no success in twice it).
SYNC_LATE_FACTOR = 2
# Refresh tokens: TOKEN_REFRESH_WARNING_DAYS and TOKEN_REFRESH_ERROR_DAYS, as token_refresh logs them.
POISON_PEEK = 32  # a queue shows at most 32 messages without taking them


class Level(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


Figure = str | int | float | None


@dataclass(frozen=True)
class Finding:
    """One line of the status: what (``area``, ``subject``), how it stands, the figures and the threshold."""

    area: str
    subject: str
    level: Level
    summary: str
    threshold: str
    figures: Mapping[str, Figure] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    at: datetime
    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "worst": self.worst.name,
            "findings": [
                {
                    "area": f.area,
                    "subject": f.subject,
                    "level": f.level.name,
                    "summary": f.summary,
                    "threshold": f.threshold,
                    "figures": dict(f.figures),
                }
                for f in self.findings
            ],
        }


def duration(delta: timedelta) -> str:
    """An age as an operator reads it: seconds, minutes, hours or days, whole."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _stamp(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60, 1)


# -- the queues ------------------------------------------------------------------------------
def queue_findings(settings: Settings, queues: QueueServiceClient, now: datetime) -> Iterator[Finding]:
    name = settings.alerts_queue
    alerts = queues.get_queue_client(name)
    threshold = f"WARN oldest > {duration(QUEUE_AGE_WARN)}, FAIL > {duration(QUEUE_AGE_FAIL)}"
    try:
        waiting = alerts.get_queue_properties().approximate_message_count or 0
        peeked = list(alerts.peek_messages(max_messages=1))
    except ResourceNotFoundError:
        yield Finding("queue", name, Level.FAIL, "the queue does not exist", "FAIL when missing", {"waiting": None})
        return
    inserted = peeked[0].inserted_on if peeked else None
    age = now - inserted if inserted else None
    level = Level.OK
    if age is not None:
        level = Level.FAIL if age > QUEUE_AGE_FAIL else Level.WARN if age > QUEUE_AGE_WARN else Level.OK
    oldest = f", the oldest visible one queued {duration(age)} ago" if age is not None else ""
    figures: dict[str, Figure] = {"waiting": waiting, "oldest_minutes": _minutes(age) if age is not None else None}
    yield Finding("queue", name, level, f"{waiting} message(s) waiting (approximate){oldest}", threshold, figures)
    yield _poison(queues, poison_queue_name(name))


def _poison(queues: QueueServiceClient, name: str) -> Finding:
    queue = queues.get_queue_client(name)
    threshold = "WARN when any"
    try:
        count = queue.get_queue_properties().approximate_message_count or 0
        peeked = list(queue.peek_messages(max_messages=POISON_PEEK))
    except ResourceNotFoundError:  # the host creates it with its first poison message
        return Finding("queue", name, Level.OK, "0 messages (not created yet)", threshold, {"poisoned": 0})
    if not peeked:
        return Finding("queue", name, Level.OK, f"{count} message(s)", threshold, {"poisoned": count})
    newest = max(peeked, key=lambda m: m.inserted_on or datetime.min.replace(tzinfo=UTC))
    entry = PoisonEntry.decode(newest.content)
    among = f" (of the {POISON_PEEK} oldest; `poison list` shows all)" if count > POISON_PEEK else ""
    summary = f"{count} message(s); the newest{among}: {entry.alert} — {entry.reason}"
    figures: dict[str, Figure] = {"poisoned": count, "newest_reason": entry.reason, "newest_alert": entry.alert}
    return Finding("queue", name, Level.WARN, summary, threshold, figures)


# -- forwarding and the ServiceNow budget ---------------------------------------------------------
def budget_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    try:
        board = read_board(tables.get_table_client(settings.forwarding.ledger_table), now.timestamp())
    except ResourceNotFoundError:  # no forwarder has run yet
        board = BoardView(instances=0)
    for connection in settings.connections:
        yield _budget(connection, board, now)


def _budget(connection: ServiceNowConnection, board: BoardView, now: datetime) -> Finding:
    until = board.paused_until.get(connection.name, 0.0)
    used = board.used_this_hour.get(connection.name, 0)
    cap = connection.hourly_requests
    parts = [f"concurrency {connection.concurrency} across {board.instances} live instance(s)"]
    level = Level.OK
    paused_until = None
    if until > now.timestamp():
        paused_until = datetime.fromtimestamp(until, UTC)
        parts.append(f"paused until {_stamp(paused_until)} ({duration(paused_until - now)} left)")
        level = Level.WARN
    if cap:
        parts.append(f"{used:,} of {cap:,} requests this hour ({used / cap:.0%})")
        if used >= cap:
            level = Level.FAIL
        elif used >= HOURLY_WARN * cap:
            level = max(level, Level.WARN)
    else:
        parts.append(f"{used:,} requests this hour (no hourly cap)")
    threshold = f"WARN paused or ≥ {HOURLY_WARN:.0%} of the hourly cap, FAIL at the cap"
    figures: dict[str, Figure] = {
        "concurrency": connection.concurrency,
        "instances": board.instances,
        "paused_until": paused_until.isoformat() if paused_until else None,
        "used_this_hour": used,
        "hourly_requests": cap,
    }
    return Finding("budget", connection.name, level, "; ".join(parts), threshold, figures)


# -- the OAuth connections (Key Vault metadata) ---------------------------------------------------------
def connection_findings(settings: Settings, now: datetime) -> Iterator[Finding]:
    oauth = [c for c in settings.connections if c.auth in OAUTH_MODES]
    if not oauth:
        return
    store = vault_store(settings.key_vault)
    assert isinstance(store, KeyVaultSecretStore)  # settings require Key Vault for OAuth connections
    for connection in oauth:
        try:
            yield _tokens(connection, store, settings, now)
        except SecretStoreUnavailableError as exc:
            yield Finding("connection", connection.name, Level.FAIL, str(exc), "FAIL when Key Vault cannot be read")


def _tokens(connection: ServiceNowConnection, store: KeyVaultSecretStore, settings: Settings, now: datetime) -> Finding:
    tokens = settings.tokens
    threshold = f"WARN ≤ {tokens.warn_days:g} days left, FAIL ≤ {tokens.error_days:g} or not signed in"
    figures: dict[str, Figure] = {"signed_in": False, "refresh_days_left": None, "access_expires_on": None}
    parts = []
    level = Level.OK
    if connection.auth == "oauth":
        try:
            refresh = store.read(connection.secret_name("refresh-token"), fresh=True)
        except SecretNotFoundError:
            summary = f"not signed in: no refresh token in Key Vault (run `connect {connection.name}`)"
            return Finding("connection", connection.name, Level.FAIL, summary, threshold, figures)
        if refresh.expires_on is None:
            parts.append("signed in; refresh token with no expiry recorded")
        else:
            days = (refresh.expires_on - now).total_seconds() / 86400
            figures["refresh_days_left"] = round(days, 1)
            parts.append(f"signed in; refresh token expires in {days:.1f} day(s) ({_stamp(refresh.expires_on)})")
            level = Level.FAIL if days <= tokens.error_days else Level.WARN if days <= tokens.warn_days else level
    figures["signed_in"] = True
    try:
        access = store.read(connection.secret_name("access-token"), fresh=True)
    except SecretNotFoundError:
        access = None
    if access is None or access.expires_on is None:
        parts.append("no access token yet (token_refresh gets one)")
    else:
        figures["access_expires_on"] = access.expires_on.isoformat()
        state = "valid until" if access.expires_on > now else "expired at"
        parts.append(f"access token {state} {_stamp(access.expires_on)}")
        if access.expires_on <= now:  # token_refresh renews it well before: is the timer running?
            level = max(level, Level.WARN)
    return Finding("connection", connection.name, level, "; ".join(parts), threshold + ", WARN access expired", figures)


# -- the Defender sources: intake, device sync, write-back -----------------------------------------------
def _interval(expression: str, now: datetime) -> timedelta:
    """The gap between a schedule's next two occurrences."""
    schedule = Schedule.parse(expression)
    first = schedule.next_after(now)
    return schedule.next_after(first) - first


def _lateness(age: timedelta, interval: timedelta, setting: str) -> tuple[Level, str]:
    level = (
        Level.FAIL if age > CYCLE_LATE_FAIL * interval else Level.WARN if age > CYCLE_LATE_WARN * interval else Level.OK
    )
    return (
        level,
        f"WARN last cycle > {CYCLE_LATE_WARN}× {setting} ({duration(CYCLE_LATE_WARN * interval)}), "
        f"FAIL > {CYCLE_LATE_FAIL}×",
    )


def source_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    state = IntakeState(tables.get_table_client(settings.intake.state_table))
    interval = _interval(settings.intake_schedule, now)
    overlap = timedelta(minutes=settings.intake.overlap_minutes)
    for source in settings.intake.sources:
        cycle = last_cycle(state, source.name)
        watermark = state.watermark(source.name)
        lag = now - watermark if watermark else None
        figures: dict[str, Figure] = {
            "last_cycle": cycle.at.isoformat() if cycle else None,
            "queued": sum(cycle.queued.values()) if cycle else None,
            "skipped": cycle.skipped if cycle else None,
            "first_skipped": cycle.first_skipped if cycle else None,
            "error": cycle.error if cycle else None,
            "lag_minutes": _minutes(lag) if lag is not None else None,
        }
        level, threshold = _lateness(now - cycle.at, interval, "ALERT_INTAKE_SCHEDULE") if cycle else (Level.WARN, "")
        threshold += (
            f"; WARN lag > {INTAKE_LAG_FACTOR}× ALERT_INTAKE_OVERLAP_MINUTES "
            f"({duration(INTAKE_LAG_FACTOR * overlap)}); WARN any skipped; FAIL an error"
        )
        if cycle is None:
            parts = ["no intake cycle recorded yet"]
        elif cycle.error:
            parts = [f"last cycle {duration(now - cycle.at)} ago failed: {cycle.error}"]
            level = Level.FAIL
        else:
            queued = ", ".join(f"{count} {kind}" for kind, count in cycle.queued.items())
            parts = [f"last cycle {duration(now - cycle.at)} ago queued {queued}"]
            if cycle.skipped:
                parts.append(f"skipped {cycle.skipped}, the first: {cycle.first_skipped}")
                level = max(level, Level.WARN)
        if lag is None:
            parts.append("no alert seen yet (no watermark)")
        else:
            parts.append(f"lag {duration(lag)} (newest alert start seen {_stamp(now - lag)})")
            if lag > INTAKE_LAG_FACTOR * overlap:
                level = max(level, Level.WARN)
        yield Finding("source", f"{source.name} ({source.kind})", level, "; ".join(parts), threshold, figures)


def sync_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    sync = settings.device_sync
    if not sync.enabled:
        yield Finding("device sync", "all", Level.OK, "disabled (DEVICE_SYNC_ENABLED)", "—")
        return
    late = timedelta(minutes=SYNC_LATE_FACTOR * sync.frequency_minutes)
    threshold = (
        f"FAIL older than {SYNC_LATE_FACTOR}× DEVICE_SYNC_FREQUENCY_MINUTES ({duration(late)}) or an error; "
        "WARN item errors"
    )
    for source in sync.sources:
        last = sync_state(settings, source, tables).last_sync()
        subject = f"{source.name} ({source.kind})"
        if last is None:
            yield Finding(
                "device sync", subject, Level.WARN, "no device sync has run yet", threshold, {"last_run": None}
            )
            continue
        ended = datetime.fromisoformat(last.finished or last.started)
        age = now - ended
        counts = last.counts
        figures: dict[str, Figure] = {
            "last_run": ended.isoformat(),
            "age_minutes": _minutes(age),
            "created": counts.created,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "retired": counts.retired,
            "errors": counts.errors,
            "error": last.error or None,
        }
        written = (
            f"created {counts.created}, updated {counts.updated}, unchanged {counts.unchanged}, "
            f"retired {counts.retired}, errors {counts.errors}"
        )
        outcome = (
            f"failed: {last.error}"
            if last.error
            else f"stopped at its deadline in {last.stopped}"
            if last.stopped
            else "succeeded"
        )
        level = Level.FAIL if last.error or age > late else Level.WARN if counts.errors else Level.OK
        summary = f"last run {duration(age)} ago {outcome}; {written}"
        yield Finding("device sync", subject, level, summary, threshold, figures)


def writeback_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    state = WritebackState(tables.get_table_client(settings.intake.state_table))
    interval = _interval(settings.intake_schedule, now)  # the write-back runs after each intake cycle
    for connection, table in write_back_tables(settings):
        subject = f"{connection}/{table}"
        last = state.last(connection, table)
        if last is None:
            yield Finding(
                "write-back",
                subject,
                Level.WARN,
                "no write-back cycle has run yet",
                "WARN none yet",
                {"last_cycle": None},
            )
            continue
        started = datetime.fromisoformat(last.started)
        level, threshold = _lateness(now - started, interval, "ALERT_INTAKE_SCHEDULE")
        parts = [
            f"last cycle {duration(now - started)} ago: {last.records} resolved record(s), "
            f"{last.written} closed at their source"
        ]
        if last.failed:
            parts.append(f"{len(last.failed)} failed, the first: {last.failed[0]}")
            level = Level.FAIL
        if last.refused:
            parts.append(f"{len(last.refused)} refused, the first: {last.refused[0]}")
            level = max(level, Level.WARN)
        lag = None
        if last.watermark:
            lag = now - datetime.strptime(last.watermark, SN_TIME).replace(tzinfo=UTC)
            parts.append(f"lag {duration(lag)} (newest resolved record dealt with: {last.watermark} UTC)")
        figures: dict[str, Figure] = {
            "last_cycle": started.isoformat(),
            "records": last.records,
            "written": last.written,
            "failed": len(last.failed),
            "refused": len(last.refused),
            "lag_minutes": _minutes(lag) if lag is not None else None,
        }
        yield Finding(
            "write-back", subject, level, "; ".join(parts), threshold + "; WARN refused; FAIL failed", figures
        )


def gather_status(settings: Settings, storage_options: Mapping[str, Any], now: datetime | None = None) -> Status:
    """Every finding, in the order an operator reads them: the queue, forwarding, connections, sources.
    ``storage_options``: the storage clients' options (an operator at a terminal wants few retries)."""
    now = now or datetime.now(UTC)
    queues = queue_service(settings.alerts_storage, **storage_options)
    tables = table_service(settings.alerts_storage, **storage_options)
    findings = [
        *queue_findings(settings, queues, now),
        *budget_findings(settings, tables, now),
        *connection_findings(settings, now),
        *source_findings(settings, tables, now),
        *sync_findings(settings, tables, now),
        *writeback_findings(settings, tables, now),
    ]
    return Status(now, tuple(findings))
