"""The alert message, typed: what a source yields and what the forwarder reads.

A versioned JSON envelope, ``{"schema": "defender-iot-servicenow/alert-message/v1", "kind": …}``:

- ``alert`` — ``sensor`` (who saw it), optional ``protocol``, and ``alert``: a Defender for IoT alert
  as its API returns it (``/api/v1/alerts`` or the console's ``/external/v1/alerts``);
- ``system`` — a sensor came online or went offline: ``sensor`` and ``system`` ``{"status", "time"}``;
- ``alert_status`` — an alert was handled in Defender: ``sensor`` and ``alert`` ``{"id", "handled"}``,
  optionally ``resolution`` ``{"action", "notes", "by"}``.

:meth:`AlertMessage.to_document` writes a message as that envelope, checking each field by the rules the
parser (:mod:`shared.contract.parse`) reads it with; :func:`envelope` is the one place an envelope is put
together. The published JSON Schema is ``schemas/alert-message.v1.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from shared.contract.fields import (
    MAX_ACTION,
    MAX_ENGINE,
    MAX_NAME,
    MAX_PROTOCOL,
    MAX_REF,
    MAX_SOURCE,
    MAX_TITLE,
    InvalidMessageError,
    check_identifier,
    check_text,
    check_url,
    millis,
)

SCHEMA = "defender-iot-servicenow/alert-message/v1"
KINDS = ("alert", "system", "alert_status")
MAX_QUEUE_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue limit, as stored (after base64)
MAX_RELATED = 16  # devices of one alert whose CIs are looked up (a cloud alert lists its devices' resources)
DELIVERY_FIELD = "_delivery"  # the forwarder's own attempt history, added when it defers a message

Kind = Literal["alert", "system", "alert_status"]


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


def envelope(kind: Kind, sensor: Mapping[str, Any], **parts: Any) -> dict[str, Any]:
    """A message's document: the schema, its kind, the sensor, and its parts (those given)."""
    return {"schema": SCHEMA, "kind": kind, "sensor": dict(sensor), **{k: v for k, v in parts.items() if v is not None}}


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class SensorRef:
    """The sensor a message names: who saw the alert (not the device sync's :class:`Sensor` record)."""

    name: str
    id: str | None = None
    site: str | None = None
    zone: str | None = None
    url: str | None = None

    def document(self) -> dict[str, Any]:
        url = check_url(self.url, "sensor", "url")
        return _present(
            {
                "name": check_text(self.name or None, "sensor", "name", required=True, limit=MAX_NAME),
                "id": check_identifier(self.id, "sensor", "id") if self.id is not None else None,
                "site": check_text(self.site, "sensor", "site", limit=MAX_NAME),
                "zone": check_text(self.zone, "sensor", "zone", limit=MAX_NAME),
                "url": url,
            }
        )


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
    # Fields beyond the contract a source passes on (a cloud alert's deviceResourceIds, alertManagementUri);
    # a parsed message keeps every field it was sent in its ``raw``.
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def document(self) -> dict[str, Any]:
        """The alert as an ``alert`` message holds it, in Defender's field names."""
        title = check_text(self.title, "alert", "title", required=True, limit=MAX_TITLE)
        engine = check_text(self.engine, "alert", "engine", required=True, limit=MAX_ENGINE)
        found = {
            "id": check_identifier(self.id, "alert", "id"),
            "time": millis(self.time),
            "title": title,
            "severity": self.severity.label,
            "engine": engine,
            "message": check_text(self.message, "alert", "message"),
            "sourceDevice": self.source_device,
            "destinationDevice": self.destination_device,
            "sourceDeviceAddress": check_text(self.source_address, "alert", "sourceDeviceAddress", limit=MAX_NAME),
            "destinationDeviceAddress": check_text(
                self.destination_address, "alert", "destinationDeviceAddress", limit=MAX_NAME
            ),
            "remediationSteps": list(self.remediation_steps) or None,
            "additionalInformation": dict(self.additional_information) if self.additional_information else None,
            "handled": self.handled,
        }
        return {**_present(found), **self.extra}

    def status_document(self) -> dict[str, Any]:
        """The alert as an ``alert_status`` message names it: its id (and title, when known), handled."""
        title = check_text(self.title, "alert", "title", limit=MAX_TITLE)
        return _present({"id": check_identifier(self.id, "alert", "id"), "title": title, "handled": True})


@dataclass(frozen=True)
class SystemNotification:
    status: Literal["online", "offline"]
    time: datetime
    message: str = ""

    def document(self) -> dict[str, Any]:
        message = check_text(self.message, "system", "message")
        return _present({"status": self.status, "time": millis(self.time), "message": message})


@dataclass(frozen=True)
class Resolution:
    action: str = "handle"
    notes: str = ""
    by: str = ""

    def document(self) -> dict[str, Any]:
        return _present(
            {
                "action": check_text(self.action, "resolution", "action", limit=MAX_ACTION),
                "notes": check_text(self.notes, "resolution", "notes"),
                "by": check_text(self.by, "resolution", "by", limit=MAX_NAME),
            }
        )


@dataclass(frozen=True)
class AlertDevices:
    """The devices an alert concerns, by the ids the source's device sync gives them (``Device.id``): the
    sensors' and the console's alerts name a source and a destination device; a cloud alert lists its
    devices' resources without saying which is which (``related``)."""

    source: str | None = None
    destination: str | None = None
    related: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        found: dict[str, Any] = {"source": self.source, "destination": self.destination, "related": list(self.related)}
        return {k: v for k, v in found.items() if v}

    def checked(self, where: str) -> dict[str, Any]:
        """:meth:`document`, each id checked as the parser reads it."""
        for name in ("source", "destination"):
            if (value := getattr(self, name)) is not None:
                check_identifier(value, where, name)
        for number, value in enumerate(self.related):
            check_identifier(value, f"{where}.related", str(number))
        return self.document()


@dataclass(frozen=True)
class Origin:
    """Where the alert intake took the alert from: the source's name in DEFENDER_SOURCES and the source's own
    id of the alert (a cloud alert's resource id, a console alert's UUID), so that closing its record can
    close the alert there; and the devices it concerns as the source's device sync names them, so that its
    record can name their CIs. A sensor-side sender leaves it out."""

    source: str
    ref: str
    devices: AlertDevices = field(default_factory=AlertDevices)

    def document(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "source": check_text(self.source, "origin", "source", required=True, limit=MAX_SOURCE),
            "ref": check_text(self.ref, "origin", "ref", required=True, limit=MAX_REF),
        }
        if devices := self.devices.checked("origin.devices"):  # the forwarder finds their CIs by these
            found["devices"] = devices
        return found


@dataclass(frozen=True)
class AlertMessage:
    kind: Kind
    sensor: SensorRef
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

    def to_document(self) -> dict[str, Any]:
        """The message's envelope, each field checked by the parser's rules (InvalidMessageError names the
        first that breaks one): what a source yields is valid once written, with no parse to prove it."""
        protocol = check_text(self.protocol, "", "protocol", limit=MAX_PROTOCOL)
        sensor = self.sensor.document()
        if self.kind == "system":
            if self.system is None:
                raise InvalidMessageError("system: required")
            return envelope("system", sensor, system=self.system.document(), protocol=protocol)
        if self.alert is None:
            raise InvalidMessageError("alert: required")
        if self.kind == "alert_status":
            resolution = self.resolution.document() if self.resolution is not None else None
            return envelope(
                "alert_status", sensor, alert=self.alert.status_document(), resolution=resolution, protocol=protocol
            )
        origin = self.origin.document() if self.origin is not None else None
        return envelope("alert", sensor, alert=self.alert.document(), origin=origin, protocol=protocol)
