"""The console client against the management-console emulator over HTTPS: paging, watermarks, changes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.defender.console import ConsoleClient, ConsoleError
from shared.http.settings import HttpSettings
from shared.platform.secrets import Secret
from tools.emulators.console import ConsoleEmulator, generate, mutate

pytestmark = pytest.mark.integration
TOKEN = "Console-Api-Token-2718"


@pytest.fixture
def console(tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(generate(230, seed=7), token=TOKEN, tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


def client(console: ConsoleEmulator, token: str = TOKEN, page_size: int = 50) -> ConsoleClient:
    http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=5, max_attempts=4)
    return ConsoleClient.connect(
        console.url, lambda: Secret(token), http, ca_bundle=console.ca_pem, page_size=page_size
    )


def test_all_devices_once_in_pages_oldest_first(console: ConsoleEmulator) -> None:
    pages = list(client(console).device_pages(0))
    devices = [d for page in pages for d in page]
    assert len(pages) == math.ceil(230 / 50)
    assert sorted(int(d.id) for d in devices) == sorted(console.inventory.devices)
    assert [(d.last_update, int(d.id)) for d in devices] == sorted((d.last_update, int(d.id)) for d in devices)


def test_watermark_returns_only_what_changed(console: ConsoleEmulator) -> None:
    reader = client(console)
    watermark = max(d.last_update for page in reader.device_pages(0) for d in page)
    assert [d for page in reader.device_pages(watermark) for d in page] == []
    touched = mutate(console.inventory, updates=3, new=2, deletions=4, cves_found=2, cves_fixed=1)
    changed = sorted(int(d.id) for page in reader.device_pages(watermark) for d in page)
    assert changed == sorted(touched["updated"] + touched["new"])
    assert sorted(int(i) for i in reader.deleted_devices(watermark)) == sorted(touched["deleted"])
    cves = {int(row.device_id): row for page in reader.cve_pages(watermark) for row in page}
    assert set(cves) == set(touched["cves_found"] + touched["cves_fixed"])
    assert all(cves[i].cves == () for i in touched["cves_fixed"])


def test_guessed_macs_never_pose_as_confident_ones(console: ConsoleEmulator) -> None:
    devices = [d for page in client(console).device_pages(0) for d in page]
    behind_router = [d for d in devices if d.guessed_macs]
    assert behind_router and all(d.macs == () for d in behind_router)
    assert all(not set(d.macs) & set(d.guessed_macs) for d in devices)


def test_sensors_connections_and_single_device(console: ConsoleEmulator) -> None:
    reader = client(console)
    assert [s.name for s in reader.sensors()] == ["sensor-1", "sensor-2", "sensor-3", "sensor-4"]
    connections = [c for page in reader.connection_pages(0) for c in page]
    assert len(connections) == len(console.inventory.connections)
    device = reader.device(5)
    assert device is not None and device.id == "5" and device.sensor.startswith("sensor-")
    assert reader.device(999_999) is None


def test_wrong_token_is_a_permanent_error_and_never_printed(console: ConsoleEmulator) -> None:
    with pytest.raises(ConsoleError) as info:
        client(console, token="Wrong-Token-1234").sensors()
    assert info.value.status == 401 and not info.value.retryable
    assert "Wrong-Token-1234" not in str(info.value)


def test_transient_failures_are_retried(console: ConsoleEmulator) -> None:
    reader = client(console)
    console.faults.configure({"fail_next": [{"status": 503, "count": 2}]})
    assert len(reader.sensors()) == 4
    assert reader.stats.attempts == 3
