"""Alert intake: what Defender for IoT raised at a source becomes messages on the alerts queue.

One cycle per source (the alert_intake timer): alerts seen for the first time become ``alert``
messages; an alert that was open and is closed now (or no longer among the open ones) becomes an
``alert_status`` message, which resolves its records; an alert closed and raised again becomes an
``alert`` message once more (the forwarder's repeat and reopen rules apply); a sensor going offline or
back online becomes a ``system`` message. The messages are the ones sensors send: the sources yield the
contract's typed alerts, and each message is checked by the contract's rules as it is written, once
(``AlertMessage.to_document``), so the forwarder, the rules and exactly-once stay as they are.

What the intake remembers (Table storage) is written only after the messages are on the queue: a
crash in between sends them again next cycle, and the forwarder's ledger absorbs the repeats. So
nothing is lost; a record that cannot be read or a message that would not validate is skipped with
its reason (logged, counted), never the cycle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from azure.storage.queue import QueueClient

from shared.alerting.enqueue import send
from shared.contract.fields import InvalidMessageError
from shared.contract.model import (
    Alert,
    AlertMessage,
    Origin,
    Resolution,
    SensorRef,
    Severity,
    SystemNotification,
)
from shared.contract.parse import check_queue_size, serialise
from shared.defender.model import AlertSource, ReadReport, Sensor, SourceAlert
from shared.platform.storage import create_table_if_missing
from shared.platform.telemetry import INTAKE_LAG, INTAKE_MESSAGES, INTAKE_RUNS, INTAKE_SKIPPED
from shared.platform.times import parse_iso

logger = logging.getLogger("shared.alerting.intake")
AlertState = Literal["open", "closed"]


@dataclass
class IntakeResult:
    """One source's cycle: the messages queued by kind, what was skipped and why, and the source's queries."""

    source: str
    queued: dict[str, int] = field(default_factory=lambda: {"alert": 0, "alert_status": 0, "system": 0})
    skipped: list[str] = field(default_factory=list)
    queries: int = 0


@dataclass(frozen=True)
class IntakeCycle:
    """A source's last cycle as the intake records it (for ``status``): when, what it queued, what it skipped
    and why (the first reason), or the error that stopped it."""

    at: datetime
    queued: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    first_skipped: str = ""
    error: str = ""

    def row(self) -> dict[str, Any]:
        # Every field each time: the stores merge rows, and an error must not keep an older cycle's counts.
        return {
            "RowKey": "last",
            "at": self.at.isoformat(),
            "queued": json.dumps(self.queued),
            "skipped": self.skipped,
            "first_skipped": self.first_skipped[:500],
            "error": self.error[:500],
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IntakeCycle | None:
        at = parse_iso(row.get("at"))
        if at is None:
            return None
        queued = json.loads(str(row.get("queued") or "{}"))
        return cls(
            at, queued, int(row.get("skipped") or 0), str(row.get("first_skipped") or ""), str(row.get("error") or "")
        )


def record_cycle(state: IntakeStore, source: str, cycle: IntakeCycle) -> None:
    state.put(source, "cycle", [cycle.row()])


def last_cycle(state: IntakeStore, source: str) -> IntakeCycle | None:
    row = state.get(source, "cycle", "last")
    return IntakeCycle.from_row(row) if row else None


def sensor_health(state: IntakeStore, source: str) -> dict[str, bool]:
    """Each sensor's last known health at a source, by name (True: online), as the intake's cycles recorded it."""
    return {name: row.get("online") is True for name, row in state.rows(source, "sensor").items()}


class IntakeStore(Protocol):
    """Where the intake remembers each alert's state, each sensor's status and its watermark."""

    def ensure(self) -> None: ...

    def rows(self, source: str, kind: str, *, state: str | None = None) -> dict[str, dict[str, Any]]: ...

    def get(self, source: str, kind: str, key: str) -> dict[str, Any] | None: ...

    def put(self, source: str, kind: str, rows: Iterable[dict[str, Any]]) -> None: ...

    def watermark(self, source: str) -> datetime | None: ...

    def set_watermark(self, source: str, value: datetime) -> None: ...


class FileIntakeState:
    """The intake's memory in a local SQLite file: for the relay next to a sensor, which may send to the queue
    and nothing else in Azure. Each write is committed before the call returns (a crash keeps what was written)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def ensure(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS rows (partition TEXT, key TEXT, state TEXT, body TEXT, "
                "PRIMARY KEY (partition, key))"
            )

    def rows(self, source: str, kind: str, *, state: str | None = None) -> dict[str, dict[str, Any]]:
        with contextlib.closing(self._connect()) as db:
            if state is None:
                found = db.execute("SELECT key, body FROM rows WHERE partition = ?", (f"{source}:{kind}",))
            else:
                found = db.execute(
                    "SELECT key, body FROM rows WHERE partition = ? AND state = ?", (f"{source}:{kind}", state)
                )
            return {key: json.loads(body) for key, body in found}

    @staticmethod
    def _read(db: sqlite3.Connection, partition: str, key: str) -> dict[str, Any] | None:
        row = db.execute("SELECT body FROM rows WHERE partition = ? AND key = ?", (partition, key)).fetchone()
        return json.loads(row[0]) if row else None

    def get(self, source: str, kind: str, key: str) -> dict[str, Any] | None:
        with contextlib.closing(self._connect()) as db:
            return self._read(db, f"{source}:{kind}", key)

    def put(self, source: str, kind: str, rows: Iterable[dict[str, Any]]) -> None:
        partition = f"{source}:{kind}"
        with contextlib.closing(self._connect()) as db, db:  # one transaction: all the rows or none
            for row in rows:
                merged = {**(self._read(db, partition, str(row["RowKey"])) or {}), **row}
                db.execute(
                    "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
                    (partition, str(row["RowKey"]), str(merged.get("state", "")), json.dumps(merged)),
                )

    def watermark(self, source: str) -> datetime | None:
        row = self.get(source, "watermark", "alerts")
        return parse_iso(row.get("value")) if row else None

    def set_watermark(self, source: str, value: datetime) -> None:
        self.put(source, "watermark", [{"RowKey": "alerts", "value": value.isoformat()}])


class IntakeState:
    """Per source: each alert's last known state and sensor's status, and the newest alert start seen."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    def ensure(self) -> None:
        create_table_if_missing(self.table)

    def rows(self, source: str, kind: str, *, state: str | None = None) -> dict[str, dict[str, Any]]:
        """Every row of a kind (``state``: only those in that state)."""
        text = "PartitionKey eq @pk" + (" and state eq @state" if state is not None else "")
        query = self.table.query_entities(text, parameters={"pk": f"{source}:{kind}", "state": state or ""})
        return {str(e["RowKey"]): dict(e) for e in query}

    def get(self, source: str, kind: str, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.table.get_entity(f"{source}:{kind}", key))
        except ResourceNotFoundError:
            return None

    def put(self, source: str, kind: str, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.table.upsert_entity({**row, "PartitionKey": f"{source}:{kind}"}, mode=UpdateMode.MERGE)

    def watermark(self, source: str) -> datetime | None:
        try:
            return parse_iso(self.table.get_entity(f"{source}:watermark", "alerts").get("value"))
        except ResourceNotFoundError:
            return None

    def set_watermark(self, source: str, value: datetime) -> None:
        self.table.upsert_entity(
            {"PartitionKey": f"{source}:watermark", "RowKey": "alerts", "value": value.isoformat()}
        )


def alert_message(alert: SourceAlert, source: str) -> AlertMessage:
    origin = Origin(source, alert.resource_id or alert.id, alert.devices)  # the forwarder finds their CIs by these
    return AlertMessage("alert", alert.sensor, alert.alert, alert.protocol, origin=origin)


def status_message(alert_id: str, sensor: SensorRef, source: str, now: datetime) -> AlertMessage:
    handled = Alert(alert_id, now, "", Severity.WARNING, "", handled=True)
    resolution = Resolution(action="close", by=f"Microsoft Defender for IoT ({source})")
    return AlertMessage("alert_status", sensor, handled, resolution=resolution)


def system_message(sensor: Sensor, now: datetime) -> AlertMessage:
    notification = SystemNotification(
        "online" if sensor.online else "offline",
        sensor.connectivity_time or now,
        f"Sensor status in Defender for IoT: {sensor.connection_state}",
    )
    return AlertMessage("system", SensorRef(sensor.name, zone=sensor.zone or None), system=notification)


def _sensor_columns(sensor: SensorRef) -> dict[str, str]:
    return {k: v for k, v in {"name": sensor.name, "site": sensor.site, "zone": sensor.zone}.items() if v}


class Intake:
    """One cycle for one source (the cloud, a locally managed sensor). ``overlap`` reaches back behind the
    newest start seen, because Resource Graph shows changes only after a delay (and a sensor's clock may
    lag); what was already taken in is recognised and skipped."""

    def __init__(
        self, source: AlertSource, queue: QueueClient, state: IntakeStore, overlap: timedelta = timedelta(minutes=60)
    ) -> None:
        self.source = source
        self.queue = queue
        self.state = state
        self.overlap = overlap

    def run(self, now: datetime | None = None) -> IntakeResult:
        now = now or datetime.now(UTC)
        name = self.source.name
        result = IntakeResult(name)
        report = ReadReport()
        watermark = self.state.watermark(name)
        since = (watermark or now - timedelta(days=1)) - self.overlap
        seen: dict[str, SourceAlert] = {a.id: a for a in self.source.alerts_started_since(since, report)}
        open_now = {a.id: a for a in self.source.open_alerts(report)}
        seen.update(open_now)
        sensors = self.source.sensor_statuses(report)
        # The open alerts taken in, and point reads for the rest seen: the closed ones, which pile up over
        # the months, are never read whole.
        known = self.state.rows(name, "alert", state="open")
        for alert_id in seen.keys() - known.keys():
            if (row := self.state.get(name, "alert", alert_id)) is not None:
                known[alert_id] = row
        messages: list[AlertMessage] = []
        alert_rows: list[dict[str, Any]] = []
        for alert in sorted(seen.values(), key=lambda a: (a.started, a.id)):
            before = known.get(alert.id, {}).get("state")
            if before is None or (before == "closed" and not alert.closed):
                messages.append(alert_message(alert, name))
            if alert.closed and before != "closed":
                messages.append(status_message(alert.id, alert.sensor, name, now))
            after: AlertState = "closed" if alert.closed else "open"
            if before != after:  # only what changed is written: a quiet cycle costs no storage write
                alert_rows.append(self._alert_row(alert.id, after, _sensor_columns(alert.sensor)))
        for alert_id, row in known.items():
            if row.get("state") == "open" and alert_id not in seen:
                # No longer among the open alerts and not seen otherwise: closed (or removed) at the source.
                sensor = SensorRef(
                    str(row.get("name") or ""), site=row.get("site") or None, zone=row.get("zone") or None
                )
                messages.append(status_message(alert_id, sensor, name, now))
                alert_rows.append(self._alert_row(alert_id, "closed", _sensor_columns(sensor)))
        sensor_rows = self._sensors(sensors, messages, now)
        result.skipped += report.skipped
        if report.skipped:
            INTAKE_SKIPPED.add(len(report.skipped), {"source": name})
        self._enqueue(messages, result)
        self.state.put(name, "alert", alert_rows)
        self.state.put(name, "sensor", sensor_rows)
        newest = max((a.started for a in seen.values()), default=None)
        if newest is not None and (watermark is None or newest > watermark):
            self.state.set_watermark(name, newest)
            watermark = newest
        if watermark is not None:  # a source that never raised an alert has no lag to tell
            INTAKE_LAG.set((now - watermark).total_seconds(), {"source": name})
        result.queries = report.queries
        first = result.skipped[0] if result.skipped else ""
        record_cycle(self.state, name, IntakeCycle(now, dict(result.queued), len(result.skipped), first))
        for reason in result.skipped:
            logger.warning("alert intake from source '%s' skipped %s", name, reason)
        INTAKE_RUNS.add(1, {"source": name})
        return result

    @staticmethod
    def _alert_row(alert_id: str, state: AlertState, sensor: dict[str, str]) -> dict[str, Any]:
        return {"RowKey": alert_id, "state": state, **sensor}

    def _sensors(self, sensors: Sequence[Sensor], messages: list[AlertMessage], now: datetime) -> list[dict[str, Any]]:
        known = self.state.rows(self.source.name, "sensor")
        rows = []
        for sensor in sensors:
            before = known.get(sensor.name, {}).get("online")
            # A sensor first seen offline is reported too: it may have gone down before the intake started.
            if (before is None and not sensor.online) or (before is not None and before != sensor.online):
                messages.append(system_message(sensor, now))
            if before != sensor.online or known.get(sensor.name, {}).get("status") != sensor.connection_state:
                rows.append({"RowKey": sensor.name, "online": sensor.online, "status": sensor.connection_state})
        return rows

    def _enqueue(self, messages: Sequence[AlertMessage], result: IntakeResult) -> None:
        """Each message written once (its document checked as it is written) and sent; one that breaks the
        contract or would not fit the queue is skipped with its reason."""
        valid: list[tuple[str, bytes]] = []
        for message in messages:
            try:
                body = serialise(message.to_document())
                check_queue_size(body)
            except InvalidMessageError as exc:
                result.skipped.append(f"{message.kind} message for alert {message.alert_id or '?'}: {exc}")
                INTAKE_SKIPPED.add(1, {"source": result.source})
                continue
            valid.append((message.kind, body))
        send(self.queue, [body for _, body in valid])
        for kind, _ in valid:
            result.queued[kind] += 1
            INTAKE_MESSAGES.add(1, {"source": result.source, "kind": kind})
