"""The device sync's connections between devices and its retirements (a deletions feed, or devices absent
from a whole read for the grace period), written in parallel (:mod:`shared.devices.writer`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.defender.model import Connection
from shared.devices.base import SyncBase, chunks
from shared.devices.cmdb import CONNECTS, identity_item, retire_item
from shared.devices.state import SyncCounts
from shared.platform.times import parse_iso
from shared.servicenow.ire import IreResult

logger = logging.getLogger("shared.devices.sync")


class Links(SyncBase):
    # -- connections --------------------------------------------------------------------------
    def connections(self, counts: SyncCounts) -> None:
        # Connection records carry no timestamp of their own: read them from the devices' watermark of the
        # previous run; the stored key of each written connection makes a re-read cost nothing. A connection
        # payload only names its devices (written before, by the devices stream): it writes no CI, so any
        # number of them may be in flight.
        since = self.state.watermark("connections")
        next_since = self.state.watermark("devices")
        for page in self.source.connection_pages(since):
            known = self.rows.get_many("connection", [f"{c.source}-{c.target}" for c in page])
            new = [c for c in page if known[f"{c.source}-{c.target}"] is None]
            devices = self.rows.get_many("device", sorted({d for c in new for d in (c.source, c.target)}))
            # A connection to a device not in the CMDB yet waits: its key is not stored, so it is read again.
            writable = [c for c in new if devices[c.source] and devices[c.target] and c.source != c.target]
            # batch_size connections a payload (at most twice as many devices named, as a device payload
            # holds each device and its addresses): the payload's own cost, not its items, dominates at an instance.
            for chunk in chunks(writable, self.settings.batch_size):
                if self.stopping():  # the stored keys make this page's written ones free next time
                    break
                self._send_connections(chunk, devices, counts)
            self.writer.reap()
            self.page_read("connections", len(page))
            if self.stopping():
                break
        self.finish_stream("connections")
        self.state.set_watermark("connections", next_since)

    def _send_connections(
        self, chunk: Sequence[Connection], devices: Mapping[str, dict[str, Any] | None], counts: SyncCounts
    ) -> None:
        items: list[dict[str, Any]] = []
        index: dict[str, int] = {}  # each device once: the same CI twice is a refused payload
        for device_id in dict.fromkeys(d for c in chunk for d in (c.source, c.target)):
            index[device_id] = len(items)
            row = devices[device_id] or {}
            items.append(identity_item(device_id, str(row.get("class_name") or "cmdb_ci_ot"), self.data_source))
        relations = [{"parent": index[c.source], "child": index[c.target], "type": CONNECTS} for c in chunk]

        def done(answer: tuple[list[IreResult], list[IreResult]] | None, error: BaseException | None) -> None:
            if answer is None:
                return
            written = []
            for connection, result in zip(chunk, answer[1], strict=True):
                if result.errors:
                    counts.errors += 1
                    logger.warning(
                        "IRE refused the connection %s → %s: %s", connection.source, connection.target, result.problem
                    )
                else:
                    written.append(connection)
            counts.relations += len(written)
            self.rows.stage("connection", [{"RowKey": f"{c.source}-{c.target}", "kind": c.kind} for c in written])

        self.writer.submit((), lambda: self.reconcile(items, relations), done)

    # -- retirements ----------------------------------------------------------------------------
    def deleted(self, counts: SyncCounts) -> None:
        since = self.state.watermark("deleted")
        next_since = self.state.watermark("devices")
        ids = list(self.source.deleted_devices(since))
        rows = self.rows.get_many("device", ids)
        self.retire([i for i in ids if (row := rows[i]) is not None and not row.get("retired")], counts)
        self.state.set_watermark("deleted", next_since)

    def retire(self, device_ids: Sequence[str], counts: SyncCounts) -> None:
        for chunk in chunks(device_ids, self.settings.batch_size):
            if self.stopping():  # the retired ones are marked; the rest are found again
                break
            devices = self.rows.get_many("device", list(chunk))
            items = [
                retire_item(i, str((devices[i] or {}).get("class_name") or "cmdb_ci_ot"), self.data_source)
                for i in chunk
            ]
            self.writer.submit(chunk, functools.partial(self.reconcile, items, []), self._retired(chunk, counts))
        self.finish_stream("retirements")

    def _retired(self, chunk: Sequence[str], counts: SyncCounts) -> Any:
        def done(answer: tuple[list[IreResult], list[IreResult]] | None, error: BaseException | None) -> None:
            if answer is None:
                return
            rows = []
            for device_id, result in zip(chunk, answer[0], strict=True):
                if result.ok:
                    counts.retired += 1
                    rows.append({"RowKey": device_id, "retired": True, "hash": "", "missing_since": ""})
                else:
                    counts.errors += 1
            self.rows.stage("device", rows)
            self.retired_now(rows)

        return done

    def retired_now(self, rows: Sequence[dict[str, Any]]) -> None:
        """Hook: devices ServiceNow confirmed retired (the asset index keeps them findable)."""

    def absent(self, seen: set[str], now: datetime, counts: SyncCounts) -> None:
        """Devices the source no longer lists: marked missing, and retired once missing for the grace period
        (a sensor restarting or a device briefly gone is not a deletion); back again, unmarked."""
        grace = timedelta(hours=self.settings.absence_hours)
        marks, retire = [], []
        for key, row in self.rows.rows("device"):
            missing = str(row.get("missing_since") or "")
            if row.get("retired"):
                continue
            if key in seen:
                if missing:
                    marks.append({"RowKey": key, "missing_since": ""})
            elif not missing:
                marks.append({"RowKey": key, "missing_since": now.isoformat()})
            elif (since := parse_iso(missing)) is not None and now - since >= grace:
                retire.append(key)
        self.rows.stage("device", marks)
        self.retire(retire, counts)
