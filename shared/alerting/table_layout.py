"""The forwarding table (``FORWARDING_LEDGER_TABLE``): one Table storage table, five row families, kept apart
by their partition keys. This module names them all; the modules that own each family build their keys here.

=====================  ==========================================  ============================================
family                 partition                                   row
=====================  ==========================================  ============================================
ledger (per alert)     sha256(alert key), 64 hex digits            the action's name
correlation index      ``correlation-`` + 2 hex digits             sha256(correlation id)
group headers          ``groups``                                  ``<group id>-<inverted generation>``
group members          ``member-`` + group id                      sha256(alert key)
ServiceNow budget      ``servicenow-budget`` (platform.budget_board)  ``instance-<id>``, ``pause-<connection>``
=====================  ==========================================  ============================================

No two families share a partition: a hex digest has no ``-``, and the other prefixes differ. The names are
those of rows already stored in deployed tables: they must not change.
"""

from __future__ import annotations

import hashlib

from shared.platform.budget_board import PARTITION as BUDGET_BOARD

GROUP_HEADERS = "groups"
MAX_GENERATION = 99_999_999  # header rows sort newest generation first

__all__ = ["BUDGET_BOARD", "GROUP_HEADERS", "MAX_GENERATION"]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ledger_partition(alert_key: str) -> str:
    # Table keys refuse '/', '\\', '#', '?' and control characters; alert ids are arbitrary text.
    return digest(alert_key)


def ledger_keys(alert_key: str, action: str) -> dict[str, str]:
    return {"PartitionKey": ledger_partition(alert_key), "RowKey": action}


def index_keys(correlation_id: str) -> dict[str, str]:
    hashed = digest(correlation_id)
    return {"PartitionKey": f"correlation-{hashed[:2]}", "RowKey": hashed}


def header_keys(gid: str, generation: int) -> dict[str, str]:
    return {"PartitionKey": GROUP_HEADERS, "RowKey": f"{gid}-{MAX_GENERATION - generation:08d}"}


def header_range(gid: str) -> dict[str, str]:
    """Query parameters (pk, low, high) for every header row of one group."""
    return {"pk": GROUP_HEADERS, "low": f"{gid}-", "high": f"{gid}."}


def member_partition(gid: str) -> str:
    return f"member-{gid}"


def member_keys(gid: str, alert_key: str) -> dict[str, str]:
    return {"PartitionKey": member_partition(gid), "RowKey": digest(alert_key)}
