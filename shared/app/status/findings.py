"""The status's lines: a Finding is one line, OK, WARN or FAIL by the threshold named with it; and the ways the
lines write ages, moments and schedules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from shared.platform.ncrontab import Schedule

# A timer's last cycle is late past this many of its schedule's intervals (a missed tick or two is normal).
CYCLE_LATE_WARN = 3
CYCLE_LATE_FAIL = 10


class Level(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


# A figure: a number or a word, or, for what comes by name (reasons, actions, sensors), counts or names.
Figure = str | int | float | Mapping[str, int] | list[str] | None


@dataclass(frozen=True)
class Finding:
    """One line of the status: what (``area``, ``subject``), how it stands, the figures and the threshold."""

    area: str
    subject: str
    level: Level
    summary: str
    threshold: str
    figures: Mapping[str, Figure] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    at: datetime
    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "worst": self.worst.name,
            "findings": [
                {
                    "area": f.area,
                    "subject": f.subject,
                    "level": f.level.name,
                    "summary": f.summary,
                    "threshold": f.threshold,
                    "figures": dict(f.figures),
                }
                for f in self.findings
            ],
        }


def duration(delta: timedelta) -> str:
    """An age as an operator reads it: seconds, minutes, hours or days, whole."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def stamp(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60, 1)


def by_name(counts: Mapping[str, int]) -> str:
    """Counts by name, the largest first: ``3 servicenow_unavailable, 1 rate_limited``."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {name}" for name, count in ordered)


def interval_of(expression: str, now: datetime) -> timedelta:
    """The gap between a schedule's next two occurrences."""
    schedule = Schedule.parse(expression)
    first = schedule.next_after(now)
    return schedule.next_after(first) - first


def lateness(age: timedelta, interval: timedelta, setting: str) -> tuple[Level, str]:
    level = (
        Level.FAIL if age > CYCLE_LATE_FAIL * interval else Level.WARN if age > CYCLE_LATE_WARN * interval else Level.OK
    )
    return (
        level,
        f"WARN last cycle > {CYCLE_LATE_WARN}× {setting} ({duration(CYCLE_LATE_WARN * interval)}), "
        f"FAIL > {CYCLE_LATE_FAIL}×",
    )
