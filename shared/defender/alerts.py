"""Alerts as a sensor's and the console's REST APIs send them (``/api/v1|v2/alerts``,
``/external/v1|v2/alerts``): the alert message contract's own fields, so the contract reads them
(``shared.contract.parse.parse_alert``) into its typed alert.

Field names are matched case-insensitively: Microsoft's own sensor example spells ``additionalinformation``
in lower case where its field table says ``additionalInformation``
(learn.microsoft.com, defender-for-iot/organizations/api/sensor-alert-apis)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.contract.fields import Fields
from shared.contract.model import AlertDevices, SensorRef
from shared.contract.parse import parse_alert
from shared.defender.model import SourceAlert, text

FIELDS = (
    "id", "time", "title", "message", "severity", "engine", "sourceDevice", "destinationDevice",
    "sourceDeviceAddress", "destinationDeviceAddress", "remediationSteps", "additionalInformation",
)  # fmt: skip


def fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's non-null values by lower-cased name (the exact spelling wins over another casing)."""
    found: dict[str, Any] = {}
    for key, value in record.items():
        folded = str(key).lower()
        if value is not None and (folded not in found or key in FIELDS):
            found[folded] = value
    return found


def device_number(value: Any) -> str | None:
    """A device number of an alert as the console's device sync names the device: as it is."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        return None
    return str(value).strip()


def parse_api_alert(
    record: dict[str, Any],
    *,
    closed: bool,
    sensor: dict[str, str],
    reference: str = "",
    device_id: Callable[[Any], str | None] = device_number,
) -> SourceAlert:
    """One API alert; ``sensor`` says where it was seen when the record does not (the record's own
    ``sensorName``, ``siteName`` and ``zoneName`` fill what ``sensor`` leaves empty); ``reference`` is the
    source's handle for writing it back, when that is not its id; ``device_id`` names a device number of the
    alert as the source's device sync names the device. ValueError says what is missing (an
    InvalidMessageError, which names the field, where the alert does not read as the contract's)."""
    found = fields(record)
    alert_id, when = found.get("id"), found.get("time")
    if isinstance(alert_id, bool) or not isinstance(alert_id, int | str) or not str(alert_id).strip():
        raise ValueError("no id")
    if isinstance(when, bool) or not isinstance(when, int):
        raise ValueError("no time (epoch milliseconds)")
    where = {
        "name": sensor.get("name") or text(found.get("sensorname")),
        "site": sensor.get("site") or text(found.get("sitename")),
        "zone": sensor.get("zone") or text(found.get("zonename")),
    }
    return SourceAlert(
        id=str(alert_id),
        resource_id=reference,
        started=datetime.fromtimestamp(when / 1000, UTC),
        status="Closed" if closed else "Active",
        alert=parse_alert(Fields({k: found[k.lower()] for k in FIELDS if k.lower() in found}, "alert")),
        sensor=SensorRef(where["name"], site=where["site"] or None, zone=where["zone"] or None),
        devices=AlertDevices(device_id(found.get("sourcedevice")), device_id(found.get("destinationdevice"))),
    )
