"""Rows written in transactions in the background (shared.platform.table_batches), and a stream's watermark
saved only past rows that are stored (shared.devices.state.Checkpoints), over an in-memory table."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseError
from azure.data.tables import TableTransactionError, UpdateMode

from shared.devices.state import Checkpoints, RunRows, SyncState
from shared.platform.table_batches import TableBatches
from tests.unit.test_assets import MemoryTable


class RecordingTable(MemoryTable):
    """Keeps each transaction's partition and size; ``hold`` blocks transactions until it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.transactions: list[tuple[str, int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.refuse: set[str] = set()  # partitions whose transactions fail
        self.lock = threading.Lock()

    def submit_transaction(self, operations: Iterable[Any], **_: Any) -> None:
        operations = list(operations)
        self.hold.wait(10)
        partition = operations[0][1]["PartitionKey"]
        if partition in self.refuse:
            raise OSError(f"storage refused {partition}")
        with self.lock:
            self.transactions.append((partition, len(operations)))
            super().submit_transaction(operations)


def test_a_partition_goes_in_one_transaction_once_it_holds_100_rows_and_the_rest_on_flush() -> None:
    table = RecordingTable()
    batches = TableBatches(table)
    for n in range(250):
        batches.add(f"p-{n % 2}", f"row-{n}", {"n": n})
    batches.write_through(-1)  # nothing opened that early: waits for the ones in flight only
    assert sorted(table.transactions) == [("p-0", 100), ("p-1", 100)]
    batches.flush()
    assert sorted(table.transactions) == [("p-0", 25), ("p-0", 100), ("p-1", 25), ("p-1", 100)]
    assert len(table.rows) == 250 and batches.calls == 4


def test_two_writes_of_a_row_land_in_the_order_they_were_made() -> None:
    table = RecordingTable()
    batches = TableBatches(table)
    table.hold.clear()  # the first transaction is slow; the second of the same partition must wait for it
    for n in range(100):
        batches.add("p", f"row-{n}", {"value": "first"}, UpdateMode.REPLACE)
    for n in range(100):
        batches.add("p", f"row-{n}", {"value": "second"}, UpdateMode.REPLACE)
    table.hold.set()
    batches.flush()
    assert {row["value"] for row in table.rows.values()} == {"second"}


def test_a_row_is_readable_while_it_waits_and_while_it_is_in_flight() -> None:
    table = RecordingTable()
    batches = TableBatches(table)
    table.hold.clear()
    batches.add("p", "a", {"hash": "1"})
    batches.add("p", "a", {"sys_id": "x"})  # a merge into a waiting row combines with it
    assert batches.row("p", "a") == {"hash": "1", "sys_id": "x", "PartitionKey": "p", "RowKey": "a"}
    for n in range(99):
        batches.add("p", f"other-{n}", {})  # the partition is full: it goes, and waits on the held table
    assert batches.row("p", "a") is not None and not table.rows
    table.hold.set()
    batches.flush()
    assert batches.row("p", "a") is None and table.rows[("p", "a")]["sys_id"] == "x"


def test_write_through_writes_the_partitions_opened_in_that_epoch_or_before_only() -> None:
    table = RecordingTable()
    batches = TableBatches(table)
    batches.add("old", "1", {})
    assert batches.advance() == 0
    batches.add("old", "2", {})  # the partition opened in epoch 0: it goes with it, this row too
    batches.add("new", "3", {})
    batches.write_through(0)
    assert table.transactions == [("old", 2)]
    batches.flush()
    assert table.transactions == [("old", 2), ("new", 1)]


def test_a_write_that_failed_is_raised_where_the_caller_waits_for_it() -> None:
    table = RecordingTable()
    table.refuse.add("bad")
    batches = TableBatches(table)
    batches.add("bad", "1", {})
    batches.add("good", "2", {})
    with pytest.raises(OSError, match="storage refused bad"):
        batches.flush()
    assert ("good", "2") in table.rows


def test_a_transaction_the_service_refuses_is_written_row_by_row() -> None:
    class OneBadRow(RecordingTable):
        def submit_transaction(self, operations: Iterable[Any], **_: Any) -> None:
            raise TableTransactionError(message="0:one entity is too large")

    table = OneBadRow()
    batches = TableBatches(table)
    batches.add("p", "1", {"a": 1})
    batches.add("p", "2", {"a": 2})
    batches.flush()
    assert set(table.rows) == {("p", "1"), ("p", "2")}


def test_the_watermark_moves_only_past_rows_that_are_stored_and_part_full_partitions_wait_to_fill() -> None:
    table = RecordingTable()
    rows = RunRows(SyncState(table))  # type: ignore[arg-type]  # only its writes are used
    staged_by_mark: dict[int, int] = {}  # a mark → how many rows were staged when it became possible
    saved: list[int] = []

    def save(mark: int) -> None:
        assert len(table.rows) >= staged_by_mark[mark], "the watermark went past a row not stored"
        saved.append(mark)

    # As a first sync: pages of 500 devices, a row each, over the state's 64 partitions; a checkpoint every
    # 5,000 devices, two behind (a partition fills every 6,400 devices or so).
    saves = Checkpoints(rows, save, stored=0, every=5_000, lag=2)
    for page in range(1, 121):
        rows.stage("device", [{"RowKey": f"device-{page}-{n}", "hash": "h"} for n in range(500)])
        staged_by_mark[page] = page * 500
        saves.settled(500, page)
    assert saved == [10 * n for n in range(1, 11)]  # each checkpoint moves it to the one two before
    part_full = sum(1 for _, size in table.transactions if size < 100)
    saves.finish()
    assert saved[-1] == 120 and len(table.rows) == 60_000
    # Rows went as their partitions filled: the ten saves wrote a few part-full transactions, not 64 each.
    assert part_full <= 30, part_full


def test_a_stream_that_ends_before_its_first_checkpoint_saves_its_watermark_once_everything_is_stored() -> None:
    table = RecordingTable()
    rows = RunRows(SyncState(table))  # type: ignore[arg-type]
    saved: list[int] = []
    saves = Checkpoints(rows, lambda mark: saved.append(len(table.rows)), stored=0, every=5_000)
    rows.stage("device", [{"RowKey": f"device-{n}"} for n in range(700)])
    saves.settled(700, 41)
    saves.settled(0)  # a page that may not move it (an item failed): the last mark stands
    assert saved == []
    saves.finish()
    assert saved == [700] and saves.stored == 41


def test_a_transaction_whose_connection_dropped_before_its_answer_is_sent_again() -> None:
    class Dropping(RecordingTable):
        def __init__(self, drops: int) -> None:
            super().__init__()
            self.drops = drops

        def submit_transaction(self, operations: Iterable[Any], **_: Any) -> None:
            if self.drops:
                self.drops -= 1
                raise ServiceResponseError("Remote end closed connection without response")
            super().submit_transaction(operations)

    table = Dropping(drops=2)
    batches = TableBatches(table)
    batches.add("p", "1", {})
    batches.flush()
    assert ("p", "1") in table.rows
    table = Dropping(drops=3)  # a connection that keeps dropping is a failure, raised
    batches = TableBatches(table)
    batches.add("p", "1", {})
    with pytest.raises(ServiceResponseError):
        batches.flush()
