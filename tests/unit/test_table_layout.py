"""The forwarding table's row families keep the keys and columns of rows already stored in deployed tables."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from azure.data.tables import TableEntity

from shared.alerting import table_layout
from shared.alerting.claims import stale
from shared.alerting.groups import Header
from shared.alerting.ledger import Entry


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_every_family_keeps_its_stored_keys() -> None:
    assert table_layout.ledger_keys("alert:7:1", "incident") == {"PartitionKey": sha("alert:7:1"), "RowKey": "incident"}
    digest = sha("dfiot:sha256:abc")
    assert table_layout.index_keys("dfiot:sha256:abc") == {
        "PartitionKey": f"correlation-{digest[:2]}",
        "RowKey": digest,
    }
    assert table_layout.header_keys("g1", 0) == {"PartitionKey": "groups", "RowKey": "g1-99999999"}
    assert table_layout.header_keys("g1", 2)["RowKey"] < table_layout.header_keys("g1", 1)["RowKey"]  # newest first
    assert table_layout.member_keys("g1", "alert:7:1") == {"PartitionKey": "member-g1", "RowKey": sha("alert:7:1")}
    assert table_layout.BUDGET_BOARD == "servicenow-budget"


def test_no_family_can_take_another_s_partition() -> None:
    ledger = table_layout.ledger_partition("anything")
    others = [
        table_layout.index_keys("x")["PartitionKey"],
        table_layout.GROUP_HEADERS,
        table_layout.member_partition("g"),
        table_layout.BUDGET_BOARD,
    ]
    assert "-" not in ledger and all(("-" in p or p == "groups") and len(p) != 64 for p in others)


def entity(values: dict[str, object]) -> TableEntity:
    row = TableEntity(values)
    row._metadata = {"etag": "W/1", "timestamp": None}  # as the SDK gives a read row its etag
    return row


def test_an_older_ledger_row_reads_with_the_defaults() -> None:
    entry = Entry.from_entity(entity({"RowKey": "incident", "state": "created", "claimed_at": "2025-01-01T00:00:00Z"}))
    assert (entry.action, entry.etag, entry.seen, entry.deliveries, entry.written_back) == (
        "incident",
        "W/1",
        1,
        (),
        "",
    )
    assert entry.claimed_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_header_row_reads_its_json_and_defaults() -> None:
    opened = datetime(2025, 1, 1, tzinfo=UTC)
    row = {
        "gid": "g1", "generation": 1, "state": "created", "action": "a", "connection": "c", "table": "incident",
        "window_minutes": 60, "opened_at": opened, "correlation_id": "dfiot:group:g1:1", "note_members": '["m1"]',
    }  # fmt: skip
    header = Header.from_entity(entity(row))
    assert (header.generation, header.note_members, header.open, header.count) == (1, ("m1",), True, 0)


def test_a_claim_without_a_time_is_stale() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert stale(None, now, 300) and not stale(now, now, 300)
