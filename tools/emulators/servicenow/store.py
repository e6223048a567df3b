"""In-memory tables with ServiceNow's record conventions.

Every value is a string; each record gets ``sys_id`` (32 lower-case hex), ``sys_created_on`` /
``sys_updated_on`` (``YYYY-MM-DD HH:MM:SS`` UTC), ``sys_created_by``, ``sys_updated_by`` and
``sys_mod_count``. Task tables get numbers (INC0010001…), incidents get priority from impact and
urgency, resolving an incident without close code and notes breaks the data policy (403), and
journal fields (``work_notes``, ``comments``) are written to ``sys_journal_field``.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tools.emulators.servicenow.query import Condition, ParsedQuery, matches, members, sort

# The OT classes (ServiceNow's OT class model: cmdb_ci_ot, its control and supervisory systems and theirs).
OT_CLASSES = (
    "cmdb_ci_ot",
    "cmdb_ci_ot_control",
    "cmdb_ci_ot_supervisory",
    *(
        f"cmdb_ci_ot_{name}"
        for name in (
            "plc",
            "dcs",
            "rtu",
            "ied",
            "cnc",
            "dpu",
            "opc_server",
            "scada_server",
            "industrial_3d_printer",
            "control_module",
            "qics",
            "ews",
            "historian",
            "hmi",
            "opc_client",
            "scada_client",
        )
    ),
)
DEFAULT_TABLES = (
    "incident",
    "sn_si_incident",
    "problem",
    "change_request",
    "sys_user",
    "sys_journal_field",
    "cmdb_ci",
    "cmdb_ci_hardware",
    "cmdb_ci_ids_network",
    "cmdb_ci_nids",
    "cmdb_ci_network_adapter",
    "cmdb_ci_ip_address",
    "cmdb_serial_number",
    "cmdb_ot_entity",
    "cmdb_ci_ot_isa_entity",
    "cmdb_firmware_install",
    "cmdb_ire_incomplete_payloads",
    "core_company",
    "cmdb_model",
    "cmdb_rel_ci",
    "cmdb_rel_type",
    "sn_vul_vulnerable_item",
    "sn_vul_entry",
    "sn_vul_nvd_entry",
    "sn_vul_third_party_entry",
    "sys_object_source",
    "sys_user_role",
    "sys_user_has_role",
    "sys_choice",
    "task",
    "task_ci",
    "sys_dictionary",
    "sys_db_object",
    *OT_CLASSES,
)
NUMBER_PREFIXES = {"incident": "INC", "sn_si_incident": "SIR", "problem": "PRB", "change_request": "CHG"}
JOURNAL_FIELDS = ("work_notes", "comments")
PRIORITY = {(1, 1): 1, (1, 2): 2, (2, 1): 2, (1, 3): 3, (2, 2): 3, (3, 1): 3, (2, 3): 4, (3, 2): 4, (3, 3): 5}
SYSTEM_FIELDS = ("sys_id", "sys_created_on", "sys_updated_on", "sys_created_by", "sys_updated_by", "sys_mod_count")

Record = dict[str, str]


class StoreError(Exception):
    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        self.status, self.message, self.detail = status, message, detail
        super().__init__(message)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict):  # a reference given as {"value": sys_id}
        return str(value.get("value", ""))
    return str(value)


@dataclass
class Store:
    clock: Callable[[], float]
    tables: set[str] = field(default_factory=lambda: set(DEFAULT_TABLES))
    data: dict[str, dict[str, Record]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # (table, field) → value → sys_ids; built on first lookup, kept current by every write, so the IRE
    # stays fast on inventories of 100,000 devices.
    indexes: dict[tuple[str, str], dict[str, set[str]]] = field(default_factory=dict)
    # sys_id → when it joined its table: a query narrowed by an index answers in the table's order, as a scan does.
    ordinals: dict[str, int] = field(default_factory=dict)
    _ordinal: Any = field(default_factory=itertools.count)
    # Data policies: table → fields a write must leave non-empty (tests use them to make an instance refuse
    # records the way a customised one does).
    mandatory: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # sys_id → wall-clock time of the insert, for end-to-end latency measurements.
    inserted_at: dict[str, float] = field(default_factory=dict)

    def _index(self, table: str, record: Record, add: bool) -> None:
        for (indexed_table, name), index in self.indexes.items():
            if indexed_table == table and name in record:
                bucket = index.setdefault(record[name], set())
                if add:
                    bucket.add(record["sys_id"])
                else:
                    bucket.discard(record["sys_id"])

    def now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M:%S")

    def check_table(self, table: str) -> None:
        if table not in self.tables and not table.startswith(("u_", "x_")):
            raise StoreError(400, f"Invalid table {table}")

    def rows(self, table: str) -> dict[str, Record]:
        return self.data.setdefault(table, {})

    def query(self, table: str, parsed: ParsedQuery) -> list[Record]:
        self.check_table(table)
        with self.lock:
            narrowed = self._narrowed(table, parsed)
            records = list(self.rows(table).values()) if narrowed is None else narrowed
        # Matched outside the lock: a database does not hold every other write up for a read (and a record is
        # replaced, never changed in place, so each one is seen whole). A scan of 20,000 vulnerable items held
        # the alerts' inserts for a second.
        return sort([dict(r) for r in records if matches(r, parsed)], parsed)

    def _narrowed(self, table: str, parsed: ParsedQuery) -> list[Record] | None:
        """The only records a query can match, through an index, in the table's order; None: a scan it is.
        A query of one AND group with a clause ``field=value`` or ``fieldINa,b`` (a sync's lookups by
        correlation id, an alert's by number) reads its matches, not a table of 100,000 CIs. Called under the lock."""
        if len(parsed.groups) != 1:
            return None
        narrowest: set[str] | None = None
        for clause in parsed.groups[0]:
            wanted = _indexable(clause)
            if wanted is None:
                continue
            index = self._index_for(table, clause[0].field)
            found = set().union(*(index.get(value, set()) for value in wanted))
            if narrowest is None or len(found) < len(narrowest):
                narrowest = found
        if narrowest is None:
            return None
        rows = self.rows(table)
        records = [rows[sys_id] for sys_id in narrowest if sys_id in rows]
        return sorted(records, key=lambda r: self.ordinals.get(r["sys_id"], -1))

    def get(self, table: str, sys_id: str) -> Record:
        self.check_table(table)
        with self.lock:
            record = self.rows(table).get(sys_id)
            if record is None:
                raise StoreError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            return dict(record)

    def insert(self, table: str, values: dict[str, Any], user: str) -> Record:
        self.check_table(table)
        with self.lock:
            now = self.now()
            record: Record = {k: _text(v) for k, v in values.items() if k not in SYSTEM_FIELDS}
            journal = {k: record.pop(k) for k in JOURNAL_FIELDS if k in record}
            record.update(
                sys_id=uuid.uuid4().hex,
                sys_created_on=now,
                sys_updated_on=now,
                sys_created_by=user,
                sys_updated_by=user,
                sys_mod_count="0",
            )
            if table in NUMBER_PREFIXES and not record.get("number"):
                self.counters[table] = self.counters.get(table, 10000) + 1
                record["number"] = f"{NUMBER_PREFIXES[table]}{self.counters[table]:07d}"
            self._task_rules(table, record)
            self.rows(table)[record["sys_id"]] = record
            self.ordinals[record["sys_id"]] = next(self._ordinal)
            self.inserted_at[record["sys_id"]] = time.time()
            self._index(table, record, add=True)
            self._journal(table, record["sys_id"], journal, user)
            return dict(record)

    def update(self, table: str, sys_id: str, values: dict[str, Any], user: str) -> Record:
        self.check_table(table)
        with self.lock:
            current = self.rows(table).get(sys_id)
            if current is None:
                raise StoreError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            changes = {k: _text(v) for k, v in values.items() if k not in SYSTEM_FIELDS}
            journal = {k: changes.pop(k) for k in JOURNAL_FIELDS if k in changes}
            updated = {**current, **changes}
            self._task_rules(table, updated)
            if updated != current or journal:
                updated.update(
                    sys_updated_on=self.now(),
                    sys_updated_by=user,
                    sys_mod_count=str(int(current.get("sys_mod_count", "0")) + 1),
                )
            self._index(table, current, add=False)
            self.rows(table)[sys_id] = updated
            self._index(table, updated, add=True)
            self._journal(table, sys_id, journal, user)
            return dict(updated)

    def delete(self, table: str, sys_id: str) -> None:
        self.check_table(table)
        with self.lock:
            record = self.rows(table).pop(sys_id, None)
            if record is None:
                raise StoreError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            self._index(table, record, add=False)

    def _task_rules(self, table: str, record: Record) -> None:
        missing = [name for name in self.mandatory.get(table, ()) if not record.get(name)]
        if missing:
            raise StoreError(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tThe following fields are mandatory: " + ", ".join(missing),
            )
        if table != "incident":
            return
        record.setdefault("state", "1")
        record.setdefault("impact", "3")
        record.setdefault("urgency", "3")
        try:
            record["priority"] = str(PRIORITY[(int(record["impact"]), int(record["urgency"]))])
        except (KeyError, ValueError):
            record["priority"] = "5"
        record["active"] = "false" if record["state"] in ("6", "7", "8") else "true"
        if record["state"] == "6" and not (record.get("close_code") and record.get("close_notes")):
            raise StoreError(
                403,
                "Operation Failed",
                "Data Policy Exception: \n\tThe following fields are mandatory: Resolution code, Resolution notes",
            )

    def _journal(self, table: str, sys_id: str, entries: dict[str, str], user: str) -> None:
        for element, value in entries.items():
            if value:
                now = self.now()
                row = {
                    "sys_id": uuid.uuid4().hex,
                    "name": table,
                    "element": element,
                    "element_id": sys_id,
                    "value": value,
                    "sys_created_on": now,
                    "sys_created_by": user,
                }
                self.rows("sys_journal_field")[row["sys_id"]] = row
                self.ordinals[row["sys_id"]] = next(self._ordinal)
                self._index("sys_journal_field", row, add=True)

    def _index_for(self, table: str, name: str) -> dict[str, set[str]]:
        index = self.indexes.get((table, name))
        if index is None:
            index = self.indexes[(table, name)] = {}
            for existing in self.rows(table).values():
                if name in existing:
                    index.setdefault(existing[name], set()).add(existing["sys_id"])
        return index

    def find_one(self, table: str, **equals: str) -> Record | None:
        """The first record matching every field, found through the most selective index (a sensor is the
        parent of thousands of relations; the child narrows it to one or two)."""
        if not equals:
            return None
        with self.lock:
            buckets = [self._index_for(table, name).get(value, set()) for name, value in equals.items()]
            rows = self.rows(table)
            narrowest: set[str] = min(buckets, key=len)
            for sys_id in sorted(narrowest):
                found = rows.get(sys_id)
                if found is not None and all(found.get(k) == v for k, v in equals.items()):
                    return found
        return None

    def move(self, source: str, target: str, sys_id: str, **values: str) -> Record:
        """Reclassify a record to another table (keeping its sys_id), indexes included."""
        with self.lock:
            record = self.rows(source).pop(sys_id)
            self._index(source, record, add=False)
            moved = {**record, **values}
            self.rows(target)[sys_id] = moved
            self.ordinals[sys_id] = next(self._ordinal)  # last in its new table, as a scan of it sees it
            self._index(target, moved, add=True)
            return moved

    def all(self, table: str) -> list[Record]:
        with self.lock:
            return [dict(r) for r in self.rows(table).values()]


def _indexable(clause: list[Condition]) -> frozenset[str] | None:
    """The values an index answers a clause with: a lone ``=`` or ``IN`` naming no empty value (an empty one
    matches records without the field, which no index holds)."""
    if len(clause) != 1 or clause[0].operator not in ("=", "IN"):
        return None
    condition = clause[0]
    wanted = frozenset([condition.value]) if condition.operator == "=" else members(condition.value)
    return None if "" in wanted else wanted
