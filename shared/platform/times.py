"""Times as the app reads them from text: ISO 8601, ``Z`` accepted, a time without a zone taken as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_iso(value: Any) -> datetime | None:
    """The time ``value`` (text or a datetime) names, zone-aware; None when it names none."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
