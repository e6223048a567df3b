"""The device sync's settings: whether it runs, how often, through which ServiceNow connection, from which
sources; and the legacy ``CONSOLE_*`` settings of one management console."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.defender.settings import OVERLAP_MINUTES, ConsoleSourceSettings, SourceSettings
from shared.platform.settings import ProxyUrl, Reader, declare, parse_ca_bundle, parse_proxy_url, refuse_placeholder
from shared.servicenow.settings import ServiceNowConnection

declare(
    "DEVICE_SYNC_ENABLED",
    "DEVICE_SYNC_FREQUENCY_MINUTES",
    "DEVICE_SYNC_CONNECTION",
    "DEVICE_SYNC_STATE_TABLE",
    "DEVICE_SYNC_DATA_SOURCE",
    "DEVICE_SYNC_BATCH_SIZE",
    "DEVICE_SYNC_PAGE_SIZE",
    "DEVICE_SYNC_CONCURRENCY",
    "DEVICE_SYNC_CLASS_MAP",
    "DEVICE_SYNC_ABSENCE_HOURS",
    "DEVICE_SYNC_CLOUD_DATA_SOURCES",
    "CONSOLE_URL",
    "CONSOLE_CA_BUNDLE",
    "CONSOLE_PROXY_URL",
    "CONSOLE_TOKEN_SECRET",
)


@dataclass(frozen=True)
class DeviceSyncSettings:
    """The device sync: the sources it reads and how often it runs."""

    enabled: bool = False
    frequency_minutes: int = 60
    console_url: str = ""
    console_ca_bundle: Path | None = None
    console_proxy: ProxyUrl | None = None
    console_token_secret: str = "defender-console-api-token"  # noqa: S105 - the secret's name, not a secret
    connection: str = "default"
    state_table: str = "devicesync"
    data_source: str = "MicrosoftDefenderForIoT"
    batch_size: int = 100
    page_size: int = 500
    concurrency: int = 12  # ServiceNow writes in flight at once (within the connection's budget, at low priority)
    class_map: Mapping[str, str] = field(default_factory=dict)
    absence_hours: float = 24.0  # a device missing this long from a source without a deletions feed is retired
    sources: tuple[SourceSettings, ...] = ()  # every source the sync reads (DEFENDER_SOURCES, CONSOLE_URL)
    overlap_minutes: float = OVERLAP_MINUTES  # incremental cloud reads reach back this far (shared.defender.settings)
    # The cloud's deviceDataSource values that become CIs: OT sensors' devices only, as Microsoft's own samples
    # and ServiceNow's connector read them (Defender for Endpoint's or enterprise sensors' are not OT assets).
    cloud_data_sources: tuple[str, ...] = ("OtSensor",)


# deviceDataSource as the REST spec (devices.json) and later Microsoft material name it.
CLOUD_DATA_SOURCES = ("OtSensor", "CorpSensor", "Mde", "MicroAgent", "Other")


def _check_schedule(reader: Reader) -> tuple[bool, int]:
    raw_enabled = (reader.raw("DEVICE_SYNC_ENABLED") or "false").lower()
    if raw_enabled not in ("true", "false", "1", "0"):
        reader.fail(f"DEVICE_SYNC_ENABLED={raw_enabled!r} is invalid; expected true or false")
    frequency_text = reader.raw("DEVICE_SYNC_FREQUENCY_MINUTES") or "60"
    if not frequency_text.isdigit() or int(frequency_text) < 5:
        reader.fail(
            f"DEVICE_SYNC_FREQUENCY_MINUTES={frequency_text!r} is invalid; expected whole minutes, at least 5 "
            "(the console is polled, and more often than every 5 minutes only loads it)"
        )
        return raw_enabled in ("true", "1"), 60
    return raw_enabled in ("true", "1"), int(frequency_text)


def _check_console(reader: Reader) -> tuple[str, Path | None, ProxyUrl | None]:
    """The legacy CONSOLE_URL, CONSOLE_CA_BUNDLE and CONSOLE_PROXY_URL."""
    console_url = reader.raw("CONSOLE_URL") or ""
    if console_url and urlsplit(console_url).scheme != "https":
        reader.fail(f"CONSOLE_URL={console_url!r} is invalid; expected https://<management console>")
    elif console_url:
        try:
            refuse_placeholder(console_url, "CONSOLE_URL")
        except ValueError as exc:
            reader.fail(str(exc))
    return (
        console_url,
        reader.parsed("CONSOLE_CA_BUNDLE", parse_ca_bundle),
        reader.parsed("CONSOLE_PROXY_URL", parse_proxy_url),
    )


def _check_class_map(reader: Reader) -> dict[str, str]:
    if (raw_map := reader.raw("DEVICE_SYNC_CLASS_MAP")) is None:
        return {}
    try:
        class_map = json.loads(raw_map)
        if not isinstance(class_map, dict) or not all(isinstance(v, str) for v in class_map.values()):
            raise ValueError
    except ValueError:
        reader.fail('DEVICE_SYNC_CLASS_MAP is invalid; expected a JSON object such as {"PLC": "cmdb_ci_ot_plc"}')
        return {}
    return class_map


def check_device_sync(
    reader: Reader,
    connections: tuple[ServiceNowConnection, ...],
    defender_sources: tuple[SourceSettings, ...],
    overlap_minutes: float = OVERLAP_MINUTES,
) -> DeviceSyncSettings:
    enabled, frequency = _check_schedule(reader)
    console_url, ca_bundle, proxy = _check_console(reader)
    connection = reader.raw("DEVICE_SYNC_CONNECTION") or (connections[0].name if connections else "default")
    if enabled and connections and connection not in {c.name for c in connections}:
        reader.fail(f"DEVICE_SYNC_CONNECTION={connection!r} is not in SERVICENOW_CONNECTIONS")
    class_map = _check_class_map(reader)
    token_secret = reader.raw("CONSOLE_TOKEN_SECRET") or DeviceSyncSettings.console_token_secret
    sources = tuple(s for s in defender_sources if s.devices)
    if console_url:  # the console of the CONSOLE_* settings: one source more, keeping its state as it was
        if "console" in {s.name for s in defender_sources}:
            reader.fail(
                "CONSOLE_URL describes a source named 'console', and DEFENDER_SOURCES has one too; "
                "rename that one, or describe the console in DEFENDER_SOURCES only"
            )
        legacy = ConsoleSourceSettings(
            "console", console_url.rstrip("/"), token_secret, ca_bundle, proxy, alerts=False, legacy=True
        )
        sources = (legacy, *sources)
    if enabled and not sources:
        reader.fail(
            "DEVICE_SYNC_ENABLED is true but no source reads devices; set DEFENDER_SOURCES (a cloud, sensor or "
            "console source) or CONSOLE_URL (a management console's https:// URL)"
        )
    return DeviceSyncSettings(
        enabled=enabled,
        frequency_minutes=frequency,
        console_url=console_url.rstrip("/"),
        console_ca_bundle=ca_bundle,
        console_proxy=proxy,
        console_token_secret=token_secret,
        connection=connection,
        state_table=reader.raw("DEVICE_SYNC_STATE_TABLE") or DeviceSyncSettings.state_table,
        data_source=reader.raw("DEVICE_SYNC_DATA_SOURCE") or DeviceSyncSettings.data_source,
        batch_size=reader.integer("DEVICE_SYNC_BATCH_SIZE", 100, 1, 1000),
        page_size=reader.integer("DEVICE_SYNC_PAGE_SIZE", 500, 10, 10_000),
        concurrency=reader.integer("DEVICE_SYNC_CONCURRENCY", 12, 1, 64),
        class_map=class_map,
        absence_hours=reader.number("DEVICE_SYNC_ABSENCE_HOURS", 24.0, 1, 24 * 90),
        sources=sources,
        overlap_minutes=overlap_minutes,
        cloud_data_sources=_check_cloud_data_sources(reader),
    )


def _check_cloud_data_sources(reader: Reader) -> tuple[str, ...]:
    raw = reader.raw("DEVICE_SYNC_CLOUD_DATA_SOURCES")
    if raw is None:
        return DeviceSyncSettings.cloud_data_sources
    by_name = {name.lower(): name for name in CLOUD_DATA_SOURCES}
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown or not names:
        reader.fail(
            f"DEVICE_SYNC_CLOUD_DATA_SOURCES={raw!r} is invalid; expected a comma-separated list of "
            f"{', '.join(CLOUD_DATA_SOURCES)} (Resource Graph's deviceDataSource values)"
        )
        return DeviceSyncSettings.cloud_data_sources
    return tuple(dict.fromkeys(by_name[name.lower()] for name in names))
