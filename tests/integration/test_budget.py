"""The ServiceNow budget against the emulator's limits, over real sockets and Azurite.

A saturated instance (its API semaphore full: 429 without Retry-After) and an hourly rate-limit rule (429
with X-RateLimit-Reset); one process finding the limit pauses another through the shared board.
"""

from __future__ import annotations

import json
import os
import subprocess  # the second process is this interpreter on the product's own entry point  # nosec B404
import sys
import threading
import uuid
from collections.abc import Callable

import pytest
import requests

from shared.alerting.forwarder import Result
from tests.conftest import ROOT
from tests.support.forwarding import Stack, alert, body
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration

SECOND_PROCESS = """
import sys
from shared.app.forwarding import handle_queue_message
result = handle_queue_message(sys.stdin.buffer.read(), message_id="second-process")
print(result.status, "|", result.reason)
"""


def limits(stack: Stack, **spec: int | None) -> None:
    url = f"{stack.servicenow.url}/_emulator/limits"
    requests.post(url, json=spec, timeout=10, verify=str(stack.servicenow.ca_pem)).raise_for_status()


def test_a_rate_limit_one_process_meets_pauses_another_without_a_request(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    limits(stack, rate_limit_per_hour=3)
    try:
        results = [stack.handle(alert(alert_id=i)) for i in range(4)]
        assert [r.status for r in results] == ["forwarded"] * 3 + ["deferred"]
        assert results[3].kind == "rate_limited"
        before = stack.servicenow.stats["requests"]
        second = subprocess.run(  # noqa: S603 - this interpreter, our own script  # nosec B603
            [sys.executable, "-c", SECOND_PROCESS],
            input=body(alert(alert_id=99)),
            env={**os.environ, **stack.environ},
            cwd=ROOT,
            capture_output=True,
            timeout=120,
            check=True,
        )
        status, reason = second.stdout.decode().strip().splitlines()[-1].split(" | ", 1)
        assert status == "deferred" and "paused until the rate-limit window resets" in reason
        assert stack.servicenow.stats["requests"] == before  # it never asked ServiceNow
    finally:
        limits(stack, rate_limit_per_hour=None)


def test_a_saturated_instance_is_met_with_less_concurrency_and_no_alert_is_lost(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(SERVICENOW_RETRY_BUDGET_SECONDS="20")
    stack.servicenow.faults.configure({"latency_ms": 60})
    limits(stack, max_transactions=2)
    results: list[Result] = []
    lock = threading.Lock()
    numbers = iter(range(40))

    def worker() -> None:
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            result = stack.handle(alert(alert_id=number), f"m-{number}")
            with lock:
                results.append(result)

    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        limits(stack, max_transactions=None)
        stack.servicenow.faults.clear()
    for message_id, deferred in stack.deferred(wait=1):
        results.append(stack.handle(deferred, message_id))  # what the queue brings back
    budget = next(iter(stack.forwarder.clients.values())).pipeline.policies[1].budget  # type: ignore[attr-defined]
    assert budget.stats.rejections >= 1 and budget.stats.decreases >= 1 and budget.limit < 16
    assert sorted(int(r["correlation_id"].split(":")[3]) for r in stack.records()) == list(range(40))
    assert stack.poisoned() == []


def test_instances_sharing_a_board_take_every_place_once(azurite: Azurite) -> None:
    """The board ranks the live instances, so their shares of the concurrency add up to it exactly."""
    from azure.data.tables import TableClient

    from shared.platform.budget_board import TableBudgetBoard
    from shared.servicenow.budget import Budget

    table = TableClient.from_connection_string(azurite.connection_string, f"board{uuid.uuid4().hex[:10]}")
    boards = [TableBudgetBoard(table, instance_id=f"host{i:02d}") for i in range(20)]
    for board in boards:
        board.sync({})
    views = [board.sync({}) for board in boards]
    assert {view.instances for view in views} == {20}
    assert sorted(view.rank for view in views) == list(range(20))
    shares = []
    for view in views:
        budget = Budget("sn", 16, board=None)
        budget.view = view
        shares.append(budget.share)
    assert sum(shares) == 16 and shares.count(0) == 4


def test_the_budgets_of_two_connections_in_one_process_are_one_instance_on_the_board(azurite: Azurite) -> None:
    """One row per process: with a row per connection, two connections would count each instance twice and
    halve every share."""
    from shared.app import board_for, budget_for
    from shared.settings import load_settings
    from tests.support.settings import app_settings

    connections = [
        {"name": name, "instance_url": f"https://{name}.service-now.com", "auth": "basic", "username": "u"}
        for name in ("first", "second")
    ]
    settings = load_settings(app_settings(azurite.connection_string, SERVICENOW_CONNECTIONS=json.dumps(connections)))
    first, second = (budget_for(settings, c) for c in settings.connections)
    board = board_for(settings)
    assert first.board is board and second.board is board
    board.sync({"first": 3})  # as each budget syncs its own connection's count
    view = board.sync({"second": 4})
    assert view.instances == 1
    assert view.used_this_hour == {"first": 3, "second": 4}


def test_a_connections_count_from_the_last_hour_is_not_carried_into_this_one(azurite: Azurite) -> None:
    from azure.data.tables import TableClient

    from shared.platform.budget_board import TableBudgetBoard

    table = TableClient.from_connection_string(azurite.connection_string, f"board{uuid.uuid4().hex[:10]}")
    moment = [3600.0 * 500_000 - 1]  # a second before an hour turns
    board = TableBudgetBoard(table, "solo", clock=lambda: moment[0])
    board.sync({"idle": 7})
    moment[0] += 6
    view = board.sync({"busy": 1})  # the idle connection's budget has not synced since the hour turned
    assert view.used_this_hour == {"idle": 0, "busy": 1}


def test_an_instance_stopped_this_hour_still_counts_against_the_hourly_limit(azurite: Azurite) -> None:
    """Scale-in: the requests a stopped instance made this hour were made; the live ones must not spend them
    again (ServiceNow's rate limit counts per hour, not per instance)."""
    from azure.data.tables import TableClient

    from shared.platform.budget_board import LIVE_SECONDS, TableBudgetBoard

    table = TableClient.from_connection_string(azurite.connection_string, f"board{uuid.uuid4().hex[:10]}")
    moment = [3600.0 * 500_000 + 60]
    TableBudgetBoard(table, "gone", clock=lambda: moment[0]).sync({"sn": 40})
    moment[0] += LIVE_SECONDS + 1  # its heartbeat too old: no longer a live instance, still this hour
    view = TableBudgetBoard(table, "left", clock=lambda: moment[0]).sync({"sn": 2})
    assert view.instances == 1  # the share goes to the live one
    assert view.used_this_hour == {"sn": 42}  # and the hour's count keeps what the stopped one spent
