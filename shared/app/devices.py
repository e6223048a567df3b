"""Builds the device sync of each source from the settings; the device_sync_timer function's entry point."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from azure.data.tables import TableServiceClient

from shared.app import budget_for, secret_store, servicenow_client, sync_scope
from shared.app.sources import device_source
from shared.assets.index import IndexWriter
from shared.defender.settings import SourceSettings
from shared.devices.state import SyncState, SyncStatus
from shared.devices.sync import DeviceSync, SyncProgress, run_if_due
from shared.platform.storage import table_service
from shared.platform.times import NO_DEADLINE, Deadline
from shared.settings import Settings, get_settings

logger = logging.getLogger("shared.app.devices")


def sync_state(settings: Settings, source: SourceSettings, tables: TableServiceClient | None = None) -> SyncState:
    """One source's sync state; the console of the ``CONSOLE_*`` settings keeps its unscoped rows. ``tables``:
    a client of the caller's (``status`` gives up on storage sooner than the timer does)."""
    scope = sync_scope(source)
    tables = tables or table_service(settings.alerts_storage)
    return SyncState(tables.get_table_client(settings.device_sync.state_table), scope)


def source_named(settings: Settings, name: str | None) -> list[SourceSettings]:
    """The sources the sync reads, or the one named; KeyError names the known ones."""
    sources = list(settings.device_sync.sources)
    if name is None:
        return sources
    chosen = [s for s in sources if s.name == name]
    if not chosen:
        known = ", ".join(s.name for s in sources) or "none"
        raise KeyError(f"no device source named {name!r} (the device sync reads: {known})")
    return chosen


def build_sync(
    settings: Settings,
    source: SourceSettings,
    state: SyncState | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> DeviceSync:
    sync = settings.device_sync
    secrets = secret_store(settings)
    connection = settings.connection(sync.connection)
    servicenow = servicenow_client(connection, secrets, settings.http, budget_for(settings, connection))
    state = state or sync_state(settings, source)
    return DeviceSync(
        sync,
        device_source(source, settings, secrets),
        servicenow,
        state,
        progress=progress,
        data_source=source.data_source,
        deadline=deadline,
        index=IndexWriter(state.table),  # beside the sync state, in its table (issue 25)
    )


def run_scheduled_sync(*, past_due: bool, settings: Settings | None = None) -> list[SyncStatus]:
    """The device_sync_timer entry point: each source's sync state is read on every tick; its clients are
    built only when its run is due (:func:`shared.devices.sync.run_if_due`). A source that fails does not
    stop the others; the invocation fails after them all, so that it shows. All of them share the invocation's
    deadline: a source reached after it passed runs next tick."""
    settings = settings or get_settings()
    deadline = Deadline(settings.run_seconds)
    if not settings.device_sync.enabled:
        logger.info("device sync is disabled (DEVICE_SYNC_ENABLED)")
        return []
    statuses, failed = [], []
    for source in settings.device_sync.sources:
        if deadline.passed():  # still due, so the next tick runs it
            logger.warning("device sync of source '%s' left for the next tick: %s passed", source.name, deadline)
            continue
        state = sync_state(settings, source)
        try:
            build = functools.partial(build_sync, settings, source, state, deadline=deadline)
            status = run_if_due(state, settings.device_sync, past_due=past_due, build=build)
        except RuntimeError as exc:
            logger.error("device sync of source '%s': %s", source.name, exc)
            failed.append(source.name)
            continue
        if status is not None:
            statuses.append(status)
    if failed:
        raise RuntimeError(f"device sync failed for source(s) {', '.join(failed)}; see the log above")
    return statuses
