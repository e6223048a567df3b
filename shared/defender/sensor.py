"""A locally managed sensor, read through its own REST API (no console, no cloud): for air-gapped
sites, either from Azure over a private route or by the relay next to the sensor.

Devices (``/api/v1/devices``) come whole on every read (the API has no watermark and no paging) and
carry the sensor's own numbers, so their ids are prefixed with the source's name; connections come
from ``discoveredAfter``; CVEs come keyed by IP address (``/api/v1/devices/cves``) and are matched to
devices by the sync. Alerts: the unhandled ones (the snapshot a handling is seen against) and those
raised from a time (``fromTime``, epoch ms). The API says neither where the sensor is nor whether it is
online; its site and zone come from the source's settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from shared.defender.alerts import parse_api_alert
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
    SourceAlert,
    normalise_mac,
    objects,
    text,
)
from shared.defender.rest import DefenderApiError, TokenAuthPolicy, get_json
from shared.defender.settings import SensorSourceSettings
from shared.defender.writeback import WriteBackUnsupportedError, WriteResult
from shared.http.policies import CallStats, Pipeline, build_pipeline
from shared.http.settings import HttpSettings
from shared.platform.secrets import Secret

logger = logging.getLogger("shared.defender.sensor")
SEVERITIES = ("Warning", "Minor", "Major", "Critical")
# The reference's table spells the vectors Network | Adjacent Network | Local | Physical, its example NETWORK:
# either reads as the table's spelling.
ATTACK_VECTORS = {v.upper().replace(" ", "_"): v for v in ("Network", "Adjacent Network", "Local", "Physical")}


class SensorError(DefenderApiError):
    """A sensor API call failed."""


def _texts(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str) and item] if isinstance(value, list) else []


class SensorSource:
    """One locally managed sensor, as a device source and as an alert source."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        incremental=False,
        connections=True,
        deletions="absence",
        cves="by_address",
        missing=(
            "deletions: a sensor has no deleted-devices feed; a device it no longer lists is retired after "
            "DEVICE_SYNC_ABSENCE_HOURS",
        ),
    )

    def __init__(self, settings: SensorSourceSettings, pipeline: Pipeline, stats: CallStats) -> None:
        self.settings = settings
        self.name = settings.name
        self.base_url = settings.url.rstrip("/")
        self.pipeline = pipeline
        self.stats = stats
        self._skipped: list[str] = []
        self._unhandled: list[SourceAlert] | None = None

    @classmethod
    def connect(cls, settings: SensorSourceSettings, token: Callable[[], Secret], http: HttpSettings) -> SensorSource:
        if urlsplit(settings.url).scheme != "https":
            raise ValueError(f"sensor URL {settings.url!r} must be https")
        stats = CallStats()
        pipeline = build_pipeline(
            http,
            service="sensor",
            auth=TokenAuthPolicy(token),
            stats=stats,
            proxy_url=settings.proxy.url if settings.proxy else None,
            ca_bundle=settings.ca_bundle,
            ca_setting=f"DEFENDER_SOURCES[{settings.name}].ca_bundle",
        )
        return cls(settings, pipeline, stats)

    def _get(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        document = get_json(
            self.pipeline,
            self.stats,
            self.base_url + path,
            path,
            params,
            service=f"sensor '{self.name}'",
            error=SensorError,
        )
        if not isinstance(document, list):
            raise SensorError(f"sensor '{self.name}' GET {path}: expected a JSON list", retryable=True)
        return objects(document)

    def _key(self, device_id: Any) -> str | None:
        """The device's id for the sync: the sensor's number, prefixed (two sensors both number from 1)."""
        if isinstance(device_id, bool) or not isinstance(device_id, int | str) or not str(device_id).strip():
            return None
        return f"{self.name}:{device_id}"

    # -- devices ---------------------------------------------------------------------------
    def sensors(self) -> list[Sensor]:
        return [Sensor(self.name, self.name, zone=self.settings.zone, site=self.settings.site)]

    def device_pages(self, since_ms: int) -> Iterator[list[Device]]:
        page: list[Device] = []
        for record in self._get("/api/v1/devices"):
            key = self._key(record.get("id"))
            if key is None:
                self._skipped.append(f"device without an id ({text(record.get('name')) or 'no name'})")
                continue
            firmware = objects(record.get("firmware"))
            page.append(
                Device(
                    id=key,
                    name=text(record.get("name")) or key,
                    last_update=0,
                    device_type=text(record.get("type")),
                    vendor=text(record.get("vendor")),
                    site=self.settings.site,
                    zone=self.settings.zone,
                    sensor=self.name,
                    sensor_ids=(self.name,),
                    macs=tuple(sorted({m for v in _texts(record.get("macAddresses")) if (m := normalise_mac(v))})),
                    ips=tuple(_texts(record.get("ipAddresses"))),
                    protocols=tuple(text(p.get("name")) for p in objects(record.get("protocols")) if p.get("name")),
                    firmware=tuple(
                        Firmware(text(f.get("model")), text(f.get("firmwareVersion")), text(f.get("serial")))
                        for f in firmware
                    ),
                )
            )
            if len(page) >= 500:
                yield page
                page = []
        if page:
            yield page

    def connection_pages(self, since_ms: int) -> Iterator[list[Connection]]:
        params = {"discoveredAfter": str(since_ms)} if since_ms > 0 else None
        links = []
        for record in self._get("/api/v1/devices/connections", params):
            first, second = self._key(record.get("firstDeviceId")), self._key(record.get("secondDeviceId"))
            if first is not None and second is not None:
                links.append(Connection(first, second, sensor=self.name))
        for start in range(0, len(links), 500):
            yield links[start : start + 500]

    def deleted_devices(self, since_ms: int) -> list[str]:
        return []

    def cve_pages(self, since_ms: int) -> Iterator[list[DeviceCves]]:
        return iter(())

    def address_cves(self) -> list[AddressCves]:
        by_address: dict[str, dict[str, Cve]] = {}
        for record in self._get("/api/v1/devices/cves"):
            address, cve_id = text(record.get("ipAddress")), text(record.get("cveId"))
            if not address or not cve_id:
                self._skipped.append("CVE record without ipAddress or cveId")
                continue
            vector = text(record.get("attackVector"))
            cve = Cve(
                cve_id,
                text(record.get("score")),
                ATTACK_VECTORS.get(vector.upper().replace(" ", "_"), vector),
                text(record.get("description")),
            )
            by_address.setdefault(address, {})[cve_id] = cve
        return [AddressCves(address, tuple(cves.values())) for address, cves in sorted(by_address.items())]

    def skipped_reasons(self) -> list[str]:
        reasons, self._skipped = self._skipped, []
        return [f"skipped {reason}" for reason in reasons]

    # -- alerts ----------------------------------------------------------------------------
    @property
    def _alerts_path(self) -> str:
        return f"/api/{self.settings.alerts_api}/alerts"

    def _alert(self, record: dict[str, Any], closed: bool) -> SourceAlert:
        # A sensor's alerts (v1 or v2) name no sensor, zone or site: the source's settings say them.
        where = {"name": self.name, "site": self.settings.site, "zone": self.settings.zone}
        return parse_api_alert(record, closed=closed, sensor=where, device_id=self._key)

    def _read_alerts(
        self, params: dict[str, str], report: ReadReport, closed: Callable[[str], bool]
    ) -> list[SourceAlert]:
        report.queries += 1
        found = []
        for record in self._get(self._alerts_path, params):
            try:
                alert = self._alert(record, False)
            except ValueError as exc:
                report.skipped.append(f"alert {record.get('id', '?')}: {exc}")
                continue
            found.append(self._alert(record, True) if closed(alert.id) else alert)
        return found

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[SourceAlert]:
        # Whether an alert is handled is said only by the state filter: the unhandled ones are read
        # first (and kept for open_alerts, next in the same cycle); any other alert is handled.
        self._unhandled = self._read_alerts({"state": "unhandled"}, report, lambda _: False)
        open_ids = {a.id for a in self._unhandled}
        params = {"fromTime": str(int(since.timestamp() * 1000))}
        return iter(self._read_alerts(params, report, lambda alert_id: alert_id not in open_ids))

    def open_alerts(self, report: ReadReport) -> Iterator[SourceAlert]:
        alerts = self._unhandled
        if alerts is None:
            alerts = self._read_alerts({"state": "unhandled"}, report, lambda _: False)
        self._unhandled = None
        return iter(alerts)

    def sensor_statuses(self, report: ReadReport) -> list[Sensor]:
        return []  # the API does not say whether the sensor is online (only that it answered)

    def close_alert(self, reference: str, *, learn: bool = False) -> WriteResult:
        raise WriteBackUnsupportedError(
            f"source '{self.name}': a locally managed sensor's API cannot handle an alert; close it on the sensor"
        )

    def close(self) -> None:
        self.pipeline.close()
