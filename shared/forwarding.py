"""Alert forwarding: one queue message → forwarding rules → one ServiceNow record per (alert, action).

Exactly once: the ledger (Table storage) is claimed before a record is written and remembers the
record and the deliveries already handled, so redeliveries, duplicate enqueues and parallel
duplicates write nothing twice, and a crash between the ServiceNow write and the acknowledgement is
recovered by correlation id. Nothing lost: a transient failure (timeout, 429, 5xx, auth, storage)
defers the message — re-enqueued with a growing delay and its attempt history — instead of burning
the host's few dequeue attempts during an outage; only invalid messages, permanent ServiceNow
refusals and messages older than the maximum age go to the poison queue, wrapped with the reason.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared import telemetry
from shared.alerts import DELIVERY_FIELD, AlertMessage, InvalidMessageError, parse_message
from shared.incidents import alert_key, correlation_id, record_values, values
from shared.ledger import ContentionError, Entry, Ledger
from shared.rules import Action, RulesError, RuleSet, evaluate, load_document, parse_rules
from shared.secrets import SecretNotFoundError, SecretStoreUnavailableError, secret_store
from shared.servicenow import (
    EncodedQuery,
    NotFoundError,
    RateLimitedError,
    ServiceNowClient,
    ServiceNowConnectionError,
    ServiceNowError,
)
from shared.servicenow.errors import AuthError, TransientError
from shared.settings import Settings, get_settings
from shared.storage import blob_service, queue_service, table_service
from shared.templates import render
from shared.tokens import TokenError

logger = logging.getLogger("shared.forwarding")
CLOSED_STATES = {"incident": {"6", "7", "8"}, "sn_si_incident": {"3", "7"}}
RESOLVED_STATE = {"incident": "6", "sn_si_incident": "3"}
REOPENED_STATE = {"incident": "2", "sn_si_incident": "16"}
BUSY_RETRY_SECONDS = 5.0


class DeferError(Exception):
    """Try again later; ``retry_after`` is the wait the cause asked for, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


class RulesUnavailableError(DeferError):
    pass


# -- rules ---------------------------------------------------------------------------------
class RulesSource:
    """The rules document from blob storage (``container/blob``) or a file, cached by ETag / mtime.

    An invalid new version is refused with every error logged, and the last good rules stay in force.
    """

    def __init__(self, location: str, blobs: BlobServiceClient | None, connections: list[str]) -> None:
        self.location = location
        self.blobs = blobs
        self.connections = connections
        self.version: str | None = None
        self.rules: RuleSet | None = None
        self.lock = threading.Lock()

    def _read(self) -> tuple[str, bytes] | None:
        if self.location.startswith("file:") or self.location.startswith("/"):
            path = Path(self.location.removeprefix("file:"))
            stat = path.stat()
            version = f"{stat.st_mtime_ns}:{stat.st_size}"
            return (version, b"") if version == self.version else (version, path.read_bytes())
        assert self.blobs is not None
        container, _, name = self.location.partition("/")
        blob = self.blobs.get_blob_client(container, name)
        properties = blob.get_blob_properties()
        if properties.etag == self.version:
            return properties.etag, b""
        return properties.etag, blob.download_blob().readall()

    def current(self) -> RuleSet:
        with self.lock:
            try:
                version, data = self._read() or ("", b"")
            except (ResourceNotFoundError, FileNotFoundError):
                if self.rules is None:
                    raise RulesUnavailableError(
                        f"no forwarding rules at {self.location}; apply a rules document"
                    ) from None
                return self.rules
            except AzureError as exc:
                if self.rules is None:
                    raise DeferError(f"cannot read the forwarding rules: {type(exc).__name__}") from None
                return self.rules
            if version == self.version and self.rules is not None:
                return self.rules
            try:
                self.rules = parse_rules(load_document(data, self.location), self.connections)
                logger.info("forwarding rules loaded from %s (%d rules)", self.location, len(self.rules.rules))
            except (ValueError, RulesError) as exc:
                errors = exc.errors if isinstance(exc, RulesError) else [str(exc)]
                logger.error(
                    "forwarding rules at %s refused; the last good rules stay in force:\n%s",
                    self.location,
                    "\n".join(errors),
                )
                if self.rules is None:
                    raise RulesUnavailableError("the forwarding rules document is invalid") from None
            self.version = version
            return self.rules


# -- outcome -------------------------------------------------------------------------------
@dataclass
class Outcome:
    action: str
    operation: str  # created | recovered | work_note | reopened | recreated | duplicate | resolved | filtered
    sys_id: str = ""
    number: str = ""


@dataclass
class Result:
    status: str  # forwarded | filtered | deferred | poisoned
    outcomes: list[Outcome] = field(default_factory=list)
    rules: tuple[str, ...] = ()
    reason: str = ""


# -- the forwarder -------------------------------------------------------------------------
class Forwarder:
    def __init__(
        self,
        settings: Settings,
        *,
        rules: RulesSource,
        ledger: Ledger,
        queue: QueueClient,
        poison: QueueClient,
        clients: Mapping[str, ServiceNowClient],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.ledger = ledger
        self.queue = queue
        self.poison = poison
        self.clients = clients
        self.clock = clock

    # -- entry ---------------------------------------------------------------------------
    def handle(self, body: bytes, message_id: str) -> Result:
        telemetry.ALERTS_RECEIVED.add(1)
        result = self._handle(body, message_id)
        if result.status == "filtered":
            telemetry.ALERTS_FILTERED.add(1)
        elif result.status in ("deferred", "poisoned"):
            counter = telemetry.ALERTS_DEFERRED if result.status == "deferred" else telemetry.ALERTS_POISONED
            counter.add(1, {"reason": telemetry.reason_class(result.reason)})
        for outcome in result.outcomes:
            if outcome.operation in {"duplicate", "work_note"}:
                telemetry.DUPLICATES_AVOIDED.add(1, {"action": outcome.action})
            if outcome.operation != "duplicate":
                telemetry.ALERTS_FORWARDED.add(1, {"action": outcome.action, "operation": outcome.operation})
        return result

    def _handle(self, body: bytes, message_id: str) -> Result:
        try:
            message = parse_message(body)
        except InvalidMessageError as exc:
            reason = f"invalid message: {exc.reason}"
            self._poison(body, None, reason, [])
            logger.error("message %s poisoned: %s", message_id, reason, extra={"delivery": message_id})
            return Result("poisoned", reason=reason)
        delivery = message.delivery
        delivery_id = str(delivery.get("id") or message_id)
        attempts = list(delivery.get("attempts") or [])
        first_seen = _parse_time(delivery.get("first_seen")) or self.clock()
        context = {"alert": alert_key(message), "delivery": delivery_id}
        try:
            result = self._route(message, delivery_id)
        except (
            DeferError,
            TransientError,
            AuthError,
            AzureError,
            SecretStoreUnavailableError,
            SecretNotFoundError,
            TokenError,
        ) as exc:
            # Auth failures defer too: a rotated password or an expired token is fixed by a person, and
            # the alert must still be there when it is.
            reason = exc.reason if isinstance(exc, DeferError) else _describe(exc)
            retry_after = exc.retry_after if isinstance(exc, DeferError | RateLimitedError) else None
            return self._defer(message, body, delivery_id, first_seen, attempts, reason, retry_after, context)
        except ServiceNowError as exc:
            self._poison(body, message, f"ServiceNow refused the record: {exc}", attempts)
            logger.error("alert %s poisoned: %s", context["alert"], exc, extra=context)
            return Result("poisoned", reason=str(exc))
        for outcome in result.outcomes:
            logger.info(
                "alert %s: %s %s %s (action %s, rules %s)",
                context["alert"],
                outcome.operation,
                outcome.number,
                outcome.sys_id,
                outcome.action,
                ",".join(result.rules),
                extra=context,
            )
        if result.status == "filtered":
            logger.info("alert %s filtered: %s", context["alert"], result.reason, extra=context)
        return result

    def _route(self, message: AlertMessage, delivery_id: str) -> Result:
        if message.kind == "alert_status":
            return self._resolve(message, delivery_id)
        decision = evaluate(self.rules.current(), message)
        if not decision.actions:
            reasons = "; ".join(f"{rule}: {why}" for rule, why in decision.skipped.items()) or "no rules"
            return Result("filtered", rules=(), reason=reasons)
        outcomes = [self._ensure_record(message, action, delivery_id) for action in decision.actions]
        return Result("forwarded", outcomes, decision.rules)

    # -- exactly one record per (alert, action) --------------------------------------------
    def _client(self, action: Action) -> ServiceNowClient:
        return self.clients[action.connection]

    def _ensure_record(self, message: AlertMessage, action: Action, delivery_id: str) -> Outcome:
        key = alert_key(message)
        claim = self.ledger.claim(key, action.name, correlation_id(message, action))
        if claim.kind == "busy":
            # The other worker's write takes a second or so, not an outage's back-off.
            raise DeferError("another worker is writing this alert's record now", retry_after=BUSY_RETRY_SECONDS)
        assert claim.entry is not None
        if claim.kind == "existing":
            return self._repeat(message, action, claim.entry, delivery_id)
        return self._write(
            message, action, claim.entry, delivery_id, recover=claim.kind == "recover", operation="created"
        )

    def _write(
        self, message: AlertMessage, action: Action, entry: Entry, delivery_id: str, *, recover: bool, operation: str
    ) -> Outcome:
        """Holding the claim on ``entry``: find the record a lost attempt may have written, else create it.

        Whatever fails here, the claim is not left behind: it is released when this attempt cannot have
        written anything, else marked uncertain so the next attempt recovers at once by correlation id.
        """
        generation = entry.generation
        fields = record_values(message, action, generation)
        try:
            found = self._find(action, fields["correlation_id"]) if recover else None
            if found is not None:
                record, operation = found, "recovered"
            else:
                record = self._client(action).create_record(action.table, fields)
        except Exception as exc:
            if recover or _maybe_written(exc):
                self.ledger.uncertain(entry)
            else:
                self.ledger.release(entry)
            raise
        self.ledger.created(
            entry,
            sys_id=record["sys_id"],
            number=record.get("number", ""),
            table=action.table,
            correlation_id=fields["correlation_id"],
            delivery_id=delivery_id,
            generation=generation,
        )
        return Outcome(action.name, operation, record["sys_id"], record.get("number", ""))

    def _find(self, action: Action, correlation: str) -> dict[str, Any] | None:
        query = EncodedQuery().eq("correlation_id", correlation)
        for record in self._client(action).query(
            action.table, query, fields=["sys_id", "number", "correlation_id"], limit=1
        ):
            return record
        return None

    def _repeat(self, message: AlertMessage, action: Action, entry: Entry, delivery_id: str) -> Outcome:
        if delivery_id in entry.deliveries:
            return Outcome(action.name, "duplicate", entry.sys_id, entry.number)
        client = self._client(action)
        try:
            state = client.get_record(entry.table, entry.sys_id, fields=["state"]).get("state", "")
        except NotFoundError:
            state = None  # deleted in ServiceNow: treat as closed
        closed = state is None or state in CLOSED_STATES.get(entry.table, {"6", "7", "8", "3"})
        reopen = closed and action.on_closed == "reopen" and state is not None
        if closed and not reopen:
            generation = entry.generation + 1
            taken = self.ledger.begin_generation(entry, generation, correlation_id(message, action, generation))
            if taken is None:
                raise DeferError(
                    "another worker is replacing this alert's closed record now", retry_after=BUSY_RETRY_SECONDS
                )
            return self._write(message, action, taken, delivery_id, recover=False, operation="recreated")
        # The occurrence is counted before the note is written, so parallel repeats each get their own number.
        try:
            counted = self.ledger.delivered(entry, delivery_id, **({"resolved": False} if reopen else {}))
        except ContentionError:
            raise DeferError("other workers are recording repeats of this alert now", BUSY_RETRY_SECONDS) from None
        if counted is None:
            return Outcome(action.name, "duplicate", entry.sys_id, entry.number)
        v = values(message)
        note = f"Seen again by Defender for IoT (occurrence {counted.seen}) at {v['time']}: {v['title']}"
        change = {"work_notes": note}
        if reopen:
            change = {"state": REOPENED_STATE.get(entry.table, "2"), "work_notes": f"Re-opened. {note}"}
        try:
            client.update_record(entry.table, entry.sys_id, change, retry_safe=False)
        except Exception:
            with contextlib.suppress(AzureError, ContentionError):  # the ServiceNow failure is the one to report
                self.ledger.undelivered(counted, delivery_id)
            raise
        return Outcome(action.name, "reopened" if reopen else "work_note", entry.sys_id, entry.number)

    # -- alert handled in Defender -----------------------------------------------------------
    def _resolve(self, message: AlertMessage, delivery_id: str) -> Result:
        rules = self.rules.current()
        outcomes = []
        for entry in self.ledger.entries(alert_key(message)):
            action = rules.actions.get(entry.action)
            if action is None or entry.state != "created" or entry.resolved:
                continue
            v = values(message)
            notes = render(action.close_notes, v).strip()
            state = RESOLVED_STATE.get(entry.table, "6")
            self._client(action).update_record(
                entry.table,
                entry.sys_id,
                {
                    "state": state,
                    "close_code": action.close_code,
                    "close_notes": notes,
                },
            )
            self.ledger.resolved(entry)
            outcomes.append(Outcome(action.name, "resolved", entry.sys_id, entry.number))
        return Result(
            "forwarded" if outcomes else "filtered",
            outcomes,
            reason="" if outcomes else "no open record for this alert",
        )

    # -- deferral and poison -----------------------------------------------------------------
    def _defer(
        self,
        message: AlertMessage,
        body: bytes,
        delivery_id: str,
        first_seen: datetime,
        attempts: list[Any],
        reason: str,
        retry_after: float | None,
        context: dict[str, str],
    ) -> Result:
        now = self.clock()
        attempts = [*attempts, {"at": now.isoformat(), "error": reason[:500]}][-20:]
        max_age = timedelta(hours=self.settings.forwarding.max_age_hours)
        if now - first_seen > max_age:
            self._poison(body, message, f"not delivered within {max_age}: {reason}", attempts)
            logger.error(
                "alert %s poisoned after %d attempts: %s", context["alert"], len(attempts), reason, extra=context
            )
            return Result("poisoned", reason=reason)
        forwarding = self.settings.forwarding
        backoff = forwarding.retry_base_seconds * 2 ** min(len(attempts) - 1, 20)
        delay = min(forwarding.retry_max_seconds, backoff) * random.uniform(0.8, 1.2)  # noqa: S311 - retry jitter, not security  # nosec B311
        if retry_after is not None:
            delay = max(retry_after, 1.0)
        document = dict(message.raw)
        document[DELIVERY_FIELD] = {"id": delivery_id, "first_seen": first_seen.isoformat(), "attempts": attempts}
        self.queue.send_message(_encode(document), visibility_timeout=int(min(delay, 7 * 24 * 3600)))
        logger.warning(
            "alert %s deferred %.0f s (attempt %d): %s", context["alert"], delay, len(attempts), reason, extra=context
        )
        return Result("deferred", reason=reason)

    def _poison(self, body: bytes, message: AlertMessage | None, reason: str, attempts: list[Any]) -> None:
        wrapper: dict[str, Any] = {"reason": reason, "poisoned_at": self.clock().isoformat(), "attempts": attempts}
        if message is not None:
            wrapper["message"] = {k: v for k, v in message.raw.items() if k != DELIVERY_FIELD}
        else:
            wrapper["message_base64"] = base64.b64encode(body[:40_000]).decode()
        encoded = _encode(wrapper)
        try:
            self.poison.send_message(encoded)
        except ResourceNotFoundError:
            # The deployment creates it (the app may only send); a local run creates it on first use.
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(encoded)


def _encode(document: Mapping[str, Any]) -> str:
    """As the trigger expects it (host.json messageEncoding: base64)."""
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ServiceNowError | SecretStoreUnavailableError | SecretNotFoundError | TokenError):
        return str(exc)
    return f"{type(exc).__name__} from storage"


def _maybe_written(exc: Exception) -> bool:
    """Whether a failed write may still have created the record (unknown failures: assume it may)."""
    if isinstance(exc, TokenError | SecretStoreUnavailableError | SecretNotFoundError):
        return False  # failed before ServiceNow acted: no credential, or a 401 it did not process
    if isinstance(exc, ServiceNowConnectionError):
        return exc.request_sent
    if isinstance(exc, RateLimitedError | AuthError):
        return False
    if isinstance(exc, ServiceNowError):
        return exc.status is None or exc.status >= 500 or exc.status == 202
    return True


# -- the function's entry point --------------------------------------------------------------
_forwarder: Forwarder | None = None
_lock = threading.Lock()


def build_forwarder(settings: Settings) -> Forwarder:
    storage = settings.alerts_storage
    queues = queue_service(storage)
    ledger = Ledger(
        table_service(storage).get_table_client(settings.forwarding.ledger_table), settings.forwarding.claim_seconds
    )
    ledger.ensure_table()
    location = settings.forwarding.rules_location
    blobs = None if location.startswith(("file:", "/")) else blob_service(storage)
    secrets = secret_store(settings)
    clients = {c.name: ServiceNowClient.for_connection(c, secrets, settings.http) for c in settings.connections}
    return Forwarder(
        settings,
        rules=RulesSource(location, blobs, [c.name for c in settings.connections]),
        ledger=ledger,
        queue=queues.get_queue_client(settings.alerts_queue),
        poison=queues.get_queue_client(f"{settings.alerts_queue}-poison"),
        clients=clients,
    )


def handle_queue_message(body: bytes, *, message_id: str, dequeue_count: int) -> Result:
    """Process one message from the alerts queue (the alert_forwarder function's entry point).

    Returns normally when the message is done with — forwarded, filtered, deferred (a copy is back on
    the queue) or poisoned (a wrapped copy is on the poison queue). Raises only when even deferring
    failed, so that the host's own retry keeps the message.
    """
    global _forwarder  # noqa: PLW0603 - one forwarder per worker process, built on first use
    with _lock:
        if _forwarder is None:
            _forwarder = build_forwarder(get_settings())
    return _forwarder.handle(body, message_id)
