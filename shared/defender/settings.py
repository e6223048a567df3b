"""The Defender sources' settings (``DEFENDER_SOURCES``): the cloud, locally managed sensors and legacy
management consoles, and how far their reads reach back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.platform.settings import (
    CONNECTION_NAME_PATTERN,
    SECRET_NAME_PATTERN,
    Credential,
    ProxyUrl,
    Reader,
    declare,
    parse_ca_bundle,
    parse_credential,
    parse_proxy_url,
    refuse_placeholder,
)

declare("DEFENDER_SOURCES", "ALERT_INTAKE_OVERLAP_MINUTES")

# How far the intake and the cloud device reads reach back behind their watermarks: Microsoft documents that
# Defender's data can show up to an hour late, and an alert that opens and closes inside a shorter reach-back
# is never seen (docs/platform-checks.md).
OVERLAP_MINUTES = 60.0


@dataclass(frozen=True)
class CloudSourceSettings:
    """A cloud source: Defender for IoT's data in Azure Resource Graph, for these subscriptions.

    ``resource_graph_url`` is Azure Resource Manager (locally, the emulator); ``credential`` how the app
    signs in to it: its managed identity, a developer's sign-in, or, for a localhost emulator only, a
    fixed token."""

    name: str
    subscriptions: tuple[str, ...]
    resource_graph_url: str = "https://management.azure.com"
    credential: Credential = "managed_identity"
    ca_bundle: Path | None = None
    client_id: str | None = None  # the user-assigned managed identity (AZURE_CLIENT_ID)
    devices: bool = True  # the device sync reads it
    alerts: bool = True  # the alert intake reads it
    data_source: str | None = None  # the CIs' source name; DEVICE_SYNC_DATA_SOURCE when not set
    # Write-back by the alert's learn action: no public contract documents it, so only on request (and a
    # refusal closes the alert with PATCH status=Closed, the documented write, instead).
    learn: bool = False
    kind: Literal["cloud"] = "cloud"


@dataclass(frozen=True)
class SensorSourceSettings:
    """A locally managed sensor, read through its own REST API with an API token kept in Key Vault.

    ``site`` and ``zone`` say where it is: a locally managed sensor does not report them."""

    name: str
    url: str
    token_secret: str
    ca_bundle: Path | None = None
    proxy: ProxyUrl | None = None
    site: str = ""
    zone: str = ""
    alerts_api: Literal["v1", "v2"] = "v2"
    devices: bool = True
    alerts: bool = True
    data_source: str | None = None
    kind: Literal["sensor"] = "sensor"


@dataclass(frozen=True)
class ConsoleSourceSettings:
    """A legacy on-premises management console: devices (integration API v3), alerts and sensor health.

    ``legacy`` marks the one the ``CONSOLE_*`` settings describe: its sync state keeps its old keys, and
    it stays a device source only, as it was (its alerts may already reach the queue another way)."""

    name: str
    url: str
    token_secret: str = "defender-console-api-token"  # noqa: S105 - the secret's name, not a secret
    ca_bundle: Path | None = None
    proxy: ProxyUrl | None = None
    devices: bool = True
    alerts: bool = True
    data_source: str | None = None
    legacy: bool = False
    kind: Literal["console"] = "console"


SourceSettings = CloudSourceSettings | SensorSourceSettings | ConsoleSourceSettings

SUBSCRIPTION_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
COMMON_FIELDS = {"name", "kind", "devices", "alerts", "data_source"}
SOURCE_FIELDS = {
    "cloud": COMMON_FIELDS | {"subscriptions", "resource_graph_url", "credential", "ca_bundle", "learn"},
    "sensor": COMMON_FIELDS | {"url", "token_secret", "ca_bundle", "proxy_url", "site", "zone", "alerts_api"},
    "console": COMMON_FIELDS | {"url", "token_secret", "ca_bundle", "proxy_url"},
}
SOURCE_KINDS = (
    "'cloud' (Azure Resource Graph: cloud-connected sensors), 'sensor' (a locally managed sensor's API) "
    "or 'console' (a legacy management console)"
)


def read_overlap_minutes(reader: Reader) -> float:
    """ALERT_INTAKE_OVERLAP_MINUTES: both the intake and the cloud device reads reach back this far."""
    return reader.number("ALERT_INTAKE_OVERLAP_MINUTES", OVERLAP_MINUTES, 0, 24 * 60)


def _flag(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}.{key}={value!r} is invalid; expected true or false")
    return value


def _https_url(raw: dict[str, Any], key: str, where: str, example: str) -> str:
    url = raw.get(key)
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{where}.{key}={url!r} is invalid; expected {example} (https, no credentials)")
    refuse_placeholder(str(url), f"{where}.{key}")
    return str(url).rstrip("/")


def _secret_name(raw: dict[str, Any], where: str, default: str) -> str:
    name = raw.get("token_secret", default)
    if not isinstance(name, str) or not SECRET_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{where}.token_secret={name!r} is invalid; expected a Key Vault secret name (letters, digits, -)"
        )
    return name


def parse_source(raw: Any, index: int, client_id: str | None) -> SourceSettings:
    """One item of DEFENDER_SOURCES; a ValueError names the first thing wrong with it."""
    where = f"DEFENDER_SOURCES[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is a {type(raw).__name__}; expected an object")
    name = raw.get("name")
    if not isinstance(name, str) or not CONNECTION_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{where}.name={name!r} is invalid; expected 1-32 lower-case letters, digits or dashes")
    where = f"DEFENDER_SOURCES[{name}]"
    kind = raw.get("kind")
    if kind not in SOURCE_FIELDS:
        raise ValueError(f"{where}.kind={kind!r} is not supported; expected {SOURCE_KINDS}")
    unknown = sorted(set(raw) - SOURCE_FIELDS[kind])
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; expected only {sorted(SOURCE_FIELDS[kind])}")
    devices = _flag(raw, "devices", True, where)
    data_source = raw.get("data_source")
    if data_source is not None and (not isinstance(data_source, str) or not data_source.strip()):
        raise ValueError(f"{where}.data_source must be a ServiceNow discovery source name")
    ca_bundle = parse_ca_bundle(str(raw["ca_bundle"]), f"{where}.ca_bundle") if raw.get("ca_bundle") else None
    if kind == "cloud":
        return _parse_cloud(raw, where, client_id, ca_bundle, devices, data_source, name)
    proxy = parse_proxy_url(str(raw["proxy_url"]), f"{where}.proxy_url") if raw.get("proxy_url") else None
    if kind == "console":
        url = _https_url(raw, "url", where, "https://<management console>")
        token = _secret_name(raw, where, f"defender-console-{name}-token")
        alerts = _flag(raw, "alerts", True, where)
        return ConsoleSourceSettings(name, url, token, ca_bundle, proxy, devices, alerts, data_source)
    url = _https_url(raw, "url", where, "https://<sensor address>")
    alerts_api = raw.get("alerts_api", "v2")
    if alerts_api not in ("v1", "v2"):
        raise ValueError(f"{where}.alerts_api={alerts_api!r} is invalid; expected v1 or v2")
    place = {key: raw.get(key, "") for key in ("site", "zone")}
    if not all(isinstance(v, str) for v in place.values()):
        raise ValueError(f"{where}.site and .zone must be text")
    return SensorSourceSettings(
        name,
        url,
        _secret_name(raw, where, f"defender-sensor-{name}-token"),
        ca_bundle,
        proxy,
        place["site"],
        place["zone"],
        alerts_api,
        devices,
        _flag(raw, "alerts", True, where),
        data_source,
    )


def _parse_cloud(
    raw: dict[str, Any],
    where: str,
    client_id: str | None,
    ca_bundle: Path | None,
    devices: bool,
    data_source: str | None,
    name: str,
) -> CloudSourceSettings:
    subscriptions = raw.get("subscriptions")
    if (
        not isinstance(subscriptions, list)
        or not subscriptions
        or not all(isinstance(s, str) and SUBSCRIPTION_PATTERN.fullmatch(s) for s in subscriptions)
    ):
        raise ValueError(f"{where}.subscriptions must be a non-empty list of subscription ids (GUIDs)")
    url = str(raw.get("resource_graph_url") or CloudSourceSettings.resource_graph_url).rstrip("/")
    host = urlsplit(url).hostname
    if urlsplit(url).scheme != "https" or not host:
        raise ValueError(f"{where}.resource_graph_url={url!r} is invalid; expected https://management.azure.com")
    credential = parse_credential(
        raw.get("credential", "managed_identity"),
        f"{where}.credential",
        host,
        f"{where}.credential 'emulator' is for a localhost Resource Graph emulator only",
    )
    alerts = _flag(raw, "alerts", True, where)
    return CloudSourceSettings(
        name,
        tuple(subscriptions),
        url,
        credential,
        ca_bundle,
        client_id,
        devices,
        alerts,
        data_source,
        _flag(raw, "learn", False, where),
    )


def check_sources(reader: Reader) -> tuple[SourceSettings, ...]:
    """DEFENDER_SOURCES (none when unset); a cloud source signs in as AZURE_CLIENT_ID's identity."""
    raw = reader.raw("DEFENDER_SOURCES")
    if raw is None:
        return ()
    client_id = reader.raw("AZURE_CLIENT_ID")
    sources = reader.json_items(
        "DEFENDER_SOURCES", raw, lambda item, index: parse_source(item, index, client_id), "source objects"
    )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        reader.fail("DEFENDER_SOURCES names must be unique")
    return tuple(sources)
