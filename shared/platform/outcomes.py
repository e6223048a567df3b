"""What this process's forwarding came to over the last hour — messages deferred and poisoned by reason, records
written by action, messages filtered — as the telemetry counters count it, kept in 5-minute buckets. Each
instance's row on the budget board carries its tally, so ``status`` shows the last hour without calling
Application Insights (and while no telemetry is configured at all).

"The last hour" is the current 5-minute bucket and the 11 before it: everything from the last 55 minutes is in
it, something from 55 to 60 minutes ago may be, nothing older is.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

BUCKET_SECONDS = 300
BUCKETS = 12
# Names per figure (the actions are the rules document's, unbounded): past this many in the hour, the rest
# count under OTHER. A row then stays far below Table storage's 64 KiB per string property (docs/operations.md).
MAX_NAMES = 100
OTHER = "(other)"

Totals = dict[str, dict[str, int]]  # figure → name → count ("" for a figure without names)


def bucket_of(moment: float) -> int:
    return int(moment // BUCKET_SECONDS)


def window_start(now: float) -> float:
    """When the last hour's window starts: the start of the oldest bucket it sums."""
    return float((bucket_of(now) - BUCKETS + 1) * BUCKET_SECONDS)


class OutcomeTally:
    """The process's counts per (figure, name) and 5-minute bucket; safe to add to from any thread."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.version = 0  # grows with every add: a board writes the row again only when it changed
        self._counts: dict[str, dict[str, dict[int, int]]] = {}
        self._lock = threading.Lock()

    def add(self, figure: str, name: str = "", amount: int = 1) -> None:
        bucket = bucket_of(self.clock())
        with self._lock:
            names = self._counts.setdefault(figure, {})
            if name not in names and len(names) >= MAX_NAMES:
                name = OTHER
            series = names.setdefault(name, {})
            series[bucket] = series.get(bucket, 0) + amount
            self.version += 1

    def encode(self) -> str:
        """The last hour as one JSON text: the newest bucket's number and, per figure and name, a count per bucket,
        oldest first. Older buckets are dropped here, so memory stays bounded by the hour too."""
        last = bucket_of(self.clock())
        first = last - BUCKETS + 1
        figures: dict[str, dict[str, list[int]]] = {}
        with self._lock:
            for figure, names in self._counts.items():
                for name, series in list(names.items()):
                    for old in [b for b in series if b < first]:
                        del series[old]
                    if not series:
                        del names[name]
                        continue
                    figures.setdefault(figure, {})[name] = [series.get(b, 0) for b in range(first, last + 1)]
        return json.dumps({"bucket": last, "figures": figures}, separators=(",", ":"))


def totals(encoded: Iterable[Any], now: float) -> Totals:
    """The sum of tallies (``encode``'s texts, from every instance's row) over the last hour's window at ``now``;
    a text that is not a tally counts nothing."""
    first, last = bucket_of(now) - BUCKETS + 1, bucket_of(now)
    summed: Totals = {}
    for raw in encoded:
        for figure, name, bucket, count in _series(raw):
            if first <= bucket <= last:
                names = summed.setdefault(figure, {})
                names[name] = names.get(name, 0) + count
    return summed


def _series(raw: Any) -> Iterable[tuple[str, str, int, int]]:
    try:
        document = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return
    if not isinstance(document, dict) or not isinstance(document.get("bucket"), int):
        return
    figures = document.get("figures")
    newest: int = document["bucket"]
    for figure, names in figures.items() if isinstance(figures, Mapping) else ():
        for name, counts in names.items() if isinstance(names, Mapping) else ():
            if isinstance(counts, list):
                start = newest - len(counts) + 1
                for offset, count in enumerate(counts):
                    if isinstance(count, int) and count:
                        yield str(figure), str(name), start + offset, count


# The process's tally: the telemetry counters add to it, the budget board carries it (shared.app wires both).
TALLY = OutcomeTally()
