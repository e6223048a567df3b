"""The product as a user runs it: function_app.py in the local host, Azurite, the ServiceNow emulator."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.alerting.enqueue import alert_envelope, enqueue_alerts
from shared.app import ProcessSingleton
from shared.app import forwarding as app_forwarding
from shared.contract.model import SCHEMA
from shared.settings import get_settings
from tests.conftest import ROOT, SN_PASSWORD
from tests.support.settings import app_settings
from tools.emulators.servicenow import ServiceNowEmulator
from tools.funchost.config import load_host_json
from tools.funchost.host import FunctionHost, load_app
from tools.stack.azurite import Azurite

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def running_app(
    azurite: Azurite, servicenow: ServiceNowEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "actions": [{"name": "incident", "connection": "default", "report": "incident"}],
                "rules": [
                    {
                        "name": "major",
                        "minimal_severity": "Major",
                        "created_at": "2025-01-01T00:00:00+00:00",
                        "actions": ["incident"],
                    }
                ],
            }
        )
    )
    settings = app_settings(
        azurite.connection_string,
        servicenow.url,
        AzureWebJobsStorage=azurite.connection_string,
        TOKEN_REFRESH_SCHEDULE="0 0 0 1 1 *",
        DEVICE_SYNC_SCHEDULE="0 0 0 1 1 *",
        ALERT_INTAKE_SCHEDULE="0 0 0 1 1 *",
        SERVICENOW_DEFAULT_PASSWORD=SN_PASSWORD,
        SERVICENOW_CA_BUNDLE=str(servicenow.ca_pem),
        FORWARDING_RULES_LOCATION=f"file:{rules}",
    )
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    # A forwarder of this test's settings, built on the first message as the module's own.
    fresh = ProcessSingleton(lambda: app_forwarding.build_forwarder(get_settings()))
    monkeypatch.setattr(app_forwarding, "_forwarder", fresh)
    app = load_app(ROOT, settings)
    host = FunctionHost(app, settings, load_host_json(ROOT / "host.json"), f"e2e-{uuid.uuid4().hex[:12]}").build()
    host.start()
    yield settings
    host.stop()
    get_settings.cache_clear()


def poisoned(queue: QueueClient) -> list[dict[str, Any]]:
    try:
        return [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def test_alerts_through_the_local_host(running_app: dict[str, str], servicenow: ServiceNowEmulator) -> None:
    connection, name = running_app["ALERTS_STORAGE"], running_app["ALERTS_QUEUE"]
    queue = QueueClient.from_connection_string(connection, name)
    poison = QueueClient.from_connection_string(connection, f"{name}-poison")
    sensor = {"name": "sensor-1", "id": 1}
    alerts = [
        {
            "id": i,
            "time": 1763762400000 + i,
            "title": f"Illegal MODBUS Operation {i}",
            "severity": severity,
            "engine": "Protocol Violation",
        }
        for i, severity in enumerate(["Critical", "Major", "Minor"])
    ]
    enqueue_alerts(queue, [*(alert_envelope(a, sensor) for a in alerts), alert_envelope(alerts[0], sensor)])
    queue.send_message(base64.b64encode(json.dumps({"schema": SCHEMA, "kind": "alert"}).encode()).decode())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        len(servicenow.store.all("incident")) == 2 and servicenow.store.all("sys_journal_field") and poisoned(poison)
    ):
        time.sleep(0.2)
    incidents = sorted(r["short_description"] for r in servicenow.store.all("incident"))
    assert incidents == [
        "[Defender for IoT] Critical: Illegal MODBUS Operation 0 (sensor-1)",
        "[Defender for IoT] Major: Illegal MODBUS Operation 1 (sensor-1)",
    ]
    assert len(servicenow.store.all("sys_journal_field")) == 1  # the duplicate became a work note
    assert [p["reason"] for p in poisoned(poison)] == ["invalid message: alert: required"]
