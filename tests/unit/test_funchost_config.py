"""The local host's reading of host.json, local.settings.json and binding expressions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.platform.ncrontab import Schedule
from tools.funchost.config import (
    HostConfigError,
    QueueOptions,
    function_timeout,
    load_local_settings,
    resolve,
    storage_connection_string,
    timespan_seconds,
    with_overrides,
)
from tools.funchost.invoke import format_timespan, pool_size
from tools.funchost.timers import NEVER, TimerTimings, fires_more_than_once_a_minute, format_time, parse_time


def test_queue_options_from_host_json_and_defaults() -> None:
    defaults = QueueOptions.from_host_json({"version": "2.0"}, cores=2)
    assert (defaults.batch_size, defaults.new_batch_threshold, defaults.max_dequeue_count) == (16, 16, 5)
    assert (defaults.visibility_timeout, defaults.max_polling_interval, defaults.message_encoding) == (0, 2, "base64")
    options = QueueOptions.from_host_json(
        {
            "extensions": {
                "queues": {
                    "batchSize": 4,
                    "newBatchThreshold": 1,
                    "visibilityTimeout": "00:00:30",
                    "maxPollingInterval": "00:01:00",
                    "maxDequeueCount": 2,
                    "messageEncoding": "none",
                }
            }
        },
        cores=2,
    )
    assert options == QueueOptions(4, 1, 60.0, 30.0, 2, "none")


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"batchSize": 64}, "batchSize=64 must be 1-32"),
        ({"messageEncoding": "utf8"}, "must be base64 or none"),
        ({"visibilityTimeout": "30s"}, "is not a TimeSpan"),
    ],
)
def test_bad_host_json_is_explained(queues: dict[str, object], message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        QueueOptions.from_host_json({"extensions": {"queues": queues}}, cores=1)


def test_app_settings_override_host_json_as_the_host_does() -> None:
    host_json = {"version": "2.0", "extensions": {"queues": {"batchSize": 16, "newBatchThreshold": 8}}}
    settings = {
        "AzureFunctionsJobHost__extensions__queues__batchSize": "2",
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "2",
        "ALERTS_QUEUE": "alerts",
    }
    options = QueueOptions.from_host_json(with_overrides(host_json, settings), cores=2)
    assert (options.batch_size, options.new_batch_threshold) == (2, 2)
    assert host_json["extensions"]["queues"]["batchSize"] == 16  # type: ignore[index]  # the file is not changed


def test_timespans() -> None:
    assert timespan_seconds("1.02:03:04.5", "x") == 93784.5
    assert timespan_seconds("00:00:00.200", "x") == 0.2


def test_setting_expressions_resolve_or_name_the_setting() -> None:
    assert resolve("%ALERTS_QUEUE%", {"ALERTS_QUEUE": "alerts"}, "f") == "alerts"
    assert resolve("plain", {}, "f") == "plain"
    with pytest.raises(HostConfigError, match="'%MISSING%' does not resolve to a value"):
        resolve("%MISSING%", {}, "function 'x'")


def test_connections() -> None:
    assert storage_connection_string({"S": "UseDevelopmentStorage=true"}, "S") == "UseDevelopmentStorage=true"
    with pytest.raises(HostConfigError, match="identity-based"):
        storage_connection_string({"S__queueServiceUri": "https://a.queue.core.windows.net"}, "S")
    with pytest.raises(HostConfigError, match="connection 'S' is not set"):
        storage_connection_string({}, "S")


def test_local_settings(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    with pytest.raises(HostConfigError, match=r"not found; copy local.settings.json.example"):
        load_local_settings(path)
    path.write_text("{")
    with pytest.raises(HostConfigError, match="is not valid JSON"):
        load_local_settings(path)
    path.write_text('{"Values": {"A": 1}}')
    assert load_local_settings(path) == {"A": "1"}


def test_status_times_round_trip_in_dotnet_format() -> None:
    moment = parse_time("2026-11-21T22:55:00.1234567+00:00")
    assert format_time(moment) == "2026-11-21T22:55:00.1234560+00:00"
    assert parse_time("2026-11-21T22:55:00Z") == parse_time("2026-11-21T22:55:00.0000000+00:00")
    assert format_time(NEVER) == "0001-01-01T00:00:00.0000000+00:00"  # year 1 padded: it must parse back
    assert parse_time(format_time(NEVER)) == NEVER


def test_function_timeout_from_host_json() -> None:
    assert function_timeout({"functionTimeout": "00:10:00"}) == 600
    assert function_timeout({}) == 1800  # Flex Consumption's default
    assert function_timeout({"functionTimeout": "-1"}) is None
    with pytest.raises(HostConfigError, match="must be positive"):
        function_timeout({"functionTimeout": "00:00:00"})


def test_thread_count_is_read_as_the_worker_reads_it() -> None:
    """azure-functions-python-worker dispatcher.py: an integer >= 1, else ThreadPoolExecutor's default (None)."""
    assert pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "1"}) == 1
    assert pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": " 4 "}) == 4
    assert pool_size({}) is None
    assert pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "0"}) is None
    assert pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "many"}) is None


def test_timeouts_are_logged_as_timespans() -> None:
    assert format_timespan(600) == "00:10:00"
    assert format_timespan(1.5) == "00:00:01.500"


def test_listener_lock_timings_are_the_hosts() -> None:
    """azure-webjobs-sdk SingletonOptions: ListenerLockPeriod 60 s, ListenerLockRecoveryPollingInterval 1 min;
    SingletonManager renews at half the lock period."""
    assert TimerTimings() == TimerTimings(lease_seconds=60, lease_renew_every=30, lease_retry_every=60)


@pytest.mark.parametrize(
    ("expression", "frequent"),
    [
        ("*/30 * * * * *", True),  # the app's alert_groups timer
        ("0,30 * * * * *", True),
        ("* * * * * *", True),
        ("*/30 0-59 * * * *", True),  # a full range is a wildcard: the host compares the formatted fields
        ("0 * * * * *", False),  # once a minute
        ("* * * * *", False),  # five fields: second 0, at most once a minute
        ("*/30 * 9 * * *", False),  # an hour restricted: the host keeps the monitor, though it fires every 30 s then
        ("0 */5 * * * *", False),
    ],
)
def test_use_monitor_is_forced_off_as_the_host_judges_frequency(expression: str, frequent: bool) -> None:
    """Azure/azure-webjobs-sdk-extensions Timers/Scheduling/TimerSchedule.cs ShouldDisableScheduleMonitor."""
    now = datetime(2026, 11, 21, 9, 0, 0, 250000, tzinfo=UTC)
    assert fires_more_than_once_a_minute(Schedule.parse(expression), now) is frequent
