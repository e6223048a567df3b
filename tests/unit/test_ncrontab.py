"""NCRONTAB schedules as the Functions host reads them (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tools.funchost.ncrontab import Schedule, ScheduleError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-11-21 22:03:17", "2026-11-21 22:05:00"),
        ("0 */10 * * * *", "2026-11-21 22:50:00", "2026-11-21 23:00:00"),
        ("*/15 * * * * *", "2026-11-21 22:03:17", "2026-11-21 22:03:30"),
        ("0 30 9 * * MON-FRI", "2026-11-21 10:00:00", "2026-11-23 09:30:00"),  # Saturday → Monday
        ("0 0 0 1 JAN *", "2026-11-21 00:00:00", "2027-01-01 00:00:00"),
        ("0 0 12 * * 0", "2026-11-21 12:00:00", "2026-11-22 12:00:00"),  # Sunday as 0
        ("0 0 12 * * 7", "2026-11-21 12:00:00", "2026-11-22 12:00:00"),  # and as 7
        ("5 4 * * *", "2026-11-21 04:05:00", "2026-11-22 04:05:00"),  # five fields: second 0
        ("0 0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
        ("0 0 0 1-7 * MON", "2026-11-21 00:00:00", "2026-12-07 00:00:00"),  # day AND weekday (NCrontab)
        ("0 15,45 8-10/2 * * *", "2026-11-21 08:50:00", "2026-11-21 10:15:00"),
    ],
)
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert Schedule.parse(expression).next_after(at(after)) == at(expected)


def test_next_is_strictly_after() -> None:
    schedule = Schedule.parse("0 */5 * * * *")
    assert schedule.next_after(at("2026-11-21 22:05:00")) == at("2026-11-21 22:10:00")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("60 * * * * *", "second value '60' is outside 0-59"),
        ("0 0 0 * FOO *", "month value 'FOO'"),
        ("0 */0 * * * *", "step '0' must be a positive"),
        ("0 0 10-2 * * *", "runs backwards"),
        ("0 0 0 31 2 *", "no occurrence within five years"),
    ],
)
def test_invalid_schedules_are_explained(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule.parse(expression).next_after(at("2026-01-01 00:00:00"))
