"""A repeat of an alert whose record exists: a work note on it, or, when it was closed in ServiceNow meanwhile,
a reopening (``on_closed: reopen``) or a new record of the next generation (the default)."""

from __future__ import annotations

import contextlib
from typing import Protocol

from azure.core.exceptions import AzureError

from shared.alerting.failures import DeferError
from shared.alerting.ledger import ContentionError, Entry
from shared.alerting.outcomes import BUSY_RETRY_SECONDS, Operation, Outcome
from shared.alerting.ports import LedgerPort, RecordsFor
from shared.alerting.records import PreparedAlert
from shared.alerting.rules import Action
from shared.servicenow.records import table_of


class Write(Protocol):
    def __call__(
        self,
        alert: PreparedAlert,
        action: Action,
        entry: Entry,
        delivery_id: str,
        *,
        recover: bool,
        operation: Operation = "created",
    ) -> Outcome: ...


class Repeats:
    def __init__(self, ledger: LedgerPort, records: RecordsFor, write: Write) -> None:
        self.ledger = ledger
        self.records = records
        self.write = write  # the record writer's: a closed record's successor is written as any new record

    def handle(self, alert: PreparedAlert, action: Action, entry: Entry, delivery_id: str) -> Outcome:
        if delivery_id in entry.deliveries:
            return Outcome(action.name, "duplicate", entry.sys_id, entry.number)
        records = self.records(action.connection, alert.priority)
        state = records.state(entry.table, entry.sys_id)  # None: deleted in ServiceNow, which counts as closed
        closed = table_of(entry.table).is_ended(state)
        reopen = closed and action.on_closed == "reopen" and state is not None
        if closed and not reopen:
            return self._recreate(alert, action, entry, delivery_id)
        # The occurrence is counted before the note is written, so parallel repeats each get their own number.
        try:
            counted = self.ledger.repeated(entry, delivery_id, reopened=reopen)
        except ContentionError:
            raise DeferError("other workers are recording repeats of this alert now", BUSY_RETRY_SECONDS) from None
        if counted is None:
            return Outcome(action.name, "duplicate", entry.sys_id, entry.number)
        v = alert.values
        note = f"Seen again by Defender for IoT (occurrence {counted.seen}) at {v['time']}: {v['title']}"
        try:
            if reopen:
                records.reopen(entry.table, entry.sys_id, f"Re-opened. {note}")
            else:
                records.note(entry.table, entry.sys_id, note)
        except Exception:
            with contextlib.suppress(AzureError, ContentionError):  # the ServiceNow failure is the one to report
                self.ledger.undelivered(counted, delivery_id)
            raise
        return Outcome(action.name, "reopened" if reopen else "work_note", entry.sys_id, entry.number)

    def _recreate(self, alert: PreparedAlert, action: Action, entry: Entry, delivery_id: str) -> Outcome:
        generation = entry.generation + 1
        taken = self.ledger.begin_generation(entry, generation, alert.correlation_id(action.name, generation))
        if taken is None:
            raise DeferError(
                "another worker is replacing this alert's closed record now", retry_after=BUSY_RETRY_SECONDS
            )
        return self.write(alert, action, taken, delivery_id, recover=False, operation="recreated")
