"""Vulnerabilities: the CVEs Defender reports on a device as ServiceNow vulnerable items, opened when
reported and closed when no longer reported."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.devices.state import SyncCounts
from shared.platform.times import NO_DEADLINE, Deadline
from shared.servicenow import BatchItem, EncodedQuery, ServiceNowClient

logger = logging.getLogger("shared.devices.vulnerabilities")
TABLE = "sn_vul_vulnerable_item"
# The vulnerability entries a vulnerable item may reference (both extend sn_vul_entry): NVD's, and the
# third-party ones integrations create.
NVD_ENTRIES = "sn_vul_nvd_entry"
THIRD_PARTY_ENTRIES = "sn_vul_third_party_entry"


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

    def request(
        self, existing: dict[str, Any] | None, item_id: str, vulnerability: str | None = None
    ) -> BatchItem | None:
        """The Batch API request that brings the vulnerable item to this change, or None if it is there.
        ``vulnerability``: the sys_id of the CVE's vulnerability entry (a reference takes a sys_id, not the
        CVE id); None leaves the field empty."""
        table = f"/api/now/table/{TABLE}"
        if self.opening and existing is None:
            values = {
                "cmdb_ci": self.sys_id,
                **({"vulnerability": vulnerability} if vulnerability else {}),
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


def vulnerability_entries(servicenow: ServiceNowClient, cve_ids: Sequence[str]) -> dict[str, str]:
    """CVE id → the sys_id of its vulnerability entry (NVD's, else a third-party one), creating a
    third-party entry for a CVE the instance does not know, as scanner integrations do — in one Batch API
    call for all of them. A CVE whose entry cannot be made (the user may not) is left out: its vulnerable
    item goes without the reference, and says so in the log."""
    wanted = sorted(set(cve_ids))
    if not wanted:
        return {}
    query = EncodedQuery().in_("id", wanted)
    found: dict[str, str] = {}
    for table in (THIRD_PARTY_ENTRIES, NVD_ENTRIES):  # NVD's entry wins where both exist
        rows = servicenow.query(table, query, fields=["sys_id", "id"], limit=len(wanted))
        found |= {r["id"]: r["sys_id"] for r in rows}
    missing = [cve_id for cve_id in wanted if cve_id not in found]
    creates = [
        BatchItem(
            str(number),
            "POST",
            f"/api/now/table/{THIRD_PARTY_ENTRIES}",
            {"id": cve_id, "name": cve_id, "source": "Microsoft Defender for IoT"},
        )
        for number, cve_id in enumerate(missing)
    ]
    for result in servicenow.batch(creates).values() if creates else ():
        cve_id = missing[int(result.id)]
        if result.ok and isinstance(result.body, dict) and result.body.get("sys_id"):
            found[cve_id] = str(result.body["sys_id"])
        elif result.error is not None and result.error.status not in (401, 403):
            raise result.error
        else:
            logger.warning(
                "cannot create the vulnerability entry %s (HTTP %s); its items go without it", cve_id, result.status
            )
    return found


def write_vulnerable_items(
    servicenow: ServiceNowClient,
    changes: Sequence[CveChange],
    counts: SyncCounts,
    batch_size: int,
    deadline: Deadline = NO_DEADLINE,
) -> set[str]:
    """Open and close vulnerable items; returns the devices with a change that did not land (failed, or left
    for the next run once ``deadline`` passed). In turn, 100 changes at a time (:func:`write_chunk`)."""
    failed: set[str] = set()
    for start in range(0, len(changes), 100):
        if deadline.passed():
            return failed | {c.device_id for c in changes[start:]}
        failed |= write_chunk(servicenow, changes[start : start + 100], counts, batch_size, deadline)
    return failed


def write_chunk(
    servicenow: ServiceNowClient,
    chunk: Sequence[CveChange],
    counts: SyncCounts,
    batch_size: int,
    deadline: Deadline = NO_DEADLINE,
) -> set[str]:
    """Up to 100 changes: one lookup by correlation id (an IN query, so a crash after a write never makes a
    second item, nor does a device's change written before its run stopped), the new CVEs' entries, and
    Batch API writes of ``batch_size``. Returns the devices whose change did not land. Thread-safe when
    ``counts`` is the caller's own."""
    failed: set[str] = set()
    query = EncodedQuery().in_("correlation_id", [c.correlation_id for c in chunk])
    existing = {
        r["correlation_id"]: r
        for r in servicenow.query(TABLE, query, fields=["sys_id", "state", "correlation_id"], limit=len(chunk))
    }
    due: list[CveChange] = []  # the changes that need a write
    for change in chunk:
        if change.request(existing.get(change.correlation_id), "") is not None:
            due.append(change)
        elif change.opening:
            counts.cves_opened += 1  # already open (a crash after the write): nothing to send
        else:
            counts.cves_closed += 1
    for first in range(0, len(due), batch_size):
        if deadline.passed():  # one call at most after the deadline: the lookup above
            failed |= {change.device_id for change in due[first:]}
            break
        batch = due[first : first + batch_size]
        # The CVEs' vulnerability entries, for this batch's new items only (so a stopped run makes none ahead).
        entries = vulnerability_entries(
            servicenow, [c.cve_id for c in batch if c.opening and c.correlation_id not in existing]
        )
        items: list[BatchItem] = []
        pending: dict[str, CveChange] = {}
        for number, change in enumerate(batch):
            item = change.request(existing.get(change.correlation_id), str(number), entries.get(change.cve_id))
            if item is not None:
                items.append(item)
                pending[item.id] = change
        for result in servicenow.batch(items).values():
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
