"""Helpers for forwarding tests: rules and alerts to send, and the stack they run on."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.storage.queue import QueueClient

from shared.alerting.forwarder import Forwarder, Result
from shared.alerting.group_notes import NotesReport
from shared.contract.model import SCHEMA
from shared.settings import Settings
from tools.emulators.servicenow import ServiceNowEmulator

CREATED = "2025-01-01T00:00:00+00:00"
ACTIONS = [
    {"name": "incident", "connection": "default", "report": "incident"},
    {"name": "incident-reopen", "connection": "default", "report": "incident", "on_closed": "reopen"},
    {"name": "soc", "connection": "default", "report": "full", "table": "sn_si_incident"},
    {"name": "broken", "connection": "default", "report": "full", "table": "sn_no_such_table"},
    {
        "name": "grouped",
        "connection": "default",
        "report": "incident",
        "group": {"key": "{sensor}:{title}", "window_minutes": 60},
    },
]


def rules(*selected: str, **rule: Any) -> dict[str, Any]:
    return {
        "actions": ACTIONS,
        "rules": [{"name": "main", "created_at": CREATED, "actions": list(selected or ["incident"]), **rule}],
    }


def alert(alert_id: Any = 1001, severity: str = "Major", **extra: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "sensor-1", "id": 7, "site": "Plant A"},
        "alert": {
            "id": alert_id,
            "time": 1763762400000,
            "title": "Illegal MODBUS Operation",
            "severity": severity,
            "engine": "Protocol Violation",
            "message": "Exception raised by master",
            **extra,
        },
    }


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


@dataclass
class Stack:
    settings: Settings
    forwarder: Forwarder
    servicenow: ServiceNowEmulator
    queue: QueueClient
    poison: QueueClient
    rules_path: Path
    environ: dict[str, str]

    def handle(self, document: dict[str, Any] | bytes, message_id: str | None = None) -> Result:
        data = document if isinstance(document, bytes) else body(document)
        return self.forwarder.handle(data, message_id or uuid.uuid4().hex)

    def records(self, table: str = "incident") -> list[dict[str, str]]:
        return self.servicenow.store.all(table)

    def deferred(self, wait: float = 0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + wait
        while True:
            found = [(m.id, base64.b64decode(m.content)) for m in self.queue.receive_messages(max_messages=32)]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def poisoned(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(base64.b64decode(m.content)) for m in self.poison.peek_messages(max_messages=32)]
        except Exception:  # created on first use
            return []

    def notes(self) -> NotesReport:
        """One run of the group notes timer on this stack's settings."""
        from shared.app.groups import build_group_notes

        group_notes = build_group_notes(self.settings)
        try:
            return group_notes.run()
        finally:
            for client in group_notes.clients.values():
                client.close()

    def set_rules(self, document: dict[str, Any]) -> None:
        self.rules_path.write_text(json.dumps(document))
