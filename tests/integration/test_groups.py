"""Alert groups end to end: the forwarder and the group notes timer on Azurite and the ServiceNow emulator.

Every alert of a group must be accounted for exactly once — in the record (its first) or in one work
note line — through redeliveries, parallel workers, lost answers and crashes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.alerting.forwarder import Result
from shared.alerting.groups import Header, group_correlation_id, group_id
from shared.alerting.records import prepare
from shared.app.groups import build_group_notes
from shared.contract.parse import parse_message
from shared.http.errors import PermanentError
from shared.platform.times import Deadline
from tests.support.forwarding import Stack, alert, body, rules

pytestmark = pytest.mark.integration


def grouped(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(rules("grouped"))


def notes(stack: Stack) -> list[str]:
    return [n["value"] for n in stack.servicenow.store.all("sys_journal_field")]


def listed(stack: Stack) -> list[str]:
    """The alert ids the record accounts for: its own, then every work note line's."""
    (record,) = stack.records()
    own = re.findall(r"Defender alert id: (\S+)", record["description"])
    lines = [line for note in notes(stack) for line in note.splitlines() if line.startswith("- ")]
    return own + [re.search(r"alert (\S+)$", line).group(1) for line in lines]  # type: ignore[union-attr]


def header_of(stack: Stack, generation: int = 0) -> Header:
    gid = group_id("grouped", "sensor-1:Illegal MODBUS Operation")
    header = stack.forwarder.groups.latest(gid)
    assert header is not None and header.generation == generation
    return header


def test_a_storm_of_related_alerts_becomes_one_record_and_batched_notes(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    results = [stack.handle(alert(alert_id=1000 + i)) for i in range(30)]
    assert [o.operation for r in results for o in r.outcomes] == ["group_opened"] + ["grouped"] * 29
    (record,) = stack.records()
    assert record["correlation_id"].startswith("dfiot:group:")
    assert "Alert group: {sensor}:{title} = sensor-1:Illegal MODBUS Operation, for 60 minutes" in record["description"]
    assert stack.servicenow.stats["requests"] == 1  # the forwarder wrote once for thirty alerts
    report = stack.notes()
    assert (report.notes, report.alerts, report.failed) == (1, 29, [])
    (note,) = notes(stack)
    assert note.startswith("[Defender for IoT group note 1] 29 more alert(s) of this group") and "30 in all" in note
    assert sorted(listed(stack)) == sorted(str(1000 + i) for i in range(30))
    assert stack.servicenow.stats["requests"] == 2
    assert header_of(stack).count == 30
    assert stack.notes().notes == 0  # nothing new: no note


def test_a_pass_stopped_at_its_deadline_lists_the_rest_next_time_each_alert_once(
    make_stack: Callable[..., Stack],
) -> None:
    stack = grouped(make_stack)
    for i in range(30):
        stack.handle(alert(alert_id=1000 + i))
    timer = build_group_notes(stack.settings)
    timer.per_note = 10
    reports = []
    for _ in range(4):
        # A deadline that passes once one more ServiceNow request is made: one note per pass.
        reports.append(timer.run(Deadline(1, clock=lambda: stack.servicenow.stats["requests"])))
    assert [(r.notes, r.alerts, r.stopped) for r in reports] == [
        (1, 10, True),
        (1, 10, True),
        (1, 9, False),
        (0, 0, False),
    ]
    assert sorted(listed(stack)) == sorted(str(1000 + i) for i in range(30))  # each alert listed once


def test_other_keys_make_other_records(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    stack.handle(alert(alert_id=1, title="Port scan"))
    stack.handle(alert(alert_id=2, title="Port scan"))
    stack.handle(alert(alert_id=3, title="Unauthorized PLC programming"))
    assert sorted(r["short_description"] for r in stack.records()) == [
        "[Defender for IoT] Major: Port scan (sensor-1)",
        "[Defender for IoT] Major: Unauthorized PLC programming (sensor-1)",
    ]


def test_redeliveries_and_repeats_are_accounted_once(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    stack.handle(alert(alert_id=1), "m-1")
    stack.handle(alert(alert_id=2), "m-2")
    assert [o.operation for o in stack.handle(alert(alert_id=2), "m-2").outcomes] == ["duplicate"]
    assert [o.operation for o in stack.handle(alert(alert_id=1), "m-1").outcomes] == ["duplicate"]
    stack.notes()
    assert [o.operation for o in stack.handle(alert(alert_id=2), "m-3").outcomes] == ["duplicate"]
    stack.notes()
    assert sorted(listed(stack)) == ["1", "2"] and header_of(stack).count == 2


def test_parallel_workers_open_one_record_and_lose_no_alert(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    stack.servicenow.faults.configure({"latency_ms": 100})
    start = threading.Barrier(8)
    results: list[Result] = []

    def send(number: int) -> None:
        start.wait()
        results.append(stack.handle(alert(alert_id=number)))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.operation for r in results for o in r.outcomes) == ["group_opened"] + ["grouped"] * 7
    stack.servicenow.faults.clear()
    stack.notes()
    assert len(stack.records()) == 1
    assert sorted(listed(stack)) == [str(i) for i in range(8)] and header_of(stack).count == 8


def test_a_new_window_opens_a_new_record_and_the_old_one_gets_its_last_alerts(
    make_stack: Callable[..., Stack],
) -> None:
    stack = grouped(make_stack)
    stack.handle(alert(alert_id=1))
    stack.handle(alert(alert_id=2))  # joined the first window; not noted yet
    later = datetime.now(UTC) + timedelta(minutes=61)
    stack.forwarder.clock = lambda: later
    outcome = stack.handle(alert(alert_id=3)).outcomes[0]
    assert outcome.operation == "group_opened"
    stack.notes()
    first, second = sorted(stack.records(), key=lambda r: r["number"])
    assert outcome.number == second["number"]
    (note,) = stack.servicenow.store.all("sys_journal_field")
    assert note["element_id"] == first["sys_id"] and "alert 2" in note["value"]
    assert header_of(stack, generation=1).count == 1 and header_of(stack, generation=1).correlation_id.endswith(":1")


def test_a_record_closed_in_servicenow_ends_its_generation(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    stack.handle(alert(alert_id=1))
    (record,) = stack.records()
    stack.servicenow.store.update("incident", record["sys_id"], {"state": "7"}, "analyst")
    stack.handle(alert(alert_id=2))
    stack.notes()  # the note lands on the closed record, which tells the group it is closed
    assert header_of(stack).closed
    assert stack.handle(alert(alert_id=3)).outcomes[0].operation == "group_opened"
    assert len(stack.records()) == 2


def test_a_record_closed_on_a_custom_table_ends_its_generation_too(make_stack: Callable[..., Stack]) -> None:
    # Any other table reads the ended states of both kinds (shared.servicenow.records.OTHER_TABLE); the notes
    # timer used to know none for it, so a group on it kept noting a closed record and never opened another.
    action = {"name": "grouped", "connection": "default", "report": "full", "table": "u_ot_alert",
              "group": {"key": "{sensor}:{title}", "window_minutes": 60}}  # fmt: skip
    document = rules("grouped")
    stack = make_stack({**document, "actions": [action]})
    stack.handle(alert(alert_id=1))
    (record,) = stack.records("u_ot_alert")
    stack.servicenow.store.update("u_ot_alert", record["sys_id"], {"state": "7"}, "analyst")
    stack.handle(alert(alert_id=2))
    stack.notes()
    assert header_of(stack).closed
    assert stack.handle(alert(alert_id=3)).outcomes[0].operation == "group_opened"
    assert len(stack.records("u_ot_alert")) == 2


def test_a_lost_answer_to_the_opening_write_is_recovered_without_a_second_record(
    make_stack: Callable[..., Stack],
) -> None:
    stack = grouped(make_stack)
    stack.servicenow.faults.configure({"fail_next": [{"kind": "slow_response", "seconds": 2}]})
    result = stack.handle(alert(alert_id=1))
    assert result.status == "forwarded" and result.outcomes[0].operation == "grouped"  # nothing to defer
    assert len(stack.records()) == 1 and header_of(stack).state == "uncertain"
    stack.handle(alert(alert_id=2))
    report = stack.notes()
    assert (report.records, report.alerts) == (1, 1)
    assert len(stack.records()) == 1 and sorted(listed(stack)) == ["1", "2"]


def test_an_opener_that_crashed_before_writing_is_finished_by_the_timer(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    # What a worker that died after opening the group leaves behind: a claimed header and its member.
    message = parse_message(body(alert(alert_id=1)))
    action = stack.forwarder.rules.current().actions["grouped"]
    book = stack.forwarder.groups
    gid = group_id("grouped", "sensor-1:Illegal MODBUS Operation")
    member = book.join(gid, 0, prepare(message))
    assert member is not None
    assert book.open(gid, 0, action, "sensor-1:Illegal MODBUS Operation", member, datetime.now(UTC)) is not None
    stack.handle(alert(alert_id=2))
    assert stack.notes().records == 0  # the claim is young: its worker may still be writing
    assert stack.records() == []
    claimed = datetime.now(UTC)
    notes_book = book.__class__(book.table, book.claim_seconds, lambda: claimed + timedelta(seconds=301))
    timer = build_group_notes(stack.settings)
    timer.book = notes_book
    report = timer.run()
    assert (report.records, report.alerts) == (1, 1)
    (record,) = stack.records()
    assert record["correlation_id"] == group_correlation_id(gid, 0)
    assert sorted(listed(stack)) == ["1", "2"]
    for client in timer.clients.values():
        client.close()


def test_a_worker_that_died_between_joining_and_opening_is_finished_by_the_redelivery(
    make_stack: Callable[..., Stack],
) -> None:
    stack = grouped(make_stack)
    # The dead worker accounted its alert to a new group's first generation, then died before opening it.
    message = parse_message(body(alert(alert_id=1)))
    gid = group_id("grouped", "sensor-1:Illegal MODBUS Operation")
    assert stack.forwarder.groups.join(gid, 0, prepare(message)) is not None
    redelivered = stack.handle(alert(alert_id=1), "m-1")
    assert [o.operation for o in redelivered.outcomes] == ["group_opened"]
    assert [o.operation for o in stack.handle(alert(alert_id=1), "m-1").outcomes] == ["duplicate"]
    stack.handle(alert(alert_id=2))
    stack.notes()
    assert sorted(listed(stack)) == ["1", "2"] and header_of(stack).count == 2


def test_a_note_whose_answer_was_lost_is_not_written_twice(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    for number in range(5):
        stack.handle(alert(alert_id=number))
    stack.servicenow.faults.configure({"fail_next": [{"kind": "slow_response", "seconds": 2}]})
    failed = stack.notes()
    assert failed.notes == 0 and len(failed.failed) == 1 and "read timeout" in failed.failed[0]
    assert len(notes(stack)) == 1  # it did reach ServiceNow
    stack.handle(alert(alert_id=5))  # arrives meanwhile: the next note's
    report = stack.notes()
    assert (report.notes, report.alerts) == (2, 5)  # the lost one finished from the journal, then the new one
    assert len(notes(stack)) == 2
    assert sorted(listed(stack), key=int) == [str(i) for i in range(6)] and header_of(stack).count == 6


def test_a_group_is_retired_after_its_window(make_stack: Callable[..., Stack]) -> None:
    stack = grouped(make_stack)
    stack.handle(alert(alert_id=1))
    stack.handle(alert(alert_id=2))
    timer = build_group_notes(stack.settings)
    timer.clock = lambda: datetime.now(UTC) + timedelta(minutes=76)
    report = timer.run()
    assert (report.alerts, report.retired) == (1, 1)  # the last alert listed first, then retired
    assert timer.book.open_headers() == []
    for client in timer.clients.values():
        client.close()


def test_the_note_recovery_needs_no_audit_viewer_role(make_stack: Callable[..., Stack]) -> None:
    """sys_journal_field is readable only with audit_viewer, which the integration user lacks (as the emulator's
    users do): a lost note is found again from the record itself, whose correlation_display names the note."""
    stack = grouped(make_stack)
    client = stack.forwarder.clients["default"]
    with pytest.raises(PermanentError) as refused:
        list(client.query("sys_journal_field", fields=["sys_id"]))
    assert refused.value.status == 403
    for number in range(3):
        stack.handle(alert(alert_id=number))
    stack.servicenow.faults.configure({"fail_next": [{"kind": "slow_response", "seconds": 2}]})
    assert stack.notes().notes == 0 and len(notes(stack)) == 1  # written, its answer lost
    (record,) = stack.records()
    assert record["correlation_display"] == "Defender for IoT group note 1"
    report = stack.notes()
    assert (report.notes, report.alerts, report.failed) == (1, 2, []) and len(notes(stack)) == 1
    assert not [q for q in stack.servicenow.queries if q["table"] == "sys_journal_field"]
