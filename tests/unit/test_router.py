"""The forwarder's decisions, one by one, against in-memory fakes of its protocols (shared.alerting.ports): new
record, recovery, repeat, reopen, recreate, resolve, group, defer and poison. The same decisions run against
Azurite and the ServiceNow emulator in tests/integration/test_forwarding.py and test_groups.py."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerting.deferral import Deferral, Delivery
from shared.alerting.groups import Header, Member, group_correlation_id
from shared.alerting.ledger import Claim, Entry
from shared.alerting.records import PreparedAlert, prepare
from shared.alerting.router import Router
from shared.alerting.rules import Action, RuleSet, parse_rules
from shared.alerting.settings import ForwardingSettings
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from shared.http.errors import ConnectionFailedError, NotFoundError, PermanentError
from shared.platform.times import Deadline
from shared.servicenow.records import table_of

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ACTIONS = [
    {"name": "incident", "connection": "default", "report": "incident"},
    {"name": "reopen", "connection": "default", "report": "incident", "on_closed": "reopen"},
    {"name": "soc", "connection": "default", "report": "full", "table": "sn_si_incident"},
    {
        "name": "grouped",
        "connection": "default",
        "report": "incident",
        "group": {"key": "{sensor}", "window_minutes": 60},
    },
]


# -- fakes of the protocols ------------------------------------------------------------------------
class FakeRecords:
    """ServiceNow's records, by table; ``fail`` raises on the next write."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        self.numbers = itertools.count(1)
        self.fail: Exception | None = None
        self.calls: list[str] = []

    def _raise(self) -> None:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc

    def create(self, table: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        self._raise()
        n = next(self.numbers)
        record = {**fields, "sys_id": f"s{n}", "number": f"N{n}", "state": "1", "notes": []}
        self.tables.setdefault(table, {})[record["sys_id"]] = record
        return record

    def find(self, table: str, correlation_id: str) -> dict[str, Any] | None:
        self.calls.append("find")
        return next((r for r in self.tables.get(table, {}).values() if r["correlation_id"] == correlation_id), None)

    def state(self, table: str, sys_id: str) -> str | None:
        self.calls.append("state")
        record = self.tables.get(table, {}).get(sys_id)
        return None if record is None else str(record["state"])

    def _get(self, table: str, sys_id: str) -> dict[str, Any]:
        self._raise()
        if sys_id not in self.tables.get(table, {}):
            raise NotFoundError("gone", status=404)
        return self.tables[table][sys_id]

    def note(self, table: str, sys_id: str, text: str) -> dict[str, Any]:
        self.calls.append("note")
        record = self._get(table, sys_id)
        record["notes"].append(text)
        return record

    def reopen(self, table: str, sys_id: str, note: str) -> dict[str, Any]:
        self.calls.append("reopen")
        record = self._get(table, sys_id)
        record["state"] = table_of(table).reopened
        record["notes"].append(note)
        return record

    def resolve(self, table: str, sys_id: str, close_code: str, close_notes: str) -> dict[str, Any]:
        self.calls.append("resolve")
        record = self._get(table, sys_id)
        record.update(state=table_of(table).resolved, close_code=close_code, close_notes=close_notes)
        return record

    def affect(self, task_sys_id: str, ci_sys_id: str) -> dict[str, Any]:
        self.calls.append("affect")
        return {"task": task_sys_id, "ci_item": ci_sys_id}

    def link(self, table: str, sys_id: str) -> str:
        return f"https://instance/{table}/{sys_id}"


class FakeLedger:
    """The ledger's claim rules (an insert wins; a created row is existing; a young claim is busy)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Entry] = {}

    def _put(self, entry: Entry) -> Entry:
        self.rows[(entry.alert_key, entry.action)] = entry
        return entry

    def claim(self, alert_key: str, action: str, correlation_id: str) -> Claim:
        entry = self.rows.get((alert_key, action))
        if entry is None:
            new = Entry(alert_key, action, "claimed", "e", correlation_id=correlation_id, claimed_at=NOW)
            return Claim("new", self._put(new))
        if entry.state == "created":
            return Claim("existing", entry)
        if entry.state == "claimed":
            return Claim("busy", entry)
        return Claim("recover", self._put(replace(entry, state="claimed")))

    def created(self, entry: Entry, *, delivery_id: str, origin: Any = None, **values: Any) -> Entry:
        return self._put(replace(entry, state="created", deliveries=(*entry.deliveries, delivery_id), **values))

    def uncertain(self, entry: Entry) -> None:
        self._put(replace(entry, state="uncertain"))

    def release(self, entry: Entry) -> None:
        del self.rows[(entry.alert_key, entry.action)]

    def begin_generation(self, entry: Entry, generation: int, correlation_id: str) -> Entry | None:
        return self._put(replace(entry, state="claimed", generation=generation, correlation_id=correlation_id))

    def repeated(self, entry: Entry, delivery_id: str, *, reopened: bool) -> Entry | None:
        if delivery_id in entry.deliveries:
            return None
        reset: dict[str, Any] = {"resolved": False, "written_back": ""} if reopened else {}
        return self._put(replace(entry, seen=entry.seen + 1, deliveries=(*entry.deliveries, delivery_id), **reset))

    def undelivered(self, entry: Entry, delivery_id: str) -> None:
        kept = tuple(d for d in entry.deliveries if d != delivery_id)
        self._put(replace(entry, seen=entry.seen - 1, deliveries=kept))

    def entries(self, alert_key: str) -> list[Entry]:
        return [e for (key, _), e in self.rows.items() if key == alert_key]

    def resolved(self, entry: Entry) -> None:
        self._put(replace(entry, resolved=True))


class FakeGroups:
    def __init__(self) -> None:
        self.headers: dict[tuple[str, int], Header] = {}
        self.members: dict[tuple[str, str], Member] = {}

    def latest(self, gid: str) -> Header | None:
        found = [h for (g, _), h in self.headers.items() if g == gid]
        return max(found, key=lambda h: h.generation, default=None)

    def join(self, gid: str, generation: int, alert: PreparedAlert) -> Member | None:
        if (gid, alert.key) in self.members:
            return None
        member = self.members[(gid, alert.key)] = Member(gid, alert.key, alert.key, generation, "line", False)
        return member

    def member(self, gid: str, key: str) -> Member | None:
        return self.members.get((gid, key))

    def open(self, gid: str, generation: int, action: Action, value: str, member: Member, now: datetime) -> Header:
        assert action.group is not None and (gid, generation) not in self.headers
        header = Header(
            gid, generation, "claimed", "e", action.name, action.connection, action.table, value,
            action.group.window_minutes, now, member.row, group_correlation_id(gid, generation), now,
        )  # fmt: skip
        self.headers[(gid, generation)] = header
        return header

    def created(self, header: Header, sys_id: str, number: str) -> Header:
        done = self.headers[(header.gid, header.generation)] = replace(
            header, state="created", sys_id=sys_id, number=number
        )
        return done

    def unwritten(self, header: Header, *, maybe_written: bool) -> Header:
        left = self.headers[(header.gid, header.generation)] = replace(
            header, state="uncertain" if maybe_written else "claimed"
        )
        return left


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    def send_message(self, content: Any, **kwargs: Any) -> None:
        self.sent.append((content, kwargs.get("visibility_timeout")))

    def create_queue(self, **kwargs: Any) -> None:
        return None


# -- the path under test ---------------------------------------------------------------------------
class Path:
    def __init__(self, *actions: str) -> None:
        self.records, self.ledger, self.groups = FakeRecords(), FakeLedger(), FakeGroups()
        self.now = NOW
        document = {
            "actions": ACTIONS,
            "rules": [{"name": "main", "created_at": "2025-01-01T00:00:00+00:00", "actions": list(actions)}],
        }
        self.rules: RuleSet = parse_rules(document, connections=["default"])
        self.priorities: list[int] = []
        self.router = Router(lambda: self.rules, self.ledger, self.groups, self.records_for, lambda: self.now)

    def records_for(self, connection: str, priority: int) -> FakeRecords:
        assert connection == "default"
        self.priorities.append(priority)
        return self.records

    def route(self, document: dict[str, Any], delivery: str = "d1", deadline: Deadline | None = None) -> Any:
        alert = prepare(parse_message(json.dumps(document).encode()))
        return self.router.route(alert, delivery, deadline or Deadline(60))

    def ops(self, document: dict[str, Any], delivery: str = "d1") -> list[str]:
        return [o.operation for o in self.route(document, delivery).outcomes]

    def record(self, table: str = "incident") -> dict[str, Any]:
        (only,) = self.records.tables[table].values()
        return only


def alert(alert_id: int = 1, severity: str = "Major", sensor: str = "s1") -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": sensor, "id": 7},
        "alert": {
            "id": alert_id,
            "time": 1763762400000,
            "title": "Port scan",
            "severity": severity,
            "engine": "Anomaly",
        },
    }


def status(alert_id: int = 1) -> dict[str, Any]:
    return {"schema": SCHEMA, "kind": "alert_status", "sensor": {"name": "s1", "id": 7}, "alert": {"id": alert_id}}


# -- new, repeat, reopen, recreate ----------------------------------------------------------------
def test_a_new_alert_gets_one_record_at_its_severity() -> None:
    path = Path("incident")
    assert path.ops(alert(severity="Critical")) == ["created"]
    assert path.record()["correlation_id"] == "dfiot:alert:7:1:incident"
    assert path.records.calls == ["create"] and set(path.priorities) == {4}
    assert path.ops(alert(severity="Critical")) == ["duplicate"]  # the same delivery again: no call
    assert path.records.calls == ["create"]


def test_a_repeat_is_a_numbered_work_note() -> None:
    path = Path("incident")
    path.ops(alert())
    assert path.ops(alert(), "d2") == ["work_note"]
    assert path.record()["notes"] == [
        "Seen again by Defender for IoT (occurrence 2) at 2025-11-21 22:00:00 UTC: Port scan"
    ]


def test_a_failed_note_takes_its_occurrence_back() -> None:
    path = Path("incident")
    path.ops(alert())
    path.records.fail = ConnectionFailedError("down", request_sent=True)
    with pytest.raises(ConnectionFailedError):
        path.ops(alert(), "d2")
    (entry,) = path.ledger.entries("alert:7:1")
    assert (entry.seen, entry.deliveries) == (1, ("d1",))


@pytest.mark.parametrize(("table", "action", "closed"), [("incident", "incident", "7"), ("sn_si_incident", "soc", "3")])
def test_a_repeat_of_a_closed_record_makes_the_next_generation(table: str, action: str, closed: str) -> None:
    path = Path(action)
    path.ops(alert())
    path.record(table)["state"] = closed
    assert path.ops(alert(), "d2") == ["recreated"]
    assert sorted(r["correlation_id"] for r in path.records.tables[table].values()) == [
        f"dfiot:alert:7:1:{action}",
        f"dfiot:alert:7:1:{action}:1",
    ]


def test_a_repeat_of_a_closed_record_reopens_it_when_the_action_says_so() -> None:
    path = Path("reopen")
    path.ops(alert())
    (entry,) = path.ledger.entries("alert:7:1")
    path.ledger.rows[("alert:7:1", "reopen")] = replace(entry, resolved=True, written_back="closed")
    path.record()["state"] = "6"
    assert path.ops(alert(), "d2") == ["reopened"]
    assert path.record()["state"] == "2" and path.record()["notes"][0].startswith("Re-opened. Seen again")
    (entry,) = path.ledger.entries("alert:7:1")
    assert (entry.resolved, entry.written_back) == (False, "")  # the loop with Defender starts again


def test_a_record_deleted_in_servicenow_is_recreated_even_when_the_action_reopens() -> None:
    path = Path("reopen")
    path.ops(alert())
    path.records.tables["incident"].clear()
    assert path.ops(alert(), "d2") == ["recreated"]


# -- claims: busy, recovery, a failed write -----------------------------------------------------
def test_a_claim_held_by_another_worker_defers_briefly() -> None:
    path = Path("incident")
    path.ledger.claim("alert:7:1", "incident", "x")
    with pytest.raises(Exception, match="another worker is writing") as raised:
        path.ops(alert())
    assert getattr(raised.value, "retry_after", None) == 5.0


def test_an_uncertain_write_is_recovered_by_correlation_id_not_written_twice() -> None:
    path = Path("incident")
    path.records.fail = ConnectionFailedError("read timeout", request_sent=True, timed_out=True)
    with pytest.raises(ConnectionFailedError):
        path.ops(alert())
    assert path.ledger.entries("alert:7:1")[0].state == "uncertain"
    path.records.create("incident", {"correlation_id": "dfiot:alert:7:1:incident"})  # the lost write did land
    assert path.ops(alert(), "d2") == ["recovered"]
    assert len(path.records.tables["incident"]) == 1


def test_a_write_that_never_left_releases_its_claim() -> None:
    path = Path("incident")
    path.records.fail = ConnectionFailedError("connect timeout", request_sent=False, timed_out=True)
    with pytest.raises(ConnectionFailedError):
        path.ops(alert())
    assert path.ledger.entries("alert:7:1") == []


# -- resolve, filter, deadline -------------------------------------------------------------------
def test_an_alert_handled_in_defender_resolves_each_open_record_once() -> None:
    path = Path("incident", "soc")
    path.ops(alert())
    assert path.ops(status()) == ["resolved", "resolved"]
    assert (path.record("incident")["state"], path.record("sn_si_incident")["state"]) == ("6", "3")
    assert path.route(status()).status == "filtered"


def test_a_record_resolved_or_written_back_is_not_resolved_again() -> None:
    path = Path("incident", "soc")
    path.ops(alert())
    path.record("incident")["state"] = "8"  # canceled by an analyst
    soc = next(e for e in path.ledger.entries("alert:7:1") if e.action == "soc")
    path.ledger.rows[("alert:7:1", "soc")] = replace(soc, written_back="closed")
    result = path.route(status())
    assert (result.status, result.outcomes) == ("filtered", [])
    assert all(e.resolved for e in path.ledger.entries("alert:7:1"))
    assert "resolve" not in path.records.calls


def test_an_alert_no_rule_selects_is_filtered() -> None:
    path = Path("incident")
    path.rules = parse_rules({"actions": ACTIONS, "rules": []}, connections=["default"])
    result = path.route(alert())
    assert (result.status, result.reason) == ("filtered", "no rules")


def test_past_the_run_time_the_other_actions_follow_in_a_redelivery() -> None:
    path = Path("incident", "soc")
    with pytest.raises(Exception, match="run time is spent after 1 of 2 actions"):
        path.route(alert(), deadline=Deadline(0))
    assert path.ops(alert()) == ["duplicate", "created"]  # the redelivery: the first is written already


# -- groups ----------------------------------------------------------------------------------------
def test_a_group_opens_one_record_and_accounts_the_rest() -> None:
    path = Path("grouped")
    assert path.ops(alert(1)) == ["group_opened"]
    assert path.ops(alert(2)) == ["grouped"]
    assert path.ops(alert(2), "d2") == ["duplicate"]
    assert path.record()["correlation_id"].startswith("dfiot:group:")
    path.now = NOW + timedelta(minutes=61)  # the window is over: the next alert opens the next generation
    assert path.ops(alert(3)) == ["group_opened"]
    assert len(path.records.tables["incident"]) == 2


def test_a_group_record_that_cannot_be_written_is_left_to_the_notes_timer() -> None:
    path = Path("grouped")
    path.records.fail = ConnectionFailedError("read timeout", request_sent=True, timed_out=True)
    assert path.ops(alert(1)) == ["grouped"]
    (header,) = path.groups.headers.values()
    assert header.state == "uncertain"


# -- defer and poison ------------------------------------------------------------------------------
def deferral() -> tuple[Deferral, FakeQueue, FakeQueue]:
    queue, poison = FakeQueue(), FakeQueue()
    settings = ForwardingSettings(retry_base_seconds=30, retry_max_seconds=900, max_age_hours=24)
    return Deferral(settings, queue, poison, lambda: NOW), queue, poison


def delivered(document: dict[str, Any], first_seen: datetime = NOW) -> tuple[PreparedAlert, Delivery]:
    body = json.dumps(document).encode()
    message = parse_message(body)
    return prepare(message), Delivery(body, "m1", first_seen, [])


def test_a_transient_failure_defers_with_its_history() -> None:
    settle, queue, poison = deferral()
    alert_, delivery = delivered(alert())
    result = settle.settle(alert_, delivery, ConnectionFailedError("down", request_sent=False))
    assert result is not None and (result.status, result.kind) == ("deferred", "servicenow_unavailable")
    ((content, delay),) = queue.sent
    assert poison.sent == [] and delay is not None and 24 <= delay <= 36
    history = parse_message(base64.b64decode(content)).delivery
    assert history["id"] == "m1" and [a["error"] for a in history["attempts"]] == ["HTTP call: down"]


def test_a_refusal_or_an_old_message_is_poisoned_and_the_unforeseen_raised() -> None:
    settle, queue, poison = deferral()
    alert_, delivery = delivered(alert())
    refused = settle.settle(alert_, delivery, PermanentError("no such field", status=400))
    assert refused is not None and (refused.status, refused.kind) == ("poisoned", "servicenow_refused")
    old_alert, old = delivered(alert(), first_seen=NOW - timedelta(hours=25))
    aged = settle.settle(old_alert, old, ConnectionFailedError("down", request_sent=False))
    assert aged is not None and (aged.status, aged.kind) == ("poisoned", "max_age")
    assert len(poison.sent) == 2 and queue.sent == []
    assert settle.settle(alert_, delivery, KeyError("a bug")) is None
