"""The operator commands against Azurite: enqueue, rules validate/apply/list/dry-run, poison list/replay."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.alerting.rules_store import read_rules
from shared.cli import main
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from shared.platform.storage import blob_service
from shared.settings import get_settings
from tests.support.settings import app_settings
from tools.stack.azurite import Azurite, free_port

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


def stored_rules() -> Any:
    settings = get_settings()
    return read_rules(settings.forwarding.rules_location, blob_service(settings.alerts_storage))


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


def test_the_example_alerts_raised_now_pass_the_rules_a_first_test_applies(
    settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/alerts.json as it is would be older than any rule applied today; --now stamps it as raised now."""
    import time

    from shared.alerting.rules import evaluate, parse_rules
    from tests.conftest import ROOT

    before = int(time.time() * 1000)
    assert main(["enqueue", str(ROOT / "examples" / "alerts.json"), "--sensor", "sensor-1", "--now"]) == 0
    messages = queued(settings_env)
    assert len(messages) == 2 and all(m["alert"]["time"] >= before for m in messages)
    rule = {"name": "major", "minimal_severity": "Major", "actions": ["incident"], "created_at": "2026-01-01T00:00:00Z"}
    rules = parse_rules({**RULES, "rules": [rule]})
    decisions = [evaluate(rules, parse_message(json.dumps(m).encode())) for m in messages]
    assert all(d.actions for d in decisions)


def test_enqueue_refuses_the_whole_batch_naming_the_bad_one(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps([DEFENDER_ALERTS[0], {**DEFENDER_ALERTS[1], "severity": "Severe"}]))
    assert main(["enqueue", str(path), "--sensor", "sensor-1"]) == 1
    err = capsys.readouterr().err
    assert "nothing queued: 1 of 2 message(s) invalid" in err
    assert "message 2: alert.severity: 'Severe' is not one of" in err  # counted as a person counts
    assert queued(settings_env) == []


def test_rules_validate_apply_list_and_dry_run(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  - {name: incident, connection: default, report: incident,\n"
        "     group: {key: '{sensor}:{title}', window_minutes: 30}}\n"
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
        and "group: key {sensor}:{title} = 's:Illegal MODBUS Operation', window 30 min" in dry
        and '"short_description": "[Defender for IoT] Major: Illegal MODBUS Operation (s)"' in dry
    )
    # The example message, raised before the rules were applied today: dry-run says why it is skipped.
    from tests.conftest import ROOT

    assert main(["rules", "dry-run", str(ROOT / "examples" / "alert-message.json")]) == 0
    assert "skipped major: raised before the rule was created" in capsys.readouterr().out


def test_rules_dry_run_shows_the_asset_placeholders_as_the_index_has_them_now(
    settings_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    azurite: Azurite,
) -> None:
    from azure.data.tables import TableClient

    from shared.assets.index import IndexWriter
    from shared.assets.model import Asset
    from shared.defender.model import Device

    table_name = f"sync{uuid.uuid4().hex[:10]}"
    for name, value in {
        "DEVICE_SYNC_ENABLED": "true",
        "CONSOLE_URL": "https://console.plant-a.internal",
        "DEVICE_SYNC_STATE_TABLE": table_name,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    table = TableClient.from_connection_string(azurite.connection_string, table_name)
    table.create_table()
    writer = IndexWriter(table)
    plc = Device("9", "PLC-9", 0, "PLC", purdue_level="L1", criticality="High", site="A", zone="L3", ips=("10.1.0.9",))
    writer.put(Asset.of("", plc, "a" * 32, "cmdb_ci_ot_control"))  # the legacy console's device, by its address
    writer.flush()
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {
                "actions": [
                    {"name": "i", "connection": "default", "report": "incident", "short_description": "{title} on {ci}"}
                ],
                "rules": [{"name": "all", "actions": ["i"]}],
            }
        )
    )
    assert main(["rules", "apply", str(path)]) == 0
    alert_file = tmp_path / "alert.json"
    later = {**DEFENDER_ALERTS[0], "time": 4102444800000, "destinationDeviceAddress": "10.1.0.9"}
    sensor = {"name": "s", "site": "A", "zone": "L3"}
    alert_file.write_text(json.dumps({"schema": SCHEMA, "kind": "alert", "sensor": sensor, "alert": later}))
    capsys.readouterr()
    assert main(["rules", "dry-run", str(alert_file)]) == 0
    dry = capsys.readouterr().out
    assert "assets (destination's CI): {ci} = 'PLC-9', {ci_class} = 'cmdb_ci_ot_control'" in dry, dry
    assert "{criticality} = 'High', {cves} = 'no open CVEs known'" in dry
    assert f'"cmdb_ci": "{"a" * 32}"' in dry and "on PLC-9" in dry


def test_rules_apply_says_when_the_rules_take_effect(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    for check, expected in ((None, "in force within 30 s"), ("45", "in force within 45 s")):
        if check is None:
            monkeypatch.delenv("FORWARDING_RULES_CHECK_SECONDS")  # the default
        else:
            monkeypatch.setenv("FORWARDING_RULES_CHECK_SECONDS", check)
        get_settings.cache_clear()
        assert main(["rules", "apply", str(path)]) == 0
        out = capsys.readouterr().out
        assert expected in out and "alerts forwarded before then meet the previous rules" in out, out


def test_rules_apply_keeps_creation_times_and_refuses_bad_documents(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    assert main(["rules", "apply", str(path)]) == 0
    first = stored_rules()
    assert main(["rules", "apply", str(path)]) == 0
    assert stored_rules() == first  # re-applying keeps each rule's created_at
    assert "applied 1 rules to " in (out := capsys.readouterr().out)
    assert "in force from the next alert (FORWARDING_RULES_CHECK_SECONDS=0" in out  # the tests' setting
    path.write_text(json.dumps({"actions": [], "rules": [{"name": "x", "actions": ["nope"]}]}))
    assert main(["rules", "apply", str(path)]) == 1
    assert "rules[0].actions: 'nope' is not defined under 'actions'" in capsys.readouterr().err
    assert stored_rules() == first


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


def poison_queue(environ: dict[str, str]) -> QueueClient:
    queue = QueueClient.from_connection_string(environ["ALERTS_STORAGE"], environ["ALERTS_QUEUE"] + "-poison")
    queue.create_queue()
    return queue


def test_poison_list_and_replay_see_the_whole_queue(
    settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A receive hands out 32 messages at most; 40 poisoned are 40 listed and 40 replayed."""
    poison = poison_queue(settings_env)
    for number in range(40):
        original = {"schema": SCHEMA, "kind": "alert", "sensor": {"name": "sensor-9"}, "alert": DEFENDER_ALERTS[0]}
        original["alert"] = {**DEFENDER_ALERTS[0], "id": 100 + number}
        wrapped = {"reason": "ServiceNow refused the record: 400", "message": original, "attempts": []}
        poison.send_message(base64.b64encode(json.dumps(wrapped).encode()).decode())
    assert main(["poison", "list"]) == 0
    listing = capsys.readouterr().out
    assert "40 message(s)" in listing
    assert "sensor sensor-9, alert 100: Illegal MODBUS Operation" in listing
    assert "sensor sensor-9, alert 139: Illegal MODBUS Operation" in listing
    assert main(["poison", "list"]) == 0  # listing left every message in place, visible
    assert "40 message(s)" in capsys.readouterr().out
    assert main(["poison", "replay", "--all"]) == 0
    assert "replayed 40 message(s)" in capsys.readouterr().out
    alerts = QueueClient.from_connection_string(settings_env["ALERTS_STORAGE"], settings_env["ALERTS_QUEUE"])
    assert alerts.get_queue_properties().approximate_message_count == 40
    assert poison.get_queue_properties().approximate_message_count == 0


def test_poison_replay_needs_ids_and_refuses_unknown_ones(
    settings_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    poison = poison_queue(settings_env)
    sent = poison.send_message(base64.b64encode(b"raw host copy").decode())
    assert main(["poison", "replay"]) == 2
    assert "name the messages to replay" in capsys.readouterr().err
    assert main(["poison", "replay", "no-such-id"]) == 1
    assert "not in" in capsys.readouterr().err
    assert main(["poison", "replay", sent.id, "no-such-id"]) == 1  # the known one replayed, the unknown named
    captured = capsys.readouterr()
    assert "replayed 1 message(s)" in captured.out and "no-such-id" in captured.err
    assert poison.get_queue_properties().approximate_message_count == 0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"id": 2, "additionalInformation": null,}]', "not JSON (Expecting property name"),
        ("- {id: 0x1F, title: t, severity: Major, engine: Malware, time: 1763762400000}", "not JSON"),
        ('"an alert"', "expected a JSON array of Defender alert objects"),
    ],
)
def test_enqueue_takes_json_only(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(text)
    assert main(["enqueue", str(path), "--sensor", "sensor-1"]) == 1
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert queued(settings_env) == []


def test_enqueue_takes_one_bare_alert(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(DEFENDER_ALERTS[1]))
    assert main(["enqueue", str(path), "--sensor", "sensor-1"]) == 0
    assert [m["alert"]["id"] for m in queued(settings_env)] == [12]


def test_enqueue_lists_every_invalid_message(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.json"
    bad_severity = {**DEFENDER_ALERTS[0], "severity": "Severe"}
    no_title = {k: v for k, v in DEFENDER_ALERTS[1].items() if k != "title"}
    path.write_text(json.dumps([DEFENDER_ALERTS[0], bad_severity, DEFENDER_ALERTS[1], no_title]))
    assert main(["enqueue", str(path), "--sensor", "sensor-1"]) == 1
    err = capsys.readouterr().err
    assert "2 of 4 message(s) invalid" in err
    assert "message 2: alert.severity" in err and "message 4: alert.title: required" in err
    assert queued(settings_env) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enqueue_without_a_file_at_a_terminal_says_what_to_send(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal())
    assert main(["enqueue", "--sensor", "sensor-1"]) == 2
    assert "give a file of alerts, or pipe them in" in capsys.readouterr().err


def test_ctrl_c_is_one_line(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Interrupted(io.BytesIO):
        def read(self, *_: Any) -> bytes:
            raise KeyboardInterrupt

    stdin = io.TextIOWrapper(Interrupted())
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["enqueue", "-", "--sensor", "sensor-1"]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted")


def test_rules_validate_works_offline_and_names_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ALERTS_QUEUE", "ALERTS_STORAGE", "SERVICENOW_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  - {name: incident, connection: default, report: incident}\n"
        "rules:\n  - {name: major, minimal_severity: Major, actions: [incident]}\n"
    )
    assert main(["rules", "validate", str(path)]) == 0  # no settings, no storage, no created_at needed
    assert "valid (1 rules, 1 actions) (connection names not checked" in capsys.readouterr().out
    assert main(["rules", "validate", str(tmp_path / "nonexist.yaml")]) == 1
    err = capsys.readouterr().err
    assert "nonexist.yaml: no such file" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_rules_list_shows_every_condition(
    settings_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  - {name: ot-incident, connection: default, report: incident}\n"
        "rules:\n  - {name: dnp3, protocols: [DNP3], zones: [Line 1], actions: [ot-incident]}\n"
        "  - {name: health, alert_notifications: false, system_notifications: true, sites: [Plant A],"
        " actions: [ot-incident]}\n"
    )
    assert main(["rules", "apply", str(path)]) == 0
    assert main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert "dnp3: enabled, severity ≥ Warning, protocols DNP3, zones Line 1, alert notifications, created" in out
    assert "health: enabled, sites Plant A, no alert notifications, system notifications, created" in out


def test_settings_problems_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "local.settings.json"
    broken.write_text('{"Values": {"ALERTS_QUEUE": "alerts",}}')
    assert main(["--settings", str(broken), "rules", "list"]) == 1
    err = capsys.readouterr().err
    assert f"--settings {broken}: not valid JSON" in err and "Traceback" not in err
    monkeypatch.setenv("ALERTS_QUEUE", "Not A Queue")
    assert main(["poison", "list"]) == 2
    assert "ALERTS_QUEUE='Not A Queue' is not a valid queue name" in capsys.readouterr().err


def test_unreachable_storage_is_one_line_naming_where(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    dead = Azurite(port, port, port).connection_string  # nothing listens there
    for name, value in app_settings(dead).items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    assert main(["poison", "list"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach storage at 127.0.0.1:{port}: connection refused; is Azurite running?" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 15  # a few quick retries, not the SDK's minute of back-off


def test_a_mistyped_setting_is_named_with_the_likely_one(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVICENOW_REED_TIMEOUT_SECONDS", "10")
    assert main(["poison", "list"]) == 0
    assert (
        "warning: app setting SERVICENOW_REED_TIMEOUT_SECONDS is not one this app reads, so it has no effect; "
        "did you mean SERVICENOW_READ_TIMEOUT_SECONDS?" in capsys.readouterr().err
    )
