"""The cloud's view of a generated inventory (:mod:`tools.emulators.console.inventory`): the same
devices, sensors and CVEs the console emulator serves, as the ARM documents Resource Graph lists in
``iotsecurityresources``. One world, several views: a device keeps its identity across them (its
resource name is a GUID derived from the world's seed and its console id)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tools.emulators.console.inventory import SITES, ZONES, Inventory

DEVICES = "microsoft.iotsecurity/locations/devicegroups/devices"
VULNERABILITIES = "microsoft.iotsecurity/locations/devicegroups/vulnerabilities"
SENSORS = "microsoft.iotsecurity/locations/sites/sensors"
ALERTS = "microsoft.iotsecurity/locations/devicegroups/alerts"
# The sensor's severities as the cloud names them (the product maps them back).
CLOUD_SEVERITY = {"Critical": "High", "Major": "Medium", "Minor": "Low", "Warning": "Informational"}
# The sensor's engines as the cloud's productComponentName names them.
COMPONENT = {
    "Malware": "MALWARE",
    "Anomaly": "ANOMALY",
    "Protocol Violation": "PROTOCOL_VIOLATION",
    "Policy Violation": "POLICY_VIOLATION",
    "Operational": "OPERATIONAL",
}
PURDUE = {"Level 0": "ProcessControl", "Level 1": "ProcessControl", "Level 2": "Supervisory", "Level 3": "Enterprise"}
WORLD = uuid.UUID("6b1d2c55-8a52-4bde-9b36-2f1b0b3d5a10")


def device_name(inventory: Inventory, device_id: int) -> str:
    """The device's resource name in the cloud: stable for the world's seed and the console id."""
    return str(uuid.uuid5(WORLD, f"{inventory.seed}:{device_id}"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _group(subscription: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.IoTSecurity/locations/westeurope/deviceGroups/default"


def device_document(inventory: Inventory, device: dict[str, Any], subscription: str) -> dict[str, Any]:
    name = device_name(inventory, device["u_id"])
    nics = [
        {"ipv4Address": o["u_ip_address"], "macAddress": mac, "macCertainty": "Certain"}
        for o, mac in zip(
            device["u_ip_address_objects"], [m["u_mac_address"] for m in device["u_mac_address_objects"]], strict=False
        )
    ]
    if not nics:  # behind a router: the MAC is only a guess
        nics = [
            {
                "ipv4Address": o["u_ip_address"],
                "macAddress": (o["u_guessed_mac_address"] or [None])[0],
                "macCertainty": "Guess",
            }
            for o in device["u_ip_address_objects"]
        ]
    return {
        "id": f"{_group(subscription)}/devices/{name}",
        "name": name,
        "type": DEVICES,
        "subscriptionId": subscription,
        "properties": {
            "deviceName": device["u_name"],
            "deviceDataSource": "OtSensor",
            "sensor": {"name": device["u_appliance"], "zone": device["u_zone"], "site": device["u_site"]},
            "deviceTypeDisplayName": "Industrial",
            "deviceSubTypeDisplayName": device["u_device_type"],
            "purdueLevel": PURDUE.get(device["u_purdue_layer"], "ProcessControl"),
            "firstSeen": _iso(device["u_first_discovered"]),
            "lastSeen": _iso(device["u_last_activity"]),
            "lastUpdated": _iso(device["u_last_update"]),
            "deviceStatus": "Active",
            "hardware": _hardware(device),
            "nics": nics,
            "protocols": [{"name": p["u_protocol"]} for p in device["u_protocol_objects"]],
            "firmwares": [{"name": "firmware", "version": f["u_version"]} for f in device["u_firmwares"]],
        },
    }


def _hardware(device: dict[str, Any]) -> dict[str, Any]:
    """The spec's hardware {vendor, model, serialNumber}: a controller's model and serial are its firmware's."""
    firmware = (device["u_firmwares"] or [{}])[0]
    hardware = {"vendor": device["u_vendor"], "model": firmware.get("u_model", "")}
    return {**hardware, "serialNumber": firmware["u_serial"]} if firmware.get("u_serial") else hardware


def severity_score(score: str) -> str:
    """A CVSS score as the cloud's severityScore category (CVSS v3's qualitative ratings)."""
    value = float(score or 0)
    return (
        "Critical" if value >= 9 else "High" if value >= 7 else "Medium" if value >= 4 else "Low" if value else "None"
    )


def documents(inventory: Inventory, subscription: str) -> list[dict[str, Any]]:
    """Every device, sensor and vulnerability of the world as Resource Graph lists them."""
    with inventory.lock:
        devices = [device_document(inventory, d, subscription) for d in inventory.devices.values()]
        sensors = [
            {
                "id": f"/subscriptions/{subscription}/providers/Microsoft.IoTSecurity/locations/westeurope/sites/"
                f"{SITES[s['u_id'] % len(SITES)].replace(' ', '-')}/sensors/{s['u_name']}",
                "name": s["u_name"],
                "type": SENSORS,
                "subscriptionId": subscription,
                "properties": {
                    "sensorStatus": "Ok" if s["u_connection_state"] == "SYNCED" else "Disconnected",
                    # A connected sensor's contact time is kept current by the emulator (its heartbeat).
                    "connectivityTime": _iso(inventory.now_ms),
                    "sensorVersion": s["u_version"],
                    "zone": ZONES[s["u_zone_id"] % len(ZONES)],
                    "learningMode": bool(s["u_is_in_learning_mode"]),
                    "sensorType": "Ot",
                },
            }
            for s in inventory.sensors
        ]
        vulnerabilities = [
            {
                "id": f"{_group(subscription)}/vulnerabilities/{device_name(inventory, device_id)}-{cve['u_cve_id']}",
                "name": f"{device_name(inventory, device_id)}-{cve['u_cve_id']}",
                "type": VULNERABILITIES,
                "subscriptionId": subscription,
                "properties": {
                    "deviceId": device_name(inventory, device_id),
                    "vulnerabilityId": cve["u_cve_id"],
                    "severityScore": severity_score(cve["u_score"]),
                    "description": cve["u_description"],
                },
            }
            for device_id, entry in inventory.cves.items()
            for cve in entry["cves"]
        ]
        alerts = [alert_document(alert, subscription, inventory) for alert in inventory.alerts]
    return devices + sensors + vulnerabilities + alerts


def alert_document(alert: dict[str, Any], subscription: str, inventory: Inventory | None = None) -> dict[str, Any]:
    """A world alert as the cloud lists it: named by a GUID of its sensor and number, closed when handled; the
    world's devices it concerns as ``DeviceResourceIds`` (a list, one of the shapes the sources leave open)."""
    name = str(uuid.uuid5(WORLD, f"alert:{alert['sensorName']}:{alert['id']}"))
    resource_id = f"{_group(subscription)}/alerts/{name}"
    component = COMPONENT.get(alert["engine"], "POLICY_VIOLATION")
    extended = {
        "SensorId": alert["sensorName"],
        "SourceDeviceAddress": alert.get("sourceDeviceAddress"),
        "DestinationDeviceAddress": alert.get("destinationDeviceAddress"),
        "AlertManagementUri": f"https://management.azure.com{resource_id}?api-version=2021-07-01-preview",
    }
    involved = [alert.get("sourceDevice"), alert.get("destinationDevice")]
    if inventory is not None and any(d in inventory.devices for d in involved):
        extended["DeviceResourceIds"] = [
            f"{_group(subscription)}/devices/{device_name(inventory, d)}" for d in involved if d in inventory.devices
        ]
    return {
        "id": resource_id,
        "name": name,
        "type": ALERTS,
        "subscriptionId": subscription,
        "properties": {
            "systemAlertId": name,
            "displayName": alert["title"],
            "description": alert["message"],
            "severity": CLOUD_SEVERITY.get(alert["severity"], "Medium"),
            "status": "Closed" if alert["handled"] else "New",
            "startTimeUtc": _iso(alert["time"]),
            "endTimeUtc": _iso(alert["time"]),
            "alertType": f"IoT_{component.title().replace('_', '')}",
            "productComponentName": component,
            "remediationSteps": alert.get("remediationSteps"),
            "extendedProperties": {k: v for k, v in extended.items() if v is not None},
        },
    }
