"""An alert handled in Defender (an ``alert_status`` message): resolve the open records written for it."""

from __future__ import annotations

import logging

from shared.alerting.ledger import Entry
from shared.alerting.outcomes import Outcome, Result
from shared.alerting.ports import LedgerPort, RecordsFor
from shared.alerting.records import PreparedAlert
from shared.alerting.rules import Action, RuleSet
from shared.alerting.templates import render
from shared.http.errors import NotFoundError
from shared.servicenow.records import table_of

logger = logging.getLogger("shared.alerting.resolver")


class Resolver:
    def __init__(self, ledger: LedgerPort, records: RecordsFor) -> None:
        self.ledger = ledger
        self.records = records

    def resolve(self, alert: PreparedAlert, rules: RuleSet) -> Result:
        outcomes = []
        for entry in self.ledger.entries(alert.key):
            action = rules.actions.get(entry.action)
            if action is None or entry.state != "created" or entry.resolved:
                continue
            if entry.written_back:
                # The alert was closed because its record was resolved in ServiceNow: nothing to resolve again.
                self.ledger.resolved(entry)
                continue
            if self._resolve(alert, action, entry):
                outcomes.append(Outcome(action.name, "resolved", entry.sys_id, entry.number))
            self.ledger.resolved(entry)
        return Result(
            "forwarded" if outcomes else "filtered",
            outcomes,
            reason="" if outcomes else "no open record for this alert",
        )

    def _resolve(self, alert: PreparedAlert, action: Action, entry: Entry) -> bool:
        """Resolve the entry's record; False when there is nothing left to resolve."""
        records = self.records(action.connection, alert.priority)
        if table_of(entry.table).is_ended(records.state(entry.table, entry.sys_id)):
            return False  # deleted, or resolved in ServiceNow meanwhile: the analyst's resolution stands as written
        try:
            records.resolve(
                entry.table, entry.sys_id, action.close_code, render(action.close_notes, alert.values).strip()
            )
        except NotFoundError:
            # Deleted in ServiceNow: there is nothing left to resolve (a repeat would make a new record).
            logger.info("record %s of %s was deleted in ServiceNow; nothing to resolve", entry.number, entry.alert_key)
            return False
        return True
