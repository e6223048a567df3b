"""The alert message contract: what sensors put on the alerts queue, parsed and validated once.

A versioned JSON envelope, ``{"schema": "defender-iot-servicenow/alert-message/v1", "kind": …}``:

- ``alert`` — ``sensor`` (who saw it), optional ``protocol``, and ``alert``: a Defender for IoT alert
  as its API returns it (``/api/v1/alerts`` or the console's ``/external/v1/alerts``);
- ``system`` — a sensor came online or went offline: ``sensor`` and ``system`` ``{"status", "time"}``;
- ``alert_status`` — an alert was handled in Defender: ``sensor`` and ``alert`` ``{"id", "handled"}``,
  optionally ``resolution`` ``{"action", "notes", "by"}``.

Field names match case-insensitively (Defender's own payloads mix ``additionalInformation`` and
``additionalinformation``); unknown fields are kept in ``raw``; every rejection names the field. The
published JSON Schema is ``schemas/alert-message.v1.json``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Literal

from shared.defender.model import AlertDevices
from shared.platform.times import parse_iso

SCHEMA = "defender-iot-servicenow/alert-message/v1"
KINDS = ("alert", "system", "alert_status")
MAX_QUEUE_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue limit, as stored (after base64)
MAX_TEXT = 16_384
MAX_ID = 256
MAX_RELATED = 16  # devices of one alert whose CIs are looked up (a cloud alert lists its devices' resources)
DELIVERY_FIELD = "_delivery"  # the forwarder's own attempt history, added when it defers a message

Kind = Literal["alert", "system", "alert_status"]


class InvalidMessageError(ValueError):
    """The message can never be processed; ``reason`` names the field and what was wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Severity(IntEnum):
    WARNING = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def parse(cls, value: Any, where: str) -> Severity:
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        raise InvalidMessageError(f"{where}: {value!r} is not one of Warning, Minor, Major, Critical")


ENGINES = {
    "protocolviolation": "Protocol Violation",
    "policyviolation": "Policy Violation",
    "malware": "Malware",
    "anomaly": "Anomaly",
    "operational": "Operational",
}


def normalise_engine(value: str) -> str:
    """Defender spells engines 'Protocol Violation' in alerts and 'PROTOCOL_VIOLATION' elsewhere."""
    key = "".join(c for c in value.lower() if c.isalnum())
    return ENGINES.get(key, value.strip())


class _Object:
    """Case-insensitive read access to one JSON object, with errors that name the field path."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise InvalidMessageError(f"{where}: expected an object, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.where = where
        self.keys: dict[str, str] = {}
        for key in raw:
            folded = str(key).lower()
            if folded in self.keys:
                raise InvalidMessageError(f"{where}: fields {self.keys[folded]!r} and {key!r} differ only in case")
            self.keys[folded] = key

    def path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str) -> Any:
        key = self.keys.get(name.lower())
        return None if key is None else self.raw[key]

    def text(self, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
        value = self.get(name)
        if value is None or (value == "" and not required):
            if required:
                raise InvalidMessageError(f"{self.path(name)}: required")
            return None
        if not isinstance(value, str):
            raise InvalidMessageError(f"{self.path(name)}: expected a string, got {type(value).__name__}")
        if required and not value.strip():
            raise InvalidMessageError(f"{self.path(name)}: must not be empty")
        if len(value) > limit:
            raise InvalidMessageError(f"{self.path(name)}: {len(value)} characters, more than {limit}")
        return value

    def identifier(self, name: str) -> str:
        value = self.get(name)
        if isinstance(value, bool) or value is None:
            raise InvalidMessageError(f"{self.path(name)}: required (a number or a string)")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip() and len(value) <= MAX_ID and value.isprintable():
            return value.strip()
        raise InvalidMessageError(
            f"{self.path(name)}: expected a number or a printable string of 1-{MAX_ID} characters"
        )

    def time(self, name: str, *, required: bool = True) -> datetime | None:
        value = self.get(name)
        if value is None:
            if required:
                raise InvalidMessageError(f"{self.path(name)}: required (milliseconds since the epoch, UTC)")
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            try:
                return datetime.fromtimestamp(value / 1000, UTC)
            except (OverflowError, OSError, ValueError):
                pass
        elif isinstance(value, str) and (parsed := parse_iso(value)) is not None:
            return parsed
        raise InvalidMessageError(f"{self.path(name)}: {value!r} is not a time (milliseconds since the epoch, UTC)")

    def integer(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InvalidMessageError(f"{self.path(name)}: expected a whole number or null")

    def boolean(self, name: str) -> bool | None:
        value = self.get(name)
        if value is None or isinstance(value, bool):
            return value
        raise InvalidMessageError(f"{self.path(name)}: expected true or false")

    def child(self, name: str, *, required: bool = True) -> _Object | None:
        value = self.get(name)
        if value is None:
            if required:
                raise InvalidMessageError(f"{self.path(name)}: required")
            return None
        return _Object(value, self.path(name))


@dataclass(frozen=True)
class Sensor:
    name: str
    id: str | None = None
    site: str | None = None
    zone: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Alert:
    id: str
    time: datetime
    title: str
    severity: Severity
    engine: str
    message: str = ""
    source_device: int | None = None
    destination_device: int | None = None
    source_address: str | None = None
    destination_address: str | None = None
    remediation_steps: tuple[str, ...] = ()
    additional_information: Mapping[str, Any] | None = None
    handled: bool | None = None


@dataclass(frozen=True)
class SystemNotification:
    status: Literal["online", "offline"]
    time: datetime
    message: str = ""


@dataclass(frozen=True)
class Resolution:
    action: str = "handle"
    notes: str = ""
    by: str = ""


@dataclass(frozen=True)
class Origin:
    """Where the alert intake took the alert from: the source's name in DEFENDER_SOURCES and the source's own
    id of the alert (a cloud alert's resource id, a console alert's UUID), so that closing its record can
    close the alert there; and the devices it concerns as the source's device sync names them, so that its
    record can name their CIs. A sensor-side sender leaves it out."""

    source: str
    ref: str
    devices: AlertDevices = field(default_factory=AlertDevices)


@dataclass(frozen=True)
class AlertMessage:
    kind: Kind
    sensor: Sensor
    alert: Alert | None = None
    protocol: str | None = None
    system: SystemNotification | None = None
    resolution: Resolution | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    origin: Origin | None = None

    @property
    def alert_id(self) -> str | None:
        return self.alert.id if self.alert else None

    @property
    def raised_at(self) -> datetime:
        if self.alert is not None:
            return self.alert.time
        assert self.system is not None
        return self.system.time

    @property
    def delivery(self) -> Mapping[str, Any]:
        value = self.raw.get(DELIVERY_FIELD)
        return value if isinstance(value, dict) else {}


def _remediation(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(step, str) for step in value):
        return tuple(value)
    raise InvalidMessageError(f"{where}: expected a string or a list of strings")


def _sensor(envelope: _Object, alert: _Object | None) -> Sensor:
    sensor = envelope.child("sensor", required=alert is None or alert.get("sensorName") is None)
    if sensor is None:
        assert alert is not None
        name = alert.text("sensorName", required=True)
        assert name is not None
        return Sensor(name=name, site=alert.text("siteName"), zone=alert.text("zoneName"))
    url = sensor.text("url", limit=2048)
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise InvalidMessageError(f"{sensor.path('url')}: expected an http(s) URL")
    name = sensor.text("name", required=True, limit=256)
    assert name is not None
    sensor_id = sensor.get("id")
    return Sensor(
        name=name,
        id=sensor.identifier("id") if sensor_id is not None else None,
        site=sensor.text("site", limit=256) or (alert.text("siteName") if alert else None),
        zone=sensor.text("zone", limit=256) or (alert.text("zoneName") if alert else None),
        url=url,
    )


def _alert(alert: _Object) -> Alert:
    title = alert.text("title", required=True, limit=1024)
    engine = alert.text("engine", required=True, limit=128)
    assert title is not None and engine is not None
    time = alert.time("time")
    assert time is not None
    information = alert.get("additionalInformation")
    if information is not None and not isinstance(information, dict):
        raise InvalidMessageError(f"{alert.path('additionalInformation')}: expected an object or null")
    return Alert(
        id=alert.identifier("id"),
        time=time,
        title=title,
        severity=Severity.parse(alert.get("severity"), alert.path("severity")),
        engine=normalise_engine(engine),
        message=alert.text("message") or "",
        source_device=alert.integer("sourceDevice"),
        destination_device=alert.integer("destinationDevice"),
        source_address=alert.text("sourceDeviceAddress", limit=256),
        destination_address=alert.text("destinationDeviceAddress", limit=256),
        remediation_steps=_remediation(alert.get("remediationSteps"), alert.path("remediationSteps")),
        additional_information=information,
        handled=alert.boolean("handled"),
    )


def _origin(envelope: _Object) -> Origin | None:
    origin = envelope.child("origin", required=False)
    if origin is None:
        return None
    source = origin.text("source", required=True, limit=64)
    ref = origin.text("ref", required=True, limit=1024)
    assert source is not None and ref is not None
    return Origin(source, ref, _devices(origin.child("devices", required=False)))


def _devices(devices: _Object | None) -> AlertDevices:
    if devices is None:
        return AlertDevices()
    related = devices.get("related")
    if related is not None and not isinstance(related, list):
        raise InvalidMessageError(f"{devices.path('related')}: expected a list of device ids")
    items = _Object({str(i): v for i, v in enumerate(related or ())}, devices.path("related"))
    return AlertDevices(
        source=devices.identifier("source") if devices.get("source") is not None else None,
        destination=devices.identifier("destination") if devices.get("destination") is not None else None,
        related=tuple(items.identifier(str(i)) for i in range(len(related or ())))[:MAX_RELATED],
    )


def parse_message(body: bytes) -> AlertMessage:
    """Decode and validate one queue message body (already base64-decoded by the trigger)."""
    if len(body) > MAX_QUEUE_MESSAGE_BYTES:
        raise InvalidMessageError(f"message: {len(body)} bytes, more than the queue's {MAX_QUEUE_MESSAGE_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(f"message: not UTF-8 (invalid byte at position {exc.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(f"message: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InvalidMessageError("message: JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidMessageError(f"message: expected a JSON object, got {type(document).__name__}")
    envelope = _Object(document, "")
    schema = envelope.get("schema")
    if schema != SCHEMA:
        raise InvalidMessageError(f"schema: expected {SCHEMA!r}, got {schema!r}")
    kind = envelope.get("kind")
    if kind not in KINDS:
        raise InvalidMessageError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    protocol = envelope.text("protocol", limit=64)
    if kind == "alert":
        alert = envelope.child("alert")
        assert alert is not None
        return AlertMessage(
            "alert", _sensor(envelope, alert), _alert(alert), protocol, raw=document, origin=_origin(envelope)
        )
    if kind == "system":
        system = envelope.child("system")
        assert system is not None
        status = system.text("status", required=True, limit=16)
        if status not in ("online", "offline"):
            raise InvalidMessageError(f"system.status: expected 'online' or 'offline', got {status!r}")
        time = system.time("time")
        assert time is not None
        notification = SystemNotification(status, time, system.text("message") or "")  # type: ignore[arg-type]
        return AlertMessage("system", _sensor(envelope, None), None, protocol, notification, raw=document)
    alert = envelope.child("alert")
    assert alert is not None
    handled = alert.boolean("handled")
    if handled is False:
        raise InvalidMessageError("alert.handled: an alert_status message reports a handled alert; expected true")
    resolution = envelope.child("resolution", required=False)
    status_alert = Alert(
        id=alert.identifier("id"),
        time=alert.time("time", required=False) or datetime.now(UTC),
        title=alert.text("title", limit=1024) or "",
        severity=Severity.WARNING,
        engine="",
        handled=True,
    )
    return AlertMessage(
        "alert_status",
        _sensor(envelope, alert),
        status_alert,
        protocol,
        resolution=Resolution(
            action=(resolution.text("action", limit=32) if resolution else None) or "handle",
            notes=(resolution.text("notes") if resolution else None) or "",
            by=(resolution.text("by", limit=256) if resolution else None) or "",
        ),
        raw=document,
    )


def encode(document: Mapping[str, Any]) -> str:
    """A message as the queue holds it: compact JSON, base64 (host.json's messageEncoding)."""
    return base64.b64encode(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()).decode()


def encoded_size(document: Mapping[str, Any], encoding: str = "base64") -> int:
    """Bytes the message takes on the queue: base64 grows JSON by a third."""
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return len(base64.b64encode(data)) if encoding == "base64" else len(data)
