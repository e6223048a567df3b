"""The demo `make run` plays on the local stack: alerts in, ServiceNow records out, told plainly.

Applies demo forwarding rules, enqueues a realistic set of Defender for IoT alerts (several
severities, engines and protocols, a sensor going offline, a duplicate, a malformed message), waits
for the local host to process them, and prints which alerts became which ServiceNow records, which
were filtered by which rule, and what went to the poison queue and why; it ends with `status`.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.alerting.enqueue import alert_envelope, enqueue_alerts
from shared.alerting.intake import alert_message, system_message
from shared.alerting.poison import PoisonEntry, poison_queue_name, receive_all, release
from shared.alerting.rules import evaluate, parse_rules, stamp
from shared.alerting.rules_store import read_rules, write_rules
from shared.app.devices import build_sync
from shared.app.intake import run_intake
from shared.app.status import gather_status
from shared.app.writeback import run_writeback
from shared.cli.context import QUICK_STORAGE, storage_problem
from shared.cli.status import plain_lines
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from shared.defender.cloud import ALERTS, DEVICES, SITE_SENSORS, VULNERABILITIES
from shared.defender.cloud_records import parse_alert, parse_sensor
from shared.platform.storage import blob_service, queue_service
from shared.settings import Settings
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.servicenow import ServiceNowEmulator
from tools.emulators.servicenow.store import OT_CLASSES

DEMO_RULES: dict[str, Any] = {
    "version": 1,
    "actions": [
        {
            "name": "ot-incident",
            "connection": "default",
            "report": "incident",
            "fields": {"category": "security", "assignment_group": "OT Security"},
        },
        {"name": "soc-security-incident", "connection": "default", "report": "full", "table": "sn_si_incident"},
    ],
    "rules": [
        {"name": "major-and-above", "minimal_severity": "Major", "actions": ["ot-incident"]},
        {
            "name": "malware-to-soc",
            "minimal_severity": "Minor",
            "engines": ["Malware"],
            "actions": ["soc-security-incident"],
        },
        {"name": "dnp3-minor", "minimal_severity": "Minor", "protocols": ["DNP3"], "actions": ["ot-incident"]},
        {
            "name": "sensor-health",
            "alert_notifications": False,
            "system_notifications": True,
            "actions": ["ot-incident"],
        },
    ],
}
SENSOR = {
    "name": "sensor-plant-a-1",
    "id": 1,
    "site": "Plant A",
    "zone": "Packaging line",
    "url": "https://sensor-plant-a-1.ot.example/",
}


def demo_alerts(now_ms: int) -> list[dict[str, Any]]:
    def alert(i: int, severity: str, engine: str, title: str, message: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": (now_ms // 1000) * 100 + i,  # unique per run: the ledger outlives the emulator
            "time": now_ms + i,
            "title": title,
            "message": message,
            "severity": severity,
            "engine": engine,
            "sourceDeviceAddress": f"10.10.1.{10 + i}",
            "destinationDeviceAddress": "10.10.2.5",
            **extra,
        }

    return [
        alert(
            1,
            "Critical",
            "Policy Violation",
            "Unauthorized PLC Programming",
            "A PLC was programmed by an unauthorized engineering station (S7).",
            remediationSteps=["Verify the engineering station is authorized", "Compare the PLC program"],
        ),
        alert(
            2,
            "Major",
            "Protocol Violation",
            "Illegal MODBUS Operation (Exception Raised by Master)",
            "A MODBUS master sent an illegal function code.",
        ),
        alert(
            3,
            "Minor",
            "Malware",
            "Suspicion of Malicious Activity (Industroyer)",
            "Traffic matched a known Industroyer pattern over DNP3.",
        ),
        alert(
            4,
            "Warning",
            "Anomaly",
            "Unusual Traffic Detected on BACnet",
            "BACnet (47808) traffic outside the learned baseline.",
            additionalInformation={
                "description": "External Addresses",
                "information": ["170.60.50.201 over port BACnet (47808)"],
            },
        ),
        alert(
            5,
            "Minor",
            "Operational",
            "Device is Suspected to be Disconnected (Unresponsive)",
            "The HMI has not answered for 30 minutes.",
        ),
        alert(
            6,
            "Minor",
            "Protocol Violation",
            "DNP3 Unsolicited Response Without Request",
            "An outstation sent an unsolicited DNP3 response.",
        ),
    ]


def cloud_world(graph: ResourceGraphEmulator, now_ms: int) -> list[dict[str, Any]]:
    """What the emulated cloud holds: two alerts raised now and two sensors, one of them offline."""
    started = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    run = now_ms // 1000

    def cloud_alert(number: int, severity: str, title: str, source: str) -> dict[str, Any]:
        name = f"{run:08d}-0000-4000-8000-{number:012d}"[-36:]
        return {
            "id": f"/subscriptions/{graph.subscription}/providers/Microsoft.IoTSecurity/locations/westeurope/"
            f"deviceGroups/default/alerts/{name}",
            "name": name,
            "type": ALERTS,
            "properties": {
                "displayName": title,
                "description": f"{title}, reported by a cloud-connected sensor.",
                "severity": severity,
                "status": "New",
                "startTimeUtc": started,
                "endTimeUtc": started,
                "alertType": "IoT_PolicyViolation",
                "productComponentName": "POLICY_VIOLATION",
                "extendedProperties": {
                    "SensorId": "sensor-plant-c-1",
                    "SourceDeviceAddress": source,
                    "DestinationDeviceAddress": "10.30.0.2",
                },
            },
        }

    def sensor(name: str, status: str) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{graph.subscription}/providers/Microsoft.IoTSecurity/locations/westeurope/"
            f"sites/plant-c/sensors/{name}",
            "name": name,
            "type": SITE_SENSORS,
            "properties": {"sensorStatus": status, "connectivityTime": started, "zone": "Utilities"},
        }

    return [
        cloud_alert(1, "High", "Unauthorized Internet Connectivity Detected", "10.30.0.17"),
        cloud_alert(2, "Medium", "Unauthorized Device Connected to the Network", "10.30.0.23"),
        *between_devices(graph, cloud_alert(3, "High", "Unauthorized PLC Program Upload", "")),
        sensor("sensor-plant-c-1", "Ok"),
        sensor("sensor-plant-c-2", "Disconnected"),
    ]


def between_devices(graph: ResourceGraphEmulator, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The alert between two of the world's cloud devices (the device sync puts them in the CMDB first, so its
    record names the destination's CI), as the cloud lists them: DeviceResourceIds and their addresses."""
    with graph.lock:
        vulnerable = {
            str(v.document["properties"].get("deviceId")) for v in graph.by_type.get(VULNERABILITIES, {}).values()
        }
        found = sorted(graph.by_type.get(DEVICES, {}).values(), key=lambda d: str(d.document["id"]))
    # The destination one with CVEs, so that the record shows them.
    targets = [d for d in found if d.document["name"] in vulnerable] or found
    sources = [d for d in found if d is not targets[0]] if targets else []
    if not sources:
        return []
    devices = [sources[0], targets[0]]
    extended = alert["properties"]["extendedProperties"]
    for role, stored in zip(("Source", "Destination"), devices, strict=True):
        addresses = stored.document["properties"].get("nics") or []
        address = next((str(n.get("ipv4Address", "")) for n in addresses if isinstance(n, dict)), "")
        extended[f"{role}DeviceAddress"] = address
    extended["DeviceResourceIds"] = [str(d.document["id"]) for d in devices]
    return [alert]


def run_demo(
    settings: Settings, emulator: ServiceNowEmulator, graph: ResourceGraphEmulator, timeout: float = 90.0
) -> str:
    """Play the demo and return the report."""
    synced = device_sync_report(settings, emulator)  # the CMDB first: new records name their devices' CIs
    location, blobs = settings.forwarding.rules_location, blob_service(settings.alerts_storage)
    now = datetime.now(UTC)
    write_rules(location, blobs, stamp(DEMO_RULES, read_rules(location, blobs), now))
    time.sleep(0.01)  # alerts raised after the rules were created
    now_ms = int(time.time() * 1000) + 1000
    alerts = demo_alerts(now_ms)
    documents = [alert_envelope(a, SENSOR) for a in alerts]
    documents.append(alert_envelope(alerts[1], SENSOR))  # the MODBUS alert, enqueued twice
    documents.append(
        {
            "schema": SCHEMA,
            "kind": "system",
            "sensor": {"name": "sensor-plant-b-2", "site": "Plant B"},
            "system": {"status": "offline", "time": now_ms + 10, "message": "No heartbeat for 5 minutes"},
        }
    )
    service = queue_service(settings.alerts_storage)
    queue = service.get_queue_client(settings.alerts_queue)
    enqueue_alerts(queue, documents)
    # A message the enqueuer would refuse, sent around it the way a broken script might.
    queue.send_message(
        base64.b64encode(
            b'{"schema": "defender-iot-servicenow/alert-message/v1", "kind": "alert", '
            b'"sensor": {"name": "sensor-plant-a-1"}, "alert": {"id": 6000}}'
        ).decode()
    )
    # The cloud path: what Defender raised in Azure, taken in by the intake (its timer runs it every minute).
    world = cloud_world(graph, now_ms)
    graph.put(*world)
    # The connected sensor keeps in contact while the stack runs (an hour-long `make run` included).
    graph.heartbeats |= {str(d["id"]).lower() for d in world if d["properties"].get("sensorStatus") == "Ok"}
    intake_cycle(settings)
    documents += [
        alert_message(parse_alert(row, "cloud"), "cloud").to_document() for row in world if row["type"] == ALERTS
    ]
    documents.append(system_message(parse_sensor(world[-1], now), now).to_document())
    wait_until_drained(queue, emulator, timeout)
    poison = service.get_queue_client(poison_queue_name(settings.alerts_queue))
    lines = report(settings, emulator, documents, poison, since=now - timedelta(seconds=1), synced=synced)
    closing = close_in_the_cloud(settings, emulator, graph, world[0], queue, timeout)
    resolved = resolve_in_servicenow(settings, emulator, graph, world[1])
    return "\n".join([lines, closing, resolved, "", *status_report(settings)])


def status_report(settings: Settings) -> list[str]:
    """``status`` as the operator would run it next: the demo's poison message shows as WARN."""
    try:
        status = gather_status(settings, QUICK_STORAGE)
    except AzureError as exc:
        return [f"status: {storage_problem(exc)}"]
    return [
        "Status (`python -m shared --settings local.settings.json status`):",
        *(f"    {line}" for line in plain_lines(status)),
    ]


def intake_cycle(settings: Settings) -> None:
    """One intake cycle now, rather than at the timer's next minute; a failed source is told, not raised."""
    try:
        run_intake(settings)
    except RuntimeError as exc:
        print(f"alert intake: {exc}", flush=True)


def close_in_the_cloud(
    settings: Settings,
    emulator: ServiceNowEmulator,
    graph: ResourceGraphEmulator,
    alert: dict[str, Any],
    queue: QueueClient,
    timeout: float,
) -> str:
    """An OT engineer closes an alert in Defender; the next intake cycle resolves its record."""
    closed = json.loads(json.dumps(alert))
    closed["properties"]["status"] = "Closed"
    graph.put(closed)
    intake_cycle(settings)
    wait_until_drained(queue, emulator, timeout)
    title = alert["properties"]["displayName"]
    resolved = [
        r
        for r in emulator.store.all("incident")
        if str(r.get("correlation_id", "")).endswith(f":{alert['name']}:ot-incident") and r.get("state") == "6"
    ]
    outcome = (
        f"{resolved[0].get('number', '')} resolved: {resolved[0].get('close_notes', '')}"
        if resolved
        else "no record resolved yet (see the host log)"
    )
    return f"Closed in the cloud: {title}\n    → {outcome}"


def resolve_in_servicenow(
    settings: Settings, emulator: ServiceNowEmulator, graph: ResourceGraphEmulator, alert: dict[str, Any]
) -> str:
    """An analyst resolves a record in ServiceNow; the next write-back cycle closes its alert in the cloud."""
    title = alert["properties"]["displayName"]
    records = [
        r
        for r in emulator.store.all("incident")
        if str(r.get("correlation_id", "")).endswith(f":{alert['name']}:ot-incident")
    ]
    if not records:
        return f"Resolved in ServiceNow: {title}\n    → no record to resolve (see the host log)"
    record = records[0]
    values = {"state": "6", "close_code": "Solved (Permanently)", "close_notes": "Checked with the plant: fixed"}
    emulator.store.update("incident", record["sys_id"], values, "analyst")
    try:
        run_writeback(settings)  # the alert_intake timer runs it after every intake cycle
    except RuntimeError as exc:
        return f"Resolved in ServiceNow: {record.get('number', '')}\n    → write-back failed: {exc}"
    status = (graph.get(alert["id"]) or {}).get("properties", {}).get("status", "?")
    return (
        f"Resolved in ServiceNow: {record.get('number', '')} ({title})\n"
        f"    → alert closed in the cloud (Resource Manager; its status is now {status})"
    )


def wait_until_drained(queue: QueueClient, emulator: ServiceNowEmulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        pending = queue.get_queue_properties().approximate_message_count or 0
        busy = pending > 0
        if not busy and quiet_since is None:
            quiet_since = time.monotonic()
        if busy:
            quiet_since = None
        if quiet_since is not None and time.monotonic() - quiet_since > 3:
            return
        time.sleep(0.5)


def device_sync_report(settings: Settings, emulator: ServiceNowEmulator) -> list[str]:
    """Run the device sync of each source once (the timer would at its next tick) and show its status."""
    if not settings.device_sync.enabled:
        return ["Device sync: disabled (DEVICE_SYNC_ENABLED)."]
    lines = []
    for source in settings.device_sync.sources:
        status = build_sync(settings, source).run()
        counts = status.counts
        lines.append(
            f"Device sync from source '{source.name}' ({source.kind}) "
            f"{'FAILED: ' + status.error if status.error else 'finished'} in {status.duration_seconds:.1f} s "
            f"({status.servicenow_calls} ServiceNow calls): created {counts.created}, updated {counts.updated}, "
            f"unchanged {counts.unchanged}, retired {counts.retired}, relations {counts.relations}, "
            f"CVEs opened {counts.cves_opened}, errors {counts.errors}"
        )
        lines += [f"    note: {note}" for note in status.notes]
    devices = sum(len(emulator.store.all(t)) for t in OT_CLASSES)
    return [
        *lines,
        f"    CMDB now: {devices} OT devices, {len(emulator.store.all('cmdb_ci_nids'))} sensors, "
        f"{len(emulator.store.all('cmdb_ci_network_adapter'))} network adapters, "
        f"{len(emulator.store.all('cmdb_rel_ci'))} relations, "
        f"{len(emulator.store.all('sn_vul_vulnerable_item'))} vulnerable items",
        "    `python -m shared --settings local.settings.json sync status` shows it again.",
    ]


def configuration_item(emulator: ServiceNowEmulator, record: dict[str, Any]) -> list[str]:
    """The record's CI as the instance shows it (its name and class) and the description's CVE lines."""
    sys_id = record.get("cmdb_ci")
    if not sys_id:
        missing = "not in the CMDB when this record was written" in str(record.get("description", ""))
        return ["      no Configuration item: the asset was not in the CMDB yet"] if missing else []
    found = next(((t, c) for t in OT_CLASSES for c in emulator.store.all(t) if c["sys_id"] == sys_id), None)
    name, table = (found[1].get("name", sys_id), found[0]) if found else (sys_id, "cmdb_ci")
    # The asset section's CVE line of the CI's device (the demo's actions name the destination's): after its summary.
    lines = str(record.get("description", "")).splitlines()
    after = {line.split(":", 1)[0]: lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if ": " in line}
    cves = after.get("Destination") or after.get("Source")
    return [f"      Configuration item: {name} ({table})", *([f"      {cves}"] if cves else [])]


def report(
    settings: Settings,
    emulator: ServiceNowEmulator,
    documents: list[dict[str, Any]],
    poison: QueueClient,
    since: datetime,
    synced: list[str],
) -> str:
    applied = read_rules(settings.forwarding.rules_location, blob_service(settings.alerts_storage))
    rules = parse_rules(applied, [c.name for c in settings.connections])
    records = {
        (r.get("correlation_id") or ""): (table, r)
        for table in ("incident", "sn_si_incident")
        for r in emulator.store.all(table)
    }
    notes: dict[str, int] = {}
    for note in emulator.store.all("sys_journal_field"):
        notes[note["element_id"]] = notes.get(note["element_id"], 0) + 1
    lines = ["", "Demo: Defender for IoT alerts → ServiceNow", "=" * 44]
    seen: set[str] = set()
    for document in documents:
        message = parse_message(json.dumps(document).encode())
        label = (
            f"{message.alert.severity.label:<8} {message.alert.title}"
            if message.alert
            else f"System   sensor {message.sensor.name} went {message.system.status if message.system else '?'}"
        )
        key = f"{message.sensor.name}:{message.alert_id}"
        if key in seen:
            lines.append(f"{label}\n    duplicate enqueue → no new record (work note added to the open one)")
            continue
        seen.add(key)
        decision = evaluate(rules, message)
        if not decision.actions:
            reasons = "; ".join(f"{rule}: {why}" for rule, why in decision.skipped.items())
            lines.append(f"{label}\n    filtered — {reasons}")
            continue
        lines.append(f"{label}\n    rules {', '.join(decision.rules)}")
        for action in decision.actions:
            found = [
                (t, r)
                for cid, (t, r) in records.items()
                if cid.endswith(f":{message.alert_id or ''}:{action.name}")
                or (
                    message.kind == "system"
                    and cid.startswith(f"dfiot:system:{message.sensor.id or message.sensor.name}:")
                    and cid.endswith(action.name)
                )
            ]
            for table, record in found:
                extra = f", {notes[record['sys_id']]} work note(s)" if record["sys_id"] in notes else ""
                lines.append(
                    f"    → {table} {record.get('number', '')} ({record['sys_id']}): "
                    f"{record.get('short_description', '')}{extra}"
                )
                lines += configuration_item(emulator, record)
            if not found:
                lines.append(f"    → {action.name}: no record yet (deferred? see the host log)")
    lines.append("")
    received = list(receive_all(poison, hide_seconds=30))
    release(poison, received)
    # .azurite/ keeps earlier runs' messages; show this run's.
    poisoned = [m for m in received if m.inserted_on is None or m.inserted_on >= since]
    older = len(received) - len(poisoned)
    kept = f" ({older} older one(s) kept from earlier runs)" if older else ""
    lines.append(f"Poison queue '{poison.queue_name}': {len(poisoned)} message(s) from this run{kept}")
    for queued in poisoned:
        entry = PoisonEntry.decode(queued.content)
        lines.append(f"    {entry.alert}: {entry.reason}")
    lines.append("")
    lines += synced
    lines.append(
        f"ServiceNow emulator: {emulator.url} (user svc_defender); try "
        f"curl --cacert {emulator.ca_pem} -u svc_defender:Emulator-Passw0rd "
        f"'{emulator.url}/api/now/table/incident?sysparm_fields=number,short_description'"
    )
    return "\n".join(lines)
