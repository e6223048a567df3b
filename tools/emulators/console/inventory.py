"""Generated OT inventories for the management-console emulator: any size, reproducible by seed.

Devices carry what the integration API v3 returns (``u_*`` fields), including MACs Defender is sure
of and MACs it only guessed (seen through a router); connections, CVEs and sensors come with them.
``mutate`` moves time forward: devices change, appear and are deleted, CVEs are found and fixed.
``raise_alert`` and ``handle_alert`` make the world's one alert stream, which each sensor's API and
Resource Graph show their own way.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DEVICE_TYPES = (
    "PLC",
    "HMI",
    "RTU",
    "DCS Controller",
    "SCADA Server",
    "Engineering Station",
    "Historian",
    "IED",
    "Switch",
    "Workstation",
)
VENDORS = ("Siemens", "Rockwell Automation", "Schneider Electric", "ABB", "Honeywell", "Emerson", "Yokogawa")
PROTOCOLS = ("MODBUS", "DNP3", "S7", "BACnet", "EtherNet/IP", "OPC UA", "IEC-104", "Profinet")
CONNECTION_TYPES = ("One Way", "Two Way", "Multicast")
SITES = ("Plant A", "Plant B")
ZONES = ("Packaging line", "Utilities", "Control room", "Substation")


@dataclass
class Inventory:
    seed: int
    now_ms: int
    sensors: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[int, dict[str, Any]] = field(default_factory=dict)
    connections: list[dict[str, Any]] = field(default_factory=list)
    cves: dict[int, dict[str, Any]] = field(default_factory=dict)  # device id → {"updated": ms, "cves": [...]}
    deleted: dict[int, int] = field(default_factory=dict)  # device id → deleted at (ms)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # as a sensor reports them, plus "handled"
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)


def _mac(rng: random.Random) -> str:
    return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))


def _device(inventory: Inventory, rng: random.Random, device_id: int, at_ms: int) -> dict[str, Any]:
    sensor = inventory.sensors[device_id % len(inventory.sensors)]
    device_type = DEVICE_TYPES[rng.randrange(len(DEVICE_TYPES))]
    ip = f"10.{device_id // 65536 % 256}.{device_id // 256 % 256}.{device_id % 256}"
    behind_router = rng.random() < 0.2
    mac = _mac(rng)
    return {
        "u_id": device_id,
        "u_name": f"{device_type.lower().replace(' ', '-')}-{device_id:06d}",
        "u_vendor": VENDORS[rng.randrange(len(VENDORS))],
        "u_appliance": sensor["u_name"],
        "u_site": SITES[device_id % len(SITES)],
        "u_zone": ZONES[device_id % len(ZONES)],
        "u_groups": [],
        "u_device_type": device_type,
        "u_purdue_layer": rng.choice(["Level 0", "Level 1", "Level 2", "Level 3"]),
        "u_first_discovered": at_ms,
        "u_last_activity": at_ms,
        "u_last_update": at_ms,
        # Behind a router Defender only guesses the MAC; such a device has no confident MAC at all.
        "u_ip_address_objects": [{"u_ip_address": ip, "u_guessed_mac_address": [mac] if behind_router else []}],
        "u_mac_address_objects": [] if behind_router else [{"u_mac_address": mac}],
        "u_protocol_objects": [{"u_protocol": p} for p in rng.sample(PROTOCOLS, rng.randint(1, 3))],
        "u_vlans": [],
        "u_sensor_ids": [{"u_sensor_id": sensor["u_id"]}],
        "u_cm_device_url": f"https://console.local/#/devices/{device_id}",
        "u_device_urls": [],
        "u_firmwares": [
            {
                "u_appliance": sensor["u_name"],
                "u_id": device_id,
                "u_model": f"M-{rng.randrange(100)}",
                "u_version": f"{rng.randrange(1, 9)}.{rng.randrange(10)}",
                "u_serial": f"SN{device_id:08d}",
            }
        ]
        if device_type in ("PLC", "RTU", "IED")
        else [],
    }


def generate(devices: int, *, seed: int = 1, sensors: int = 4, now_ms: int = 1_763_762_400_000) -> Inventory:
    inventory = Inventory(seed=seed, now_ms=now_ms)
    inventory.sensors = [
        {
            "u_id": i,
            "u_name": f"sensor-{i}",
            "u_interface_address": f"192.168.0.{10 + i}",
            "u_connection_state": "SYNCED",
            "u_version": "24.1.3",
            "u_alert_count": 0,
            "u_device_count": 0,
            "u_unhandled_alert_count": 0,
            "u_is_activated": True,
            "u_data_intelligence_version": "2405",
            "u_uid": f"sensor-uid-{i}",
            "u_zone_id": i % len(ZONES),
            "u_is_in_learning_mode": False,
            "u_remote_upgrade_stage": None,
        }
        for i in range(1, sensors + 1)
    ]
    rng = random.Random(seed)  # generated test data, seeded  # nosec B311
    for _ in range(devices):
        device_id = inventory.next_id
        inventory.next_id += 1
        inventory.devices[device_id] = _device(inventory, rng, device_id, now_ms - rng.randrange(1, 30 * 86_400_000))
    ids = list(inventory.devices)
    for device_id in ids:
        for _ in range(rng.randint(0, 2)):
            other = ids[rng.randrange(len(ids))]
            if other != device_id:
                source, target = inventory.devices[device_id], inventory.devices[other]
                inventory.connections.append(
                    {
                        "u_appliance": source["u_appliance"],
                        "u_src_device_id": device_id,
                        "u_src_device_name": source["u_name"],
                        "u_dest_device_id": other,
                        "u_dest_device_name": target["u_name"],
                        "u_connection_type": CONNECTION_TYPES[rng.randrange(3)],
                        "_updated": source["u_last_update"],
                    }
                )
        if rng.random() < 0.1:
            inventory.cves[device_id] = {
                "updated": inventory.devices[device_id]["u_last_update"],
                "cves": [_cve(rng) for _ in range(rng.randint(1, 3))],
            }
    return inventory


def _cve(rng: random.Random) -> dict[str, Any]:
    year = rng.randrange(2015, 2026)
    return {
        "u_cve_id": f"CVE-{year}-{rng.randrange(1000, 99999)}",
        "u_score": f"{rng.uniform(2, 10):.1f}",
        "u_attack_vector": rng.choice(["ADJACENT_NETWORK", "LOCAL", "NETWORK"]),
        "u_description": "A vulnerability in the device firmware.",
        "u_address": "",
    }


def mutate(
    inventory: Inventory,
    *,
    advance_ms: int = 3_600_000,
    updates: int = 0,
    new: int = 0,
    deletions: int = 0,
    cves_found: int = 0,
    cves_fixed: int = 0,
) -> dict[str, list[int]]:
    """Move time forward and change the inventory; returns the ids touched, by kind."""
    with inventory.lock:
        inventory.now_ms += advance_ms
        now = inventory.now_ms
        rng = random.Random(inventory.seed + now)  # generated test data, seeded  # nosec B311
        live = sorted(inventory.devices)
        touched: dict[str, list[int]] = {"updated": [], "new": [], "deleted": [], "cves_found": [], "cves_fixed": []}
        for device_id in rng.sample(live, min(updates, len(live))):
            device = inventory.devices[device_id]
            device["u_last_update"] = device["u_last_activity"] = now
            device["u_vendor"] = VENDORS[(VENDORS.index(device["u_vendor"]) + 1) % len(VENDORS)]
            touched["updated"].append(device_id)
        for _ in range(new):
            device_id = inventory.next_id
            inventory.next_id += 1
            inventory.devices[device_id] = _device(inventory, rng, device_id, now)
            touched["new"].append(device_id)
        for device_id in rng.sample(sorted(set(live) - set(touched["updated"])), min(deletions, len(live))):
            del inventory.devices[device_id]
            inventory.cves.pop(device_id, None)
            inventory.deleted[device_id] = now
            touched["deleted"].append(device_id)
        candidates = sorted(set(inventory.devices) - set(inventory.cves))
        for device_id in rng.sample(candidates, min(cves_found, len(candidates))):
            inventory.cves[device_id] = {"updated": now, "cves": [_cve(rng)]}
            touched["cves_found"].append(device_id)
        with_cves = sorted(d for d in inventory.cves if d not in touched["cves_found"])
        for device_id in rng.sample(with_cves, min(cves_fixed, len(with_cves))):
            inventory.cves[device_id] = {"updated": now, "cves": []}
            touched["cves_fixed"].append(device_id)
        return touched


def raise_alert(
    inventory: Inventory,
    sensor: str,
    title: str,
    severity: str = "Major",
    *,
    at_ms: int | None = None,
    between: tuple[int, int] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A new alert on ``sensor`` (now, unless ``at_ms``); ``fields`` add or override alert fields. Alert ids
    count per sensor, as a sensor numbers its own. ``between``: the world's source and destination device
    (their ids and first addresses, and the destination's site and zone); else device 0, which no world has."""
    if between is not None:
        source, destination = (inventory.devices[d] for d in between)
        fields = {
            "sourceDevice": source["u_id"],
            "destinationDevice": destination["u_id"],
            "sourceDeviceAddress": source["u_ip_address_objects"][0]["u_ip_address"],
            "destinationDeviceAddress": destination["u_ip_address_objects"][0]["u_ip_address"],
            "zoneName": destination["u_zone"],
            "siteName": destination["u_site"],
            **fields,
        }
    with inventory.lock:
        mine = [a for a in inventory.alerts if a["sensorName"] == sensor]
        when = at_ms if at_ms is not None else int(time.time() * 1000)
        if mine and at_ms is None:
            when = max(when, mine[-1]["time"] + 1)  # one alert per millisecond and sensor (the console's ids)
        alert = {
            "id": len(mine) + 1,
            "time": when,
            "title": title,
            "message": f"{title} (detected by {sensor})",
            "severity": severity,
            "engine": "Policy Violation",
            "sourceDevice": 0,
            "destinationDevice": 0,
            "sourceDeviceAddress": "10.0.0.1",
            "destinationDeviceAddress": "10.0.0.2",
            "remediationSteps": ["Check the device's configuration."],
            "additionalInformation": None,
            "sensorName": sensor,
            "zoneName": "Utilities",
            "siteName": "Plant A",
            "handled": False,
            **fields,
        }
        inventory.alerts.append(alert)
        return dict(alert)


def handle_alert(inventory: Inventory, sensor: str, alert_id: int) -> None:
    """Handle (close) an alert, as an analyst would on the sensor or in the portal."""
    with inventory.lock:
        for alert in inventory.alerts:
            if alert["sensorName"] == sensor and alert["id"] == alert_id:
                alert["handled"] = True
