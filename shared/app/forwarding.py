"""Builds the alert forwarder from the settings; the alert_forwarder function's entry point."""

from __future__ import annotations

from shared.alerting.forwarder import Forwarder, Result
from shared.alerting.groups import GroupBook
from shared.alerting.ledger import Ledger
from shared.alerting.poison import poison_queue_name
from shared.app import ProcessSingleton, budget_for, forwarding_table, report_soon, secret_store, servicenow_client
from shared.app.rules import rules_source
from shared.platform.storage import queue_service
from shared.settings import Settings, get_settings


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
