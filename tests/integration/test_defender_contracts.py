"""The sensor and console emulators keep to Microsoft's published API examples (tests/fixtures/sensor,
console): over HTTPS, through the product's own clients, every document they answer has only keys a
published example shows, and only values a published example or field table shows where values are a
vocabulary. An emulator that adds one fails here, before a test passes against something no real sensor or
console sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.defender.console import ConsoleClient
from shared.defender.sensor import SensorSource
from shared.defender.settings import SensorSourceSettings
from shared.http.settings import HttpSettings
from shared.http.transport import HttpRequest
from shared.platform.secrets import Secret
from tests.support.fixtures import load, unpublished, values_at
from tools.emulators.console import ConsoleEmulator, Inventory, generate, raise_alert
from tools.emulators.sensor import SensorEmulator

pytestmark = pytest.mark.integration
HTTP = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=2, max_attempts=2)
ALERT_VOCABULARY = ("severity", "engine")
# Value lists of the sensor reference's field tables (sensor-inventory-apis.md, as cited in the fixtures):
# "Supported type values", protocol names the world uses, and the CVE table's attackVector values.
DEVICE_TYPES = {
    "Engineering Station", "PLC", "Historian", "HMI", "Domain Controller", "DB Server", "Wireless Access Point",
    "Router", "Switch", "Workstation", "Server", "IP Camera", "Printer", "Multicast/Broadcast", "Internet",
    "Firewall", "Terminal Station", "VPN Gateway", "Group", "IED", "DCS Controller", "RTU", "NTP Server", "Storage",
    "Unknown",
}  # fmt: skip
PROTOCOL_NAMES = {"MODBUS", "DNP3", "Siemens S7", "BACNet", "EtherNet/IP", "OPC UA", "IEC-60870", "Profinet Real-Time"}
ATTACK_VECTORS = {"Network", "Adjacent Network", "Local", "Physical"}


@pytest.fixture
def world() -> Inventory:
    inventory = generate(30, seed=12)
    for severity in ("Warning", "Minor", "Major", "Critical"):
        raise_alert(inventory, "sensor-1", f"A {severity} alert", severity, engine="Protocol Violation")
    raise_alert(inventory, "sensor-2", "Handled alert", "Major", handled=True, engine="Anomaly")
    return inventory


@pytest.fixture
def sensor(world: Inventory, tls_dir: Path) -> Iterator[SensorSource]:
    emulator = SensorEmulator(world, sensor="sensor-1", token="Sensor-Token-1", tls_dir=tls_dir).start()
    settings = SensorSourceSettings("line-1", emulator.url, "t", emulator.ca_pem)
    yield SensorSource.connect(settings, lambda: Secret("Sensor-Token-1"), HTTP)
    emulator.stop()


@pytest.fixture
def console(world: Inventory, tls_dir: Path) -> Iterator[tuple[ConsoleClient, ConsoleEmulator]]:
    emulator = ConsoleEmulator(world, token="Console-Token-1", tls_dir=tls_dir).start()
    yield (
        ConsoleClient.connect(emulator.url, lambda: Secret("Console-Token-1"), HTTP, ca_bundle=emulator.ca_pem),
        emulator,
    )
    emulator.stop()


def published_alerts() -> list[Any]:
    """Every published alert, sensor's and console's: their field tables list the same severities and engines."""
    return [
        d for area in ("sensor", "console") for name in ("alerts-v1", "alerts-v2") for d in load(area, name).documents
    ]


def contract(emulated: list[Any], published: list[Any], vocabularies: dict[str, set[Any]] | None = None) -> list[str]:
    """Keys no published document shows, and values outside a vocabulary (its published values)."""
    assert emulated, "the emulator answered nothing to compare"
    problems = unpublished(emulated, published)
    for path, allowed in (vocabularies or {}).items():
        problems += [f"{path} = {v!r}" for v in sorted(values_at(emulated, path) - allowed, key=repr)]
    return problems


def alert_values() -> dict[str, set[Any]]:
    return {path: values_at(published_alerts(), path) for path in ALERT_VOCABULARY}


def test_the_sensors_v1_alerts_carry_only_what_v1_publishes(sensor: SensorSource) -> None:
    emulated = sensor._get("/api/v1/alerts")
    assert contract(emulated, load("sensor", "alerts-v1").documents, alert_values()) == []


def test_the_sensors_v2_alerts_add_the_addresses_and_steps_and_no_sensor_names(sensor: SensorSource) -> None:
    emulated = sensor._get("/api/v2/alerts")
    published = load("sensor", "alerts-v1").documents + load("sensor", "alerts-v2").documents
    assert contract(emulated, published, alert_values()) == []
    assert all(isinstance(a["remediationSteps"], list) for a in emulated)


def test_the_sensors_inventory_keeps_to_the_reference(sensor: SensorSource) -> None:
    devices = sensor._get("/api/v1/devices")
    vocabularies = {"type": DEVICE_TYPES, "protocols[].name": PROTOCOL_NAMES}
    assert contract(devices, load("sensor", "devices").documents, vocabularies) == []
    assert contract(sensor._get("/api/v1/devices/connections"), load("sensor", "connections").documents) == []
    cves = load("sensor", "cves").documents
    vectors = {"attackVector": values_at(cves, "attackVector") | ATTACK_VECTORS}
    assert contract(sensor._get("/api/v1/devices/cves"), cves, vectors) == []


def test_the_consoles_v1_alerts_carry_no_names_or_addresses(console: tuple[ConsoleClient, ConsoleEmulator]) -> None:
    reader, _ = console
    emulated = reader._get("/alerts", api="/external/v1")
    assert contract(emulated, load("console", "alerts-v1").documents, alert_values()) == []
    assert all(isinstance(a["id"], int) for a in emulated)


def test_the_consoles_v2_alerts_add_them_and_filter_as_documented(
    console: tuple[ConsoleClient, ConsoleEmulator],
) -> None:
    reader, _ = console
    emulated = reader._get("/alerts", api="/external/v2")
    published = load("console", "alerts-v1").documents + load("console", "alerts-v2").documents
    assert contract(emulated, published, alert_values()) == []
    assert {a["sensorName"] for a in emulated} == {"sensor-1", "sensor-2"}
    assert [a["title"] for a in reader._get("/alerts", {"state": "handled"}, api="/external/v2")] == ["Handled alert"]
    assert len(reader._get("/alerts", {"state": "anything"}, api="/external/v2")) == 5  # other values are ignored
    assert {a["sensorId"] for a in reader._get("/alerts", {"sensorId": "2"}, api="/external/v2")} == {2}


def test_the_consoles_alert_action_answers_as_published(console: tuple[ConsoleClient, ConsoleEmulator]) -> None:
    reader, emulator = console
    first = reader._get("/alerts", api="/external/v2")[0]
    uuid = f"{first['sensorId']}-{first['time']}"

    def put(reference: str, body: Any) -> tuple[int, Any]:
        request = HttpRequest("PUT", f"{emulator.url}/external/v1/alerts/{reference}", body=json.dumps(body).encode())
        response = reader.pipeline.send(request)
        return response.status_code, response.json()

    answers = [
        put(uuid, {"action": "handle"}),
        put(uuid, {"action": "handle"}),
        put(uuid, {"action": "handleAndLearn"}),
        put(uuid, {"action": "handleAndLearn"}),
        put(uuid, {"action": "handle"}),
        put(uuid, {"action": "close"}),
        put("9-1", {"action": "handle"}),
    ]
    published = load("console", "alert-put").documents
    assert [(status, body) for status, body in answers if body not in published] == []
    assert all((status == 200) == ("content" in body) and status in (200, 500) for status, body in answers)
    assert [next(iter(body.values())) for _, body in answers] == [
        "Alert update request finished successfully",
        "Alert was already handled",
        "Alert was already handled. Handle and learn was performed on the alert",
        "Alert was already handled and learned",
        "Alert was already handled and learned. Ignored handle request",
        "Invalid action",
        "Couldn't execute request because no alert was found for this UUID",
    ]
