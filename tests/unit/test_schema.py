"""The published JSON Schema and the parser agree on what a valid message is."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from shared.contract.fields import InvalidMessageError
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from tests.conftest import ROOT

PUBLISHED = json.loads((ROOT / "schemas" / "alert-message.v1.json").read_text())
ALERT = {
    "id": 1,
    "time": 1763762400000,
    "title": "Illegal MODBUS Operation",
    "severity": "Major",
    "engine": "Protocol Violation",
    "remediationSteps": ["x"],
    "additionalInformation": None,
}
VALID = [
    {"schema": SCHEMA, "kind": "alert", "sensor": {"name": "s", "id": 3}, "alert": ALERT, "protocol": "MODBUS"},
    {"schema": SCHEMA, "kind": "alert", "alert": {**ALERT, "id": "1-1594550943000", "sensorName": "c"}},
    {"schema": SCHEMA, "kind": "system", "sensor": {"name": "s"}, "system": {"status": "online", "time": 1}},
    {
        "schema": SCHEMA,
        "kind": "alert_status",
        "sensor": {"name": "s"},
        "alert": {"id": 1, "handled": True},
        "resolution": {"action": "handleAndLearn"},
    },
    {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s"},
        "alert": ALERT,
        "origin": {"source": "plant", "ref": "1", "devices": {"source": "plant:7", "destination": 9, "related": []}},
    },
]
INVALID = [
    {"schema": SCHEMA, "kind": "alert", "sensor": {"name": "s"}, "alert": {**ALERT, "severity": "Severe"}},
    {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s"},
        "alert": {k: v for k, v in ALERT.items() if k != "title"},
    },
    {"schema": SCHEMA, "kind": "alert", "alert": ALERT},
    {"schema": SCHEMA, "kind": "system", "sensor": {"name": "s"}, "system": {"status": "rebooting", "time": 1}},
    {"schema": "v0", "kind": "alert", "sensor": {"name": "s"}, "alert": ALERT},
    {"schema": SCHEMA, "kind": "alert_status", "sensor": {"name": "s"}, "alert": {"id": 1, "handled": False}},
    {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s"},
        "alert": ALERT,
        "origin": {"source": "cloud", "ref": "1", "devices": {"related": "dev-1"}},
    },
    {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s"},
        "alert": ALERT,
        "origin": {"source": "cloud", "ref": "1", "devices": {"source": ""}},
    },
]


def test_schema_is_itself_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(PUBLISHED)


@pytest.mark.parametrize("document", VALID)
def test_valid_for_both(document: dict[str, Any]) -> None:
    jsonschema.validate(document, PUBLISHED)
    parse_message(json.dumps(document).encode())


@pytest.mark.parametrize("document", INVALID)
def test_invalid_for_both(document: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, PUBLISHED)
    with pytest.raises(InvalidMessageError):
        parse_message(json.dumps(document).encode())


RULES_SCHEMA = json.loads((ROOT / "schemas" / "forwarding-rules.v1.json").read_text())
GOOD_RULES = {
    "version": 1,
    "actions": [
        {
            "name": "incident",
            "connection": "default",
            "report": "incident",
            "severity_map": {"Critical": {"impact": 1, "urgency": 1}},
            "fields": {"assignment_group": "OT"},
            "group": {"key": "{sensor}:{title}", "window_minutes": 30},
            "configuration_item": "source",
            "affected_cis": True,
            "impact_from_criticality": {"High": 1, "Low": 3},
        },
        {"name": "soc", "connection": "default", "report": "full", "field_map": {"u_sensor": "{sensor}"}},
    ],
    "rules": [
        {
            "name": "major",
            "minimal_severity": "Major",
            "protocols": ["MODBUS"],
            "engines": "all",
            "created_at": "2025-01-01T00:00:00+00:00",
            "actions": ["incident", "soc"],
        }
    ],
}
BAD_RULES = [
    {**GOOD_RULES, "extra": 1},
    {
        **GOOD_RULES,
        "actions": [{"name": "x", "connection": "default", "report": "incident", "group": {"window_minutes": 5}}],
    },
    {**GOOD_RULES, "actions": [{"name": "x", "connection": "default", "report": "email"}]},
    {
        **GOOD_RULES,
        "actions": [{"name": "x", "connection": "default", "report": "incident", "configuration_item": "x"}],
    },
    {
        **GOOD_RULES,
        "actions": [
            {"name": "x", "connection": "default", "report": "incident", "impact_from_criticality": {"High": 5}}
        ],
    },
    {
        **GOOD_RULES,
        "rules": [
            {
                "name": "r",
                "minimal_severity": "Huge",
                "actions": ["incident"],
                "created_at": "2025-01-01T00:00:00+00:00",
            }
        ],
    },
    {
        **GOOD_RULES,
        "rules": [
            {"name": "r", "protocols": "some", "actions": ["incident"], "created_at": "2025-01-01T00:00:00+00:00"}
        ],
    },
]


def test_rules_schema_agrees_with_the_parser() -> None:
    from shared.alerting.rules import RulesError, parse_rules

    jsonschema.Draft202012Validator.check_schema(RULES_SCHEMA)
    jsonschema.validate(GOOD_RULES, RULES_SCHEMA)
    parse_rules(GOOD_RULES)
    for document in BAD_RULES:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, RULES_SCHEMA)
        with pytest.raises(RulesError):
            parse_rules(document)
