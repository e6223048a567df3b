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

The watermark advances only past records dealt with, and no one alert holds it for long:

- a source that refuses one alert for good (the console's "no alert was found for this UUID" or "Invalid
  action", Resource Manager's 4xx) is recorded on the row as refused, with the source's reason, and the
  watermark moves past it; ``writeback status`` shows it;
- a source that answers an alert with a server error is tried again the next cycle, up to ``max_cycles``
  cycles (counted per record), then recorded as refused ("gave up after …") so the watermark moves on;
- a source that cannot be reached, throttles or refuses the app's identity holds the watermark at the first
  record it failed, uncounted: that is about the source, not the alert, and the next cycle tries again.

The row is marked ``closing`` before the source is called, so a crash between the call and its record is
known: the next cycle asks the source whether the alert is closed (the cloud: ``IotAlerts_Get``) and closes it
only if not — where the source cannot say, it closes it again, which changes nothing — and counts it as
``repeated``. An alert the source no longer has is recorded as gone, not retried. A cycle stops at its
deadline between two records, with the watermark at the last one dealt with.
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

from shared.alerting.ledger import Entry, Ledger
from shared.alerting.rules import Action
from shared.defender.rest import DefenderApiError
from shared.defender.writeback import AlertWriter, StatusReader, WriteBackUnsupportedError
from shared.http.errors import HttpError
from shared.platform.telemetry import WRITEBACK
from shared.platform.times import NO_DEADLINE, Deadline
from shared.servicenow import EncodedQuery, ServiceNowClient

logger = logging.getLogger("shared.alerting.writeback")
PREFIX = "dfiot:"
FIELDS = ["sys_id", "number", "correlation_id", "state", "close_code", "sys_updated_on"]
SN_TIME = "%Y-%m-%d %H:%M:%S"
UNSUPPORTED = "the source cannot close alerts (a locally managed sensor: close it on the sensor)"
REFUSED = "refused by its source earlier (writeback status showed why)"
MAX_CYCLES = 10
SOURCE_WIDE = (401, 403, 408, 429)  # identity, timeout and throttle answers are about the source, not the alert


@dataclass
class WritebackResult:
    """One connection and table's cycle: what was written back, skipped (why) and failed (why)."""

    connection: str
    table: str
    started: str
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # recorded, never retried: the source's reason
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

    def _attempts_key(self, connection: str, table: str, record: str) -> tuple[str, str]:
        return f"writeback-attempts:{connection}:{table}", record

    def attempts(self, connection: str, table: str, record: str) -> int:
        """Cycles in which the record's source answered with a server error."""
        try:
            return int(self.table.get_entity(*self._attempts_key(connection, table, record))["count"])
        except ResourceNotFoundError:
            return 0

    def set_attempts(self, connection: str, table: str, record: str, count: int) -> None:
        partition, row = self._attempts_key(connection, table, record)
        if count:
            self.table.upsert_entity({"PartitionKey": partition, "RowKey": row, "count": count})
            return
        self.table.delete_entity(partition, row)  # the SDK takes a missing entity as deleted

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
        max_cycles: int = MAX_CYCLES,
    ) -> None:
        self.connection = connection
        self.client = client
        self.ledger = ledger
        self.writers = writers
        self.state = state
        self.actions = {a.name: a for a in actions if a.connection == connection and a.write_back}
        self.first_look = first_look
        self.deadline = deadline
        self.max_cycles = max_cycles

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
            if result.refused:
                WRITEBACK.add(len(result.refused), {"result": "refused", "connection": self.connection})
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
            outcome = self._record(table, record, result)
            name = record.get("number", record.get("sys_id"))
            if outcome.startswith("failed:"):
                result.failed.append(f"{name}: {outcome[7:]}")
                blocked = True
            elif outcome.startswith("refused:"):
                result.refused.append(f"{name}: {outcome[8:]}")
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

    def _record(self, table: str, record: Mapping[str, str], result: WritebackResult) -> str:
        """What became of one resolved record: ``written``, ``failed: <why>`` (tried again next cycle),
        ``refused: <why>`` (recorded, not tried again) or the reason it was skipped."""
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
        if entry.written_back == "refused":
            return REFUSED
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
            # A close sent before its record was written (a crash, a timeout): where the source can say, ask
            # it first, so an alert is closed once; where it cannot, closing again changes nothing.
            found = writer.is_closed(entry.origin_ref) if repeat and isinstance(writer, StatusReader) else None
            closed = "closed" if found else writer.close_alert(entry.origin_ref, learn=learn)
        except WriteBackUnsupportedError:
            self.ledger.written_back(marked, "unsupported")
            return UNSUPPORTED
        except DefenderApiError as exc:
            return self._failure(table, record, marked, exc)
        result.repeated += repeat
        self.state.set_attempts(self.connection, table, str(record.get("sys_id", "")), 0)
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

    def _failure(self, table: str, record: Mapping[str, str], entry: Entry, exc: DefenderApiError) -> str:
        """A permanent refusal is recorded at once; a server error for the alert is counted, and recorded as
        refused at ``max_cycles``; a failure of the source as a whole holds the watermark, uncounted."""
        sys_id = str(record.get("sys_id", ""))
        reason = str(exc)
        if exc.retryable:
            if exc.status is None or exc.status in SOURCE_WIDE:
                return f"failed: {reason}"
            cycles = self.state.attempts(self.connection, table, sys_id) + 1
            if cycles < self.max_cycles:
                self.state.set_attempts(self.connection, table, sys_id, cycles)
                return f"failed: {reason} (cycle {cycles} of {self.max_cycles})"
            reason = f"gave up after {cycles} cycles: {reason}"
        self.ledger.written_back(entry, "refused", reason)
        self.state.set_attempts(self.connection, table, sys_id, 0)
        logger.warning("write-back: %s refused, not retried: %s", record.get("number", sys_id), reason)
        return f"refused: {reason}"
