"""Times as the app reads them from text (ISO 8601, ``Z`` accepted, a time without a zone taken as UTC), and the
deadline a job stops at."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


class Deadline:
    """When a job stops at its next saved point: an invocation's start plus the run time it may use
    (``Settings.run_seconds``, from host.json's functionTimeout), so the host's timeout is never reached."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.at = clock() + seconds

    def passed(self) -> bool:
        return self.clock() >= self.at

    def __str__(self) -> str:
        return f"the run's deadline ({self.seconds:g} s)"


NO_DEADLINE = Deadline(math.inf)  # an operator's command in a terminal: no host timeout to stay under
