"""How full the alerts and poison queues are, as gauges: the host poisons messages itself (maxDequeueCount,
undecodable bodies) and only logs it, so the poison queue's depth is the one measure that sees every poisoned
message. Cheap enough for a 30-second timer: one Get Queue Properties per queue and one peek."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from azure.storage.queue import QueueClient

from shared.platform.telemetry import QUEUE_DEPTH, QUEUE_OLDEST_AGE


def observe(
    alerts: QueueClient, poison: QueueClient, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> dict[str, float]:
    """Sets the gauges; returns what was set (queue.depth per queue, and the alerts queue's oldest age)."""
    depths = {
        name: float(queue.get_queue_properties().approximate_message_count or 0)
        for name, queue in (("alerts", alerts), ("poison", poison))
    }
    for name, depth in depths.items():
        QUEUE_DEPTH.set(depth, {"queue": name})
    oldest = next(iter(alerts.peek_messages(max_messages=1)), None)
    inserted = oldest.inserted_on if oldest is not None else None
    age = max((clock() - inserted).total_seconds(), 0.0) if inserted is not None else 0.0
    QUEUE_OLDEST_AGE.set(age, {"queue": "alerts"})
    return {**depths, "oldest_age_seconds": age}
