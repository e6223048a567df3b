"""Device sync: one Defender source's inventory → the ServiceNow CMDB (OT data model).

Any source (:class:`shared.defender.model.DeviceSource`: the console, Resource Graph, a locally
managed sensor), each with its own state. Incremental where the source allows: each stream (devices,
connections, deletions, CVEs) is read from its watermark, page by page, so memory is bounded by the
page size. Where a source has no deleted-devices feed, a device missing from its whole inventory for
the grace period is retired; where it reports CVEs by IP address, they are matched to its devices by
address and the unmatched ones counted. Each item's content hash is kept in Table storage,
so an unchanged device costs no ServiceNow write; changed ones go to the IRE in batches. A watermark
advances only past what was written — to one millisecond before the last written item, so items
that share a timestamp across a page boundary are read again (their hash makes that free) rather
than skipped — and never past an item that failed, so a failed run resumes without loss.

Writes go in parallel (:mod:`shared.devices.writer`, ``DEVICE_SYNC_CONCURRENCY`` at once, through the
connection's budget at the sync's low priority), never two in flight that write the same CI: sensors first,
then the devices (each payload names the sensors that detect its devices, written before), then connections
and retirements (:mod:`shared.devices.links`) and CVEs (:mod:`shared.devices.cves`). A whole read loads the
stored rows of a kind once (a range query) instead of a point read per device; rows are staged only for what
ServiceNow confirmed and go in transactions of 100 in the background as their partitions fill, and a watermark
moves past them once they are stored (:class:`~shared.devices.state.Checkpoints`, two checkpoints behind).

A run stops at its deadline (``Settings.run_seconds``, under host.json's functionTimeout) or when the operator
asks (Ctrl-C in ``sync run``): no new payload is sent, the ones in flight finish, what they wrote is saved as
above, the status says where it stopped, and the next tick resumes there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError

from shared.defender.model import Device
from shared.defender.rest import DefenderApiError
from shared.devices.base import StoppedError, SyncProgress, chunks
from shared.devices.cmdb import DETECTS, content_hash, device_hash, device_items, identity_item, owned, sensor_item
from shared.devices.cves import Cves
from shared.devices.indexing import Indexing
from shared.devices.links import Links
from shared.devices.references import References
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import Checkpoints, RunRows, SyncCounts, SyncState, SyncStatus
from shared.devices.writer import Writer
from shared.http.errors import HttpError
from shared.platform.telemetry import SYNC_AGE, SYNC_ITEMS, SYNC_RUNS
from shared.platform.times import parse_iso
from shared.servicenow.ire import IreResult

__all__ = ["DeviceSync", "SyncProgress", "is_due", "run_if_due"]
logger = logging.getLogger("shared.devices.sync")


@dataclass
class _DevicePage:
    """A page of devices read: which of them did not land (failed, or not sent before the run stopped)."""

    devices: list[Device]
    unwritten: list[Device] = field(default_factory=list)


@dataclass
class _Marks:
    """Where the devices' watermark may move to, whether an item that did not land holds it, and its saves."""

    saves: Checkpoints
    new: int | None = None
    blocked: bool = False


class DeviceSync(Indexing, Links, Cves):
    # -- one run ----------------------------------------------------------------------------
    def run(self) -> SyncStatus:
        started = self.clock()
        capabilities = self.source.capabilities
        status = SyncStatus(started=started.isoformat(), source=self.source.name, notes=list(capabilities.missing))
        calls_before = self._calls_before = self.servicenow.stats.calls
        self._read = {}
        self.addresses = {}
        self.references = References(self.servicenow)  # names resolved once per run
        self.rows = RunRows(self.state, [self.index.batches] if self.index is not None else [])
        self.writer = Writer(self.settings.concurrency)
        try:
            self.state.ensure()
            last = self.state.last_sync()
            self._sensors(status.counts)
            backfill = self.index_backfill_due(started, first=last is None)
            whole = backfill or self._whole_read_due(started, resuming=last is not None and last.stopped == "devices")
            if whole or not self.state.watermark("devices"):  # a whole read, or a first one: range queries
                for kind in ("device", "connection", "cve"):
                    self.rows.load(kind)
            seen = self._devices(status.counts, whole, backfill)
            if backfill:  # read whole without a stop: every device ServiceNow has is in the index now
                self.index_complete(started)
            if capabilities.connections:
                self.connections(status.counts)
            if capabilities.deletions == "feed":
                self.deleted(status.counts)
            elif seen is not None:
                self.absent(seen, started, status.counts)
            if capabilities.cves == "incremental":
                self.cves(status.counts)
            elif capabilities.cves == "snapshot":
                self.cve_snapshot(self.source.cve_pages(0), status.counts)
            elif capabilities.cves == "by_address":
                self.cve_snapshot(self.address_pages(status.counts), status.counts)
        except StoppedError as stop:
            status.stopped = stop.stream
            why = "the operator's stop" if self.stop_requested.is_set() else str(self.deadline)
            status.notes.append(f"stopped at {why} in {stop.stream}; the next tick resumes there")
            logger.warning("device sync stopped at %s in %s; its progress is saved", why, stop.stream)
        except (DefenderApiError, HttpError, OSError, AzureError) as exc:  # a source's: DefenderApiError
            status.error = f"{type(exc).__name__}: {exc}"
            logger.error("device sync failed (it resumes from the last written item next time): %s", status.error)
        finally:
            self.writer.close()  # every payload in flight finishes; what it confirmed is saved
            try:
                self.rows.close()
            except AzureError as exc:  # the watermarks stayed before what was not stored: the next run redoes it
                status.error = status.error or f"storage: {type(exc).__name__}: {exc}"
                logger.error("device sync could not store its progress (the next run redoes it): %s", status.error)
        self._finish(status, started, calls_before)
        return status

    def _finish(self, status: SyncStatus, started: datetime, calls_before: int) -> None:
        finished = self.clock()
        status.finished = finished.isoformat()
        status.duration_seconds = round((finished - started).total_seconds(), 3)
        status.servicenow_calls = self.servicenow.stats.calls - calls_before
        status.notes += self.source.skipped_reasons()
        if self.references.unresolved:
            status.notes.append(
                f"{len(self.references.unresolved)} manufacturer or site name(s) have no ServiceNow record "
                f"(sent without them): {', '.join(sorted(self.references.unresolved)[:5])}"
            )
        if status.counts.cves_unmatched:
            status.notes.append(
                f"{status.counts.cves_unmatched} CVE report(s) name an IP address no device of this source has"
            )
        self.state.record(status)
        # A stopped run is not a success: a sync that never finishes shows as stale (the alert rule).
        result = "failed" if status.error else "stopped" if status.stopped else "succeeded"
        SYNC_RUNS.add(1, {"result": result, "source": self.source.name})
        for name, value in asdict(status.counts).items():
            if value:
                SYNC_ITEMS.add(value, {"kind": name, "source": self.source.name})
        logger.info(
            "device sync of source '%s' %s in %.1f s: %s",
            self.source.name,
            {"succeeded": "finished"}.get(result, result),
            status.duration_seconds,
            asdict(status.counts),
        )

    # -- sensors ------------------------------------------------------------------------------
    def _sensors(self, counts: SyncCounts) -> None:
        """Every sensor first, in one payload: the devices' payloads then only name them (for Detects)."""
        self.sensors = {s.id: s for s in self.source.sensors()}
        self.rows.load("sensor")
        changed = []
        for sensor in self.sensors.values():
            item = sensor_item(sensor, self.data_source)
            stored = self.rows.get("sensor", str(sensor.id))
            if stored is None or stored.get("hash") != content_hash(item):
                changed.append((sensor, item))
            else:
                counts.unchanged += 1
        if not changed:
            return
        answers, _ = self.reconcile([item for _, item in changed], [])
        rows = [
            {"RowKey": str(sensor.id), "hash": content_hash(item), "sys_id": result.sys_id}
            for (sensor, item), result in zip(changed, answers, strict=True)
            if self.count(counts, result)
        ]
        self.rows.stage("sensor", rows)
        self.rows.flush()

    # -- devices ------------------------------------------------------------------------------
    def _whole_read_due(self, now: datetime, *, resuming: bool) -> bool:
        """Read the whole inventory (to see who is missing) when the source has no deletions feed and the
        last whole read is a grace period's half ago: an incremental source is read whole that often.

        ``resuming``: the last run stopped at its deadline in the devices; an incremental source then carries
        on from its watermark (its whole read stays due, for a run with time to finish it)."""
        capabilities = self.source.capabilities
        if capabilities.deletions == "feed":
            return False
        if not capabilities.incremental:
            return True
        if resuming:
            return False
        last = self.state.watermark("whole-read")
        return now.timestamp() * 1000 - last >= self.settings.absence_hours * 3_600_000 / 2

    def _devices(self, counts: SyncCounts, whole: bool, backfill: bool = False) -> set[str] | None:
        """Write the changed devices; returns every device id read when the read was whole and complete.
        ``backfill``: the unchanged devices go into the asset index too, with the CI their row names.

        Payloads of several pages are in flight at once; each page settles in source order once its payloads
        are over, and the watermark moves past settled pages only (before the first device that did not land).
        """
        save = functools.partial(self.state.set_watermark, "devices")
        marks = _Marks(Checkpoints(self.rows, save, self.state.watermark("devices"), every=self.save_every))
        seen: set[str] = set()
        for read in self.source.device_pages(0 if whole else marks.saves.stored):
            # A device listed twice (a page boundary, a source that repeats itself) is one CI: a payload with
            # the same CI twice is refused whole (DUPLICATE_PAYLOAD_RECORDS).
            page = _DevicePage(list({d.id: d for d in read}.values()))
            hashes = {d.id: device_hash(d, self.settings.class_map, self.data_source) for d in page.devices}
            stored = self.rows.get_many("device", [d.id for d in page.devices])
            changed = [d for d in page.devices if (stored[d.id] or {}).get("hash") != hashes[d.id]]
            counts.unchanged += len(page.devices) - len(changed)
            if self.index is not None:
                self.index_unchanged(page.devices, changed, stored, every=backfill)
            work = self.writer.open_page(functools.partial(self._settle, page, marks))
            for chunk in chunks(changed, self.settings.batch_size):
                if self.stopping():
                    page.unwritten += chunk
                    continue
                self._send_devices(chunk, hashes, counts, page, work)
            self.writer.close_page(work)
            seen.update(d.id for d in page.devices)
            if self.source.capabilities.cves == "by_address":
                for device in page.devices:
                    for address in device.ips:
                        self.addresses.setdefault(address, device.id)
            self.page_read("devices", len(page.devices))
            if self.stopping():
                break
        self.writer.drain()
        marks.saves.finish()
        self.finish_stream("devices")
        if not whole or marks.blocked:
            return None
        self.state.set_watermark("whole-read", int(self.clock().timestamp() * 1000))
        return seen

    def _settle(self, page: _DevicePage, marks: _Marks) -> None:
        """A page's payloads are over (pages settle in source order): where the watermark may go now."""
        if page.unwritten:
            mark = min(d.last_update for d in page.unwritten) - 1
            marks.new = mark if marks.new is None else min(marks.new, mark)
            marks.blocked = True  # once an item fails, the watermark stays before it for the rest of the run
        elif page.devices and not marks.blocked:
            marks.new = max(d.last_update for d in page.devices) - 1
        marks.saves.settled(len(page.devices), marks.new)

    def _send_devices(
        self, chunk: Sequence[Device], hashes: dict[str, str], counts: SyncCounts, page: _DevicePage, work: Any
    ) -> None:
        items = {d.id: device_items(d, self.settings.class_map, self.data_source, self.references) for d in chunk}
        payload: list[dict[str, Any]] = []
        relations: list[dict[str, Any]] = []
        spans: dict[str, range] = {}  # device id → its items' positions (the device first, then its IPs)
        for device in chunk:
            start = len(payload)
            payload += items[device.id]
            relations += owned(start, items[device.id])
            spans[device.id] = range(start, len(payload))
        sensor_index: dict[str, int] = {}
        unready: set[str] = set()  # devices whose sensor is not in the CMDB (yet): left for the next run
        for device in chunk:
            for sensor_id in device.sensor_ids:
                if sensor_id not in self.sensors:
                    continue
                if not (self.rows.get("sensor", sensor_id) or {}).get("sys_id"):
                    unready.add(device.id)
                    continue
                if sensor_id not in sensor_index:  # written before the devices: named here, not written again
                    sensor_index[sensor_id] = len(payload)
                    payload.append(identity_item(f"sensor:{sensor_id}", "cmdb_ci_nids", self.data_source))
                relations.append({"parent": sensor_index[sensor_id], "child": spans[device.id][0], "type": DETECTS})

        def done(answer: tuple[list[IreResult], list[IreResult]] | None, error: BaseException | None) -> None:
            if answer is None:
                page.unwritten += chunk
                return
            counts.relations += len(relations)
            rows = []
            for device in chunk:
                device_result, *addresses = (answer[0][i] for i in spans[device.id])
                refused = [a for a in addresses if not a.ok]
                for address in refused:
                    logger.warning("IRE refused an IP address of device %s: %s", device.id, address.problem)
                if self.count(counts, device_result) and not refused and device.id not in unready:
                    rows.append(
                        {
                            "RowKey": device.id,
                            "hash": hashes[device.id],
                            "sys_id": device_result.sys_id,
                            "class_name": items[device.id][0]["className"],
                            "criticality": device.criticality,
                            "retired": False,
                            "missing_since": "",
                        }
                    )
                else:
                    counts.errors += 1 if device_result.ok else 0  # the device counted above when it failed itself
                    page.unwritten.append(device)
            self.rows.stage("device", rows)
            self.devices_confirmed(chunk, rows)

        keys = [str(item["sys_object_source_info"]["source_native_key"]) for item in payload if item["values"]]
        self.writer.submit(keys, lambda: self.reconcile(payload, relations), done, work)


def is_due(last: SyncStatus | None, frequency_minutes: int, now: datetime) -> bool:
    finished = parse_iso(last.finished) if last is not None else None
    if finished is None or (last is not None and last.stopped):
        return True  # never run, or stopped at its deadline: resume now
    return now - finished >= timedelta(minutes=frequency_minutes) - timedelta(seconds=30)


def run_if_due(
    state: SyncState, settings: DeviceSyncSettings, *, past_due: bool, build: Callable[[], DeviceSync]
) -> SyncStatus | None:
    """One timer tick of an enabled sync: the timer ticks often; the sync runs when due.

    Only the sync state is read on a tick; ``build`` (the console, Key Vault and ServiceNow clients) is
    called when a run is due. A past-due tick (the app was stopped or busy) is no reason to run early or
    to skip: the last run's finish time decides, and the log says the tick was late.
    """
    last = state.last_sync() if _table_exists(state) else None
    now = datetime.now(UTC)
    if last is not None and (finished := parse_iso(last.finished)) is not None:
        SYNC_AGE.set((now - finished).total_seconds())
    if not is_due(last, settings.frequency_minutes, now):
        if past_due:
            logger.info("device sync tick was past due; the last sync is recent enough, so nothing to do")
        return None
    if past_due:
        logger.info("device sync tick was past due (the app was stopped or busy); the sync is due, running it now")
    status = build().run()
    if status.error:
        raise RuntimeError(f"device sync failed: {status.error}")  # recorded; the invocation shows it failed
    return status


def _table_exists(state: SyncState) -> bool:
    try:
        state.ensure()
        return True
    except Exception:  # the status is advisory here; the run itself reports storage errors
        return False
