"""Fuzzing with hypothesis: the message parser, the rule engine and the encoded-query builder.

Every input is either processed or rejected with a reason (never an unhandled exception), and no
generated value changes the meaning of a ServiceNow query. The query side is checked against the
emulator's encoded-query parser, which follows ServiceNow's grammar (``^``, ``^OR``, ``^NQ``, ``^^``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.alerting.records import CORRELATION_LIMIT, correlation_id, record_values
from shared.alerting.rules import RulesError, evaluate, load_document, parse_rules
from shared.contract.fields import InvalidMessageError
from shared.contract.model import SCHEMA, AlertMessage
from shared.contract.parse import parse_message
from shared.servicenow.query import EncodedQuery, QueryValueError
from tools.emulators.servicenow.query import Condition, parse

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)

VALID_ALERT: dict[str, Any] = {
    "schema": SCHEMA,
    "kind": "alert",
    "sensor": {"name": "sensor-1", "id": 7, "site": "Plant", "zone": "Line 1"},
    "protocol": "Modbus",
    "alert": {
        "id": 42,
        "time": 1763762400000,
        "title": "Unauthorized PLC Programming",
        "severity": "Critical",
        "engine": "Policy Violation",
        "message": "PLC program changed",
        "sourceDevice": 3,
        "destinationDevice": 4,
    },
}
RULES: dict[str, Any] = {
    "actions": [
        {"name": "incident", "connection": "default", "report": "incident"},
        {"name": "full", "connection": "default", "report": "full"},
    ],
    "rules": [
        {
            "name": "major",
            "minimal_severity": "Major",
            "protocols": ["Modbus", "DNP3"],
            "engines": ["Policy Violation", "Protocol Violation"],
            "created_at": "2025-01-01T00:00:00+00:00",
            "actions": ["incident", "full"],
        },
        {
            "name": "system",
            "system_notifications": True,
            "alert_notifications": False,
            "created_at": "2025-01-01T00:00:00+00:00",
            "actions": ["incident"],
        },
    ],
}


def mutated(document: dict[str, Any], draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """The document with some fields replaced by arbitrary JSON, some removed and some added."""
    result: dict[str, Any] = {}
    for key, value in document.items():
        choice = draw(st.integers(0, 5))
        if choice == 0:
            continue  # removed
        if choice == 1:
            result[key] = draw(json_values)
        elif isinstance(value, dict) and depth < 2:
            result[key] = mutated(value, draw, depth + 1)
        else:
            result[key] = value
    if draw(st.booleans()):
        result[draw(st.text(max_size=10))] = draw(json_values)
    return result


@st.composite
def near_valid_alerts(draw: st.DrawFn) -> bytes:
    return json.dumps(mutated(VALID_ALERT, draw)).encode()


@st.composite
def near_valid_rules(draw: st.DrawFn) -> dict[str, Any]:
    document = mutated(RULES, draw)
    for key in ("actions", "rules"):
        if isinstance(document.get(key), list) and draw(st.booleans()):
            document[key] = [mutated(item, draw) if isinstance(item, dict) else item for item in document[key]]
    return document


def parsed_or_reason(body: bytes) -> AlertMessage | None:
    try:
        return parse_message(body)
    except InvalidMessageError as exc:
        assert exc.reason.strip() and ":" in exc.reason, f"reason without a field: {exc.reason!r}"
        return None


# -- the message parser --------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_are_processed_or_rejected_with_a_reason(body: bytes) -> None:
    parsed_or_reason(body)


@FUZZ
@given(json_values)
def test_any_json_is_processed_or_rejected_with_a_reason(document: Any) -> None:
    parsed_or_reason(json.dumps(document).encode())


@FUZZ
@given(near_valid_alerts())
def test_near_valid_alerts_become_records_or_reasons(body: bytes) -> None:
    message = parsed_or_reason(body)
    if message is None:
        return
    rules = parse_rules(RULES)
    decision = evaluate(rules, message)
    for action in rules.actions.values():
        values = record_values(message, action)
        assert len(values["short_description"]) <= 160
        assert len(correlation_id(message, action)) <= CORRELATION_LIMIT
    assert {a.name for a in decision.actions} <= set(rules.actions)


def test_deep_nesting_is_a_reason_not_a_crash() -> None:
    with pytest.raises(InvalidMessageError, match="nested too deeply"):
        parse_message(b"[" * 30_000)
    with pytest.raises(ValueError, match=r"rules\.json: nested too deeply"):
        load_document("[" * 30_000, "rules.json")


# -- the rule engine -----------------------------------------------------------------------------
@FUZZ
@given(json_values)
def test_any_rules_document_is_accepted_or_every_problem_listed(document: Any) -> None:
    try:
        parse_rules(document, connections=["default"])
    except RulesError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)


@FUZZ
@given(near_valid_rules(), near_valid_alerts())
def test_near_valid_rules_evaluate_any_message(document: dict[str, Any], body: bytes) -> None:
    try:
        rules = parse_rules(document, connections=["default"])
    except RulesError as exc:
        assert exc.errors
        return
    message = parsed_or_reason(body)
    if message is not None:
        decision = evaluate(rules, message)
        assert {a.name for a in decision.actions} <= set(rules.actions)


@FUZZ
@given(st.text(max_size=300))
def test_any_rules_text_loads_or_names_the_source(text: str) -> None:
    try:
        load_document(text, "rules.yaml")
    except ValueError as exc:
        assert str(exc).startswith("rules.yaml: ")


# -- the encoded-query builder -------------------------------------------------------------------
def conditions(query: EncodedQuery) -> list[list[list[Condition]]]:
    return parse(str(query)).groups


@FUZZ
@given(st.text(max_size=60), st.text(max_size=60))
def test_no_value_changes_the_query(first: str, second: str) -> None:
    try:
        query = EncodedQuery().eq("correlation_id", first).where("short_description", "LIKE", second)
        query = query.where("active", "=", True).order_by("sys_created_on")
    except QueryValueError as exc:
        assert "javascript:" in str(exc)
        assert any(v.lstrip().lower().startswith("javascript:") for v in (first, second))
        return
    parsed = parse(str(query))
    assert parsed.groups == [
        [
            [Condition("correlation_id", "=", first)],
            [Condition("short_description", "LIKE", second)],
            [Condition("active", "=", "true")],
        ]
    ]
    assert parsed.order == [("sys_created_on", False)]


@FUZZ
@given(st.lists(st.text(max_size=30), min_size=1, max_size=8), st.text(max_size=30))
def test_no_list_value_changes_the_query(values: list[str], other: str) -> None:
    try:
        query = EncodedQuery().in_("correlation_id", values).or_where("number", "=", other)
    except QueryValueError as exc:
        assert any("," in v or v.lstrip().lower().startswith("javascript:") for v in [*values, other]), str(exc)
        return
    parsed = parse(str(query))
    assert parsed.groups == [[[Condition("correlation_id", "IN", ",".join(values)), Condition("number", "=", other)]]]
    assert parsed.groups[0][0][0].value.split(",") == values


@FUZZ
@given(st.text(max_size=40))
def test_field_names_are_checked_not_escaped(name: str) -> None:
    try:
        query = EncodedQuery().eq(name, "x")
    except QueryValueError:
        return
    assume(name)
    assert parse(str(query)).groups == [[[Condition(name, "=", "x")]]]


def test_the_fuzzed_clock_is_not_needed() -> None:
    # The rule engine compares created_at with the alert's own time, not the wall clock.
    message = parse_message(json.dumps(VALID_ALERT).encode())
    assert message.raised_at < datetime.now(UTC)
    assert evaluate(parse_rules(RULES), message).actions
