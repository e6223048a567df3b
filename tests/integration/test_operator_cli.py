"""The operator commands against Azurite: enqueue, rules validate/apply/list/dry-run, poison list/replay."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.__main__ import main
from shared.alerts import SCHEMA, parse_message
from shared.settings import get_settings
from tests.support.settings import app_settings
from tools.azurite import Azurite

pytestmark = pytest.mark.integration
DEFENDER_ALERTS = [
    {
        "id": 11,
        "time": 1763762400000,
        "title": "Illegal MODBUS Operation",
        "severity": "Major",
        "engine": "Protocol Violation",
    },
    {
        "id": 12,
        "time": 1763762400000,
        "title": "Unauthorized PLC Programming",
        "severity": "Critical",
        "engine": "Policy Violation",
        "remediationSteps": ["Check the EWS"],
    },
]
RULES = {
    "actions": [{"name": "incident", "connection": "default", "report": "incident"}],
    "rules": [{"name": "major", "minimal_severity": "Major", "actions": ["incident"]}],
}


@pytest.fixture
def settings_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environ = app_settings(
        azurite.connection_string, FORWARDING_RULES_LOCATION=f"rules{uuid.uuid4().hex[:8]}/forwarding-rules.json"
    )
    queue = environ["ALERTS_QUEUE"]
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    QueueClient.from_connection_string(azurite.connection_string, queue).create_queue()
    return environ


def queued(environ: dict[str, str], queue: str | None = None) -> list[dict[str, Any]]:
    client = QueueClient.from_connection_string(environ["ALERTS_STORAGE"], queue or environ["ALERTS_QUEUE"])
    return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]


def test_enqueue_a_defender_alert_list(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(DEFENDER_ALERTS))
    assert main(["enqueue", str(path), "--sensor", "sensor-1", "--site", "Plant A", "--protocol", "MODBUS"]) == 0
    assert "queued 2 message(s)" in capsys.readouterr().out
    messages = queued(settings_env)
    assert [m["alert"]["id"] for m in messages] == [11, 12]
    assert all(parse_message(json.dumps(m).encode()).sensor.site == "Plant A" for m in messages)


def test_enqueue_refuses_the_whole_batch_naming_the_bad_one(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps([DEFENDER_ALERTS[0], {**DEFENDER_ALERTS[1], "severity": "Severe"}]))
    assert main(["enqueue", str(path), "--sensor", "sensor-1"]) == 1
    assert "nothing queued: message 1: alert.severity: 'Severe' is not one of" in capsys.readouterr().err
    assert queued(settings_env) == []


def test_rules_validate_apply_list_and_dry_run(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  - {name: incident, connection: default, report: incident}\n"
        "rules:\n  - {name: major, minimal_severity: Major, actions: [incident], protocols: [MODBUS]}\n"
    )
    assert main(["rules", "validate", str(path)]) == 0
    assert main(["rules", "apply", str(path)]) == 0
    assert main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert (
        "valid (1 rules, 1 actions)" in out and "applied 1 rules" in out and "major: enabled, severity ≥ Major" in out
    )
    alert_file = tmp_path / "alert.json"
    later = {**DEFENDER_ALERTS[0], "time": 4102444800000}  # raised after the rule was applied
    alert_file.write_text(json.dumps({"schema": SCHEMA, "kind": "alert", "sensor": {"name": "s"}, "alert": later}))
    assert main(["rules", "dry-run", str(alert_file)]) == 0
    dry = capsys.readouterr().out
    assert (
        "rules matched: major" in dry
        and '"short_description": "[Defender for IoT] Major: Illegal MODBUS Operation (s)"' in dry
    )


def test_rules_apply_keeps_creation_times_and_refuses_bad_documents(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    assert main(["rules", "apply", str(path)]) == 0
    from shared.__main__ import stored_rules

    first = stored_rules(get_settings())
    assert main(["rules", "apply", str(path)]) == 0
    assert stored_rules(get_settings()) == first  # re-applying keeps each rule's created_at
    path.write_text(json.dumps({"actions": [], "rules": [{"name": "x", "actions": ["nope"]}]}))
    assert main(["rules", "apply", str(path)]) == 1
    assert "rules[0].actions: 'nope' is not defined under 'actions'" in capsys.readouterr().err
    assert stored_rules(get_settings()) == first


def test_poison_list_and_replay(settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    poison = QueueClient.from_connection_string(
        settings_env["ALERTS_STORAGE"], settings_env["ALERTS_QUEUE"] + "-poison"
    )
    poison.create_queue()
    original = {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s"},
        "alert": DEFENDER_ALERTS[0],
        "_delivery": {"id": "x", "attempts": [{"error": "503"}]},
    }
    wrapped = {"reason": "not delivered within 1 day", "message": original, "attempts": []}
    poison.send_message(base64.b64encode(json.dumps(wrapped).encode()).decode())
    poison.send_message(base64.b64encode(b"raw host copy").decode())
    assert main(["poison", "list"]) == 0
    listing = capsys.readouterr().out
    assert "not delivered within 1 day" in listing and "failed in the host" in listing and "2 message(s)" in listing
    assert main(["poison", "replay", "--all"]) == 0
    replayed = QueueClient.from_connection_string(settings_env["ALERTS_STORAGE"], settings_env["ALERTS_QUEUE"])
    bodies = [base64.b64decode(m.content) for m in replayed.peek_messages(max_messages=32)]
    assert json.loads(bodies[0]) == {k: v for k, v in original.items() if k != "_delivery"}
    assert bodies[1] == b"raw host copy"
    assert poison.peek_messages() == []
