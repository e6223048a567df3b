"""Builds the device sync from the settings; the device_sync_timer function's entry point."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.app import secret_store, servicenow_client
from shared.defender.console import ConsoleClient
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync, SyncProgress, run_if_due
from shared.platform.settings import Settings, get_settings
from shared.platform.storage import table_service

logger = logging.getLogger("shared.app.devices")


def sync_state(settings: Settings) -> SyncState:
    return SyncState(table_service(settings.alerts_storage).get_table_client(settings.device_sync.state_table))


def build_sync(
    settings: Settings, state: SyncState | None = None, progress: Callable[[SyncProgress], None] | None = None
) -> DeviceSync:
    sync = settings.device_sync
    secrets = secret_store(settings)
    console = ConsoleClient.connect(
        sync.console_url,
        lambda: secrets.get(sync.console_token_secret),
        settings.http,
        proxy_url=sync.console_proxy.url if sync.console_proxy else None,
        ca_bundle=sync.console_ca_bundle,
        page_size=sync.page_size,
    )
    servicenow = servicenow_client(settings.connection(sync.connection), secrets, settings.http)
    return DeviceSync(sync, console, servicenow, state or sync_state(settings), progress=progress)


def run_scheduled_sync(*, past_due: bool, settings: Settings | None = None) -> SyncStatus | None:
    """The device_sync_timer entry point: the sync state is read on every tick; the clients are built
    only when a run is due (:func:`shared.devices.sync.run_if_due`)."""
    settings = settings or get_settings()
    if not settings.device_sync.enabled:
        logger.info("device sync is disabled (DEVICE_SYNC_ENABLED)")
        return None
    state = sync_state(settings)
    return run_if_due(state, settings.device_sync, past_due=past_due, build=lambda: build_sync(settings, state))
