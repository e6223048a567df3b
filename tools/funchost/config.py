"""What the local host reads: local.settings.json, host.json, and the app's binding metadata."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTING_EXPRESSION = re.compile(r"%([A-Za-z0-9_.:-]+)%")
TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


class HostConfigError(ValueError):
    """The app, its settings or host.json cannot be run by the local host; the message says why."""


def load_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of local.settings.json, as ``func start`` reads them."""
    if not path.exists():
        raise HostConfigError(f"{path} not found; copy local.settings.json.example (make run writes it for you)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise HostConfigError(f"{path} has no 'Values' object")
    return {str(k): str(v) for k, v in values.items()}


def resolve(expression: str, settings: Mapping[str, str], where: str) -> str:
    """Replace ``%SETTING%`` with the setting's value, as the host does for binding expressions."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings or settings[name] == "":
            raise HostConfigError(f"{where}: '%{name}%' does not resolve to a value (app setting {name} is not set)")
        return settings[name]

    return SETTING_EXPRESSION.sub(substitute, expression)


def timespan_seconds(value: Any, name: str) -> float:
    """A host.json TimeSpan ``[d.]hh:mm:ss[.fff]`` in seconds."""
    match = TIMESPAN.fullmatch(str(value))
    if not match:
        raise HostConfigError(f"host.json {name}={value!r} is not a TimeSpan like '00:00:30'")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``, with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 2.0  # the host's default when developing locally
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, document: Mapping[str, Any], cores: int) -> QueueOptions:
        queues = (document.get("extensions") or {}).get("queues") or {}
        batch_size = int(queues.get("batchSize", 16))
        if not 1 <= batch_size <= 32:
            raise HostConfigError(f"host.json extensions.queues.batchSize={batch_size} must be 1-32")
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise HostConfigError(f"host.json extensions.queues.messageEncoding={encoding!r} must be base64 or none")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", (batch_size // 2) * cores)),
            max_polling_interval=timespan_seconds(queues.get("maxPollingInterval", "00:00:02"), "maxPollingInterval"),
            visibility_timeout=timespan_seconds(queues.get("visibilityTimeout", "00:00:00"), "visibilityTimeout"),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            message_encoding=encoding,
        )


def function_timeout(host_json: Mapping[str, Any]) -> float | None:
    """host.json ``functionTimeout`` in seconds; None for ``-1`` (unbounded). Unset: Flex Consumption's 30 min."""
    value = host_json.get("functionTimeout", "00:30:00")
    if str(value) == "-1":
        return None
    seconds = timespan_seconds(value, "functionTimeout")
    if seconds <= 0:
        raise HostConfigError(f"host.json functionTimeout={value!r} must be positive (or -1 for no limit)")
    return seconds


def load_host_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise HostConfigError(f"{path} not found")
    document: dict[str, Any] = json.loads(path.read_text())
    if document.get("version") != "2.0":
        raise HostConfigError(f"{path}: version must be '2.0'")
    return document


def with_overrides(host_json: Mapping[str, Any], settings: Mapping[str, str]) -> dict[str, Any]:
    """host.json with the ``AzureFunctionsJobHost__a__b`` app settings applied, as the host applies them
    (how a deployment sets the queue settings without changing host.json)."""
    document: dict[str, Any] = json.loads(json.dumps(host_json))
    for name, value in settings.items():
        path = name.split("__")
        if path[0] != "AzureFunctionsJobHost" or len(path) < 2:
            continue
        node = document
        for key in path[1:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = int(value) if re.fullmatch(r"-?[0-9]+", value) else value
    return document


def storage_connection_string(settings: Mapping[str, str], connection: str) -> str:
    """The connection string behind a binding's ``connection`` name, the way the host resolves it locally.

    Identity-based connections (``<name>__queueServiceUri``) need Azure identity and real endpoints;
    locally the host needs a connection string (``UseDevelopmentStorage=true`` means Azurite).
    """
    value = settings.get(connection) or settings.get(f"AzureWebJobs{connection}")
    if not value:
        if settings.get(f"{connection}__queueServiceUri") or settings.get(f"{connection}__accountName"):
            raise HostConfigError(
                f"connection '{connection}' is identity-based; the local host needs a connection string "
                f"(set {connection}=UseDevelopmentStorage=true for Azurite)"
            )
        raise HostConfigError(f"connection '{connection}' is not set; expected app setting {connection}")
    return value  # the SDKs read 'UseDevelopmentStorage=true' as Azurite's default endpoints
