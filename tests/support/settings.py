"""The app settings integration tests start from: Azurite for storage, unique names per test."""

from __future__ import annotations

import json
import uuid
from typing import Any


def app_settings(storage: str, instance_url: str = "https://x.service-now.com", **overrides: str) -> dict[str, str]:
    """A complete, valid settings set on ``storage`` with a fresh queue and ledger table; overrides win."""
    return {
        "ALERTS_QUEUE": f"alerts{uuid.uuid4().hex[:12]}",
        "ALERTS_STORAGE": storage,
        "TOKEN_REFRESH_SCHEDULE": "0 */10 * * * *",
        "DEVICE_SYNC_SCHEDULE": "0 */5 * * * *",
        "ALERT_INTAKE_SCHEDULE": "0 */1 * * * *",
        "SERVICENOW_CONNECTIONS": json.dumps(
            [{"name": "default", "instance_url": instance_url, "auth": "basic", "username": "svc_defender"}]
        ),
        "FORWARDING_LEDGER_TABLE": f"ledger{uuid.uuid4().hex[:12]}",
        "FORWARDING_RULES_CHECK_SECONDS": "0",  # tests change the rules and expect them at once
        **overrides,
    }


def console_sync_settings(
    storage: str, servicenow: Any, console: Any, token: str, password: str, **overrides: str
) -> dict[str, str]:
    """The settings ``sync run`` and ``sync status`` read in a test: the console emulator as the device sync's
    source, the ServiceNow emulator signed in with ``password``, a state table of the test's own."""
    return app_settings(
        storage,
        servicenow.url,
        SERVICENOW_CA_BUNDLE=str(servicenow.ca_pem),
        SERVICENOW_DEFAULT_PASSWORD=password,
        DEVICE_SYNC_ENABLED="true",
        CONSOLE_URL=console.url,
        CONSOLE_CA_BUNDLE=str(console.ca_pem),
        DEFENDER_CONSOLE_API_TOKEN=token,
        DEVICE_SYNC_STATE_TABLE=f"sync{uuid.uuid4().hex[:12]}",
        **overrides,
    )
