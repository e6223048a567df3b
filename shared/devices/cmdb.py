"""The ServiceNow OT data model for what a Defender source reports: IRE items and relations.

Sensors → ``cmdb_ci_nids``; devices → ``cmdb_ci_ot`` or the subclass for their device type (a
configurable map); confident MAC addresses → ``cmdb_ci_network_adapter`` lookups and IPs →
``cmdb_ci_ip_address`` lookups, owned by the device (a guessed MAC is never a lookup, so never an
identifier); Purdue level, zone and site → ``cmdb_ot_entity``; sensor ``Detects::Detected by`` device;
device traffic ``Connects to::Connected by``; a deleted device is retired (``install_status`` 7),
never deleted. Every CI carries a ``correlation_id`` derived from the Defender id, the first
identifier the IRE tries, so re-runs update instead of duplicating; and its source (IRE
``sys_object_source_info``: the data source and the Defender id as the native key), the key
ServiceNow's own Defender for IoT connector and OT Vulnerability Response match CIs by.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

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
RETIRED = "7"


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
            "learning_mode": "true" if sensor.learning_mode else "false",
        },
    }


def device_item(device: Device, class_map: Mapping[str, str], data_source: str) -> dict[str, Any]:
    firmware = device.firmware[0] if device.firmware else None
    values = {
        "name": device.name,
        "correlation_id": device_correlation(device.id),
        "manufacturer": device.vendor,
        "ip_address": device.ips[0] if device.ips else "",
        "mac_address": device.macs[0] if device.macs else "",
        "serial_number": firmware.serial if firmware else "",
        "model_id": firmware.model if firmware else "",
        "firmware_version": firmware.version if firmware else "",
        "install_status": "1",
    }
    lookup = [
        {"className": "cmdb_ci_network_adapter", "values": {"name": mac, "mac_address": mac}} for mac in device.macs
    ]
    lookup += [{"className": "cmdb_ci_ip_address", "values": {"name": ip, "ip_address": ip}} for ip in device.ips]
    lookup.append(
        {
            "className": "cmdb_ot_entity",
            "values": {
                "ot_correlation_id": device_correlation(device.id),
                "purdue_level": device.purdue_level,
                "zone": device.zone,
                "site": device.site,
            },
        }
    )
    return {
        "className": class_for(device, class_map),
        "sys_object_source_info": source_info(data_source, device.id),
        "values": values,
        "lookup": lookup,
    }


def identity_item(device_id: str) -> dict[str, Any]:
    """Just enough for the IRE to find an existing device (for relations and retirement)."""
    return {"className": "cmdb_ci_ot", "values": {"correlation_id": device_correlation(device_id)}}


def retire_item(device_id: str) -> dict[str, Any]:
    return {
        "className": "cmdb_ci_ot",
        "values": {"correlation_id": device_correlation(device_id), "install_status": RETIRED},
    }
