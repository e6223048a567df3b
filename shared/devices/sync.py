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

A run stops at its deadline (``Settings.run_seconds``, under host.json's functionTimeout) between two writes:
what it wrote is saved as above, the status says where it stopped, and the next tick resumes there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.defender.model import Connection, Cve, Device, DeviceCves, DeviceSource, Sensor
from shared.defender.rest import DefenderApiError
from shared.devices.cmdb import (
    CONNECTS,
    DETECTS,
    content_hash,
    device_hash,
    device_items,
    identity_item,
    owned,
    retire_item,
    sensor_item,
)
from shared.devices.references import References
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncCounts, SyncState, SyncStatus
from shared.devices.vulnerabilities import CveChange, write_vulnerable_items
from shared.http.errors import HttpError
from shared.platform.telemetry import SYNC_AGE, SYNC_ITEMS, SYNC_RUNS
from shared.platform.times import NO_DEADLINE, Deadline, parse_iso
from shared.servicenow import ServiceNowClient
from shared.servicenow.ire import IreResult, results

logger = logging.getLogger("shared.devices.sync")


@dataclass(frozen=True)
class SyncProgress:
    """How far a run has come: the stream being read, the pages and items read so far, and ServiceNow calls."""

    stream: str
    pages: int
    items: int
    servicenow_calls: int


class _OutOfTimeError(Exception):
    """The run's deadline passed; raised only once everything written so far is saved."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DeviceSync:
    def __init__(
        self,
        settings: DeviceSyncSettings,
        source: DeviceSource,
        servicenow: ServiceNowClient,
        state: SyncState,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Callable[[SyncProgress], None] | None = None,
        *,
        data_source: str | None = None,
        deadline: Deadline = NO_DEADLINE,
    ) -> None:
        self.settings = settings
        self.source = source
        self.servicenow = servicenow
        self.state = state
        self.clock = clock
        self.progress = progress
        self.data_source = data_source or settings.data_source
        self.deadline = deadline
        self.sensors: dict[str, Sensor] = {}
        self.references = References(servicenow)
        self._calls_before = 0
        self._read: dict[str, tuple[int, int]] = {}
        self._addresses: dict[str, str] = {}  # IP address → device id, from a whole read (CVEs by address)

    # -- one run ----------------------------------------------------------------------------
    def run(self) -> SyncStatus:
        started = self.clock()
        capabilities = self.source.capabilities
        status = SyncStatus(started=started.isoformat(), source=self.source.name, notes=list(capabilities.missing))
        calls_before = self._calls_before = self.servicenow.stats.calls
        self._read = {}
        self._addresses = {}
        self.references = References(self.servicenow)  # names resolved once per run
        try:
            self.state.ensure()
            last = self.state.last_sync()
            self._sensors(status.counts)
            whole = self._whole_read_due(started, resuming=last is not None and last.stopped == "devices")
            seen = self._devices(status.counts, whole)
            if capabilities.connections:
                self._connections(status.counts)
            if capabilities.deletions == "feed":
                self._deleted(status.counts)
            elif seen is not None:
                self._absent(seen, started, status.counts)
            if capabilities.cves == "incremental":
                self._cves(status.counts)
            elif capabilities.cves == "snapshot":
                self._cve_snapshot(self.source.cve_pages(0), status.counts)
            elif capabilities.cves == "by_address":
                self._cve_snapshot(self._address_pages(status.counts), status.counts)
        except _OutOfTimeError as stop:
            status.stopped = stop.stream
            status.notes.append(f"stopped at {self.deadline} in {stop.stream}; the next tick resumes there")
            logger.warning("device sync stopped at %s in %s; its progress is saved", self.deadline, stop.stream)
        except (DefenderApiError, HttpError, OSError) as exc:  # every source's failures are DefenderApiError
            status.error = f"{type(exc).__name__}: {exc}"
            logger.error("device sync failed (it resumes from the last written item next time): %s", status.error)
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
        return status

    def _page_read(self, stream: str, items: int) -> None:
        pages, total = self._read.get(stream, (0, 0))
        self._read[stream] = (pages + 1, total + items)
        if self.progress is not None:
            calls = self.servicenow.stats.calls - self._calls_before
            self.progress(SyncProgress(stream, pages + 1, total + items, calls))

    def _reconcile(
        self, items: list[dict[str, Any]], relations: list[dict[str, Any]]
    ) -> tuple[list[IreResult], list[IreResult]]:
        """The items' and the relations' results, each in input order (paired by the answer's inputIndices).
        The data source is this source's, the one its items name in sys_object_source_info."""
        answer = self.servicenow.identify_reconcile(
            {"items": items, "relations": relations}, data_source=self.data_source
        )
        return results(answer, len(items)), results({"items": answer.get("relations") or []}, len(relations))

    def _count(self, counts: SyncCounts, result: IreResult) -> bool:
        kind = result.kind
        if kind == "failed":
            counts.errors += 1
            logger.warning("IRE refused an item (%s): %s", result.class_name or "?", result.problem)
            return False
        if kind == "created":
            counts.created += 1
        elif kind == "updated":
            counts.updated += 1
        else:
            counts.unchanged += 1
        return True

    # -- sensors ------------------------------------------------------------------------------
    def _sensors(self, counts: SyncCounts) -> None:
        self.sensors = {s.id: s for s in self.source.sensors()}
        changed = []
        for sensor in self.sensors.values():
            item = sensor_item(sensor, self.data_source)
            stored = self.state.get("sensor", str(sensor.id))
            if stored is None or stored.get("hash") != content_hash(item):
                changed.append((sensor, item))
            else:
                counts.unchanged += 1
        if not changed:
            return
        answers, _ = self._reconcile([item for _, item in changed], [])
        rows = [
            {"RowKey": str(sensor.id), "hash": content_hash(item), "sys_id": result.sys_id}
            for (sensor, item), result in zip(changed, answers, strict=True)
            if self._count(counts, result)
        ]
        self.state.put("sensor", rows)

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

    def _devices(self, counts: SyncCounts, whole: bool) -> set[str] | None:
        """Write the changed devices; returns every device id read when the read was whole and complete."""
        stored_mark = self.state.watermark("devices")
        watermark = 0 if whole else stored_mark
        new_mark: int | None = None
        blocked = False  # once an item fails, the watermark stays before it for the rest of the run
        seen: set[str] = set()
        for read in self.source.device_pages(watermark):
            # A device listed twice (a page boundary, a source that repeats itself) is one CI: a payload with
            # the same CI twice is refused whole (DUPLICATE_PAYLOAD_RECORDS).
            page = list({d.id: d for d in read}.values())
            hashes = {d.id: device_hash(d, self.settings.class_map, self.data_source) for d in page}
            stored = self.state.get_many("device", [d.id for d in page])
            changed = [d for d in page if (stored[d.id] or {}).get("hash") != hashes[d.id]]
            counts.unchanged += len(page) - len(changed)
            failed: list[Device] = []
            unwritten: list[Device] = []  # left for the next run: the deadline passed
            for start in range(0, len(changed), self.settings.batch_size):
                if self.deadline.passed():
                    unwritten = changed[start:]
                    break
                failed += self._write_devices(changed[start : start + self.settings.batch_size], hashes, counts)
            if failed or unwritten:
                mark = min(d.last_update for d in failed + unwritten) - 1
                new_mark = mark if new_mark is None else min(new_mark, mark)
                blocked = True
            elif page and not blocked:
                new_mark = max(d.last_update for d in page) - 1
            if new_mark is not None and new_mark > stored_mark:
                self.state.set_watermark("devices", new_mark)
                stored_mark = new_mark
            seen.update(d.id for d in page)
            if self.source.capabilities.cves == "by_address":
                for device in page:
                    for address in device.ips:
                        self._addresses.setdefault(address, device.id)
            self._page_read("devices", len(page))
            if self.deadline.passed():
                raise _OutOfTimeError("devices")
        if not whole or blocked:
            return None
        self.state.set_watermark("whole-read", int(self.clock().timestamp() * 1000))
        return seen

    def _write_devices(self, chunk: Sequence[Device], hashes: dict[str, str], counts: SyncCounts) -> list[Device]:
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
        for device in chunk:
            for sensor_id in device.sensor_ids:
                sensor = self.sensors.get(sensor_id)
                if sensor is None:
                    continue
                if sensor_id not in sensor_index:
                    sensor_index[sensor_id] = len(payload)
                    payload.append(sensor_item(sensor, self.data_source))
                relations.append({"parent": sensor_index[sensor_id], "child": spans[device.id][0], "type": DETECTS})
        answers, _ = self._reconcile(payload, relations)
        counts.relations += len(relations)
        rows, failed = [], []
        for device in chunk:
            device_result, *addresses = (answers[i] for i in spans[device.id])
            refused = [a for a in addresses if not a.ok]
            for address in refused:
                logger.warning("IRE refused an IP address of device %s: %s", device.id, address.problem)
            if self._count(counts, device_result) and not refused:
                rows.append(
                    {
                        "RowKey": device.id,
                        "hash": hashes[device.id],
                        "sys_id": device_result.sys_id,
                        "class_name": items[device.id][0]["className"],
                        "retired": False,
                        "missing_since": "",
                    }
                )
            else:
                counts.errors += 1 if device_result.ok else 0  # the device counted above when it failed itself
                failed.append(device)
        self.state.put("device", rows)
        return failed

    # -- connections, deletions, CVEs ------------------------------------------------------------
    def _connections(self, counts: SyncCounts) -> None:
        # Connection records carry no timestamp of their own: read them from the devices' watermark of the
        # previous run; the stored key of each written connection makes a re-read cost nothing.
        since = self.state.watermark("connections")
        next_since = self.state.watermark("devices")
        for page in self.source.connection_pages(since):
            known = self.state.get_many("connection", [f"{c.source}-{c.target}" for c in page])
            new = [c for c in page if known[f"{c.source}-{c.target}"] is None]
            devices = self.state.get_many("device", sorted({d for c in new for d in (c.source, c.target)}))
            # A connection to a device not in the CMDB yet waits: its key is not stored, so it is read again.
            writable = [c for c in new if devices[c.source] and devices[c.target] and c.source != c.target]
            for chunk in _chunks(writable, max(1, self.settings.batch_size // 2)):
                if self.deadline.passed():  # the stored keys make this page's written ones free next time
                    raise _OutOfTimeError("connections")
                self._write_connections(chunk, devices, counts)
            self._page_read("connections", len(page))
        self.state.set_watermark("connections", next_since)

    def _write_connections(
        self, chunk: Sequence[Connection], devices: Mapping[str, dict[str, Any] | None], counts: SyncCounts
    ) -> None:
        items: list[dict[str, Any]] = []
        index: dict[str, int] = {}  # each device once: the same CI twice is a refused payload
        for device_id in dict.fromkeys(d for c in chunk for d in (c.source, c.target)):
            index[device_id] = len(items)
            row = devices[device_id] or {}
            items.append(identity_item(device_id, str(row.get("class_name") or "cmdb_ci_ot"), self.data_source))
        relations = [{"parent": index[c.source], "child": index[c.target], "type": CONNECTS} for c in chunk]
        _, answers = self._reconcile(items, relations)
        written = []
        for connection, answer in zip(chunk, answers, strict=True):
            if answer.errors:
                counts.errors += 1
                logger.warning(
                    "IRE refused the connection %s → %s: %s", connection.source, connection.target, answer.problem
                )
            else:
                written.append(connection)
        counts.relations += len(written)
        self.state.put("connection", [{"RowKey": f"{c.source}-{c.target}", "kind": c.kind} for c in written])

    def _deleted(self, counts: SyncCounts) -> None:
        since = self.state.watermark("deleted")
        next_since = self.state.watermark("devices")
        known = [
            i
            for i in self.source.deleted_devices(since)
            if (row := self.state.get("device", i)) is not None and not row.get("retired")
        ]
        self._retire(known, counts)
        self.state.set_watermark("deleted", next_since)

    def _retire(self, device_ids: Sequence[str], counts: SyncCounts) -> None:
        for chunk in _chunks(device_ids, self.settings.batch_size):
            if self.deadline.passed():  # the retired ones are marked; the rest are found again
                raise _OutOfTimeError("retirements")
            devices = self.state.get_many("device", list(chunk))
            items = [
                retire_item(i, str((devices[i] or {}).get("class_name") or "cmdb_ci_ot"), self.data_source)
                for i in chunk
            ]
            answers, _ = self._reconcile(items, [])
            rows = []
            for device_id, result in zip(chunk, answers, strict=True):
                if result.ok:
                    counts.retired += 1
                    rows.append({"RowKey": device_id, "retired": True, "hash": "", "missing_since": ""})
                else:
                    counts.errors += 1
            self.state.put("device", rows)

    def _absent(self, seen: set[str], now: datetime, counts: SyncCounts) -> None:
        """Devices the source no longer lists: marked missing, and retired once missing for the grace period
        (a sensor restarting or a device briefly gone is not a deletion); back again, unmarked."""
        grace = timedelta(hours=self.settings.absence_hours)
        marks, retire = [], []
        for row in self.state.rows("device"):
            key, missing = str(row["RowKey"]), str(row.get("missing_since") or "")
            if row.get("retired"):
                continue
            if key in seen:
                if missing:
                    marks.append({"RowKey": key, "missing_since": ""})
            elif not missing:
                marks.append({"RowKey": key, "missing_since": now.isoformat()})
            elif (since := parse_iso(missing)) is not None and now - since >= grace:
                retire.append(key)
        self.state.put("device", marks)
        self._retire(retire, counts)

    def _cves(self, counts: SyncCounts) -> None:
        # Per source page: one state read, one vulnerable-item lookup per 100 changes (an IN query on
        # the correlation id, so a crash after a write never duplicates it) and Batch API writes.
        watermark = self.state.watermark("cves")
        blocked = False
        for page in self.source.cve_pages(watermark):
            blocked = self._cve_page(page, counts) or blocked
            if page and not blocked:
                self.state.set_watermark("cves", max(r.last_update for r in page) - 1)
            self._page_read("cves", len(page))
            if self.deadline.passed():
                raise _OutOfTimeError("cves")

    def _cve_page(self, page: Sequence[DeviceCves], counts: SyncCounts) -> bool:
        """Bring the vulnerable items of a page of devices to what the source reports; True if one failed."""
        keys = [row.device_id for row in page]
        devices = self.state.get_many("device", keys)
        stored = self.state.get_many("cve", keys)
        changes: list[CveChange] = []
        now_open: dict[str, list[str]] = {}
        for row in page:
            device = devices[row.device_id]
            if device is None or not device.get("sys_id"):
                continue  # not in the CMDB yet; the next run after its sync will see it again
            previous = stored[row.device_id]
            was_open = set(json.loads(previous["open"])) if previous else set()
            now_open[row.device_id] = sorted({c.id for c in row.cves})
            if previous is None and not row.cves:
                del now_open[row.device_id]  # nothing then, nothing now: no row to write
                continue
            sys_id = device["sys_id"]
            changes += [
                CveChange(row.device_id, sys_id, c.id, c.score, True, c.severity, c.description)
                for c in row.cves
                if c.id not in was_open
            ]
            changes += [
                CveChange(row.device_id, device["sys_id"], cve_id, "", False)
                for cve_id in sorted(was_open - set(now_open[row.device_id]))
            ]
        failed = write_vulnerable_items(self.servicenow, changes, counts, self.settings.batch_size, self.deadline)
        self.state.put(
            "cve",
            [
                {"RowKey": device_id, "open": json.dumps(ids)}
                for device_id, ids in now_open.items()
                if device_id not in failed and (stored[device_id] or {}).get("open") != json.dumps(ids)
            ],
        )
        return bool(failed)

    def _cve_snapshot(self, pages: Iterable[list[DeviceCves]], counts: SyncCounts) -> None:
        """A source that reports all CVEs at once: each device's list as now; a device with open CVEs
        stored and none reported now has had them fixed."""
        reported: set[str] = set()
        for page in pages:
            self._cve_page(page, counts)
            reported.update(row.device_id for row in page)
            self._page_read("cves", len(page))
            if self.deadline.passed():  # a snapshot is read whole again; what is stored costs nothing then
                raise _OutOfTimeError("cves")
        fixed = [
            DeviceCves(str(row["RowKey"]), 0)
            for row in self.state.rows("cve")
            if str(row["RowKey"]) not in reported and json.loads(row.get("open") or "[]")
        ]
        for chunk in _chunks(fixed, 500):
            self._cve_page(chunk, counts)
            if self.deadline.passed():
                raise _OutOfTimeError("cves")

    def _address_pages(self, counts: SyncCounts) -> Iterator[list[DeviceCves]]:
        """CVEs reported by IP address, as per-device lists through the addresses of the devices read."""
        by_device: dict[str, dict[str, Cve]] = {}
        for report in self.source.address_cves():
            device_id = self._addresses.get(report.address)
            if device_id is None:
                counts.cves_unmatched += len(report.cves)
                continue
            by_device.setdefault(device_id, {}).update({c.id: c for c in report.cves})
        rows = [DeviceCves(device_id, 0, tuple(cves.values())) for device_id, cves in sorted(by_device.items())]
        for chunk in _chunks(rows, 500):
            yield list(chunk)


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
