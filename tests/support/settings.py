"""The app settings integration tests start from: Azurite for storage, unique names per test."""

from __future__ import annotations

import json
import uuid


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
