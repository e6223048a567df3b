"""Vulnerabilities: the CVEs Defender reports on a device as ServiceNow vulnerable items, opened when
reported and closed when no longer reported."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.devices.state import SyncCounts
from shared.servicenow import BatchItem, EncodedQuery, ServiceNowClient

logger = logging.getLogger("shared.devices.vulnerabilities")
TABLE = "sn_vul_vulnerable_item"


@dataclass(frozen=True)
class CveChange:
    """One CVE newly reported on a device (``opening``) or no longer reported."""

    device_id: str
    sys_id: str
    cve_id: str
    score: str
    opening: bool
    severity: str = ""  # the source's category (the cloud's Critical … None), when it gives one
    description: str = ""

    @property
    def correlation_id(self) -> str:
        return f"dfiot-cve:{self.device_id}:{self.cve_id}"

    def request(self, existing: dict[str, Any] | None, item_id: str) -> BatchItem | None:
        """The Batch API request that brings the vulnerable item to this change, or None if it is there."""
        table = f"/api/now/table/{TABLE}"
        if self.opening and existing is None:
            values = {
                "cmdb_ci": self.sys_id,
                "vulnerability": self.cve_id,
                "risk_score": self.score,
                "state": "1",
                "correlation_id": self.correlation_id,
                "source": "Microsoft Defender for IoT",
            }
            # A vulnerable item is a task: its summary and description carry what Defender says of the CVE
            # (the item's own risk rating is ServiceNow's calculators' to set).
            if self.severity:
                values["short_description"] = f"{self.cve_id}: severity {self.severity} (Defender for IoT)"
            if self.description:
                values["description"] = self.description
            return BatchItem(item_id, "POST", table, values)
        if self.opening and existing is not None and existing.get("state") != "1":
            return BatchItem(item_id, "PATCH", f"{table}/{existing['sys_id']}", {"state": "1"})
        if not self.opening and existing is not None and existing.get("state") != "3":
            body = {"state": "3", "close_notes": "No longer reported by Defender for IoT"}
            return BatchItem(item_id, "PATCH", f"{table}/{existing['sys_id']}", body)
        return None


def write_vulnerable_items(
    servicenow: ServiceNowClient, changes: Sequence[CveChange], counts: SyncCounts, batch_size: int
) -> set[str]:
    """Open and close vulnerable items; returns the devices with a change that did not land.

    Per 100 changes: one lookup by correlation id (an IN query, so a crash after a write never makes a
    second item) and Batch API writes of ``batch_size``.
    """
    failed: set[str] = set()
    for start in range(0, len(changes), 100):
        chunk = changes[start : start + 100]
        query = EncodedQuery().in_("correlation_id", [c.correlation_id for c in chunk])
        existing = {
            r["correlation_id"]: r
            for r in servicenow.query(TABLE, query, fields=["sys_id", "state", "correlation_id"], limit=len(chunk))
        }
        items: list[BatchItem] = []
        pending: dict[str, CveChange] = {}
        for number, change in enumerate(chunk):
            item = change.request(existing.get(change.correlation_id), str(number))
            if item is not None:
                items.append(item)
                pending[item.id] = change
            elif change.opening:
                counts.cves_opened += 1  # already open (a crash after the write): nothing to send
            else:
                counts.cves_closed += 1
        for first in range(0, len(items), batch_size):
            for result in servicenow.batch(items[first : first + batch_size]).values():
                change = pending[result.id]
                if result.ok:
                    if change.opening:
                        counts.cves_opened += 1
                    else:
                        counts.cves_closed += 1
                else:
                    counts.errors += 1
                    failed.add(change.device_id)
                    logger.warning("vulnerable item %s not written: %s", change.correlation_id, result.error)
    return failed
