"""``status`` against Azurite and the Key Vault emulator: a seeded situation shown figure by figure, then cleared."""

from __future__ import annotations

import base64
import functools
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from shared.alerting.intake import Intake, IntakeCycle, IntakeState, record_cycle
from shared.alerting.poison import wrap
from shared.alerting.writeback import SN_TIME, WritebackResult, WritebackState
from shared.app import board_for
from shared.app import status as app_status
from shared.cli import main
from shared.defender.model import ReadReport, Sensor, SourceAlert
from shared.devices.state import SyncCounts, SyncState, SyncStatus
from shared.platform import outcomes
from shared.platform.budget_board import PARTITION, TableBudgetBoard, hour_of, read_board
from shared.platform.identity import LocalEmulatorCredential
from shared.platform.secrets import KeyVaultSecretStore, Secret
from shared.settings import get_settings
from tests.conftest import SN_CLIENT_ID, SN_USER
from tests.support.forwarding import Stack, alert, rules
from tests.support.settings import app_settings
from tools.emulators.keyvault import KeyVaultEmulator
from tools.stack.azurite import Azurite, free_port

pytestmark = pytest.mark.integration
RULES = {
    "actions": [{"name": "incident", "connection": "default", "report": "incident"}],
    "rules": [
        {"name": "major", "minimal_severity": "Major", "actions": ["incident"], "created_at": "2026-01-01T00:00:00Z"}
    ],
}


class Sensors:
    """A Defender source that reports only its sensors' health (what Resource Graph or a console would say)."""

    name = "cloud"

    def __init__(self, statuses: list[Sensor]) -> None:
        self.statuses = statuses

    def open_alerts(self, report: ReadReport) -> Iterator[SourceAlert]:
        return iter(())

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[SourceAlert]:
        return iter(())

    def sensor_statuses(self, report: ReadReport) -> list[Sensor]:
        return self.statuses

    def close(self) -> None:
        pass


class World:
    """The seeded deployment: its settings in the environment, its clients, and the moment ``status`` runs at."""

    def __init__(self, environ: dict[str, str], vault: KeyVaultSecretStore, now: datetime) -> None:
        self.environ = environ
        self.vault = vault
        self.now = now
        storage = environ["ALERTS_STORAGE"]
        self.queue = QueueClient.from_connection_string(storage, environ["ALERTS_QUEUE"])
        self.poison = QueueClient.from_connection_string(storage, environ["ALERTS_QUEUE"] + "-poison")
        tables = TableServiceClient.from_connection_string(storage)
        self.ledger = tables.create_table_if_not_exists(environ["FORWARDING_LEDGER_TABLE"])
        self.intake = tables.create_table_if_not_exists(environ["ALERT_INTAKE_STATE_TABLE"])
        self.sync = tables.create_table_if_not_exists(environ["DEVICE_SYNC_STATE_TABLE"])
        self.scratch = QueueClient.from_connection_string(storage, f"scratch{uuid.uuid4().hex[:12]}")
        self.scratch.create_queue()

    def board(
        self, instance: str, used: int, counted: dict[str, dict[str, int]] | None = None, ago: timedelta = timedelta(0)
    ) -> TableBudgetBoard:
        """An instance's row as its last sync, ``ago``, wrote it: its requests this hour, and its outcome tally
        (``counted``: figure → name → count, as the telemetry counters add them)."""
        moment = (self.now - ago).timestamp
        tally = outcomes.OutcomeTally(clock=moment)
        for figure, names in (counted or {}).items():
            for name, count in names.items():
                tally.add(figure, name, count)
        board = TableBudgetBoard(self.ledger, instance, clock=moment, tally=tally)
        board.sync({"default": used})
        return board

    def sensors(self, health: dict[str, bool]) -> None:
        """An intake cycle of the cloud source that reads these sensors (and no alert), a minute ago: the intake
        records each one's health. Its system messages go to a queue of their own, not the alerts queue."""
        statuses = [Sensor(name, name, "Ok" if up else "Disconnected", online=up) for name, up in health.items()]
        Intake(Sensors(statuses), self.scratch, IntakeState(self.intake)).run(self.now - timedelta(minutes=1))

    def refresh_token(self, days: float) -> None:
        self.vault.write(
            "servicenow-default-refresh-token",
            Secret("refresh-token-value"),
            content_type="application/vnd.servicenow.refresh-token",
            expires_on=self.now + timedelta(days=days),
        )

    def device_sync(self, error: str, finished_ago: timedelta) -> None:
        finished = self.now - finished_ago
        started = finished - timedelta(minutes=1)
        status = SyncStatus(started.isoformat(), finished.isoformat(), 60.0, SyncCounts(created=3, updated=2), error)
        SyncState(self.sync, "cloud").record(status)

    def intake_cycle(self, watermark_ago: timedelta, skipped: int, first_skipped: str = "") -> None:
        state = IntakeState(self.intake)
        state.set_watermark("cloud", self.now - watermark_ago)
        queued = {"alert": 2, "alert_status": 1, "system": 0}
        record_cycle(state, "cloud", IntakeCycle(self.now - timedelta(minutes=1), queued, skipped, first_skipped))

    def writeback(self, watermark_ago: timedelta) -> None:
        mark = (self.now - watermark_ago).strftime(SN_TIME)
        result = WritebackResult(
            "default", "incident", (self.now - timedelta(minutes=1)).isoformat(), written=1, records=2, watermark=mark
        )
        WritebackState(self.intake).record(result)


@pytest.fixture
def world(azurite: Azurite, keyvault: KeyVaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    connection = {
        "name": "default",
        "instance_url": "https://x.service-now.com",
        "auth": "oauth",
        "client_id": SN_CLIENT_ID,
        "username": SN_USER,
        "concurrency": 8,
        "hourly_requests": 1000,
    }
    cloud = {
        "name": "cloud",
        "kind": "cloud",
        "subscriptions": ["00000000-0000-0000-0000-000000000001"],
        "resource_graph_url": f"https://localhost:{free_port()}",  # never called: status reads only storage
        "credential": "emulator",
    }
    environ = app_settings(
        azurite.connection_string,
        SERVICENOW_CONNECTIONS=json.dumps([connection]),
        KEY_VAULT_URL=keyvault.url,
        KEY_VAULT_CREDENTIAL="emulator",
        KEY_VAULT_CA_BUNDLE=str(keyvault.ca_pem),
        FORWARDING_RULES_LOCATION=f"file:{rules}",
        DEFENDER_SOURCES=json.dumps([cloud]),
        ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}",
        DEVICE_SYNC_ENABLED="true",
        DEVICE_SYNC_FREQUENCY_MINUTES="60",
        DEVICE_SYNC_STATE_TABLE=f"sync{uuid.uuid4().hex[:12]}",
    )
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    # The status is taken 40.5 minutes from now, so that what is queued now is 40 (whole) minutes old.
    now = (datetime.now(UTC) + timedelta(minutes=40, seconds=30)).replace(microsecond=0)  # pauses are whole seconds
    command = importlib.import_module("shared.cli.status")  # the module, which the package's `status` command hides
    monkeypatch.setattr(command, "gather_status", functools.partial(app_status.gather_status, now=now))
    vault = KeyVaultSecretStore.connect(keyvault.url, LocalEmulatorCredential(), keyvault.ca_pem, ttl=0)
    world = World(environ, vault, now)
    world.queue.create_queue()
    world.poison.create_queue()
    return world


def seed_trouble(world: World) -> None:
    for number in (1, 2, 3):
        world.queue.send_message(base64.b64encode(json.dumps({"n": number}).encode()).decode())
    envelope: dict[str, Any] = {
        "kind": "alert",
        "sensor": {"name": "sensor-1"},
        "alert": {"id": 7, "title": "PLC stop"},
    }
    world.poison.send_message(wrap(b"", envelope, "ServiceNow refused it: HTTP 400", [], world.now))
    time.sleep(1.1)  # queue times are whole seconds: the second poison message is the newer one
    newest = {**envelope, "alert": {"id": 8, "title": "Unauthorized PLC Programming"}}
    world.poison.send_message(wrap(b"", newest, "past its maximum age (24 h)", [], world.now))
    counted_a = {
        "deferred": {"servicenow_unavailable": 3, "busy": 2},
        "written": {"incident": 5, "soc": 2},
        "filtered": {"": 4},
        "poisoned": {"max_age": 1},
    }
    world.board("a", 850, counted_a).pause("default", world.now.timestamp() + 300)
    world.board("b", 50, {"deferred": {"rate_limited": 1}, "written": {"incident": 1}})
    # Stopped 30 minutes ago: no longer live, but what it did in the last hour still counts.
    world.board("gone", 40, {"deferred": {"timeout": 1}, "written": {"incident": 1}}, ago=timedelta(minutes=30))
    # Stopped 70 minutes ago: nothing of it is in the last hour.
    world.board("older", 0, {"deferred": {"timeout": 5}, "written": {"incident": 9}}, ago=timedelta(minutes=70))
    world.sensors({"plc-hall-1": True, "plc-hall-2": False, "boiler": False})
    world.refresh_token(days=5)
    world.device_sync("IRE refused the batch: HTTP 403", finished_ago=timedelta(minutes=9))
    world.intake_cycle(watermark_ago=timedelta(hours=3), skipped=1, first_skipped="record 'x': no alert id")
    world.writeback(watermark_ago=timedelta(minutes=20))


def lines(output: str) -> dict[str, str]:
    """Each line by its level-less start (area and subject), with its level in front."""
    found = {}
    for line in output.splitlines():
        level, _, rest = line.partition(" ")
        found[rest.strip().split(":")[0]] = f"{level} {rest.strip()}"
    return found


def used_this_hour(world: World) -> int:
    """The requests of seed_trouble's board this hour: the live instances' 900, and the stopped instance's 40
    when its last sync, 30 minutes ago, was in this clock hour (the hourly limit's)."""
    now = world.now.timestamp()
    return 900 + (40 if hour_of(now - 1800) == hour_of(now) else 0)


def test_status_shows_each_figure_and_fails_until_cleared(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    seed_trouble(world)
    started = time.perf_counter()
    code = main(["status"])
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    shown = lines(out)
    queue = world.environ["ALERTS_QUEUE"]
    assert code == 1, out
    assert shown[f"queue {queue}"].startswith(
        f"FAIL queue {queue}: 3 message(s) waiting (approximate), the oldest visible one queued 40 min ago "
        "[WARN oldest > 5 min, FAIL > 30 min]"
    )
    since = f"since {datetime.fromtimestamp(outcomes.window_start(world.now.timestamp()), UTC):%H:%M}Z"
    assert shown["queue deferred"] == (
        f"WARN queue deferred: 7 message(s) deferred in the last hour ({since}): 3 servicenow_unavailable, 2 busy, "
        "1 rate_limited, 1 timeout [WARN any deferred but busy]"
    )
    assert shown["forwarding last hour"] == (
        f"WARN forwarding last hour: 9 record(s) written in the last hour ({since}): 7 incident, 2 soc; "
        "4 message(s) filtered; 1 poisoned: 1 max_age [WARN any poisoned]"
    )
    assert shown[f"queue {queue}-poison"] == (
        f"WARN queue {queue}-poison: 2 message(s); the newest: sensor sensor-1, alert 8: Unauthorized PLC "
        "Programming — past its maximum age (24 h) [WARN when any]"
    )
    until = f"{datetime.fromtimestamp(world.now.timestamp() + 300, UTC):%Y-%m-%d %H:%M:%S}Z"
    used = used_this_hour(world)
    assert shown["budget default"] == (
        f"WARN budget default: concurrency 8 across 2 live instance(s); paused until {until} (5 min left); "
        f"{used} of 1,000 requests this hour ({used // 10}%) [WARN paused or ≥ 80% of the hourly cap, FAIL at the cap]"
    )
    assert shown["connection default"].startswith(
        "WARN connection default: signed in; refresh token expires in 5.0 day(s)"
    )
    assert "[WARN ≤ 14 days left, FAIL ≤ 3 or not signed in, WARN access expired]" in shown["connection default"]
    assert shown["source cloud (cloud)"].startswith(
        "WARN source cloud (cloud): last cycle 60 s ago queued 2 alert, 1 alert_status, 0 system; "
        "skipped 1, the first: record 'x'"
    )
    assert "; lag 3 h 0 min (newest alert start seen" in shown["source cloud (cloud)"]
    assert shown["source cloud (cloud)"].endswith(
        "; 2 of 3 sensor(s) offline: boiler, plc-hall-2 [WARN last cycle > 3× ALERT_INTAKE_SCHEDULE (3 min), "
        "FAIL > 10×; WARN lag > 2× ALERT_INTAKE_OVERLAP_MINUTES (2 h 0 min); WARN any skipped or a sensor offline; "
        "FAIL an error]"
    )
    assert shown["device sync cloud (cloud)"] == (
        "FAIL device sync cloud (cloud): last run 9 min ago failed: IRE refused the batch: HTTP 403; created 3, "
        "updated 2, unchanged 0, retired 0, errors 0 "
        "[FAIL older than 2× DEVICE_SYNC_FREQUENCY_MINUTES (2 h 0 min) or an error; WARN item errors]"
    )
    assert shown["write-back default/incident"].startswith(
        "OK write-back default/incident: last cycle 60 s ago: 2 resolved record(s), 1 closed at their source; "
        "lag 20 min"
    )
    assert out.splitlines()[-1] == "status: 2 FAIL, 6 WARN, 1 OK"
    assert "refresh-token-value" not in out
    # The whole command as an operator runs it, the interpreter's start included (at the real time: the
    # failed device sync keeps it at exit 1).
    started = time.perf_counter()
    command = subprocess.run(
        [sys.executable, "-m", "shared", "status"], capture_output=True, text=True, check=False, timeout=60
    )
    whole = time.perf_counter() - started
    assert command.returncode == 1, command.stdout + command.stderr
    with capsys.disabled():  # the run times, for docs/operations.md (figures to watch, not timed assertions)
        print(f"\nstatus took {elapsed:.2f} s in process, {whole:.2f} s as a command, against Azurite and Key Vault")

    # --json carries the same figures.
    assert main(["status", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    figures = {(f["area"], f["subject"]): f["figures"] for f in document["findings"]}
    assert document["worst"] == "FAIL"
    assert figures[("queue", queue)] == {"waiting": 3, "oldest_minutes": pytest.approx(40.5, abs=0.4)}
    assert figures[("queue", "deferred")] == {
        "deferred": 7,
        "by_reason": {"servicenow_unavailable": 3, "busy": 2, "rate_limited": 1, "timeout": 1},
    }
    assert figures[("forwarding", "last hour")] == {
        "written": 9,
        "written_by_action": {"incident": 7, "soc": 2},
        "filtered": 4,
        "poisoned_by_reason": {"max_age": 1},
    }
    assert figures[("queue", f"{queue}-poison")]["poisoned"] == 2
    assert figures[("queue", f"{queue}-poison")]["newest_reason"] == "past its maximum age (24 h)"
    assert figures[("budget", "default")] == {
        "concurrency": 8,
        "instances": 2,
        "paused_until": datetime.fromtimestamp(world.now.timestamp() + 300, UTC).isoformat(),
        "used_this_hour": used_this_hour(world),
        "hourly_requests": 1000,
    }
    assert figures[("connection", "default")]["refresh_days_left"] == 5.0
    assert figures[("source", "cloud (cloud)")]["lag_minutes"] == 180.0
    assert figures[("source", "cloud (cloud)")]["queued"] == 3
    assert figures[("source", "cloud (cloud)")]["sensors"] == 3
    assert figures[("source", "cloud (cloud)")]["sensors_offline"] == 2
    assert figures[("source", "cloud (cloud)")]["offline_sensors"] == ["boiler", "plc-hall-2"]
    assert figures[("device sync", "cloud (cloud)")]["error"] == "IRE refused the batch: HTTP 403"
    assert figures[("write-back", "default/incident")]["lag_minutes"] == 20.0

    # Cleared: the queues drained, the pause over, a fresh token, a good sync, the intake caught up.
    world.queue.clear_messages()
    world.poison.clear_messages()
    world.ledger.delete_entity(PARTITION, "pause-default")
    world.board("a", 100, {"deferred": {"busy": 1}, "written": {"incident": 3}})  # busy: another worker had the alert
    world.board("b", 0)
    world.board("gone", 0, ago=timedelta(minutes=30))
    world.sensors({"plc-hall-1": True, "plc-hall-2": True, "boiler": True})
    world.refresh_token(days=60)
    world.device_sync("", finished_ago=timedelta(minutes=5))
    world.intake_cycle(watermark_ago=timedelta(minutes=10), skipped=0)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "status: everything OK (9 line(s))", out
    assert lines(out)["queue deferred"].startswith("OK queue deferred: 1 message(s) deferred in the last hour")


def test_status_when_storage_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    account = "devstoreaccount1"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # Azurite's
    storage = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"QueueEndpoint=http://127.0.0.1:{port}/{account};TableEndpoint=http://127.0.0.1:{port}/{account};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{account}"
    )
    for name, value in app_settings(storage).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert main(["status"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"Error: cannot reach storage at 127.0.0.1:{port}: connection refused; is Azurite running? "
        "(`make run` or `make emulators` starts it)"
    ]


def test_the_forwarders_outcomes_reach_the_status_through_the_board(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real forwarder counts each outcome once (its telemetry counters); the process's row on the budget board
    carries the last hour of them, and the status sums the rows."""
    monkeypatch.setattr(outcomes, "TALLY", outcomes.OutcomeTally())  # this test's process tally, from zero
    stack = make_stack(rules(minimal_severity="Major"))
    stack.handle(alert(), "m-1")  # a record written
    stack.handle(alert(), "m-1")  # its redelivery: a duplicate, nothing written
    stack.handle(alert(alert_id=2, severity="Minor"))  # filtered
    stack.handle(b"not json")  # poisoned
    stack.servicenow.faults.configure({"outage_seconds": 60})
    stack.handle(alert(alert_id=3))  # deferred: ServiceNow down
    board_for(stack.settings).sync({})  # what a sync, or report_soon's timer, writes within 10 s
    found = {(f.area, f.subject): f for f in app_status.gather_status(stack.settings, {}).findings}
    assert found[("queue", "deferred")].figures == {"deferred": 1, "by_reason": {"servicenow_unavailable": 1}}
    assert found[("forwarding", "last hour")].figures == {
        "written": 1,
        "written_by_action": {"incident": 1},
        "filtered": 1,
        "poisoned_by_reason": {"invalid_message": 1},
    }


def test_a_changed_tally_reaches_the_board_without_a_budget_sync(azurite: Azurite) -> None:
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(
        f"board{uuid.uuid4().hex[:10]}"
    )
    tally = outcomes.OutcomeTally()
    board = TableBudgetBoard(table, "solo", tally=tally)
    tally.add("deferred", "timeout")
    board.report_soon()  # the row was never written: the timer writes it at once, off this thread
    deadline = time.monotonic() + 10
    while not (view := read_board(table, time.time())).outcomes and time.monotonic() < deadline:
        time.sleep(0.1)
    assert view.outcomes == {"deferred": {"timeout": 1}}


def test_a_sync_sweeps_the_rows_of_instances_gone_for_hours(azurite: Azurite) -> None:
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(
        f"board{uuid.uuid4().hex[:10]}"
    )
    now = time.time()
    TableBudgetBoard(table, "gone", clock=lambda: now - 3 * 3600).sync({"default": 5})
    TableBudgetBoard(table, "recent", clock=lambda: now - 1800).sync({"default": 5})
    TableBudgetBoard(table, "live", clock=lambda: now).sync({})
    rows = {row["RowKey"] for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION})}
    assert rows == {"instance-recent", "instance-live"}  # the last hour's outcomes may still be on the recent one


def test_only_check_servicenow_calls_servicenow(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = make_stack(rules())
    for name, value in stack.environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    before = stack.servicenow.stats["requests"]
    main(["status", "--json"])
    plain = json.loads(capsys.readouterr().out)
    assert stack.servicenow.stats["requests"] == before  # what the app keeps, nothing more
    assert not [f for f in plain["findings"] if f["area"] == "servicenow"]

    main(["status", "--json", "--check-servicenow"])
    checked = {f["subject"]: f for f in json.loads(capsys.readouterr().out)["findings"] if f["area"] == "servicenow"}
    assert stack.servicenow.stats["requests"] > before
    assert checked["default"]["level"] == "OK", checked
    assert checked["default"]["summary"].startswith(f"signed in at {stack.servicenow.url}; a read answered in ")

    monkeypatch.setenv("SERVICENOW_DEFAULT_PASSWORD", "not-the-password")
    get_settings.cache_clear()
    assert main(["status", "--check-servicenow"]) == 1
    refused = lines(capsys.readouterr().out)["servicenow default"]
    assert refused.startswith("FAIL servicenow default: sign-in refused: "), refused
    assert "not-the-password" not in refused
