"""The alert path's lines: the alerts and poison queues, the last hour's deferrals and records (the outcome
tallies on the budget board), and each connection's ServiceNow budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.alerting.poison import PoisonEntry, poison_queue_name
from shared.app.status.findings import Figure, Finding, Level, by_name, duration, minutes, stamp
from shared.platform import outcomes
from shared.platform.budget_board import BoardView, read_board
from shared.servicenow.settings import ServiceNowConnection
from shared.settings import Settings

# Queue age: the forwarder takes a message within seconds, and defers one (ServiceNow down) for at most
# FORWARDING_RETRY_MAX_SECONDS (15 min by default) at a time; half an hour means it is stuck.
QUEUE_AGE_WARN = timedelta(minutes=5)
QUEUE_AGE_FAIL = timedelta(minutes=30)
# Any poison message is WARN, as alerts.bicep's 'poisoned' rule fires on any: a person looks, nothing is lost.
POISON_PEEK = 32  # a queue shows at most 32 messages without taking them
# A deferral is a failure the app rode out (ServiceNow, Key Vault or storage failing, a 429): WARN, since it
# delays alerts. ``busy`` is not one: another worker was writing the same alert's record, or the invocation's
# run time was spent, and the message comes back within seconds.
DEFER_NORMAL = frozenset({"busy"})
HOURLY_WARN = 0.8  # of a connection's hourly cap: past it, forwarding soon waits for the next hour


def board_view(settings: Settings, tables: TableServiceClient, now: datetime) -> BoardView:
    try:
        return read_board(tables.get_table_client(settings.forwarding.ledger_table), now.timestamp())
    except ResourceNotFoundError:  # no forwarder has run yet
        return BoardView(instances=0)


# -- the queues ------------------------------------------------------------------------------
def queue_findings(
    settings: Settings, queues: QueueServiceClient, board: BoardView, now: datetime
) -> Iterator[Finding]:
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
    figures: dict[str, Figure] = {"waiting": waiting, "oldest_minutes": minutes(age) if age is not None else None}
    yield Finding("queue", name, level, f"{waiting} message(s) waiting (approximate){oldest}", threshold, figures)
    yield _deferred(board, now)
    yield _poison(queues, poison_queue_name(name))


def _since(now: datetime) -> str:
    return f"since {datetime.fromtimestamp(outcomes.window_start(now.timestamp()), UTC):%H:%M}Z"


def _deferred(board: BoardView, now: datetime) -> Finding:
    """Deferred messages are invisible on the queue until their retry: the instances' tallies count them."""
    deferred = board.outcomes.get("deferred", {})
    total = sum(deferred.values())
    level = Level.WARN if set(deferred) - DEFER_NORMAL else Level.OK
    summary = f"{total} message(s) deferred in the last hour ({_since(now)})"
    if deferred:
        summary += f": {by_name(deferred)}"
    threshold = f"WARN any deferred but {', '.join(sorted(DEFER_NORMAL))}"
    return Finding("queue", "deferred", level, summary, threshold, {"deferred": total, "by_reason": deferred})


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
def forwarding_finding(board: BoardView, now: datetime) -> Finding:
    """The last hour's records by action (as ``alerts.forwarded`` counts them), filtered and poisoned messages."""
    written = board.outcomes.get("written", {})
    filtered = sum(board.outcomes.get("filtered", {}).values())
    poisoned = board.outcomes.get("poisoned", {})
    parts = [f"{sum(written.values())} record(s) written in the last hour ({_since(now)})"]
    if written:
        parts[0] += f": {by_name(written)}"
    parts.append(f"{filtered} message(s) filtered")
    if poisoned:
        parts.append(f"{sum(poisoned.values())} poisoned: {by_name(poisoned)}")
    figures: dict[str, Figure] = {
        "written": sum(written.values()),
        "written_by_action": written,
        "filtered": filtered,
        "poisoned_by_reason": poisoned,
    }
    level = Level.WARN if poisoned else Level.OK
    return Finding("forwarding", "last hour", level, "; ".join(parts), "WARN any poisoned", figures)


def budget_findings(settings: Settings, board: BoardView, now: datetime) -> Iterator[Finding]:
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
        parts.append(f"paused until {stamp(paused_until)} ({duration(paused_until - now)} left)")
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
