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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from azure.core.exceptions import HttpResponseError, ServiceRequestError

# This module is the Resource Graph SDK's one importer, so threads loading it at once (two timers' first
# invocations on the worker's thread pool) queue on this module's import lock instead of taking the SDK's
# locks in opposite orders. The package goes first: importing ``….models`` alone locks it before its package,
# the reverse of the package's own order, which deadlocks against a thread importing the package.
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from shared.defender.cloud_records import GONE_STATUSES, parse_alert, parse_device, parse_sensor, parse_vulnerability
from shared.defender.model import (
    AddressCves,
    Capabilities,
    Connection,
    Cve,
    Device,
    DeviceCves,
    ReadReport,
    Sensor,
    SourceAlert,
    text,
)
from shared.defender.rest import DefenderApiError
from shared.http.settings import HttpSettings

logger = logging.getLogger("shared.defender.cloud")
ALERTS = "microsoft.iotsecurity/locations/devicegroups/alerts"
DEVICES = "microsoft.iotsecurity/locations/devicegroups/devices"
VULNERABILITIES = "microsoft.iotsecurity/locations/devicegroups/vulnerabilities"
# Sensors: Microsoft's sensor-health query reads a site's sensors; the older type is read too, for sensors
# not (yet) listed under a site. One query asks for both.
SITE_SENSORS = "microsoft.iotsecurity/locations/sites/sensors"
SENSORS = "microsoft.iotsecurity/sensors"
PAGE_SIZE = 1000
TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d{2}):(\d{2})(?:\.\d+)?$")


class CloudSourceError(DefenderApiError):
    """Resource Graph could not be read; ``retryable`` says whether a later cycle may succeed."""


# The cloud's names for the shapes every alert source shares.
CloudAlert = SourceAlert
CloudSensor = Sensor


def query(
    *resource_types: str, open_only: bool = False, updated_field: str | None = None, since: datetime | None = None
) -> str:
    """One of the fixed query shapes: the records of a type or types (not closed ones, with ``open_only``),
    all or those whose ``updated_field`` is at or after ``since``, in a stable order."""
    if len(resource_types) == 1:
        lines = ["iotsecurityresources", f"| where type =~ '{resource_types[0]}'"]
    else:
        lines = ["iotsecurityresources", f"| where type in~ ({', '.join(repr(t) for t in resource_types)})"]
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


class CloudSource:
    """Reads one cloud source's alerts and sensors from Resource Graph."""

    def __init__(
        self,
        name: str,
        client: Any,  # a ResourceGraphClient: its types do not know that ``cls=`` changes what it returns
        subscriptions: tuple[str, ...],
        *,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self.client = client
        self.subscriptions = subscriptions
        self.page_size = page_size
        self.sleep = sleep
        self.clock = clock
        # Each sensor's site and zone, from its latest read: a cloud alert names its sensor only.
        self.places: dict[str, dict[str, str]] | None = None

    @classmethod
    def connect(
        cls,
        name: str,
        subscriptions: tuple[str, ...],
        credential: Any,
        base_url: str,
        ca_bundle: Path | None,
        http: HttpSettings,
    ) -> CloudSource:
        """A source signed in with ``credential`` (an azure-identity credential) to Resource Manager at ``base_url``.

        A query takes at most one call's longest, as every other call of the app (``http``): the SDK's own
        defaults (300 s reads, a week of retrying) would outlast any invocation's deadline."""
        client = ResourceGraphClient(
            credential,
            base_url=base_url,
            connection_verify=str(ca_bundle) if ca_bundle else True,
            retry_total=3,  # a cycle a minute: the next one tries again rather than this one waiting long
            connection_timeout=http.connect_timeout,
            read_timeout=http.read_timeout,
            timeout=http.longest_call,
        )
        return cls(name, client, subscriptions)

    def rows(self, kql: str, report: ReadReport) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            request = QueryRequest(
                subscriptions=list(self.subscriptions),
                query=kql,
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

    def _alerts(self, kql: str, report: ReadReport) -> Iterator[CloudAlert]:
        if self.places is None:
            self.sensor_statuses(report)
        places = self.places or {}
        for row in self.rows(kql, report):
            try:
                alert = parse_alert(row, self.name)
            except ValueError as exc:
                report.skipped.append(f"alert {row.get('name', '?')}: {exc}")
                continue
            place = places.get(alert.sensor.name, {})
            yield replace(alert, sensor=replace(alert.sensor, **place)) if place else alert

    def open_alerts(self, report: ReadReport) -> Iterator[CloudAlert]:
        """Every alert not closed: the snapshot a closing is seen against (an alert's status changes keep
        its times, so no time filter can find them)."""
        return self._alerts(query(ALERTS, open_only=True), report)

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[CloudAlert]:
        """Alerts that started at or after ``since``, whatever their status (one opened and closed between
        two reads is still seen), oldest first."""
        return self._alerts(query(ALERTS, updated_field="startTimeUtc", since=since), report)

    def sensor_statuses(self, report: ReadReport) -> list[Sensor]:
        """Every sensor once: one listed under a site and by the older type too is the site's."""
        found: dict[str, Sensor] = {}
        now = self.clock()
        for row in self.rows(query(SITE_SENSORS, SENSORS), report):
            try:
                sensor = parse_sensor(row, now)
            except ValueError as exc:
                report.skipped.append(f"sensor {row.get('name', '?')}: {exc}")
                continue
            if sensor.name not in found or text(row.get("type")).lower() == SITE_SENSORS:
                found[sensor.name] = sensor
        self.places = {s.name: {k: v for k, v in (("site", s.site), ("zone", s.zone)) if v} for s in found.values()}
        return sorted(found.values(), key=lambda s: s.name)

    def close(self) -> None:
        self.client.close()


class CloudInventory:
    """A cloud source as the device sync reads it: devices by ``lastUpdated`` from a watermark, sensors,
    and the vulnerability snapshot. Resource Graph has no device connections and no deletions feed (a
    deleted device just stops being listed), so deletions come from absence in a whole read."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        incremental=True,
        connections=False,
        deletions="absence",
        cves="snapshot",
        missing=("connections: Resource Graph has no device connections",),
    )

    def __init__(
        self, source: CloudSource, overlap_minutes: float = 60.0, data_sources: tuple[str, ...] = ("OtSensor",)
    ) -> None:
        self.source = source
        self.name = source.name
        self.report = ReadReport()
        self.overlap_ms = int(overlap_minutes * 60_000)
        self.data_sources = {d.lower() for d in data_sources}
        self.data_sources_setting = ",".join(data_sources)
        self.learning: set[str] | None = None  # sensors in learning mode, from this run's sensor read
        self.left_out: Counter[str] = Counter()

    def sensors(self) -> list[Sensor]:
        statuses = self.source.sensor_statuses(self.report)
        self.learning = {s.name for s in statuses if s.learning_mode}
        return [
            replace(s, id=s.name)  # the device sync keys a cloud sensor by its name
            for s in statuses
        ]

    def _left_out(self, row: dict[str, Any]) -> str | None:
        """Why a device row does not become a CI, or None: not an OT sensor's device (by default), gone at the
        source, or seen by a sensor in learning mode (its baseline is not settled: ServiceNow's own connector
        skips those sensors too)."""
        properties = row.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        origin = text(properties.get("deviceDataSource"))
        if origin.lower() not in self.data_sources:
            return f"deviceDataSource {origin or '(none)'} (DEVICE_SYNC_CLOUD_DATA_SOURCES={self.data_sources_setting})"
        if text(properties.get("deviceStatus")).lower() in GONE_STATUSES:
            return "deviceStatus Removed or Deleted (treated as gone)"
        sensor = properties.get("sensor")
        if isinstance(sensor, dict) and text(sensor.get("name")) in (self.learning or set()):
            return "its sensor is in learning mode"
        return None

    def device_pages(self, since_ms: int) -> Iterator[list[Device]]:
        """Devices updated at or after ``since_ms`` less the overlap: Resource Graph shows a change a while
        after its ``lastUpdated``, so the read reaches back; the sync's hashes make the repeats free."""
        since = datetime.fromtimestamp(max(0, since_ms - self.overlap_ms) / 1000, UTC) if since_ms > 0 else None
        if self.learning is None:
            self.sensors()
        page: list[Device] = []
        for row in self.source.rows(query(DEVICES, updated_field="lastUpdated", since=since), self.report):
            if (reason := self._left_out(row)) is not None:
                self.left_out[reason] += 1
                continue
            try:
                page.append(parse_device(row))
            except ValueError as exc:
                self.report.skipped.append(f"device {row.get('name', '?')}: {exc}")
            if len(page) >= self.source.page_size:
                yield page
                page = []
        if page:
            yield page

    def connection_pages(self, since_ms: int) -> Iterator[list[Connection]]:
        return iter(())

    def deleted_devices(self, since_ms: int) -> list[str]:
        return []

    def cve_pages(self, since_ms: int) -> Iterator[list[DeviceCves]]:
        """Every device's CVEs now (the whole snapshot: rows are per device and CVE, so gathered first)."""
        by_device: dict[str, dict[str, Cve]] = {}
        for row in self.source.rows(query(VULNERABILITIES), self.report):
            try:
                device, cve = parse_vulnerability(row)
            except ValueError as exc:
                self.report.skipped.append(f"vulnerability {row.get('name', '?')}: {exc}")
                continue
            by_device.setdefault(device, {})[cve.id] = cve
        rows = [DeviceCves(device, 0, tuple(cves.values())) for device, cves in sorted(by_device.items())]
        for start in range(0, len(rows), 500):
            yield rows[start : start + 500]

    def address_cves(self) -> list[AddressCves]:
        return []

    def skipped_reasons(self) -> list[str]:
        reasons, self.report.skipped = self.report.skipped, []
        left_out, self.left_out = self.left_out, Counter()
        return [f"skipped {reason}" for reason in reasons] + [
            f"left out {count} device(s): {reason}" for reason, count in sorted(left_out.items())
        ]

    @property
    def queries(self) -> int:
        return self.report.queries
