"""The sensor-side enqueuer: wrap Defender for IoT alerts in the message contract and queue them.

Importable (``enqueue_alerts``) for a script next to a sensor or the management console's
forwarder, and behind the ``enqueue`` command. Every message is validated before it is sent, so a
bad one is refused at the source with the field named, and the stored size stays within the
queue's 64 KiB after base64 (the encoding host.json declares).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from azure.storage.queue import QueueClient

from shared.alerts import MAX_QUEUE_MESSAGE_BYTES, SCHEMA, InvalidMessageError, encoded_size, parse_message


def alert_envelope(alert: Mapping[str, Any], sensor: Mapping[str, Any], protocol: str | None = None) -> dict[str, Any]:
    """One Defender alert (as ``/api/v1/alerts`` returns it) as an ``alert`` message."""
    document: dict[str, Any] = {"schema": SCHEMA, "kind": "alert", "sensor": dict(sensor), "alert": dict(alert)}
    if protocol:
        document["protocol"] = protocol
    return document


def alerts_from_api(document: Any) -> list[dict[str, Any]]:
    """The alerts in a Defender API response: a list, or an object holding one under ``alerts``."""
    if isinstance(document, dict) and isinstance(document.get("alerts"), list):
        document = document["alerts"]
    if isinstance(document, dict) and "schema" in document:
        return [document]
    if not isinstance(document, list) or not all(isinstance(a, dict) for a in document):
        raise InvalidMessageError("input: expected a Defender alert list (JSON array of alert objects)")
    return document


def validate(document: Mapping[str, Any]) -> bytes:
    """The message body, after checking it parses and fits the queue; raises InvalidMessageError."""
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    parse_message(body)
    size = encoded_size(document)
    if size > MAX_QUEUE_MESSAGE_BYTES:
        raise InvalidMessageError(
            f"message: {size} bytes after base64, more than the queue's {MAX_QUEUE_MESSAGE_BYTES}"
        )
    return body


def enqueue_alerts(queue: QueueClient, documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Validate every message first, then send them all; returns the queue message ids.

    Nothing is sent when any message is invalid: the error names its position and field.
    """
    bodies = []
    for index, document in enumerate(documents):
        try:
            bodies.append(validate(document))
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"message {index}: {exc.reason}") from None
    return [queue.send_message(base64.b64encode(body).decode()).id for body in bodies]
