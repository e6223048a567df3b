"""The device sync's parallel writes against the console and ServiceNow emulators and Azurite: no CI in two
payloads in flight, partial failures, a kill mid-sync, a stop, and alerts beside a sync that fills the
instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess  # the sync in a process of its own, to kill it  # nosec B404
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient

from shared.app import servicenow_client
from shared.defender.console import ConsoleClient
from shared.defender.model import Device
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore, Secret
from shared.platform.times import Deadline
from shared.servicenow import ServiceNowClient
from shared.servicenow.budget import PRIORITY, Budget
from shared.servicenow.settings import ServiceNowConnection
from tests.conftest import SN_PASSWORD, SN_USER
from tools.emulators.console import ConsoleEmulator, generate
from tools.emulators.servicenow import ServiceNowEmulator
from tools.emulators.servicenow.store import OT_CLASSES
from tools.stack.azurite import Azurite, start_azurite

pytestmark = pytest.mark.integration
TOKEN = "Console-Token-2727"
DEVICES = 60


@pytest.fixture
def console(tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(generate(DEVICES, seed=27), token=TOKEN, tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


def client_for(servicenow: ServiceNowEmulator, budget: Budget | None = None) -> ServiceNowClient:
    http = HttpSettings(connect_timeout=2, read_timeout=10, retry_budget_seconds=1, max_attempts=2)
    connection = ServiceNowConnection("default", servicenow.url, "basic", username=SN_USER, ca_bundle=servicenow.ca_pem)
    secrets = EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": SN_PASSWORD})
    return servicenow_client(connection, secrets, http, budget)


class RepeatingPages:
    """The console as a source that lists each page's devices again in the next page (a page boundary that
    moved): the same CIs come up while their first payload may be in flight."""

    def __init__(self, source: ConsoleClient) -> None:
        self.source = source

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def device_pages(self, since: int) -> Iterator[list[Device]]:
        previous: list[Device] = []
        for page in self.source.device_pages(since):
            yield previous[-3:] + page
            previous = page


@pytest.fixture
def make_sync(console: ConsoleEmulator, servicenow: ServiceNowEmulator, azurite: Azurite) -> Callable[..., DeviceSync]:
    table = f"sync{uuid.uuid4().hex[:12]}"

    def make(concurrency: int = 6, budget: Budget | None = None, repeat: bool = False) -> DeviceSync:
        http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
        reader = ConsoleClient.connect(console.url, lambda: Secret(TOKEN), http, ca_bundle=console.ca_pem, page_size=10)
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        settings = DeviceSyncSettings(batch_size=3, page_size=10, concurrency=concurrency)
        source: Any = RepeatingPages(reader) if repeat else reader
        return DeviceSync(settings, source, client_for(servicenow, budget), SyncState(tables.get_table_client(table)))

    return make


def devices_by_key(servicenow: ServiceNowEmulator) -> Counter[str]:
    """Each CI's source native key, as many times as the CMDB holds a CI for it."""
    return Counter(r["id"] for r in servicenow.store.all("sys_object_source"))


def confirmed(sync: DeviceSync) -> dict[str, str]:
    return {str(r["RowKey"]): str(r["sys_id"]) for r in sync.state.rows("device") if r.get("sys_id")}


def in_cmdb(servicenow: ServiceNowEmulator) -> dict[str, str]:
    return {
        r["correlation_id"].removeprefix("dfiot-device:"): r["sys_id"]
        for t in OT_CLASSES
        for r in servicenow.store.all(t)
    }


def test_parallel_payloads_never_write_one_ci_in_two_at_once(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    servicenow.ire_cost.configure({"payload_ms": 40})
    status = make_sync(concurrency=8, repeat=True).run()
    assert status.error == "" and status.counts.errors == 0
    assert servicenow.ire_in_flight.most > 1  # payloads really were in flight together
    assert servicenow.ire_in_flight.overlaps == []  # and never two writing one CI
    assert len(in_cmdb(servicenow)) == DEVICES and max(devices_by_key(servicenow).values()) == 1


def test_a_payload_failing_mid_sync_leaves_exactly_the_confirmed_cis_and_the_next_run_completes(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    servicenow.ire_cost.configure({"payload_ms": 30})
    # Some payloads land, then one fails for good (a 400 is not retried) while others are in flight.
    servicenow.faults.configure({"fail_next": [{"kind": "pass", "count": 30}, {"status": 400, "count": 1}]})
    sync = make_sync(concurrency=4)
    failed = sync.run()
    assert failed.error
    written = in_cmdb(servicenow)
    assert 0 < len(written) < DEVICES
    assert confirmed(sync) == {key: sys_id for key, sys_id in written.items() if key in confirmed(sync)}
    # A CI whose payload landed is in the state, unless its answer was lost with the run (then it is sent
    # again and found by its source key): the state never claims more than the CMDB has.
    assert set(confirmed(sync)) <= set(written)
    resumed = sync.run()
    assert resumed.error == "" and resumed.counts.errors == 0
    assert len(in_cmdb(servicenow)) == DEVICES and confirmed(sync) == in_cmdb(servicenow)
    assert max(devices_by_key(servicenow).values()) == 1


def test_a_stop_mid_sync_finishes_the_payloads_in_flight_and_the_next_run_resumes(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    servicenow.ire_cost.configure({"payload_ms": 100})
    sync = make_sync(concurrency=4)
    threading.Timer(0.5, sync.stop_requested.set).start()  # as Ctrl-C in `sync run` does
    stopped = sync.run()
    assert stopped.stopped == "devices" and stopped.error == ""
    assert any("operator" in note for note in stopped.notes)
    assert set(confirmed(sync)) == set(in_cmdb(servicenow))  # every payload in flight finished and was saved
    sync.stop_requested.clear()
    resumed = sync.run()
    assert resumed.stopped == "" and len(in_cmdb(servicenow)) == DEVICES
    assert resumed.counts.created + stopped.counts.created == DEVICES + 4
    assert max(devices_by_key(servicenow).values()) == 1


def test_a_short_deadline_holds_with_parallel_writes(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    servicenow.ire_cost.configure({"payload_ms": 200})
    sync = make_sync(concurrency=4)
    runs: list[SyncStatus] = []
    while not runs or runs[-1].stopped:
        assert len(runs) < 30, "the sync never finished"
        sync.deadline = Deadline(1.0)
        runs.append(sync.run())
        assert runs[-1].error == ""
        # Past the deadline only by the payloads in flight then (one each) and the saves after them.
        assert runs[-1].duration_seconds < 1.0 + 0.2 * 3 + 2.0
    assert len(runs) > 1 and len(in_cmdb(servicenow)) == DEVICES
    assert sum(r.counts.created for r in runs) == DEVICES + 4
    assert max(devices_by_key(servicenow).values()) == 1


CHILD = """
import json, sys
from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient
from shared.app import servicenow_client
from shared.defender.console import ConsoleClient
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore, Secret
from shared.servicenow.settings import ServiceNowConnection
from pathlib import Path
spec = json.loads(sys.argv[1])
http = HttpSettings(connect_timeout=2, read_timeout=10, retry_budget_seconds=1, max_attempts=2)
reader = ConsoleClient.connect(spec["console"], lambda: Secret(spec["token"]), http, ca_bundle=Path(spec["ca"]),
                               page_size=10)
connection = ServiceNowConnection("default", spec["servicenow"], "basic", username=spec["user"],
                                  ca_bundle=Path(spec["ca"]))
client = servicenow_client(connection, EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": spec["password"]}), http)
state = SyncState(TableServiceClient.from_connection_string(spec["storage"]).get_table_client(spec["table"]))
DeviceSync(DeviceSyncSettings(batch_size=3, page_size=10, concurrency=6), reader, client, state).run()
"""


def test_a_sync_killed_mid_run_loses_nothing_and_duplicates_nothing(
    make_sync: Callable[..., DeviceSync],
    console: ConsoleEmulator,
    servicenow: ServiceNowEmulator,
    azurite: Azurite,
) -> None:
    servicenow.ire_cost.configure({"payload_ms": 150})
    sync = make_sync()  # its state table, for the killed run and the next one
    spec = {
        "console": console.url,
        "servicenow": servicenow.url,
        "ca": str(servicenow.ca_pem),
        "token": TOKEN,
        "user": SN_USER,
        "password": SN_PASSWORD,
        "storage": azurite.connection_string,
        "table": sync.state.table.table_name,
    }
    child = subprocess.Popen(  # noqa: S603 - this interpreter, our own script  # nosec B603
        [sys.executable, "-c", CHILD, json.dumps(spec)], env={**os.environ}, cwd=Path(__file__).parents[2]
    )
    try:
        give_up = time.monotonic() + 60
        while len(in_cmdb(servicenow)) < 10 and child.poll() is None and time.monotonic() < give_up:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # payloads in flight, answers not yet saved
    finally:
        child.wait(10)
    assert 0 < len(in_cmdb(servicenow)) < DEVICES, "the kill came too late to test anything"
    resumed = sync.run()
    assert resumed.error == "" and resumed.counts.errors == 0
    assert len(in_cmdb(servicenow)) == DEVICES and confirmed(sync) == in_cmdb(servicenow)
    assert max(devices_by_key(servicenow).values()) == 1  # every CI once, by its source native key
    assert len(servicenow.store.all("cmdb_ci_nids")) == 4


def test_storage_lost_mid_sync_leaves_the_state_within_what_servicenow_confirmed(
    console: ConsoleEmulator, servicenow: ServiceNowEmulator, tmp_path: Path
) -> None:
    """The sync's storage goes away part-way (its Azurite stopped, its files kept): the run ends failed, no
    state row claims a CI ServiceNow does not have, and once storage is back the next run completes the rest,
    each CI once."""
    servicenow.ire_cost.configure({"payload_ms": 100})
    place, table = tmp_path / "azurite", f"sync{uuid.uuid4().hex[:12]}"

    def sync_on(storage: Azurite) -> DeviceSync:
        tables = TableServiceClient.from_connection_string(storage.connection_string, retry_total=0)
        http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
        reader = ConsoleClient.connect(console.url, lambda: Secret(TOKEN), http, ca_bundle=console.ca_pem, page_size=10)
        settings = DeviceSyncSettings(batch_size=3, page_size=10, concurrency=4)
        sync = DeviceSync(settings, reader, client_for(servicenow), SyncState(tables.get_table_client(table)))
        sync.save_every = 10  # checkpoints within 60 devices: the first one after the loss stops the run
        return sync

    storage = start_azurite(location=place)
    ports = (storage.blob_port, storage.queue_port, storage.table_port)
    try:
        sync = sync_on(storage)

        def pull_the_plug() -> None:
            give_up = time.monotonic() + 60
            while len(in_cmdb(servicenow)) < 15 and time.monotonic() < give_up:
                time.sleep(0.02)
            storage.stop()

        plug = threading.Thread(target=pull_the_plug)
        plug.start()
        try:
            failed: SyncStatus | None = sync.run()
        except AzureError:  # the run's own status could not be stored either
            failed = None
        plug.join()
        assert failed is None or failed.error, failed
        assert 0 < len(in_cmdb(servicenow)) < DEVICES, "storage went away too late to test anything"
    finally:
        storage.stop()
    storage = start_azurite(*ports, location=place)
    try:
        resumed = sync_on(storage)
        assert set(confirmed(resumed)) <= set(in_cmdb(servicenow))  # never more than ServiceNow confirmed
        status = resumed.run()
        assert status.error == "" and status.counts.errors == 0
        assert len(in_cmdb(servicenow)) == DEVICES and confirmed(resumed) == in_cmdb(servicenow)
        assert max(devices_by_key(servicenow).values()) == 1
    finally:
        storage.stop()


def test_alerts_keep_their_share_while_a_sync_fills_the_instance(
    make_sync: Callable[..., DeviceSync], servicenow: ServiceNowEmulator
) -> None:
    """Four transactions, all wanted by a sync of 16 writers; alerts through the same budget go ahead of the
    sync's waiting writes, so an alert waits for one payload at most, not for the sync's queue."""
    payload_seconds = 0.5
    servicenow.ire_cost.configure({"payload_ms": payload_seconds * 1000})
    servicenow.max_transactions = 4
    budget = Budget("default", 4, max_wait=60)
    sync = make_sync(concurrency=16, budget=budget)
    alerts = client_for(servicenow, budget).with_context(**{PRIORITY: 3})
    waits: list[float] = []
    runner = threading.Thread(target=sync.run)
    runner.start()
    try:
        give_up = time.monotonic() + 30
        while budget.in_flight < 4 and time.monotonic() < give_up:  # the sync holds every slot
            time.sleep(0.01)
        assert budget.in_flight == 4, "the sync never filled the instance"
        for number in range(8):
            started = time.monotonic()
            alerts.create_record("incident", {"short_description": f"alert {number} during the sync"})
            waits.append(time.monotonic() - started)
            time.sleep(0.1)
        assert runner.is_alive(), "the sync ended before the alerts were sent"
    finally:
        runner.join(120)
    assert len(waits) == 8 and servicenow.stats["semaphore_rejected"] == 0
    # Served before the sync's dozen waiting writes: one payload's time at most (first come, three or more).
    assert max(waits) < payload_seconds * 1.8
    assert sync.state.last_sync() is not None and sync.state.last_sync().error == ""  # type: ignore[union-attr]


def test_ctrl_c_in_sync_run_stops_cleanly_and_the_next_run_resumes(
    console: ConsoleEmulator,
    servicenow: ServiceNowEmulator,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shared.cli import main
    from shared.settings import get_settings
    from tests.support.settings import console_sync_settings

    environ = console_sync_settings(
        azurite.connection_string,
        servicenow,
        console,
        TOKEN,
        SN_PASSWORD,
        DEVICE_SYNC_BATCH_SIZE="3",
        DEVICE_SYNC_PAGE_SIZE="10",
        DEVICE_SYNC_CONCURRENCY="4",
    )
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    servicenow.ire_cost.configure({"payload_ms": 150})
    before = signal.getsignal(signal.SIGINT)
    threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT)).start()  # the operator's Ctrl-C
    assert main(["sync", "run"]) == 0
    out = capsys.readouterr()
    assert "stopping: the writes in flight finish" in out.err
    assert "stopped in devices" in out.out and 0 < len(in_cmdb(servicenow)) < DEVICES
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is the terminal's again
    servicenow.ire_cost.configure({"payload_ms": 0})
    assert main(["sync", "run"]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert len(in_cmdb(servicenow)) == DEVICES and max(devices_by_key(servicenow).values()) == 1
