"""Fault injection: added latency, error rates per status, queued failures, outages, resets, hangs.

Set at start (CLI flags / constructor) or at run time through ``POST /_emulator/faults``. Random
faults use a seeded generator so a benchmark run is reproducible.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """What to do to one request instead of serving it."""

    # "status" | "reset" (no response) | "hang" (delay, then serve) | "slow_response" (serve, then delay)
    # | "pass" (serve normally: a queue of faults can start after N good requests)
    kind: str
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0


@dataclass
class FaultPlan:
    clock: Callable[[], float]
    latency_ms: float = 0.0
    error_rates: dict[int, float] = field(default_factory=dict)
    retry_after: str | None = None
    queued: list[Fault] = field(default_factory=list)
    outage_until: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    lock: threading.Lock = field(default_factory=threading.Lock)
    injected: int = 0

    def configure(self, spec: dict[str, Any]) -> None:
        """Apply a JSON fault spec; absent keys leave the current setting unchanged."""
        with self.lock:
            if "latency_ms" in spec:
                self.latency_ms = float(spec["latency_ms"])
            if "error_rates" in spec:
                self.error_rates = {int(k): float(v) for k, v in spec["error_rates"].items()}
            if "retry_after" in spec:
                self.retry_after = None if spec["retry_after"] is None else str(spec["retry_after"])
            if "seed" in spec:
                self.rng = random.Random(int(spec["seed"]))
            if "outage_seconds" in spec:
                self.outage_until = self.clock() + float(spec["outage_seconds"])
            for item in spec.get("fail_next", []):
                fault = Fault(
                    kind=str(item.get("kind", "status")),
                    status=int(item.get("status", 503)),
                    retry_after=None if item.get("retry_after") is None else str(item["retry_after"]),
                    seconds=float(item.get("seconds", 0)),
                )
                self.queued.extend([fault] * int(item.get("count", 1)))

    def take(self) -> Fault | None:
        """The fault for this request (None: serve it), after the added latency every request pays."""
        fault = self.next_fault()
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        return fault

    def admin(self, method: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The emulators' ``/_emulator/faults`` endpoint: POST configures, DELETE clears, any method reports."""
        if method == "POST":
            self.configure(spec)
        elif method == "DELETE":
            self.clear()
        return self.as_json()

    def clear(self) -> None:
        with self.lock:
            self.latency_ms, self.error_rates, self.retry_after = 0.0, {}, None
            self.queued.clear()
            self.outage_until = 0.0

    def next_fault(self) -> Fault | None:
        with self.lock:
            fault = None
            if self.clock() < self.outage_until:
                fault = Fault("status", 503, retry_after=self.retry_after)
            elif self.queued:
                fault = self.queued.pop(0)
                if fault.kind == "pass":  # let this request through: faults can start after N requests
                    return None
            else:
                roll = self.rng.random()
                for status, rate in sorted(self.error_rates.items()):
                    if roll < rate:
                        fault = Fault("status", status, retry_after=self.retry_after)
                        break
                    roll -= rate
            if fault is not None:
                self.injected += 1
            return fault

    def as_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "latency_ms": self.latency_ms,
                "error_rates": {str(k): v for k, v in self.error_rates.items()},
                "retry_after": self.retry_after,
                "queued": len(self.queued),
                "outage_remaining_seconds": max(0.0, self.outage_until - self.clock()),
                "injected": self.injected,
            }
