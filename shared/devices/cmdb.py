"""The ServiceNow OT data model for what a Defender source reports: IRE items and relations.

As ServiceNow publishes it (ServiceNow/ServiceNowDocs: the OT class model
``cmdb-ci-class-models-operation-technology.md``, ``class-hardware.md``, the IRE reference
``c_IdentifyReconcileAPI.md``, and its own Defender for IoT connector's classes and mappings
``sgc-microsoft-d4iot-azure-classes.md``, ``attribute-mapping-sgc-msft-d4iot-azure.md``):

- Sensors → ``cmdb_ci_nids``; devices → ``cmdb_ci_ot`` or the subclass for their device type (a configurable
  map). Every CI names its source (``sys_object_source_info``: the source's data source and the Defender
  id as native key): the IRE identifies by it first, so a re-run updates instead of duplicating.
- The OT identification rule's lookups: a confident MAC → ``cmdb_ci_network_adapter`` (its name is the MAC,
  as the OT model asks), a serial number → ``cmdb_serial_number`` (type ``system``). A guessed MAC is never
  a lookup, so never an identifier.
- Purdue level, zone, criticality and the site → the device's ``cmdb_ot_entity``, a *related* entry of the OT
  rule (identified by its IRE criterion attribute, the Defender id), which references the device.
- IP addresses → ``cmdb_ci_ip_address`` CIs the device owns (``Owns::Owned by``); the OT model says not to keep
  IP or MAC addresses on the OT CI itself.
- Reference fields take sys_ids: the manufacturer (``core_company``) and the site (``cmdb_ci_ot_isa_entity``)
  are resolved by :class:`~shared.devices.references.References` first, and left out when they cannot be; the
  model is sent as ``model_number`` (text), not ``model_id`` (a reference to a product model).
- Sensor ``Detects::Detected by`` device; device traffic ``Connects to::Connected by``; a deleted device is
  retired (``install_status`` 7), never deleted.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from typing import Any, Protocol

from shared.defender.model import Device, Sensor

DEFAULT_CLASS_MAP = {
    "plc": "cmdb_ci_ot_plc",
    "hmi": "cmdb_ci_ot_hmi",
    "rtu": "cmdb_ci_ot_rtu",
    "dcs controller": "cmdb_ci_ot_dcs",
    "dcs": "cmdb_ci_ot_dcs",
    "scada server": "cmdb_ci_ot_scada_server",
    "engineering station": "cmdb_ci_ot_ews",
    "historian": "cmdb_ci_ot_historian",
    "control module": "cmdb_ci_ot_control_module",
}
DETECTS = "Detects::Detected by"
CONNECTS = "Connects to::Connected by"
OWNS = "Owns::Owned by"
RETIRED = "7"


class Resolver(Protocol):
    """Names → the sys_ids of the records reference fields point at (None: not resolvable)."""

    def company(self, name: str) -> str | None: ...

    def site(self, name: str) -> str | None: ...


class Unresolved:
    """Resolves nothing: the items as Defender describes the device, for its content hash (names are resolved
    only for the devices that changed, when they are written)."""

    def company(self, name: str) -> str | None:
        return None

    def site(self, name: str) -> str | None:
        return None


UNRESOLVED = Unresolved()


def device_hash(device: Device, class_map: Mapping[str, str], data_source: str) -> str:
    """What a device's CIs are made from: unchanged, they need no write."""
    items = device_items(device, class_map, data_source, UNRESOLVED)
    return content_hash(
        {"items": items, "vendor": device.vendor, "site": device.site, "sensors": sorted(device.sensor_ids)}
    )


def device_correlation(device_id: str) -> str:
    return f"dfiot-device:{device_id}"


def sensor_correlation(sensor_id: str) -> str:
    return f"dfiot-sensor:{sensor_id}"


def source_info(data_source: str, native_key: str) -> dict[str, str]:
    return {"source_name": data_source, "source_native_key": native_key}


def content_hash(item: Mapping[str, Any]) -> str:
    """Stable across runs: an unchanged CI has an unchanged hash and costs no write."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def class_for(device: Device, class_map: Mapping[str, str]) -> str:
    overrides = {k.lower(): v for k, v in class_map.items()}
    return overrides.get(device.device_type.lower()) or DEFAULT_CLASS_MAP.get(device.device_type.lower(), "cmdb_ci_ot")


def sensor_item(sensor: Sensor, data_source: str) -> dict[str, Any]:
    return {
        "className": "cmdb_ci_nids",
        "sys_object_source_info": source_info(data_source, f"sensor:{sensor.id}"),
        "values": {
            "name": sensor.name,
            "correlation_id": sensor_correlation(sensor.id),
            "ip_address": sensor.interface_address,
            "connection_state": sensor.connection_state,
            "firmware_version": sensor.version,
            "zone": sensor.zone,
        },
    }


def device_items(
    device: Device, class_map: Mapping[str, str], data_source: str, resolve: Resolver
) -> list[dict[str, Any]]:
    """The device's IRE items: the device first, then the IP addresses it owns (relations: :func:`owned`)."""
    firmware = device.firmware[0] if device.firmware else None
    serial = firmware.serial if firmware else ""
    values = {
        "name": device.name,
        "correlation_id": device_correlation(device.id),
        "serial_number": serial,
        "model_number": firmware.model if firmware else "",
        "firmware_version": firmware.version if firmware else "",
        "install_status": "1",
    }
    if device.vendor and (company := resolve.company(device.vendor)):
        values["manufacturer"] = company
    lookup = [
        {"className": "cmdb_ci_network_adapter", "values": {"name": mac.lower(), "mac_address": mac.lower()}}
        for mac in device.macs
    ]
    if serial:
        lookup.append(
            {
                "className": "cmdb_serial_number",
                "values": {"serial_number": serial, "serial_number_type": "system", "valid": "true"},
            }
        )
    entity = {
        "ire_criterion_attribute": device.id,
        "ot_correlation_id": device.id,
        "purdue_level": device.purdue_level,
        "zone": device.zone,
    }
    if device.site and (site := resolve.site(device.site)):
        entity["isa_entity_site"] = site
    item = {
        "className": class_for(device, class_map),
        "sys_object_source_info": source_info(data_source, device.id),
        "values": values,
        "lookup": lookup,
        "related": [{"className": "cmdb_ot_entity", "values": entity}],
    }
    addresses = [
        {
            "className": "cmdb_ci_ip_address",
            "sys_object_source_info": source_info(data_source, f"ip:{device.id}:{ip}"),
            "values": {"name": ip, "ip_address": ip, "ip_version": _version(ip)},
        }
        for ip in dict.fromkeys(device.ips)
    ]
    return [item, *addresses]


def owned(first: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The device at ``first`` owns the IP addresses after it (``device_items``' order)."""
    return [{"parent": first, "child": first + i, "type": OWNS} for i in range(1, len(items))]


def identity_item(device_id: str, class_name: str, data_source: str) -> dict[str, Any]:
    """Just enough for the IRE to find an existing device (for relations): its class and its source key."""
    return {"className": class_name, "sys_object_source_info": source_info(data_source, device_id), "values": {}}


def retire_item(device_id: str, class_name: str, data_source: str) -> dict[str, Any]:
    return {
        "className": class_name,
        "sys_object_source_info": source_info(data_source, device_id),
        "values": {"install_status": RETIRED},
    }


def _version(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address).version)
    except ValueError:
        return ""
