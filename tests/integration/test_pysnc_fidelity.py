"""Fidelity: ServiceNow's own Python client, PySNC, unchanged, works against the emulator."""

from __future__ import annotations

import pytest
from pysnc import ServiceNowClient
from pysnc.auth import ServiceNowPasswordGrantFlow

from tests.conftest import SN_CLIENT_ID, SN_CLIENT_SECRET, SN_PASSWORD, SN_USER
from tools.emulators.servicenow import ServiceNowEmulator

pytestmark = pytest.mark.integration


def pysnc_client(servicenow: ServiceNowEmulator, oauth: bool = True) -> ServiceNowClient:
    auth = (
        ServiceNowPasswordGrantFlow(SN_USER, SN_PASSWORD, SN_CLIENT_ID, SN_CLIENT_SECRET)
        if oauth
        else (SN_USER, SN_PASSWORD)
    )
    return ServiceNowClient(servicenow.url, auth, verify=str(servicenow.ca_pem))


def test_oauth_password_flow_and_crud(servicenow: ServiceNowEmulator) -> None:
    client = pysnc_client(servicenow)
    assert servicenow.oauth.grants == {"password": 1}

    gr = client.GlideRecord("incident")
    gr.initialize()
    gr.short_description = "Unauthorized PLC programming"
    gr.impact = "1"
    gr.urgency = "1"
    sys_id = gr.insert()
    assert sys_id is not None

    found = client.GlideRecord("incident")
    assert found.get(str(sys_id))
    assert found.short_description == "Unauthorized PLC programming"
    assert found.priority == "1"
    assert found.get_value("number").startswith("INC")

    found.short_description = "Unauthorized PLC programming (seen again)"
    found.update()
    assert servicenow.store.get("incident", str(sys_id))["short_description"].endswith("(seen again)")

    found.delete()
    assert servicenow.store.all("incident") == []


def test_glide_record_encoded_query_and_pagination(servicenow: ServiceNowEmulator) -> None:
    for i in range(23):
        servicenow.store.insert("incident", {"short_description": f"MODBUS alert {i}", "category": "ot"}, "seed")
    for i in range(4):
        servicenow.store.insert("incident", {"short_description": f"BACnet alert {i}", "category": "ot"}, "seed")
    servicenow.store.insert("incident", {"short_description": "MODBUS on IT", "category": "it"}, "seed")

    client = pysnc_client(servicenow)
    gr = client.GlideRecord("incident", batch_size=5)
    gr.add_encoded_query("category=ot^short_descriptionSTARTSWITHMODBUS")
    gr.order_by("short_description")
    gr.query()
    seen = [record.short_description for record in gr]
    assert len(seen) == 23 and len(set(seen)) == 23
    assert gr.get_row_count() == 23
    pages = [q for q in servicenow.queries if q["table"] == "incident"]
    assert len(pages) == 5  # 23 rows in pages of 5


def test_glide_record_or_condition_and_basic_auth(servicenow: ServiceNowEmulator) -> None:
    servicenow.store.insert("incident", {"short_description": "a", "state": "1"}, "seed")
    servicenow.store.insert("incident", {"short_description": "b", "state": "2"}, "seed")
    servicenow.store.insert(
        "incident", {"short_description": "c", "state": "6", "close_code": "x", "close_notes": "y"}, "seed"
    )
    client = pysnc_client(servicenow, oauth=False)
    gr = client.GlideRecord("incident")
    condition = gr.add_query("state", "1")
    condition.add_or_condition("state", "2")
    gr.query()
    assert sorted(r.short_description for r in gr) == ["a", "b"]


def test_batch_update_and_delete_multiple(servicenow: ServiceNowEmulator) -> None:
    """PySNC's Batch API calls: sub-requests carry only Content-Type (no Accept), as ServiceNow allows."""
    for i in range(7):
        servicenow.store.insert("incident", {"short_description": f"alert {i}", "category": "ot"}, "seed")
    servicenow.store.insert("incident", {"short_description": "kept", "category": "it"}, "seed")
    client = pysnc_client(servicenow)
    gr = client.GlideRecord("incident")
    gr.add_query("category", "ot")
    gr.query()
    for record in gr:
        record.urgency = "2"
    assert gr.update_multiple()
    assert sorted(r["urgency"] for r in servicenow.store.all("incident") if r["category"] == "ot") == ["2"] * 7
    gone = client.GlideRecord("incident")
    gone.add_query("category", "ot")
    assert gone.delete_multiple()
    assert [r["short_description"] for r in servicenow.store.all("incident")] == ["kept"]


def test_a_reference_reads_as_pysnc_expects_its_value_display_value_and_link(servicenow: ServiceNowEmulator) -> None:
    """A task's Configuration item is a reference: a sys_id in, the sys_id out, and the CI's name as its display
    value (PySNC asks for sysparm_display_value=all), found in the CI's own class (a PLC is a cmdb_ci)."""
    plc = servicenow.store.insert("cmdb_ci_ot_plc", {"name": "PLC-Line-3"}, "seed")
    client = pysnc_client(servicenow)
    for table in ("incident", "sn_si_incident"):
        gr = client.GlideRecord(table)
        gr.initialize()
        gr.short_description = "Unauthorized PLC Program Upload"
        gr.cmdb_ci = plc["sys_id"]
        sys_id = gr.insert()
        assert servicenow.store.get(table, str(sys_id))["cmdb_ci"] == plc["sys_id"]
        found = client.GlideRecord(table)
        assert found.get(str(sys_id))
        assert found.cmdb_ci.get_value() == plc["sys_id"]
        assert found.cmdb_ci.get_display_value() == "PLC-Line-3"
        assert found.get_display_value("short_description") == "Unauthorized PLC Program Upload"

    linked = client.GlideRecord("task_ci")
    linked.initialize()
    linked.task = str(sys_id)
    linked.ci_item = plc["sys_id"]
    linked.insert()
    rows = client.GlideRecord("task_ci")
    rows.exclude_reference_link = False
    rows.add_query("task", str(sys_id))
    rows.query()
    (row,) = list(rows)
    assert row.ci_item.get_display_value() == "PLC-Line-3"
    assert row.ci_item.get_link() == f"{servicenow.url}/api/now/table/cmdb_ci/{plc['sys_id']}"
    assert row.task.get_display_value().startswith("SIR")  # a task reference shows the task's number
