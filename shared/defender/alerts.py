"""Alerts as a sensor's and the console's REST APIs send them (``/api/v1|v2/alerts``,
``/external/v1/alerts``): the alert message contract's own fields, so they pass through as they are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.defender.model import SourceAlert, text

FIELDS = (
    "id", "time", "title", "message", "severity", "engine", "sourceDevice", "destinationDevice",
    "sourceDeviceAddress", "destinationDeviceAddress", "remediationSteps", "additionalInformation",
)  # fmt: skip


def parse_api_alert(record: dict[str, Any], *, closed: bool, sensor: dict[str, str]) -> SourceAlert:
    """One API alert; ``sensor`` says where it was seen when the record does not (the record's own
    ``sensorName``, ``siteName`` and ``zoneName`` fill what ``sensor`` leaves empty). ValueError says what
    is missing."""
    alert_id = record.get("id")
    when = record.get("time")
    if isinstance(alert_id, bool) or not isinstance(alert_id, int | str) or not str(alert_id).strip():
        raise ValueError("no id")
    if isinstance(when, bool) or not isinstance(when, int):
        raise ValueError("no time (epoch milliseconds)")
    where = {
        "name": sensor.get("name") or text(record.get("sensorName")),
        "site": sensor.get("site") or text(record.get("siteName")),
        "zone": sensor.get("zone") or text(record.get("zoneName")),
    }
    return SourceAlert(
        id=str(alert_id),
        resource_id="",
        started=datetime.fromtimestamp(when / 1000, UTC),
        status="Closed" if closed else "Active",
        alert={k: record[k] for k in FIELDS if record.get(k) is not None},
        sensor={k: v for k, v in where.items() if v},
    )
