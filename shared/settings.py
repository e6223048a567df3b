"""The app's settings: every package's schema, read once from the environment at start-up, validated once.

The schemas live beside what they configure (``shared.servicenow.settings``, ``shared.defender.settings``,
``shared.devices.settings``, ``shared.alerting.settings``, ``shared.http.settings``; the reader, storage and
Key Vault in ``shared.platform.settings``); this module composes them, checks what spans them, and stops
start-up with every problem at once (:class:`~shared.platform.settings.SettingsError`). It sits between the
composition root and the domain packages: nothing below it takes the whole :class:`Settings`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shared.alerting.settings import ForwardingSettings, IntakeSettings, check_forwarding, check_intake
from shared.defender.settings import (
    OVERLAP_MINUTES,
    SensorSourceSettings,
    check_sources,
    read_overlap_minutes,
)
from shared.devices.settings import DeviceSyncSettings, check_device_sync
from shared.http.settings import HttpSettings, read_http_settings
from shared.platform.imports import late_imports
from shared.platform.settings import (
    KeyVaultSettings,
    Reader,
    SettingsError,
    StorageConnection,
    check_key_vault,
    check_queue_name,
    check_schedule,
    check_storage_connection,
    declare,
    declare_prefix,
    is_declared,
    known_settings,
)
from shared.servicenow.settings import (
    OAUTH_MODES,
    ServiceNowConnection,
    TokenSettings,
    check_connections,
    read_network,
    read_tokens,
)

declare("ALERTS_QUEUE", "ALERTS_STORAGE", "TOKEN_REFRESH_SCHEDULE", "DEVICE_SYNC_SCHEDULE", "ALERT_INTAKE_SCHEDULE")
# The identity-based form of a storage connection: the host reads <NAME>__queueServiceUri, __clientId, …
declare_prefix("ALERTS_STORAGE__")
# A setting with one of these prefixes that no schema declares is a typo or left over.
PREFIXES = (
    "ALERTS_",
    "ALERT_INTAKE_",
    "DEFENDER_",
    "SERVICENOW_",
    "FORWARDING_",
    "DEVICE_SYNC_",
    "CONSOLE_",
    "KEY_VAULT_",
    "TOKEN_",
)


@dataclass(frozen=True)
class Settings:
    alerts_queue: str
    token_refresh_schedule: str
    device_sync_schedule: str
    connections: tuple[ServiceNowConnection, ...]
    http: HttpSettings = field(
        default_factory=HttpSettings
    )  # every outbound client's timeouts and retries (shared.http.settings)
    alerts_storage: StorageConnection = field(
        default_factory=lambda: StorageConnection("ALERTS_STORAGE", "UseDevelopmentStorage=true")
    )
    forwarding: ForwardingSettings = field(default_factory=ForwardingSettings)
    key_vault: KeyVaultSettings | None = None
    tokens: TokenSettings = field(default_factory=TokenSettings)
    device_sync: DeviceSyncSettings = field(default_factory=DeviceSyncSettings)
    intake_schedule: str = "0 */1 * * * *"
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    run_seconds: float = 470.0  # how long one invocation may work: see run_seconds()

    def connection(self, name: str) -> ServiceNowConnection:
        for connection in self.connections:
            if connection.name == name:
                return connection
        known = ", ".join(c.name for c in self.connections)
        raise KeyError(f"no ServiceNow connection named {name!r} (SERVICENOW_CONNECTIONS defines: {known})")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings; raise :class:`SettingsError` listing every problem."""
    reader = Reader(os.environ if environ is None else environ)
    alerts_queue = check_queue_name(reader, "ALERTS_QUEUE")
    alerts_storage = check_storage_connection(reader, "ALERTS_STORAGE")
    token_schedule = check_schedule(reader, "TOKEN_REFRESH_SCHEDULE", "0 */10 * * * *")
    sync_schedule = check_schedule(reader, "DEVICE_SYNC_SCHEDULE", "0 */5 * * * *")
    intake_schedule = check_schedule(reader, "ALERT_INTAKE_SCHEDULE", "0 */1 * * * *")
    network = read_network(reader)
    http = read_http_settings(reader)
    connections = check_connections(reader, network)
    forwarding = check_forwarding(reader, http)
    key_vault = check_key_vault(reader)
    if key_vault is None:
        for connection in connections:
            if connection.auth in OAUTH_MODES:
                reader.fail(
                    f"SERVICENOW_CONNECTIONS[{connection.name}] uses auth '{connection.auth}', which keeps its "
                    "tokens in Key Vault; set KEY_VAULT_URL"
                )
    sources = check_sources(reader)
    overlap = read_overlap_minutes(reader)  # the intake's and the cloud device reads' reach-back alike
    device_sync = check_device_sync(reader, connections, sources, overlap)
    intake = check_intake(reader, sources, overlap)
    tokens = read_tokens(reader)
    run = run_seconds(reader, HOST_JSON, http.longest_call)
    if reader.problems:
        raise SettingsError(reader.problems)
    return Settings(
        alerts_queue=alerts_queue,
        token_refresh_schedule=token_schedule,
        device_sync_schedule=sync_schedule,
        connections=connections,
        http=http,
        alerts_storage=alerts_storage,
        forwarding=forwarding,
        key_vault=key_vault,
        tokens=tokens,
        device_sync=device_sync,
        intake_schedule=intake_schedule,
        intake=intake,
        run_seconds=run,
    )


HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"  # deployed beside function_app.py
FLEX_DEFAULT_TIMEOUT = 1800.0  # the host's functionTimeout when host.json sets none (Flex Consumption)
TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})")


def run_seconds(reader: Reader, host_json: Path, longest_call: float) -> float:
    """How long one invocation may work before it stops at a point where its progress is saved.

    host.json's ``functionTimeout`` less a margin: reaching the timeout restarts the worker, which kills every
    invocation on it. The margin is two of one call's longest (retry budget + connect + read timeout): the
    step running when the deadline passes finishes, and the job still records where it stopped.
    """
    try:
        value = json.loads(host_json.read_text()).get("functionTimeout")
    except (OSError, ValueError) as exc:
        reader.fail(f"{host_json} cannot be read for its functionTimeout: {exc}")
        return 0.0
    if value is None:
        timeout = FLEX_DEFAULT_TIMEOUT
    elif str(value) == "-1":
        return float("inf")  # no timeout: nothing to stop for
    elif match := TIMESPAN.fullmatch(str(value)):
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        timeout = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    else:
        reader.fail(f"host.json functionTimeout={value!r} is invalid; expected hh:mm:ss (e.g. 00:10:00) or -1")
        return 0.0
    budget = timeout - 2 * longest_call
    if budget < 60:
        reader.fail(
            f"host.json functionTimeout={value!r} leaves {budget:g} s of work per invocation after twice one call's "
            f"longest ({longest_call:g} s: the SERVICENOW_ retry budget and timeouts); allow at least 60 s"
        )
    return budget


def unknown_settings(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """Settings that look like the product's (one of PREFIXES) but that no schema reads: typos, mostly."""
    # Secrets kept in app settings (no Key Vault) are read under their secret's name: SERVICENOW_<NAME>_<ROLE>.
    secrets = {
        connection.secret_name(role).upper().replace("-", "_")
        for connection in settings.connections
        for role in ("password", "token", "client-secret", "access-token", "refresh-token")
    }
    known = known_settings()
    warnings = []
    for name in sorted(environ):
        if not name.startswith(PREFIXES) or is_declared(name) or name in secrets:
            continue
        with late_imports:
            import difflib  # noqa: PLC0415 - only for a setting to warn about: start-up stays light

        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"app setting {name} is not one this app reads, so it has no effect{hint}")
    return warnings


def start_up_warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What works but should not stay as it is: legacy Basic authentication, settings the app ignores."""
    return [
        f"ServiceNow connection '{c.name}' uses legacy Basic authentication; prefer auth 'oauth' (tokens in Key Vault, "
        "the password used once by `connect` and never stored)"
        for c in settings.connections
        if c.auth == "basic"
    ] + unknown_settings(settings, os.environ if environ is None else environ)


@dataclass(frozen=True)
class RelaySettings:
    """What the relay next to a sensor needs, and nothing else: the queue it sends to, the one sensor source
    it reads, and where that source's token is (Key Vault when reachable, else the environment)."""

    alerts_queue: str
    alerts_storage: StorageConnection
    source: SensorSourceSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    key_vault: KeyVaultSettings | None = None
    overlap_minutes: float = OVERLAP_MINUTES


def load_relay_settings(source_name: str, environ: Mapping[str, str] | None = None) -> RelaySettings:
    """The relay's settings (ALERTS_QUEUE, ALERTS_STORAGE, DEFENDER_SOURCES with the named sensor source);
    raise :class:`SettingsError` listing every problem."""
    reader = Reader(os.environ if environ is None else environ)
    alerts_queue = check_queue_name(reader, "ALERTS_QUEUE")
    alerts_storage = check_storage_connection(reader, "ALERTS_STORAGE")
    sources = check_sources(reader)
    chosen = [s for s in sources if s.name == source_name]
    source = chosen[0] if chosen else None
    if reader.raw("DEFENDER_SOURCES") is None:
        reader.fail("DEFENDER_SOURCES is not set; the relay reads the sensor source it names")
    elif not chosen and not reader.problems:
        known = ", ".join(s.name for s in sources) or "none"
        reader.fail(f"DEFENDER_SOURCES has no source named {source_name!r} (it has: {known})")
    elif source is not None and not isinstance(source, SensorSourceSettings):
        reader.fail(f"DEFENDER_SOURCES[{source_name}] is a {source.kind} source; the relay reads a sensor source")
    http = read_http_settings(reader, retries=False)
    key_vault = check_key_vault(reader)
    overlap = read_overlap_minutes(reader)
    if reader.problems:
        raise SettingsError(reader.problems)
    assert isinstance(source, SensorSourceSettings)
    return RelaySettings(alerts_queue, alerts_storage, source, http, key_vault, overlap)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (at start-up: ``function_app.py`` calls it)."""
    return load_settings()
