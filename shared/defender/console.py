"""The on-premises management console: integration API v3 (devices, connections, sensors, CVEs) and the
alert API (``/external/v2/alerts``, and the alert action ``PUT /external/v1/alerts/<UUID>``).

Tolerant of what real consoles send: optional fields may be missing or null, lists may be absent,
and a record without an id is skipped (and counted) rather than failing the page. MAC addresses
Defender is sure of are kept apart from the ones it only guessed (seen through a router): a guessed
MAC must never identify a CI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
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
)
from shared.defender.rest import DefenderApiError, TokenAuthPolicy, get_json
from shared.defender.writeback import WriteResult, console_close
from shared.http.policies import CallStats, Pipeline, build_pipeline
from shared.http.settings import HttpSettings
from shared.platform.secrets import Secret

logger = logging.getLogger("shared.defender.console")
API = "/external/v3/integration"
# v2 lists what v1 leaves out: the sensor's, zone's and site's names and the device addresses.
ALERTS_API = "/external/v2"


class ConsoleError(DefenderApiError):
    """A console call failed; ``retryable`` says whether a later attempt may succeed."""


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _objects(record: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = record.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_device(record: dict[str, Any]) -> Device | None:
    device_id = _int(record.get("u_id"))
    if device_id is None:
        return None
    macs = {m for o in _objects(record, "u_mac_address_objects") if (m := normalise_mac(o.get("u_mac_address")))}
    guessed: set[str] = set()
    ips = []
    for entry in _objects(record, "u_ip_address_objects"):
        if isinstance(entry.get("u_ip_address"), str) and entry["u_ip_address"]:
            ips.append(entry["u_ip_address"])
        raw_guesses = entry.get("u_guessed_mac_address")
        for candidate in raw_guesses if isinstance(raw_guesses, list) else [raw_guesses]:
            if (mac := normalise_mac(candidate)) and mac not in macs:
                guessed.add(mac)
    return Device(
        id=str(device_id),
        name=_text(record, "u_name") or f"device-{device_id}",
        last_update=_int(record.get("u_last_update")) or 0,
        device_type=_text(record, "u_device_type"),
        vendor=_text(record, "u_vendor"),
        purdue_level=_text(record, "u_purdue_layer"),
        site=_text(record, "u_site"),
        zone=_text(record, "u_zone"),
        sensor=_text(record, "u_appliance"),
        sensor_ids=tuple(
            str(i) for o in _objects(record, "u_sensor_ids") if (i := _int(o.get("u_sensor_id"))) is not None
        ),
        macs=tuple(sorted(macs)),
        guessed_macs=tuple(sorted(guessed)),
        ips=tuple(ips),
        protocols=tuple(str(o["u_protocol"]) for o in _objects(record, "u_protocol_objects") if o.get("u_protocol")),
        firmware=tuple(
            Firmware(_text(o, "u_model"), _text(o, "u_version"), _text(o, "u_serial"))
            for o in _objects(record, "u_firmwares")
        ),
        first_discovered=_int(record.get("u_first_discovered")),
        url=_text(record, "u_cm_device_url"),
    )


def alert_uuid(record: dict[str, Any]) -> str:
    """The UUID ``PUT /external/v1/alerts/<UUID>`` takes, which no documented alert list carries: built as
    ``<sensorId>-<time>``, the form of Microsoft's only example of one (``1-1594550943000``; whether its ``1``
    is the sensor's id or another is not said). Unconfirmed: a console that knows no such UUID refuses it, and
    the write-back records the refusal. Empty when the record lacks either number."""
    sensor_id, when = record.get("sensorId"), record.get("time")
    numbers = [v for v in (sensor_id, when) if isinstance(v, int) and not isinstance(v, bool)]
    return f"{sensor_id}-{when}" if len(numbers) == 2 else ""


@dataclass
class ConsoleClient:
    base_url: str
    pipeline: Pipeline
    page_size: int = 500
    stats: CallStats = field(default_factory=CallStats)
    skipped: int = 0
    name: str = "console"
    capabilities: ClassVar[Capabilities] = Capabilities(
        incremental=True, connections=True, deletions="feed", cves="incremental"
    )

    @classmethod
    def connect(
        cls,
        base_url: str,
        token: Callable[[], Secret],
        http: HttpSettings,
        *,
        proxy_url: str | None = None,
        ca_bundle: Path | None = None,
        page_size: int = 500,
        name: str = "console",
    ) -> ConsoleClient:
        if urlsplit(base_url).scheme != "https":
            raise ValueError(f"console URL {base_url!r} must be https")
        stats = CallStats()
        pipeline = build_pipeline(
            http,
            service="console",
            auth=TokenAuthPolicy(token),
            stats=stats,
            proxy_url=proxy_url,
            ca_bundle=ca_bundle,
            ca_setting="CONSOLE_CA_BUNDLE",
        )
        return cls(base_url.rstrip("/"), pipeline, page_size, stats, name=name)

    def _get(self, path: str, params: dict[str, str] | None = None, *, api: str = API) -> Any:
        url = f"{self.base_url}{api}{path}"
        return get_json(self.pipeline, self.stats, url, path, params, service="console", error=ConsoleError)

    def _pages(self, path: str, key: str, params: dict[str, str] | None = None) -> Iterator[list[dict[str, Any]]]:
        page = 0
        while True:
            document = self._get(path, {**(params or {}), "page": str(page), "size": str(self.page_size)})
            records = document.get(key) if isinstance(document, dict) else None
            if not isinstance(records, list):
                raise ConsoleError(f"console GET {path}: no '{key}' list in the answer", retryable=True)
            yield [r for r in records if isinstance(r, dict)]
            total = _int(document.get("u_count")) or 0
            page += 1
            if not records or page * self.page_size >= total:
                return

    def device_pages(self, since_ms: int) -> Iterator[list[Device]]:
        """Devices created or updated after ``since_ms``, one page at a time, oldest update first."""
        for records in self._pages(f"/devices/{since_ms}", "u_devices", {"notificationType": "0"}):
            devices = [d for r in records if (d := parse_device(r)) is not None]
            self.skipped += len(records) - len(devices)
            yield devices

    def device(self, device_id: int) -> Device | None:
        try:
            return parse_device(self._get(f"/device/{device_id}"))
        except ConsoleError as exc:
            if exc.status == 404:
                return None
            raise

    def connection_pages(self, since_ms: int) -> Iterator[list[Connection]]:
        for records in self._pages(f"/connections/{since_ms}", "u_connections"):
            yield [
                Connection(str(source), str(target), _text(r, "u_connection_type"), _text(r, "u_appliance"))
                for r in records
                if (source := _int(r.get("u_src_device_id"))) is not None
                and (target := _int(r.get("u_dest_device_id"))) is not None
            ]

    def deleted_devices(self, since_ms: int) -> list[str]:
        document = self._get(f"/deleteddevices/{since_ms}")
        if not isinstance(document, list):
            return []
        return [str(i) for r in document if isinstance(r, dict) and (i := _int(r.get("u_id"))) is not None]

    def sensors(self) -> list[Sensor]:
        """The console's sensors; only ``DISCONNECTED`` is offline (out of sync, or a clock difference, is
        still a sensor reporting)."""
        document = self._get("/sensors")
        return [
            Sensor(
                str(i),
                _text(r, "u_name") or f"sensor-{i}",
                (state := _text(r, "u_connection_state")),
                _text(r, "u_version"),
                bool(r.get("u_is_in_learning_mode")),
                _text(r, "u_interface_address"),
                str(zone) if (zone := _int(r.get("u_zone_id"))) is not None else "",
                online=state.upper() != "DISCONNECTED",
            )
            for r in (document if isinstance(document, list) else [])
            if isinstance(r, dict) and (i := _int(r.get("u_id"))) is not None
        ]

    def cve_pages(self, since_ms: int) -> Iterator[list[DeviceCves]]:
        for records in self._pages(f"/devicecves/{since_ms}", "u_device_cves"):
            yield [
                DeviceCves(
                    str(i),
                    _int(r.get("u_last_update")) or 0,
                    tuple(
                        Cve(
                            _text(c, "u_cve_id"),
                            _text(c, "u_score"),
                            _text(c, "u_attack_vector"),
                            _text(c, "u_description"),
                        )
                        for c in _objects(r, "u_cves")
                        if c.get("u_cve_id")
                    ),
                )
                for r in records
                if (i := _int(r.get("u_id"))) is not None
            ]

    def address_cves(self) -> list[AddressCves]:
        return []  # the console reports CVEs per device

    def skipped_reasons(self) -> list[str]:
        reasons = [f"{self.skipped} device record(s) without a readable u_id"] if self.skipped else []
        self.skipped = 0
        return reasons

    # -- as an alert source --------------------------------------------------------------------
    def _alerts(self, params: dict[str, str], report: ReadReport) -> list[SourceAlert]:
        report.queries += 1
        document = self._get("/alerts", params, api=ALERTS_API)
        found = []
        for record in document if isinstance(document, list) else []:
            if not isinstance(record, dict):
                continue
            try:
                handled = record.get("handled") is True
                found.append(parse_api_alert(record, closed=handled, sensor={}, reference=alert_uuid(record)))
            except ValueError as exc:
                report.skipped.append(f"alert {record.get('id', '?')}: {exc}")
        return found

    def open_alerts(self, report: ReadReport) -> Iterator[SourceAlert]:
        return iter(self._alerts({"state": "unhandled"}, report))

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[SourceAlert]:
        """Alerts raised from ``since`` on, handled or not (the console says which in ``handled``)."""
        return iter(self._alerts({"fromTime": str(int(since.timestamp() * 1000))}, report))

    def sensor_statuses(self, report: ReadReport) -> list[Sensor]:
        """The sensors that say their connection to the console (:meth:`sensors`)."""
        report.queries += 1
        return [sensor for sensor in self.sensors() if sensor.connection_state]

    def close_alert(self, reference: str, *, learn: bool = False) -> WriteResult:
        """Handle (and, with ``learn``, learn) an alert by its UUID (:func:`alert_uuid`); a console that knows no
        alert by it refuses, permanently (DefenderApiError, not retryable)."""
        return console_close(self.pipeline, self.stats, self.base_url, self.name, reference, learn)

    def close(self) -> None:
        self.pipeline.close()
