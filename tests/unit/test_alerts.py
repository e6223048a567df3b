"""The alert message contract: valid envelopes parse; anything else is refused naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.contract.fields import InvalidMessageError
from shared.contract.model import SCHEMA, Severity
from shared.contract.parse import parse_message

DEFENDER_ALERT = {
    "id": 1234,
    "time": 1763762400000,
    "title": "Illegal MODBUS Operation (Exception Raised by Master)",
    "message": "A MODBUS master sent an illegal function code.\nCheck the PLC.",
    "severity": "Major",
    "engine": "Protocol Violation",
    "sourceDevice": 12,
    "destinationDevice": 0,
    "sourceDeviceAddress": "10.1.0.5",
    "destinationDeviceAddress": "10.1.0.9",
    "remediationSteps": ["Check the master", "Update the PLC"],
    "additionalinformation": None,
}


def envelope(**overrides: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "sensor-1", "id": 7, "site": "Plant A", "zone": "Line 1"},
        "alert": dict(DEFENDER_ALERT),
        **overrides,
    }


def parse(document: Any) -> Any:
    return parse_message(json.dumps(document).encode())


def test_a_defender_alert_parses_with_its_fields() -> None:
    message = parse(envelope(protocol="MODBUS", extraField={"kept": True}))
    alert = message.alert
    assert (message.kind, message.sensor.name, message.sensor.id, message.protocol) == (
        "alert",
        "sensor-1",
        "7",
        "MODBUS",
    )
    assert (alert.id, alert.severity, alert.engine) == ("1234", Severity.MAJOR, "Protocol Violation")
    assert alert.time == datetime(2025, 11, 21, 22, 0, tzinfo=UTC)
    assert alert.remediation_steps == ("Check the master", "Update the PLC")
    assert message.raw["extraField"] == {"kept": True}  # unknown fields are kept


def test_field_names_match_case_insensitively() -> None:
    alert = {k.upper(): v for k, v in DEFENDER_ALERT.items()}
    message = parse({"SCHEMA": SCHEMA, "Kind": "alert", "SENSOR": {"NAME": "s"}, "Alert": alert})
    assert message.alert.title.startswith("Illegal MODBUS")
    assert message.alert.source_address == "10.1.0.5"


def test_console_fields_and_engine_spelling() -> None:
    alert = {
        **DEFENDER_ALERT,
        "id": "1-1594550943000",
        "engine": "PROTOCOL_VIOLATION",
        "remediationSteps": "Do X",
        "sensorName": "console-sensor",
        "siteName": "Site B",
        "zoneName": "Zone 3",
        "handled": False,
    }
    message = parse({"schema": SCHEMA, "kind": "alert", "alert": alert})
    assert (message.sensor.name, message.sensor.site, message.sensor.zone) == ("console-sensor", "Site B", "Zone 3")
    assert (message.alert.id, message.alert.engine, message.alert.remediation_steps) == (
        "1-1594550943000",
        "Protocol Violation",
        ("Do X",),
    )


def test_system_and_status_kinds() -> None:
    system = parse(
        {
            "schema": SCHEMA,
            "kind": "system",
            "sensor": {"name": "s"},
            "system": {"status": "offline", "time": 1763762400000},
        }
    )
    assert system.system.status == "offline" and system.alert is None
    status = parse(
        {
            "schema": SCHEMA,
            "kind": "alert_status",
            "sensor": {"name": "s"},
            "alert": {"id": 1234, "handled": True},
            "resolution": {"action": "handleAndLearn", "by": "ot-analyst"},
        }
    )
    assert (status.alert_id, status.resolution.action, status.resolution.by) == ("1234", "handleAndLearn", "ot-analyst")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf-8", "message: not UTF-8"),
        (b"{not json", "message: not JSON"),
        (b"[1, 2]", "message: expected a JSON object, got list"),
        (json.dumps({**envelope(), "schema": "v0"}).encode(), "schema: expected"),
        (json.dumps(envelope(kind="incident")).encode(), "kind: expected one of alert, system, alert_status"),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "severity": "Severe"})).encode(),
            "alert.severity: 'Severe' is not one of",
        ),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "time": "yesterday"})).encode(),
            "alert.time: 'yesterday' is not a time",
        ),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "title": 42})).encode(),
            "alert.title: expected a string, got int",
        ),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "id": True})).encode(),
            "alert.id: required (a number or a string)",
        ),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "id": "a\nb"})).encode(),
            "alert.id: expected a number or a printable",
        ),
        (
            json.dumps(envelope(alert={**DEFENDER_ALERT, "message": "x" * 20_000})).encode(),
            "alert.message: 20000 characters",
        ),
        (json.dumps(envelope(alert={**DEFENDER_ALERT, "Title": "a", "title": "b"})).encode(), "differ only in case"),
        (json.dumps(envelope(sensor={"id": 1})).encode(), "sensor.name: required"),
        (json.dumps(envelope(alert={**DEFENDER_ALERT, "remediationSteps": [1]})).encode(), "alert.remediationSteps"),
        (b"{" + b'"x": "' + b"a" * 70_000 + b'"}', "more than the queue's 65536"),
    ],
)
def test_invalid_messages_name_the_field(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        parse_message(body)
    assert reason in info.value.reason


def test_hostile_ids_are_data() -> None:
    message = parse(envelope(alert={**DEFENDER_ALERT, "id": "x^NQactive=true"}))
    assert message.alert.id == "x^NQactive=true"
