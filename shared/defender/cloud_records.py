"""Resource Graph's records (``iotsecurityresources``) read as what every source reports: an alert as the
contract's typed alert, a sensor, a device, a vulnerability. A record that cannot be read raises ValueError
with what is missing; :mod:`shared.defender.cloud` skips it and counts the reason."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from shared.contract.model import Alert, AlertDevices, SensorRef, Severity, normalise_engine
from shared.contract.parse import remediation as steps
from shared.defender.model import Cve, Device, Firmware, Sensor, SourceAlert, normalise_mac, objects, text
from shared.platform.times import parse_iso

# Cloud severities as the alert message contract names them.
SEVERITIES = {
    "informational": Severity.WARNING,
    "low": Severity.MINOR,
    "medium": Severity.MAJOR,
    "high": Severity.CRITICAL,
}
ALERT_STATUSES = {"new": "New", "inprogress": "InProgress", "closed": "Closed"}  # the spec's AlertStatus
# Microsoft's sensor-health rule: no contact for 5 minutes is Disconnected, whatever sensorStatus says (it
# can take 15 minutes to change).
CONNECTIVITY_LIMIT = timedelta(minutes=5)
GONE_STATUSES = {"removed", "deleted"}  # deviceStatus of a device Defender no longer holds


def _resource_ids(value: Any) -> list[str]:
    """DeviceResourceIds as a list: Microsoft's queries apply tostring() to it and no source says whether it
    is one id, a list of ids, or a list in a JSON string, so all three are read."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return [value.strip()]
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def parse_alert(row: dict[str, Any], source: str) -> SourceAlert:
    """An ARG alert row as a :class:`SourceAlert`; ValueError says what is missing or malformed.

    The keys are where Microsoft publishes them: ``productComponentName`` (the engine), ``status`` and
    ``severity`` in ``properties`` (the spec's alert model); ``SensorId`` (the sensor's name), the device
    addresses, ``Protocol``, ``DeviceResourceIds`` and ``AlertManagementUri`` in ``extendedProperties``
    (Microsoft's Sentinel rules and playbooks). The spec's alert model has no display name: the title is
    ``displayName`` (or ``alertDisplayName``) where a row has one, else the alert type."""
    name = text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    extended = properties.get("extendedProperties")
    extended = extended if isinstance(extended, dict) else {}
    started = parse_iso(properties.get("startTimeUtc"))
    if started is None:
        raise ValueError("no readable startTimeUtc")
    severity = SEVERITIES.get(text(properties.get("severity")).lower())
    if severity is None:
        raise ValueError(f"severity {properties.get('severity')!r} is not Informational, Low, Medium or High")
    status = ALERT_STATUSES.get(text(properties.get("status") or "New").lower())
    if status is None:
        raise ValueError(f"status {properties.get('status')!r} is not New, InProgress or Closed")
    title = text(properties.get("displayName") or properties.get("alertDisplayName") or properties.get("alertType"))
    if not title:
        raise ValueError("no displayName and no alertType")
    remediation = properties.get("remediationSteps")
    resource_ids = _resource_ids(extended.get("DeviceResourceIds"))
    beyond = {"deviceResourceIds": resource_ids or None, "alertManagementUri": text(extended.get("AlertManagementUri"))}
    alert = Alert(
        id=name,
        time=started,
        title=title,
        severity=severity,
        engine=normalise_engine(text(properties.get("productComponentName")) or "Unknown"),
        message=text(properties.get("description")),
        source_address=text(extended.get("SourceDeviceAddress")) or None,
        destination_address=text(extended.get("DestinationDeviceAddress")) or None,
        remediation_steps=steps(remediation if isinstance(remediation, list | str) else None, "alert.remediationSteps"),
        additional_information={"description": "Cloud alert", "information": [row.get("id", "")]},
        extra={k: v for k, v in beyond.items() if v},
    )
    # The device sync names a cloud device by its resource's name (the last segment of its id).
    related = tuple(dict.fromkeys(r.rstrip("/").rsplit("/", 1)[-1] for r in resource_ids))
    return SourceAlert(
        protocol=text(extended.get("Protocol")) or None,
        id=name,
        resource_id=text(row.get("id")),
        started=started,
        status=status,
        alert=alert,
        # Resource Graph's alert names its sensor only; site and zone are the sensor's, not the alert's.
        sensor=SensorRef(text(extended.get("SensorId")) or source),
        devices=AlertDevices(related=tuple(r for r in related if r)),
    )


def _site(resource_id: str) -> str:
    """The site of a sensor listed under one: ``…/sites/{site}/sensors/{name}``."""
    parts = resource_id.split("/")
    lowered = [part.lower() for part in parts]
    return parts[lowered.index("sites") + 1] if "sites" in lowered[:-1] else ""


def parse_sensor(row: dict[str, Any], now: datetime) -> Sensor:
    """A sensor row; offline when its status is not ``Ok`` or it has not been in contact for
    :data:`CONNECTIVITY_LIMIT` (Microsoft's own rule, since ``sensorStatus`` changes late)."""
    name = text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    status = text(properties.get("sensorStatus"))
    if not status:
        raise ValueError("no sensorStatus")
    contact = parse_iso(properties.get("connectivityTime"))
    silent = contact is None or now - contact > CONNECTIVITY_LIMIT
    if status.lower() == "ok" and silent:
        status = "Disconnected (no contact for 5 minutes)"
    resource_id = text(row.get("id"))
    return Sensor(
        id=resource_id or name,
        name=name,
        connection_state=status,
        version=text(properties.get("sensorVersion")),
        learning_mode=properties.get("learningMode") is True,
        zone=text(properties.get("zone")),
        site=_site(resource_id),
        connectivity_time=contact,
        online=status.lower() == "ok",
    )


def _epoch_ms(value: Any) -> int:
    moment = parse_iso(value) if isinstance(value, str) else None
    return int(moment.timestamp() * 1000) if moment is not None else 0


def parse_device(row: dict[str, Any]) -> Device:
    """An ARG device row as a :class:`Device`; the Defender device id is the resource name (a GUID).

    A NIC's MAC is an identifier only when Defender is certain of it (``macCertainty``); otherwise it is
    kept as a guess, never used to identify a CI."""
    name = text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    sensor = properties.get("sensor")
    sensor = sensor if isinstance(sensor, dict) else {}
    macs: list[str] = []
    guessed: list[str] = []
    ips: list[str] = []
    for nic in objects(properties.get("nics")):
        if isinstance(nic.get("ipv4Address"), str) and nic["ipv4Address"]:
            ips.append(nic["ipv4Address"])
        if (mac := normalise_mac(nic.get("macAddress"))) is not None:
            (macs if text(nic.get("macCertainty")).lower() == "certain" else guessed).append(mac)
    hardware = properties.get("hardware")
    hardware = hardware if isinstance(hardware, dict) else {}
    sensor_name = text(sensor.get("name"))
    return Device(
        id=name,
        name=text(properties.get("deviceName")) or name,
        last_update=_epoch_ms(properties.get("lastUpdated")),
        device_type=text(properties.get("deviceSubTypeDisplayName") or properties.get("deviceTypeDisplayName")),
        vendor=text(hardware.get("vendor")),
        purdue_level=text(properties.get("purdueLevel")),
        criticality=text(properties.get("criticality")),
        site=text(sensor.get("site")),
        zone=text(sensor.get("zone")),
        sensor=sensor_name,
        sensor_ids=(sensor_name,) if sensor_name else (),
        macs=tuple(sorted(set(macs))),
        guessed_macs=tuple(sorted(set(guessed) - set(macs))),
        ips=tuple(ips),
        protocols=tuple(text(p.get("name")) for p in objects(properties.get("protocols")) if p.get("name")),
        firmware=_firmware(properties, hardware),
        first_discovered=_epoch_ms(properties.get("firstSeen")) or None,
    )


def _firmware(properties: dict[str, Any], hardware: dict[str, Any]) -> tuple[Firmware, ...]:
    """The device itself first (``hardware`` model and serial, the first of ``firmwares`` for the version),
    then each backplane slot: the first entry is the one the CI is identified by, so a module's serial number
    never stands for the device's."""
    versions = [text(f.get("version")) for f in objects(properties.get("firmwares")) if f.get("version")]
    slots = [
        Firmware(text(s.get("model")), text(s.get("firmwareVersion")), text(s.get("serialNumber")))
        for s in objects(properties.get("slots"))
    ]
    device = Firmware(text(hardware.get("model")), versions[0] if versions else "", text(hardware.get("serialNumber")))
    return (device, *slots) if device != Firmware() or slots else ()


def parse_vulnerability(row: dict[str, Any]) -> tuple[str, Cve]:
    """A vulnerability row: (the device's resource name, the CVE).

    Resource Graph's rows carry ``deviceId`` (the device resource's name), ``vulnerabilityId`` (the CVE id),
    ``severityScore`` (a category: Critical, High, Medium, Low, None) and ``description``, as Microsoft's
    CVEAutoWorkflow playbook reads them. The REST API lists the same as a device's children
    (``…/devices/{id}/vulnerabilities/{CVE}``, ``severity`` and a numeric ``score``): read too."""
    properties = row.get("properties")
    if not isinstance(properties, dict):
        raise ValueError("no properties")
    resource_id = text(row.get("id")).split("/")
    lowered = [part.lower() for part in resource_id]
    parent = resource_id[lowered.index("devices") + 1] if "devices" in lowered[:-1] else ""
    device = text(properties.get("deviceId")).rstrip("/").rsplit("/", 1)[-1] or parent
    cve = text(properties.get("vulnerabilityId") or (row.get("name") if parent else ""))
    if not device or not cve.upper().startswith("CVE-"):
        raise ValueError("no deviceId or no vulnerabilityId (a CVE id)")
    score = properties.get("score")
    return device, Cve(
        cve,
        score=str(score) if isinstance(score, int | float) and not isinstance(score, bool) else "",
        description=text(properties.get("description")),
        severity=text(properties.get("severityScore") or properties.get("severity")),
    )
