"""The device sync against the console emulator, Azurite and the ServiceNow emulator (real IRE wire)."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.app import servicenow_client
from shared.defender.console import ConsoleClient
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync, is_due
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore, Secret
from shared.platform.times import Deadline
from shared.servicenow.settings import ServiceNowConnection
from tests.conftest import SN_PASSWORD, SN_USER
from tools.emulators.console import ConsoleEmulator, generate, mutate
from tools.emulators.servicenow import ServiceNowEmulator
from tools.emulators.servicenow.store import OT_CLASSES
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration
TOKEN = "Console-Token-5150"
OT_TABLES = OT_CLASSES


@pytest.fixture
def console(tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(generate(40, seed=11), token=TOKEN, tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def make_sync(console: ConsoleEmulator, servicenow: ServiceNowEmulator, azurite: Azurite) -> Callable[..., DeviceSync]:
    def make(table: str | None = None, page_size: int = 10, batch_size: int = 5) -> DeviceSync:
        http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
        reader = ConsoleClient.connect(
            console.url, lambda: Secret(TOKEN), http, ca_bundle=console.ca_pem, page_size=page_size
        )
        connection = ServiceNowConnection(
            "default", servicenow.url, "basic", username=SN_USER, ca_bundle=servicenow.ca_pem
        )
        client = servicenow_client(
            connection, EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": SN_PASSWORD}), http
        )
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        state = SyncState(tables.get_table_client(table or f"sync{uuid.uuid4().hex[:12]}"))
        return DeviceSync(DeviceSyncSettings(batch_size=batch_size, page_size=page_size), reader, client, state)

    return make


def cis(servicenow: ServiceNowEmulator) -> list[dict[str, str]]:
    return [r for t in OT_TABLES for r in servicenow.store.all(t)]


def snapshot(servicenow: ServiceNowEmulator) -> dict[str, Any]:
    """The CMDB as a comparable value: CIs by correlation id, lookups, relations."""
    rel_types = {r["sys_id"]: r["name"] for r in servicenow.store.all("cmdb_rel_type")}
    by_sys = {r["sys_id"]: r["correlation_id"] for t in (*OT_TABLES, "cmdb_ci_nids") for r in servicenow.store.all(t)}
    by_sys |= {r["sys_id"]: f"ip:{r['ip_address']}" for r in servicenow.store.all("cmdb_ci_ip_address")}
    return {
        "cis": sorted(
            (r.get("sys_class_name", t), r["correlation_id"], r.get("name"), r.get("install_status"))
            for t in (*OT_TABLES, "cmdb_ci_nids")
            for r in servicenow.store.all(t)
        ),
        "adapters": sorted(
            (by_sys[r["cmdb_ci"]], r["mac_address"]) for r in servicenow.store.all("cmdb_ci_network_adapter")
        ),
        "relations": sorted(
            (by_sys[r["parent"]], rel_types[r["type"]], by_sys[r["child"]]) for r in servicenow.store.all("cmdb_rel_ci")
        ),
        "addresses": sorted(
            (by_sys[r["owned_by_cmdb_ci"]], r["ip_address"]) for r in servicenow.store.all("cmdb_ci_ip_address")
        ),
        "entities": sorted(
            (by_sys[r["ot_device"]], r.get("purdue_level")) for r in servicenow.store.all("cmdb_ot_entity")
        ),
    }


def test_first_sync_creates_the_ot_model(
    make_sync: Callable[..., DeviceSync], console: ConsoleEmulator, servicenow: ServiceNowEmulator
) -> None:
    status = make_sync().run()
    assert status.error == "" and status.counts.created == 40 + 4
    inventory = console.inventory
    assert len(cis(servicenow)) == 40 and len(servicenow.store.all("cmdb_ci_nids")) == 4
    plcs = {d["u_id"] for d in inventory.devices.values() if d["u_device_type"] == "PLC"}
    assert {r["correlation_id"] for r in servicenow.store.all("cmdb_ci_ot_plc")} == {f"dfiot-device:{i}" for i in plcs}
    confident = {o["u_mac_address"] for d in inventory.devices.values() for o in d["u_mac_address_objects"]}
    guessed = {
        m for d in inventory.devices.values() for o in d["u_ip_address_objects"] for m in o["u_guessed_mac_address"]
    }
    adapters = {r["mac_address"] for r in servicenow.store.all("cmdb_ci_network_adapter")}
    assert adapters == confident and not adapters & guessed  # a guessed MAC never identifies a CI
    assert len(servicenow.store.all("cmdb_ot_entity")) == 40
    relations = snapshot(servicenow)["relations"]
    assert sum(1 for _, kind, _ in relations if kind == "Detects::Detected by") == 40
    pairs = {(c["u_src_device_id"], c["u_dest_device_id"]) for c in inventory.connections}
    assert sum(1 for _, kind, _ in relations if kind == "Connects to::Connected by") == len(pairs)


def test_rerun_without_change_writes_nothing(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    sync.run()
    before = servicenow.stats["requests"]
    status = sync.run()
    assert status.error == "" and status.counts.created == status.counts.updated == 0
    assert servicenow.stats["requests"] == before  # not one ServiceNow call


def test_an_update_changes_exactly_the_changed_cis(
    make_sync: Callable[..., DeviceSync], console: ConsoleEmulator, servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    sync.run()
    touched = mutate(console.inventory, updates=3, new=2)
    status = sync.run()
    assert (status.counts.updated, status.counts.created) == (3, 2)
    companies = {r["sys_id"]: r["name"] for r in servicenow.store.all("core_company")}
    vendors = {r["correlation_id"]: companies.get(r.get("manufacturer", "")) for r in cis(servicenow)}
    for device_id in touched["updated"]:
        assert vendors[f"dfiot-device:{device_id}"] == console.inventory.devices[device_id]["u_vendor"]


def test_deleted_devices_are_retired_not_removed(
    make_sync: Callable[..., DeviceSync], console: ConsoleEmulator, servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    sync.run()
    touched = mutate(console.inventory, deletions=2)
    assert sync.run().counts.retired == 2
    states = {r["correlation_id"]: r["install_status"] for r in cis(servicenow)}
    assert len(states) == 40
    assert {states[f"dfiot-device:{i}"] for i in touched["deleted"]} == {"7"}


def test_cves_open_and_close(
    make_sync: Callable[..., DeviceSync], console: ConsoleEmulator, servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    first = sync.run()
    open_items = [r for r in servicenow.store.all("sn_vul_vulnerable_item") if r["state"] == "1"]
    assert first.counts.cves_opened == len(open_items) > 0
    touched = mutate(console.inventory, cves_found=2, cves_fixed=1)
    status = sync.run()
    assert status.counts.cves_opened == 2 and status.counts.cves_closed >= 1
    closed = {
        r["correlation_id"].split(":")[1] for r in servicenow.store.all("sn_vul_vulnerable_item") if r["state"] == "3"
    }
    assert closed == {str(i) for i in touched["cves_fixed"]}


def vulnerable_items(servicenow: ServiceNowEmulator) -> list[tuple[str, str]]:
    return sorted((r["correlation_id"], r["state"]) for r in servicenow.store.all("sn_vul_vulnerable_item"))


def test_vulnerable_items_written_before_a_crash_are_not_duplicated(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    sync.run()
    items = sorted(r["correlation_id"] for r in servicenow.store.all("sn_vul_vulnerable_item"))
    # The writes landed but the run died before recording them: the CVE state and watermark are gone.
    for row in list(sync.state.rows("cve")):
        sync.state.delete("cve", row["RowKey"])
    sync.state.set_watermark("cves", 0)
    before = servicenow.stats["requests"]
    status = sync.run()
    assert status.error == "" and status.counts.cves_opened == len(items) > 0
    assert sorted(r["correlation_id"] for r in servicenow.store.all("sn_vul_vulnerable_item")) == items
    assert servicenow.stats["requests"] - before == -(-len(items) // 100)  # lookups only, no write


def test_a_refused_vulnerable_item_holds_the_watermark_until_it_lands(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync()
    sync.run()
    reference = vulnerable_items(servicenow)
    servicenow.reset()
    servicenow.store.mandatory["sn_vul_vulnerable_item"] = ("assigned_to",)
    sync = make_sync()
    refused = sync.run()
    assert refused.counts.errors > 0 and not servicenow.store.all("sn_vul_vulnerable_item")
    servicenow.store.mandatory.clear()
    resumed = sync.run()
    assert resumed.error == "" and resumed.counts.errors == 0
    assert vulnerable_items(servicenow) == reference


def test_a_crash_mid_run_resumes_to_the_same_cmdb(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    make_sync().run()
    reference = snapshot(servicenow)
    servicenow.reset()
    sync = make_sync()
    # Past the first batch's company and site look-ups and its IRE call: a crash between two device writes.
    servicenow.faults.configure({"fail_next": [{"kind": "pass", "count": 20}, {"status": 503, "count": 100}]})
    crashed = sync.run()
    assert crashed.error and 0 < len(cis(servicenow)) < 40
    servicenow.faults.clear()
    resumed = sync.run()
    assert resumed.error == ""
    assert snapshot(servicenow) == reference  # nothing lost, nothing duplicated


@pytest.mark.parametrize("requests_per_run", [2, 5])
def test_a_run_stopped_at_its_deadline_resumes_with_every_write_made_once(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator, requests_per_run: int
) -> None:
    def writes() -> tuple[Counter[tuple[str, str]], int]:
        # Sensors go with every batch of the devices they detect, so their count follows the batching.
        devices = Counter({item: n for item, n in servicenow.ire_items.items() if "sensor" not in item[1]})
        return devices, servicenow.stats["batch_items_serviced"]

    make_sync().run()  # the reference: one run with no deadline
    reference = (snapshot(servicenow), vulnerable_items(servicenow))
    written = writes()
    servicenow.reset()
    sync = make_sync()
    runs: list[SyncStatus] = []
    while not runs or runs[-1].stopped:
        assert len(runs) < 100, "the sync never finished"
        # A deadline that passes after this many ServiceNow requests: a stop between any two of its writes.
        sync.deadline = Deadline(requests_per_run, clock=lambda: servicenow.stats["requests"])
        runs.append(sync.run())
        assert runs[-1].error == ""
        assert is_due(sync.state.last_sync(), 60, datetime.now(UTC)) == bool(runs[-1].stopped)  # resumes next tick
    assert len(runs) > 2 and {r.stopped for r in runs[:-1]} >= {"devices"}
    assert any("stopped at the run's deadline (" in note for note in runs[0].notes)
    assert (snapshot(servicenow), vulnerable_items(servicenow)) == reference  # nothing lost
    assert writes() == written  # each device, connection and vulnerable item written once, as in one run
    assert sum(r.counts.created for r in runs) == 40 + 4 and sum(r.counts.updated for r in runs) == 0


def test_status_is_recorded_and_due_follows_the_frequency(make_sync: Callable[..., DeviceSync]) -> None:
    from datetime import datetime, timedelta

    sync = make_sync()
    status = sync.run()
    last = sync.state.last_sync()
    assert last is not None and last.counts == status.counts and last.finished == status.finished
    finished = datetime.fromisoformat(last.finished)
    assert not is_due(last, 60, finished + timedelta(minutes=10))
    assert is_due(last, 60, finished + timedelta(minutes=60))
    assert is_due(None, 60, finished)


def test_sync_commands_run_and_show_status(
    console: ConsoleEmulator,
    servicenow: ServiceNowEmulator,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shared.cli import main
    from shared.settings import get_settings
    from tests.support.settings import console_sync_settings

    environ = console_sync_settings(azurite.connection_string, servicenow, console, TOKEN, SN_PASSWORD)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    assert main(["sync", "status"]) == 0
    assert "no device sync has run yet" in capsys.readouterr().out
    assert main(["sync", "run"]) == 0
    # Not a terminal: progress comes as plain lines, one when each stream starts (then every 10 s).
    progress = capsys.readouterr().out
    for stream in ("devices", "connections", "cves"):
        assert re.search(
            rf"^{stream}: 1 page\(s\), [\d,]+ item\(s\) read; [\d,]+ ServiceNow call\(s\) so far, "
            r"\d+ write\(s\) in flight$",
            progress,
            re.M,
        )
    assert main(["sync", "status"]) == 0
    out = progress + capsys.readouterr().out
    assert out.count("source 'console' (console): last device sync succeeded") == 2
    assert "created 44" in out and "device sync enabled True, every 60 minutes" in out
    get_settings.cache_clear()


def test_a_tick_that_is_not_due_builds_no_clients(azurite: Azurite, tmp_path: Path) -> None:
    """The timer ticks every 5 minutes and the sync runs hourly: a tick reads the sync state and nothing else —
    no Key Vault, console or ServiceNow client is built (their SDKs are not even imported)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.support.settings import app_settings

    environ = app_settings(
        azurite.connection_string,
        DEVICE_SYNC_ENABLED="true",
        CONSOLE_URL="https://localhost:9",
        KEY_VAULT_URL="https://localhost:9",
        KEY_VAULT_CREDENTIAL="emulator",
        DEVICE_SYNC_STATE_TABLE=f"sync{uuid.uuid4().hex[:12]}",
    )
    script = """
import json, logging, sys
from datetime import UTC, datetime
from shared.app.devices import run_scheduled_sync, sync_state
from shared.devices.state import SyncStatus
from shared.settings import load_settings
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
settings = load_settings()
state = sync_state(settings, settings.device_sync.sources[0])
state.ensure()
now = datetime.now(UTC).isoformat()
state.record(SyncStatus(started=now, finished=now))  # a sync just finished
assert run_scheduled_sync(past_due=True, settings=settings) == []
sdks = ("azure.keyvault.secrets", "azure.identity", "azure.mgmt.resourcegraph")
print(json.dumps([m for m in sdks if m in sys.modules]))
"""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environ | {"PATH": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
    assert "device sync tick was past due; the last sync is recent enough, so nothing to do" in done.stdout


def test_the_payloads_are_ones_servicenows_ire_accepts(
    make_sync: Callable[..., DeviceSync], console: ConsoleEmulator, servicenow: ServiceNowEmulator
) -> None:
    """No lookup the OT rule lacks, no correlation-id identity, no name in a reference field, no CI twice in
    a payload (a device in several connections): the emulator refuses each as ServiceNow documents."""
    site = servicenow.store.insert("cmdb_ci_ot_isa_entity", {"name": "Plant A"}, "admin")
    status = make_sync().run()
    assert status.error == "" and status.counts.errors == 0
    inventory = console.inventory
    by_sys = {r["sys_id"]: r for r in cis(servicenow)}
    # IP addresses are CIs their device owns, not lookups or fields of the OT CI.
    addresses = {
        (by_sys[r["owned_by_cmdb_ci"]]["correlation_id"], r["ip_address"])
        for r in servicenow.store.all("cmdb_ci_ip_address")
    }
    expected = {
        (f"dfiot-device:{d['u_id']}", o["u_ip_address"])
        for d in inventory.devices.values()
        for o in d["u_ip_address_objects"]
    }
    assert addresses == expected
    assert not any(r.get("ip_address") or r.get("mac_address") for r in cis(servicenow))
    # The OT entity references its device; a site known in ServiceNow is referenced by its sys_id.
    entities = servicenow.store.all("cmdb_ot_entity")
    assert {e["ot_device"] for e in entities} == set(by_sys)
    plant_a = {d["u_id"] for d in inventory.devices.values() if d.get("u_site_name") == "Plant A"}
    assert {e["isa_entity_site"] for e in entities if e["ire_criterion_attribute"] in {str(i) for i in plant_a}} <= {
        site["sys_id"]
    }
    # The manufacturer is a core_company record.
    companies = {r["sys_id"] for r in servicenow.store.all("core_company")}
    assert {r["manufacturer"] for r in cis(servicenow) if r.get("manufacturer")} <= companies
    assert all(r["discovery_source"] == "MicrosoftDefenderForIoT" and r["last_discovered"] for r in cis(servicenow))


def test_results_are_paired_by_input_index_whatever_their_order(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    make_sync().run()
    reference = snapshot(servicenow)
    servicenow.reset()
    servicenow.ire.shuffle = True
    sync = make_sync()
    assert sync.run().counts.errors == 0
    assert snapshot(servicenow) == reference
    assert {r["RowKey"]: r["sys_id"] for r in sync.state.rows("device")} == {
        r["correlation_id"].split(":", 1)[1]: r["sys_id"] for r in cis(servicenow)
    }


def test_each_source_writes_under_its_own_data_source(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    """sysparm_data_source is the source's own, the one its CIs name as their source (the IRE refuses a CI
    whose source_name is not the payload's data source)."""
    servicenow.store.insert(
        "sys_choice", {"name": "cmdb_ci", "element": "discovery_source", "value": "PlantConsole", "label": "x"}, "admin"
    )
    sync = make_sync()
    sync.data_source = "PlantConsole"
    status = sync.run()
    assert status.error == "" and status.counts.errors == 0
    assert {r["discovery_source"] for r in cis(servicenow)} == {"PlantConsole"}
    assert {r["name"] for r in servicenow.store.all("sys_object_source")} == {"PlantConsole"}


def test_a_vulnerable_item_references_its_cves_entry_by_sys_id(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    """The vulnerability is a reference: an NVD entry where the instance has one, else a third-party entry."""
    known = servicenow.store.insert("sn_vul_nvd_entry", {"id": "CVE-2016-30171", "name": "CVE-2016-30171"}, "admin")
    sync = make_sync()
    assert sync.run().counts.errors == 0
    entries = {
        r["sys_id"]: r["id"] for t in ("sn_vul_nvd_entry", "sn_vul_third_party_entry") for r in servicenow.store.all(t)
    }
    items = servicenow.store.all("sn_vul_vulnerable_item")
    assert items and all(entries[i["vulnerability"]] == i["correlation_id"].rsplit(":", 1)[1] for i in items)
    assert known["sys_id"] in {i["vulnerability"] for i in items}
    assert len(entries) == len({i["correlation_id"].rsplit(":", 1)[1] for i in items})  # one entry per CVE


def test_a_user_who_may_not_read_companies_syncs_devices_without_their_manufacturer(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.emulators.servicenow import server

    monkeypatch.setitem(server.READ_ROLES, "core_company", ("admin",))  # an ACL on the table, as an instance may have
    status = make_sync().run()
    assert status.error == "" and status.counts.errors == 0 and status.counts.created == 44
    assert not any(r.get("manufacturer") for r in cis(servicenow))
    assert any("manufacturer or site name(s) have no ServiceNow record" in note for note in status.notes)
