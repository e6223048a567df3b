"""Closing the loop: a record an analyst resolved or closed in ServiceNow closes its alert where Defender
for IoT raised it.

One cycle per connection and table that write-back actions write: one paged query for the product's records
(``correlation_id`` starting ``dfiot:``) in a done state, updated since the watermark. Each record leads,
through the ledger's correlation index, to its (alert, action) row, which says where the alert came from and
where each status change came from:

- resolved for the alert (the alert was handled in Defender first): nothing to write back — no ping-pong;
- already written back: nothing to do (the query reaches back to the watermark's second, so it repeats);
- otherwise the alert is closed at its source (or learned, for the action's learn close codes), and the
  row says so; when the intake then sees the alert closed, the forwarder resolves nothing again.

The watermark advances only past records dealt with: a source that fails (an outage, a throttle, a
refused identity) holds it at the first record that failed, and the next cycle tries again. The row is
marked ``closing`` before the source is called, so a crash between the call and its record is known: the
next cycle closes the alert again (closing a closed alert changes nothing) and counts it as ``repeated``.
An alert the source no longer has is recorded as gone, not retried.

A cycle stops at its deadline between two records, with the watermark at the last one dealt with.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from opentelemetry import metrics

from shared.alerting.ledger import Ledger
from shared.alerting.rules import Action
from shared.defender.rest import DefenderApiError
from shared.defender.writeback import AlertWriter, WriteBackUnsupportedError
from shared.http.errors import HttpError
from shared.platform.times import NO_DEADLINE, Deadline
from shared.servicenow import EncodedQuery, ServiceNowClient

logger = logging.getLogger("shared.alerting.writeback")
_meter = metrics.get_meter("defender_iot_servicenow")
WRITEBACK = _meter.create_counter(
    "writeback.records", unit="{record}", description="Resolved records: written back, skipped or failed"
)
PREFIX = "dfiot:"
FIELDS = ["sys_id", "number", "correlation_id", "state", "close_code", "sys_updated_on"]
SN_TIME = "%Y-%m-%d %H:%M:%S"
UNSUPPORTED = "the source cannot close alerts (a locally managed sensor: close it on the sensor)"


@dataclass
class WritebackResult:
    """One connection and table's cycle: what was written back, skipped (why) and failed (why)."""

    connection: str
    table: str
    started: str
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    records: int = 0
    watermark: str = ""
    repeated: int = 0  # closes sent again: the last cycle stopped between its close and the row's mark
    stopped: bool = False  # the deadline passed; the next cycle carries on from the watermark


class WritebackState:
    """Each connection and table's watermark (``sys_updated_on``, ServiceNow's UTC text) and last cycle."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    def _get(self, key: str) -> dict[str, str] | None:
        try:
            return dict(self.table.get_entity("writeback", key))
        except ResourceNotFoundError:
            return None

    def watermark(self, connection: str, table: str) -> str | None:
        row = self._get(f"{connection}:{table}")
        return str(row["value"]) if row else None

    def set_watermark(self, connection: str, table: str, value: str) -> None:
        self.table.upsert_entity({"PartitionKey": "writeback", "RowKey": f"{connection}:{table}", "value": value})

    def record(self, result: WritebackResult) -> None:
        key = f"last:{result.connection}:{result.table}"
        self.table.upsert_entity({"PartitionKey": "writeback", "RowKey": key, "json": json.dumps(asdict(result))})

    def last(self, connection: str, table: str) -> WritebackResult | None:
        row = self._get(f"last:{connection}:{table}")
        return WritebackResult(**json.loads(row["json"])) if row else None


class Writeback:
    def __init__(
        self,
        connection: str,
        client: ServiceNowClient,
        ledger: Ledger,
        writers: Mapping[str, AlertWriter],
        state: WritebackState,
        actions: Sequence[Action],
        *,
        first_look: timedelta = timedelta(days=1),
        deadline: Deadline = NO_DEADLINE,
    ) -> None:
        self.connection = connection
        self.client = client
        self.ledger = ledger
        self.writers = writers
        self.state = state
        self.actions = {a.name: a for a in actions if a.connection == connection and a.write_back}
        self.first_look = first_look
        self.deadline = deadline

    def run(self, now: datetime | None = None) -> list[WritebackResult]:
        now = now or datetime.now(UTC)
        results = []
        for table in sorted({a.table for a in self.actions.values()}):
            try:
                result = self._table(table, now)
            except HttpError as exc:  # the query itself: this table waits, the others go on
                result = WritebackResult(self.connection, table, now.isoformat(), failed=[f"query failed: {exc}"])
                logger.warning("write-back from %s/%s: the query failed: %s", self.connection, table, exc)
            self.state.record(result)
            for reason, count in result.skipped.items():
                WRITEBACK.add(count, {"result": "skipped", "reason": reason, "connection": self.connection})
            if result.written:
                WRITEBACK.add(result.written, {"result": "written", "connection": self.connection})
            if result.failed:
                WRITEBACK.add(len(result.failed), {"result": "failed", "connection": self.connection})
            if result.repeated:
                WRITEBACK.add(result.repeated, {"result": "repeated", "connection": self.connection})
            results.append(result)
        return results

    def _table(self, table: str, now: datetime) -> WritebackResult:
        result = WritebackResult(self.connection, table, now.isoformat())
        done = sorted({s for a in self.actions.values() if a.table == table for s in a.done})
        mark = self.state.watermark(self.connection, table) or (now - self.first_look).strftime(SN_TIME)
        query = (
            EncodedQuery()
            .where("correlation_id", "STARTSWITH", PREFIX)
            .in_("state", done)
            .where("sys_updated_on", ">=", mark)
            .order_by("sys_updated_on")
            .order_by("sys_id")  # a unique tie-breaker: rows updated in the same second keep their place across pages
        )
        skipped: Counter[str] = Counter()
        new_mark, blocked = mark, False
        for record in self.client.query(table, query, fields=FIELDS):
            if self.deadline.passed():
                result.stopped = True
                logger.warning("write-back from %s/%s stopped at %s", self.connection, table, self.deadline)
                break
            result.records += 1
            outcome = self._record(record, result)
            if outcome.startswith("failed:"):
                result.failed.append(f"{record.get('number', record.get('sys_id'))}: {outcome[7:]}")
                blocked = True
            elif outcome == "written":
                result.written += 1
            else:
                skipped[outcome] += 1
            if not blocked:
                new_mark = max(new_mark, str(record.get("sys_updated_on") or mark))
        if new_mark != mark:
            self.state.set_watermark(self.connection, table, new_mark)
        result.skipped = dict(skipped)
        result.watermark = new_mark
        for failure in result.failed:
            logger.warning(
                "write-back from %s/%s failed; the next cycle tries again: %s", self.connection, table, failure
            )
        return result

    def _record(self, record: Mapping[str, str], result: WritebackResult) -> str:
        """What became of one resolved record: ``written``, ``failed: <why>`` or the reason it was skipped."""
        entry = self.ledger.by_correlation(str(record.get("correlation_id", "")))
        if entry is None:
            return "not a record this app wrote"
        action = self.actions.get(entry.action)
        if action is None:
            return "write-back off for its action"
        if str(record.get("state", "")) not in action.done:
            return "not in a done state of its action"
        if entry.resolved:
            return "the alert was closed at its source first"
        if entry.written_back == "unsupported":
            return UNSUPPORTED
        if entry.written_back and entry.written_back != "closing":
            return "written back already"
        if not entry.origin_source:
            return "no source to write back to (enqueued by a sender)"
        writer = self.writers.get(entry.origin_source)
        if writer is None:
            return f"source '{entry.origin_source}' is not configured"
        learn = str(record.get("close_code", "")) in action.learn_close_codes
        repeat = entry.written_back == "closing"
        marked = entry if repeat else self.ledger.written_back(entry, "closing")
        if marked is None:
            return "failed: its ledger row changed meanwhile"
        try:
            closed = writer.close_alert(entry.origin_ref, learn=learn)
        except WriteBackUnsupportedError:
            self.ledger.written_back(marked, "unsupported")
            return UNSUPPORTED
        except DefenderApiError as exc:
            return f"failed: {exc}"
        result.repeated += repeat
        self.ledger.written_back(marked, closed)
        if closed == "gone":
            return "the alert is gone from its source"
        logger.info(
            "write-back: %s %s resolved in ServiceNow → alert %s at source '%s'",
            "learned and closed" if learn else "closed",
            record.get("number", ""),
            entry.alert_key,
            entry.origin_source,
        )
        return "written"
