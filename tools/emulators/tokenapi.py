"""The front door the console and a sensor share: the bare API token in ``Authorization``, then the
shared fault plan; what is left is the emulator's own routing."""

from __future__ import annotations

import secrets
from collections import Counter

from tools.emulators.faults import FaultPlan
from tools.emulators.httpserver import Reply


def token_gate(
    headers: dict[str, str], token: str, faults: FaultPlan, stats: Counter[str]
) -> tuple[bool, Reply | None]:
    """(True, None) to serve the request; else (False, the answer), the answer None for a dropped connection."""
    if not secrets.compare_digest(headers.get("authorization", "").encode(), token.encode()):
        return False, Reply(401, {"error": "Unauthorized"})
    stats["requests"] += 1
    fault = faults.take()
    if fault is None:
        return True, None
    stats["faults"] += 1
    if fault.kind == "reset":
        return False, None
    return False, Reply(
        fault.status, {"error": "injected"}, {"Retry-After": fault.retry_after} if fault.retry_after else {}
    )
