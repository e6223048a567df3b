"""Record values: short descriptions within 160 characters, correlation ids within 100, severity maps."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.alerting.records import correlation_id, record_values, values
from shared.alerting.rules import parse_rules
from shared.alerting.templates import ELLIPSIS, PLACEHOLDERS, truncate
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message

RULES = parse_rules(
    {
        "actions": [
            {
                "name": "incident",
                "connection": "default",
                "report": "incident",
                "fields": {"category": "security"},
                "severity_map": {"Critical": {"impact": 1, "urgency": 1}},
            },
            {
                "name": "soc",
                "connection": "default",
                "report": "full",
                "field_map": {"short_description": "{title}", "description": "{details}", "u_sensor": "{sensor}"},
            },
        ],
        "rules": [],
    }
)


def message(**alert: Any) -> Any:
    base = {
        "id": 77,
        "time": 1763762400000,
        "title": "Unauthorized PLC Programming",
        "severity": "Critical",
        "engine": "Policy Violation",
        "message": "A device programmed the PLC.",
        "sourceDeviceAddress": "10.0.0.1",
        "destinationDeviceAddress": "10.0.0.2",
        "remediationSteps": ["Verify the engineering station"],
        "additionalInformation": {
            "description": "External Addresses",
            "information": ["170.60.50.201 over port BACnet (47808)"],
        },
    }
    document = {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "sensor-1", "id": 9, "url": "https://sensor-1.plant/"},
        "alert": {**base, **alert},
    }
    return parse_message(json.dumps(document).encode())


def test_incident_fields() -> None:
    record = record_values(message(), RULES.actions["incident"])
    assert record["short_description"] == "[Defender for IoT] Critical: Unauthorized PLC Programming (sensor-1)"
    assert (record["impact"], record["urgency"], record["category"]) == ("1", "1", "security")
    assert record["correlation_id"] == "dfiot:alert:9:77:incident"
    assert record["correlation_display"] == "Defender for IoT"
    for text in (
        "A device programmed the PLC.",
        "10.0.0.1",
        "10.0.0.2",
        "1. Verify the engineering station",
        "170.60.50.201 over port BACnet (47808)",
        "https://sensor-1.plant/",
    ):
        assert text in record["description"]


def test_full_report_uses_the_field_map() -> None:
    record = record_values(message(), RULES.actions["soc"])
    assert record["u_sensor"] == "sensor-1" and record["short_description"] == "Unauthorized PLC Programming"
    assert record["severity"] == "1" and "Policy Violation" in record["description"]


def test_long_ids_are_hashed_within_100_characters() -> None:
    long = correlation_id(message(id="x" * 200), RULES.actions["incident"])
    assert len(long) <= 100 and long.startswith("dfiot:sha256:")
    assert long == correlation_id(message(id="x" * 200), RULES.actions["incident"])
    assert correlation_id(message(), RULES.actions["incident"], generation=2).endswith(":incident:2")


def test_short_description_never_exceeds_160() -> None:
    record = record_values(message(title="Ä" * 400), RULES.actions["incident"])
    assert len(record["short_description"]) == 160 and record["short_description"].endswith(ELLIPSIS)


@given(st.text(min_size=0, max_size=400), st.integers(min_value=2, max_value=200))
def test_truncate_never_exceeds_and_never_splits_a_character(text: str, limit: int) -> None:
    result = truncate(text, limit)
    assert len(result) <= limit
    if result.endswith(ELLIPSIS) and result != text:
        kept = result[: -len(ELLIPSIS)]
        assert text.startswith(kept) or " ".join(text.split()).startswith(kept)


def test_truncate_keeps_combining_sequences_whole() -> None:
    text = "a" * 8 + "e\u0301" + "zzz"  # 'é' as e + combining acute at positions 8-9
    assert truncate(text, 10) == "a" * 8 + ELLIPSIS
    family = "ab" + "\U0001f468\u200d\U0001f469\u200d\U0001f467" + "cdef"
    assert "\u200d" not in truncate(family, 6)[-2:]


def test_every_placeholder_has_a_value_for_every_kind_of_message() -> None:
    system = parse_message(
        json.dumps(
            {"schema": SCHEMA, "kind": "system", "sensor": {"name": "s"}, "system": {"status": "offline", "time": 1}}
        ).encode()
    )
    status = parse_message(
        json.dumps(
            {
                "schema": SCHEMA,
                "kind": "alert_status",
                "sensor": {"name": "s"},
                "alert": {"id": 1, "handled": True},
                "resolution": {"action": "handleAndLearn", "by": "ot-analyst", "notes": "expected traffic"},
            }
        ).encode()
    )
    for each in (message(), system, status):
        assert set(values(each)) == PLACEHOLDERS
    assert (values(status)["resolution"], values(status)["handled_by"]) == ("handleAndLearn", "ot-analyst")


def test_close_notes_may_use_the_resolution_placeholders() -> None:
    template = "Closed in Defender: {resolution} by {handled_by} ({resolution_notes}) on {sensor}"
    document = {
        "actions": [{"name": "a", "connection": "default", "report": "incident", "close_notes": template}],
        "rules": [],
    }
    action = parse_rules(document).actions["a"]  # the default template's placeholders, in a user's template
    assert action.close_notes == template
