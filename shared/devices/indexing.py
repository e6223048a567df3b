"""The device sync's side of the asset index (:mod:`shared.assets.index`): what ServiceNow confirmed of each
device, put as it is confirmed and flushed with the sync's own rows (``RunRows``' companion), so both say the
same; CVEs as they land; retired devices kept findable; and the index filled once after an upgrade."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.assets.model import Asset
from shared.defender.model import Cve, Device
from shared.devices.base import SyncBase

INDEXED = "asset-index"  # the watermark that says since when the asset index holds every device of the scope


class Indexing(SyncBase):
    def index_backfill_due(self, now: datetime, *, first: bool) -> bool:
        """Whether the asset index must be filled from a whole read: a sync that ran before the index existed
        (an upgrade) wrote devices the index has never seen, and an unchanged device is not written again. A
        first sync indexes each device as ServiceNow confirms it, so it only marks the index as begun."""
        if self.index is None or self.state.watermark(INDEXED):
            return False
        if first:
            self.index_complete(now)
            return False
        return True

    def index_complete(self, since: datetime) -> None:
        """The asset index holds every device of the scope from ``since`` (a backfill read whole, or a first
        sync begun then): no backfill is due again."""
        self.state.set_watermark(INDEXED, int(since.timestamp() * 1000))

    def devices_confirmed(self, chunk: Sequence[Device], rows: Sequence[dict[str, Any]]) -> None:
        """Each device ServiceNow confirmed, by its CI: put overwrites, so a device the IRE re-identified
        under another sys_id is found under the new one."""
        if self.index is None:
            return
        by_id = {d.id: d for d in chunk}
        for row in rows:
            device = by_id[row["RowKey"]]
            self.index.put(Asset.of(self.state.scope, device, row["sys_id"], row["class_name"]))

    def index_unchanged(
        self,
        devices: Sequence[Device],
        changed: Sequence[Device],
        stored: Mapping[str, dict[str, Any] | None],
        *,
        every: bool,
    ) -> None:
        """Unchanged devices into the asset index under the CI their row names (a changed one is put once
        written): ``every`` one in a backfill; otherwise those whose Defender criticality changed, which the
        index shows (and impact follows) but no CMDB field takes, so the content hash does not see it."""
        assert self.index is not None
        writing = {d.id for d in changed}
        marks = []
        for device in devices:
            row = stored[device.id] or {}
            if device.id in writing or not row.get("sys_id") or row.get("retired"):
                continue
            if every or row.get("criticality", "") != device.criticality:
                self.index.put(Asset.of(self.state.scope, device, str(row["sys_id"]), str(row.get("class_name", ""))))
                marks.append({"RowKey": device.id, "criticality": device.criticality})
        self.rows.stage("device", marks)

    def cves_now(self, open_by_device: Mapping[str, Sequence[Cve]]) -> None:
        if self.index is not None:
            for device_id, cves in open_by_device.items():
                self.index.cves(self.state.scope, device_id, cves)

    def retired_now(self, rows: Sequence[dict[str, Any]]) -> None:
        """Retired devices stay findable: a record may point at a retired CI."""
        if self.index is not None:
            for row in rows:
                self.index.retire(self.state.scope, str(row["RowKey"]))
