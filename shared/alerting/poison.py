"""The poison queue: what is in it, which alert each message is, and putting messages back.

Two kinds of message land there: the forwarder's wrapper (``{"reason", "message", "attempts", …}``,
base64 JSON), and the host's raw copy of a message whose invocations kept failing
(``maxDequeueCount``). A queue hands out at most 32 messages per receive, so reading it whole means
receiving page after page, each page hidden for a while so that it is not handed out twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from shared.contract.model import DELIVERY_FIELD
from shared.contract.parse import encode

HOST_COPY_REASON = "failed in the host (maxDequeueCount reached)"
PAGE = 32
RAW_BODY_LIMIT = 40_000  # bytes of an unreadable body kept: the wrapper must still fit in a queue message


def poison_queue_name(queue: str) -> str:
    """The host's name for a queue's poison queue."""
    return f"{queue}-poison"


def wrap(body: bytes, message: Mapping[str, Any] | None, reason: str, attempts: Sequence[Any], now: datetime) -> str:
    """The forwarder's poison message: the reason, the attempt history and the original (a fresh copy
    without the forwarder's delivery field, or the raw body when it was not a readable message)."""
    wrapper: dict[str, Any] = {"reason": reason, "poisoned_at": now.isoformat(), "attempts": list(attempts)}
    if message is not None:
        wrapper["message"] = {k: v for k, v in message.items() if k != DELIVERY_FIELD}
    else:
        wrapper["message_base64"] = base64.b64encode(body[:RAW_BODY_LIMIT]).decode()
    return encode(wrapper)


@dataclass(frozen=True)
class PoisonEntry:
    """One poison message, decoded."""

    reason: str
    message: dict[str, Any] | None  # the original envelope, when it is readable
    replay_body: str  # the queue content that starts it afresh: a new age, no attempt history

    @classmethod
    def decode(cls, content: str) -> PoisonEntry:
        document = _json(content)
        if isinstance(document, dict) and "reason" in document:  # the forwarder's wrapper
            original = document.get("message")
            if isinstance(original, dict):
                fresh = {k: v for k, v in original.items() if k != DELIVERY_FIELD}
                return cls(str(document["reason"]), original, encode(fresh))
            raw = str(document.get("message_base64") or "")
            inner = _json(raw)
            return cls(str(document["reason"]), inner if isinstance(inner, dict) else None, raw)
        return cls(HOST_COPY_REASON, document if isinstance(document, dict) else None, content)

    @property
    def alert(self) -> str:
        """Which alert this is, as far as the message says: sensor, alert id and title."""
        if self.message is None:
            return "(not a readable alert message)"
        sensor = self.message.get("sensor")
        sensor_name = sensor.get("name") if isinstance(sensor, dict) else None
        system = self.message.get("system")
        if isinstance(system, dict):
            return f"sensor {sensor_name or '?'}: {system.get('status', '?')} notification"
        alert = self.message.get("alert")
        if not isinstance(alert, dict):
            return f"sensor {sensor_name or '?'}"
        sensor_name = sensor_name or alert.get("sensorName") or "?"
        title = alert.get("title")
        return f"sensor {sensor_name}, alert {alert.get('id', '?')}" + (f": {title}" if title else " (no title)")


def _json(content: str) -> Any:
    try:
        return json.loads(base64.b64decode(content, validate=True))
    except (ValueError, RecursionError):
        return None


def receive_all(poison: QueueClient, hide_seconds: int = 120) -> Iterator[QueueMessage]:
    """Every message on the queue, page by page; each stays hidden for ``hide_seconds`` once received.

    A message that reappears while the listing is still going (a very long queue) is not given twice.
    """
    seen: set[str] = set()
    try:
        while page := list(
            poison.receive_messages(messages_per_page=PAGE, max_messages=PAGE, visibility_timeout=hide_seconds)
        ):
            fresh = [m for m in page if m.id not in seen]
            if not fresh:
                return
            for message in fresh:
                seen.add(message.id)
                yield message
    except ResourceNotFoundError:
        return


def release(poison: QueueClient, messages: Sequence[QueueMessage]) -> None:
    """Make received messages visible again, unchanged."""
    for message in messages:
        poison.update_message(message, visibility_timeout=0)


def replay(poison: QueueClient, alerts: QueueClient, message: QueueMessage) -> None:
    """Put one received poison message back on the alerts queue, then take it off the poison queue."""
    alerts.send_message(PoisonEntry.decode(message.content).replay_body)
    poison.delete_message(message)


def inserted(message: QueueMessage) -> str:
    moment: datetime | None = message.inserted_on
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "?"
