"""Nothing lost: a message whose transient failure defers it goes back on the queue with a growing delay and
its attempt history; one older than the maximum age, invalid, or refused for good goes to the poison queue,
wrapped with the reason."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.alerting.failures import Failure, classify
from shared.alerting.outcomes import Result
from shared.alerting.poison import wrap as wrap_poison
from shared.alerting.ports import MessageQueue
from shared.alerting.records import PreparedAlert
from shared.alerting.settings import ForwardingSettings
from shared.contract.model import DELIVERY_FIELD, AlertMessage
from shared.contract.parse import encode
from shared.platform.times import parse_iso

logger = logging.getLogger("shared.alerting.forwarder")
MAX_ATTEMPTS_KEPT = 20
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600  # the queue's longest visibility timeout


@dataclass(frozen=True)
class Delivery:
    """One message as it came off the queue: its bytes, and what earlier deliveries of it recorded."""

    body: bytes
    id: str  # the first delivery's message id, kept across deferrals
    first_seen: datetime
    attempts: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, body: bytes, message: AlertMessage, message_id: str, now: datetime) -> Delivery:
        delivery = message.delivery
        return cls(
            body,
            str(delivery.get("id") or message_id),
            parse_iso(delivery.get("first_seen")) or now,
            list(delivery.get("attempts") or []),
        )


class Deferral:
    def __init__(
        self,
        settings: ForwardingSettings,
        queue: MessageQueue,
        poison: MessageQueue,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.poison_queue = poison
        self.clock = clock

    def settle(self, alert: PreparedAlert, delivery: Delivery, exc: Exception) -> Result | None:
        """What becomes of a message whose forwarding failed with ``exc``: deferred, or poisoned when ServiceNow
        refused it for good; None for a failure nobody foresaw (the caller re-raises: the host's retry keeps it)."""
        failure = classify(exc)
        if failure is None:
            return None
        if failure.defer:
            return self.defer(alert, delivery, failure)
        self.poison(delivery.body, alert.message, f"ServiceNow refused the record: {failure.reason}", delivery.attempts)
        context = {"alert": alert.key, "delivery": delivery.id}
        logger.error("alert %s poisoned: %s", alert.key, failure.reason, extra=context)
        return Result("poisoned", reason=failure.reason, kind=failure.kind)

    def defer(self, alert: PreparedAlert, delivery: Delivery, failure: Failure) -> Result:
        message, context = alert.message, {"alert": alert.key, "delivery": delivery.id}
        now = self.clock()
        reason = failure.reason
        attempts = [*delivery.attempts, {"at": now.isoformat(), "error": reason[:500]}][-MAX_ATTEMPTS_KEPT:]
        max_age = timedelta(hours=self.settings.max_age_hours)
        if now - delivery.first_seen > max_age:
            self.poison(delivery.body, message, f"not delivered within {max_age}: {reason}", attempts)
            logger.error(
                "alert %s poisoned after %d attempts: %s", context["alert"], len(attempts), reason, extra=context
            )
            return Result("poisoned", reason=reason, kind="max_age")
        backoff = self.settings.retry_base_seconds * 2 ** min(len(attempts) - 1, 20)
        delay = min(self.settings.retry_max_seconds, backoff) * random.uniform(0.8, 1.2)  # noqa: S311 - retry jitter, not security  # nosec B311
        if failure.retry_after is not None:
            delay = max(failure.retry_after, 1.0)
        document = dict(message.raw)
        document[DELIVERY_FIELD] = {
            "id": delivery.id,
            "first_seen": delivery.first_seen.isoformat(),
            "attempts": attempts,
        }
        self.queue.send_message(encode(document), visibility_timeout=int(min(delay, MAX_VISIBILITY_SECONDS)))
        logger.warning(
            "alert %s deferred %.0f s (attempt %d): %s", context["alert"], delay, len(attempts), reason, extra=context
        )
        return Result("deferred", reason=reason, kind=failure.kind)

    def poison(self, body: bytes, message: AlertMessage | None, reason: str, attempts: list[Any]) -> None:
        wrapped = wrap_poison(body, message.raw if message is not None else None, reason, attempts, self.clock())
        try:
            self.poison_queue.send_message(wrapped)
        except ResourceNotFoundError:
            # The deployment creates it (the app may only send); a local run creates it on first use.
            with contextlib.suppress(ResourceExistsError):
                self.poison_queue.create_queue()
            self.poison_queue.send_message(wrapped)
