"""What every Defender for IoT source reports, in one shape: devices, sensors, connections and CVEs.

Ids are text: the console numbers its devices, Resource Graph names them with GUIDs, and a locally
managed sensor numbers them on its own (its source prefixes them, so two sensors' device 7 stay two
devices). ``Device.id`` is the Defender device id ServiceNow keys the CI by (``source_native_key``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.contract.model import Alert, SensorRef
from shared.contract.model import AlertDevices as AlertDevices  # noqa: PLC0414 - importable where it was first


def normalise_mac(value: Any) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` (lower case, colons), or None for anything that is not a MAC address."""
    if not isinstance(value, str):
        return None
    digits = "".join(c for c in value.lower() if c in "0123456789abcdef")
    if len(digits) != 12 or len(value.strip()) not in (12, 14, 17):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def text(value: Any) -> str:
    """A record's field as text: None as empty (sources leave optional fields out, or null)."""
    return "" if value is None else str(value)


def objects(value: Any) -> list[dict[str, Any]]:
    """A record's list of objects, without anything else a hostile or careless source put in it."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Firmware:
    model: str = ""
    version: str = ""
    serial: str = ""


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    last_update: int  # epoch milliseconds; 0 when the source does not say
    device_type: str = ""
    vendor: str = ""
    purdue_level: str = ""
    criticality: str = ""  # Defender's (the cloud's Low, Normal, High …); empty where the source has none
    site: str = ""
    zone: str = ""
    sensor: str = ""
    sensor_ids: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()  # confident: usable as identifiers
    guessed_macs: tuple[str, ...] = ()  # seen through a router: never an identifier
    ips: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    firmware: tuple[Firmware, ...] = ()
    first_discovered: int | None = None
    url: str = ""


@dataclass(frozen=True)
class Connection:
    source: str
    target: str
    kind: str = ""
    sensor: str = ""


@dataclass(frozen=True)
class Sensor:
    """A sensor as its source reports it: a CI for the device sync, a health for the alert intake."""

    id: str
    name: str
    connection_state: str = ""  # in the source's words: the cloud's Ok | Disconnected …, the console's SYNCED | …
    version: str = ""
    learning_mode: bool = False
    interface_address: str = ""
    zone: str = ""
    site: str = ""
    connectivity_time: datetime | None = None  # its last contact, where the source says it
    online: bool = True  # what the connection state means, as the source's parser reads it


@dataclass(frozen=True)
class Cve:
    id: str
    score: str = ""
    attack_vector: str = ""
    description: str = ""
    severity: str = ""  # a category where the source gives one (the cloud: Critical, High, Medium, Low, None)


@dataclass(frozen=True)
class DeviceCves:
    """A device's CVEs as its source reports them now (all of them: one missing is one fixed)."""

    device_id: str
    last_update: int
    cves: tuple[Cve, ...] = ()


@dataclass(frozen=True)
class AddressCves:
    """CVEs a locally managed sensor reports for an IP address, not for a device."""

    address: str
    cves: tuple[Cve, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a kind of source can tell the device sync, and how.

    ``incremental``: devices can be read from a watermark (else every read is the whole inventory);
    ``deletions``: a feed of deleted devices, or only their absence from a whole read;
    ``cves``: per device from a watermark, a whole snapshot per device, by IP address, or none.
    """

    incremental: bool
    connections: bool
    deletions: Literal["feed", "absence"]
    cves: Literal["incremental", "snapshot", "by_address", "none"]
    missing: tuple[str, ...] = ()  # what the source cannot provide, said in `sync status`


@dataclass(frozen=True)
class SourceAlert:
    """One alert as a source reports it: the alert message contract's typed alert and sensor, and what the
    intake keeps of it."""

    id: str  # stable across the alert's updates (the cloud's resource name; a sensor's alert id)
    resource_id: str  # the source's handle for writing it back when not its id (an ARM id, the console's UUID)
    started: datetime
    status: str  # the cloud's New | InProgress | Closed; a sensor's or console's handled state as Active | Closed
    alert: Alert
    sensor: SensorRef  # name, and site / zone when the source says them
    protocol: str | None = None
    devices: AlertDevices = field(default_factory=AlertDevices)

    @property
    def closed(self) -> bool:
        return self.status.lower() == "closed"


@dataclass
class ReadReport:
    """What one read saw besides the records: pages, queries and skipped records with their reasons."""

    queries: int = 0
    skipped: list[str] = field(default_factory=list)


class AlertSource(Protocol):
    """A source the alert intake reads: the open alerts, those started since a time, sensor statuses."""

    name: str

    def open_alerts(self, report: ReadReport) -> Iterator[SourceAlert]: ...

    def alerts_started_since(self, since: datetime, report: ReadReport) -> Iterator[SourceAlert]: ...

    def sensor_statuses(self, report: ReadReport) -> list[Sensor]: ...

    def close(self) -> None: ...


class DeviceSource(Protocol):
    """A source the device sync reads. Streams a source lacks (see ``capabilities``) yield nothing."""

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    def sensors(self) -> list[Sensor]: ...

    def device_pages(self, since_ms: int) -> Iterator[list[Device]]:
        """Devices updated after ``since_ms`` (0: all), oldest update first; every device when not incremental."""
        ...

    def connection_pages(self, since_ms: int) -> Iterator[list[Connection]]: ...

    def deleted_devices(self, since_ms: int) -> list[str]: ...

    def cve_pages(self, since_ms: int) -> Iterator[list[DeviceCves]]: ...

    def address_cves(self) -> list[AddressCves]: ...

    def skipped_reasons(self) -> list[str]:
        """Records read but not usable since the last call, each with its reason (and then forgotten)."""
        ...
