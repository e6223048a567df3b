"""The asset index: Table storage rows from what alerts carry to the CI of the device they concern.

Two row families in the device sync's state table (the app may already read and write it; nothing new to
grant), one partition each:

- ``asset-device``: one row per device, keyed by its source and its id there (a sensor's or console's
  device number as the source names it, a cloud device's resource name) — the asset's summary, its CI, its
  open CVEs (merged on their own, as the sync reads them after the devices) and whether it is retired (a
  record can point at a retired CI).
- ``asset-address``: one row per IP address within its site and zone (the same private address in two zones
  is two devices), pointing at the device row.

A row key is the SHA-256 of the key's parts, so nothing an alert or a source says can reach storage as a
key: hostile text is inert, and every key fits the Table service's rules. Each family is spread over
:data:`PARTITIONS` partitions by its row key's first byte, as the sync state is: the Table service's
scalability target is 2,000 entities a second per partition, and Azurite scans a whole partition on each
write (a 100,000-device first sync into one partition a family slowed to a tenth of its speed). A partition's
rows go once it holds 100, and the sync writes the part-full ones only some thousand devices after it
staged them, so its transactions stay nearly full all the same.

Writes go in transactions of 100 in the background (:class:`IndexWriter`); reads are point reads, cached
for a short time (:class:`AssetDirectory`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.assets.model import Asset, cves_columns, normalise_address
from shared.defender.model import Cve
from shared.platform.table_batches import TableBatches

logger = logging.getLogger("shared.assets.index")
DEVICES = "asset-device"
ADDRESSES = "asset-address"
PARTITIONS = 64  # per family, as the sync state's rows (shared.devices.state.SyncState.PARTITIONS)
FOUND_SECONDS = 300.0  # a device's CI changes rarely: a record written within 5 min may show the old one
MISSING_SECONDS = 60.0  # a device not yet synced is found within a minute of its sync
CACHE_SIZE = 10_000


class AssetLookupError(Exception):
    """The index could not be read: the record is written without its CI, and the caller counts it."""


class Table(Protocol):
    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any: ...

    def submit_transaction(self, operations: Iterable[Any], **kwargs: Any) -> Any: ...

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = ..., **kwargs: Any) -> Any: ...


def row_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _spread(family: str, key: str) -> tuple[str, str]:
    return f"{family}-{int(key[:2], 16) % PARTITIONS:02d}", key


def device_row(scope: str, device_id: str) -> tuple[str, str]:
    return _spread(DEVICES, row_key(scope, device_id))


def address_row(site: str, zone: str, address: str) -> tuple[str, str] | None:
    canonical = normalise_address(address)
    return None if canonical is None else _spread(ADDRESSES, row_key(site.casefold(), zone.casefold(), canonical))


class IndexWriter:
    """The rows of confirmed devices, written in transactions of 100 as their partitions fill
    (:class:`~shared.platform.table_batches.TableBatches`); the sync writes the rest where it saves its own
    state (the index is one of its rows' companions), so both say the same of what ServiceNow confirmed."""

    def __init__(self, table: Table) -> None:
        self.batches = TableBatches(table)

    @property
    def calls(self) -> int:
        return self.batches.calls

    def put(self, asset: Asset) -> None:
        """The device's row (its CVEs, if known already, are kept: a merge) and a row per address."""
        self.batches.add(
            *device_row(asset.scope, asset.device_id),
            {"asset": asset.to_json(), "sys_id": asset.sys_id, "retired": asset.retired},
        )
        for address in asset.ips:
            key = address_row(asset.site, asset.zone, address)
            if key is not None:
                self.batches.add(*key, {"scope": asset.scope, "device": asset.device_id}, UpdateMode.REPLACE)

    def cves(self, scope: str, device_id: str, cves: Sequence[Cve]) -> None:
        self.batches.add(*device_row(scope, device_id), cves_columns(cves))

    def retire(self, scope: str, device_id: str) -> None:
        self.batches.add(*device_row(scope, device_id), {"retired": True})

    def flush(self) -> None:
        self.batches.flush()


class AssetDirectory:
    """Point reads of the index, cached per process (found: FOUND_SECONDS, not found: MISSING_SECONDS)."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.clock = clock
        self.cache: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self.lock = threading.Lock()
        self.reads = 0

    def _row(self, key: tuple[str, str]) -> dict[str, Any] | None:
        now = self.clock()
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None and hit[0] > now:
                self.cache.move_to_end(key)
                return hit[1]  # type: ignore[no-any-return]
        try:
            self.reads += 1
            row: dict[str, Any] | None = dict(self.table.get_entity(*key))
        except ResourceNotFoundError:
            row = None
        except AzureError as exc:
            raise AssetLookupError(f"the asset index could not be read: {type(exc).__name__}") from None
        with self.lock:
            self.cache[key] = (now + (FOUND_SECONDS if row else MISSING_SECONDS), row)
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        return row

    def device(self, scope: str, device_id: str) -> Asset | None:
        row = self._row(device_row(scope, device_id))
        return Asset.from_row(row) if row else None

    def address(self, site: str, zone: str, address: str) -> Asset | None:
        key = address_row(site, zone, address)
        pointer = self._row(key) if key else None
        if not pointer or not isinstance(pointer.get("device"), str):
            return None
        asset = self.device(str(pointer.get("scope") or ""), pointer["device"])
        # A device whose address changed leaves its old address row behind until another device takes it.
        return asset if asset is not None and normalise_address(address) in asset.ips else None
