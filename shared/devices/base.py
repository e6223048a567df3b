"""What every stream of the device sync shares: the source, ServiceNow, the run's rows and writer, the counts,
progress and where a run stops (its deadline, an operator's Ctrl-C, a call that failed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.assets.index import IndexWriter
from shared.defender.model import DeviceSource, Sensor
from shared.devices.references import References
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import RunRows, SyncCounts, SyncState
from shared.devices.writer import Writer
from shared.platform.times import NO_DEADLINE, Deadline
from shared.servicenow import ServiceNowClient
from shared.servicenow.ire import IreResult, results

logger = logging.getLogger("shared.devices.sync")
SAVE_EVERY = 5_000  # items settled between two checkpoints of a stream (its rows, then its watermark)


@dataclass(frozen=True)
class SyncProgress:
    """How far a run has come: the stream being read, the pages and items read so far, ServiceNow calls, and
    the writes in flight (items are read ahead of their writes by at most that many payloads)."""

    stream: str
    pages: int
    items: int
    servicenow_calls: int
    in_flight: int = 0


class StoppedError(Exception):
    """The run stops (its deadline passed, or the operator asked); raised only once everything written so
    far is saved."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SyncBase:
    save_every = SAVE_EVERY

    def __init__(
        self,
        settings: DeviceSyncSettings,
        source: DeviceSource,
        servicenow: ServiceNowClient,
        state: SyncState,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Callable[[SyncProgress], None] | None = None,
        *,
        data_source: str | None = None,
        deadline: Deadline = NO_DEADLINE,
        index: IndexWriter | None = None,
    ) -> None:
        self.settings = settings
        self.index = index  # the asset index: what ServiceNow confirmed of each device, for the forwarder
        self.source = source
        self.servicenow = servicenow
        self.state = state
        self.clock = clock
        self.progress = progress
        self.data_source = data_source or settings.data_source
        self.deadline = deadline
        self.stop_requested = threading.Event()  # set from another thread or a signal handler: stop cleanly
        self.sensors: dict[str, Sensor] = {}
        self.references = References(servicenow)
        self.rows = RunRows(state, [index.batches] if index is not None else [])
        self.writer = Writer(1)
        self._calls_before = 0
        self._read: dict[str, tuple[int, int]] = {}

    def stopping(self) -> bool:
        """No new write is sent: the deadline passed, the operator asked, or a call failed."""
        return self.deadline.passed() or self.stop_requested.is_set() or self.writer.error is not None

    def finish_stream(self, stream: str) -> None:
        """Every write in flight done and saved; then stop the run here if it is stopping."""
        self.writer.drain()
        self.rows.flush()
        if self.writer.error is not None:
            raise self.writer.error
        if self.deadline.passed() or self.stop_requested.is_set():
            raise StoppedError(stream)

    def page_read(self, stream: str, items: int) -> None:
        pages, total = self._read.get(stream, (0, 0))
        self._read[stream] = (pages + 1, total + items)
        if self.progress is not None:
            calls = self.servicenow.stats.calls - self._calls_before
            self.progress(SyncProgress(stream, pages + 1, total + items, calls, self.writer.in_flight))

    def reconcile(
        self, items: list[dict[str, Any]], relations: list[dict[str, Any]]
    ) -> tuple[list[IreResult], list[IreResult]]:
        """The items' and the relations' results, each in input order (paired by the answer's inputIndices).
        The data source is this source's, the one its items name in sys_object_source_info. Thread-safe."""
        answer = self.servicenow.identify_reconcile(
            {"items": items, "relations": relations}, data_source=self.data_source
        )
        return results(answer, len(items)), results({"items": answer.get("relations") or []}, len(relations))

    @staticmethod
    def count(counts: SyncCounts, result: IreResult) -> bool:
        kind = result.kind
        if kind == "failed":
            counts.errors += 1
            logger.warning("IRE refused an item (%s): %s", result.class_name or "?", result.problem)
            return False
        if kind == "created":
            counts.created += 1
        elif kind == "updated":
            counts.updated += 1
        else:
            counts.unchanged += 1
        return True
