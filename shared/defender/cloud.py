"""Cloud-connected sensors: Defender for IoT's data in Azure Resource Graph (table ``iotsecurityresources``).

Read through the official SDK (``azure-mgmt-resourcegraph``) with the app's managed identity, in pages of
up to 1,000 with ``$skipToken``. The queries are a few fixed shapes (type filter, a time ``where``,
``order by``, ``project``): values are the product's own (resource types, ISO times), never user text.
Resource Graph meters each user in 5-second windows; when a response says the window's quota is spent
(``x-ms-user-quota-remaining: 0``), the client waits for the window to reset instead of meeting a 429.
A record that cannot be read is skipped and counted with its reason, never the whole read.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from shared.platform.times import parse_iso

logger = logging.getLogger("shared.defender.cloud")
ALERTS = "microsoft.iotsecurity/locations/devicegroups/alerts"
SENSORS = "microsoft.iotsecurity/sensors"
PAGE_SIZE = 1000
# Cloud severities as the alert message contract names them.
SEVERITIES = {"informational": "Warning", "low": "Minor", "medium": "Major", "high": "Critical"}
TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d{2}):(\d{2})(?:\.\d+)?$")


class CloudSourceError(Exception):
    """Resource Graph could not be read; ``retryable`` says whether a later cycle may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


@dataclass(frozen=True)
class CloudAlert:
    """One alert as the cloud reports it, in the terms of the alert message contract."""

    id: str  # the ARM resource name (a GUID): stable across the alert's updates
    resource_id: str
    started: datetime
    status: str  # New | Active | Closed (InProgress too)
    alert: dict[str, Any]  # Defender alert fields (id, time, title, severity, engine, message, …)
    sensor: dict[str, Any]  # name, and site / zone when the cloud says them

    @property
    def closed(self) -> bool:
        return self.status.lower() == "closed"


@dataclass(frozen=True)
class CloudSensor:
    id: str
    name: str
    status: str  # Ok | Disconnected | Unavailable
    connectivity_time: datetime | None
    zone: str = ""
    site: str = ""

    @property
    def online(self) -> bool:
        return self.status.lower() == "ok"


@dataclass
class ReadReport:
    """What one read saw besides the records: pages, queries and skipped records with their reasons."""

    queries: int = 0
    skipped: list[str] = field(default_factory=list)


def query(
    resource_type: str, *, open_only: bool = False, updated_field: str | None = None, since: datetime | None = None
) -> str:
    """One of the fixed query shapes: the records of a type (not closed ones, with ``open_only``), all or
    those whose ``updated_field`` is at or after ``since``, in a stable order."""
    lines = ["iotsecurityresources", f"| where type =~ '{resource_type}'"]
    if open_only:
        lines.append("| where properties.status !~ 'Closed'")
    if updated_field is not None:
        lines.append(f"| extend updated = todatetime(properties.{updated_field})")
        if since is not None:
            stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            lines.append(f"| where updated >= datetime({stamp})")
        lines += ["| order by updated asc, name asc", "| project id, name, type, properties, updated"]
    else:
        lines += ["| order by name asc", "| project id, name, type, properties"]
    return "\n".join(lines)


def _seconds(timespan: str | None) -> float:
    match = TIMESPAN.fullmatch(timespan or "")
    if not match:
        return 1.0
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_alert(row: dict[str, Any], source: str) -> CloudAlert:
    """An ARG alert row as a :class:`CloudAlert`; ValueError says what is missing or malformed."""
    name = _text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    extended = properties.get("extendedProperties")
    extended = extended if isinstance(extended, dict) else {}
    started = parse_iso(properties.get("startTimeUtc"))
    if started is None:
        raise ValueError("no readable startTimeUtc")
    severity = SEVERITIES.get(_text(properties.get("severity")).lower())
    if severity is None:
        raise ValueError(f"severity {properties.get('severity')!r} is not Informational, Low, Medium or High")
    title = _text(properties.get("displayName") or properties.get("alertDisplayName") or properties.get("alertType"))
    if not title:
        raise ValueError("no displayName")
    remediation = properties.get("remediationSteps")
    alert: dict[str, Any] = {
        "id": name,
        "time": int(started.timestamp() * 1000),
        "title": title,
        "severity": severity,
        "engine": _text(extended.get("AlertEngine") or extended.get("Engine") or properties.get("alertType"))
        or "Unknown",
        "message": _text(properties.get("description")),
        "sourceDeviceAddress": _text(extended.get("SourceDeviceAddress")) or None,
        "destinationDeviceAddress": _text(extended.get("DestinationDeviceAddress")) or None,
        "remediationSteps": remediation if isinstance(remediation, list | str) else None,
        "additionalInformation": {"description": "Cloud alert", "information": [row.get("id", "")]},
    }
    sensor = {
        "name": _text(extended.get("SensorName") or extended.get("SensorId")) or source,
        "site": _text(extended.get("SiteName") or extended.get("Site")) or None,
        "zone": _text(extended.get("ZoneName") or extended.get("Zone")) or None,
    }
    return CloudAlert(
        id=name,
        resource_id=_text(row.get("id")),
        started=started,
        status=_text(properties.get("status")) or "New",
        alert={k: v for k, v in alert.items() if v is not None},
        sensor={k: v for k, v in sensor.items() if v},
    )


def parse_sensor(row: dict[str, Any]) -> CloudSensor:
    name = _text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    status = _text(properties.get("sensorStatus"))
    if not status:
        raise ValueError("no sensorStatus")
    return CloudSensor(
        id=_text(row.get("id")) or name,
        name=name,
        status=status,
        connectivity_time=parse_iso(properties.get("connectivityTime")),
        zone=_text(properties.get("zone")),
    )


class CloudSource:
    """Reads one cloud source's alerts and sensors from Resource Graph."""

    def __init__(
        self,
        name: str,
        client: Any,  # azure.mgmt.resourcegraph.ResourceGraphClient (imported by the composition root)
        subscriptions: tuple[str, ...],
        *,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.client = client
        self.subscriptions = subscriptions
        self.page_size = page_size
        self.sleep = sleep

    def _rows(self, text: str, report: ReadReport) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            request = QueryRequest(
                subscriptions=list(self.subscriptions),
                query=text,
                options=QueryRequestOptions(top=self.page_size, skip_token=token, result_format="objectArray"),
            )
            try:
                response, headers = self.client.resources(
                    request, cls=lambda pipeline, result, _: (result, pipeline.http_response.headers)
                )
            except HttpResponseError as exc:
                status = exc.status_code or 0
                raise CloudSourceError(
                    f"Resource Graph refused the query of source '{self.name}': HTTP {status} {exc.reason}",
                    retryable=status in (408, 429) or status >= 500,
                ) from None
            except ServiceRequestError as exc:
                raise CloudSourceError(
                    f"Resource Graph unreachable for source '{self.name}': {type(exc).__name__}", retryable=True
                ) from None
            report.queries += 1
            yield from response.data or []
            if headers.get("x-ms-user-quota-remaining") == "0":
                # The header counts whole seconds: wait at least one, so the next query is in the new window.
                wait = max(1.0, _seconds(headers.get("x-ms-user-quota-resets-after")))
                logger.info("Resource Graph quota spent for this window; waiting %.0f s", wait)
                self.sleep(wait)
            token = response.skip_token
            if not token:
                return

    def _alerts(self, text: str, report: ReadReport) -> Iterator[CloudAlert]:
        for row in self._rows(text, report):
            try:
                yield parse_alert(row, self.name)
            except ValueError as exc:
                report.skipped.append(f"alert {row.get('name', '?')}: {exc}")

    def open_alerts(self, report: ReadReport) -> Iterator[CloudAlert]:
        """Every alert not closed: the snapshot a closing is seen against (an alert's status changes keep
        its times, so no time filter can find them)."""
        return self._alerts(query(ALERTS, open_only=True), report)

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[CloudAlert]:
        """Alerts that started at or after ``since``, whatever their status (one opened and closed between
        two reads is still seen), oldest first."""
        return self._alerts(query(ALERTS, updated_field="startTimeUtc", since=since), report)

    def sensors(self, report: ReadReport) -> list[CloudSensor]:
        found = []
        for row in self._rows(query(SENSORS), report):
            try:
                found.append(parse_sensor(row))
            except ValueError as exc:
                report.skipped.append(f"sensor {row.get('name', '?')}: {exc}")
        return found

    def close(self) -> None:
        self.client.close()
