"""The Resource Graph emulator keeps to what Microsoft publishes (tests/fixtures/cloud): through the real SDK,
every document it serves carries only keys, and at the named fields only values, that a published example
shows; and it refuses the alert statuses Azure refuses."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

import pytest

from shared.app.sources import cloud_source
from shared.defender.cloud import ALERTS, DEVICES, SITE_SENSORS, VULNERABILITIES, query
from shared.defender.model import ReadReport
from shared.defender.settings import CloudSourceSettings
from tests.support.fixtures import load, unpublished
from tools.emulators.console import generate, handle_alert, raise_alert
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.resourcegraph.world import documents

pytestmark = pytest.mark.integration

CONTRACTS = {
    ALERTS: (("alerts", "alerts-ot"), ("properties.status", "properties.severity", "properties.productComponentName")),
    DEVICES: (
        ("devices", "devices-model"),
        ("properties.deviceDataSource", "properties.deviceStatus", "properties.nics[].macCertainty"),
    ),
    SITE_SENSORS: (("sensors",), ("properties.sensorStatus", "properties.sensorType")),
    VULNERABILITIES: (("vulnerabilities",), ("properties.severityScore",)),
}


def served(graph: ResourceGraphEmulator, resource_type: str) -> list[dict[str, Any]]:
    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    return list(cloud_source(settings).rows(query(resource_type), ReadReport()))


@pytest.mark.parametrize("resource_type", sorted(CONTRACTS))
def test_the_emulator_serves_only_what_microsoft_publishes(graph: ResourceGraphEmulator, resource_type: str) -> None:
    world = generate(60, seed=3)
    graph.quota.per_window = 1000
    for engine in ("Malware", "Anomaly", "Protocol Violation", "Policy Violation", "Operational"):
        raise_alert(world, "sensor-1", f"{engine} alert", "Critical", engine=engine)
    handle_alert(world, "sensor-1", 1)
    world.sensors[1]["u_connection_state"] = "DISCONNECTED"
    world.sensors[2]["u_is_in_learning_mode"] = True
    graph.load_world(world)
    graph.put(*(d for d in documents(world, graph.subscription) if d["type"] == ALERTS))
    rows = served(graph, resource_type)
    assert rows, "the world has documents of this type"
    names, vocabularies = CONTRACTS[resource_type]
    published = [d for name in names for d in load("cloud", name).documents]
    assert unpublished(rows, published, vocabularies) == []


def test_the_emulator_refuses_an_alert_status_azure_does_not_have(graph: ResourceGraphEmulator) -> None:
    world = generate(3, seed=4)
    raise_alert(world, "sensor-1", "Unauthorized PLC Programming", "Critical")
    (alert,) = [d for d in documents(world, graph.subscription) if d["type"] == ALERTS]
    graph.put(alert)
    context = ssl.create_default_context(cafile=str(graph.ca_pem))
    host, port = graph.url.removeprefix("https://").split(":")
    answers = {}
    for status in ("Active", "InProgress"):
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
        body = json.dumps({"properties": {"status": status}})
        headers = {"Authorization": "Bearer t", "Content-Type": "application/json"}
        connection.request("PATCH", f"{alert['id']}?api-version=2021-07-01-preview", body, headers)
        answers[status] = connection.getresponse().status
        connection.close()
    assert answers == {"Active": 400, "InProgress": 200}
