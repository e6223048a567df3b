"""Closing the loop, both ways, against the emulators: an analyst resolving a record closes its alert at the
source once; an alert closed at the source resolves its record once and is not written back; neither
ping-pongs; an outage delays the write-back without losing or repeating it."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.alerting.ledger import Ledger
from shared.alerting.writeback import MAX_CYCLES, REFUSED, UNSUPPORTED, WritebackResult
from shared.app.intake import run_intake
from shared.app.writeback import run_writeback, writeback_state
from shared.platform.storage import table_service
from shared.platform.times import Deadline
from tests.conftest import ROOT
from tests.support.forwarding import Stack, rules
from tools.emulators.console import ConsoleEmulator, Inventory, generate, handle_alert, raise_alert
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.sensor import SensorEmulator
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration
TITLE = "Unauthorized PLC Programming"


@dataclass
class Loop:
    stack: Stack
    world: Inventory
    graph: ResourceGraphEmulator  # the cloud's view of the world (a sensor source's loop has none to use)
    alert_id: int

    def intake(self) -> list[str]:
        """One intake cycle, and the forwarder handling what it queued; the operations done."""
        run_intake(self.stack.settings)
        done = []
        while batch := list(self.stack.queue.receive_messages(max_messages=32)):
            for message in batch:
                result = self.stack.handle(base64.b64decode(message.content))
                done += [str(outcome.operation) for outcome in result.outcomes]
                self.stack.queue.delete_message(message)
        return done

    def writeback(self) -> list[WritebackResult]:
        return run_writeback(self.stack.settings)

    def record(self) -> dict[str, str]:
        (record,) = [r for r in self.stack.records("incident") if r.get("short_description") != "by hand"]
        return record

    def resolve_in_servicenow(self, close_code: str = "Solved (Permanently)") -> None:
        """What an analyst does in ServiceNow."""
        values = {"state": "6", "close_code": close_code, "close_notes": "Fixed by the analyst"}
        self.stack.servicenow.store.update("incident", self.record()["sys_id"], values, "analyst")

    def close_in_defender(self) -> None:
        handle_alert(self.world, "sensor-1", self.alert_id)
        self.graph.load_world(self.world)

    def record_writes(self) -> int:
        return self.stack.servicenow.stats["method:PATCH"]


@pytest.fixture
def make_loop(make_stack: Callable[..., Stack], graph: ResourceGraphEmulator) -> Callable[..., Loop]:
    def make(*, learn: bool = False, **action: Any) -> Loop:
        world = generate(5, seed=9)
        graph.quota.per_window = 1000
        raised = raise_alert(world, "sensor-1", TITLE, "Critical")
        graph.load_world(world)
        source = {
            "name": "cloud",
            "kind": "cloud",
            "subscriptions": [graph.subscription],
            "resource_graph_url": graph.url,
            "credential": "emulator",
            "ca_bundle": str(graph.ca_pem),
            "learn": learn,
        }
        document = rules("incident")
        document["actions"] = [{**a, **action} for a in document["actions"] if a["name"] == "incident"]
        stack = make_stack(
            document,
            DEFENDER_SOURCES=json.dumps([source]),
            ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}",
        )
        loop = Loop(stack, world, graph, raised["id"])
        assert loop.intake() == ["created"] and loop.record()["state"] == "1"
        return loop

    return make


def test_an_analyst_resolving_the_record_closes_the_alert_in_the_cloud_once(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop()
    loop.resolve_in_servicenow()
    (result,) = loop.writeback()
    assert (result.written, result.failed) == (1, [])
    (write,) = loop.graph.writes
    assert write[0] == "PATCH" and write[2] == "Closed" and "/alerts/" in write[1]
    assert loop.writeback()[0].skipped == {"written back already": 1}
    assert loop.graph.writes == [write]  # once
    # The intake then sees the alert closed: the forwarder resolves nothing again (no ping-pong).
    patches = loop.record_writes()
    assert loop.intake() == []
    assert loop.record_writes() == patches and loop.record()["close_notes"] == "Fixed by the analyst"
    assert loop.graph.writes == [write]


def test_the_write_back_query_breaks_order_ties_by_sys_id(make_loop: Callable[..., Loop]) -> None:
    """Rows updated in the same second tie on sys_updated_on; offset pages keep a stable order only with a unique
    last key, so the query ends with ORDERBYsys_id (the order among ties is not guaranteed)."""
    loop = make_loop()
    loop.resolve_in_servicenow()
    loop.writeback()
    queries = [q["sysparm_query"] for q in loop.stack.servicenow.queries if "sys_updated_on>=" in q["sysparm_query"]]
    assert queries and all(q.endswith("^ORDERBYsys_updated_on^ORDERBYsys_id") for q in queries)


def test_an_alert_closed_at_the_source_resolves_its_record_once_and_is_not_written_back(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.close_in_defender()
    assert loop.intake() == ["resolved"]
    assert loop.record()["state"] == "6"
    (result,) = loop.writeback()
    assert result.written == 0 and result.skipped == {"the alert was closed at its source first": 1}
    assert loop.graph.writes == []
    assert loop.intake() == [] and loop.graph.writes == []


def test_both_at_once_end_closed_with_at_most_one_write_each_way(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop()
    patches = loop.record_writes()
    loop.resolve_in_servicenow()
    loop.close_in_defender()
    loop.intake()  # the timer's order: intake, then write-back
    loop.writeback()
    assert loop.record()["state"] == "6" and loop.graph.writes == []
    assert loop.record()["close_notes"] == "Fixed by the analyst"  # the analyst's resolution stands as written
    assert loop.record_writes() - patches <= 1
    loop.intake()
    loop.writeback()
    assert loop.record_writes() - patches <= 1 and len(loop.graph.writes) <= 1


def test_a_write_back_during_a_resource_manager_outage_is_done_after_it_exactly_once(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.resolve_in_servicenow()
    loop.graph.faults.configure({"fail_next": [{"status": 503, "count": 100}]})
    with pytest.raises(RuntimeError, match="write-back failed for some records of default/incident"):
        loop.writeback()
    assert loop.graph.writes == []
    last = writeback_state(loop.stack.settings).last("default", "incident")
    assert last is not None and last.failed and "503" in last.failed[0]
    loop.graph.faults.clear()
    assert loop.writeback()[0].written == 1
    assert loop.writeback()[0].written == 0 and len(loop.graph.writes) == 1


def test_a_write_back_killed_between_the_close_and_its_mark_closes_the_alert_once(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    loop.resolve_in_servicenow()
    # The close takes effect at the source, its answer is held back: the process is killed meanwhile.
    loop.graph.faults.configure({"fail_next": [{"kind": "slow_response", "seconds": 60}]})
    script = "from shared.app.writeback import run_writeback\nfrom shared.settings import load_settings\n"
    script += "run_writeback(load_settings())"
    environ = {**loop.stack.environ, "PATH": os.environ.get("PATH", "")}
    environ["SERVICENOW_DEFAULT_PASSWORD"] = os.environ["SERVICENOW_DEFAULT_PASSWORD"]
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=environ)  # noqa: S603 - our script
    try:
        waited = time.monotonic() + 60
        while not loop.graph.writes and child.poll() is None and time.monotonic() < waited:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    (close,) = loop.graph.writes
    settings = loop.stack.settings
    ledger = Ledger(table_service(settings.alerts_storage).get_table_client(settings.forwarding.ledger_table))
    entry = ledger.by_correlation(loop.record()["correlation_id"])
    assert entry is not None and entry.written_back == "closing"  # killed after the close, before its mark
    loop.graph.faults.clear()
    (result,) = loop.writeback()
    assert (result.written, result.repeated, result.failed) == (1, 1, [])  # counted
    # The source says the alert is Closed (its status read, IotAlerts_Get): not closed a second time.
    assert loop.graph.writes == [close] and loop.graph.stats["alert_reads"] == 1
    assert loop.graph.get(close[1])["properties"]["status"] == "Closed"  # type: ignore[index]
    entry = ledger.by_correlation(loop.record()["correlation_id"])
    assert entry is not None and entry.written_back == "closed"
    assert loop.writeback()[0].skipped == {"written back already": 1} and len(loop.graph.writes) == 1
    assert loop.intake() == [] and len(loop.graph.writes) == 1  # the intake sees it closed: nothing echoes


def test_a_write_back_stopped_at_its_deadline_closes_the_rest_next_cycle_each_once(
    make_loop: Callable[..., Loop],
) -> None:
    loop = make_loop()
    raise_alert(loop.world, "sensor-2", "Illegal MODBUS Operation", "Major")
    loop.graph.load_world(loop.world)
    assert loop.intake() == ["created"]
    for record in loop.stack.records("incident"):
        values = {"state": "6", "close_code": "Solved (Permanently)", "close_notes": "Fixed by the analyst"}
        loop.stack.servicenow.store.update("incident", record["sys_id"], values, "analyst")
    # A deadline that passes once one alert is closed: the cycle stops before the second record.
    (first,) = run_writeback(loop.stack.settings, Deadline(1, clock=lambda: len(loop.graph.writes)))
    assert (first.written, first.stopped, first.failed) == (1, True, [])
    (second,) = loop.writeback()
    assert (second.written, second.stopped, second.skipped) == (1, False, {"written back already": 1})
    assert sorted(alert for _, alert, _ in loop.graph.writes) == sorted({alert for _, alert, _ in loop.graph.writes})
    assert len(loop.graph.writes) == 2  # each alert closed once


@pytest.mark.parametrize(("learn", "method"), [(True, "POST"), (False, "PATCH")])
def test_a_close_code_can_mean_learn_where_the_cloud_source_opts_in(
    make_loop: Callable[..., Loop], learn: bool, method: str
) -> None:
    loop = make_loop(learn=learn, learn_close_codes=["Not an issue (authorized traffic)"])
    loop.resolve_in_servicenow(close_code="Not an issue (authorized traffic)")
    assert loop.writeback()[0].written == 1
    # The learn action has no published contract: without the opt-in the alert is closed as documented.
    assert loop.graph.writes[0][0] == method


def test_write_back_can_be_turned_off_per_action(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop(write_back=False)
    loop.resolve_in_servicenow()
    assert loop.writeback() == [] and loop.graph.writes == []


def test_records_the_app_did_not_create_are_left_alone(
    make_loop: Callable[..., Loop], servicenow: ServiceNowEmulator
) -> None:
    loop = make_loop()
    for correlation in ("someone-else:42", "dfiot:alert:sensor-9:77:incident"):
        values = {"short_description": "by hand", "correlation_id": correlation, "state": "6"}
        values |= {"close_code": "Solved (Permanently)", "close_notes": "done"}
        servicenow.store.insert("incident", values, "analyst")
    (result,) = loop.writeback()
    # Only the product's prefix is asked for; one that merely looks like it is not in the ledger.
    assert result.records == 1 and result.skipped == {"not a record this app wrote": 1}
    assert loop.graph.writes == []


def test_an_alert_raised_again_after_its_record_was_closed_reopens_it(make_loop: Callable[..., Loop]) -> None:
    loop = make_loop(on_closed="reopen")
    loop.resolve_in_servicenow()
    loop.writeback()
    assert loop.intake() == []  # closed both ways
    with loop.world.lock:
        next(a for a in loop.world.alerts if a["id"] == loop.alert_id)["handled"] = False  # raised again
    loop.graph.load_world(loop.world)
    assert loop.intake() == ["reopened"] and loop.record()["state"] == "2"
    loop.resolve_in_servicenow()  # and the loop starts again: resolving it closes the alert once more
    assert loop.writeback()[0].written == 1 and len(loop.graph.writes) == 2


def test_a_sensors_alert_cannot_be_written_back_and_the_status_says_so(
    make_stack: Callable[..., Stack], graph: ResourceGraphEmulator, tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = generate(5, seed=9)
    sensor = SensorEmulator(world, token="Sensor-Token-3", tls_dir=tls_dir).start()
    try:
        source = {"name": "line-1", "kind": "sensor", "url": sensor.url, "ca_bundle": str(sensor.ca_pem)}
        monkeypatch.setenv("DEFENDER_SENSOR_LINE_1_TOKEN", "Sensor-Token-3")
        document = rules("incident")
        document["actions"] = [a for a in document["actions"] if a["name"] == "incident"]
        stack = make_stack(
            document, DEFENDER_SOURCES=json.dumps([source]), ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}"
        )
        sensor.raise_alert(TITLE, "Critical")
        loop = Loop(stack, world, graph, 1)
        assert loop.intake() == ["created"]
        loop.resolve_in_servicenow()
        (result,) = loop.writeback()
        assert result.written == 0 and result.failed == []
        assert result.skipped == {UNSUPPORTED: 1}
        last = writeback_state(stack.settings).last("default", "incident")
        assert last is not None and last.skipped == {UNSUPPORTED: 1}
    finally:
        sensor.stop()


def test_the_operator_sees_the_last_write_back_cycle(make_loop: Callable[..., Loop]) -> None:
    from click.testing import CliRunner

    from shared.cli.context import Operator
    from shared.cli.writeback import writeback

    loop = make_loop()
    runner = CliRunner()
    shown = runner.invoke(writeback, ["status"], obj=Operator(loop.stack.settings))
    assert shown.exit_code == 0 and "default/incident: no write-back cycle has run yet" in shown.output
    loop.resolve_in_servicenow()
    ran = runner.invoke(writeback, ["run"], obj=Operator(loop.stack.settings))
    assert ran.exit_code == 0 and "1 alert(s) closed at their source" in ran.output, ran.output
    shown = runner.invoke(writeback, ["status"], obj=Operator(loop.stack.settings))
    assert "default/incident: last cycle" in shown.output
    assert "1 resolved record(s) read; 1 alert(s) closed at their source" in shown.output


@pytest.fixture
def console_loop(
    make_stack: Callable[..., Stack], graph: ResourceGraphEmulator, tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Loop, ConsoleEmulator]]:
    """An alert of sensor-2 taken in from a console and recorded in ServiceNow, with write-back on."""
    world = generate(5, seed=9)
    console = ConsoleEmulator(world, token="Console-Token-5", tls_dir=tls_dir).start()
    try:
        source = {"name": "cm", "kind": "console", "url": console.url, "ca_bundle": str(console.ca_pem)}
        monkeypatch.setenv("DEFENDER_CONSOLE_CM_TOKEN", "Console-Token-5")
        document = rules("incident")
        document["actions"] = [
            {**a, "learn_close_codes": ["Not an issue"]} for a in document["actions"] if a["name"] == "incident"
        ]
        stack = make_stack(
            document, DEFENDER_SOURCES=json.dumps([source]), ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}"
        )
        raised = raise_alert(world, "sensor-2", TITLE, "Critical")
        loop = Loop(stack, world, graph, raised["id"])
        assert loop.intake() == ["created"]
        yield loop, console
    finally:
        console.stop()


def test_a_console_alert_is_handled_on_the_console_when_its_record_is_resolved(
    console_loop: tuple[Loop, ConsoleEmulator],
) -> None:
    loop, console = console_loop
    loop.resolve_in_servicenow(close_code="Not an issue")
    assert loop.writeback()[0].written == 1
    assert console.actions == [(f"2-{loop.world.alerts[0]['time']}", "handleAndLearn")]  # <sensorId>-<time>
    patches = loop.record_writes()
    assert loop.intake() == [] and loop.record_writes() == patches  # handled there: nothing resolved again
    assert loop.writeback()[0].written == 0 and len(console.actions) == 1


def test_a_console_refusal_is_recorded_with_its_reason_and_holds_nothing(
    console_loop: tuple[Loop, ConsoleEmulator],
) -> None:
    """The console knows no alert by the UUID (here: gone from it): 500, recorded as refused, never retried,
    and the watermark moves past it; the status says so, and says why a console's UUID may not be known."""
    from click.testing import CliRunner

    from shared.cli.context import Operator
    from shared.cli.writeback import writeback

    loop, console = console_loop
    loop.world.alerts.clear()
    loop.resolve_in_servicenow()
    (result,) = loop.writeback()  # no RuntimeError: nothing is left to retry
    assert result.written == 0 and result.failed == []
    (refusal,) = result.refused
    assert "no alert was found for this UUID" in refusal
    assert result.watermark == loop.record()["sys_updated_on"]
    (again,) = loop.writeback()
    assert again.refused == [] and again.skipped == {REFUSED: 1} and console.stats["alert_actions"] == 0
    shown = CliRunner().invoke(writeback, ["status"], obj=Operator(loop.stack.settings))
    assert "note: source 'cm' (console): the console's alert action takes a UUID" in shown.output
    assert "skipped 1: " + REFUSED in shown.output


def test_a_console_error_for_one_alert_is_retried_a_bounded_number_of_cycles(
    console_loop: tuple[Loop, ConsoleEmulator],
) -> None:
    loop, console = console_loop
    loop.resolve_in_servicenow()
    console.faults.configure({"fail_next": [{"status": 500, "count": MAX_CYCLES}]})
    for cycle in range(1, MAX_CYCLES):
        with pytest.raises(RuntimeError, match="write-back failed"):
            loop.writeback()
        last = writeback_state(loop.stack.settings).last("default", "incident")
        assert last is not None and f"(cycle {cycle} of {MAX_CYCLES})" in last.failed[0]
    (result,) = loop.writeback()
    assert result.failed == [] and f"gave up after {MAX_CYCLES} cycles" in result.refused[0]
    assert result.watermark == loop.record()["sys_updated_on"] and console.actions == []


def test_a_console_that_cannot_be_reached_holds_the_watermark_without_counting(
    console_loop: tuple[Loop, ConsoleEmulator],
) -> None:
    loop, console = console_loop
    loop.resolve_in_servicenow()
    console.faults.configure({"fail_next": [{"status": 429, "count": 100}]})
    for _ in range(MAX_CYCLES + 1):
        with pytest.raises(RuntimeError, match="write-back failed"):
            loop.writeback()
    console.faults.clear()
    assert loop.writeback()[0].written == 1  # the throttle was the console's, not the alert's: nothing given up
