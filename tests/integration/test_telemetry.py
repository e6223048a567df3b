"""Forwarding metrics reach OpenTelemetry: received, filtered, forwarded, deferred, poisoned, duplicates avoided,
the latency of each new record, and the queues' depths."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import NumberDataPoint

from shared.app.groups import observe_queues
from tests.support.forwarding import Stack, alert, rules
from tests.support.metrics import points
from tests.support.secret_scan import METRICS

pytestmark = pytest.mark.integration
READER = METRICS  # the session's meter provider (tests/support/secret_scan.py installs it)


def totals() -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    data = READER.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, NumberDataPoint):
                        found[(metric.name, tuple(sorted((point.attributes or {}).items())))] = point.value
    return found


def delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def test_each_outcome_is_counted(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rules(minimal_severity="Major"))
    before = totals()
    stack.handle(alert(), "m-1")
    stack.handle(alert(), "m-1")  # redelivery
    stack.handle(alert(), "m-2")  # duplicate enqueue
    stack.handle(alert(alert_id=2, severity="Minor"))
    stack.handle(b"not json")
    stack.servicenow.faults.configure({"outage_seconds": 60})
    stack.handle(alert(alert_id=3))
    counted = delta(before, totals())
    assert counted == {
        ("alerts.received", ()): 6,
        ("alerts.forwarded", (("action", "incident"), ("operation", "created"))): 1,
        ("alerts.forwarded", (("action", "incident"), ("operation", "work_note"))): 1,
        ("alerts.duplicates_avoided", (("action", "incident"),)): 2,
        ("alerts.filtered", ()): 1,
        ("alerts.poisoned", (("reason", "invalid_message"),)): 1,
        ("alerts.deferred", (("reason", "servicenow_unavailable"),)): 1,
    }


def test_the_latency_of_each_new_record_is_recorded_from_the_alerts_time(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rules(minimal_severity="Major"))
    before = points("alerts.latency").get((("action", "incident"),))
    count, total = (before.count, before.sum) if before else (0, 0.0)
    raised = int(time.time() * 1000) - 30_000
    stack.handle(alert(alert_id=4001, time=raised), "l-1")
    stack.handle(alert(alert_id=4001, time=raised), "l-1")  # the redelivery writes nothing: no second sample
    after = points("alerts.latency")[(("action", "incident"),)]
    assert after.count - count == 1
    assert 30 <= after.sum - total < 90


def test_the_group_notes_tick_reads_both_queues_depths_and_the_oldest_alerts_age(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(rules())
    stack.poison.create_queue()
    for queue, count in ((stack.queue, 2), (stack.poison, 1)):
        for _ in range(count):
            queue.send_message("e30=")
    observe_queues(stack.settings)
    depth = points("queue.depth")
    assert (depth[(("queue", "alerts"),)].value, depth[(("queue", "poison"),)].value) == (2, 1)
    assert 0 <= points("queue.oldest_age_seconds")[(("queue", "alerts"),)].value < 60
