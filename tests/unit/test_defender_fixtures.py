"""The product's sensor and console parsers against every published example (tests/fixtures/sensor, console)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from shared.contract.model import SensorRef
from shared.defender.alerts import parse_api_alert
from shared.defender.console import ConsoleClient, alert_uuid
from shared.defender.model import ReadReport
from shared.defender.rest import DefenderApiError
from shared.defender.sensor import SensorSource
from shared.defender.settings import SensorSourceSettings
from shared.defender.writeback import console_close
from shared.http.policies import CallStats
from tests.support.fixtures import all_in, load


class Answers:
    """Stands in for a pipeline: each GET answers the given documents; a PUT answers ``put``."""

    def __init__(self, documents: Any = None, put: tuple[int, Any] = (200, {})) -> None:
        self.documents, self.put = documents, put

    def get(self, path: str, params: Any = None, **_: Any) -> Any:
        return self.documents

    def send(self, request: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = self.put[0], json.dumps(self.put[1]).encode()
        return response


def sensor(documents: Any) -> SensorSource:
    source = SensorSource(SensorSourceSettings("line-1", "https://sensor", "t", site="Plant A"), None, CallStats())  # type: ignore[arg-type]
    source._get = Answers(documents).get  # type: ignore[method-assign]
    return source


def console(documents: Any) -> ConsoleClient:
    client = ConsoleClient("https://console", None, stats=CallStats())  # type: ignore[arg-type]
    answers = Answers(documents)
    client._get = answers.get  # type: ignore[method-assign]
    return client


@pytest.mark.parametrize("name", ["alerts-v1", "alerts-v2"])
def test_every_published_sensor_alert_parses_with_its_fields(name: str) -> None:
    fixture = load("sensor", name)
    alerts = list(sensor(fixture.documents).open_alerts(ReadReport()))
    assert [a.id for a in alerts] == [str(d["id"]) for d in fixture.documents]
    for alert, document in zip(alerts, fixture.documents, strict=True):
        assert alert.sensor == SensorRef("line-1", site="Plant A")  # a sensor's alerts name no sensor
        written = alert.alert.document()
        assert written["title"] == document["title"] and written["time"] == document["time"]
        assert {k.lower() for k, v in document.items() if v is not None} == {k.lower() for k in written}


def test_the_sensor_examples_lower_case_additionalinformation_is_kept() -> None:
    """Microsoft's sensor example spells it in lower case; a case-sensitive copy dropped it."""
    document = load("sensor", "alerts-v1").documents[0]
    alert = parse_api_alert(document, closed=False, sensor={"name": "s"})
    assert alert.alert.additional_information == {
        "information": ["170.60.50.201 over port BACnet (47808)"],
        "description": "External Addresses",
    }


def test_every_published_sensor_device_connection_and_cve_parses() -> None:
    devices = [d for page in sensor(load("sensor", "devices").documents).device_pages(0) for d in page]
    assert [d.id for d in devices] == ["line-1:1", "line-1:2"]
    assert devices[0].protocols == ("MODBUS",) and devices[0].ips == ("10.35.1.51",)
    assert devices[0].firmware[0].model == "M1" and devices[1].macs == () and devices[1].protocols == ()
    links = [c for page in sensor(load("sensor", "connections").documents).connection_pages(0) for c in page]
    assert [(c.source, c.target) for c in links] == [("line-1:171", "line-1:22"), ("line-1:171", "line-1:23")]
    (address,) = sensor(load("sensor", "cves").documents).address_cves()
    assert address.address == "10.35.1.51"
    assert [(c.id, c.score, c.attack_vector) for c in address.cves] == [
        ("CVE-2007-0099", "9.3", "Network"),  # the example's NETWORK, in the field table's spelling
        ("CVE-2009-1547", "9.3", "Network"),
    ]


def test_every_published_console_alert_parses_and_v2_says_where_it_was_seen() -> None:
    v1 = load("console", "alerts-v1").documents
    alerts = list(console(v1).open_alerts(ReadReport()))
    expected = [(str(d["id"]), f"1-{d['time']}", SensorRef("")) for d in v1]  # v1 names no sensor
    assert [(a.id, a.resource_id, a.sensor) for a in alerts] == expected
    (v2,) = load("console", "alerts-v2").documents
    reader = console([v2])
    (alert,) = reader.open_alerts(ReadReport())
    assert alert.sensor == SensorRef("sensor-1", site="site-1", zone="zone-1")
    assert alert.alert.source_address == "10.10.10.22" and alert.alert.remediation_steps == (
        "It is recommended to notify the security officer of the incident.",
    )
    assert alert_uuid({"time": 1}) == "" and alert_uuid({"sensorId": True, "time": 1}) == ""


def put_answers() -> list[tuple[int, dict[str, str]]]:
    """The published PUT answers with their documented status: content 200, error 500."""
    return [(200 if "content" in d else 500, d) for d in load("console", "alert-put").documents if "action" not in d]


@pytest.mark.parametrize(("status", "answer"), put_answers())
def test_every_published_console_put_answer_is_read_for_what_it_means(status: int, answer: dict[str, str]) -> None:
    pipeline = Answers(put=(status, answer))
    if status == 200:
        assert console_close(pipeline, CallStats(), "https://cm", "cm", "1-1", False) == "closed"  # type: ignore[arg-type]
        return
    with pytest.raises(DefenderApiError) as failed:
        console_close(pipeline, CallStats(), "https://cm", "cm", "1-1", False)  # type: ignore[arg-type]
    # Only "Unexpected error occurred" may pass; the others are about this alert and stay so.
    assert failed.value.retryable == (answer["error"] == "Unexpected error occurred")


def test_every_fixture_names_its_source() -> None:
    for fixture in all_in("sensor") + all_in("console"):
        assert "MicrosoftDocs/azure-docs:articles/defender-for-iot/organizations/api/" in fixture.source
        assert fixture.documents and fixture.notes
