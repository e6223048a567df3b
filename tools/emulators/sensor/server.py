"""A locally managed OT sensor's REST API, serving one sensor's view of a generated inventory.

The same world the console and Resource Graph emulators show (:mod:`tools.emulators.console.inventory`),
as the sensor that sees part of it: its devices (``GET /api/v1/devices``), their connections
(``/api/v1/devices/connections`` with ``discoveredAfter``), the CVEs it found, keyed by IP address
(``/api/v1/devices/cves``), and its alerts (``/api/v1/alerts`` and ``/api/v2/alerts``, which adds the
device addresses and remediation steps as a list, with ``state=handled|unhandled`` and ``fromTime``/``toTime``
in epoch milliseconds). ``Authorization: <API token>``, as the sensor expects. No paging: the sensor has none.
Only the fields and values Microsoft's sensor API reference shows (tests/fixtures/sensor): no sensor, zone or
site names in any alert (the console's v2 has those), protocols as ``{id, name, ipAddresses}``, device types
and attack vectors from the reference's lists. Faults as in the other emulators.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tools.emulators.console.inventory import Inventory, generate, handle_alert, raise_alert
from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply, TlsEmulator
from tools.emulators.tokenapi import token_gate

DEFAULT_TOKEN = "sensor-api-token"  # noqa: S105 - the local emulator's fixed token  # nosec B105
V2_ONLY = ("sourceDeviceAddress", "destinationDeviceAddress", "remediationSteps")
NOT_ON_THE_SENSOR = ("handled", "sensorName", "zoneName", "siteName")  # the world's; the console's v2 lists them
ATTACK_VECTORS = {"NETWORK": "Network", "ADJACENT_NETWORK": "Adjacent Network", "LOCAL": "Local"}
SENSOR_TYPES = {"SCADA Server": "Server"}  # the world's one type the sensor's type list has not
# The world's protocol names in the sensor reference's spelling of them.
SENSOR_PROTOCOLS = {"S7": "Siemens S7", "BACnet": "BACNet", "IEC-104": "IEC-60870", "Profinet": "Profinet Real-Time"}


class SensorEmulator(TlsEmulator):
    thread_name = "sensor-emulator"

    def __init__(
        self,
        inventory: Inventory | None = None,
        *,
        sensor: str = "sensor-1",
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path = Path(".local/tls"),
    ) -> None:
        self.inventory = inventory or generate(100)
        self.sensor = sensor
        self.token = token
        self.faults = FaultPlan(time.time)
        self.stats: Counter[str] = Counter()
        self.extra_cves: list[dict[str, Any]] = []  # CVEs for addresses no device of the sensor has
        super().__init__(host, port, tls_dir)

    def secret_values(self) -> set[str]:
        return {self.token}

    # -- the world -------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        with self.inventory.lock:
            return [d for d in self.inventory.devices.values() if d["u_appliance"] == self.sensor]

    def raise_alert(self, title: str, severity: str = "Major", **fields: Any) -> dict[str, Any]:
        """A new alert on this sensor, now, in the world's alert stream."""
        return raise_alert(self.inventory, self.sensor, title, severity, **fields)

    def handle_alert(self, alert_id: int) -> None:
        handle_alert(self.inventory, self.sensor, alert_id)

    # -- the wire --------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply | None:
        url = urlsplit(target)
        if url.path.startswith("/_emulator/"):
            return self.admin(method, url.path, body)
        serve, answer = token_gate(headers, self.token, self.faults, self.stats)
        if not serve:
            return answer
        if method != "GET":
            return Reply(405, {"error": "Method Not Allowed"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.stats[url.path] += 1
        try:
            return self.route(url.path.rstrip("/"), query)
        except ValueError as exc:
            return Reply(400, {"error": str(exc)})

    def route(self, path: str, query: dict[str, str]) -> Reply:
        if path in ("/api/v1/alerts", "/api/v2/alerts"):
            return Reply(200, self._alerts(query, v2=path.startswith("/api/v2")))
        if path == "/api/v1/devices":
            return Reply(200, [self._device(d) for d in sorted(self.devices(), key=lambda d: d["u_id"])])
        if path == "/api/v1/devices/connections":
            after = int(query.get("discoveredAfter", "0"))
            ids = {d["u_id"] for d in self.devices()}
            with self.inventory.lock:
                links = [
                    {
                        "firstDeviceId": c["u_src_device_id"],
                        "secondDeviceId": c["u_dest_device_id"],
                        "lastSeen": c["_updated"],
                        "discovered": c["_updated"],
                        "ports": [502],
                        "protocols": [{"name": "modbus", "commands": ["Read Coils"]}],
                    }
                    for c in self.inventory.connections
                    if c["_updated"] > after and c["u_src_device_id"] in ids and c["u_dest_device_id"] in ids
                ]
            return Reply(200, links)
        if path == "/api/v1/devices/cves":
            top = int(query.get("top", "100"))
            by_ip: list[dict[str, Any]] = []
            with self.inventory.lock:
                for device_id, entry in sorted(self.inventory.cves.items()):
                    device = self.inventory.devices.get(device_id)
                    if device is None or device["u_appliance"] != self.sensor:
                        continue
                    for ip in (o["u_ip_address"] for o in device["u_ip_address_objects"]):
                        by_ip += [
                            {
                                "cveId": c["u_cve_id"],
                                "ipAddress": ip,
                                "score": c["u_score"],
                                "attackVector": ATTACK_VECTORS[c["u_attack_vector"]],
                                "description": c["u_description"],
                            }
                            for c in entry["cves"][:top]
                        ]
            return Reply(200, by_ip + list(self.extra_cves))
        return Reply(404, {"error": "Not Found"})

    def _alerts(self, query: dict[str, str], *, v2: bool) -> list[dict[str, Any]]:
        state = query.get("state")
        if state not in (None, "handled", "unhandled"):
            raise ValueError("state must be handled or unhandled")
        low, high = int(query.get("fromTime", "0")), int(query.get("toTime", str(2**62)))
        with self.inventory.lock:
            alerts = [
                dict(a)
                for a in self.inventory.alerts
                if a["sensorName"] == self.sensor
                and low <= a["time"] <= high
                and (state is None or a["handled"] == (state == "handled"))
            ]
        for alert in alerts:
            for key in NOT_ON_THE_SENSOR + (() if v2 else V2_ONLY):  # handled: said by the state filter only
                alert.pop(key, None)
        return alerts

    def _device(self, device: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": device["u_id"],
            "name": device["u_name"],
            "type": SENSOR_TYPES.get(device["u_device_type"], device["u_device_type"]),
            "vendor": device["u_vendor"],
            "ipAddresses": [o["u_ip_address"] for o in device["u_ip_address_objects"]],
            "macAddresses": [o["u_mac_address"] for o in device["u_mac_address_objects"]],
            "operatingSystem": None,
            "engineeringStation": device["u_device_type"] == "Engineering Station",
            "scanner": False,
            "authorized": True,
            "protocols": [
                {
                    "id": number,
                    "name": SENSOR_PROTOCOLS.get(p["u_protocol"], p["u_protocol"]),
                    "ipAddresses": [o["u_ip_address"] for o in device["u_ip_address_objects"]],
                }
                for number, p in enumerate(device["u_protocol_objects"], 1)
            ],
            "firmware": [
                {"serial": f["u_serial"], "model": f["u_model"], "firmwareVersion": f["u_version"]}
                for f in device["u_firmwares"]
            ],
            "hasDynamicAddress": False,
        }

    def admin(self, method: str, path: str, body: bytes) -> Reply:
        name = path[len("/_emulator/") :]
        spec = json.loads(body or b"{}")
        if name == "faults":
            return Reply(200, self.faults.admin(method, spec))
        if name == "alerts" and method == "POST":
            return Reply(200, self.raise_alert(**spec))
        if name == "handle" and method == "POST":
            self.handle_alert(int(spec["id"]))
            return Reply(200, {"handled": spec["id"]})
        if name == "stats":
            return Reply(200, dict(self.stats))
        return Reply(404, {"error": path})
