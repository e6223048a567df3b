"""Alert forwarding: one queue message → forwarding rules → one ServiceNow record per (alert, action).

Exactly once: the ledger (Table storage) is claimed before a record is written and remembers the
record and the deliveries already handled, so redeliveries, duplicate enqueues and parallel
duplicates write nothing twice, and a crash between the ServiceNow write and the acknowledgement is
recovered by correlation id. Nothing lost: a transient failure (timeout, 429, 5xx, auth, storage)
defers the message — re-enqueued with a growing delay and its attempt history — instead of burning
the host's few dequeue attempts during an outage; only invalid messages, permanent ServiceNow
refusals and messages older than the maximum age go to the poison queue, wrapped with the reason.
Which failure is which is decided in :mod:`shared.alerting.failures`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.alerting.failures import DeferError, Failure, classify
from shared.alerting.groups import GroupBook, group_id, group_record_values, group_value
from shared.alerting.ledger import ContentionError, Entry, Ledger
from shared.alerting.messages import (
    DELIVERY_FIELD,
    AlertMessage,
    InvalidMessageError,
    Severity,
    encode,
    parse_message,
)
from shared.alerting.poison import wrap as wrap_poison
from shared.alerting.records import alert_key, correlation_id, record_values, values
from shared.alerting.rules import Action, evaluate
from shared.alerting.rules_store import RulesSource
from shared.alerting.settings import ForwardingSettings
from shared.alerting.templates import render
from shared.http.errors import NotFoundError
from shared.platform import telemetry
from shared.platform.times import Deadline, parse_iso
from shared.servicenow import EncodedQuery, ServiceNowClient
from shared.servicenow.budget import priority as budget_priority

logger = logging.getLogger("shared.alerting.forwarder")
CLOSED_STATES = {"incident": {"6", "7", "8"}, "sn_si_incident": {"3", "7"}}
RESOLVED_STATE = {"incident": "6", "sn_si_incident": "3"}
REOPENED_STATE = {"incident": "2", "sn_si_incident": "16"}
BUSY_RETRY_SECONDS = 5.0

Status = Literal["forwarded", "filtered", "deferred", "poisoned"]
Operation = Literal[
    "created", "recovered", "work_note", "reopened", "recreated", "duplicate", "resolved", "grouped", "group_opened"
]


# -- outcome -------------------------------------------------------------------------------
@dataclass
class Outcome:
    action: str
    operation: Operation
    sys_id: str = ""
    number: str = ""


@dataclass
class Result:
    status: Status
    outcomes: list[Outcome] = field(default_factory=list)
    rules: tuple[str, ...] = ()
    reason: str = ""
    kind: str = ""  # deferred or poisoned: why, in a few words for telemetry (failures.FailureKind, or poison's)


# -- the forwarder -------------------------------------------------------------------------
class Forwarder:
    def __init__(
        self,
        settings: ForwardingSettings,
        *,
        rules: RulesSource,
        ledger: Ledger,
        queue: QueueClient,
        poison: QueueClient,
        clients: Mapping[str, ServiceNowClient],
        groups: GroupBook | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        run_seconds: float = math.inf,
    ) -> None:
        """``run_seconds``: how long one message may work (``Settings.run_seconds``, under host.json's
        functionTimeout); past it, the actions not yet written follow in a redelivery."""
        self.settings = settings
        self.run_seconds = run_seconds
        self.rules = rules
        self.ledger = ledger
        self.groups = groups or GroupBook(ledger.table, ledger.claim_seconds, clock)
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
            counter.add(1, {"reason": result.kind})
        for outcome in result.outcomes:
            if outcome.operation in {"duplicate", "work_note", "grouped"}:
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
            return Result("poisoned", reason=reason, kind="invalid_message")
        delivery = message.delivery
        delivery_id = str(delivery.get("id") or message_id)
        attempts = list(delivery.get("attempts") or [])
        first_seen = parse_iso(delivery.get("first_seen")) or self.clock()
        context = {"alert": alert_key(message), "delivery": delivery_id}
        # Within the ServiceNow budget, the more severe alerts go first (system notifications as Major).
        level = int(message.alert.severity) if message.alert is not None else int(Severity.MAJOR)
        try:
            with budget_priority(level):
                result = self._route(message, delivery_id, Deadline(self.run_seconds))
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise  # unforeseen: the host's own retry keeps the message
            if failure.defer:
                return self._defer(message, body, delivery_id, first_seen, attempts, failure, context)
            self._poison(body, message, f"ServiceNow refused the record: {failure.reason}", attempts)
            logger.error("alert %s poisoned: %s", context["alert"], failure.reason, extra=context)
            return Result("poisoned", reason=failure.reason, kind=failure.kind)
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

    def _route(self, message: AlertMessage, delivery_id: str, deadline: Deadline) -> Result:
        if message.kind == "alert_status":
            return self._resolve(message, delivery_id)
        decision = evaluate(self.rules.current(), message)
        if not decision.actions:
            reasons = "; ".join(f"{rule}: {why}" for rule, why in decision.skipped.items()) or "no rules"
            return Result("filtered", rules=(), reason=reasons)
        outcomes: list[Outcome] = []
        for action in decision.actions:
            # At least one action is worked per delivery; the ones written are in the ledger under this delivery
            # id, so the redelivery skips them (as duplicates, at no ServiceNow call) and goes on from here.
            if any(o.operation != "duplicate" for o in outcomes) and deadline.passed():
                raise DeferError(
                    f"the invocation's run time is spent after {len(outcomes)} of {len(decision.actions)} actions; "
                    "the rest follow in a redelivery",
                    retry_after=BUSY_RETRY_SECONDS,
                )
            if action.group is not None:
                outcomes.append(self._join_group(message, action))
            else:
                outcomes.append(self._ensure_record(message, action, delivery_id))
        return Result("forwarded", outcomes, decision.rules)

    # -- one record per group of related alerts ----------------------------------------------
    def _join_group(self, message: AlertMessage, action: Action) -> Outcome:
        """Account the alert to its group: the group's record lists it in a later work note (the group notes
        timer's), or, for the alert that opens a generation, the record is written now from it."""
        assert action.group is not None
        value = group_value(message, action.group)
        gid = group_id(action.name, value)
        now = self.clock()
        header = self.groups.latest(gid)
        current = header is not None and header.accepts(now)
        generation = 0 if header is None else header.generation + (0 if current else 1)
        member = self.groups.join(gid, generation, message)
        if member is None:
            member = self.groups.member(gid, alert_key(message))
            if member is None or (header is not None and header.generation >= member.generation):
                sys_id, number = (header.sys_id, header.number) if header else ("", "")
                return Outcome(action.name, "duplicate", sys_id, number)
            # Accounted to a generation nobody opened: its worker died between the two inserts. Open it now.
            generation = member.generation
        elif header is not None and current:
            return Outcome(action.name, "grouped", header.sys_id, header.number)
        opened = self.groups.open(gid, generation, action, value, member, now)
        if opened is None:  # another alert of the group opened this generation first
            return Outcome(action.name, "grouped")
        try:
            record = self._client(action).create_record(action.table, group_record_values(message, action, opened))
        except Exception as exc:
            failure = classify(exc)
            # The alert is accounted for already: the group notes timer writes the record (looking it up first
            # when this write may have reached ServiceNow) instead of a redelivery, which would be a duplicate.
            self.groups.unwritten(opened, maybe_written=failure is None or failure.maybe_written)
            if failure is None:
                raise
            logger.warning("alert group %r: record left to the group notes timer: %s", value, failure.reason)
            return Outcome(action.name, "grouped")
        self.groups.created(opened, record["sys_id"], record.get("number", ""))
        self._latency(message, action)
        return Outcome(action.name, "group_opened", record["sys_id"], record.get("number", ""))

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
        self,
        message: AlertMessage,
        action: Action,
        entry: Entry,
        delivery_id: str,
        *,
        recover: bool,
        operation: Operation,
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
            failure = classify(exc)
            # An unforeseen failure may have come after the write: treat it as possibly written.
            if recover or failure is None or failure.maybe_written:
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
            origin=(message.origin.source, message.origin.ref) if message.origin else None,
        )
        if operation != "recovered":  # a recovered record was written by an earlier attempt, at a time unknown
            self._latency(message, action)
        return Outcome(action.name, operation, record["sys_id"], record.get("number", ""))

    def _latency(self, message: AlertMessage, action: Action) -> None:
        seconds = (self.clock() - message.raised_at).total_seconds()
        # Below zero only when a sensor's clock runs ahead of ours: no latency worth a negative sample.
        telemetry.ALERTS_LATENCY.record(max(seconds, 0.0), {"action": action.name})

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
            reset = {"resolved": False, "written_back": ""} if reopen else {}  # reopened: the loop starts again
            counted = self.ledger.delivered(entry, delivery_id, **reset)
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
            if entry.written_back:
                # The alert was closed because its record was resolved in ServiceNow: nothing to resolve again.
                self.ledger.resolved(entry)
                continue
            v = values(message)
            notes = render(action.close_notes, v).strip()
            state = RESOLVED_STATE.get(entry.table, "6")
            client = self._client(action)
            try:
                current = client.get_record(entry.table, entry.sys_id, fields=["state"]).get("state", "")
            except NotFoundError:
                current = None
            if current is None or current in CLOSED_STATES.get(entry.table, {"6", "7", "8", "3"}):
                # Deleted, or resolved in ServiceNow meanwhile: the analyst's resolution stands as written.
                self.ledger.resolved(entry)
                continue
            try:
                client.update_record(
                    entry.table,
                    entry.sys_id,
                    {
                        "state": state,
                        "close_code": action.close_code,
                        "close_notes": notes,
                    },
                )
            except NotFoundError:
                # Deleted in ServiceNow: there is nothing left to resolve (a repeat would make a new record).
                logger.info(
                    "record %s of %s was deleted in ServiceNow; nothing to resolve", entry.number, entry.alert_key
                )
                self.ledger.resolved(entry)
                continue
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
        failure: Failure,
        context: dict[str, str],
    ) -> Result:
        now = self.clock()
        reason = failure.reason
        attempts = [*attempts, {"at": now.isoformat(), "error": reason[:500]}][-20:]
        max_age = timedelta(hours=self.settings.max_age_hours)
        if now - first_seen > max_age:
            self._poison(body, message, f"not delivered within {max_age}: {reason}", attempts)
            logger.error(
                "alert %s poisoned after %d attempts: %s", context["alert"], len(attempts), reason, extra=context
            )
            return Result("poisoned", reason=reason, kind="max_age")
        backoff = self.settings.retry_base_seconds * 2 ** min(len(attempts) - 1, 20)
        delay = min(self.settings.retry_max_seconds, backoff) * random.uniform(0.8, 1.2)  # noqa: S311 - retry jitter, not security  # nosec B311
        if failure.retry_after is not None:
            delay = max(failure.retry_after, 1.0)
        document = dict(message.raw)
        document[DELIVERY_FIELD] = {"id": delivery_id, "first_seen": first_seen.isoformat(), "attempts": attempts}
        self.queue.send_message(encode(document), visibility_timeout=int(min(delay, 7 * 24 * 3600)))
        logger.warning(
            "alert %s deferred %.0f s (attempt %d): %s", context["alert"], delay, len(attempts), reason, extra=context
        )
        return Result("deferred", reason=reason, kind=failure.kind)

    def _poison(self, body: bytes, message: AlertMessage | None, reason: str, attempts: list[Any]) -> None:
        wrapped = wrap_poison(body, message.raw if message is not None else None, reason, attempts, self.clock())
        try:
            self.poison.send_message(wrapped)
        except ResourceNotFoundError:
            # The deployment creates it (the app may only send); a local run creates it on first use.
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(wrapped)
