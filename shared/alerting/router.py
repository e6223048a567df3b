"""Which decision an alert takes, per action: resolve (a status change), filter (no rule), join its group, or
one record (new, recovered, repeated, reopened, recreated) — within the invocation's run time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shared.alerting.assets import AssetLookup
from shared.alerting.failures import DeferError
from shared.alerting.group_join import GroupJoiner
from shared.alerting.outcomes import BUSY_RETRY_SECONDS, Outcome, Result
from shared.alerting.ports import GroupPort, LedgerPort, RecordsFor
from shared.alerting.record_writer import RecordWriter
from shared.alerting.records import PreparedAlert
from shared.alerting.resolver import Resolver
from shared.alerting.rules import RuleSet, evaluate
from shared.platform.times import Deadline


class Router:
    def __init__(
        self,
        rules: Callable[[], RuleSet],
        ledger: LedgerPort,
        groups: GroupPort,
        records: RecordsFor,
        clock: Callable[[], datetime],
        assets: AssetLookup | None = None,
    ) -> None:
        self.rules = rules
        self.writer = RecordWriter(ledger, records, clock, assets)
        self.joiner = GroupJoiner(groups, records, clock, assets)
        self.resolver = Resolver(ledger, records)

    def route(self, alert: PreparedAlert, delivery_id: str, deadline: Deadline) -> Result:
        if alert.message.kind == "alert_status":
            return self.resolver.resolve(alert, self.rules())
        decision = evaluate(self.rules(), alert.message)
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
                outcomes.append(self.joiner.join(alert, action))
            else:
                outcomes.append(self.writer.ensure(alert, action, delivery_id))
        return Result("forwarded", outcomes, decision.rules)
