"""Builds the alert forwarder from the settings; the alert_forwarder function's entry point."""

from __future__ import annotations

from shared.alerting.assets import AssetLookup
from shared.alerting.forwarder import Forwarder, Result
from shared.alerting.groups import GroupBook
from shared.alerting.ledger import Ledger
from shared.alerting.poison import poison_queue_name
from shared.app import (
    ProcessSingleton,
    budget_for,
    forwarding_table,
    report_soon,
    secret_store,
    servicenow_client,
    sync_scope,
)
from shared.app.rules import rules_source
from shared.assets.index import AssetDirectory
from shared.platform.storage import queue_service, table_service
from shared.settings import Settings, get_settings

# The asset index is read on the way of an alert: a storage that answers slowly or not at all costs a new record
# this much at most (then it is written without its CI), not the SDK's default retries.
INDEX_TIMEOUT_SECONDS = 5
INDEX_RETRIES = 1


def asset_lookup(settings: Settings) -> AssetLookup | None:
    """The asset index in the device sync's state table, where the sync keeps it; None when no sync runs."""
    sync = settings.device_sync
    if not sync.enabled:
        return None
    tables = table_service(
        settings.alerts_storage,
        retry_total=INDEX_RETRIES,
        connection_timeout=INDEX_TIMEOUT_SECONDS,
        read_timeout=INDEX_TIMEOUT_SECONDS,
    )
    scopes = {source.name: sync_scope(source) for source in sync.sources}
    return AssetLookup(AssetDirectory(tables.get_table_client(sync.state_table)), scopes)


def build_forwarder(settings: Settings) -> Forwarder:
    queues = queue_service(settings.alerts_storage)
    forwarding = settings.forwarding
    table = forwarding_table(settings)
    ledger = Ledger(table, forwarding.claim_seconds)
    ledger.ensure_table()
    secrets = secret_store(settings)
    return Forwarder(
        forwarding,
        rules=rules_source(settings, check_seconds=forwarding.rules_check_seconds),
        ledger=ledger,
        groups=GroupBook(table, forwarding.claim_seconds),
        queue=queues.get_queue_client(settings.alerts_queue),
        poison=queues.get_queue_client(poison_queue_name(settings.alerts_queue)),
        clients={
            c.name: servicenow_client(c, secrets, settings.http, budget_for(settings, c)) for c in settings.connections
        },
        run_seconds=settings.run_seconds,
        assets=asset_lookup(settings),
    )


_forwarder = ProcessSingleton(lambda: build_forwarder(get_settings()))


def handle_queue_message(body: bytes, *, message_id: str) -> Result:
    """Process one message from the alerts queue (the alert_forwarder function's entry point).

    Returns normally when the message is done with — forwarded, filtered, deferred (a copy is back on
    the queue) or poisoned (a wrapped copy is on the poison queue). Raises only when even deferring
    failed, so that the host's own retry keeps the message.
    """
    result = _forwarder.get().handle(body, message_id)
    report_soon()  # the outcome just counted reaches `status` through the board
    return result
