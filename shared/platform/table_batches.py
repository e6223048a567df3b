"""Rows bound for a Table storage table, written in transactions of 100 in the background.

A writer of many rows (the device sync's state, the asset index) adds them here. They wait per partition; a
partition's transaction goes as soon as it holds 100 rows (the Table service's most operations in one
transaction, all in one partition) on a worker that serves that partition alone, so two writes of one row
land in the order they were made, while the caller goes on. A row waiting or in flight is readable here
(:meth:`row`) until it is stored.

Rows are grouped in *epochs*. A caller that records it is past some rows (a watermark) needs them stored
first: it closes the epoch (:meth:`advance`) and, some time later, writes what is left of it
(:meth:`write_through`) — by then most of its partitions have filled and gone in full transactions, so a save
costs a few part-full ones rather than one per partition. :meth:`flush` writes everything. Both wait for every
write in flight and raise the first that failed: nothing is recorded past a row that was not stored.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from azure.core.exceptions import ServiceResponseError
from azure.data.tables import TableTransactionError, UpdateMode

TRANSACTION = 100  # the Table service's most operations in one transaction
LANES = 4  # workers; a partition always goes to the same one
ATTEMPTS = 3


class Table(Protocol):
    def submit_transaction(self, operations: Iterable[Any], **kwargs: Any) -> Any: ...

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = ..., **kwargs: Any) -> Any: ...


Operation = tuple[UpdateMode, dict[str, Any]]  # an upsert's mode and its entity


class TableBatches:
    def __init__(self, table: Table, *, lanes: int = LANES) -> None:
        self.table = table
        self.calls = 0  # transactions sent
        self.epoch = 0
        self._lane_count = lanes
        self._lanes: list[ThreadPoolExecutor] = []
        self._pending: dict[str, dict[str, Operation]] = {}  # partition → row key → operation
        self._opened: dict[str, int] = {}  # partition → the epoch of its oldest waiting row
        self._writing: dict[Future[None], tuple[str, dict[str, Operation]]] = {}  # in flight: partition, rows

    def add(self, partition: str, key: str, values: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE) -> None:
        """Upsert a row. A merge into a row already waiting combines with it (one operation per row, as a
        transaction requires); a replace supersedes it."""
        rows = self._pending.setdefault(partition, {})
        self._opened.setdefault(partition, self.epoch)
        if key in rows and mode is UpdateMode.MERGE:
            previous_mode, previous = rows[key]
            rows[key] = (previous_mode, {**previous, **values})
        else:
            rows[key] = (mode, {**values, "PartitionKey": partition, "RowKey": key})
        if len(rows) >= TRANSACTION:
            self._commit(partition)

    def row(self, partition: str, key: str) -> dict[str, Any] | None:
        """What is waiting or in flight for a row (merged, oldest first), or None."""
        found: dict[str, Any] | None = None
        for future, (written, rows) in self._writing.items():
            if not future.done() and written == partition and key in rows:
                found = {**(found or {}), **rows[key][1]}
        waiting = self._pending.get(partition, {}).get(key)
        return found if waiting is None else {**(found or {}), **waiting[1]}

    def advance(self) -> int:
        """Close the current epoch; returns its number (rows added from now on are in the next)."""
        self.epoch += 1
        return self.epoch - 1

    def write_through(self, epoch: int) -> None:
        """Every row of ``epoch`` and before stored; then return (or raise the first write that failed)."""
        for partition in [p for p, opened in self._opened.items() if opened <= epoch]:
            self._commit(partition)
        self._wait()

    def flush(self) -> None:
        """Every row stored; then return (or raise the first write that failed)."""
        for partition in list(self._pending):
            self._commit(partition)
        self._wait()

    def close(self) -> None:
        """Flush, and stop the workers (they start again on the next write)."""
        try:
            self.flush()
        finally:
            for lane in self._lanes:
                lane.shutdown(wait=True)
            self._lanes = []

    def _commit(self, partition: str) -> None:
        rows = self._pending.pop(partition, {})
        self._opened.pop(partition, None)
        if not rows:
            return
        if not self._lanes:
            self._lanes = [
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-batches") for _ in range(self._lane_count)
            ]
        for future in [f for f in self._writing if f.done() and f.exception() is None]:
            del self._writing[future]  # stored: read from the table now
        lane = self._lanes[zlib.crc32(partition.encode()) % len(self._lanes)]
        future = lane.submit(self._write, [("upsert", entity, {"mode": mode}) for mode, entity in rows.values()])
        self._writing[future] = (partition, rows)
        self.calls += 1

    def _write(self, operations: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self.table.submit_transaction(operations)
                return
            except TableTransactionError:  # one row the service refuses: the others land on their own
                for _, entity, options in operations:
                    self.table.upsert_entity(entity, mode=options["mode"])
                return
            except ServiceResponseError:
                # The connection dropped before the answer (a pooled one the server had just closed): the SDK
                # does not send a POST again, but a transaction of upserts is safe to repeat.
                if attempt == ATTEMPTS:
                    raise

    def _wait(self) -> None:
        futures = list(self._writing)
        wait(futures)
        self._writing.clear()
        for future in futures:
            if (error := future.exception()) is not None:
                raise error
