"""Alert intake from a cloud source: the Resource Graph emulator served to the real azure-mgmt-resourcegraph SDK,
Azurite for the queue and the intake's state, and the forwarder for the records."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableServiceClient
from azure.mgmt.resourcegraph.models import QueryRequest
from azure.storage.queue import QueueClient

from shared.alerting.intake import Intake, IntakeState
from shared.app.sources import cloud_source
from shared.contract.parse import parse_message
from shared.defender.cloud import ALERTS, CloudSource, query
from shared.defender.model import ReadReport
from shared.defender.settings import CloudSourceSettings
from shared.settings import load_settings
from tests.support.forwarding import Stack, rules
from tests.support.metrics import points
from tests.support.settings import app_settings
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.stack.azurite import Azurite, free_port

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def source(graph: ResourceGraphEmulator, **options: Any) -> CloudSource:
    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    made = cloud_source(settings)
    for name, value in options.items():
        setattr(made, name, value)
    return made


def cloud_alert(
    graph: ResourceGraphEmulator,
    number: int,
    *,
    status: str = "New",
    started: datetime = NOW,
    severity: str = "High",
    sensor: str = "sensor-cloud-1",
) -> dict[str, Any]:
    name = f"00000000-0000-0000-0000-{number:012d}"
    return {
        "id": f"/subscriptions/{graph.subscription}/providers/Microsoft.IoTSecurity/locations/eastus/"
        f"deviceGroups/default/alerts/{name}",
        "name": name,
        "type": ALERTS,
        "properties": {
            "systemAlertId": name,
            "displayName": f"Unauthorized PLC Programming {number}",
            "description": "A device programmed the PLC.",
            "severity": severity,
            "status": status,
            "startTimeUtc": started.isoformat().replace("+00:00", "Z"),
            "endTimeUtc": started.isoformat().replace("+00:00", "Z"),
            "alertType": "IoT_PolicyViolation",
            "productComponentName": "POLICY_VIOLATION",
            "remediationSteps": ["Check the engineering station"],
            "extendedProperties": {
                "SensorId": sensor,
                "SourceDeviceAddress": "10.1.0.5",
                "DestinationDeviceAddress": "10.1.0.9",
            },
        },
    }


def cloud_sensor(graph: ResourceGraphEmulator, name: str, status: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{graph.subscription}/providers/Microsoft.IoTSecurity/locations/westeurope/sites/"
        f"plant/sensors/{name}",
        "name": name,
        "type": "microsoft.iotsecurity/locations/sites/sensors",
        "properties": {"sensorStatus": status, "connectivityTime": "2026-11-22T11:59:00Z", "zone": "Line 1"},
    }


@pytest.fixture
def intake_parts(azurite: Azurite) -> Callable[[], tuple[QueueClient, IntakeState]]:
    def make() -> tuple[QueueClient, IntakeState]:
        queue = QueueClient.from_connection_string(azurite.connection_string, f"intake{uuid.uuid4().hex[:12]}")
        queue.create_queue()
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        state = IntakeState(tables.get_table_client(f"intake{uuid.uuid4().hex[:12]}"))
        state.ensure()
        return queue, state

    return make


def drain(queue: QueueClient) -> list[dict[str, Any]]:
    found = []
    while batch := list(queue.receive_messages(messages_per_page=32, max_messages=32)):
        for message in batch:
            found.append(json.loads(base64.b64decode(message.content)))
            queue.delete_message(message)
    return found


# -- the emulator, through the real SDK -------------------------------------------------------------
def test_the_sdk_pages_through_with_skip_tokens(graph: ResourceGraphEmulator) -> None:
    graph.quota.per_window = 100
    graph.put(*(cloud_alert(graph, n, started=NOW + timedelta(seconds=n)) for n in range(2500)))
    report = ReadReport()
    alerts = list(source(graph).alerts_started_since(NOW, report))
    assert [a.id for a in alerts] == [f"00000000-0000-0000-0000-{n:012d}" for n in range(2500)]  # oldest first, once
    assert report.queries == 1 + 3  # the sensors once (an alert names its sensor only), then pages of 1,000


def test_a_spent_quota_is_waited_out_before_a_429(graph: ResourceGraphEmulator) -> None:
    graph.quota.per_window, graph.quota.window_seconds = 2, 1.0
    graph.put(*(cloud_alert(graph, n) for n in range(5)))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    reader = source(graph, page_size=1, sleep=sleep)
    assert len(list(reader.open_alerts(ReadReport()))) == 5
    assert waits and graph.stats["throttled"] == 0  # slowed down when told the window was spent, never refused


def test_a_429_is_retried_after_the_wait_it_asks_for(graph: ResourceGraphEmulator) -> None:
    graph.put(cloud_alert(graph, 1))
    graph.faults.configure({"fail_next": [{"status": 429, "retry_after": "1", "count": 1}]})
    assert len(list(source(graph).open_alerts(ReadReport()))) == 1
    assert graph.stats["faults"] == 1


def test_a_query_of_another_shape_is_refused(graph: ResourceGraphEmulator) -> None:
    client = source(graph).client
    with pytest.raises(HttpResponseError) as info:
        client.resources(QueryRequest(subscriptions=[graph.subscription], query="iotsecurityresources | take 5"))
    assert info.value.status_code == 400 and "InvalidQuery" in str(info.value)
    assert query(ALERTS, open_only=True).startswith("iotsecurityresources")  # the product's own shapes are served


# -- the intake ------------------------------------------------------------------------------------
def test_new_alerts_become_alert_messages_once(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    graph.put(*(cloud_alert(graph, n) for n in range(3)))
    first = Intake(source(graph), queue, state).run(NOW)
    assert first.queued == {"alert": 3, "alert_status": 0, "system": 0}
    messages = drain(queue)
    parsed = [parse_message(json.dumps(m).encode()) for m in messages]
    assert {p.alert_id for p in parsed} == {f"00000000-0000-0000-0000-{n:012d}" for n in range(3)}
    assert {(p.sensor.name, p.alert.severity.label, p.alert.engine) for p in parsed if p.alert} == {
        ("sensor-cloud-1", "Critical", "Policy Violation")
    }
    again = Intake(source(graph), queue, state).run(NOW + timedelta(minutes=1))
    assert again.queued == {"alert": 0, "alert_status": 0, "system": 0} and drain(queue) == []


def test_the_lag_is_the_age_of_the_newest_alert_taken_in_each_cycle(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    cloud = source(graph)
    graph.put(cloud_alert(graph, 1, started=NOW - timedelta(minutes=5)))
    Intake(cloud, queue, state).run(NOW)
    assert points("intake.lag_seconds")[(("source", cloud.name),)].value == 300
    Intake(cloud, queue, state).run(NOW + timedelta(minutes=1))  # nothing new: the lag grows
    assert points("intake.lag_seconds")[(("source", cloud.name),)].value == 360


def test_an_alert_closed_at_the_source_becomes_one_status_message(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    graph.put(cloud_alert(graph, 1), cloud_alert(graph, 2))
    Intake(source(graph), queue, state).run(NOW)
    drain(queue)
    graph.put(cloud_alert(graph, 1, status="Closed"))
    closing = Intake(source(graph), queue, state).run(NOW + timedelta(minutes=1))
    assert closing.queued["alert_status"] == 1
    (status,) = drain(queue)
    assert (status["kind"], status["alert"]["id"], status["sensor"]["name"]) == (
        "alert_status",
        "00000000-0000-0000-0000-000000000001",
        "sensor-cloud-1",
    )
    assert Intake(source(graph), queue, state).run(NOW + timedelta(minutes=2)).queued["alert_status"] == 0
    graph.put(cloud_alert(graph, 1, status="New"))  # raised again in Defender after it was closed
    again = Intake(source(graph), queue, state).run(NOW + timedelta(minutes=3))
    assert again.queued == {"alert": 1, "alert_status": 0, "system": 0}
    assert [m["alert"]["id"] for m in drain(queue)] == ["00000000-0000-0000-0000-000000000001"]


def test_an_alert_that_appears_late_behind_the_watermark_is_taken_in(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    graph.put(cloud_alert(graph, 2, started=NOW))
    Intake(source(graph), queue, state).run(NOW)
    drain(queue)
    # Raised before the newest one taken in, shown by Resource Graph only now, and closed already: only the
    # read that reaches back behind the watermark can see it.
    graph.put(cloud_alert(graph, 1, started=NOW - timedelta(minutes=3), status="Closed"))
    late = Intake(source(graph), queue, state, overlap=timedelta(minutes=10)).run(NOW + timedelta(minutes=1))
    assert late.queued == {"alert": 1, "alert_status": 1, "system": 0}


def test_the_default_reach_back_covers_the_hour_microsoft_says_data_can_lag(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    overlap = timedelta(minutes=load_settings(app_settings("UseDevelopmentStorage=true")).intake.overlap_minutes)
    graph.put(cloud_alert(graph, 2, started=NOW))
    Intake(source(graph), queue, state, overlap).run(NOW)
    drain(queue)
    # Opened and closed 50 minutes before the newest alert taken in, and shown only now: a 10-minute
    # reach-back never sees it.
    graph.put(cloud_alert(graph, 1, started=NOW - timedelta(minutes=50), status="Closed"))
    late = Intake(source(graph), queue, state, overlap).run(NOW + timedelta(minutes=1))
    assert late.queued == {"alert": 1, "alert_status": 1, "system": 0}


def test_sensors_going_offline_and_back_become_system_messages(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    graph.put(cloud_sensor(graph, "sensor-a", "Ok"), cloud_sensor(graph, "sensor-b", "Disconnected"))

    def at(moment: datetime) -> CloudSource:
        return source(graph, clock=lambda: moment)

    assert Intake(at(NOW), queue, state).run(NOW).queued["system"] == 1  # b was down already
    assert [(m["sensor"]["name"], m["system"]["status"]) for m in drain(queue)] == [("sensor-b", "offline")]
    graph.put(cloud_sensor(graph, "sensor-a", "Disconnected"), cloud_sensor(graph, "sensor-b", "Ok"))
    Intake(at(NOW + timedelta(minutes=1)), queue, state).run(NOW + timedelta(minutes=1))
    assert sorted((m["sensor"]["name"], m["system"]["status"]) for m in drain(queue)) == [
        ("sensor-a", "offline"),
        ("sensor-b", "online"),
    ]
    assert Intake(at(NOW + timedelta(minutes=2)), queue, state).run(NOW + timedelta(minutes=2)).queued["system"] == 0
    # Still "Ok", but no contact for more than 5 minutes: offline now, not when sensorStatus changes.
    later = NOW + timedelta(minutes=5, seconds=30)
    Intake(at(later), queue, state).run(later)
    assert [(m["sensor"]["name"], m["system"]["status"]) for m in drain(queue)] == [("sensor-b", "offline")]


def test_a_malformed_or_hostile_record_is_skipped_with_its_reason(
    graph: ResourceGraphEmulator, intake_parts: Callable[[], tuple[QueueClient, IntakeState]]
) -> None:
    queue, state = intake_parts()
    hostile = cloud_alert(graph, 2)
    hostile["properties"]["displayName"] = "x" * 5000  # longer than a title may be
    broken = cloud_alert(graph, 3, severity="Extreme")
    graph.put(cloud_alert(graph, 1), hostile, broken, {"id": "/x/alerts/4", "name": "4", "type": ALERTS})
    result = Intake(source(graph), queue, state).run(NOW)
    assert result.queued["alert"] == 1
    reasons = "\n".join(result.skipped)
    assert "severity 'Extreme' is not Informational, Low, Medium or High" in reasons
    assert "alert.title: 5000 characters, more than 1024" in reasons
    assert "alert 4: no name or no properties" in reasons


def test_alerts_become_records_once_and_a_closing_resolves_them(
    graph: ResourceGraphEmulator,
    intake_parts: Callable[[], tuple[QueueClient, IntakeState]],
    make_stack: Callable[..., Stack],
) -> None:
    """Through the forwarder: a new cloud alert → one incident; the same messages sent again (the state
    write of a crashed cycle lost) → no second record; the alert closed in the cloud → the record resolved."""
    stack = make_stack(rules())
    _, state = intake_parts()
    graph.put(cloud_alert(graph, 7))
    Intake(source(graph), stack.queue, state).run(NOW)
    _, fresh_state = intake_parts()  # as if the first cycle had died before writing what it took in
    Intake(source(graph), stack.queue, fresh_state).run(NOW)
    for message in drain(stack.queue):
        stack.handle(message)
    (incident,) = stack.records()
    assert (
        incident["short_description"] == "[Defender for IoT] Critical: Unauthorized PLC Programming 7 (sensor-cloud-1)"
    )
    graph.put(cloud_alert(graph, 7, status="Closed"))
    Intake(source(graph), stack.queue, state).run(NOW + timedelta(minutes=1))
    for message in drain(stack.queue):
        stack.handle(message)
    resolved = stack.servicenow.store.get("incident", incident["sys_id"])
    assert resolved["state"] == "6" and "close by Microsoft Defender for IoT (cloud)" in resolved["close_notes"]


def test_the_function_entry_point_reads_every_source_and_reports_one_that_failed(
    graph: ResourceGraphEmulator, azurite: Azurite
) -> None:
    from shared.app.intake import run_intake
    from shared.settings import load_settings
    from tests.support.settings import app_settings

    def cloud(name: str, url: str) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "cloud",
            "subscriptions": [graph.subscription],
            "resource_graph_url": url,
            "credential": "emulator",
            "ca_bundle": str(graph.ca_pem),
        }

    dead = f"https://localhost:{free_port()}"  # nothing listens there
    settings = load_settings(
        app_settings(
            azurite.connection_string,
            DEFENDER_SOURCES=json.dumps([cloud("down", dead), cloud("cloud", graph.url)]),
            ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}",
        )
    )
    QueueClient.from_connection_string(azurite.connection_string, settings.alerts_queue).create_queue()
    graph.put(cloud_alert(graph, 1))
    with pytest.raises(RuntimeError, match=r"alert intake failed for source\(s\) down"):
        run_intake(settings)
    queue = QueueClient.from_connection_string(azurite.connection_string, settings.alerts_queue)
    assert [m["alert"]["id"] for m in drain(queue)] == ["00000000-0000-0000-0000-000000000001"]  # the other ran
    # Each source's last cycle is recorded, for `status`: the failed one with its error, the other with its counts.
    from shared.alerting.intake import last_cycle
    from shared.app.intake import intake_state

    down, ran = last_cycle(intake_state(settings), "down"), last_cycle(intake_state(settings), "cloud")
    assert down is not None and down.error and down.queued == {}
    assert ran is not None and not ran.error and ran.queued["alert"] == 1


def test_a_refused_source_says_what_to_fix(
    graph: ResourceGraphEmulator, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.app.intake import run_intake
    from shared.settings import load_settings
    from tests.support.settings import app_settings

    cloud = {
        "name": "cloud",
        "kind": "cloud",
        "subscriptions": [graph.subscription],
        "resource_graph_url": graph.url,
        "credential": "emulator",
        "ca_bundle": str(graph.ca_pem),
    }
    settings = load_settings(
        app_settings(
            azurite.connection_string,
            DEFENDER_SOURCES=json.dumps([cloud]),
            ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}",
        )
    )
    graph.faults.configure({"fail_next": [{"status": 403, "count": 1}]})  # no read access in the subscription
    with caplog.at_level(logging.ERROR, logger="shared.app.intake"), pytest.raises(RuntimeError):
        run_intake(settings)
    assert "HTTP 403" in caplog.text and "needs read access to Defender for IoT" in caplog.text
