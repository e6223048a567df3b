"""Alert forwarding end to end: Azurite (queue, ledger, rules) and the ServiceNow emulator, real SDKs.

Each exactly-once case is driven through the forwarder's entry point with real storage and a real
ServiceNow wire; crashes are reproduced by leaving behind exactly the state a dead worker leaves.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.alerting.forwarder import Result
from shared.app import ProcessSingleton
from shared.app import forwarding as app_forwarding
from shared.contract.model import SCHEMA
from tests.conftest import SN_USER
from tests.support.forwarding import Stack, alert, body, rules

pytestmark = pytest.mark.integration


def test_an_alert_becomes_one_incident_in_one_servicenow_call(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    result = stack.handle(alert())
    assert result.status == "forwarded" and result.rules == ("main",)
    (outcome,) = result.outcomes
    (record,) = stack.records()
    assert (outcome.operation, outcome.sys_id, outcome.number) == ("created", record["sys_id"], record["number"])
    assert record["correlation_id"] == "dfiot:alert:7:1001:incident"
    assert stack.servicenow.stats["requests"] == 1  # the happy path is one POST


def test_redelivery_writes_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.handle(alert(), "message-1")
    again = stack.handle(alert(), "message-1")
    assert [o.operation for o in again.outcomes] == ["duplicate"]
    assert len(stack.records()) == 1 and stack.servicenow.stats["requests"] == 1
    assert stack.servicenow.store.all("sys_journal_field") == []


def test_duplicate_enqueue_adds_a_work_note_not_a_record(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.handle(alert(), "message-1")
    repeat = stack.handle(alert(), "message-2")
    assert [o.operation for o in repeat.outcomes] == ["work_note"]
    (note,) = stack.servicenow.store.all("sys_journal_field")
    assert note["element"] == "work_notes" and "occurrence 2" in note["value"]
    third = stack.handle(alert(), "message-3")
    assert [o.operation for o in third.outcomes] == ["work_note"]
    assert "occurrence 3" in stack.servicenow.store.all("sys_journal_field")[-1]["value"]
    assert len(stack.records()) == 1


def test_parallel_duplicates_make_one_record(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.servicenow.faults.configure({"latency_ms": 150})
    results: list[Result] = []
    threads = [threading.Thread(target=lambda i=i: results.append(stack.handle(alert(), f"m-{i}"))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stack.records()) == 1
    statuses = sorted(r.status for r in results)
    assert statuses.count("forwarded") >= 1 and set(statuses) <= {"forwarded", "deferred"}
    assert stack.poisoned() == []


def test_parallel_repeats_are_each_counted_and_remembered(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.handle(alert(), "m-0")
    stack.servicenow.faults.configure({"latency_ms": 100})  # the three copies' reads and writes overlap
    start = threading.Barrier(3)

    def repeat(number: int) -> None:
        start.wait()
        stack.handle(alert(), f"m-{number}")

    threads = [threading.Thread(target=repeat, args=(i,)) for i in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    notes = sorted(n["value"] for n in stack.servicenow.store.all("sys_journal_field"))
    assert [re.search(r"occurrence (\d+)", n).group(1) for n in notes] == ["2", "3", "4"]  # type: ignore[union-attr]
    (entry,) = stack.forwarder.ledger.entries("alert:7:1001")
    assert entry.seen == 4 and set(entry.deliveries) == {"m-0", "m-1", "m-2", "m-3"}
    stack.servicenow.faults.clear()
    assert [o.operation for o in stack.handle(alert(), "m-3").outcomes] == ["duplicate"]  # a redelivery
    assert len(stack.servicenow.store.all("sys_journal_field")) == 3 and len(stack.records()) == 1


def test_lost_response_is_recovered_by_correlation_id(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.servicenow.faults.configure({"fail_next": [{"kind": "slow_response", "seconds": 2}]})
    first = stack.handle(alert(), "message-1")
    assert first.status == "deferred" and "read timeout" in first.reason
    assert len(stack.records()) == 1  # ServiceNow did create it; the answer was lost
    ((message_id, deferred),) = stack.deferred(wait=5)
    second = stack.handle(deferred, message_id)
    assert [o.operation for o in second.outcomes] == ["recovered"]
    assert len(stack.records()) == 1
    third = stack.handle(deferred, "yet-another-copy")
    assert [o.operation for o in third.outcomes] == ["duplicate"]  # same delivery id travels with the copy


def test_crash_after_the_servicenow_write_is_recovered(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    # What a worker that died right after the ServiceNow write leaves behind: a claim and a record.
    from shared.alerting.records import alert_key, correlation_id, record_values
    from shared.contract.parse import parse_message

    message = parse_message(body(alert()))
    action = stack.forwarder.rules.current().actions["incident"]
    stack.forwarder.ledger.claim(alert_key(message), "incident", correlation_id(message, action))
    stack.forwarder.clients["default"].create_record("incident", record_values(message, action))
    ledger = stack.forwarder.ledger
    claimed = datetime.now(UTC)
    # While the claim is younger than claim_seconds its worker may still be writing: hands off.
    ledger.clock = lambda: claimed + timedelta(seconds=ledger.claim_seconds - 5)
    assert ledger.claim(alert_key(message), "incident", correlation_id(message, action)).kind == "busy"
    ledger.clock = lambda: claimed + timedelta(seconds=ledger.claim_seconds + 5)  # the dead worker's claim is stale
    result = stack.handle(alert(), "redelivered")
    assert [o.operation for o in result.outcomes] == ["recovered"]
    assert len(stack.records()) == 1


def resolve_in_servicenow(stack: Stack, sys_id: str) -> None:
    stack.servicenow.store.update("incident", sys_id, {"state": "6", "close_code": "Solved", "close_notes": "x"}, "u")


def test_repeat_of_a_closed_alert_makes_a_new_record_by_default(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    first = stack.handle(alert()).outcomes[0]
    resolve_in_servicenow(stack, first.sys_id)
    again = stack.handle(alert()).outcomes[0]
    assert again.operation == "recreated" and again.sys_id != first.sys_id
    records = {r["sys_id"]: r for r in stack.records()}
    assert records[again.sys_id]["correlation_id"] == "dfiot:alert:7:1001:incident:1"
    assert stack.handle(alert()).outcomes[0].operation == "work_note"  # the new one is open


def test_repeat_of_a_closed_alert_can_reopen(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rules("incident-reopen"))
    first = stack.handle(alert()).outcomes[0]
    resolve_in_servicenow(stack, first.sys_id)
    again = stack.handle(alert()).outcomes[0]
    assert (again.operation, again.sys_id) == ("reopened", first.sys_id)
    assert stack.servicenow.store.get("incident", first.sys_id)["state"] == "2"


def test_close_notes_template_with_resolution_placeholders(make_stack: Callable[..., Stack]) -> None:
    document = rules("closing")
    template = "{resolution} by {handled_by}: {resolution_notes}"
    document["actions"] = [{"name": "closing", "connection": "default", "report": "incident", "close_notes": template}]
    stack = make_stack(document)
    (created,) = stack.handle(alert()).outcomes
    status = {
        "schema": SCHEMA,
        "kind": "alert_status",
        "sensor": {"name": "sensor-1", "id": 7},
        "alert": {"id": 1001, "handled": True},
        "resolution": {"action": "handleAndLearn", "by": "ot-analyst", "notes": "a planned firmware update"},
    }
    assert [o.operation for o in stack.handle(status).outcomes] == ["resolved"]
    incident = stack.servicenow.store.get("incident", created.sys_id)
    assert incident["close_notes"] == "handleAndLearn by ot-analyst: a planned firmware update"


def test_alert_handled_in_defender_resolves_its_records_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rules("incident", "soc"))
    created = stack.handle(alert()).outcomes
    status = {
        "schema": SCHEMA,
        "kind": "alert_status",
        "sensor": {"name": "sensor-1", "id": 7},
        "alert": {"id": 1001, "handled": True},
        "resolution": {"action": "handle", "by": "ot-analyst"},
    }
    resolved = stack.handle(status)
    assert sorted(o.operation for o in resolved.outcomes) == ["resolved", "resolved"]
    incident = stack.servicenow.store.get("incident", created[0].sys_id)
    assert (incident["state"], incident["close_code"]) == ("6", "Resolved by caller")
    assert "handle by ot-analyst" in incident["close_notes"]
    assert stack.servicenow.store.get("sn_si_incident", created[1].sys_id)["state"] == "3"
    again = stack.handle(status)
    assert again.outcomes == [] and again.status == "filtered"


def test_an_alert_handled_after_its_record_was_deleted_in_servicenow_is_done_not_poisoned(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    (created,) = stack.handle(alert()).outcomes
    stack.servicenow.store.delete("incident", created.sys_id)
    status = {"schema": SCHEMA, "kind": "alert_status", "sensor": {"name": "sensor-1", "id": 7}, "alert": {"id": 1001}}
    handled = stack.handle(status)
    assert handled.status == "filtered" and handled.outcomes == []
    assert stack.handle(status).status == "filtered"  # and it is remembered as done


def test_an_alert_handled_after_its_record_was_resolved_in_servicenow_leaves_that_resolution_as_written(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    (created,) = stack.handle(alert()).outcomes
    values = {"state": "7", "close_code": "Solved (Permanently)", "close_notes": "closed by the SOC"}
    stack.servicenow.store.update("incident", created.sys_id, values, "analyst")
    status = {"schema": SCHEMA, "kind": "alert_status", "sensor": {"name": "sensor-1", "id": 7}, "alert": {"id": 1001}}
    assert stack.handle(status).outcomes == []
    record = stack.servicenow.store.get("incident", created.sys_id)
    assert (record["state"], record["close_notes"]) == ("7", "closed by the SOC")


def test_429_storm_defers_for_the_requested_time(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.servicenow.faults.configure({"fail_next": [{"status": 429, "retry_after": "3", "count": 20}]})
    result = stack.handle(alert(), "m-1")
    assert result.status == "deferred"
    assert stack.deferred() == []  # invisible for the Retry-After wait
    stack.servicenow.faults.clear()
    ((message_id, deferred),) = stack.deferred(wait=6)
    assert [o.operation for o in stack.handle(deferred, message_id).outcomes] == ["created"]
    assert len(stack.records()) == 1 and stack.poisoned() == []


@pytest.mark.slow
def test_outage_longer_than_the_hosts_retries_loses_nothing(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.servicenow.faults.configure({"outage_seconds": 3600})
    message_id, data = "m-1", body(alert())
    for attempt in range(1, 8):  # more attempts than host.json maxDequeueCount (5)
        result = stack.handle(data, message_id)
        assert result.status == "deferred"
        ((message_id, data),) = stack.deferred(wait=5)
        assert len(json.loads(data)["_delivery"]["attempts"]) == attempt
    assert stack.poisoned() == []
    stack.servicenow.faults.clear()
    assert [o.operation for o in stack.handle(data, message_id).outcomes] == ["created"]
    assert len(stack.records()) == 1


def test_auth_failure_defers_until_the_credential_is_fixed(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack()
    stack.servicenow.oauth.users[SN_USER] = "Rotated-In-ServiceNow-Only"
    result = stack.handle(alert(), "m-1")
    assert result.status == "deferred" and "User Not Authenticated" in result.reason
    assert stack.poisoned() == []
    monkeypatch.setenv("SERVICENOW_DEFAULT_PASSWORD", "Rotated-In-ServiceNow-Only")  # the operator updates the secret
    ((message_id, deferred),) = stack.deferred(wait=5)
    assert [o.operation for o in stack.handle(deferred, message_id).outcomes] == ["created"]


def test_past_the_maximum_age_goes_to_poison_with_history(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.servicenow.faults.configure({"outage_seconds": 3600})
    old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    document = {**alert(), "_delivery": {"id": "orig", "first_seen": old, "attempts": [{"at": old, "error": "503"}]}}
    assert stack.handle(document).status == "poisoned"
    (wrapped,) = stack.poisoned()
    assert wrapped["reason"].startswith("not delivered within 1 day, 0:00:00")
    assert len(wrapped["attempts"]) == 2 and wrapped["message"]["alert"]["id"] == 1001
    assert "_delivery" not in wrapped["message"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "message: not JSON"),
        (b"\xff\xfe", "message: not UTF-8"),
        (body({**alert(), "alert": {**alert()["alert"], "severity": 3}}), "alert.severity"),
        (body({**alert(), "alert": {**alert()["alert"], "title": "x" * 2000}}), "alert.title: 2000 characters"),
        (body({**alert(), "kind": "unknown"}), "kind: expected one of"),
    ],
)
def test_malformed_messages_are_poisoned_without_a_servicenow_call(
    make_stack: Callable[..., Stack], data: bytes, reason: str
) -> None:
    stack = make_stack()
    assert stack.handle(data).status == "poisoned"
    (wrapped,) = stack.poisoned()
    assert wrapped["reason"].startswith("invalid message: ") and reason in wrapped["reason"]
    assert base64.b64decode(wrapped.get("message_base64", "")) == data or "message" in wrapped
    assert stack.servicenow.stats["requests"] == 0


def test_hostile_alert_id_is_forwarded_as_data(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.handle(alert(alert_id="x^NQactive=true"))
    stack.handle(alert(alert_id=1002))
    assert len(stack.records()) == 2
    assert {r["correlation_id"] for r in stack.records()} == {
        "dfiot:alert:7:x^NQactive=true:incident",
        "dfiot:alert:7:1002:incident",
    }


def test_permanent_refusal_is_poisoned_and_can_be_replayed(
    make_stack: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack(rules("broken"))
    with caplog.at_level(logging.ERROR, logger="shared.alerting.forwarder"):
        result = stack.handle(alert())
    assert result.status == "poisoned" and "Invalid table sn_no_such_table" in result.reason
    assert "alert alert:7:1001 poisoned: POST /api/now/table/sn_no_such_table → 400" in caplog.text  # which alert
    (wrapped,) = stack.poisoned()
    assert "ServiceNow refused the record" in wrapped["reason"]
    stack.set_rules(rules("soc"))  # fixed: a replay now goes through (the failed claim was released)
    time.sleep(0.01)
    assert [o.operation for o in stack.handle(wrapped["message"]).outcomes] == ["created"]


def test_filtered_alerts_cost_no_servicenow_call(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(rules(minimal_severity="Critical"))
    result = stack.handle(alert(severity="Minor"))
    assert result.status == "filtered" and "severity Minor below Critical" in result.reason
    assert stack.servicenow.stats["requests"] == 0


def test_an_invalid_rules_update_keeps_the_last_good_rules(
    make_stack: Callable[..., Stack], caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack()
    stack.handle(alert(alert_id=1))
    stack.set_rules({"actions": [], "rules": [{"name": "broken"}]})
    with caplog.at_level(logging.ERROR, logger="shared.alerting.rules_store"):
        assert stack.handle(alert(alert_id=2)).status == "forwarded"
    assert "refused; the last good rules stay in force" in caplog.text
    assert "rules[0].actions: expected a non-empty list of action names" in caplog.text


def test_missing_rules_defer_rather_than_drop(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.rules_path.unlink()
    result = stack.handle(alert())
    assert result.status == "deferred" and "no forwarding rules" in result.reason
    assert len(stack.deferred(wait=5)) == 1


def test_the_function_entry_point(make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack()
    monkeypatch.setattr(app_forwarding, "_forwarder", ProcessSingleton(lambda: stack.forwarder))
    import azure.functions.queue

    from functions.alert_forwarder import alert_forwarder

    now = datetime.now(UTC)
    message = azure.functions.queue.QueueMessage(
        id="fn-1",
        body=body(alert()),
        dequeue_count=1,
        insertion_time=now,
        expiration_time=now,
        time_next_visible=now,
        pop_receipt="r",
    )
    alert_forwarder(message)
    assert len(stack.records()) == 1


def test_a_records_correlation_id_leads_back_to_its_ledger_row(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    ledger = stack.forwarder.ledger
    stack.handle(alert(alert_id=1))
    long_id = "x" * 120  # too long for ServiceNow's correlation_id: hashed, and then indexed
    stack.handle(alert(alert_id=long_id))
    plain, hashed = sorted(stack.records(), key=lambda r: r["correlation_id"].startswith("dfiot:sha256:"))
    assert plain["correlation_id"] == "dfiot:alert:7:1:incident" and hashed["correlation_id"].startswith(
        "dfiot:sha256:"
    )
    index_rows = list(ledger.table.query_entities("PartitionKey ge 'correlation-' and PartitionKey lt 'correlation.'"))
    assert len(index_rows) == 1  # only the hashed id needed an index write
    assert ledger.by_correlation(plain["correlation_id"]).alert_key == "alert:7:1"  # type: ignore[union-attr]
    assert ledger.by_correlation(hashed["correlation_id"]).alert_key == f"alert:7:{long_id}"  # type: ignore[union-attr]
    resolve_in_servicenow(stack, plain["sys_id"])
    stack.handle(alert(alert_id=1), "a-repeat")  # a new record for the closed one: generation 1
    (entry,) = ledger.entries("alert:7:1")
    assert entry.correlation_id == "dfiot:alert:7:1:incident:1" and ledger.by_correlation(entry.correlation_id) == entry
    assert ledger.by_correlation("dfiot:alert:7:1:incident") is None  # the closed generation's row moved on
    assert ledger.by_correlation("dfiot:group:abc:0") is None and ledger.by_correlation("elsewhere") is None


def test_an_alert_with_more_actions_than_its_run_time_allows_finishes_in_redeliveries_each_once(
    make_stack: Callable[..., Stack],
) -> None:
    """No invocation reaches functionTimeout: past the run time, the actions not yet written follow in a
    redelivery, which skips the written ones (the ledger) — each record written once."""
    stack = make_stack(rules("incident", "soc"))
    stack.forwarder.run_seconds = 0  # spent at once: one action per delivery
    first = stack.handle(alert())
    assert first.status == "deferred" and "run time is spent after 1 of 2 actions" in first.reason
    assert len(stack.records("incident")) == 1 and stack.records("sn_si_incident") == []
    # The redelivery is invisible for the busy retry (5 s) from its deferral: wait well past that under load.
    ((_, redelivered),) = stack.deferred(wait=30)
    second = stack.handle(redelivered)
    assert second.status == "forwarded"
    assert [o.operation for o in second.outcomes] == ["duplicate", "created"]
    assert len(stack.records("incident")) == 1 and len(stack.records("sn_si_incident")) == 1
