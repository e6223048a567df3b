"""The benchmarks' count of full garbage collections (tools/collections_watch.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from tools.collections_watch import watch_full_collections


@pytest.fixture
def sink() -> Iterator[dict[str, Any]]:
    callbacks = list(gc.callbacks)
    counts: dict[str, Any] = {}
    watch_full_collections(counts)
    yield counts
    gc.callbacks[:] = callbacks


def test_a_full_collection_is_counted_with_its_pause(sink: dict[str, Any]) -> None:
    gc.collect(1)  # a younger generation's is not a full one
    assert sink["gc_full_collections"] == 0
    gc.collect()
    gc.collect()
    assert sink["gc_full_collections"] >= 2
    assert 0 <= sink["gc_full_pause_max_ms"] <= sink["gc_full_pause_ms"]
