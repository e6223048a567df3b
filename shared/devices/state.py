"""What the device sync remembers between runs, in one Table storage table: each item's content hash and
sys_id, each stream's watermark, and the last run's status (shown by ``sync status``)."""

from __future__ import annotations

import json
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from shared.platform.storage import create_table_if_missing
from shared.platform.table_batches import TableBatches


@dataclass
class SyncCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retired: int = 0
    relations: int = 0
    cves_opened: int = 0
    cves_closed: int = 0
    cves_unmatched: int = 0  # CVEs reported for an IP address no device of the source has
    errors: int = 0


@dataclass
class SyncStatus:
    started: str
    finished: str = ""
    duration_seconds: float = 0.0
    counts: SyncCounts = field(default_factory=SyncCounts)
    error: str = ""
    servicenow_calls: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what the source cannot provide; what was skipped
    stopped: str = ""  # the stream the run stopped in at its deadline (saved; the next tick resumes there)

    @classmethod
    def from_json(cls, text: str) -> SyncStatus:
        document = json.loads(text)
        known = {f for f in cls.__dataclass_fields__ if f != "counts"}
        counts = {k: v for k, v in document.get("counts", {}).items() if k in SyncCounts.__dataclass_fields__}
        return cls(**{k: v for k, v in document.items() if k in known}, counts=SyncCounts(**counts))


class SyncState:
    """Hashes, sys_ids, watermarks and the last sync's status of one source, in a Table storage table.

    Per-item rows are spread over PARTITIONS partitions per kind: one partition serves about 2,000
    entities a second (the Table service's scalability target), less than a 100,000-device first sync
    needs, and the storage emulator scans a whole partition for each point read. Sources share the
    table, each under its ``scope`` (its name); the legacy console setting (``CONSOLE_URL``) keeps the
    unscoped rows it always had.
    """

    PARTITIONS = 64

    def __init__(self, table: TableClient, scope: str = "") -> None:
        self.table = table
        self.scope = scope
        self._prefix = f"{scope}:" if scope else ""

    def partition(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}-{zlib.crc32(key.encode()) % self.PARTITIONS:02d}"

    def rows(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every stored row of one kind, streamed (absence checks, tools and tests)."""
        low, high = f"{self._prefix}{kind}-", f"{self._prefix}{kind}-~"
        for entity in self.table.query_entities(f"PartitionKey gt '{low}' and PartitionKey lt '{high}'"):
            if len(entity["PartitionKey"]) == len(low) + 2:  # not another scope's rows that share the prefix
                yield dict(entity)

    def delete(self, kind: str, key: str) -> None:
        self.table.delete_entity(self.partition(kind, key), key)

    def ensure(self) -> None:
        create_table_if_missing(self.table)

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._single(self.partition(kind, key), key)

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """A page's stored rows at once: point reads in parallel, one page at a time (memory stays bounded)."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            return dict(zip(keys, pool.map(lambda key: self.get(kind, key), keys), strict=True))

    def load(self, kind: str, fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Every row of one kind at once, only ``fields`` of each (a whole read's view: one range query, paged)."""
        return {str(row["RowKey"]): {f: row[f] for f in fields if f in row} for row in self.rows(kind)}

    def _single(self, partition: str, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.table.get_entity(partition, key))
        except ResourceNotFoundError:
            return None

    def watermark(self, stream: str) -> int:
        row = self._single("watermark", self._prefix + stream)
        return int(row["value"]) if row else 0

    def set_watermark(self, stream: str, value: int) -> None:
        # Text, not a number: the Table SDK sends plain ints as Int32, too small for epoch milliseconds.
        self.table.upsert_entity({"PartitionKey": "watermark", "RowKey": self._prefix + stream, "value": str(value)})

    def last_sync(self) -> SyncStatus | None:
        row = self._single("status", self._prefix + "last")
        return SyncStatus.from_json(row["json"]) if row else None

    def record(self, status: SyncStatus) -> None:
        self.table.upsert_entity(
            {"PartitionKey": "status", "RowKey": self._prefix + "last", "json": json.dumps(asdict(status))}
        )


class RunRows:
    """One run's reads and writes of the per-item rows.

    Reads: a kind ``load``-ed once (a whole read: one range query for all its rows) is served from memory;
    otherwise a page's rows are point reads. Writes: rows are staged and go in transactions of 100 per
    partition (the Table service's limit) in the background as partitions fill
    (:class:`~shared.platform.table_batches.TableBatches`), with the companions' (the asset index), epoch by
    epoch: a stream closes an epoch where it could move its watermark (``advance``) and moves it once that
    epoch is written (``write_through``, a checkpoint or two later, when most partitions have gone full), so
    the state never says more than ServiceNow confirmed. A staged row is visible to the run's later reads at once.
    """

    def __init__(self, state: SyncState, companions: Sequence[TableBatches] = ()) -> None:
        self.state = state
        self.batches = TableBatches(state.table)
        self.companions = companions  # written with the rows (the asset index), so both say the same
        self.loaded: dict[str, dict[str, dict[str, Any]]] = {}

    def load(self, kind: str) -> None:
        if kind not in self.loaded:
            self.loaded[kind] = self.state.load(kind, sorted(_KEPT))

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return self.get_many(kind, [key])[key]

    def get_many(self, kind: str, keys: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        if kind in self.loaded:
            rows = self.loaded[kind]
            return {key: rows.get(key) for key in keys}
        found = self.state.get_many(kind, keys)  # a staged row may be partial (a mark): merged over the stored one
        return {key: self._merged(kind, key, found[key]) for key in keys}

    def rows(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Every row of one kind (loaded ones from memory)."""
        if kind in self.loaded:
            return list(self.loaded[kind].items())
        return [(str(row["RowKey"]), row) for row in self.state.rows(kind)]

    def _merged(self, kind: str, key: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        staged = self.batches.row(self.state.partition(kind, key), key)
        return stored if staged is None else {**(stored or {}), **staged}

    def stage(self, kind: str, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            key = str(row["RowKey"])
            self.batches.add(self.state.partition(kind, key), key, row)
            if kind in self.loaded:
                cached = self.loaded[kind].setdefault(key, {})
                cached.update({k: v for k, v in row.items() if k in _KEPT})

    def advance(self) -> int:
        """Close the epoch (the rows staged so far, and the companions'); returns its number."""
        epoch = self.batches.advance()
        for companion in self.companions:
            companion.advance()
        return epoch

    def write_through(self, epoch: int) -> None:
        """Every row staged in ``epoch`` or before stored (raises the first write that failed)."""
        for batches in (self.batches, *self.companions):
            batches.write_through(epoch)

    def flush(self) -> None:
        """Every staged row stored (raises the first write that failed)."""
        for batches in (self.batches, *self.companions):
            batches.flush()

    def close(self) -> None:
        for batches in (self.batches, *self.companions):
            batches.close()


class Checkpoints:
    """One stream's watermark, saved as a run goes. Every ``every`` items settled close an epoch of the run's
    rows; the watermark then moves to where it could go ``lag`` epochs before, once those are stored — most of
    their partitions filled and went in full transactions meanwhile, so a save writes few part-full ones. A
    run killed outright redoes at most ``(lag + 1) * every`` items (their hashes were not stored), no more."""

    def __init__(self, rows: RunRows, save: Callable[[int], None], stored: int, *, every: int, lag: int = 2):
        self.rows = rows
        self.save = save
        self.stored = stored
        self.every = every
        self.lag = lag
        self.mark: int | None = None  # where the watermark may go once every row staged so far is stored
        self._since = 0
        self._epochs: deque[tuple[int, int | None]] = deque()  # closed epochs not yet written, and their marks

    def settled(self, items: int, mark: int | None = None) -> None:
        """``items`` more settled; the watermark may go to ``mark`` (None: where it could before) once the
        rows staged so far are stored."""
        if mark is not None:
            self.mark = mark
        self._since += items
        if self._since < self.every:
            return
        self._since = 0
        self._epochs.append((self.rows.advance(), self.mark))
        if len(self._epochs) > self.lag:
            epoch, mark_then = self._epochs.popleft()
            self.rows.write_through(epoch)
            self._move(mark_then)

    def finish(self) -> None:
        """Every staged row stored, then the watermark as far as it may go."""
        self.rows.flush()
        self._epochs.clear()
        self._move(self.mark)

    def _move(self, mark: int | None) -> None:
        if mark is not None and mark > self.stored:
            self.save(mark)
            self.stored = mark


# The fields a loaded row keeps in memory (what the sync reads back): 100,000 devices stay within tens of MB.
_KEPT = frozenset({"hash", "sys_id", "class_name", "criticality", "retired", "missing_since", "open"})
