"""The devices a new record concerns, as the asset index knows them: its Configuration item (``cmdb_ci``), the
other devices (in its description, and in ``task_ci`` when an action asks), what they are and what they are
vulnerable to (the description's asset section and the asset placeholders), and its impact by the CI's
criticality.

The record writer and the group joiner (a group's record, and the group notes timer when it writes one its
opener left) look an alert's devices up when they write a new record, and only then (a repeat or a
resolution does not look again): point reads of the index the device sync writes, cached per process
(:class:`shared.assets.index.AssetDirectory`). The lookup never holds an alert back: a device the sync has not
seen is a record without a CI whose description says so; an index that cannot be read is a record without a
CI, counted (``alerts.assets``, outcome ``failed``) and logged once per :data:`LOG_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared.alerting.rules import Action
from shared.assets.index import AssetDirectory, AssetLookupError
from shared.assets.involved import Involved, Sighting, cve_line, describe, find
from shared.assets.model import Asset
from shared.contract.model import AlertMessage
from shared.defender.model import AlertDevices
from shared.platform import telemetry

logger = logging.getLogger("shared.alerting.assets")
LOG_SECONDS = 300.0  # an index that cannot be read is logged once in this time, however many alerts meet it
SECTION = "Assets (from the CMDB when this record was written):"


@dataclass(frozen=True)
class Lookup:
    """What the index said of one alert's devices; ``failed``: why it could not be read ("" when it could)."""

    sighting: Sighting
    involved: Involved
    failed: str = ""

    def configuration_item(self, action: Action) -> Asset | None:
        """The device of the action's role; when the alert names no device of that role, its other device (a
        scan names its source only), else the one device a cloud alert lists without telling roles apart."""
        involved = self.involved
        role = action.configuration_item
        other = "source" if role == "destination" else "destination"
        if role in involved.named:
            return involved.asset(role)
        if other in involved.named:
            return involved.asset(other)
        return involved.others[0] if len(involved.others) == 1 else None

    def affected(self, action: Action) -> tuple[str, ...]:
        """The CIs of the alert's devices other than the Configuration item (for ``task_ci``)."""
        primary = self.configuration_item(action)
        found = [self.involved.source, self.involved.destination, *self.involved.others]
        return tuple(dict.fromkeys(a.sys_id for a in found if a is not None and a is not primary and a.sys_id))


@dataclass(frozen=True)
class AssetFields:
    """What the lookup adds to one action's new record."""

    values: Mapping[str, str]  # the asset placeholders, and ``details`` with the asset section
    cmdb_ci: str = ""
    impact: int | None = None
    affected: tuple[str, ...] = ()  # sys_ids for task_ci (only when the action asks for it)


def sighting_of(message: AlertMessage, scopes: Mapping[str, str]) -> Sighting | None:
    """What the alert says of its devices, or None when it names none. Device ids are the ones the intake took
    from a source (``origin.devices``), in the scope of that source's device sync; a message a sensor-side
    sender put on the queue names its devices by address only (its device numbers are the sensor's own)."""
    alert = message.alert
    if message.kind != "alert" or alert is None:
        return None
    origin = message.origin
    sighting = Sighting(
        scope=scopes.get(origin.source, origin.source) if origin else "",
        devices=origin.devices if origin else AlertDevices(),
        source_address=alert.source_address,
        destination_address=alert.destination_address,
        site=message.sensor.site or "",
        zone=message.sensor.zone or "",
    )
    devices = sighting.devices
    named = devices.source or devices.destination or devices.related
    return sighting if named or alert.source_address or alert.destination_address else None


class AssetLookup:
    """The forwarder's one view of the asset index. ``scopes``: each Defender source's name → the scope its
    device sync keeps its devices under (the legacy console's: "")."""

    def __init__(
        self, directory: AssetDirectory, scopes: Mapping[str, str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = directory
        self.scopes = dict(scopes)
        self.clock = clock
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def find(self, message: AlertMessage) -> Lookup | None:
        sighting = sighting_of(message, self.scopes)
        if sighting is None:
            return None
        try:
            involved = find(self.directory, sighting)
        except Exception as exc:  # whatever the index does, the record is written without its CI
            reason = str(exc) if isinstance(exc, AssetLookupError) else type(exc).__name__
            named = tuple(r for r in ("source", "destination") if sighting.address(r) or _id(sighting, r))
            self.failed(reason)
            return Lookup(sighting, Involved(named=named), failed=reason)
        return Lookup(sighting, involved)

    def for_record(
        self, message: AlertMessage, action: Action, details: str, link: Callable[[str, str], str]
    ) -> AssetFields | None:
        """What a new record of ``action`` takes from the index (None: the alert names no device); ``details``: the
        description the asset section joins, ``link``: a CI's (class, sys_id) → its address on the instance."""
        lookup = self.find(message)
        if lookup is None:
            return None
        return asset_fields(lookup, action, details, lambda a: f"CI: {link(a.ci_class, a.sys_id)}")

    def affect(self, affect: Callable[[str, str], object], sys_id: str, fields: AssetFields | None) -> None:
        """The record's other CIs (``fields.affected``, from :meth:`for_record`) in its Affected CIs list
        (``affect(record, ci)``), once the record is accounted for: a failure here leaves the list short (counted
        and logged), never the record unwritten or twice."""
        for ci in fields.affected if fields is not None else ():
            try:
                affect(sys_id, ci)
            except Exception as exc:  # the record is written; the list is the lesser part
                self.failed(f"an Affected CI of {sys_id} was not written: {exc}", "affected_ci_failed")

    def failed(self, reason: str, outcome: str = "failed") -> None:
        telemetry.ALERT_ASSETS.add(1, {"outcome": outcome})
        now = self.clock()
        with self._lock:
            if self._logged_at is not None and now - self._logged_at < LOG_SECONDS:
                return
            self._logged_at = now
        logger.warning(
            "asset lookup: %s; records are written without their CI (logged once per %.0f s; alerts.assets counts "
            "each)",
            reason,
            LOG_SECONDS,
        )


def _id(sighting: Sighting, role: str) -> str | None:
    return sighting.devices.source if role == "source" else sighting.devices.destination


def asset_fields(
    lookup: Lookup, action: Action, details: str, link: Callable[[Asset], str], *, count: bool = True
) -> AssetFields:
    """One action's asset values: its Configuration item, the placeholders, the description with the asset
    section, the impact by the CI's criticality, and the other CIs when the action lists affected CIs."""
    ci = lookup.configuration_item(action)
    if lookup.failed:
        section = f"The asset index could not be read when this record was written ({lookup.failed})."
    else:
        section = describe(lookup.involved, lookup.sighting, link)
        if count:
            telemetry.ALERT_ASSETS.add(1, {"outcome": "linked" if ci is not None else "not_in_cmdb"})
    values = {
        "ci": ci.name if ci else "",
        "ci_class": ci.ci_class if ci else "",
        "purdue_level": ci.purdue_level if ci else "",
        "criticality": ci.criticality if ci else "",
        "cves": cve_line(ci) if ci else "",
        "assets": section,
        "details": f"{details}\n\n{SECTION}\n{section}" if section else details,
    }
    impact = action.impact_from_criticality.get(ci.criticality.strip().casefold()) if ci else None
    affected = lookup.affected(action) if action.affected_cis and not lookup.failed else ()
    return AssetFields(values, ci.sys_id if ci else "", impact, affected)
