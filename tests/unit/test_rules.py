"""Forwarding rules: each of the seed's fields, creation-time semantics, and invalid documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.alerting.rules import RulesError, evaluate, parse_rules, stamp
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message

CREATED = "2025-01-01T00:00:00+00:00"
ACTIONS = [
    {"name": "incident", "connection": "default", "report": "incident"},
    {"name": "soc", "connection": "default", "report": "full"},
]


def ruleset(*rules: dict[str, Any]) -> Any:
    return parse_rules(
        {"actions": ACTIONS, "rules": [{"created_at": CREATED, "actions": ["incident"], **r} for r in rules]}
    )


def alert(
    severity: str = "Major",
    engine: str = "Protocol Violation",
    title: str = "Illegal MODBUS Operation",
    time: int = 1763762400000,
    **envelope: Any,
) -> Any:
    document = {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "sensor-1", "site": "Plant A", "zone": "Line 1"},
        "alert": {"id": 1, "time": time, "title": title, "severity": severity, "engine": engine},
        **envelope,
    }
    return parse_message(json.dumps(document).encode())


def system_message() -> Any:
    document = {
        "schema": SCHEMA,
        "kind": "system",
        "sensor": {"name": "sensor-1"},
        "system": {"status": "offline", "time": 1763762400000},
    }
    return parse_message(json.dumps(document).encode())


def names(rules: Any, message: Any) -> list[str]:
    return [a.name for a in evaluate(rules, message).actions]


@pytest.mark.parametrize(
    ("minimal", "severity", "forwarded"),
    [
        ("Major", "Critical", True),
        ("Major", "Major", True),
        ("Major", "Minor", False),
        ("Warning", "Warning", True),
    ],
)
def test_minimal_severity_is_that_level_and_above(minimal: str, severity: str, forwarded: bool) -> None:
    rules = ruleset({"name": "r", "minimal_severity": minimal})
    assert bool(names(rules, alert(severity=severity))) is forwarded


def test_protocols_from_sender_or_alert_text() -> None:
    rules = ruleset({"name": "r", "protocols": ["DNP3", "modbus"]})
    assert names(rules, alert(title="Illegal MODBUS Operation")) == ["incident"]
    assert names(rules, alert(title="Unauthorized S7 write")) == []
    assert names(rules, alert(title="Unauthorized write", protocol="DNP3")) == ["incident"]
    assert names(rules, alert(title="MODBUSX is not MODBUS-free")) == ["incident"]  # whole word 'MODBUS'
    assert names(rules, alert(title="MODBUSX only")) == []


def test_engines_all_or_list() -> None:
    assert names(ruleset({"name": "r", "engines": "all"}), alert(engine="Malware")) == ["incident"]
    rules = ruleset({"name": "r", "engines": ["Malware", "Anomaly"]})
    assert names(rules, alert(engine="MALWARE")) == ["incident"]
    assert names(rules, alert(engine="Operational")) == []


def test_system_and_alert_notification_switches() -> None:
    alerts_only = ruleset({"name": "r"})
    both = ruleset({"name": "r", "system_notifications": True})
    system_only = ruleset({"name": "r", "system_notifications": True, "alert_notifications": False})
    assert names(alerts_only, system_message()) == [] and names(alerts_only, alert()) == ["incident"]
    assert names(both, system_message()) == ["incident"] and names(both, alert()) == ["incident"]
    assert names(system_only, alert()) == [] and names(system_only, system_message()) == ["incident"]


def test_rule_acts_only_on_alerts_raised_after_it_was_created() -> None:
    rules = ruleset({"name": "r", "created_at": "2025-11-21T22:00:00+00:00"})
    assert names(rules, alert(time=1763762400000)) == []  # raised exactly at creation: not after
    assert names(rules, alert(time=1763762400001)) == ["incident"]


def test_sensor_site_zone_filters_and_enabled() -> None:
    assert names(ruleset({"name": "r", "sites": ["plant a"]}), alert()) == ["incident"]
    assert names(ruleset({"name": "r", "zones": ["Line 2"]}), alert()) == []
    assert names(ruleset({"name": "r", "sensors": ["sensor-2"]}), alert()) == []
    assert names(ruleset({"name": "r", "enabled": False}), alert()) == []


def test_two_rules_picking_one_action_yield_it_once() -> None:
    rules = ruleset({"name": "a"}, {"name": "b", "actions": ["incident", "soc"]})
    decision = evaluate(rules, alert())
    assert decision.rules == ("a", "b") and [a.name for a in decision.actions] == ["incident", "soc"]


def test_skip_reasons_are_reported() -> None:
    decision = evaluate(ruleset({"name": "high", "minimal_severity": "Critical"}), alert(severity="Minor"))
    assert decision.skipped == {"high": "severity Minor below Critical"}


def test_invalid_document_lists_every_error() -> None:
    document = {
        "actions": [
            {
                "name": "x",
                "connection": "nowhere",
                "report": "email",
                "colour": 1,
                "short_description": "{title} {secret.__class__}",
            }
        ],
        "rules": [
            {"name": "r1", "minimal_severity": "Huge", "actions": ["missing"], "protocols": "some"},
            {"name": "r1", "created_at": CREATED, "actions": ["x"], "alert_notifications": False},
        ],
    }
    with pytest.raises(RulesError) as info:
        parse_rules(document, connections=["default"])
    assert info.value.errors == [
        "actions[0].colour: unknown field (expected affected_cis, close_code, close_notes, configuration_item, "
        "connection, done_states, field_map, fields, group, impact_from_criticality, learn_close_codes, name, "
        "on_closed, report, severity_map, short_description, table, write_back)",
        "actions[0].connection: 'nowhere' is not in SERVICENOW_CONNECTIONS (default)",
        "actions[0].report: expected 'incident' or 'full'",
        "actions[0].short_description: placeholder {secret.__class__} must be a plain name, without format spec or "
        "conversion",
        "rules[0].created_at: missing; `rules apply` stamps it (a rule acts only on alerts raised after it)",
        "rules[0].minimal_severity: 'Huge' is not one of Warning, Minor, Major, Critical",
        "rules[0].actions: 'missing' is not defined under 'actions'",
        "rules[0].protocols: expected 'all' or a non-empty list of names",
        "rules[1]: alert_notifications and system_notifications are both off; the rule would never act",
    ]


def test_grouping_is_an_action_option_checked_like_a_template() -> None:
    action: dict[str, Any] = {"name": "g", "connection": "default", "report": "incident"}
    document: dict[str, Any] = {
        "actions": [{**action, "group": {"key": "{sensor}:{title}"}}],
        "rules": [{"name": "r", "created_at": CREATED, "actions": ["g"]}],
    }
    group = parse_rules(document).actions["g"].group
    assert group is not None and (group.key, group.window_minutes) == ("{sensor}:{title}", 60.0)
    bad = [
        ({"key": "{sensor}:{password}"}, "g.key: unknown placeholder(s) {password}"),
        ({"key": "{sensor}", "window_minutes": 0}, "g.window_minutes: expected a number of minutes from 1 to 10080"),
        ({"key": "{sensor}", "size": 3}, "g.size: unknown field (expected key, window_minutes)"),
        ("{sensor}", "g: expected an object with 'key'"),
    ]
    for raw, error in bad:
        broken = {**document, "actions": [{**action, "group": raw}]}
        with pytest.raises(RulesError) as info:
            parse_rules(broken)
        assert any(e.replace("actions[0].group", "g").startswith(error) for e in info.value.errors), info.value.errors


def test_the_asset_options_are_checked_each_with_one_line() -> None:
    action: dict[str, Any] = {"name": "a", "connection": "default", "report": "incident"}
    document: dict[str, Any] = {"actions": [action], "rules": [{"name": "r", "created_at": CREATED, "actions": ["a"]}]}
    plain = parse_rules(document).actions["a"]
    assert (plain.configuration_item, plain.affected_cis, dict(plain.impact_from_criticality)) == (
        "destination",
        False,
        {},
    )
    chosen = {**action, "configuration_item": "source", "affected_cis": True, "impact_from_criticality": {" High ": 1}}
    parsed = parse_rules({**document, "actions": [chosen]}).actions["a"]
    assert (parsed.configuration_item, parsed.affected_cis, dict(parsed.impact_from_criticality)) == (
        "source",
        True,
        {"high": 1},
    )
    bad: list[tuple[dict[str, Any], str]] = [
        (
            {"configuration_item": "both"},
            "actions[0].configuration_item: expected 'destination' or 'source', got 'both'",
        ),
        ({"affected_cis": "yes"}, "actions[0].affected_cis: expected true or false"),
        ({"impact_from_criticality": {"High": 4}}, "actions[0].impact_from_criticality: expected an object of"),
        ({"impact_from_criticality": {"High": True}}, "actions[0].impact_from_criticality: expected an object of"),
        ({"impact_from_criticality": ["High"]}, "actions[0].impact_from_criticality: expected an object of"),
        (
            {"short_description": "{title} on {ci_name}"},
            "actions[0].short_description: unknown placeholder(s) {ci_name}",
        ),
        ({"close_notes": "closed on {ci}"}, "actions[0].close_notes: {ci} known only when a new record is written"),
        ({"group": {"key": "{cves}"}}, "actions[0].group.key: {cves} known only when a new record is written"),
    ]
    for extra, error in bad:
        with pytest.raises(RulesError) as info:
            parse_rules({**document, "actions": [{**action, **extra}]})
        assert len(info.value.errors) == 1 and info.value.errors[0].startswith(error), info.value.errors
    fine = {**action, "short_description": "{title} on {ci} ({ci_class}, {purdue_level}, {criticality})"}
    assert parse_rules({**document, "actions": [{**fine, "field_map": {"description": "{assets} {cves}"}}]})


def test_stamp_keeps_known_creation_times() -> None:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    previous = {"rules": [{"name": "old", "created_at": CREATED}]}
    stamped = stamp({"rules": [{"name": "old"}, {"name": "new"}]}, previous, now)
    assert [r["created_at"] for r in stamped["rules"]] == [CREATED, now.isoformat()]


def test_the_rules_document_is_looked_at_no_more_often_than_the_check_interval(tmp_path: Path) -> None:
    from shared.alerting.rules_store import RulesSource
    from shared.alerting.settings import RulesLocation

    def document(name: str) -> str:
        action = {"name": "incident", "connection": "default", "report": "incident"}
        rule = {"name": name, "created_at": "2025-01-01T00:00:00+00:00", "actions": ["incident"]}
        return json.dumps({"actions": [action], "rules": [rule]})

    path = tmp_path / "rules.json"
    path.write_text(document("one"))
    now = [100.0]
    source = RulesSource(RulesLocation.parse(f"file:{path}"), None, ["default"], check_seconds=30, clock=lambda: now[0])
    assert [r.name for r in source.current().rules] == ["one"]
    path.unlink()  # gone: within the interval nobody looks, so nobody notices
    assert [r.name for r in source.current().rules] == ["one"]
    path.write_text(document("two") + " ")  # a new version
    now[0] += 31
    assert [r.name for r in source.current().rules] == ["two"]
