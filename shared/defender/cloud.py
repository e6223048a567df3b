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

from shared.defender.model import (
    AddressCves,
    Capabilities,
    Connection,
    Cve,
    Device,
    DeviceCves,
    Firmware,
    ReadReport,
    Sensor,
    SensorStatus,
    SourceAlert,
    normalise_mac,
    objects,
    text,
)
from shared.defender.rest import DefenderApiError
from shared.platform.settings import HttpSettings
from shared.platform.times import parse_iso

logger = logging.getLogger("shared.defender.cloud")
ALERTS = "microsoft.iotsecurity/locations/devicegroups/alerts"
DEVICES = "microsoft.iotsecurity/locations/devicegroups/devices"
VULNERABILITIES = "microsoft.iotsecurity/locations/devicegroups/vulnerabilities"
SENSORS = "microsoft.iotsecurity/sensors"
PAGE_SIZE = 1000
# Cloud severities as the alert message contract names them.
SEVERITIES = {"informational": "Warning", "low": "Minor", "medium": "Major", "high": "Critical"}
TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d{2}):(\d{2})(?:\.\d+)?$")


class CloudSourceError(DefenderApiError):
    """Resource Graph could not be read; ``retryable`` says whether a later cycle may succeed."""


# The cloud's names for the shapes every alert source shares.
CloudAlert = SourceAlert
CloudSensor = SensorStatus


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


def parse_alert(row: dict[str, Any], source: str) -> CloudAlert:
    """An ARG alert row as a :class:`CloudAlert`; ValueError says what is missing or malformed."""
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
    title = text(properties.get("displayName") or properties.get("alertDisplayName") or properties.get("alertType"))
    if not title:
        raise ValueError("no displayName")
    remediation = properties.get("remediationSteps")
    alert: dict[str, Any] = {
        "id": name,
        "time": int(started.timestamp() * 1000),
        "title": title,
        "severity": severity,
        "engine": text(extended.get("AlertEngine") or extended.get("Engine") or properties.get("alertType"))
        or "Unknown",
        "message": text(properties.get("description")),
        "sourceDeviceAddress": text(extended.get("SourceDeviceAddress")) or None,
        "destinationDeviceAddress": text(extended.get("DestinationDeviceAddress")) or None,
        "remediationSteps": remediation if isinstance(remediation, list | str) else None,
        "additionalInformation": {"description": "Cloud alert", "information": [row.get("id", "")]},
    }
    sensor = {
        "name": text(extended.get("SensorName") or extended.get("SensorId")) or source,
        "site": text(extended.get("SiteName") or extended.get("Site")) or None,
        "zone": text(extended.get("ZoneName") or extended.get("Zone")) or None,
    }
    protocol = text(extended.get("Protocol") or extended.get("ProtocolName")) or None
    return SourceAlert(
        protocol=protocol,
        id=name,
        resource_id=text(row.get("id")),
        started=started,
        status=text(properties.get("status")) or "New",
        alert={k: v for k, v in alert.items() if v is not None},
        sensor={k: v for k, v in sensor.items() if v},
    )


def parse_sensor(row: dict[str, Any]) -> SensorStatus:
    name = text(row.get("name"))
    properties = row.get("properties")
    if not name or not isinstance(properties, dict):
        raise ValueError("no name or no properties")
    status = text(properties.get("sensorStatus"))
    if not status:
        raise ValueError("no sensorStatus")
    return SensorStatus(
        id=text(row.get("id")) or name,
        name=name,
        status=status,
        connectivity_time=parse_iso(properties.get("connectivityTime")),
        online=status.lower() == "ok",
        zone=text(properties.get("zone")),
        site=text(properties.get("site") or properties.get("siteName")),
        version=text(properties.get("sensorVersion")),
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
    firmware = tuple(
        Firmware(text(f.get("model") or hardware.get("model")), text(f.get("version")), text(f.get("serial")))
        for f in objects(properties.get("firmware"))
    )
    sensor_name = text(sensor.get("name"))
    return Device(
        id=name,
        name=text(properties.get("deviceName")) or name,
        last_update=_epoch_ms(properties.get("lastUpdated")),
        device_type=text(properties.get("deviceSubTypeDisplayName") or properties.get("deviceTypeDisplayName")),
        vendor=text(hardware.get("vendor")),
        purdue_level=text(properties.get("purdueLevel")),
        site=text(sensor.get("site")),
        zone=text(sensor.get("zone")),
        sensor=sensor_name,
        sensor_ids=(sensor_name,) if sensor_name else (),
        macs=tuple(sorted(set(macs))),
        guessed_macs=tuple(sorted(set(guessed) - set(macs))),
        ips=tuple(ips),
        protocols=tuple(text(p.get("name")) for p in objects(properties.get("protocols")) if p.get("name")),
        firmware=firmware,
        first_discovered=_epoch_ms(properties.get("firstSeen")) or None,
    )


def parse_vulnerability(row: dict[str, Any]) -> tuple[str, Cve]:
    """An ARG vulnerability row: (the device's resource name, the CVE). Microsoft's public specs do not
    describe this type's properties; the ones read are ``deviceId`` (a name or an ARM id) and ``cveId``,
    with ``cvssScore``, ``attackVector`` and ``description`` when present."""
    properties = row.get("properties")
    if not isinstance(properties, dict):
        raise ValueError("no properties")
    device = text(properties.get("deviceId")).rstrip("/").rsplit("/", 1)[-1]
    cve = text(properties.get("cveId"))
    if not device or not cve.upper().startswith("CVE-"):
        raise ValueError("no deviceId or no cveId")
    return device, Cve(
        cve,
        text(properties.get("cvssScore")),
        text(properties.get("attackVector")),
        text(properties.get("description")),
    )


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
    ) -> None:
        self.name = name
        self.client = client
        self.subscriptions = subscriptions
        self.page_size = page_size
        self.sleep = sleep

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
            timeout=http.retry_budget_seconds + http.connect_timeout + http.read_timeout,
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
        for row in self.rows(kql, report):
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

    def sensor_statuses(self, report: ReadReport) -> list[SensorStatus]:
        found = []
        for row in self.rows(query(SENSORS), report):
            try:
                found.append(parse_sensor(row))
            except ValueError as exc:
                report.skipped.append(f"sensor {row.get('name', '?')}: {exc}")
        return found

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

    def __init__(self, source: CloudSource, overlap_minutes: float = 10.0) -> None:
        self.source = source
        self.name = source.name
        self.report = ReadReport()
        self.overlap_ms = int(overlap_minutes * 60_000)

    def sensors(self) -> list[Sensor]:
        return [
            Sensor(s.name, s.name, s.status, s.version, interface_address="", zone=s.zone, site=s.site)
            for s in self.source.sensor_statuses(self.report)
        ]

    def device_pages(self, since_ms: int) -> Iterator[list[Device]]:
        """Devices updated at or after ``since_ms`` less the overlap: Resource Graph shows a change a while
        after its ``lastUpdated``, so the read reaches back; the sync's hashes make the repeats free."""
        since = datetime.fromtimestamp(max(0, since_ms - self.overlap_ms) / 1000, UTC) if since_ms > 0 else None
        page: list[Device] = []
        for row in self.source.rows(query(DEVICES, updated_field="lastUpdated", since=since), self.report):
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
        return [f"skipped {reason}" for reason in reasons]

    @property
    def queries(self) -> int:
        return self.report.queries
