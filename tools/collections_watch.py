"""How long the cyclic garbage collector's full collections stop a process's threads, and keeping a heap out
of them.

A full collection walks every tracked object while it holds the interpreter lock, so its pause grows with the
heap: a benchmark that measures one request's latency beside a large heap (the ServiceNow emulator's store,
a sync's rows) counts these pauses with it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import MutableMapping
from typing import Any


def watch_full_collections(sink: MutableMapping[str, Any]) -> None:
    """Keep ``gc_full_collections``, ``gc_full_pause_ms`` (all of them) and ``gc_full_pause_max_ms`` in ``sink``.

    No lock: a collection runs in whichever thread allocated, perhaps one that holds the lock ``sink``'s owner
    takes. Only this callback writes these keys, and collections never overlap."""
    started = [0.0]
    for key in ("gc_full_collections", "gc_full_pause_ms", "gc_full_pause_max_ms"):
        sink.setdefault(key, 0)

    def observe(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = round((time.perf_counter() - started[0]) * 1000)
        sink["gc_full_collections"] = sink.get("gc_full_collections", 0) + 1
        sink["gc_full_pause_ms"] = sink.get("gc_full_pause_ms", 0) + pause
        sink["gc_full_pause_max_ms"] = max(sink.get("gc_full_pause_max_ms", 0), pause)

    gc.callbacks.append(observe)


def freeze_heap(every: float) -> None:
    """``gc.freeze()`` every ``every`` seconds: what was allocated by then stays out of the collector's walks."""

    def freeze() -> None:
        while True:
            time.sleep(every)
            gc.freeze()

    threading.Thread(target=freeze, name="gc-freeze", daemon=True).start()
