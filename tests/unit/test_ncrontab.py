"""NCRONTAB schedules as the Functions host parses them (NCrontab) and their occurrences (UTC).

The accepted and refused forms follow NCrontab's source: atifaziz/NCrontab ``NCrontab/CrontabFieldImpl.cs``
(InternalParse, ParseValue: lists, steps, ``*``, ranges, names by case-insensitive prefix),
``NCrontab/CrontabField.cs`` (Accumulate: reversed ranges swapped, steps below 1 taken as 1, bounds),
``NCrontab/CrontabSchedule.cs`` (fields split on spaces only; day-of-week 0-6), and the host's
Azure/azure-webjobs-sdk-extensions ``Timers/Scheduling/CronSchedule.cs`` (five fields means no seconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from shared.platform.ncrontab import Schedule, ScheduleError
from shared.platform.settings import SettingsError
from shared.settings import load_settings
from tests.support.settings import app_settings


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
        ("0 0 12 * * 0", "2026-11-21 12:00:00", "2026-11-22 12:00:00"),  # Sunday is 0
        ("5 4 * * *", "2026-11-21 04:05:00", "2026-11-22 04:05:00"),  # five fields: second 0
        ("0 0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
        ("0 0 0 1-7 * MON", "2026-11-21 00:00:00", "2026-12-07 00:00:00"),  # day AND weekday (NCrontab)
        ("0 15,45 8-10/2 * * *", "2026-11-21 08:50:00", "2026-11-21 10:15:00"),
        ("0 0 22-2 * * *", "2026-11-21 22:30:00", "2026-11-22 02:00:00"),  # reversed: 2-22, not 22-23,0-2
    ],
)
def test_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert Schedule.parse(expression).next_after(at(after)) == at(expected)


def test_next_is_strictly_after_and_ignores_the_fraction() -> None:
    schedule = Schedule.parse("0 */5 * * * *")
    assert schedule.next_after(at("2026-11-21 22:05:00")) == at("2026-11-21 22:10:00")
    assert schedule.next_after(at("2026-11-21 22:04:59.999")) == at("2026-11-21 22:05:00")


@pytest.mark.parametrize(
    ("field", "text", "values"),
    [
        ("hours", "10-2", set(range(2, 11))),  # Accumulate swaps a reversed range
        ("hours", "20/2", {20, 22}),  # a step on one value runs to the maximum
        ("hours", "*/0", set(range(24))),  # a step below 1 counts as 1
        ("hours", "1-5/-2", set(range(1, 6))),  # int.Parse takes a sign
        ("hours", "1,3-4,20/3,5-5/9", {1, 3, 4, 20, 23, 5}),
        ("months", "jan,Feb,MAR,december", {1, 2, 3, 12}),  # names: any case, full or abbreviated
        ("months", "Ju,Jul,A", {6, 7, 4}),  # a prefix is the first name it begins: June, July, April
        ("weekdays", "MON-FRI/2", {1, 3, 5}),
        ("weekdays", "T,Th,S", {2, 4, 0}),  # Tuesday, Thursday, Sunday
        ("weekdays", "6-0", set(range(7))),
        ("seconds", "0-59", set(range(60))),
    ],
)
def test_fields_accepted_as_ncrontab_reads_them(field: str, text: str, values: set[int]) -> None:
    fields = {"seconds": 0, "hours": 2, "months": 4, "weekdays": 5}
    parts = ["0", "0", "0", "*", "*", "*"]
    parts[fields[field]] = text
    assert getattr(Schedule.parse(" ".join(parts)), field) == values


def test_spaces_separate_fields_and_runs_of_them_are_one() -> None:
    assert Schedule.parse("  0  */5 * *   * *  ").minutes == frozenset(range(0, 60, 5))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "4 fields; expected six fields"),
        ("* * * * * * *", "7 fields"),
        ("0\t*/5 * * * *", "minute value '0\\t*' is not a whole number"),  # a tab separates no fields
        ("0 0 12 * * 7", "day-of-week value 7 is outside 0-6"),  # Sunday is 0 only
        ("0 0 12 ? * MON", "day value '?' is not a number 1-31"),  # ? is not a token
        ("0 0 12 * * ?", "day-of-week value '?' is not a name or a number 0-6"),
        ("60 * * * * *", "second value 60 is outside 0-59"),
        ("0 0 0 0 * *", "day value 0 is outside 1-31"),
        ("0 0 30/2 * * *", "hour value 30 is outside 0-23"),
        ("0 0 0 * FOO *", "month value 'FOO' is not a name"),
        ("0 0 0 * JANUARY1 *", "month value 'JANUARY1'"),
        ("0 0 1a * * *", "hour value '1a' is not a whole number"),
        ("0 0 1_0 * * *", "hour value '1_0' is not a whole number"),  # Python's int() would take it
        ("0 */x * * * *", "minute step 'x' is not a whole number"),
        ("0 */ * * * *", "minute step '' is not a whole number"),
        ("0 1, * * * *", "minute: a value cannot be empty"),
        ("0 ,1 * * * *", "minute value ',1'"),  # a leading comma is no list
        ("0 -5 * * * *", "minute value '-5'"),  # nor a leading dash a range
        ("0 0 1-2-3 * * *", "hour value '2-3'"),
        ("0 ** * * * *", "minute value '**'"),
        ("0 0 0 * * * ", None),  # a trailing space is fine (RemoveEmptyEntries)
    ],
)
def test_schedules_refused_as_ncrontab_refuses_them(expression: str, message: str | None) -> None:
    if message is None:
        Schedule.parse(expression)
        return
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.parse(expression)


def test_a_schedule_without_occurrences_parses_but_has_no_next() -> None:
    schedule = Schedule.parse("0 0 0 31 2 *")  # NCrontab accepts it; it never fires
    with pytest.raises(ScheduleError, match="no occurrence within five years"):
        schedule.next_after(at("2026-01-01 00:00:00"))


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("0 */5 * * * *", True),
        ("0 0 2-10 * * *", True),
        ("0 0 10-2 * * *", True),
        ("0 30 9 * * mon-fri", True),
        ("*/30 * * * *", True),
        ("0 0 9 * * 7", False),
        ("0 0 9 ? * MON", False),
        ("every hour", False),
    ],
)
def test_schedule_settings_are_validated_by_the_same_parser(value: str, accepted: bool) -> None:
    environ = app_settings("UseDevelopmentStorage=true", DEVICE_SYNC_SCHEDULE=value)
    if accepted:
        assert load_settings(environ).device_sync_schedule == value
        return
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    (problem,) = caught.value.problems
    assert problem.startswith(f"DEVICE_SYNC_SCHEDULE={value!r} is not an NCRONTAB expression the Functions host")
    assert "\n" not in problem
