"""The devices one alert concerns, found in the index, and what its record says of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.assets.index import AssetDirectory
from shared.assets.model import Asset, normalise_address
from shared.defender.model import AlertDevices

ROLES = ("source", "destination")


@dataclass(frozen=True)
class Sighting:
    """What an alert says of its devices: the ids its source's sync gives them, and their addresses within
    the alert's site and zone. ``scope``: the device sync source whose ids these are."""

    scope: str
    devices: AlertDevices
    source_address: str | None = None
    destination_address: str | None = None
    site: str = ""
    zone: str = ""

    def address(self, role: str) -> str | None:
        return self.source_address if role == "source" else self.destination_address


@dataclass(frozen=True)
class Involved:
    """The alert's devices as found (None: named by the alert, not in the CMDB; absent from ``named``: the
    alert does not name it)."""

    source: Asset | None = None
    destination: Asset | None = None
    named: tuple[str, ...] = ()  # the roles the alert names a device for
    others: tuple[Asset, ...] = ()  # a cloud alert's devices found that took no role (no address to tell by)

    def asset(self, role: str) -> Asset | None:
        return self.source if role == "source" else self.destination

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(role for role in self.named if self.asset(role) is None)


def find(directory: AssetDirectory, sighting: Sighting) -> Involved:
    """Each role by its device id, else by its address within the site and zone; a cloud alert's devices
    (which it does not tell apart) take the role whose address they have. Raises AssetLookupError."""
    found: dict[str, Asset | None] = {}
    ids = {"source": sighting.devices.source, "destination": sighting.devices.destination}
    related = [a for a in (directory.device(sighting.scope, r) for r in sighting.devices.related) if a is not None]
    for role in ROLES:
        address = normalise_address(sighting.address(role))
        # A device of the alert takes one role: of two with the same address (two zones), each takes one.
        free = [a for a in related if a is not found.get("source")]
        if ids[role]:
            found[role] = directory.device(sighting.scope, str(ids[role]))
        elif address and (match := next((a for a in free if address in a.ips), None)) is not None:
            found[role] = match
        elif address:
            found[role] = directory.address(sighting.site, sighting.zone, address)
    named = tuple(role for role in ROLES if ids[role] or sighting.address(role))
    taken = {a.sys_id for a in found.values() if a is not None}
    others = tuple({a.sys_id: a for a in related if a.sys_id not in taken}.values())
    return Involved(found.get("source"), found.get("destination"), named, others)


def summary(asset: Asset) -> str:
    """One line of what the asset is: name, class, addresses, level, criticality, place, make."""
    parts = [f"{asset.name} ({asset.ci_class})"]
    if asset.ips or asset.macs:
        parts.append(" / ".join((*asset.ips, *asset.macs)))
    facts = [
        f"Purdue level {asset.purdue_level}" if asset.purdue_level else "",
        f"criticality {asset.criticality}" if asset.criticality else "",
        " / ".join(p for p in (asset.site, asset.zone) if p),
        " ".join(p for p in (asset.vendor, asset.model) if p),
        f"firmware {asset.firmware}" if asset.firmware else "",
        "retired in the CMDB" if asset.retired else "",
    ]
    return "; ".join([", ".join(parts), *(f for f in facts if f)])


def cve_line(asset: Asset) -> str:
    if not asset.cve_count:
        return "no open CVEs known"
    shown = ", ".join(f"{v.id} ({v.score or v.severity or 'unscored'})" for v in asset.cves)
    more = asset.cve_count - len(asset.cves)
    return f"{asset.cve_count} open CVEs: {shown}" + (f" and {more} more" if more > 0 else "")


def describe(involved: Involved, sighting: Sighting, link: Callable[[Asset], str]) -> str:
    """The description's asset section: each device the alert names, found or not."""
    lines: list[str] = []
    for role in involved.named:
        asset = involved.asset(role)
        label = role.capitalize()
        if asset is None:
            named = sighting.devices.source if role == "source" else sighting.devices.destination
            what = sighting.address(role) or str(named or "")
            lines.append(f"{label} device {what}: not in the CMDB when this record was written.")
            continue
        lines += [f"{label}: {summary(asset)}", f"  {cve_line(asset)}", f"  {link(asset)}"]
    for asset in involved.others:
        lines += [f"Device: {summary(asset)}", f"  {cve_line(asset)}", f"  {link(asset)}"]
    return "\n".join(lines)
