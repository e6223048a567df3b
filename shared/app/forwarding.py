"""Builds the alert forwarder from the settings; the alert_forwarder function's entry point."""

from __future__ import annotations

import threading

from shared.alerting.forwarder import Forwarder, Result
from shared.alerting.ledger import Ledger
from shared.alerting.poison import poison_queue_name
from shared.alerting.rules_store import RulesSource
from shared.app import board_for, budget_for, secret_store, servicenow_client
from shared.platform.budget_board import TableBudgetBoard
from shared.platform.storage import blob_service, queue_service, table_service
from shared.settings import Settings, get_settings


def build_forwarder(settings: Settings) -> Forwarder:
    storage = settings.alerts_storage
    queues = queue_service(storage)
    forwarding = settings.forwarding
    ledger = Ledger(table_service(storage).get_table_client(forwarding.ledger_table), forwarding.claim_seconds)
    ledger.ensure_table()
    location = forwarding.rules_location
    blobs = None if location.path is not None else blob_service(storage)
    secrets = secret_store(settings)
    return Forwarder(
        forwarding,
        rules=RulesSource(
            location, blobs, [c.name for c in settings.connections], check_seconds=forwarding.rules_check_seconds
        ),
        ledger=ledger,
        queue=queues.get_queue_client(settings.alerts_queue),
        poison=queues.get_queue_client(poison_queue_name(settings.alerts_queue)),
        clients={
            c.name: servicenow_client(c, secrets, settings.http, budget_for(settings, c)) for c in settings.connections
        },
        run_seconds=settings.run_seconds,
    )


_forwarder: Forwarder | None = None
_board: TableBudgetBoard | None = None
_lock = threading.Lock()


def handle_queue_message(body: bytes, *, message_id: str, dequeue_count: int) -> Result:
    """Process one message from the alerts queue (the alert_forwarder function's entry point).

    Returns normally when the message is done with — forwarded, filtered, deferred (a copy is back on
    the queue) or poisoned (a wrapped copy is on the poison queue). Raises only when even deferring
    failed, so that the host's own retry keeps the message.
    """
    global _forwarder, _board  # one forwarder (and board) per worker process, built on first use
    with _lock:
        if _forwarder is None:
            settings = get_settings()
            _forwarder, _board = build_forwarder(settings), board_for(settings)
    result = _forwarder.handle(body, message_id)
    if _board is not None:
        _board.report_soon()  # the outcome just counted reaches `status` through the board
    return result
