"""One asset as the index keeps it: the CI ServiceNow gave the device, and what the description shows of it."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared.defender.model import Cve, Device

TOP_CVES = 5  # shown by score; the rest are counted
MAX_LISTED = 8  # addresses of one device the summary keeps (a router can have dozens)


def normalise_address(value: Any) -> str | None:
    """An IP address in its canonical text (``10.1.0.5``, ``fe80::1``), or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _score(cve: Cve) -> float:
    try:
        return float(cve.score)
    except ValueError:
        return -1.0


@dataclass(frozen=True)
class Vulnerability:
    id: str
    score: str = ""
    severity: str = ""


@dataclass(frozen=True)
class Asset:
    """``scope``: the device sync source the device came from ("" for the legacy console); ``device_id``: the
    source's id of it (the CI's source native key)."""

    scope: str
    device_id: str
    sys_id: str
    ci_class: str
    name: str
    ips: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    device_type: str = ""
    purdue_level: str = ""
    criticality: str = ""
    site: str = ""
    zone: str = ""
    vendor: str = ""
    model: str = ""
    firmware: str = ""
    cves: tuple[Vulnerability, ...] = ()  # the top TOP_CVES by score
    cve_count: int = 0  # all of the device's open CVEs
    retired: bool = False

    @classmethod
    def of(cls, scope: str, device: Device, sys_id: str, ci_class: str) -> Asset:
        first = device.firmware[0] if device.firmware else None
        return cls(
            scope=scope,
            device_id=device.id,
            sys_id=sys_id,
            ci_class=ci_class,
            name=device.name,
            ips=tuple(a for a in map(normalise_address, device.ips) if a)[:MAX_LISTED],
            macs=device.macs[:MAX_LISTED],
            device_type=device.device_type,
            purdue_level=device.purdue_level,
            criticality=device.criticality,
            site=device.site,
            zone=device.zone,
            vendor=device.vendor,
            model=first.model if first else "",
            firmware=first.version if first else "",
        )

    def to_json(self) -> str:
        document = asdict(self)
        for name in ("cves", "cve_count", "retired"):  # kept in their own columns, changed on their own
            document.pop(name)
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Asset | None:
        """The asset of an index row, or None when the row holds none (only CVEs merged before the device)."""
        text = row.get("asset")
        if not isinstance(text, str):
            return None
        try:
            document = json.loads(text)
            cves = tuple(Vulnerability(**v) for v in json.loads(row.get("cves") or "[]"))
            known = {name for name in cls.__dataclass_fields__ if name not in ("cves", "cve_count", "retired")}
            values: dict[str, Any] = {
                k: tuple(v) if isinstance(v, list) else v for k, v in document.items() if k in known
            }
            return cls(**values, cves=cves, cve_count=int(row.get("cve_count") or 0), retired=bool(row.get("retired")))
        except (TypeError, ValueError):
            return None  # a row this version cannot read is a device not found, never an error of the alert


def top_cves(cves: Iterable[Cve]) -> tuple[tuple[Vulnerability, ...], int]:
    """The device's CVEs worth showing (highest score first, then by id) and how many it has."""
    unique = {c.id: c for c in cves}
    ranked = sorted(unique.values(), key=lambda c: (-_score(c), c.id))
    return tuple(Vulnerability(c.id, c.score, c.severity) for c in ranked[:TOP_CVES]), len(unique)


def cves_columns(cves: Sequence[Cve]) -> dict[str, Any]:
    shown, count = top_cves(cves)
    return {"cves": json.dumps([asdict(v) for v in shown], separators=(",", ":")), "cve_count": count}
