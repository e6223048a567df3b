"""The outcome tally: the last hour in 5-minute buckets, summed across instances, and a board row it keeps within
Table storage's limits however many actions the rules name."""

from __future__ import annotations

import json

from shared.platform import outcomes
from shared.platform.outcomes import BUCKET_SECONDS, MAX_NAMES, OTHER, OutcomeTally, totals, window_start

T0 = 1_800_000_000.0  # a bucket boundary (divisible by 300)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_last_hour_is_the_current_bucket_and_the_eleven_before_it() -> None:
    clock = Clock(T0)
    tally = OutcomeTally(clock)
    tally.add("deferred", "timeout")  # in bucket T0
    clock.now = T0 + 11 * BUCKET_SECONDS + 299  # the 12th bucket's last second: T0's is still in the window
    tally.add("deferred", "timeout", 2)
    assert window_start(clock.now) == T0
    assert totals([tally.encode()], clock.now) == {"deferred": {"timeout": 3}}
    # One second later the window has moved on by a bucket: T0's count is out, 55 min + 1 s after it.
    assert totals([tally.encode()], clock.now + 1) == {"deferred": {"timeout": 2}}
    clock.now += 12 * BUCKET_SECONDS
    assert totals([tally.encode()], clock.now) == {}
    assert json.loads(tally.encode())["figures"] == {}  # and the tally forgot them


def test_totals_add_the_instances_up_and_ignore_what_is_not_a_tally() -> None:
    a, b = OutcomeTally(Clock(T0)), OutcomeTally(Clock(T0 + 600))
    a.add("written", "incident", 2)
    b.add("written", "incident")
    b.add("written", "soc")
    b.add("filtered")
    rows = [a.encode(), b.encode(), None, "not json", '{"bucket": "x"}', '{"bucket": 1, "figures": []}']
    assert totals(rows, T0 + 900) == {"written": {"incident": 3, "soc": 1}, "filtered": {"": 1}}


def test_a_row_stays_within_table_storage_limits_however_many_actions_there_are() -> None:
    tally = OutcomeTally(Clock(T0))
    clock = Clock(T0)
    tally.clock = clock
    for bucket in range(outcomes.BUCKETS):
        clock.now = T0 + bucket * BUCKET_SECONDS
        for n in range(3 * MAX_NAMES):  # names as long as the rules allow (64 characters)
            tally.add("written", f"action {n:04d} ".ljust(64, "x"), 999_999)
        for reason in ("busy", "rules", "rate_limited", "timeout", "servicenow_unavailable", "auth", "key_vault"):
            tally.add("deferred", reason, 999_999)
        tally.add("filtered", "", 999_999)
    encoded = tally.encode()
    names = json.loads(encoded)["figures"]["written"]
    assert len(names) == MAX_NAMES + 1 and names[OTHER][0] == 2 * MAX_NAMES * 999_999
    # A String property holds 64 KiB as UTF-16: 32,768 characters; the entity's other properties are a few dozen
    # bytes, far from its 1 MiB and 255 properties.
    assert len(encoded) < 32_768 // 2, len(encoded)
