"""ServiceNow records for alerts: the values an action writes, and the keys that make them unique.

``incident`` reports write an incident with a short description from the action's template
(never over 160 characters), a description with the message, addresses, remediation steps and a
link back to the sensor, impact and urgency from the action's severity map, and ``correlation_id``
/ ``correlation_display`` for de-duplication. ``full`` reports (the seed's "Defender for IoT
application" report) write every alert detail into the action's table through its field map.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from shared.alerting.assets import AssetFields
from shared.alerting.rules import Action
from shared.alerting.templates import NO_ASSETS, Placeholders, render, truncate
from shared.contract.model import AlertMessage, Severity
from shared.servicenow.records import table_of

SHORT_DESCRIPTION_LIMIT = 160
CORRELATION_LIMIT = 100
CORRELATION_DISPLAY = "Defender for IoT"
SECURITY_SEVERITY = {"Critical": "1", "Major": "1", "Minor": "2", "Warning": "3"}  # a rated table's 1 High … 3 Low
DEFAULT_FULL_MAP = {
    "short_description": "[Defender for IoT] {severity}: {title} ({sensor})",
    "description": "{details}",
}


def alert_key(message: AlertMessage) -> str:
    """Which alert this is, across sensors: the sensor (id, else name) and the alert id."""
    sensor = message.sensor.id or message.sensor.name
    if message.kind == "system":
        assert message.system is not None
        return f"system:{sensor}:{message.system.status}:{int(message.system.time.timestamp() * 1000)}"
    return f"alert:{sensor}:{message.alert_id}"


def correlation_for(key: str, action: str, generation: int = 0) -> str:
    """A stable id per (alert key, action, record generation), at most 100 characters (hashed when longer)."""
    plain = f"dfiot:{key}:{action}" + (f":{generation}" if generation else "")
    if len(plain) <= CORRELATION_LIMIT:
        return plain
    return "dfiot:sha256:" + hashlib.sha256(plain.encode()).hexdigest()


def correlation_id(message: AlertMessage, action: Action, generation: int = 0) -> str:
    return correlation_for(alert_key(message), action.name, generation)


@dataclass(frozen=True)
class PreparedAlert:
    """One message worked once: everything the path of an alert derives from it, computed at the top (the
    placeholder values on first use, once: a filtered alert needs none)."""

    message: AlertMessage
    key: str  # alert_key
    priority: int  # within the ServiceNow budget: 1 Warning … 4 Critical (system notifications as Major)

    @cached_property
    def values(self) -> Mapping[str, str]:
        """The template placeholders."""
        return values(self.message)

    def correlation_id(self, action: str, generation: int = 0) -> str:
        return correlation_for(self.key, action, generation)


def prepare(message: AlertMessage) -> PreparedAlert:
    level = int(message.alert.severity) if message.alert is not None else int(Severity.MAJOR)
    return PreparedAlert(message, alert_key(message), level)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def values(message: AlertMessage) -> dict[str, str]:
    """Template placeholder values for a message: every placeholder of :class:`templates.Placeholders`."""
    sensor = message.sensor
    resolution = message.resolution
    common = {
        "sensor": sensor.name,
        "sensor_id": sensor.id or "",
        "site": sensor.site or "",
        "zone": sensor.zone or "",
        "sensor_url": sensor.url or "",
        "protocol": message.protocol or "",
        "resolution": resolution.action if resolution else "",
        "handled_by": (resolution.by if resolution else "") or "an analyst",
        "resolution_notes": resolution.notes if resolution else "",
    }
    if message.kind == "system":
        assert message.system is not None
        status = message.system.status
        specific = {
            "title": f"Sensor {sensor.name} is {status}",
            "message": message.system.message,
            "severity": "Major",
            "engine": "System",
            "time": _time(message.system.time),
            "status": status,
            "alert_id": "",
            "source": "",
            "destination": "",
            "remediation": "",
            "information": "",
        }
    else:
        alert = message.alert
        assert alert is not None
        information = alert.additional_information or {}
        specific = {
            "title": alert.title,
            "message": alert.message,
            "severity": alert.severity.label,
            "engine": alert.engine,
            "alert_id": alert.id,
            "time": _time(alert.time),
            "status": "",
            "source": alert.source_address or "",
            "destination": alert.destination_address or "",
            "remediation": "\n".join(f"{i}. {step}" for i, step in enumerate(alert.remediation_steps, 1)),
            "information": "\n".join(
                [str(information.get("description") or ""), *map(str, information.get("information") or [])]
            ).strip(),
        }
    result = {**common, **specific}
    # Placeholders refuses a missing or an unknown value, so the values cannot drift from what templates may use.
    return Placeholders(**result, details=details(message, result), **NO_ASSETS).as_dict()


def details(message: AlertMessage, v: dict[str, str]) -> str:
    """The description: everything Defender said about the alert, in reading order."""
    lines = [v["title"], "", v["message"]] if v["message"] else [v["title"]]
    lines += ["", f"Severity: {v['severity']}", f"Engine: {v['engine']}", f"Detected: {v['time']}"]
    if v["protocol"]:
        lines.append(f"Protocol: {v['protocol']}")
    if v["source"] or v["destination"]:
        lines.append(f"Source: {v['source'] or '-'}  →  Destination: {v['destination'] or '-'}")
    if message.alert is not None and (message.alert.source_device or message.alert.destination_device):
        lines.append(f"Device ids: {message.alert.source_device or '-'} → {message.alert.destination_device or '-'}")
    place = ", ".join(
        filter(None, [f"sensor {v['sensor']}", v["site"] and f"site {v['site']}", v["zone"] and f"zone {v['zone']}"])
    )
    lines.append(f"Seen by: {place}")
    if v["alert_id"]:
        lines.append(f"Defender alert id: {v['alert_id']}")
    if v["information"]:
        lines += ["", "Additional information:", v["information"]]
    if v["remediation"]:
        lines += ["", "Remediation steps:", v["remediation"]]
    if v["sensor_url"]:
        lines += ["", f"Open in Defender for IoT: {v['sensor_url']}"]
    return "\n".join(lines)


def record_values(message: AlertMessage, action: Action, generation: int = 0) -> dict[str, Any]:
    """The field values to write for this message and action."""
    return fields_for(prepare(message), action, generation)


def fields_for(
    alert: PreparedAlert, action: Action, generation: int = 0, assets: AssetFields | None = None
) -> dict[str, Any]:
    """The field values to write for this alert and action; ``assets``: what the asset index said of its
    devices (a new record's: :mod:`shared.alerting.assets`)."""
    v = {**alert.values, **assets.values} if assets else alert.values
    common: dict[str, Any] = {
        "correlation_id": alert.correlation_id(action.name, generation),
        "correlation_display": CORRELATION_DISPLAY,
    }
    if assets and assets.cmdb_ci:
        common["cmdb_ci"] = assets.cmdb_ci
    if action.report == "incident":
        impact, urgency = action.severity_map.get(v["severity"], (3, 3))
        impact = assets.impact if assets and assets.impact else impact
        record: dict[str, Any] = {
            **action.fields,
            "short_description": truncate(render(action.short_description, v), SHORT_DESCRIPTION_LIMIT),
            "description": v["details"],
            "impact": str(impact),
            "urgency": str(urgency),
            **common,
        }
        return record
    mapping = action.field_map or DEFAULT_FULL_MAP
    record = {**action.fields}
    for target, template in mapping.items():
        text = render(template, v)
        record[target] = truncate(text, SHORT_DESCRIPTION_LIMIT) if target == "short_description" else text
    if "severity" not in mapping and table_of(action.table).rated:
        record["severity"] = SECURITY_SEVERITY.get(v["severity"], "3")
    if assets and assets.impact and "impact" not in mapping:
        record["impact"] = str(assets.impact)
    record.update(common)
    return record
