"""Builds the Defender sources from their settings: the cloud (Resource Graph), locally managed
sensors and consoles, as the device sync and the alert intake read them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.defender.console import ConsoleClient
from shared.defender.model import AlertSource, DeviceSource
from shared.defender.sensor import SensorSource
from shared.defender.settings import CloudSourceSettings, ConsoleSourceSettings, SensorSourceSettings, SourceSettings
from shared.defender.writeback import AlertWriter, CloudAlertWriter
from shared.http.settings import HttpSettings
from shared.platform.identity import credential_named
from shared.platform.imports import late_imports
from shared.platform.secrets import SecretStore
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.defender.cloud import CloudSource


def cloud_credential(source: CloudSourceSettings) -> Any:
    """How the app signs in to Azure Resource Manager for a cloud source, as its settings say."""
    return credential_named(source.credential, source.client_id)


def cloud_source(source: CloudSourceSettings, http: HttpSettings | None = None) -> CloudSource:
    """The Resource Graph client for one cloud source, signed in as the settings say, each call bounded by
    ``http`` (the app's timeouts and retry budget; their defaults when None)."""
    # Only cloud sources load the Resource Graph SDK, and only through this module (see its imports there):
    # a console-only sync's cold start stays as it was.
    with late_imports:
        from shared.defender.cloud import CloudSource  # noqa: PLC0415

    return CloudSource.connect(
        source.name,
        source.subscriptions,
        cloud_credential(source),
        source.resource_graph_url,
        source.ca_bundle,
        http or HttpSettings(),
    )


def sensor_source(source: SensorSourceSettings, settings: Settings, secrets: SecretStore) -> SensorSource:
    return SensorSource.connect(source, lambda: secrets.get(source.token_secret), settings.http)


def alert_source(source: SourceSettings, settings: Settings, secrets: SecretStore | None) -> AlertSource:
    """``secrets`` is needed for an API token only (a cloud source signs in with the app's identity)."""
    if isinstance(source, CloudSourceSettings):
        return cloud_source(source, settings.http)
    if secrets is None:
        raise ValueError(f"source '{source.name}' needs the secret store for its API token")
    if isinstance(source, SensorSourceSettings):
        return sensor_source(source, settings, secrets)
    return console_source(source, settings, secrets)


def alert_writer(source: SourceSettings, settings: Settings, secrets: SecretStore) -> AlertWriter:
    """Where the write-back closes a source's alerts: Resource Manager for a cloud source, else its API."""
    if isinstance(source, CloudSourceSettings):
        return CloudAlertWriter.connect(
            source.name,
            source.resource_graph_url,
            cloud_credential(source),
            settings.http,
            source.ca_bundle,
            learn=source.learn,
        )
    if isinstance(source, SensorSourceSettings):
        return sensor_source(source, settings, secrets)
    return console_source(source, settings, secrets)


def device_source(source: SourceSettings, settings: Settings, secrets: SecretStore) -> DeviceSource:
    if isinstance(source, CloudSourceSettings):
        with late_imports:
            from shared.defender.cloud import CloudInventory  # noqa: PLC0415 - as in cloud_source

        return CloudInventory(
            cloud_source(source, settings.http),
            overlap_minutes=settings.device_sync.overlap_minutes,
            data_sources=settings.device_sync.cloud_data_sources,
        )
    if isinstance(source, SensorSourceSettings):
        return sensor_source(source, settings, secrets)
    return console_source(source, settings, secrets)


def console_source(source: ConsoleSourceSettings, settings: Settings, secrets: SecretStore) -> ConsoleClient:
    return ConsoleClient.connect(
        source.url,
        lambda: secrets.get(source.token_secret),
        settings.http,
        proxy_url=source.proxy.url if source.proxy else None,
        ca_bundle=source.ca_bundle,
        page_size=settings.device_sync.page_size,
        name=source.name,
    )
