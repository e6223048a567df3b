"""The alert message contract's names as ``shared.alerting.messages`` gave them before the contract moved
below ``defender/`` (``shared/contract``): kept so that importers written against this path still work.
New code imports ``shared.contract.model`` (the types), ``shared.contract.parse`` (reading and writing a
body) and ``shared.contract.fields`` (``InvalidMessageError``)."""

from __future__ import annotations

from shared.contract.fields import MAX_ID, MAX_TEXT, InvalidMessageError
from shared.contract.model import (
    DELIVERY_FIELD,
    ENGINES,
    KINDS,
    MAX_QUEUE_MESSAGE_BYTES,
    MAX_RELATED,
    SCHEMA,
    Alert,
    AlertDevices,
    AlertMessage,
    Kind,
    Origin,
    Resolution,
    SensorRef,
    Severity,
    SystemNotification,
    normalise_engine,
)
from shared.contract.parse import check_queue_size, encode, parse_message, queue_size

__all__ = [
    "DELIVERY_FIELD",
    "ENGINES",
    "KINDS",
    "MAX_ID",
    "MAX_QUEUE_MESSAGE_BYTES",
    "MAX_RELATED",
    "MAX_TEXT",
    "SCHEMA",
    "Alert",
    "AlertDevices",
    "AlertMessage",
    "InvalidMessageError",
    "Kind",
    "Origin",
    "Resolution",
    "SensorRef",
    "Severity",
    "SystemNotification",
    "check_queue_size",
    "encode",
    "normalise_engine",
    "parse_message",
    "queue_size",
]
