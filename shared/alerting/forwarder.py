"""Alert forwarding: one queue message → forwarding rules → one ServiceNow record per (alert, action).

Exactly once: the ledger (Table storage) is claimed before a record is written and remembers the
record and the deliveries already handled, so redeliveries, duplicate enqueues and parallel
duplicates write nothing twice, and a crash between the ServiceNow write and the acknowledgement is
recovered by correlation id. Nothing lost: a transient failure (timeout, 429, 5xx, auth, storage)
defers the message — re-enqueued with a growing delay and its attempt history — instead of burning
the host's few dequeue attempts during an outage; only invalid messages, permanent ServiceNow
refusals and messages older than the maximum age go to the poison queue, wrapped with the reason.
Which failure is which is decided in :mod:`shared.alerting.failures`.

The message is parsed and prepared once (:func:`shared.alerting.records.prepare`); the
:class:`~shared.alerting.router.Router` takes each action's decision through its collaborators (record
writer, repeats, group joiner, resolver), and :class:`~shared.alerting.deferral.Deferral` keeps what failed.
This module counts and logs what came of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from azure.storage.queue import QueueClient

from shared.alerting.assets import AssetLookup
from shared.alerting.deferral import Deferral, Delivery
from shared.alerting.groups import GroupBook
from shared.alerting.ledger import Ledger
from shared.alerting.outcomes import Operation, Outcome, Result, Status
from shared.alerting.ports import RecordStore
from shared.alerting.records import PreparedAlert, prepare
from shared.alerting.router import Router
from shared.alerting.rules import RuleSet
from shared.alerting.rules_store import RulesSource
from shared.alerting.settings import ForwardingSettings
from shared.contract.fields import InvalidMessageError
from shared.contract.parse import parse_message
from shared.platform import telemetry
from shared.platform.times import Deadline
from shared.servicenow import ServiceNowClient
from shared.servicenow.records import Records

logger = logging.getLogger("shared.alerting.forwarder")

__all__ = ["Forwarder", "Operation", "Outcome", "Result", "Status"]
AVOIDED_DUPLICATES = frozenset({"duplicate", "work_note", "grouped"})


class Forwarder:
    def __init__(
        self,
        settings: ForwardingSettings,
        *,
        rules: RulesSource,
        ledger: Ledger,
        groups: GroupBook,
        queue: QueueClient,
        poison: QueueClient,
        clients: Mapping[str, ServiceNowClient],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run_seconds: float = math.inf,
        assets: AssetLookup | None = None,
    ) -> None:
        """``run_seconds``: how long one message may work (``Settings.run_seconds``, under host.json's
        functionTimeout); past it, the actions not yet written follow in a redelivery. ``assets``: the asset
        index the device sync keeps, where a new record finds its devices' CIs (None: records name none)."""
        self.run_seconds = run_seconds
        self.rules = rules
        self.ledger = ledger
        self.groups = groups
        self.queue = queue
        self.poison = poison
        self.clients = clients
        self.clock = clock
        self._records: dict[tuple[str, int], Records] = {}
        self.assets = assets
        self.router = Router(self.current_rules, ledger, groups, self.records, self.now, assets)
        self.deferral = Deferral(settings, queue, poison, self.now)

    # Read late, as the clock: a test may set the forwarder's clock or rules after building it.
    def now(self) -> datetime:
        return self.clock()

    def current_rules(self) -> RuleSet:
        return self.rules.current()

    def records(self, connection: str, priority: int) -> RecordStore:
        """A connection's records, its calls at ``priority`` in the ServiceNow budget (the more severe first)."""
        found = self._records.get((connection, priority))
        if found is None:
            client = self.clients[connection].with_context(priority=priority)
            found = self._records[(connection, priority)] = Records(client)
        return found

    # -- entry ---------------------------------------------------------------------------
    def handle(self, body: bytes, message_id: str) -> Result:
        telemetry.ALERTS_RECEIVED.add(1)
        result = self._handle(body, message_id)
        if result.status == "filtered":
            telemetry.ALERTS_FILTERED.add(1)
        elif result.status in ("deferred", "poisoned"):
            counter = telemetry.ALERTS_DEFERRED if result.status == "deferred" else telemetry.ALERTS_POISONED
            counter.add(1, {"reason": result.kind})
        for outcome in result.outcomes:
            if outcome.operation in AVOIDED_DUPLICATES:
                telemetry.DUPLICATES_AVOIDED.add(1, {"action": outcome.action})
            if outcome.operation != "duplicate":
                telemetry.ALERTS_FORWARDED.add(1, {"action": outcome.action, "operation": outcome.operation})
        return result

    def _handle(self, body: bytes, message_id: str) -> Result:
        try:
            message = parse_message(body)
        except InvalidMessageError as exc:
            reason = f"invalid message: {exc.reason}"
            self.deferral.poison(body, None, reason, [])
            logger.error("message %s poisoned: %s", message_id, reason, extra={"delivery": message_id})
            return Result("poisoned", reason=reason, kind="invalid_message")
        alert = prepare(message)
        delivery = Delivery.of(body, message, message_id, self.now())
        try:
            result = self.router.route(alert, delivery.id, Deadline(self.run_seconds))
        except Exception as exc:
            settled = self.deferral.settle(alert, delivery, exc)
            if settled is None:
                raise  # unforeseen: the host's own retry keeps the message
            return settled
        _log(alert, delivery, result)
        return result


def _log(alert: PreparedAlert, delivery: Delivery, result: Result) -> None:
    context = {"alert": alert.key, "delivery": delivery.id}
    for outcome in result.outcomes:
        logger.info(
            "alert %s: %s %s %s (action %s, rules %s)",
            alert.key,
            outcome.operation,
            outcome.number,
            outcome.sys_id,
            outcome.action,
            ",".join(result.rules),
            extra=context,
        )
    if result.status == "filtered":
        logger.info("alert %s filtered: %s", alert.key, result.reason, extra=context)
