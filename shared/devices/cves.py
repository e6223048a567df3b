"""The device sync's CVE streams: each device's vulnerabilities as ServiceNow vulnerable items, opened when
reported and closed when no longer reported, 100 changes a job, the jobs in parallel
(:mod:`shared.devices.writer`; a CVE's vulnerability entry is made by one job at a time)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from shared.defender.model import Cve, DeviceCves
from shared.devices.base import SyncBase, chunks
from shared.devices.state import Checkpoints, SyncCounts
from shared.devices.vulnerabilities import CveChange, write_chunk


class Cves(SyncBase):
    addresses: dict[str, str]  # IP address → device id, from a whole read (CVEs by address)

    def cves(self, counts: SyncCounts) -> None:
        """An incremental source: the watermark moves past pages (in page order) whose writes landed, once
        their rows are stored (:class:`Checkpoints`)."""
        state = {"blocked": False}
        save = functools.partial(self.state.set_watermark, "cves")
        saves = Checkpoints(self.rows, save, self.state.watermark("cves"), every=self.save_every)

        def settle(page: Sequence[DeviceCves]) -> Callable[[bool], None]:
            def finish(failed: bool) -> None:
                state["blocked"] = state["blocked"] or failed
                moving = bool(page) and not state["blocked"]
                saves.settled(len(page), max(r.last_update for r in page) - 1 if moving else None)

            return finish

        for page in self.source.cve_pages(saves.stored):
            self.cve_page(page, counts, settle(page))
            self.page_read("cves", len(page))
            if self.stopping():
                break
        self.writer.drain()
        saves.finish()
        self.finish_stream("cves")

    def cve_page(
        self, page: Sequence[DeviceCves], counts: SyncCounts, then: Callable[[bool], None] | None = None
    ) -> None:
        """Bring the vulnerable items of a page of devices to what the source reports; ``then(failed)`` once
        its writes are over (in page order)."""
        keys = [row.device_id for row in page]
        devices = self.rows.get_many("device", keys)
        stored = self.rows.get_many("cve", keys)
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
                CveChange(row.device_id, sys_id, cve_id, "", False)
                for cve_id in sorted(was_open - set(now_open[row.device_id]))
            ]
        failed: set[str] = set()
        reported = {row.device_id: row.cves for row in page}

        def finish() -> None:
            landed = [
                device_id
                for device_id, ids in now_open.items()
                if device_id not in failed and (stored[device_id] or {}).get("open") != json.dumps(ids)
            ]
            self.rows.stage("cve", [{"RowKey": d, "open": json.dumps(now_open[d])} for d in landed])
            self.cves_now({device_id: reported.get(device_id, ()) for device_id in landed})
            if then is not None:
                then(bool(failed))

        work = self.writer.open_page(finish)
        for chunk in chunks(changes, 100):
            if self.stopping():
                failed |= {c.device_id for c in chunk}
                continue
            self._send(chunk, counts, failed, work)
        self.writer.close_page(work)

    def _send(self, chunk: Sequence[CveChange], counts: SyncCounts, failed: set[str], work: Any) -> None:
        mine = SyncCounts()  # the job's own counts: it runs on a worker thread

        def done(landed: set[str] | None, error: BaseException | None) -> None:
            for name, value in vars(mine).items():
                setattr(counts, name, getattr(counts, name) + value)
            failed.update({c.device_id for c in chunk} if landed is None else landed)

        batch_size, deadline = self.settings.batch_size, self.deadline
        keys = {f"cve:{c.cve_id}" for c in chunk if c.opening}  # one job makes a CVE's entry, not two at once
        self.writer.submit(keys, lambda: write_chunk(self.servicenow, chunk, mine, batch_size, deadline), done, work)

    def cves_now(self, open_by_device: Mapping[str, Sequence[Cve]]) -> None:
        """Hook: the open CVEs of each device whose vulnerable items changed and landed (the asset index)."""

    def cve_snapshot(self, pages: Iterable[list[DeviceCves]], counts: SyncCounts) -> None:
        """A source that reports all CVEs at once: each device's list as now; a device with open CVEs
        stored and none reported now has had them fixed."""
        reported: set[str] = set()
        for page in pages:
            self.cve_page(page, counts)
            reported.update(row.device_id for row in page)
            self.page_read("cves", len(page))
            if self.stopping():  # a snapshot is read whole again; what is stored costs nothing then
                break
        self.finish_stream("cves")
        fixed = [
            DeviceCves(key, 0)
            for key, row in self.rows.rows("cve")
            if key not in reported and json.loads(row.get("open") or "[]")
        ]
        for chunk in chunks(fixed, 500):
            self.cve_page(chunk, counts)
            if self.stopping():
                break
        self.finish_stream("cves")

    def address_pages(self, counts: SyncCounts) -> Iterator[list[DeviceCves]]:
        """CVEs reported by IP address, as per-device lists through the addresses of the devices read."""
        by_device: dict[str, dict[str, Cve]] = {}
        for report in self.source.address_cves():
            device_id = self.addresses.get(report.address)
            if device_id is None:
                counts.cves_unmatched += len(report.cves)
                continue
            by_device.setdefault(device_id, {}).update({c.id: c for c in report.cves})
        rows = [DeviceCves(device_id, 0, tuple(cves.values())) for device_id, cves in sorted(by_device.items())]
        for chunk in chunks(rows, 500):
            yield list(chunk)
