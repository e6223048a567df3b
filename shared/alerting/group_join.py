"""An alert of a grouping action: accounted to its group, whose record lists it in a later work note (the group
notes timer's), or, for the alert that opens a generation, the group's record written now from it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from shared.alerting.assets import AssetFields, AssetLookup
from shared.alerting.failures import classify
from shared.alerting.groups import Header, group_id, group_record_values, group_value
from shared.alerting.outcomes import Outcome, observe_latency
from shared.alerting.ports import GroupPort, RecordsFor
from shared.alerting.records import PreparedAlert
from shared.alerting.rules import Action

logger = logging.getLogger("shared.alerting.group_join")


class GroupJoiner:
    def __init__(
        self,
        groups: GroupPort,
        records: RecordsFor,
        clock: Callable[[], datetime],
        assets: AssetLookup | None = None,
    ) -> None:
        """``assets``: the asset index, when the device sync keeps one (a group's record names its opener's CIs)."""
        self.groups = groups
        self.records = records
        self.clock = clock
        self.assets = assets

    def join(self, alert: PreparedAlert, action: Action) -> Outcome:
        assert action.group is not None
        value = group_value(alert, action.group)
        gid = group_id(action.name, value)
        now = self.clock()
        header = self.groups.latest(gid)
        current = header is not None and header.accepts(now)
        generation = 0 if header is None else header.generation + (0 if current else 1)
        member = self.groups.join(gid, generation, alert)
        if member is None:
            member = self.groups.member(gid, alert.key)
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
        return self._write(alert, action, opened, value)

    def _write(self, alert: PreparedAlert, action: Action, opened: Header, value: str) -> Outcome:
        assets: AssetFields | None = None
        try:
            records = self.records(action.connection, alert.priority)
            if self.assets is not None:
                assets = self.assets.for_record(alert.message, action, alert.values["details"], records.link)
            record = records.create(action.table, group_record_values(alert, action, opened, assets))
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
        observe_latency(alert.message, action.name, self.clock())
        if self.assets is not None:
            self.assets.affect(records.affect, record["sys_id"], assets)
        return Outcome(action.name, "group_opened", record["sys_id"], record.get("number", ""))
