"""The local Functions host against Azurite: each queue and timer semantic, observed from outside."""

from __future__ import annotations

import base64
import ctypes
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from tests.conftest import ROOT
from tests.support.sample_app import function_app as sample
from tools.funchost.config import HostConfigError
from tools.funchost.host import FunctionHost
from tools.funchost.invoke import Invocation
from tools.funchost.queues import QueueTimings
from tools.funchost.timers import TimerTimings
from tools.stack.azurite import Azurite, free_port, start_azurite

pytestmark = pytest.mark.integration
YEARLY = "0 0 0 1 1 *"


def encode(body: bytes | str) -> str:
    return base64.b64encode(body.encode() if isinstance(body, str) else body).decode()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


class HostRunner:
    def __init__(self, azurite: Azurite) -> None:
        self.azurite = azurite
        self.hosts: list[FunctionHost] = []
        self.queue_name = f"q{uuid.uuid4().hex[:16]}"
        self.host_id = f"test-{uuid.uuid4().hex[:16]}"
        self.queue = QueueClient.from_connection_string(azurite.connection_string, self.queue_name)
        self.poison = QueueClient.from_connection_string(azurite.connection_string, f"{self.queue_name}-poison")
        self.timeouts: list[Invocation] = []  # what would have restarted the worker
        sample.CALLS.clear()

    def settings(self, schedule: str = YEARLY, **extra: str) -> dict[str, str]:
        return {
            "SAMPLE_QUEUE": self.queue_name,
            "SAMPLE_STORAGE": self.azurite.connection_string,
            "AzureWebJobsStorage": self.azurite.connection_string,
            "SAMPLE_SCHEDULE": schedule,
            **extra,
        }

    def start(
        self,
        *,
        schedule: str = YEARLY,
        app: func.FunctionApp | None = None,
        queue_timings: QueueTimings | None = None,
        settings: dict[str, str] | None = None,
        function_timeout: str = "00:10:00",
        on_timeout: Callable[[Invocation], None] | None = None,
        **queues: Any,
    ) -> FunctionHost:
        host_json = {
            "version": "2.0",
            "functionTimeout": function_timeout,
            "extensions": {"queues": {"maxPollingInterval": "00:00:00.200", "maxDequeueCount": 3, **queues}},
        }
        host = FunctionHost(
            app or sample.app,
            self.settings(schedule, **(settings or {})),
            host_json,
            self.host_id,
            queue_timings=queue_timings or QueueTimings(),
            timer_timings=TimerTimings(lease_seconds=15, lease_renew_every=1, lease_retry_every=0.5),
            on_timeout=on_timeout or self.timeouts.append,
        )
        host.build().start()
        self.hosts.append(host)
        return host

    def calls(self, function: str = "work") -> list[dict[str, Any]]:
        return [c for c in list(sample.CALLS) if c["function"] == function]

    def poison_bodies(self) -> list[str]:
        try:
            return [m.content for m in self.poison.peek_messages(max_messages=32)]
        except Exception:  # the poison queue is created on first use
            return []

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        self.hosts.clear()


@pytest.fixture
def runner(azurite: Azurite) -> Iterator[HostRunner]:
    runner = HostRunner(azurite)
    yield runner
    runner.stop()


def max_overlap(calls: list[dict[str, Any]]) -> int:
    events = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def test_batch_size_and_threshold_bound_concurrency(runner: HostRunner) -> None:
    runner.queue.create_queue()
    for i in range(6):
        runner.queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 0.4, "tag": i})))
    runner.start(batchSize=2, newBatchThreshold=0)
    wait_until(lambda: len(runner.calls()) == 6)
    assert max_overlap(runner.calls()) == 2
    wait_until(lambda: runner.queue.get_queue_properties().approximate_message_count == 0)


def test_new_batch_fetched_at_threshold(runner: HostRunner) -> None:
    runner.queue.create_queue()
    # The first message is short: when it ends, two are still running (= newBatchThreshold), so the
    # host fetches another batch of three while they run: five at once, never more.
    for i in range(9):
        runner.queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 0.2 if i == 0 else 1.2, "tag": i})))
    runner.start(batchSize=3, newBatchThreshold=2)
    wait_until(lambda: len(runner.calls()) == 9)
    assert max_overlap(runner.calls()) == 5


def test_dequeue_count_increments_then_poison(runner: HostRunner) -> None:
    runner.start(maxDequeueCount=3)
    body = json.dumps({"action": "fail"})
    runner.queue.send_message(encode(body))
    wait_until(lambda: runner.poison_bodies() == [encode(body)])
    assert [c["dequeue_count"] for c in runner.calls()] == [1, 2, 3]
    assert runner.queue.get_queue_properties().approximate_message_count == 0


def test_visibility_timeout_delays_the_retry(runner: HostRunner) -> None:
    runner.start(maxDequeueCount=2, visibilityTimeout="00:00:02")
    runner.queue.send_message(encode(json.dumps({"action": "fail"})))
    wait_until(lambda: len(runner.calls()) == 2)
    first, second = runner.calls()
    assert second["start"] - first["end"] >= 1.9


def test_message_over_max_on_receipt_is_poisoned_without_running(runner: HostRunner) -> None:
    runner.queue.create_queue()
    runner.queue.send_message(encode("{}"))
    for _ in range(3):  # three receipts elsewhere: dequeue count 3 > maxDequeueCount 2
        assert len(list(runner.queue.receive_messages(max_messages=1, visibility_timeout=1))) == 1
        time.sleep(1.1)
    runner.start(maxDequeueCount=2)
    wait_until(lambda: runner.poison_bodies() == [encode("{}")])
    assert runner.calls() == []


def test_base64_encoding_delivers_the_decoded_bytes(runner: HostRunner) -> None:
    runner.start()
    payload = b"\xff\x00 not utf-8"
    runner.queue.send_message(encode(payload))
    wait_until(lambda: len(runner.calls()) == 1)
    assert bytes.fromhex(runner.calls()[0]["body"]) == payload


def test_invalid_base64_goes_to_poison_without_running(runner: HostRunner) -> None:
    runner.start()
    runner.queue.send_message("this is not base64!")
    wait_until(lambda: runner.poison_bodies() == ["this is not base64!"])
    assert runner.calls() == []


def test_none_encoding_delivers_the_text(runner: HostRunner) -> None:
    runner.start(messageEncoding="none")
    runner.queue.send_message('{"tag": "plain"}')
    wait_until(lambda: len(runner.calls()) == 1)
    assert bytes.fromhex(runner.calls()[0]["body"]) == b'{"tag": "plain"}'


@pytest.mark.slow
def test_visibility_is_renewed_while_the_function_runs(runner: HostRunner) -> None:
    runner.start(queue_timings=QueueTimings(receive_visibility=2, renew_every=1))
    runner.queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 4.5})))
    wait_until(lambda: len(runner.calls()) == 1, timeout=20)
    time.sleep(1.5)
    assert len(runner.calls()) == 1  # not redelivered while it ran
    assert runner.queue.get_queue_properties().approximate_message_count == 0


def test_graceful_stop_finishes_running_and_releases_nothing_else(runner: HostRunner) -> None:
    # Queued before the host starts, so that its first batch is four (a host polling while the messages
    # arrive may take one first, finish it, and then run four: five calls in all).
    runner.queue.create_queue()
    for i in range(8):
        runner.queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 1.5, "tag": i})))
    host = runner.start(batchSize=4, newBatchThreshold=0)
    wait_until(lambda: len(host.listeners["work"].inflight) == 4)  # type: ignore[attr-defined]
    runner.stop()
    finished = runner.calls()
    assert len(finished) == 4  # the running four completed during the stop
    remaining = runner.queue.peek_messages(max_messages=32)  # peek sees only visible messages
    assert len(remaining) == 4
    assert {json.loads(base64.b64decode(m.content))["tag"] for m in remaining} | {c["tag"] for c in finished} == set(
        range(8)
    )


def test_stop_waits_up_to_function_timeout_and_releases_nothing_that_finishes(runner: HostRunner) -> None:
    """The host's stop waits for running invocations and releases none of them; one that passes
    functionTimeout meanwhile is failed, as the host fails it (released after visibilityTimeout), and the
    stopping host does not restart for it. Nothing is lost."""
    runner.queue.create_queue()
    runner.queue.send_message(encode(json.dumps({"action": "sleep_first", "seconds": 2.5})))
    timings = QueueTimings(receive_visibility=60, renew_every=30)
    host = runner.start(queue_timings=timings, function_timeout="00:00:01")
    wait_until(lambda: len(host.listeners["work"].inflight) == 1)  # type: ignore[attr-defined]
    runner.hosts.remove(host)  # stopped here, not again at teardown
    started = time.monotonic()
    still_running = host.stop()
    assert 0.5 < time.monotonic() - started < 2.5  # it waited, until the invocation passed functionTimeout
    assert still_running == 1
    assert runner.timeouts == []  # a stopping host does not restart for it
    # Failed at the timeout: visible again at once (visibilityTimeout 0), long before its 60 s lease lapses.
    wait_until(lambda: len(runner.queue.peek_messages()) == 1, timeout=5)
    assert runner.queue.peek_messages()[0].dequeue_count == 1
    wait_until(lambda: len(runner.calls()) == 1)  # the abandoned invocation ends here, not in the next test


def test_one_worker_pool_of_python_threadpool_thread_count(runner: HostRunner) -> None:
    """With PYTHON_THREADPOOL_THREAD_COUNT=1 two received messages run one after the other, the second
    waiting in the host (its visibility renewed) while the first runs."""
    runner.queue.create_queue()
    for i in range(2):
        runner.queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 0.6, "tag": i})))
    host = runner.start(settings={"PYTHON_THREADPOOL_THREAD_COUNT": "1"}, batchSize=2, newBatchThreshold=0)
    listener = host.listeners["work"]
    wait_until(lambda: len(listener.inflight) == 2)  # type: ignore[attr-defined]  # both received at once
    wait_until(lambda: len(runner.calls()) == 2)
    assert max_overlap(runner.calls()) == 1
    first, second = sorted(runner.calls(), key=lambda c: c["start"])
    assert second["start"] >= first["end"]
    wait_until(lambda: runner.queue.get_queue_properties().approximate_message_count == 0)


def test_function_timeout_fails_the_invocation_and_restarts_the_worker(
    runner: HostRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """Past functionTimeout the host logs the timeout, fails the invocation (its message released after
    visibilityTimeout, with its dequeue count, long before its 60 s receive lease would lapse) and restarts
    the worker; the message runs again (it sleeps on delivery 1 only)."""
    caplog.set_level(logging.INFO, logger="funchost")
    runner.start(queue_timings=QueueTimings(receive_visibility=60, renew_every=30), function_timeout="00:00:01")
    runner.queue.send_message(encode(json.dumps({"action": "sleep_first", "seconds": 2})))
    wait_until(lambda: len(runner.timeouts) == 1)
    (late,) = runner.timeouts
    assert late.name == "work" and late.killed
    assert (
        f"Timeout value of 00:00:01 exceeded by function 'Functions.work' (Id: '{late.id}'). Initiating cancellation."
        in caplog.messages
    )
    wait_until(lambda: sorted(c["dequeue_count"] for c in runner.calls()) == [1, 2], timeout=15)
    wait_until(lambda: runner.queue.get_queue_properties().approximate_message_count == 0)
    assert runner.poison_bodies() == []
    assert len(runner.timeouts) == 1


def start_cli_host(azurite: Azurite, tmp_path: Path, queue_name: str, record: Path) -> subprocess.Popen[str]:
    """The command-line host on the sample app, in its own process group, as a terminal starts it."""
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "SAMPLE_QUEUE": queue_name,
                    "SAMPLE_STORAGE": azurite.connection_string,
                    "AzureWebJobsStorage": azurite.connection_string,
                    "SAMPLE_SCHEDULE": YEARLY,
                }
            }
        )
    )
    return subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "tools.funchost",
            "--app-dir",
            str(ROOT / "tests/support/sample_app"),
            "--settings",
            str(settings),
            "--host-id",
            f"cli-{uuid.uuid4().hex[:12]}",
        ],
        cwd=ROOT,
        env={**os.environ, "SAMPLE_RECORD_FILE": str(record)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def signal_worker_thread(pid: int, number: int) -> None:
    """Deliver a signal to one of the process's worker threads, not its main thread (``tgkill``)."""
    workers = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert workers, "the host has no worker threads"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.tgkill(pid, workers[-1], number) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


def interrupt(process: subprocess.Popen[str], record: Path, *, to_worker: bool = False) -> str:
    """Ctrl-C the host once it is busy; its output, after it stopped (or a failure naming the wait).

    ``to_worker``: the signal lands on a worker thread, as a process-directed signal sometimes does.
    """
    try:
        wait_until(lambda: record.exists() and len(record.read_text().splitlines()) >= 1, timeout=30)
        if to_worker:
            signal_worker_thread(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise AssertionError(f"the host did not stop within 30 s of Ctrl-C; its output:\n{output}") from None
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "stopping: letting running invocations finish" in output
    return output


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_host_loses_nothing(azurite: Azurite, tmp_path: Path) -> None:
    queue_name = f"q{uuid.uuid4().hex[:16]}"
    record = tmp_path / "calls.jsonl"
    queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    queue.create_queue()
    for i in range(8):
        queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 1.0, "tag": i})))
    interrupt(start_cli_host(azurite, tmp_path, queue_name, record), record)
    done = {json.loads(line)["tag"] for line in record.read_text().splitlines()}
    left = {json.loads(base64.b64decode(m.content))["tag"] for m in queue.peek_messages(max_messages=32)}
    assert done | left == set(range(8)) and not done & left


@pytest.mark.slow
def test_ctrl_c_stops_a_busy_host_every_time(azurite: Azurite, tmp_path: Path) -> None:
    """A signal taken by a worker thread must still wake the main thread: 20 busy hosts, 20 stops, every
    other one with the SIGINT delivered to a worker thread."""
    queue_name = f"q{uuid.uuid4().hex[:16]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    queue.create_queue()
    for round_number in range(20):
        queue.clear_messages()
        for i in range(48):
            queue.send_message(encode(json.dumps({"action": "sleep", "seconds": 0.05, "tag": i})))
        record = tmp_path / f"calls-{round_number}.jsonl"
        interrupt(start_cli_host(azurite, tmp_path, queue_name, record), record, to_worker=round_number % 2 == 1)


def status_blob(runner: HostRunner, function: str = "tick") -> Any:
    service = BlobServiceClient.from_connection_string(runner.azurite.connection_string)
    return service.get_blob_client("azure-webjobs-hosts", f"timers/{runner.host_id}/Host.Functions.{function}/status")


def test_timer_writes_status_on_first_start(runner: HostRunner) -> None:
    runner.start(schedule=YEARLY)
    blob = status_blob(runner)
    wait_until(blob.exists)
    status = json.loads(blob.download_blob().readall())
    assert status["Next"] == f"{datetime.now(UTC).year + 1}-01-01T00:00:00.0000000+00:00"
    assert runner.calls("tick") == []


def test_timer_past_due_after_downtime_runs_once_at_start(runner: HostRunner) -> None:
    blob = status_blob(runner)
    blob.upload_blob(
        json.dumps(
            {
                "Last": "2024-01-01T00:00:00.0000000+00:00",
                "Next": "2025-01-01T00:00:00.0000000+00:00",
                "LastUpdated": "2024-01-01T00:00:01.0000000+00:00",
            }
        ),
        overwrite=True,
    )
    runner.start(schedule=YEARLY)
    wait_until(lambda: len(runner.calls("tick")) == 1)
    (call,) = runner.calls("tick")
    assert call["past_due"] is True
    # Last is the run's start (TimerListener.InvokeJobFunction), and Next follows from it.
    year = str(datetime.now(UTC).year)
    wait_until(lambda: json.loads(blob.download_blob().readall())["Last"].startswith(year))
    status = json.loads(blob.download_blob().readall())
    assert status["Next"] == f"{int(year) + 1}-01-01T00:00:00.0000000+00:00"
    assert status["LastUpdated"] == status["Last"]
    time.sleep(0.5)
    assert len(runner.calls("tick")) == 1


def test_changed_schedule_is_recomputed_not_past_due(runner: HostRunner) -> None:
    blob = status_blob(runner)
    # Written under a daily schedule; the app now runs yearly: Next no longer follows from Last.
    blob.upload_blob(
        json.dumps(
            {
                "Last": "2024-03-04T00:00:00.0000000+00:00",
                "Next": "2024-03-05T00:00:00.0000000+00:00",
                "LastUpdated": "2024-03-04T00:00:01.0000000+00:00",
            }
        ),
        overwrite=True,
    )
    runner.start(schedule=YEARLY)
    wait_until(lambda: json.loads(blob.download_blob().readall())["Next"].startswith(str(datetime.now(UTC).year + 1)))
    time.sleep(0.5)
    assert runner.calls("tick") == []


def test_an_unreadable_status_is_replaced_not_fatal(runner: HostRunner) -> None:
    blob = status_blob(runner)
    # What an earlier version wrote for "never" (year 1 unpadded): the timer must still start.
    never = "1-01-01T00:00:00.00000000+00:00"
    blob.upload_blob(json.dumps({"Last": never, "Next": never, "LastUpdated": never}), overwrite=True)
    runner.start(schedule=YEARLY)
    wait_until(lambda: json.loads(blob.download_blob().readall())["Next"].startswith(str(datetime.now(UTC).year + 1)))
    assert runner.calls("tick") == []


@pytest.mark.slow
def test_lease_makes_two_hosts_fire_a_timer_once(runner: HostRunner) -> None:
    first = runner.start(schedule="* * * * * *")
    second = runner.start(schedule="* * * * * *")
    time.sleep(4.2)
    runner.stop()
    ticks = runner.calls("tick")
    starts = sorted(t["start"] for t in ticks)
    assert 2 <= len(ticks) <= 6
    assert all(b - a > 0.5 for a, b in itertools.pairwise(starts))  # no occurrence fired twice
    runs = sorted([first.listeners["tick"].runs, second.listeners["tick"].runs])  # type: ignore[attr-defined]
    assert runs[0] == 0 and runs[1] == len(ticks)


@pytest.mark.slow
def test_timer_runs_never_overlap_and_an_overrun_is_caught_up_at_once(
    runner: HostRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every second, a run of 1.5 s: the next occurrence follows from the run's start, so it has passed
    when the run ends, and runs at once (TimerListener: an interval <= 0 becomes one tick), not at the
    next second after the end (2 s apart)."""
    monkeypatch.setenv("SAMPLE_TICK_SECONDS", "1.5")
    runner.start(schedule="* * * * * *")
    time.sleep(4.5)
    runner.stop()
    starts = [t["start"] for t in runner.calls("tick")]
    assert len(starts) >= 3
    assert all(1.5 <= b - a < 1.8 for a, b in itertools.pairwise(starts))


def test_use_monitor_is_forced_off_for_schedules_more_often_than_once_a_minute(runner: HostRunner) -> None:
    """TimerSchedule.ShouldDisableScheduleMonitor: the app's 30-s alert_groups timer keeps no status blob."""
    host = runner.start(schedule="*/30 * * * * *")
    assert host.listeners["tick"].use_monitor is False  # type: ignore[attr-defined]
    runner.stop()
    assert not status_blob(runner).exists()


def test_run_on_startup(runner: HostRunner) -> None:
    app = func.FunctionApp()
    calls: list[bool] = []

    @app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%", run_on_startup=True, use_monitor=False)
    def startup(timer: func.TimerRequest) -> None:
        calls.append(timer.past_due)

    runner.start(app=app)
    wait_until(lambda: calls == [False])


def test_unsupported_trigger_is_a_clear_error(runner: HostRunner) -> None:
    app = func.FunctionApp()

    @app.route(route="hello")
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("hi")

    with pytest.raises(HostConfigError, match=r"function 'hello': trigger type 'httpTrigger' is not supported"):
        runner.start(app=app)


def test_missing_setting_in_a_binding_is_named(runner: HostRunner) -> None:
    host = FunctionHost(
        sample.app, {"AzureWebJobsStorage": runner.azurite.connection_string}, {"version": "2.0"}, runner.host_id
    )
    with pytest.raises(HostConfigError, match=r"function 'work': '%SAMPLE_QUEUE%' does not resolve to a value"):
        host.build()


def test_unreachable_storage_is_a_clear_error(runner: HostRunner) -> None:
    dead = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={'A' * 86}==;"
        f"QueueEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    settings = {**runner.settings(), "SAMPLE_STORAGE": dead}
    started = time.monotonic()
    with pytest.raises(HostConfigError, match=r"cannot reach queue storage .* is Azurite running"):
        FunctionHost(sample.app, settings, {"version": "2.0"}, runner.host_id).build()
    assert time.monotonic() - started < 20


@pytest.mark.slow
def test_an_azurite_that_checks_api_versions_is_named_not_called_unreachable(runner: HostRunner) -> None:
    strict = start_azurite(check_api_version=True)  # as `npx azurite` starts it, without --skipApiVersionCheck
    try:
        settings = {**runner.settings(), "SAMPLE_STORAGE": strict.connection_string}
        with pytest.raises(HostConfigError, match=r"refuses the storage SDK's API version; start Azurite with "):
            FunctionHost(sample.app, settings, {"version": "2.0"}, runner.host_id).build()
    finally:
        strict.stop()
