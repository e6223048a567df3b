"""NCRONTAB schedules as the Functions host reads them, in UTC.

Six fields ``{second} {minute} {hour} {day} {month} {day-of-week}`` or five (no seconds, fires at
second 0). Each field: ``*``, a value, ``a-b``, ``*/n``, ``a-b/n``, lists of those; month and
day-of-week names (JAN, MON); day-of-week 0-6 from Sunday, 7 also Sunday. Unlike Vixie cron, a
restricted day-of-month and day-of-week must both match (NCrontab's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, DAYS),
)


class ScheduleError(ValueError):
    pass


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    number = names.get(text.upper()) if not text.isdigit() else int(text)
    if number is None or not low <= number <= high:
        raise ScheduleError(f"{field} value {text!r} is outside {low}-{high}")
    return number


def _field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ScheduleError(f"{field} step {step_text!r} must be a positive whole number")
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, low, high, names, field), _value(last, low, high, names, field)
        else:
            start = _value(base, low, high, names, field)
            end = high if step_text else start
        if start > end:
            raise ScheduleError(f"{field} range {base!r} runs backwards")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ScheduleError(f"{expression!r} has {len(parts)} fields; NCRONTAB takes six (or five)")
        sets = [
            _field(text, name, low, high, names) for text, (name, low, high, names) in zip(parts, FIELDS, strict=True)
        ]
        weekdays = frozenset(0 if d == 7 else d for d in sets[5])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], sets[4], weekdays)

    def _day_matches(self, moment: datetime) -> bool:
        # Python: Monday=0 … Sunday=6; NCRONTAB: Sunday=0 … Saturday=6.
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays and moment.month in self.months

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (UTC)."""
        moment = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = moment + timedelta(days=366 * 5)
        while moment < limit:
            if not self._day_matches(moment):
                moment = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if moment.hour not in self.hours:
                moment = (moment + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if moment.minute not in self.minutes:
                moment = (moment + timedelta(minutes=1)).replace(second=0)
                continue
            if moment.second not in self.seconds:
                moment += timedelta(seconds=1)
                continue
            return moment
        raise ScheduleError(f"{self.expression!r} has no occurrence within five years")
