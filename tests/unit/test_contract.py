"""The typed message contract (shared/contract): what a source builds is written by the rules the forwarder
reads it with, so a typed message is valid once written (no parse to prove it) or refused with the same
reason the parser gives; and what the forwarder parses is what the source built."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.alerting.intake import alert_message, status_message, system_message
from shared.contract.fields import InvalidMessageError, millis
from shared.contract.model import (
    SCHEMA,
    Alert,
    AlertDevices,
    AlertMessage,
    Origin,
    Resolution,
    SensorRef,
    Severity,
    SystemNotification,
)
from shared.contract.parse import check_queue_size, parse_message, queue_size, serialise
from shared.defender.model import ReadReport, Sensor
from shared.defender.sensor import SensorSource
from shared.defender.settings import SensorSourceSettings
from shared.http.policies import CallStats
from tests.conftest import ROOT
from tests.support.fixtures import load

NOW = datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)
ALERT = Alert(
    id="42",
    time=NOW,
    title="Unauthorized PLC Programming",
    severity=Severity.CRITICAL,
    engine="Policy Violation",
    message="PLC program changed",
    source_device=3,
    destination_device=4,
    source_address="10.1.0.5",
    destination_address="10.1.0.9",
    remediation_steps=("Check the engineering station",),
    additional_information={"description": "x", "information": ["y"]},
)
SENSOR = SensorRef("sensor-1", id="7", site="Plant", zone="Line 1", url="https://sensor-1")


def round_trip(message: AlertMessage) -> AlertMessage:
    return parse_message(serialise(message.to_document()))


def test_an_alert_message_parses_back_to_what_was_written() -> None:
    origin = Origin("cloud", "/subscriptions/s/alerts/42", AlertDevices("d-1", "d-2", ("d-3",)))
    message = AlertMessage("alert", SENSOR, ALERT, "Modbus", origin=origin)
    parsed = round_trip(message)
    assert (parsed.kind, parsed.sensor, parsed.alert, parsed.protocol, parsed.origin) == (
        "alert",
        SENSOR,
        ALERT,
        "Modbus",
        origin,
    )
    assert parsed.raw == message.to_document()  # the document as sent, with the schema it names
    assert parsed.raw["schema"] == SCHEMA and parsed.raw["alert"]["time"] == millis(NOW)


def test_fields_beyond_the_contract_are_written_and_kept_in_raw() -> None:
    alert = replace(ALERT, extra={"alertManagementUri": "https://portal/alert"})
    parsed = round_trip(AlertMessage("alert", SENSOR, alert))
    assert parsed.raw["alert"]["alertManagementUri"] == "https://portal/alert"
    assert parsed.alert == ALERT  # the typed alert the parser reads leaves them in raw


def test_status_and_system_messages_parse_back_to_what_was_written() -> None:
    handled = status_message("42", SensorRef("sensor-1", zone="Line 1"), "cloud", NOW)
    parsed = round_trip(handled)
    assert (parsed.kind, parsed.alert_id, parsed.sensor) == ("alert_status", "42", handled.sensor)
    assert parsed.resolution == Resolution("close", "", "Microsoft Defender for IoT (cloud)")
    assert handled.to_document()["alert"] == {"id": "42", "handled": True}
    down = Sensor("s", "sensor-1", "Disconnected", zone="Line 1", connectivity_time=NOW, online=False)
    system = round_trip(system_message(down, NOW))
    assert system.system == SystemNotification("offline", NOW, "Sensor status in Defender for IoT: Disconnected")
    assert system.sensor == SensorRef("sensor-1", zone="Line 1")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            AlertMessage("alert", SENSOR, replace(ALERT, title="x" * 5000)),
            "alert.title: 5000 characters, more than 1024",
        ),
        (AlertMessage("alert", SENSOR, replace(ALERT, engine=" ")), "alert.engine: must not be empty"),
        (AlertMessage("alert", SensorRef(""), ALERT), "sensor.name: required"),
        (AlertMessage("alert", replace(SENSOR, url="ftp://x"), ALERT), "sensor.url: expected an http(s) URL"),
        (AlertMessage("alert", SENSOR, ALERT, "p" * 65), "protocol: 65 characters, more than 64"),
        (AlertMessage("alert", SENSOR, ALERT, origin=Origin("c" * 65, "r")), "origin.source: 65 characters"),
        (AlertMessage("alert", SENSOR, replace(ALERT, id="a\nb")), "alert.id: expected a number or a printable"),
    ],
)
def test_a_typed_message_that_breaks_a_rule_is_refused_as_the_parser_refuses_its_document(
    message: AlertMessage, reason: str
) -> None:
    with pytest.raises(InvalidMessageError) as written:
        message.to_document()
    assert written.value.reason.startswith(reason)


@settings(max_examples=200, deadline=None)
@given(
    title=st.text(max_size=1100),
    engine=st.text(max_size=140),
    sensor=st.text(max_size=270),
    address=st.none() | st.text(max_size=270),
    protocol=st.none() | st.text(max_size=70),
)
def test_a_typed_message_is_written_exactly_when_its_document_parses(
    title: str, engine: str, sensor: str, address: str | None, protocol: str | None
) -> None:
    """Both ways, the same rules: written → parses to the same values; refused → the parser refuses the
    document made by hand from the same values, for the same reason."""
    alert = replace(ALERT, title=title, engine=engine, source_address=address)
    message = AlertMessage("alert", SensorRef(sensor), alert, protocol)
    by_hand: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": sensor} if sensor else {},  # as the intake wrote it, empty values left out
        "alert": {**{k: v for k, v in ALERT.document().items() if k != "sourceDeviceAddress"}, "title": title},
        "protocol": protocol,
    }
    by_hand["alert"]["engine"] = engine
    if address is not None:
        by_hand["alert"]["sourceDeviceAddress"] = address
    try:
        document = message.to_document()
    except InvalidMessageError as exc:
        refused: str | None = exc.reason
    else:
        refused = None
    if refused is not None:
        with pytest.raises(InvalidMessageError) as parsed:
            parse_message(serialise(by_hand))
        assert parsed.value.reason == refused
        return
    back = parse_message(serialise(document))
    assert back.alert is not None and back.alert.title == title and back.sensor.name == sensor
    assert back.alert.source_address == (address or None) and back.protocol == (protocol or None)


def test_what_a_sensor_source_yields_is_what_the_forwarder_parses() -> None:
    """A locally managed sensor's published alerts, through the intake's message and back: the same typed
    alert, sensor and devices, without the intake parsing anything."""
    source = SensorSource(SensorSourceSettings("line-1", "https://sensor", "t", site="Plant A"), None, CallStats())  # type: ignore[arg-type]
    documents = load("sensor", "alerts-v1").documents
    source._get = lambda *_, **__: documents  # type: ignore[method-assign]
    for alert in source.open_alerts(ReadReport()):
        parsed = round_trip(alert_message(alert, "line-1"))
        assert (parsed.alert, parsed.sensor) == (alert.alert, alert.sensor)
        assert parsed.origin == Origin("line-1", alert.id, alert.devices)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 47_000, 49_152, 49_153])
def test_the_queue_size_is_the_base64_length_without_encoding(size: int) -> None:
    body = b"x" * size
    assert queue_size(body) == len(base64.b64encode(body))


def test_a_body_over_the_queue_limit_after_base64_is_refused() -> None:
    check_queue_size(b"x" * 49_152)  # 65,536 after base64: fits exactly
    with pytest.raises(InvalidMessageError, match="65540 bytes after base64, more than the queue's 65536"):
        check_queue_size(b"x" * 49_153)


def test_every_kind_of_document_written_is_valid_against_the_published_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "alert-message.v1.json").read_text())
    origin = Origin("cloud", "/subscriptions/s/alerts/42", AlertDevices(related=("d-1", "d-2")))
    written = [
        AlertMessage("alert", SENSOR, replace(ALERT, extra={"deviceResourceIds": ["/d/1"]}), "Modbus", origin=origin),
        # The intake's own alert_status says action "close", which the schema's enum does not list (the parser
        # takes any action): a sender's, as the schema has it.
        replace(status_message("42", SensorRef("sensor-1"), "cloud", NOW), resolution=Resolution("handleAndLearn")),
        system_message(Sensor("s", "sensor-1", "Ok", connectivity_time=NOW), NOW),
    ]
    for message in written:
        jsonschema.validate(message.to_document(), schema)
