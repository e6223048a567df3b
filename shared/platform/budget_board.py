"""The ServiceNow budget's shared board in Table storage: what every instance of the app sees alike.

Each instance (worker process) writes its own row — a heartbeat, the requests it made this hour per connection,
and its outcome tally of the last hour (:mod:`shared.platform.outcomes`, for ``status``) — so writers never
contend; a rate-limit pause is a row per connection that any instance may set. One sync is two storage calls —
an upsert of the own row and a read of the partition — made every few seconds, never per request. The tally
rides on those upserts; when outcomes change with no sync following (no ServiceNow call, or the instance going
quiet), :meth:`TableBudgetBoard.report_soon` writes the row once within :data:`REPORT_SECONDS`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.platform import outcomes
from shared.platform.storage import create_table_if_missing

logger = logging.getLogger("shared.platform.budget_board")
PARTITION = "servicenow-budget"
LIVE_SECONDS = 60.0  # an instance whose heartbeat is older than this no longer takes a share
REPORT_SECONDS = 10.0  # a changed tally reaches the board within this (the budget's sync interval)
# An instance row is swept this long after its last heartbeat: past the tally's hour, nothing reads it.
STALE_SECONDS = 2 * 3600.0
SWEEP_AT_MOST = 5  # rows deleted per sync: a sweep never holds up a budget for long


def hour_of(moment: float) -> int:
    return int(moment // 3600)


@dataclass(frozen=True)
class BoardView:
    """The whole app as of the last sync: live instances, and per connection its pause and this hour's use."""

    instances: int = 1
    rank: int = 0  # this instance's place among the live ones (by id): who gets the remainder of a division
    paused_until: Mapping[str, float] = field(default_factory=dict)
    used_this_hour: Mapping[str, int] = field(default_factory=dict)
    # The last hour's outcomes of every instance, live or gone (read_board only: the budget does not need them).
    outcomes: outcomes.Totals = field(default_factory=dict)


class TableBudgetBoard:
    def __init__(
        self,
        table: TableClient,
        instance_id: str | None = None,
        clock: Callable[[], float] = time.time,
        tally: outcomes.OutcomeTally | None = None,
    ) -> None:
        self.table = table
        self.instance_id = instance_id or uuid.uuid4().hex
        self.clock = clock
        self.tally = tally or outcomes.TALLY
        self.used: dict[str, tuple[int, int]] = {}  # per connection: this instance's requests, and in which hour
        self._ensured = False
        self._lock = threading.Lock()  # the budgets of several connections share the row
        self._written = (float("-inf"), -1)  # when the row was last written, and the tally's version then
        self._pending: threading.Timer | None = None

    def _ensure(self) -> None:
        if not self._ensured:
            create_table_if_missing(self.table)
            self._ensured = True

    def _write(self) -> float:
        self._ensure()
        now = self.clock()
        with self._lock:
            version = self.tally.version
            row = {
                "PartitionKey": PARTITION,
                "RowKey": f"instance-{self.instance_id}",
                "seen": now,
                "hour": hour_of(now),
                # Only this hour's: a connection whose budget has not synced since the hour turned counts nothing yet.
                "used": json.dumps({c: n for c, (n, hour) in self.used.items() if hour == hour_of(now)}),
                "outcomes": self.tally.encode(),
            }
        self.table.upsert_entity(row, mode=UpdateMode.REPLACE)
        self._written = (now, version)
        return now

    def sync(self, used: Mapping[str, int]) -> BoardView:
        """Report this instance's requests this hour (for the connections given) and read everyone's."""
        with self._lock:
            hour = hour_of(self.clock())
            self.used.update({connection: (count, hour) for connection, count in used.items()})
        now = self._write()
        live, paused, totals, stale = _read(self.table, now, {self.instance_id}, dict.fromkeys(self.used, 0))
        for key in stale[:SWEEP_AT_MOST]:
            with contextlib.suppress(ResourceNotFoundError):  # another instance swept it first
                self.table.delete_entity(PARTITION, key)
        return BoardView(len(live), sorted(live).index(self.instance_id), paused, totals)

    def report_soon(self) -> None:
        """Have the row show the tally's latest counts within REPORT_SECONDS, off the caller's thread: a timer
        writes it unless a sync has meanwhile. Called after each message, it costs a storage call only when
        outcomes changed and no sync followed, and at most one per REPORT_SECONDS."""
        with self._lock:
            if self._pending is not None:
                return
            wait = max(0.0, self._written[0] + REPORT_SECONDS - self.clock())
            self._pending = threading.Timer(wait, self._report)
            self._pending.daemon = True
            self._pending.start()

    def _report(self) -> None:
        with self._lock:
            self._pending = None
        if self._written[1] == self.tally.version:
            return
        try:
            self._write()
        except Exception as exc:  # the next sync or report writes it; the counts are kept until then
            logger.warning("could not write the outcome tally to the budget board: %s", exc)

    def pause(self, connection: str, until: float) -> None:
        """Every instance holds its calls to this connection until ``until`` (epoch seconds)."""
        self._ensure()
        self.table.upsert_entity(
            {"PartitionKey": PARTITION, "RowKey": f"pause-{connection}", "until": math.ceil(until)},
            mode=UpdateMode.REPLACE,
        )


def read_board(table: TableClient, now: float) -> BoardView:
    """The board as every instance sees it, read without joining it (``status``): no row is written. Its
    outcomes are those of every instance seen in the last hour, the ones stopped since included."""
    tallies: list[Any] = []
    live, paused, totals, _ = _read(table, now, set(), {}, tallies)
    return BoardView(len(live), 0, paused, totals, outcomes.totals(tallies, now))


def _read(
    table: TableClient, now: float, live: set[str], totals: dict[str, int], tallies: list[Any] | None = None
) -> tuple[set[str], dict[str, float], dict[str, int], list[str]]:
    """The live instances, the pauses, this hour's requests per connection of every instance (one stopped since
    made them too: an hourly limit counts them), and the rows past STALE_SECONDS; into ``tallies``, the outcome
    tallies of the rows seen within the last hour's window."""
    paused: dict[str, float] = {}
    stale: list[str] = []
    for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
        kind, _, name = row["RowKey"].partition("-")
        seen = float(row.get("seen", 0))
        if kind == "pause":
            paused[name] = float(row.get("until", 0))
        if kind != "instance":
            continue
        if now - seen < LIVE_SECONDS:
            live.add(name)
        elif now - seen > STALE_SECONDS:
            stale.append(row["RowKey"])
        if int(row.get("hour", -1)) == hour_of(now):
            for connection, count in _counts(row.get("used")).items():
                totals[connection] = totals.get(connection, 0) + count
        if tallies is not None and seen >= outcomes.window_start(now):
            tallies.append(row.get("outcomes"))
    return live, paused, totals, stale


def _counts(raw: Any) -> dict[str, int]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}
