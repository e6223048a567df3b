"""What a new record takes from the asset index: which device is its CI, per action; the others; the values."""

from __future__ import annotations

import json
from typing import Any

from shared.alerting.assets import AssetLookup, asset_fields, sighting_of
from shared.alerting.records import fields_for, prepare
from shared.alerting.rules import Action, parse_rules
from shared.assets.index import AssetDirectory, IndexWriter
from shared.assets.model import Asset
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from tests.unit.test_assets import MemoryTable, device


def action(**options: Any) -> Action:
    raw = {"name": "a", "connection": "default", "report": "incident", **options}
    return parse_rules({"actions": [raw], "rules": []}).actions["a"]


def message(origin: dict[str, Any] | None = None, **alert: Any) -> Any:
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": "s", "site": "Plant A", "zone": "Line 3"},
        "alert": {"id": 1, "time": 1763762400000, "title": "Scan", "severity": "Minor", "engine": "Anomaly", **alert},
    }
    if origin is not None:
        document["origin"] = {"source": "line-1", "ref": "r", **origin}
    return parse_message(json.dumps(document).encode())


def lookup() -> AssetLookup:
    table = MemoryTable()
    writer = IndexWriter(table)
    writer.put(Asset.of("line-1", device("4", "10.1.0.5", name="EWS-4"), "a" * 32, "cmdb_ci_ot_ews"))
    writer.put(Asset.of("line-1", device("8", "10.1.0.9", name="PLC-8"), "b" * 32, "cmdb_ci_ot_plc"))
    writer.flush()
    return AssetLookup(AssetDirectory(table), {"line-1": "line-1"})


def link(asset: Asset) -> str:
    return f"CI: {asset.sys_id}"


def test_each_action_takes_its_role_and_falls_back_to_the_only_device_named() -> None:
    found = lookup().find(message({"devices": {"source": "4", "destination": "8"}}))
    assert found is not None
    assert found.configuration_item(action()).name == "PLC-8"  # type: ignore[union-attr]
    assert found.configuration_item(action(configuration_item="source")).name == "EWS-4"  # type: ignore[union-attr]
    assert found.affected(action()) == ("a" * 32,)
    scan = lookup().find(message({"devices": {"source": "4"}}))  # a scan names its source only
    assert scan is not None and scan.configuration_item(action()).name == "EWS-4"  # type: ignore[union-attr]
    gone = lookup().find(message({"devices": {"source": "4", "destination": "99"}}))
    assert gone is not None and gone.configuration_item(action()) is None  # not the other device instead


def test_the_fields_the_placeholders_and_the_impact() -> None:
    alert = prepare(message({"devices": {"source": "4", "destination": "8"}}))
    chosen = action(
        short_description="{title} on {ci} ({ci_class}, {criticality})", impact_from_criticality={"HIGH": 1}
    )
    found = lookup().find(alert.message)
    assert found is not None
    fields = fields_for(alert, chosen, 0, asset_fields(found, chosen, alert.values["details"], link, count=False))
    assert fields["cmdb_ci"] == "b" * 32 and fields["impact"] == "1" and fields["urgency"] == "2"
    assert fields["short_description"] == "Scan on PLC-8 (cmdb_ci_ot_plc, High)"
    assert (
        "Assets (from the CMDB when this record was written):\nSource: EWS-4 (cmdb_ci_ot_ews)" in fields["description"]
    )
    assert "  CI: " + "b" * 32 in fields["description"]


def test_a_message_naming_no_device_is_not_looked_up_and_a_sender_s_device_numbers_are_not_used() -> None:
    assert sighting_of(message(), {}) is None
    sender = sighting_of(message(sourceDevice=4, destinationDevice=8), {})
    assert sender is None  # a sensor-side sender's own numbers: no lookup by them
    by_address = sighting_of(message(destinationDeviceAddress="10.1.0.9"), {})
    assert by_address is not None and (by_address.scope, by_address.zone) == ("", "Line 3")
    mapped = sighting_of(message({"source": "console", "devices": {"destination": "8"}}), {"console": ""})
    assert mapped is not None and mapped.scope == ""  # the legacy console's unscoped rows
