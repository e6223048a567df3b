"""The ServiceNow emulator's IRE refuses what ServiceNow documents it refuses, and answers as it publishes,
over real sockets through the product's client. Sources: ServiceNow/ServiceNowDocs (the IRE REST reference
``c_IdentifyReconcileAPI.md``, ``id-engine-error-messages.md``, ``ire.md``, the OT class model); the published
request and answer are in tests/fixtures/servicenow/ire-identifyreconcile.json."""

from __future__ import annotations

from typing import Any

import pytest

from shared.servicenow.ire import results
from tests.conftest import ClientFactory
from tests.support.fixtures import load, unpublished
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration
SOURCE = "MicrosoftDefenderForIoT"


def plc(key: str = "dev-1", name: str = "PLC-1", **extra: Any) -> dict[str, Any]:
    return {
        "className": "cmdb_ci_ot_plc",
        "sys_object_source_info": {"source_name": SOURCE, "source_native_key": key},
        "values": {"name": name},
        **extra,
    }


def errors(answer: dict[str, Any]) -> list[str]:
    return [e["error"] for item in answer["items"] for e in item.get("errors", [])]


@pytest.fixture
def ire(make_client: ClientFactory) -> Any:
    client, _ = make_client()
    return lambda payload, source=SOURCE: client.identify_reconcile(payload, data_source=source)


def test_the_answer_carries_only_what_the_published_answer_shows(ire: Any) -> None:
    published = load("servicenow", "ire-identifyreconcile")
    answer = ire(
        {
            "items": [plc(), {"className": "cmdb_ci_nids", "values": {"name": "s-1"}}],
            "relations": [{"parent": 1, "child": 0, "type": "Detects::Detected by"}],
        }
    )
    plain, enhanced = published.documents[1]["result"], published.documents[2]["result"]
    items = plain["items"] + enhanced["items"]
    assert unpublished(answer["items"], items, ["identificationAttempts[].attemptResult"]) == []
    assert unpublished(answer["relations"], plain["relations"]) == []
    assert set(answer) == set(plain)
    # The documented operations (the published examples show only UPDATE and INSERT_AS_PARTIAL).
    documented = {"INSERT", "UPDATE", "UPDATE_WITH_UPGRADE", "UPDATE_WITH_DOWNGRADE", "UPDATE_WITH_SWITCH", "DELETE"}
    assert {i["operation"] for i in answer["items"]} <= documented | {"NO_CHANGE"}


def test_a_lookup_the_rule_has_no_lookup_entry_for_is_refused(ire: Any, servicenow: ServiceNowEmulator) -> None:
    """cmdb_ci_ip_address and cmdb_ot_entity are no lookups of the OT rule (its are serial number and MAC)."""
    for lookup in ("cmdb_ci_ip_address", "cmdb_ot_entity"):
        answer = ire({"items": [plc(lookup=[{"className": lookup, "values": {"ip_address": "10.0.0.1"}}])]})
        assert errors(answer) == ["IDENTIFICATION_RULE_FOR_LOOKUP_MISSING"]
        assert "missing Lookup Rule for class [" + lookup + "]" in answer["items"][0]["errors"][0]["message"]
        assert answer["items"][0]["sysId"] == "Unknown"
    assert servicenow.store.all("cmdb_ci_ot_plc") == []


def test_the_ot_entity_is_a_related_entry_that_references_its_device(ire: Any, servicenow: ServiceNowEmulator) -> None:
    entity: dict[str, Any] = {
        "className": "cmdb_ot_entity",
        "values": {"ire_criterion_attribute": "dev-1", "purdue_level": "1"},
    }
    first = results(ire({"items": [plc(related=[entity])]}), 1)[0]
    assert first.ok and first.kind == "created"
    (row,) = servicenow.store.all("cmdb_ot_entity")
    assert row["ot_device"] == first.sys_id and row["purdue_level"] == "1"
    ire({"items": [plc(related=[{**entity, "values": {**entity["values"], "purdue_level": "2"}}])]})
    assert [r["purdue_level"] for r in servicenow.store.all("cmdb_ot_entity")] == ["2"]  # updated, not doubled


def test_correlation_id_is_no_identifier(ire: Any) -> None:
    """An item with neither a known source key nor the rule's criterion attributes is not identified."""
    ire({"items": [plc(values={"name": "PLC-1", "correlation_id": "dfiot-device:1"})]})
    answer = ire({"items": [{"className": "cmdb_ci_ot_plc", "values": {"correlation_id": "dfiot-device:1"}}]})
    assert errors(answer) == ["MISSING_MATCHING_ATTRIBUTES"]
    assert answer["items"][0]["sysId"] == "Unknown"


def test_an_item_found_by_its_source_key_needs_nothing_else(ire: Any) -> None:
    created = results(ire({"items": [plc()]}), 1)[0]
    again = ire({"items": [{**plc(), "values": {}}]})
    assert results(again, 1)[0].sys_id == created.sys_id
    assert again["items"][0]["identificationAttempts"][0]["attemptResult"] == "MATCHED"


def test_the_same_ci_twice_rejects_the_whole_payload(ire: Any, servicenow: ServiceNowEmulator) -> None:
    answer = ire({"items": [plc("dev-1"), plc("dev-2", name="PLC-2"), plc("dev-1")]})
    assert errors(answer) == ["DUPLICATE_PAYLOAD_RECORDS"] * 3
    assert "(index 0 and 2)" in answer["items"][0]["errors"][0]["message"]
    assert servicenow.store.all("cmdb_ci_ot_plc") == []  # nothing committed


def test_a_reference_field_takes_a_sys_id_not_a_name(ire: Any, servicenow: ServiceNowEmulator) -> None:
    answer = ire({"items": [plc(values={"name": "PLC-1", "manufacturer": "Siemens"})]})
    assert errors(answer) == ["INVALID_INPUT_DATA"]
    assert "No record with sys_id [Siemens] exist in table [core_company]" in answer["items"][0]["errors"][0]["message"]
    company = servicenow.store.insert("core_company", {"name": "Siemens", "manufacturer": "true"}, "admin")
    assert results(ire({"items": [plc(values={"name": "PLC-1", "manufacturer": company["sys_id"]})]}), 1)[0].ok


def test_operations_for_a_class_change(ire: Any, servicenow: ServiceNowEmulator) -> None:
    def as_class(name: str) -> dict[str, Any]:
        return {**plc(), "className": name}

    assert results(ire({"items": [as_class("cmdb_ci_ot")]}), 1)[0].operation == "INSERT"
    assert ire({"items": [as_class("cmdb_ci_ot_plc")]})["items"][0]["operation"] == "UPDATE_WITH_UPGRADE"
    assert ire({"items": [as_class("cmdb_ci_ot_rtu")]})["items"][0]["operation"] == "UPDATE_WITH_SWITCH"
    assert ire({"items": [as_class("cmdb_ci_ot_control")]})["items"][0]["operation"] == "UPDATE_WITH_DOWNGRADE"
    assert ire({"items": [as_class("cmdb_ci_ot_control")]})["items"][0]["operation"] == "NO_CHANGE"
    (row,) = servicenow.store.all("cmdb_ci_ot_control")
    assert row["sys_class_name"] == "cmdb_ci_ot_control"
    assert row["discovery_source"] == SOURCE and row["last_discovered"]


def test_the_class_tree_is_servicenows(servicenow: ServiceNowEmulator) -> None:
    from tools.emulators.servicenow.ire import ancestors

    assert ancestors("cmdb_ci_ot_plc")[:3] == ["cmdb_ci_ot_plc", "cmdb_ci_ot_control", "cmdb_ci_ot"]
    assert ancestors("cmdb_ci_ot_hmi")[:3] == ["cmdb_ci_ot_hmi", "cmdb_ci_ot_supervisory", "cmdb_ci_ot"]


def test_every_identified_item_is_marked_discovered_even_unchanged(ire: Any, servicenow: ServiceNowEmulator) -> None:
    ire({"items": [plc()]})
    before = servicenow.store.all("cmdb_ci_ot_plc")[0]["last_discovered"]
    servicenow.clock_offset += 60
    assert ire({"items": [plc()]})["items"][0]["operation"] == "NO_CHANGE"
    assert servicenow.store.all("cmdb_ci_ot_plc")[0]["last_discovered"] > before


def test_unknown_relation_types_and_data_sources_are_invalid_input(ire: Any) -> None:
    answer = ire(
        {
            "items": [plc(), plc("dev-2", name="PLC-2")],
            "relations": [{"parent": 0, "child": 1, "type": "Feeds::Fed by"}],
        }
    )
    assert [e["error"] for e in answer["relations"][0]["errors"]] == ["INVALID_INPUT_DATA"]
    assert "No such relationship with name [Feeds::Fed by]" in answer["relations"][0]["errors"][0]["message"]
    other = ire({"items": [plc()]}, source="NotAChoice")
    assert (
        errors(other) == ["INVALID_INPUT_DATA"]
        and "invalid data source [NotAChoice]" in other["items"][0]["errors"][0]["message"]
    )


def test_a_payload_without_a_data_source_goes_to_incomplete_payloads(ire: Any, servicenow: ServiceNowEmulator) -> None:
    answer = ire({"items": [plc()]}, source="")
    assert errors(answer) == ["INVALID_INPUT_DATA"]
    assert len(servicenow.store.all("cmdb_ire_incomplete_payloads")) == 1
    assert servicenow.store.all("cmdb_ci_ot_plc") == []


def test_an_ip_address_is_a_ci_its_device_owns(ire: Any, servicenow: ServiceNowEmulator) -> None:
    address = {
        "className": "cmdb_ci_ip_address",
        "sys_object_source_info": {"source_name": SOURCE, "source_native_key": "ip:dev-1:10.0.0.5"},
        "values": {"name": "10.0.0.5", "ip_address": "10.0.0.5"},
    }
    alone = ire({"items": [plc(), address]})
    assert [e["error"] for e in alone["items"][1].get("errors", [])] == ["MISSING_DEPENDENCY"]
    owned = ire({"items": [plc(), address], "relations": [{"parent": 0, "child": 1, "type": "Owns::Owned by"}]})
    device, ip = results(owned, 2)
    assert device.ok and ip.ok and ip.kind == "created"
    assert servicenow.store.all("cmdb_ci_ip_address")[0]["owned_by_cmdb_ci"] == device.sys_id


def test_answers_are_paired_by_their_input_indices_not_their_order(ire: Any, servicenow: ServiceNowEmulator) -> None:
    servicenow.ire.shuffle = True
    answer = ire({"items": [plc(f"dev-{i}", name=f"PLC-{i}") for i in range(20)]})
    assert [i["inputIndices"][0] for i in answer["items"]] != list(range(20))  # really shuffled
    paired = results(answer, 20)
    names = {r["sys_id"]: r["name"] for r in servicenow.store.all("cmdb_ci_ot_plc")}
    assert [names[r.sys_id] for r in paired] == [f"PLC-{i}" for i in range(20)]


def test_the_emulators_class_tree_and_the_class_map_are_servicenows_ot_model() -> None:
    from shared.devices.cmdb import DEFAULT_CLASS_MAP
    from tools.emulators.servicenow.ire import PARENT

    published = {d["class"]: d["extends"] for d in load("servicenow", "ot-class-model").documents}
    assert {name: PARENT.get(name) for name in published} == published
    assert set(DEFAULT_CLASS_MAP.values()) <= set(published)  # the sync writes only classes ServiceNow has
