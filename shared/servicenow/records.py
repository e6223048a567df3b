"""ServiceNow records as the app's callers use them: which states a table's records go through, and the few
things done to one record (find it by correlation id, read its state, note, reopen, resolve).

Callers speak of records, not of tables and state codes: ITSM's ``incident`` and Security Incident Response's
``sn_si_incident`` are two :class:`RecordTable` descriptions, and any other table an action names (a custom
``u_`` table) gets :data:`OTHER_TABLE`. The wire stays :mod:`shared.servicenow.client`'s; the IRE's answers are typed in
:mod:`shared.servicenow.ire`.

State codes, as ServiceNow publishes them (the team's reference/servicenow-api.md):

- ``incident``: 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled;
- ``sn_si_incident``: 10 Draft, 16 Analysis, 18 Contain, 19 Eradicate, 20 Recover, 100 Review, 3 Closed,
  7 Cancelled (Security Incident Response has no Resolved state: resolving closes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.http.errors import NotFoundError
from shared.servicenow.query import EncodedQuery

if TYPE_CHECKING:  # the rules read the states; only the forwarder's path needs the client loaded
    from shared.servicenow.client import ServiceNowClient

Record = dict[str, Any]

LOOKUP_FIELDS = ("sys_id", "number", "correlation_id")


@dataclass(frozen=True)
class RecordTable:
    """One kind of record: the states its records go through, as the app reads and writes them, and the
    fields it has beyond ServiceNow's task fields."""

    table: str
    open: frozenset[str]  # being worked on
    resolved: str  # what the app sets to resolve a record
    reopened: str  # what the app sets to reopen one
    ended: frozenset[str]  # resolved, closed or cancelled: a repeat of its alert reopens it or makes a new record
    done: tuple[str, ...]  # resolved or closed by an analyst: the write-back closes the alert at its source
    rated: bool = False  # has a ``severity`` field (1 High, 2 Medium, 3 Low), filled from the alert's

    def is_ended(self, state: str | None) -> bool:
        """Whether a record in ``state`` is over (None: deleted in ServiceNow, which is over too)."""
        return state is None or state in self.ended


INCIDENT = RecordTable(
    "incident",
    open=frozenset({"1", "2", "3"}),
    resolved="6",
    reopened="2",
    ended=frozenset({"6", "7", "8"}),
    done=("6", "7"),
)
SECURITY_INCIDENT = RecordTable(
    "sn_si_incident",
    open=frozenset({"10", "16", "18", "19", "20", "100"}),
    resolved="3",
    reopened="16",
    ended=frozenset({"3", "7"}),
    done=("3",),
    rated=True,
)
# A table the app knows nothing of: the ended states of either kind above, and incident's codes to write.
OTHER_TABLE = RecordTable(
    "",
    open=frozenset(),
    resolved="6",
    reopened="2",
    ended=INCIDENT.ended | SECURITY_INCIDENT.ended,
    done=INCIDENT.done,
)
TABLES = {t.table: t for t in (INCIDENT, SECURITY_INCIDENT)}


def table_of(name: str) -> RecordTable:
    return TABLES.get(name, OTHER_TABLE)


def record_link(instance_url: str, table: str, sys_id: str) -> str:
    """Where a record opens in the instance's UI."""
    return f"{instance_url}/nav_to.do?uri={table}.do?sys_id={sys_id}"


@dataclass(frozen=True)
class Records:
    """One ServiceNow instance's records, through its client."""

    client: ServiceNowClient

    def create(self, table: str, fields: dict[str, Any]) -> Record:
        return self.client.create_record(table, fields)

    def find(self, table: str, correlation_id: str, fields: Sequence[str] = LOOKUP_FIELDS) -> Record | None:
        """The record written under ``correlation_id`` (None: there is none)."""
        query = EncodedQuery().eq("correlation_id", correlation_id)
        return next(iter(self.client.query(table, query, fields=list(fields), limit=1)), None)

    def state(self, table: str, sys_id: str) -> str | None:
        """The record's state code; None when it was deleted in ServiceNow."""
        try:
            return str(self.client.get_record(table, sys_id, fields=["state"]).get("state", ""))
        except NotFoundError:
            return None

    def note(self, table: str, sys_id: str, text: str) -> Record:
        """Add a work note (not repeated on an ambiguous failure: a journal entry is not idempotent)."""
        return self.client.update_record(table, sys_id, {"work_notes": text}, retry_safe=False)

    def reopen(self, table: str, sys_id: str, note: str) -> Record:
        change = {"state": table_of(table).reopened, "work_notes": note}
        return self.client.update_record(table, sys_id, change, retry_safe=False)

    def affect(self, task_sys_id: str, ci_sys_id: str) -> Record:
        """List a CI among a record's Affected CIs (a ``task_ci`` row)."""
        return self.client.create_record("task_ci", {"task": task_sys_id, "ci_item": ci_sys_id})

    def link(self, table: str, sys_id: str) -> str:
        return record_link(self.client.instance_url, table, sys_id)

    def resolve(self, table: str, sys_id: str, close_code: str, close_notes: str) -> Record:
        change = {"state": table_of(table).resolved, "close_code": close_code, "close_notes": close_notes}
        return self.client.update_record(table, sys_id, change)
