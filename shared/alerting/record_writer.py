"""Exactly one ServiceNow record per (alert, action): claim the ledger row, then create the record, or find
the one a lost attempt wrote; a row that has its record already is a repeat (:mod:`shared.alerting.repeats`).

Whatever fails while the claim is held, the claim is not left behind: it is released when the attempt cannot
have written anything, else marked uncertain so the next attempt recovers at once by correlation id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shared.alerting.assets import AssetFields, AssetLookup
from shared.alerting.failures import DeferError, classify
from shared.alerting.ledger import Entry
from shared.alerting.outcomes import BUSY_RETRY_SECONDS, Operation, Outcome, observe_latency
from shared.alerting.ports import LedgerPort, RecordsFor, RecordStore
from shared.alerting.records import PreparedAlert, fields_for
from shared.alerting.repeats import Repeats
from shared.alerting.rules import Action


class RecordWriter:
    def __init__(
        self,
        ledger: LedgerPort,
        records: RecordsFor,
        clock: Callable[[], datetime],
        assets: AssetLookup | None = None,
    ) -> None:
        """``assets``: the asset index, when the device sync keeps one (a new record names its devices' CIs)."""
        self.ledger = ledger
        self.records = records
        self.clock = clock
        self.assets = assets
        self.repeats = Repeats(ledger, records, self.write)

    def ensure(self, alert: PreparedAlert, action: Action, delivery_id: str) -> Outcome:
        claim = self.ledger.claim(alert.key, action.name, alert.correlation_id(action.name))
        if claim.kind == "busy":
            raise DeferError("another worker is writing this alert's record now", retry_after=BUSY_RETRY_SECONDS)
        assert claim.entry is not None
        if claim.kind == "existing":
            return self.repeats.handle(alert, action, claim.entry, delivery_id)
        return self.write(alert, action, claim.entry, delivery_id, recover=claim.kind == "recover")

    def write(
        self,
        alert: PreparedAlert,
        action: Action,
        entry: Entry,
        delivery_id: str,
        *,
        recover: bool,
        operation: Operation = "created",
    ) -> Outcome:
        """Holding the claim on ``entry``: find the record a lost attempt may have written, else create it."""
        generation = entry.generation
        correlation = alert.correlation_id(action.name, generation)
        records = self.records(action.connection, alert.priority)
        assets: AssetFields | None = None
        try:
            found = records.find(action.table, correlation) if recover else None
            if found is not None:
                record, operation = found, "recovered"
            else:
                assets = self._assets(alert, action, records)
                record = records.create(action.table, fields_for(alert, action, generation, assets))
        except Exception as exc:
            failure = classify(exc)
            # An unforeseen failure may have come after the write: treat it as possibly written.
            if recover or failure is None or failure.maybe_written:
                self.ledger.uncertain(entry)
            else:
                self.ledger.release(entry)
            raise
        origin = alert.message.origin
        self.ledger.created(
            entry,
            sys_id=record["sys_id"],
            number=record.get("number", ""),
            table=action.table,
            correlation_id=correlation,
            delivery_id=delivery_id,
            generation=generation,
            origin=(origin.source, origin.ref) if origin else None,
        )
        if operation != "recovered":  # a recovered record was written by an earlier attempt, at a time unknown
            observe_latency(alert.message, action.name, self.clock())
        if self.assets is not None:
            self.assets.affect(records.affect, record["sys_id"], assets)
        return Outcome(action.name, operation, record["sys_id"], record.get("number", ""))

    def _assets(self, alert: PreparedAlert, action: Action, records: RecordStore) -> AssetFields | None:
        """What the asset index says of the alert's devices, looked up for a new record only."""
        if self.assets is None:
            return None
        return self.assets.for_record(alert.message, action, alert.values["details"], records.link)
