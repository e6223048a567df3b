"""New records and the CIs of their devices (issue 25): ServiceNow calls and asset-index reads per new alert, and
the share of records that name the right CI, on the demo world and on a world with duplicate private IPs.

The product's forwarder (``build_forwarder``, as deployed but in this process: rules in blob storage, the ledger
and the asset index in Azurite, ServiceNow the emulator) forwards alerts raised between the world's devices, as
three paths bring them:

- **cloud**: the Resource Graph view's alert (``DeviceResourceIds``) through the cloud source's parser and the
  intake's message (``origin.devices.related``);
- **console**: the console's alert (``sourceDevice`` / ``destinationDevice``) through its parser and the
  intake's message (``origin.devices``);
- **address**: a sensor-side sender's message, which names its devices by address within site and zone only.

The index holds every device of each view, keyed as the device sync keys them (the cloud and console parsers'
device ids), each world device with one CI inserted in the emulator's CMDB (the IRE identifies a device two
sources see as one CI): what the device sync leaves behind. A record is
right when its ``cmdb_ci`` is the CI of the alert's destination device in that view. The pairs are of devices
with different addresses (in the duplicate world, two devices of one address are in different zones, which
talk to each other through NAT at best, where Defender sees other addresses).

Counted: ServiceNow requests per new alert (the emulator's own count), with and without ``affected_cis``; the
index's point reads per new alert (``AssetDirectory.reads``), cold (every alert names devices not read before)
and warm (the same alerts again as new alerts of another sensor: the process's cache answers).

Run: `.venv/bin/python -m bench.alert_assets [--alerts 300]`; writes bench/results/alert_assets.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from azure.data.tables import TableClient

from bench.forwarding import PASSWORD, USER, product_environ
from shared.alerting.enqueue import alert_envelope
from shared.alerting.forwarder import Forwarder
from shared.alerting.intake import alert_message
from shared.alerting.rules_store import write_rules
from shared.app.forwarding import build_forwarder
from shared.assets.index import IndexWriter
from shared.assets.model import Asset
from shared.defender import cloud, cloud_records, console
from shared.defender.alerts import parse_api_alert
from shared.defender.model import Device
from shared.platform.storage import blob_service
from shared.settings import load_settings
from tools.emulators.console.inventory import ZONES, Inventory, generate, raise_alert
from tools.emulators.resourcegraph.world import alert_document, device_name, documents
from tools.emulators.servicenow import ServiceNowEmulator
from tools.machine import describe
from tools.stack.azurite import Azurite, start_azurite
from tools.stack.localstack import DEMO_DEVICES

RESULTS = Path(__file__).parent / "results" / "alert_assets.md"
SUBSCRIPTION = "00000000-0000-0000-0000-00000000beef"
SOURCES = [
    {"name": "cloud", "kind": "cloud", "subscriptions": [SUBSCRIPTION]},
    {"name": "console-1", "kind": "console", "url": "https://console-1.plant.internal"},
]
PATHS = ("cloud", "console", "address")


def rules(affected: bool) -> dict[str, Any]:
    action = {"name": "incident", "connection": "default", "report": "incident", "affected_cis": affected}
    return {
        "actions": [action],
        "rules": [{"name": "all", "created_at": "2025-01-01T00:00:00+00:00", "actions": ["incident"]}],
    }


def duplicate_ips(world: Inventory) -> Inventory:
    """The same private addresses in every zone: device n's address is that of every device n ± len(ZONES)·k."""
    for device_id, device in world.devices.items():
        device["u_ip_address_objects"][0]["u_ip_address"] = (
            f"10.0.{device_id // len(ZONES) // 250}.{device_id // len(ZONES) % 250 + 1}"
        )
    return world


def index(world: Inventory, emulator: ServiceNowEmulator, table: TableClient) -> dict[tuple[str, int], str]:
    """Every device of the cloud and the console views in the index with a CI; (view, world id) → its sys_id."""
    writer = IndexWriter(table)
    expected: dict[tuple[str, int], str] = {}
    views: list[tuple[str, int, Device | None]] = [
        ("console-1", device_id, console.parse_device(record)) for device_id, record in world.devices.items()
    ]
    rows = [d for d in documents(world, SUBSCRIPTION) if str(d.get("type", "")).lower() == cloud.DEVICES]
    by_name = {row["name"]: row for row in rows}
    views += [("cloud", n, cloud_records.parse_device(by_name[device_name(world, n)])) for n in world.devices]
    cis: dict[int, str] = {}  # one CI per device, whichever source sees it (the IRE identifies it as one)
    for scope, device_id, device in views:
        assert device is not None
        if device_id not in cis:
            cis[device_id] = emulator.store.insert("cmdb_ci_ot_control", {"name": device.name}, "bench")["sys_id"]
        writer.put(Asset.of(scope, device, cis[device_id], "cmdb_ci_ot_control"))
        expected[(scope, device_id)] = cis[device_id]
    writer.flush()
    return expected


def messages(world: Inventory, pairs: list[tuple[int, int]], sensor: str) -> dict[str, list[tuple[bytes, int]]]:
    """Each path's message of an alert between each pair, with the world id of its destination device."""
    found: dict[str, list[tuple[bytes, int]]] = {path: [] for path in PATHS}
    for source, destination in pairs:
        raised = raise_alert(world, sensor, "Unauthorized PLC Programming", between=(source, destination))
        row = alert_document(raised, SUBSCRIPTION, world)
        found["cloud"].append(
            (_body(alert_message(cloud_records.parse_alert(row, "cloud"), "cloud").to_document()), destination)
        )
        parsed = parse_api_alert(raised, closed=False, sensor={})
        found["console"].append((_body(alert_message(parsed, "console-1").to_document()), destination))
        where = {"name": f"{sensor}-sender", "site": raised["siteName"], "zone": raised["zoneName"]}  # its own alerts
        fields = {k: v for k, v in raised.items() if k not in ("sourceDevice", "destinationDevice")}
        found["address"].append((_body(alert_envelope(fields, where)), destination))
    return found


def _address(world: Inventory, device_id: int) -> str:
    return str(world.devices[device_id]["u_ip_address_objects"][0]["u_ip_address"])


def _body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def forwarder(emulator: ServiceNowEmulator, azurite: Azurite, affected: bool) -> tuple[Forwarder, TableClient]:
    environ = {
        **product_environ(emulator, azurite),
        "DEVICE_SYNC_ENABLED": "true",
        "DEVICE_SYNC_STATE_TABLE": f"sync{uuid.uuid4().hex[:10]}",
        "DEFENDER_SOURCES": json.dumps(SOURCES),
    }
    settings = load_settings(environ)
    write_rules(settings.forwarding.rules_location, blob_service(settings.alerts_storage), rules(affected))
    built = build_forwarder(settings)
    table = TableClient.from_connection_string(azurite.connection_string, settings.device_sync.state_table)
    table.create_table()
    return built, table


def world_run(
    name: str, world: Inventory, emulator: ServiceNowEmulator, azurite: Azurite, count: int
) -> dict[Any, Any]:
    """One world: each path's alerts as new alerts, right CIs counted; the calls and reads per new alert."""
    emulator.reset()
    emulator.oauth.users = {USER: PASSWORD}
    result: dict[Any, Any] = {"world": name, "devices": len(world.devices)}
    rng = random.Random(len(world.devices))  # seeded test data  # nosec B311
    ids = list(world.devices)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:  # a device does not talk to its own address (in another zone, through NAT at best)
        source, destination = rng.sample(ids, 2)
        if _address(world, source) != _address(world, destination):
            pairs.append((source, destination))
    for affected in (False, True):
        built, table = forwarder(emulator, azurite, affected)
        expected = index(world, emulator, table)
        assert built.assets is not None
        directory = built.assets.directory
        for warm, sensor in ((False, f"sensor-{uuid.uuid4().hex[:6]}"), (True, f"sensor-{uuid.uuid4().hex[:6]}")):
            bodies = messages(world, pairs, sensor)
            for path in PATHS:
                requests, reads = emulator.stats["requests"], directory.reads
                right = 0
                for body, destination in bodies[path]:
                    outcome = built.handle(body, uuid.uuid4().hex)
                    assert outcome.status == "forwarded", outcome.reason
                    record = emulator.store.get("incident", outcome.outcomes[0].sys_id)
                    scope = "cloud" if path == "cloud" else "console-1"
                    right += record.get("cmdb_ci") == expected[(scope, destination)]
                key = (affected, warm, path)
                result[key] = {
                    "servicenow": (emulator.stats["requests"] - requests) / count,
                    "reads": (directory.reads - reads) / count,
                    "right": right / count,
                }
        for client in built.clients.values():
            client.close()
    return result


def report(results: list[dict[Any, Any]], count: int) -> str:
    lines = [
        "# New records and the CIs of their devices",
        "",
        f"Produced by `.venv/bin/python -m bench.alert_assets{'' if count == 300 else f' --alerts {count}'}`.",
        "",
        describe(),
        f"Per world and path, {count} alerts between random pairs of the world's devices, forwarded as new alerts by "
        "the product's forwarder in this process (rules in blob storage, ledger and asset index in Azurite, "
        "ServiceNow the emulator at 0 ms). Cold: the first pass (its devices not read before by this process, "
        "but the pairs repeat devices: a world of N devices is read at most 2N times); warm: the same alerts "
        "again, from another sensor (new alerts), within the index cache's 300 s.",
        "",
        "| world | path | right CI | ServiceNow requests per new alert | with affected_cis | index reads per new "
        "alert, cold | warm |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for path in PATHS:
            plain, affected = result[(False, False, path)], result[(True, False, path)]
            warm = result[(False, True, path)]
            right = min(result[(a, w, path)]["right"] for a in (False, True) for w in (False, True))
            lines.append(
                f"| {result['world']} ({result['devices']} devices) | {path} | {right:.1%} | "
                f"{plain['servicenow']:.2f} | {affected['servicenow']:.2f} | {plain['reads']:.2f} | "
                f"{warm['reads']:.2f} |"
            )
    lines += [
        "",
        "Right CI: the share of records whose `cmdb_ci` is the CI of the alert's destination device in that view "
        "(the default `configuration_item: destination`), the lowest of the four passes (cold and warm, with and "
        "without `affected_cis`). ServiceNow requests: every request "
        "the emulator served while the alerts were forwarded, ÷ alerts; with `affected_cis: true` the record's "
        "other device (the source) is one `task_ci` row more. Index reads: point reads of the device sync's state "
        "table (`AssetDirectory.reads`) ÷ alerts: one per device for a cloud or console alert (by id), two per "
        "device for a sensor-side alert (the address row, then the device row).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    os.environ["SERVICENOW_DEFAULT_PASSWORD"] = PASSWORD
    azurite = start_azurite()
    with tempfile.TemporaryDirectory() as folder:
        emulator = ServiceNowEmulator(tls_dir=Path(folder), users={USER: PASSWORD}).start()
        try:
            results = [
                world_run("demo world", generate(DEMO_DEVICES), emulator, azurite, args.alerts),
                world_run(
                    "duplicate IPs across zones", duplicate_ips(generate(2000, seed=7)), emulator, azurite, args.alerts
                ),
            ]
        finally:
            emulator.stop()
            azurite.stop()
    text = report(results, args.alerts)
    args.output.write_text(text)
    print(text)
    counts = Counter(
        r[(a, w, p)]["right"] == 1 for r in results for a in (False, True) for w in (False, True) for p in PATHS
    )
    if counts[False]:
        raise SystemExit(f"{counts[False]} pass(es) with a record that names the wrong CI or none")


if __name__ == "__main__":
    main()
