"""The ServiceNow budget's shared board in Table storage: what every instance of the app sees alike.

Each instance writes its own row (a heartbeat and the requests it made this hour, per connection), so
writers never contend; a rate-limit pause is a row per connection that any instance may set. One sync
is two storage calls — an upsert of the own row and a read of the partition — made every few seconds,
never per request.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.platform.storage import create_table_if_missing

PARTITION = "servicenow-budget"
LIVE_SECONDS = 60.0  # an instance whose heartbeat is older than this no longer takes a share


def hour_of(moment: float) -> int:
    return int(moment // 3600)


@dataclass(frozen=True)
class BoardView:
    """The whole app as of the last sync: live instances, and per connection its pause and this hour's use."""

    instances: int = 1
    rank: int = 0  # this instance's place among the live ones (by id): who gets the remainder of a division
    paused_until: Mapping[str, float] = field(default_factory=dict)
    used_this_hour: Mapping[str, int] = field(default_factory=dict)


class TableBudgetBoard:
    def __init__(
        self, table: TableClient, instance_id: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.table = table
        self.instance_id = instance_id or uuid.uuid4().hex
        self.clock = clock
        self.used: dict[str, int] = {}  # this instance's requests this hour, per connection
        self._ensured = False

    def _ensure(self) -> None:
        if not self._ensured:
            create_table_if_missing(self.table)
            self._ensured = True

    def sync(self, used: Mapping[str, int]) -> BoardView:
        """Report this instance's requests this hour (for the connections given) and read everyone's."""
        self._ensure()
        now = self.clock()
        self.used.update(used)
        self.table.upsert_entity(
            {
                "PartitionKey": PARTITION,
                "RowKey": f"instance-{self.instance_id}",
                "seen": now,
                "hour": hour_of(now),
                "used": json.dumps(self.used),
            },
            mode=UpdateMode.REPLACE,
        )
        live, paused, totals = _read(self.table, now, {self.instance_id}, dict.fromkeys(self.used, 0))
        return BoardView(len(live), sorted(live).index(self.instance_id), paused, totals)

    def pause(self, connection: str, until: float) -> None:
        """Every instance holds its calls to this connection until ``until`` (epoch seconds)."""
        self._ensure()
        self.table.upsert_entity(
            {"PartitionKey": PARTITION, "RowKey": f"pause-{connection}", "until": math.ceil(until)},
            mode=UpdateMode.REPLACE,
        )


def read_board(table: TableClient, now: float) -> BoardView:
    """The board as every instance sees it, read without joining it (``status``): no row is written."""
    live, paused, totals = _read(table, now, set(), {})
    return BoardView(len(live), 0, paused, totals)


def _read(
    table: TableClient, now: float, live: set[str], totals: dict[str, int]
) -> tuple[set[str], dict[str, float], dict[str, int]]:
    """The live instances, the pauses and this hour's requests of the live instances, per connection."""
    paused: dict[str, float] = {}
    for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
        kind, _, name = row["RowKey"].partition("-")
        if kind == "pause":
            paused[name] = float(row.get("until", 0))
        elif kind == "instance" and now - float(row.get("seen", 0)) < LIVE_SECONDS:
            live.add(name)
            if int(row.get("hour", -1)) == hour_of(now):
                for connection, count in _counts(row.get("used")).items():
                    totals[connection] = totals.get(connection, 0) + count
    return live, paused, totals


def _counts(raw: Any) -> dict[str, int]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int)} if isinstance(value, dict) else {}
