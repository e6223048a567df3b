"""Reading a message: a queue body (or a sender's document) into an :class:`AlertMessage`, validated once;
and writing one: the body as the queue holds it, and whether it fits.

Field names match case-insensitively (Defender's own payloads mix ``additionalInformation`` and
``additionalinformation``); unknown fields are kept in ``raw``; every rejection names the field.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.contract.fields import (
    MAX_ACTION,
    MAX_ENGINE,
    MAX_NAME,
    MAX_PROTOCOL,
    MAX_REF,
    MAX_SOURCE,
    MAX_TITLE,
    Fields,
    InvalidMessageError,
    check_url,
)
from shared.contract.model import (
    KINDS,
    MAX_QUEUE_MESSAGE_BYTES,
    MAX_RELATED,
    SCHEMA,
    Alert,
    AlertDevices,
    AlertMessage,
    Origin,
    Resolution,
    SensorRef,
    Severity,
    SystemNotification,
    normalise_engine,
)


def remediation(value: Any, where: str) -> tuple[str, ...]:
    """Remediation steps as the contract holds them: one step or a list of them."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(step, str) for step in value):
        return tuple(value)
    raise InvalidMessageError(f"{where}: expected a string or a list of strings")


def _sensor(envelope: Fields, alert: Fields | None) -> SensorRef:
    sensor = envelope.child("sensor", required=alert is None or alert.get("sensorName") is None)
    if sensor is None:
        assert alert is not None
        name = alert.text("sensorName", required=True)
        assert name is not None
        return SensorRef(name=name, site=alert.text("siteName"), zone=alert.text("zoneName"))
    url = check_url(sensor.get("url"), sensor.where, "url")
    name = sensor.text("name", required=True, limit=MAX_NAME)
    assert name is not None
    sensor_id = sensor.get("id")
    return SensorRef(
        name=name,
        id=sensor.identifier("id") if sensor_id is not None else None,
        site=sensor.text("site", limit=MAX_NAME) or (alert.text("siteName") if alert else None),
        zone=sensor.text("zone", limit=MAX_NAME) or (alert.text("zoneName") if alert else None),
        url=url,
    )


def parse_alert(alert: Fields) -> Alert:
    """A Defender alert object (``/api/v1/alerts``, the console's ``/external/v1/alerts``) as the contract's
    :class:`Alert`; what a sensor's and the console's alert sources read their records with."""
    title = alert.text("title", required=True, limit=MAX_TITLE)
    engine = alert.text("engine", required=True, limit=MAX_ENGINE)
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
        source_address=alert.text("sourceDeviceAddress", limit=MAX_NAME),
        destination_address=alert.text("destinationDeviceAddress", limit=MAX_NAME),
        remediation_steps=remediation(alert.get("remediationSteps"), alert.path("remediationSteps")),
        additional_information=information,
        handled=alert.boolean("handled"),
    )


def _origin(envelope: Fields) -> Origin | None:
    origin = envelope.child("origin", required=False)
    if origin is None:
        return None
    source = origin.text("source", required=True, limit=MAX_SOURCE)
    ref = origin.text("ref", required=True, limit=MAX_REF)
    assert source is not None and ref is not None
    return Origin(source, ref, _devices(origin.child("devices", required=False)))


def _devices(devices: Fields | None) -> AlertDevices:
    if devices is None:
        return AlertDevices()
    related = devices.get("related")
    if related is not None and not isinstance(related, list):
        raise InvalidMessageError(f"{devices.path('related')}: expected a list of device ids")
    items = Fields({str(i): v for i, v in enumerate(related or ())}, devices.path("related"))
    return AlertDevices(
        source=devices.identifier("source") if devices.get("source") is not None else None,
        destination=devices.identifier("destination") if devices.get("destination") is not None else None,
        related=tuple(items.identifier(str(i)) for i in range(len(related or ())))[:MAX_RELATED],
    )


def _status(envelope: Fields, protocol: str | None, document: dict[str, Any]) -> AlertMessage:
    alert = envelope.child("alert")
    assert alert is not None
    handled = alert.boolean("handled")
    if handled is False:
        raise InvalidMessageError("alert.handled: an alert_status message reports a handled alert; expected true")
    resolution = envelope.child("resolution", required=False)
    status_alert = Alert(
        id=alert.identifier("id"),
        time=alert.time("time", required=False) or datetime.now(UTC),
        title=alert.text("title", limit=MAX_TITLE) or "",
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
            action=(resolution.text("action", limit=MAX_ACTION) if resolution else None) or "handle",
            notes=(resolution.text("notes") if resolution else None) or "",
            by=(resolution.text("by", limit=MAX_NAME) if resolution else None) or "",
        ),
        raw=document,
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
    envelope = Fields(document, "")
    schema = envelope.get("schema")
    if schema != SCHEMA:
        raise InvalidMessageError(f"schema: expected {SCHEMA!r}, got {schema!r}")
    kind = envelope.get("kind")
    if kind not in KINDS:
        raise InvalidMessageError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    protocol = envelope.text("protocol", limit=MAX_PROTOCOL)
    if kind == "alert":
        alert = envelope.child("alert")
        assert alert is not None
        return AlertMessage(
            "alert", _sensor(envelope, alert), parse_alert(alert), protocol, raw=document, origin=_origin(envelope)
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
    return _status(envelope, protocol, document)


def serialise(document: Mapping[str, Any]) -> bytes:
    """A message's body: compact JSON, UTF-8 (written once; the queue's base64 is :func:`send`'s)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def encode(document: Mapping[str, Any]) -> str:
    """A message as the queue holds it: compact JSON, base64 (host.json's messageEncoding)."""
    return base64.b64encode(serialise(document)).decode()


def queue_size(body: bytes, encoding: str = "base64") -> int:
    """Bytes a body takes on the queue: base64 grows it by a third (four characters per three bytes)."""
    return 4 * -(-len(body) // 3) if encoding == "base64" else len(body)


def check_queue_size(body: bytes) -> None:
    """Whether the body fits the queue after base64; InvalidMessageError says by how much it does not."""
    size = queue_size(body)
    if size > MAX_QUEUE_MESSAGE_BYTES:
        raise InvalidMessageError(
            f"message: {size} bytes after base64, more than the queue's {MAX_QUEUE_MESSAGE_BYTES}"
        )
