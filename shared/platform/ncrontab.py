"""NCRONTAB schedules exactly as the Functions host parses them (NCrontab), with next occurrences in UTC.

The settings validation and the local host (tools/funchost) share this one parser, so a schedule the
host would refuse to create a timer for is refused at start-up, and nothing the host accepts is.
NCrontab's rules (atifaziz/NCrontab ``CrontabSchedule.cs``, ``CrontabFieldImpl.cs``, ``CrontabField.cs``;
the host's ``CronSchedule.cs`` picks five or six fields):

- fields are separated by spaces only; exactly five means no seconds (second 0), anything else must be six;
- a field is ``*``, a value, ``a-b``, any of those with ``/step``, or a comma list of them;
- ``a-b`` with ``a > b`` is the range ``b-a``; ``n/step`` runs from ``n`` to the field's maximum; a step
  below 1 counts as 1;
- values are decimal, or for month and day-of-week a case-insensitive prefix of the English name
  (``JAN``, ``Mon``, even ``T`` for Tuesday, the first name it begins);
- day-of-week is 0-6 from Sunday (7 is out of range) and ``?`` is no token; a restricted day-of-month
  and day-of-week must both match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    @property
    def every_value(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
FIELDS = (
    FieldSpec("second", 0, 59),
    FieldSpec("minute", 0, 59),
    FieldSpec("hour", 0, 23),
    FieldSpec("day", 1, 31),
    FieldSpec("month", 1, 12, MONTHS),
    FieldSpec("day-of-week", 0, 6, WEEKDAYS),
)
# .NET int.Parse with NumberStyles.Integer: surrounding white space and a sign are allowed, ASCII digits only.
DOTNET_INTEGER = re.compile(r"[\t\n\v\f\r ]*[+-]?[0-9]+[\t\n\v\f\r ]*")
INT32_MAX = 2**31 - 1


class ScheduleError(ValueError):
    pass


def _integer(text: str, what: str) -> int:
    if not DOTNET_INTEGER.fullmatch(text) or abs(number := int(text)) > INT32_MAX:
        raise ScheduleError(f"{what} {text!r} is not a whole number")
    return number


def _value(text: str, spec: FieldSpec) -> int:
    if not text:
        raise ScheduleError(f"{spec.name}: a value cannot be empty")
    if "0" <= text[0] <= "9":
        return _integer(text, f"{spec.name} value")
    for index, name in enumerate(spec.names):
        if name.upper().startswith(text.upper()):
            return spec.low + index
    expected = f"a name or a number {spec.low}-{spec.high}" if spec.names else f"a number {spec.low}-{spec.high}"
    raise ScheduleError(f"{spec.name} value {text!r} is not {expected}")


def _add(values: set[int], spec: FieldSpec, start: int, end: int, step: int) -> None:
    start, end = min(start, end), max(start, end)
    for value in (start, end):
        if not spec.low <= value <= spec.high:
            raise ScheduleError(f"{spec.name} value {value} is outside {spec.low}-{spec.high}")
    values.update(range(start, end + 1, max(step, 1)))


def _part(text: str, spec: FieldSpec, values: set[int]) -> None:
    step: int | None = None
    # NCrontab looks for '/' and '-' only after the first character: '/5' and '-5' are values (and invalid).
    if (slash := text.find("/")) > 0:
        step = _integer(text[slash + 1 :], f"{spec.name} step")
        text = text[:slash]
    if text == "*":
        _add(values, spec, spec.low, spec.high, step or 1)
    elif (dash := text.find("-")) > 0:
        _add(values, spec, _value(text[:dash], spec), _value(text[dash + 1 :], spec), step or 1)
    elif step is not None:
        _add(values, spec, _value(text, spec), spec.high, step)
    else:
        value = _value(text, spec)
        _add(values, spec, value, value, 1)


def _field(text: str, spec: FieldSpec) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(",") if text.find(",") > 0 else [text]:
        _part(part, spec, values)
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
        parts = [part for part in expression.split(" ") if part]
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise ScheduleError(
                f"{len(parts)} fields; expected six fields '{{second}} {{minute}} {{hour}} {{day}} {{month}} "
                "{day-of-week}' (five also accepted), separated by spaces"
            )
        sets = [_field(text, spec) for text, spec in zip(parts, FIELDS, strict=True)]
        return cls(expression, *sets)

    def _day_matches(self, moment: datetime) -> bool:
        # Python: Monday=0 … Sunday=6; NCRONTAB: Sunday=0 … Saturday=6.
        return moment.day in self.days and (moment.weekday() + 1) % 7 in self.weekdays and moment.month in self.months

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (UTC), whose fraction of a second is ignored."""
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
