"""The one source of ServiceNow record states agrees with ServiceNow's published codes, and every caller reads
it: the forwarder (repeats, resolving), the group notes timer, verify and the write-back's done states."""

from __future__ import annotations

from shared.alerting.rules import parse_rules
from shared.servicenow.records import INCIDENT, OTHER_TABLE, SECURITY_INCIDENT, table_of

# incident: 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled.
# sn_si_incident: 10 Draft, 16 Analysis, 18 Contain, 19 Eradicate, 20 Recover, 100 Review, 3 Closed, 7 Cancelled.
PUBLISHED = {
    "incident": {"1", "2", "3", "6", "7", "8"},
    "sn_si_incident": {"10", "16", "18", "19", "20", "100", "3", "7"},
}


def test_each_table_s_states_are_its_published_codes() -> None:
    for table in (INCIDENT, SECURITY_INCIDENT):
        known = table.open | table.ended | {table.resolved, table.reopened, *table.done}
        assert known == PUBLISHED[table.table]
        assert not table.open & table.ended and table.reopened in table.open and table.resolved in table.ended
        assert set(table.done) <= table.ended


def test_a_canceled_record_is_over_but_not_done() -> None:
    # Over: a repeat of its alert reopens it or makes a new record. Not done: the write-back leaves the alert open.
    assert INCIDENT.is_ended("8") and "8" not in INCIDENT.done
    assert SECURITY_INCIDENT.is_ended("7") and "7" not in SECURITY_INCIDENT.done
    assert INCIDENT.is_ended(None)  # deleted in ServiceNow


def test_any_other_table_reads_the_ended_states_of_both() -> None:
    assert table_of("u_ot_alert") is OTHER_TABLE
    assert OTHER_TABLE.ended == {"3", "6", "7", "8"} and OTHER_TABLE.done == ("6", "7")
    assert table_of("sn_si_incident").rated and not table_of("incident").rated


def test_an_action_s_done_states_default_to_its_table_s() -> None:
    actions = [
        {"name": "itsm", "connection": "c", "report": "incident"},
        {"name": "sir", "connection": "c", "report": "full", "table": "sn_si_incident"},
        {"name": "own", "connection": "c", "report": "full", "table": "u_x", "done_states": ["9"]},
    ]
    rules = parse_rules({"actions": actions, "rules": []})
    assert [rules.actions[n].done for n in ("itsm", "sir", "own")] == [("6", "7"), ("3",), ("9",)]
