"""What an IRE payload costs on a real instance, and which CIs the payloads in flight hold.

A real instance's Identification and Reconciliation evaluates its rules per item, and ServiceNow's docs
name identification through ``sys_object_source_info`` (source name + native key) the fast path and rule
matching the slow one. The emulator answers in microseconds, so a benchmark at its speed says nothing
about a sync against a real CMDB. :class:`IreCost` is that time: per payload, plus per item by the path
that identified it, spent while the request holds one of the instance's transaction slots (the emulator's
``max_transactions``), so a saturated instance and the budget's answer to it show.

:class:`InFlight` records the CIs (source native keys) each payload in flight writes, and counts a payload
that writes one another payload in flight also writes: the sync's promise that it never does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IreCost:
    """Milliseconds: per payload, per item identified by its source native key, per item matched by rules
    (an item the source key does not find: a first sync's every CI). Zero: the emulator's own speed."""

    payload_ms: float = 0.0
    native_item_ms: float = 0.0
    rule_item_ms: float = 0.0

    def configure(self, spec: Mapping[str, Any]) -> None:
        for name in ("payload_ms", "native_item_ms", "rule_item_ms"):
            if name in spec:
                setattr(self, name, float(spec[name]))

    def as_dict(self) -> dict[str, float]:
        return {"payload_ms": self.payload_ms, "native_item_ms": self.native_item_ms, "rule_item_ms": self.rule_item_ms}

    def seconds(self, answers: Sequence[Mapping[str, Any]]) -> float:
        """The time the answered items cost: by the identification each answer reports."""
        if not (self.payload_ms or self.native_item_ms or self.rule_item_ms):
            return 0.0
        native = sum(1 for answer in answers if _by_source_key(answer))
        return (self.payload_ms + native * self.native_item_ms + (len(answers) - native) * self.rule_item_ms) / 1000

    def spend(self, answers: Sequence[Mapping[str, Any]]) -> None:
        seconds = self.seconds(answers)
        if seconds > 0:
            time.sleep(seconds)


def _by_source_key(answer: Mapping[str, Any]) -> bool:
    attempts = answer.get("identificationAttempts") or []
    return bool(attempts) and attempts[0].get("attemptResult") == "MATCHED" and not attempts[0].get("identifierName")


@dataclass
class InFlight:
    """The native keys the IRE payloads in flight write (an item with values to write; an item that only
    names a CI for a relation writes none), and the overlaps seen."""

    holding: dict[int, frozenset[str]] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    most: int = 0  # the most payloads in flight at once
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def enter(self, items: Sequence[Any]) -> int:
        keys = frozenset(_written_keys(items))
        with self.lock:
            for other in self.holding.values():
                self.overlaps.extend(sorted(keys & other))
            self._next += 1
            self.holding[self._next] = keys
            self.most = max(self.most, len(self.holding))
            return self._next

    def leave(self, ticket: int) -> None:
        with self.lock:
            self.holding.pop(ticket, None)

    def clear(self) -> None:
        with self.lock:
            self.holding.clear()
            self.overlaps.clear()
            self.most = 0


def _written_keys(items: Sequence[Any]) -> list[str]:
    keys = []
    for item in items:
        if not isinstance(item, dict) or not item.get("values"):
            continue
        info = item.get("sys_object_source_info")
        if isinstance(info, dict) and info.get("source_native_key"):
            keys.append(f"{info.get('source_name')}:{info['source_native_key']}")
    return keys
