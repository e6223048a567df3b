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

from shared.contract.fields import InvalidMessageError
from shared.contract.model import AlertMessage, envelope
from shared.contract.parse import check_queue_size, parse_message, serialise


def alert_envelope(alert: Mapping[str, Any], sensor: Mapping[str, Any], protocol: str | None = None) -> dict[str, Any]:
    """One Defender alert (as ``/api/v1/alerts`` returns it) as an ``alert`` message: the sender's fields as
    they are (the forwarder keeps what the contract does not name in ``raw``)."""
    return envelope("alert", sensor, alert=dict(alert), protocol=protocol or None)


class InvalidBatchError(InvalidMessageError):
    """Some messages of a batch are invalid; ``problems`` names each one (numbered from 1) and its field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_alerts(text: str | bytes, where: str) -> list[dict[str, Any]]:
    """The alerts in a sender's input: JSON only (alert messages are JSON; a YAML reading would turn
    ``0x1F`` into 31 and ``yes`` into true). Accepted: a Defender API response (a list of alerts, or an
    object holding them under ``alerts``), a list of envelopes, one alert object, or one envelope."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessageError(
            f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); alert messages are JSON only"
        ) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else "not UTF-8"
        raise InvalidMessageError(f"{where}: {problem}") from None
    if isinstance(document, dict) and isinstance(document.get("alerts"), list):
        document = document["alerts"]
    if isinstance(document, dict):
        return [document]  # one envelope, or one Defender alert
    if not isinstance(document, list) or not document or not all(isinstance(a, dict) for a in document):
        raise InvalidMessageError(
            f"{where}: expected a JSON array of Defender alert objects (as /api/v1/alerts returns them), "
            "an object with an 'alerts' array, or one alert object"
        )
    return document


def checked(document: Mapping[str, Any]) -> tuple[bytes, AlertMessage]:
    """A sender's document as its body (written once) and the message it parses to (read once), after
    checking it fits the queue; raises InvalidMessageError."""
    body = serialise(document)
    message = parse_message(body)
    check_queue_size(body)
    return body, message


def validate(document: Mapping[str, Any]) -> bytes:
    """The message body, after checking it parses and fits the queue; raises InvalidMessageError."""
    return checked(document)[0]


def enqueue_alerts(queue: QueueClient, documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Validate every message first, then send them all; returns the queue message ids.

    Nothing is sent when any message is invalid: :class:`InvalidBatchError` names every invalid one by
    its position (counted from 1) and its field.
    """
    bodies, problems = [], []
    for number, document in enumerate(documents, 1):
        try:
            bodies.append(validate(document))
        except InvalidMessageError as exc:
            problems.append(f"message {number}: {exc.reason}")
    if problems:
        raise InvalidBatchError(problems)
    return send(queue, bodies)


def send(queue: QueueClient, bodies: Iterable[bytes]) -> list[str]:
    """Queue message bodies already validated (:func:`validate`), base64 as host.json declares."""
    return [queue.send_message(base64.b64encode(body).decode()).id for body in bodies]
