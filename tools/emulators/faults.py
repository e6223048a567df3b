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
    # Per request, by chance: a status (503, 429, ...) or a kind ("reset", "hang", "slow_response", which
    # last ``fault_seconds``).
    error_rates: dict[int | str, float] = field(default_factory=dict)
    fault_seconds: float = 0.0
    retry_after: str | None = None
    queued: list[Fault] = field(default_factory=list)
    outage_until: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # fault schedule  # nosec B311
    lock: threading.Lock = field(default_factory=threading.Lock)
    injected: int = 0

    def configure(self, spec: dict[str, Any]) -> None:
        """Apply a JSON fault spec; absent keys leave the current setting unchanged."""
        with self.lock:
            if "latency_ms" in spec:
                self.latency_ms = float(spec["latency_ms"])
            if "error_rates" in spec:
                self.error_rates = {_rate_key(k): float(v) for k, v in spec["error_rates"].items()}
            if "fault_seconds" in spec:
                self.fault_seconds = float(spec["fault_seconds"])
            if "retry_after" in spec:
                self.retry_after = None if spec["retry_after"] is None else str(spec["retry_after"])
            if "seed" in spec:
                self.rng = random.Random(int(spec["seed"]))  # fault schedule  # nosec B311
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
            self.latency_ms, self.error_rates, self.retry_after, self.fault_seconds = 0.0, {}, None, 0.0
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
                for key, rate in sorted(self.error_rates.items(), key=lambda item: str(item[0])):
                    if roll < rate:
                        if isinstance(key, int):
                            fault = Fault("status", key, retry_after=self.retry_after)
                        else:
                            fault = Fault(key, seconds=self.fault_seconds)
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


def _rate_key(key: object) -> int | str:
    text = str(key)
    if text.isdigit():
        return int(text)
    if text not in ("reset", "hang", "slow_response"):
        raise ValueError(f"error_rates: {text!r} is neither an HTTP status nor reset, hang or slow_response")
    return text
