"""The on-premises management console's integration API v3, served from a generated inventory.

``Authorization: <api token>`` (no scheme, as the console expects); ``page`` from 0 and ``size``
(default 50) with a total ``u_count``; ``{timestamp_ms}`` selects what changed after it. Results are
ordered by update time, then id, so paging is stable. The alert API as Microsoft's reference shows it
(tests/fixtures/console): ``/external/v1/alerts`` without the names and addresses, ``/external/v2/alerts``
with them, numeric console ids and no UUID in either; ``PUT /external/v1/alerts/<UUID>`` takes
``<sensorId>-<time>`` (the form of the reference's one example, which it does not explain) and answers 200
``content`` or 500 ``error`` with the reference's messages. Faults as in the other emulators.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tools.emulators.console.inventory import Inventory, generate, mutate
from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply, TlsEmulator
from tools.emulators.tokenapi import token_gate

PREFIX = "/external/v3/integration/"
ALERTS = "/external/v1/alerts"
ALERTS_V2 = "/external/v2/alerts"
# What v2 adds to v1 (management-alert-apis, "Added for V2"); remediationSteps becomes a list there.
V2_FIELDS = (
    "sourceDeviceAddress",
    "destinationDeviceAddress",
    "remediationSteps",
    "sensorName",
    "zoneName",
    "siteName",
)
# v1's alert fields as its published example shows them: the table's remediationSteps (a string) is in no
# example, so the emulator leaves it out rather than guess its form.
V1_FIELDS = (
    "id", "sensorId", "zoneId", "siteId", "time", "title", "message", "severity", "engine", "sourceDevice",
    "destinationDevice", "additionalInformation", "handled",
)  # fmt: skip
NO_SUCH_ALERT = "Couldn't execute request because no alert was found for this UUID"
DEFAULT_TOKEN = "console-api-token"  # noqa: S105 - the local emulator's fixed token, documented in the README  # nosec B105


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class ConsoleEmulator(TlsEmulator):
    thread_name = "console-emulator"

    def __init__(
        self,
        inventory: Inventory | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path = Path(".local/tls"),
    ) -> None:
        self.inventory = inventory or generate(100)
        self.token = token
        self.faults = FaultPlan(time.time)
        self.stats: Counter[str] = Counter()
        self.actions: list[tuple[str, str]] = []  # (alert UUID, action), in order
        self.learned: set[str] = set()  # UUIDs handled and learned
        super().__init__(host, port, tls_dir)
        self._listing: tuple[tuple[int, int, int, int], list[dict[str, Any]]] | None = None

    def secret_values(self) -> set[str]:
        return {self.token}

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        url = urlsplit(target)
        if url.path.startswith("/_emulator/"):
            return self.admin(method, url.path, body)
        serve, answer = token_gate(headers, self.token, self.faults, self.stats)
        if not serve:
            return answer
        if method == "GET" and url.path.rstrip("/") in (ALERTS, ALERTS_V2):
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            return Reply(200, self.alerts(query, v2=url.path.startswith(ALERTS_V2)))
        if method == "PUT" and url.path.startswith(ALERTS + "/"):
            return self.act_on_alert(url.path[len(ALERTS) + 1 :], body)
        if method != "GET" or not url.path.startswith(PREFIX):
            return Reply(404, {"error": "Not Found"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path[len(PREFIX) :].split("/")
        self.stats[parts[0]] += 1
        try:
            with self.inventory.lock:
                return self.route(parts, query)
        except ValueError as exc:
            return Reply(400, {"error": str(exc)})

    def route(self, parts: list[str], query: dict[str, str]) -> Reply:
        inventory = self.inventory
        page, size = int(query.get("page", "0")), int(query.get("size", "50"))
        if page < 0 or not 1 <= size <= 10_000:
            raise ValueError("page must be ≥ 0 and size 1-10000")

        def paged(items: list[dict[str, Any]], key: str) -> Reply:
            return Reply(
                200, {"u_count": len(items), key: [_public(i) for i in items[page * size : (page + 1) * size]]}
            )

        kind, argument = parts[0], parts[1] if len(parts) > 1 else None
        if kind == "sensors":
            return Reply(200, inventory.sensors)
        if kind == "device" and argument is not None:
            device = inventory.devices.get(int(argument))
            return Reply(200, device) if device is not None else Reply(404, {"error": "Device not found"})
        since = int(argument or "0")
        if kind == "devices":
            devices = self._changed_devices(since)
            notification = query.get("notificationType", "0")
            if notification == "1":
                devices = [d for d in devices if d["u_first_discovered"] > since]
            elif notification == "2":
                devices = [d for d in devices if d["u_first_discovered"] <= since]
            if "sensorId" in query:
                devices = [d for d in devices if {"u_sensor_id": int(query["sensorId"])} in d["u_sensor_ids"]]
            return paged(devices, "u_devices")
        if kind == "connections":
            connections = sorted(
                (c for c in inventory.connections if c["_updated"] > since),
                key=lambda c: (c["_updated"], c["u_src_device_id"], c["u_dest_device_id"]),
            )
            return paged(connections, "u_connections")
        if kind == "deleteddevices":
            return Reply(200, [{"u_id": i} for i, at in sorted(inventory.deleted.items()) if at > since])
        if kind == "devicecves":
            rows = []
            for device_id, entry in sorted(inventory.cves.items(), key=lambda e: (e[1]["updated"], e[0])):
                device = inventory.devices.get(device_id)
                if entry["updated"] > since and device is not None:
                    rows.append(
                        {
                            "u_id": device_id,
                            "u_name": device["u_name"],
                            "u_ip_address_objects": device["u_ip_address_objects"],
                            "u_mac_address_objects": device["u_mac_address_objects"],
                            "u_last_activity": device["u_last_activity"],
                            "u_last_update": entry["updated"],
                            "u_cves": entry["cves"],
                        }
                    )
            return paged(rows, "u_device_cves")
        return Reply(404, {"error": "Not Found"})

    def _numbers(self) -> dict[str, tuple[int, int]]:
        """Each sensor's (id, zone id), by name."""
        return {sensor["u_name"]: (sensor["u_id"], sensor["u_zone_id"]) for sensor in self.inventory.sensors}

    def alerts(self, query: dict[str, str], *, v2: bool) -> list[dict[str, Any]]:
        """The world's alerts as the console lists them (every sensor's), numbered by the console; ``state``
        (other values ignored, as documented), ``fromTime``, ``toTime``, ``sensorId``, ``zoneId``, ``siteId``."""
        state = query.get("state") if query.get("state") in ("handled", "unhandled") else None
        low, high = int(query.get("fromTime", "0")), int(query.get("toTime", str(2**62)))
        numbers = self._numbers()
        listed = []
        with self.inventory.lock:
            for number, alert in enumerate(self.inventory.alerts, 1):
                sensor_id, zone_id = numbers.get(alert["sensorName"], (0, 0))
                record = {**alert, "id": number, "sensorId": sensor_id, "zoneId": zone_id, "siteId": 1}
                wanted = {"sensorId": sensor_id, "zoneId": zone_id, "siteId": 1}
                if not low <= alert["time"] <= high or (state is not None and alert["handled"] != (state == "handled")):
                    continue
                if any(key in query and query[key] != str(value) for key, value in wanted.items()):
                    continue
                fields = V1_FIELDS + V2_FIELDS if v2 else V1_FIELDS
                listed.append({key: record[key] for key in fields if key in record})
        return listed

    def act_on_alert(self, uuid: str, body: bytes) -> Reply:
        """``PUT /external/v1/alerts/<UUID>`` with ``{"action": "handle" | "handleAndLearn"}``: 200 and a
        ``content`` message, or 500 and an ``error`` one, as the reference lists them. Which the console checks
        first, the action or the UUID, is not documented: the action here."""
        try:
            action = json.loads(body).get("action")
        except (ValueError, AttributeError):
            action = None
        if action not in ("handle", "handleAndLearn"):
            return Reply(500, {"error": "Invalid action"})
        numbers = self._numbers()
        with self.inventory.lock:
            for alert in self.inventory.alerts:
                if f"{numbers.get(alert['sensorName'], (0, 0))[0]}-{alert['time']}" != uuid:
                    continue
                learn, handled, learned = action == "handleAndLearn", alert["handled"], uuid in self.learned
                if handled and learned:
                    answer = "Alert was already handled and learned" + ("" if learn else ". Ignored handle request")
                elif handled:
                    answer = "Alert was already handled. Handle and learn was performed on the alert"
                    answer = answer if learn else "Alert was already handled"
                else:
                    answer = "Alert update request finished successfully"
                alert["handled"] = True
                if learn:
                    self.learned.add(uuid)
                self.stats["alert_actions"] += 1
                self.actions.append((uuid, action))
                return Reply(200, {"content": answer})
        return Reply(500, {"error": NO_SUCH_ALERT})

    def _changed_devices(self, since: int) -> list[dict[str, Any]]:
        """Devices updated after ``since``, oldest first; cached until the inventory changes, because a
        client pages through the same listing hundreds of times on a large inventory."""
        key = (since, self.inventory.now_ms, len(self.inventory.devices), len(self.inventory.deleted))
        if self._listing is None or self._listing[0] != key:
            devices = [d for d in self.inventory.devices.values() if d["u_last_update"] > since]
            devices.sort(key=lambda d: (d["u_last_update"], d["u_id"]))
            self._listing = (key, devices)
        return self._listing[1]

    def admin(self, method: str, path: str, body: bytes) -> Reply:
        name = path[len("/_emulator/") :]
        spec = json.loads(body or b"{}")
        if name == "faults":
            return Reply(200, self.faults.admin(method, spec))
        if name == "mutate" and method == "POST":
            return Reply(200, mutate(self.inventory, **spec))
        if name == "stats":
            return Reply(200, dict(self.stats))
        return Reply(404, {"error": path})
