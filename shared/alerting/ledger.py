"""The forwarding ledger: which ServiceNow record stands for which (alert, action), in Table storage.

It is what makes forwarding exactly-once at one ServiceNow call on the happy path. Before writing a
record a worker *claims* the (alert, action) row — an insert, which storage lets only one writer
win. The row then holds the record's sys_id and the deliveries already handled, so a redelivered or
duplicated message costs no ServiceNow write. A claim left behind by a crash (between the
ServiceNow write and the ledger update) goes stale after ``claim_seconds`` and the next worker
recovers: it looks the record up by correlation id before it would create one. A claim whose
write failed ambiguously is marked *uncertain* at once, so recovery starts without waiting.

It also records where each change of status came from, so the loop with Defender never ping-pongs:
``resolved`` (the alert was handled in Defender and the record resolved for it) and ``written_back``
(the record was resolved in ServiceNow and the alert closed at its source for it). Each record's
correlation id leads back to its row (it names the row; an id too long for ServiceNow is hashed, and then
indexed), and the row keeps the alert's origin (source and the source's id).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient

from shared.alerting.claims import ClaimState, Columns, claim_columns, stale
from shared.alerting.table_layout import index_keys, ledger_keys, ledger_partition
from shared.platform.storage import create_table_if_missing, merge_if_unchanged
from shared.platform.times import parse_iso

MAX_DELIVERIES = 50
MAX_WRITE_ATTEMPTS = 10  # read-modify-write rounds against parallel writers before giving up for now

ClaimKind = Literal["new", "recover", "existing", "busy"]
EntryState = ClaimState  # shared.alerting.claims says what each state means
# "" (not written back) | closing (a close was sent, its answer not yet recorded) | closed | gone | unsupported |
# refused: the alert's closing at its source for the record (shared.alerting.writeback)
WrittenBack = Literal["", "closing", "closed", "gone", "unsupported", "refused"]


HASHED_PREFIX = "dfiot:sha256:"  # records.correlation_id hashes ids longer than ServiceNow's 100 characters


def _rows_named(correlation_id: str) -> list[tuple[str, str]]:
    """The (alert key, action) rows a plain correlation id ``dfiot:<alert key>:<action>[:<generation>]`` may
    name: action names have no ':', so it is the last part, or the one before a generation number."""
    if not correlation_id.startswith("dfiot:"):
        return []
    rest = correlation_id.removeprefix("dfiot:")
    candidates = []
    head, _, last = rest.rpartition(":")
    if head:
        candidates.append((head, last))
        if last.isdigit():
            alert_key, _, action = head.rpartition(":")
            if alert_key:
                candidates.append((alert_key, action))
    return candidates


@dataclass
class Entry:
    alert_key: str
    action: str
    state: EntryState
    etag: str
    sys_id: str = ""
    number: str = ""
    table: str = ""
    correlation_id: str = ""
    generation: int = 0
    seen: int = 1
    deliveries: tuple[str, ...] = ()
    resolved: bool = False
    claimed_at: datetime | None = None
    origin_source: str = ""  # the intake's source of the alert, and that source's id of it (write-back)
    origin_ref: str = ""
    written_back: WrittenBack = ""
    written_back_reason: str = ""  # why the source refused it, or why the write-back gave up

    @classmethod
    def from_entity(cls, entity: Any) -> Entry:
        return cls(action=entity["RowKey"], etag=entity.metadata["etag"], **COLUMNS.read(entity))


# The ledger row's columns, with the defaults an older row's missing column reads as.
COLUMNS = Columns(
    {
        "alert_key": "",
        "state": "",
        "sys_id": "",
        "number": "",
        "table": "",
        "correlation_id": "",
        "generation": 0,
        "seen": 1,
        "deliveries": "[]",
        "resolved": False,
        "claimed_at": None,
        "origin_source": "",
        "origin_ref": "",
        "written_back": "",
        "written_back_reason": "",
    },
    {
        "generation": int,
        "seen": int,
        "deliveries": lambda text: tuple(json.loads(text)),  # stored as JSON text
        "resolved": bool,
        "claimed_at": parse_iso,  # a datetime; older rows hold ISO text
    },
)


class ContentionError(Exception):
    """Parallel writers kept changing an entry for every attempt to update it; try again in a moment."""


@dataclass
class Claim:
    kind: ClaimKind
    entry: Entry | None = None


class Ledger:
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

    def _get(self, alert_key: str, action: str) -> Entry | None:
        try:
            return Entry.from_entity(self.table.get_entity(partition_key=ledger_partition(alert_key), row_key=action))
        except ResourceNotFoundError:
            return None

    def _merge(self, entry: Entry, values: dict[str, Any]) -> Entry | None:
        """Conditional update on the entry's etag; None when another writer got there first."""
        etag = merge_if_unchanged(self.table, {**ledger_keys(entry.alert_key, entry.action), **values}, entry.etag)
        # The response carries the new etag: the merged entry is known without reading it back.
        return None if etag is None else replace(entry, **COLUMNS.merged(values), etag=etag)

    def claim(self, alert_key: str, action: str, correlation_id: str) -> Claim:
        now = self.clock()
        entity = {
            **ledger_keys(alert_key, action),
            "alert_key": alert_key,
            **claim_columns(now),
            "correlation_id": correlation_id,
            "generation": 0,
            "seen": 1,
            "deliveries": "[]",
        }
        try:
            metadata = self.table.create_entity(entity)
            return Claim(
                "new",
                Entry(alert_key, action, "claimed", metadata["etag"], correlation_id=correlation_id, claimed_at=now),
            )
        except ResourceExistsError:
            pass
        entry = self._get(alert_key, action)
        if entry is None:  # deleted between the two calls: try once more from the start
            return self.claim(alert_key, action, correlation_id)
        if entry.state == "created":
            return Claim("existing", entry)
        if entry.state == "claimed" and not stale(entry.claimed_at, now, self.claim_seconds):
            return Claim("busy", entry)
        taken = self._merge(entry, claim_columns(now))
        return Claim("recover", taken) if taken is not None else Claim("busy", entry)

    def created(
        self,
        entry: Entry,
        *,
        sys_id: str,
        number: str,
        table: str,
        correlation_id: str,
        delivery_id: str,
        generation: int,
        origin: tuple[str, str] | None = None,
    ) -> Entry:
        deliveries = [*(d for d in entry.deliveries if d != delivery_id), delivery_id][-MAX_DELIVERIES:]
        if correlation_id.startswith(HASHED_PREFIX):
            # A hashed id does not name its row: index it first, so a record the write-back finds leads to its
            # row (a repeat of this is harmless). Other ids name their row and cost no write here.
            self.table.upsert_entity(
                {**index_keys(correlation_id), "alert_key": entry.alert_key, "action": entry.action}
            )
        values: dict[str, Any] = {
            "state": "created",
            "sys_id": sys_id,
            "number": number,
            "table": table,
            "correlation_id": correlation_id,
            "generation": generation,
            "deliveries": json.dumps(deliveries),
            "resolved": False,
            "written_back": "",
        }
        if origin is not None:
            values |= {"origin_source": origin[0], "origin_ref": origin[1]}
        updated = self._merge(entry, values)
        if updated is None:
            raise RuntimeError(f"ledger entry for {entry.alert_key}/{entry.action} changed while this worker held it")
        return updated

    def by_correlation(self, correlation_id: str) -> Entry | None:
        """The row of the record with this correlation id (None: not a record this ledger wrote)."""
        if not correlation_id.startswith(HASHED_PREFIX):
            for alert_key, action in _rows_named(correlation_id):
                entry = self._get(alert_key, action)
                if entry is not None and entry.correlation_id == correlation_id:
                    return entry
            return None
        try:
            keys = index_keys(correlation_id)
            index = self.table.get_entity(partition_key=keys["PartitionKey"], row_key=keys["RowKey"])
        except ResourceNotFoundError:
            return None
        entry = self._get(index["alert_key"], index["action"])
        return entry if entry is not None and entry.correlation_id == correlation_id else None

    def written_back(self, entry: Entry, result: WrittenBack, reason: str = "") -> Entry | None:
        """The record's resolution is being (``closing``) or was carried to the alert's source (``result``:
        closed, gone, unsupported), or will not be (refused, with the ``reason``); None when another writer
        changed the row first."""
        return self._merge(entry, {"written_back": result, "written_back_reason": reason})

    def uncertain(self, entry: Entry) -> None:
        """The write may or may not have reached ServiceNow: recover by lookup next time, without waiting."""
        self._merge(entry, {"state": "uncertain"})

    def release(self, entry: Entry) -> None:
        """Nothing was written: forget the claim (or, for a new generation, go back to the record before it)."""
        if entry.sys_id:
            self._merge(entry, {"state": "created", "generation": max(0, entry.generation - 1)})
            return
        with contextlib.suppress(HttpResponseError):
            self.table.delete_entity(
                partition_key=ledger_partition(entry.alert_key),
                row_key=entry.action,
                etag=entry.etag,
                match_condition=MatchConditions.IfNotModified,
            )

    def begin_generation(self, entry: Entry, generation: int, correlation_id: str) -> Entry | None:
        """Claim the right to replace a closed record with a new one (None: another worker is doing it).

        The entry then names the new generation's correlation id, so a recovery looks for the new record,
        never adopts the closed one.
        """
        return self._merge(
            entry,
            {**claim_columns(self.clock()), "generation": generation, "correlation_id": correlation_id},
        )

    def repeated(self, entry: Entry, delivery_id: str, *, reopened: bool) -> Entry | None:
        """One more occurrence of the alert (see :meth:`delivered`); ``reopened``: its record is being reopened,
        so the loop with Defender starts again (neither resolved for the alert nor written back)."""
        return self.delivered(entry, delivery_id, **({"resolved": False, "written_back": ""} if reopened else {}))

    def delivered(self, entry: Entry, delivery_id: str, **values: Any) -> Entry | None:
        """Record one more occurrence (``seen`` + 1) and its delivery id; the returned entry's ``seen`` is its number.

        Parallel repeats of one alert race here: a write that loses re-reads the entry and tries again, so
        every occurrence is counted and every delivery id kept. None when this delivery id is recorded
        already (another copy of the same delivery got there first); :class:`ContentionError` when the
        race is not won within MAX_WRITE_ATTEMPTS rounds.
        """
        for _ in range(MAX_WRITE_ATTEMPTS):
            if delivery_id in entry.deliveries:
                return None
            deliveries = [*entry.deliveries, delivery_id][-MAX_DELIVERIES:]
            updated = self._merge(entry, {"deliveries": json.dumps(deliveries), "seen": entry.seen + 1, **values})
            if updated is not None:
                return updated
            entry = self._reread(entry)
        raise ContentionError(f"ledger entry for {entry.alert_key}/{entry.action} kept changing")

    def undelivered(self, entry: Entry, delivery_id: str) -> None:
        """Take back an occurrence recorded by :meth:`delivered` whose ServiceNow write failed, so that the
        redelivery writes it instead of taking itself for a duplicate. Bounded; the caller's error stands."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            if delivery_id not in entry.deliveries:
                return
            deliveries = [d for d in entry.deliveries if d != delivery_id]
            values = {"deliveries": json.dumps(deliveries), "seen": max(1, entry.seen - 1)}
            if self._merge(entry, values) is not None:
                return
            entry = self._reread(entry)

    def _reread(self, entry: Entry) -> Entry:
        fresh = self._get(entry.alert_key, entry.action)
        if fresh is None:
            raise ContentionError(f"ledger entry for {entry.alert_key}/{entry.action} disappeared")
        return fresh

    def entries(self, alert_key: str) -> list[Entry]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": ledger_partition(alert_key)})
        return [Entry.from_entity(e) for e in query]

    def resolved(self, entry: Entry) -> None:
        self._merge(entry, {"resolved": True})
