"""Alert groups in Table storage: which record stands for a group of related alerts, and who is in it.

An action with a ``group`` option turns a storm of related alerts into one record per group. The group
is named by the action and the rendered key (``{sensor}:{title}`` → ``sensor-1:Port scan``); a
*generation* of it lasts ``window_minutes`` from its opening, after which (or once its record is closed
in ServiceNow) the next alert of the key opens the next generation and a new record.

Rows, in the forwarding table (:mod:`shared.alerting.table_layout` names every family's partition):

- one *header* per generation, partition ``groups``, row ``<group id>-<inverted generation>``: the record,
  the count of alerts it accounts for, the work note being written. Rows sort newest generation first,
  so the current one is a one-row query. Inserting it is the claim that makes one record per generation;
- one *member* per alert, partition ``member-<group id>``, row ``sha256(alert key)``: inserting it is the
  claim that accounts for the alert exactly once. It keeps the note line and the message (compressed),
  so the group's record can be written from any member if its opener crashed.

A grouped alert costs two storage calls here (the header query and the member insert) and no ServiceNow
call: the group notes timer (:mod:`shared.alerting.group_notes`) lists new members in batched work notes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.alerting.assets import AssetFields
from shared.alerting.claims import REQUIRED, ClaimState, Columns, claim_columns, stale
from shared.alerting.records import PreparedAlert, fields_for
from shared.alerting.rules import Action, Grouping
from shared.alerting.table_layout import GROUP_HEADERS, header_keys, header_range, member_keys, member_partition
from shared.alerting.templates import render, truncate
from shared.platform.storage import create_table_if_missing, merge_if_unchanged

KEY_LIMIT = 200  # the rendered key as kept and shown; the id is a digest of all of it
TRANSACTION_LIMIT = 100  # entity group transactions: at most 100 operations in one partition

HeaderState = ClaimState  # shared.alerting.claims says what each state means


def group_value(alert: PreparedAlert, grouping: Grouping) -> str:
    """The rendered key of the alert's group (e.g. ``sensor-1:Port scan``)."""
    return render(grouping.key, alert.values)


def group_id(action: str, value: str) -> str:
    return hashlib.sha256(f"{action}\n{value}".encode()).hexdigest()[:40]


def group_correlation_id(gid: str, generation: int) -> str:
    return f"dfiot:group:{gid}:{generation}"


def group_record_values(
    alert: PreparedAlert, action: Action, header: Header, assets: AssetFields | None = None
) -> dict[str, Any]:
    """The group's record: the first alert's (its CI and asset section too, ``assets``), under the group's
    correlation id, saying what it groups."""
    assert action.group is not None
    fields = fields_for(alert, action, 0, assets)
    fields["correlation_id"] = header.correlation_id
    about = (
        f"Alert group: {action.group.key} = {header.value}, for {action.group.window_minutes:g} minutes from "
        f"{header.opened_at.strftime('%Y-%m-%d %H:%M:%S UTC')}. Later alerts of the group are listed in work notes."
    )
    fields["description"] = f"{fields['description']}\n\n{about}" if fields.get("description") else about
    return fields


def note_line(alert: PreparedAlert) -> str:
    """One alert as a work note lists it."""
    v = alert.values
    where = f"{v['source'] or '-'} → {v['destination'] or '-'}" if v["source"] or v["destination"] else ""
    parts = [f"{v['time']} {v['severity']}: {v['title']}", where, f"sensor {v['sensor']}"]
    if v["alert_id"]:
        parts.append(f"alert {v['alert_id']}")
    return truncate(", ".join(p for p in parts if p), 300)


@dataclass(frozen=True)
class Header:
    gid: str
    generation: int
    state: HeaderState
    etag: str
    action: str
    connection: str
    table: str
    value: str
    window_minutes: float
    opened_at: datetime
    first_member: str
    correlation_id: str
    claimed_at: datetime | None = None
    sys_id: str = ""
    number: str = ""
    count: int = 0  # alerts the record accounts for: its own, then every one listed in a work note
    note_seq: int = 0
    note_state: str = ""  # "writing": note ``note_seq`` listing ``note_members`` may or may not be in ServiceNow
    note_members: tuple[str, ...] = ()
    note_claimed_at: datetime | None = None
    closed: bool = False  # its record was found closed: the next alert opens the next generation
    open: bool = True  # the notes timer still looks at it

    def accepts(self, now: datetime) -> bool:
        """Whether an alert handled now joins this generation."""
        return not self.closed and now < self.opened_at + timedelta(minutes=self.window_minutes)

    @classmethod
    def from_entity(cls, entity: Any) -> Header:
        return cls(etag=entity.metadata["etag"], **HEADER_COLUMNS.read(entity))


# A header row's columns: those every header has, and the defaults an older row's missing column reads as.
HEADER_COLUMNS = Columns(
    {
        "gid": REQUIRED,
        "generation": REQUIRED,
        "state": REQUIRED,
        "action": REQUIRED,
        "connection": REQUIRED,
        "table": REQUIRED,
        "value": "",
        "window_minutes": REQUIRED,
        "opened_at": REQUIRED,
        "first_member": "",
        "correlation_id": REQUIRED,
        "claimed_at": None,
        "sys_id": "",
        "number": "",
        "count": 0,
        "note_seq": 0,
        "note_state": "",
        "note_members": "[]",
        "note_claimed_at": None,
        "closed": False,
        "open": True,
    },
    {
        "generation": int,
        "window_minutes": float,
        "count": int,
        "note_seq": int,
        "note_members": lambda text: tuple(json.loads(text or "[]")),  # stored as JSON text
        "closed": bool,
        "open": bool,
    },
)


@dataclass(frozen=True)
class Member:
    gid: str
    row: str
    alert_key: str
    generation: int
    line: str
    noted: bool
    message: bytes = b""

    def body(self) -> bytes:
        """The alert message as it came off the queue (to write the group's record from it)."""
        return zlib.decompress(self.message) if self.message else b""


class GroupBook:
    def __init__(
        self,
        table: TableClient,
        claim_seconds: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.table = table
        self.claim_seconds = claim_seconds
        self.clock = clock

    def ensure_table(self) -> None:
        create_table_if_missing(self.table)

    # -- the forwarder's side --------------------------------------------------------------------
    def latest(self, gid: str) -> Header | None:
        """The group's newest generation: rows sort newest first, so this is the first row of the range."""
        query = self.table.query_entities(
            "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
            parameters=header_range(gid),
            results_per_page=1,
        )
        for page in query.by_page():  # a page may come back empty with a continuation
            for row in page:
                return Header.from_entity(row)
        return None

    def join(self, gid: str, generation: int, alert: PreparedAlert) -> Member | None:
        """Account the alert to the group (None: it is accounted already — a redelivery or a duplicate)."""
        key = alert.key
        document = json.dumps(alert.message.raw, separators=(",", ":"), default=str).encode()
        entity: dict[str, Any] = {
            **member_keys(gid, key),
            "alert_key": key,
            "generation": generation,
            "noted": False,
            "line": note_line(alert),
            "message": zlib.compress(document),
        }
        try:
            self.table.create_entity(entity)
        except ResourceExistsError:
            return None
        return Member(gid, entity["RowKey"], key, generation, entity["line"], False, entity["message"])

    def member(self, gid: str, key: str) -> Member | None:
        keys = member_keys(gid, key)
        try:
            entity = self.table.get_entity(partition_key=keys["PartitionKey"], row_key=keys["RowKey"])
        except ResourceNotFoundError:
            return None
        return _member(gid, entity)

    def open(
        self, gid: str, generation: int, action: Action, value: str, member: Member, now: datetime
    ) -> Header | None:
        """Claim the right to write generation ``generation``'s record (None: another worker opened it)."""
        assert action.group is not None
        entity: dict[str, Any] = {
            **header_keys(gid, generation),
            "gid": gid,
            "generation": generation,
            **claim_columns(now),
            "action": action.name,
            "connection": action.connection,
            "table": action.table,
            "value": truncate(value, KEY_LIMIT),
            "window_minutes": action.group.window_minutes,
            "opened_at": now,
            "first_member": member.row,
            "correlation_id": group_correlation_id(gid, generation),
            "count": 0,
            "note_seq": 0,
            "note_state": "",
            "note_members": "[]",
            "closed": False,
            "open": True,
        }
        try:
            metadata = self.table.create_entity(entity)
        except ResourceExistsError:
            return None
        return Header(
            gid=gid,
            generation=generation,
            state="claimed",
            etag=metadata["etag"],
            action=action.name,
            connection=action.connection,
            table=action.table,
            value=entity["value"],
            window_minutes=action.group.window_minutes,
            opened_at=now,
            first_member=member.row,
            correlation_id=entity["correlation_id"],
            claimed_at=now,
        )

    # -- header changes (conditional on the etag: None when another writer got there first) ---------
    def _merge(self, header: Header, values: dict[str, Any]) -> Header | None:
        etag = merge_if_unchanged(self.table, {**header_keys(header.gid, header.generation), **values}, header.etag)
        return None if etag is None else replace(header, **HEADER_COLUMNS.merged(values), etag=etag)

    def created(self, header: Header, sys_id: str, number: str) -> Header | None:
        return self._merge(header, {"state": "created", "sys_id": sys_id, "number": number, "count": 1})

    def unwritten(self, header: Header, *, maybe_written: bool) -> Header | None:
        """The record's write failed: the notes timer finishes it on its next run, without waiting — looking it
        up first when the write may have reached ServiceNow."""
        if maybe_written:
            return self._merge(header, {"state": "uncertain"})
        return self._merge(header, {"claimed_at": datetime(2000, 1, 1, tzinfo=UTC)})

    def take_over(self, header: Header) -> Header | None:
        """Take a stale claim (its worker crashed or gave up) to finish writing the record."""
        return self._merge(header, claim_columns(self.clock()))

    def hand_over_note(self, header: Header) -> Header | None:
        """The note's fate is unknown: the next run looks for it in the journal, without waiting."""
        return self._merge(header, {"note_claimed_at": datetime(2000, 1, 1, tzinfo=UTC)})

    def take_note(self, header: Header) -> Header | None:
        return self._merge(header, {"note_claimed_at": self.clock()})

    def stale(self, moment: datetime | None) -> bool:
        return stale(moment, self.clock(), self.claim_seconds)

    # -- the notes timer's side ------------------------------------------------------------------
    def open_headers(self) -> list[Header]:
        query = self.table.query_entities("PartitionKey eq @pk and open eq true", parameters={"pk": GROUP_HEADERS})
        return [Header.from_entity(e) for e in query]

    def pending(self, header: Header, limit: int) -> list[Member]:
        """Members of this generation not yet accounted on its record, at most ``limit``."""
        query = self.table.query_entities(
            "PartitionKey eq @pk and generation eq @generation and noted eq false",
            parameters={"pk": member_partition(header.gid), "generation": header.generation},
            select=["RowKey", "alert_key", "generation", "line", "noted"],
        )
        found: list[Member] = []
        for entity in query:
            found.append(_member(header.gid, entity))
            if len(found) >= limit:
                break
        return found

    def members(self, header: Header, rows: Sequence[str]) -> Iterator[Member]:
        for row in rows:
            entity = self.table.get_entity(partition_key=member_partition(header.gid), row_key=row)
            yield _member(header.gid, entity)

    def begin_note(self, header: Header, rows: Sequence[str]) -> Header | None:
        return self._merge(
            header,
            {
                "note_seq": header.note_seq + 1,
                "note_state": "writing",
                "note_members": json.dumps(list(rows)),
                "note_claimed_at": self.clock(),
            },
        )

    def mark_noted(self, gid: str, rows: Sequence[str]) -> None:
        """Members listed on the record (idempotent: a repeat after a crash changes nothing)."""
        partition = member_partition(gid)
        for start in range(0, len(rows), TRANSACTION_LIMIT):
            chunk = rows[start : start + TRANSACTION_LIMIT]
            self.table.submit_transaction(
                [
                    ("update", {"PartitionKey": partition, "RowKey": row, "noted": True}, {"mode": UpdateMode.MERGE})
                    for row in chunk
                ]
            )

    def finish_note(self, header: Header, counted: int, *, closed: bool) -> Header | None:
        return self._merge(
            header,
            {
                "note_state": "",
                "note_members": "[]",
                "count": header.count + counted,
                "closed": header.closed or closed,
            },
        )

    def closed(self, header: Header) -> Header | None:
        return self._merge(header, {"closed": True})

    def retire(self, header: Header) -> Header | None:
        """Its window is over and every member is accounted for: the timer stops looking at it."""
        return self._merge(header, {"open": False})


def _member(gid: str, entity: Any) -> Member:
    return Member(
        gid=gid,
        row=entity["RowKey"],
        alert_key=entity.get("alert_key", ""),
        generation=int(entity.get("generation", 0)),
        line=entity.get("line", ""),
        noted=bool(entity.get("noted", False)),
        message=bytes(entity.get("message") or b""),
    )
