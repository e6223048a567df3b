"""Batch API (unserviced items are sent again, never dropped) and the IRE call."""

from __future__ import annotations

from typing import Any

import pytest

from shared.servicenow import BatchIncompleteError, BatchItem
from tests.conftest import ClientFactory
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration


def items(n: int) -> list[BatchItem]:
    return [BatchItem(str(i), "POST", "/api/now/table/incident", {"short_description": f"batch {i}"}) for i in range(n)]


def test_batch_runs_every_item(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    results = client.batch([*items(3), BatchItem("bad", "POST", "/api/now/table/nope", {"a": 1})])
    assert [results[str(i)].status for i in range(3)] == [201, 201, 201]
    assert results["0"].body["number"].startswith("INC")
    assert not results["bad"].ok and results["bad"].error is not None
    assert results["bad"].error.status == 400 and "Invalid table nope" in str(results["bad"].error)
    assert len(servicenow.store.all("incident")) == 3


def test_unserviced_items_are_sent_again_until_done(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    servicenow.batch_max_serviced = 2  # the instance's 30 s quota lets two items through per call
    results = client.batch(items(5))
    assert sorted(results) == ["0", "1", "2", "3", "4"]
    assert sorted(r["short_description"] for r in servicenow.store.all("incident")) == [f"batch {i}" for i in range(5)]
    assert servicenow.stats["batch"] == 3
    assert servicenow.stats["batch_items_unserviced"] == 3 + 1


def test_items_left_unserviced_raise_instead_of_vanishing(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, _ = make_client()
    client.batch_rounds = 2
    servicenow.batch_max_serviced = 1
    with pytest.raises(BatchIncompleteError) as info:
        client.batch(items(4))
    assert info.value.unserviced == ["2", "3"]
    assert sorted(info.value.results) == ["0", "1"]
    assert info.value.retryable


def test_identify_reconcile_inserts_then_finds_the_same_ci(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, _ = make_client()
    payload: dict[str, Any] = {
        "items": [
            {
                "className": "cmdb_ci_ot_plc",
                "values": {"name": "PLC-7", "correlation_id": "dev-7"},
                "lookup": [
                    {
                        "className": "cmdb_ci_network_adapter",
                        "values": {"name": "00:1d:9c:aa:bb:cc", "mac_address": "00:1d:9c:aa:bb:cc"},
                    }
                ],
            },
            {"className": "cmdb_ci_nids", "values": {"name": "sensor-1", "correlation_id": "sensor-1"}},
        ],
        "relations": [{"parent": 1, "child": 0, "type": "Detects::Detected by"}],
    }
    first = client.identify_reconcile(payload, data_source="ServiceNow")
    assert [i["operation"] for i in first["items"]] == ["INSERT", "INSERT"]
    assert first["relations"][0]["operation"] == "INSERT"
    again = client.identify_reconcile(payload, data_source="ServiceNow")
    assert [i["operation"] for i in again["items"]] == ["NO_CHANGE", "NO_CHANGE"]
    assert [i["sysId"] for i in again["items"]] == [i["sysId"] for i in first["items"]]
    assert again["relations"][0]["operation"] == "NO_CHANGE"
    # Renamed device, identified through its MAC address alone: updated, not duplicated.
    renamed = {
        "items": [
            {"className": "cmdb_ci_ot_plc", "values": {"name": "PLC-7b"}, "lookup": payload["items"][0]["lookup"]}
        ]
    }
    third = client.identify_reconcile(renamed, data_source="ServiceNow")
    assert third["items"][0]["operation"] == "UPDATE" and third["items"][0]["sysId"] == first["items"][0]["sysId"]
    assert [r["name"] for r in servicenow.store.all("cmdb_ci_ot_plc")] == ["PLC-7b"]
    assert len(servicenow.store.all("cmdb_ci_network_adapter")) == 1


def test_identify_reconcile_reports_missing_identifiers(
    servicenow: ServiceNowEmulator, make_client: ClientFactory
) -> None:
    client, _ = make_client()
    result = client.identify_reconcile(
        {"items": [{"className": "cmdb_ci_ot", "values": {"firmware_version": "4.2"}}]}, data_source="ServiceNow"
    )
    assert result["items"][0]["errors"][0]["error"] == "MISSING_MATCHING_ATTRIBUTES"
    assert servicenow.store.all("cmdb_ci_ot") == []
