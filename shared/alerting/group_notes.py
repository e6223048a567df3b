"""The group notes timer: writes each alert group's record if its opener could not, then lists the group's
new alerts on it in batched work notes, exactly once each.

One run looks at every open group generation (:mod:`shared.alerting.groups`):

- a record still unwritten (its opener failed or crashed) is looked up by its correlation id, and written
  from the first member's message only when ServiceNow does not have it;
- new members are listed ``per_note`` at a time. Before the note is sent its number and members are kept
  on the header; after, the members are marked and the count raised. A note whose fate is unknown (a lost
  answer, a crash) is looked for in the record's journal before it is written again, so a member is never
  listed twice and the count stays exact. The note's own PATCH also sets the record's
  ``correlation_display`` to :func:`note_display` of its number, and that is what the recovery reads back:
  the record itself, which the integration user may read, rather than ``sys_journal_field``, which needs the
  admin-level ``audit_viewer`` role (ServiceNow docs, granular admin roles for auditing). A journal field's
  value comes back empty through the Table API (``"work_notes": ""`` in the Table API doc's examples), and
  what its display value holds is not published, so the journal is not read at all;
- a generation whose window is over by ``grace`` and whose members are all listed is retired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.alerting.assets import AssetFields, AssetLookup
from shared.alerting.failures import classify
from shared.alerting.groups import GroupBook, Header, Member, group_record_values
from shared.alerting.records import CORRELATION_DISPLAY, prepare
from shared.alerting.rules_store import RulesSource
from shared.contract.fields import InvalidMessageError
from shared.contract.model import Severity
from shared.contract.parse import parse_message
from shared.platform import telemetry
from shared.platform.times import NO_DEADLINE, Deadline
from shared.servicenow import ServiceNowClient
from shared.servicenow.records import Records, table_of

logger = logging.getLogger("shared.alerting.group_notes")
PER_NOTE = 100  # alerts listed in one work note (about 15 kB of text)
GRACE = timedelta(minutes=15)  # longer than a forwarder invocation may take (functionTimeout 10 min)


@dataclass
class NotesReport:
    records: int = 0  # group records this run wrote or recovered
    notes: int = 0
    alerts: int = 0  # alerts listed in those notes
    retired: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: bool = False  # the deadline passed; the next run carries on with the alerts not yet listed


def marker(seq: int) -> str:
    """The first words of a group's work note number ``seq``, for the analyst reading the journal."""
    return f"[Defender for IoT group note {seq}]"


def note_display(seq: int) -> str:
    """The record's ``correlation_display`` once note ``seq`` is written: one PATCH carries both, so finding it
    means the note is in the journal."""
    return f"{CORRELATION_DISPLAY} group note {seq}"


class GroupNotes:
    def __init__(
        self,
        book: GroupBook,
        rules: RulesSource,
        clients: Mapping[str, ServiceNowClient],
        *,
        per_note: int = PER_NOTE,
        grace: timedelta = GRACE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        assets: AssetLookup | None = None,
    ) -> None:
        """``assets``: the asset index, when the device sync keeps one (a group's record names its opener's CIs)."""
        self.book = book
        self.rules = rules
        self.clients = clients
        self.assets = assets
        self.per_note = per_note
        self.grace = grace
        self.clock = clock

    def _client(self, header: Header) -> ServiceNowClient:
        # The alerts are accounted for already: list them soon, as a Major alert's calls in the ServiceNow budget.
        return self.clients[header.connection].with_context(priority=int(Severity.MAJOR))

    def run(self, deadline: Deadline = NO_DEADLINE) -> NotesReport:
        """One pass over the open groups, stopping before a record or note once ``deadline`` passed (each
        note is its own claim, so the next run lists exactly the alerts this one did not)."""
        report = NotesReport()
        for header in self.book.open_headers():
            if deadline.passed():
                report.stopped = True
                logger.warning("alert groups: stopped at %s; the next run carries on", deadline)
                break
            try:
                self._group(header, report, deadline)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                # The group stays as it is: the next run picks it up where this one stopped.
                report.failed.append(f"{header.value}: {failure.reason}")
                logger.warning("alert group %r (record %s): %s", header.value, header.number or "-", failure.reason)
        return report

    def _group(self, header: Header, report: NotesReport, deadline: Deadline) -> None:
        if header.state != "created":
            written = self._record(header, report, deadline)
            if written is None:
                return
            header = written
        if header.note_state == "writing":
            if not self.book.stale(header.note_claimed_at):
                return  # another run is writing it now
            recovered = self._recover_note(header, report)
            if recovered is None:
                return
            header = recovered
        while True:
            pending = self.book.pending(header, self.per_note + 1)
            own = [m.row for m in pending if m.row == header.first_member]
            if own:  # the record itself accounts for its first alert
                self.book.mark_noted(header.gid, own)
                pending = [m for m in pending if m.row != header.first_member]
            if not pending:
                break
            if deadline.passed():
                report.stopped = True
                return
            written = self._note(header, pending[: self.per_note], report)
            if written is None:
                return
            header = written
            if len(pending) <= self.per_note:
                break
        over = header.opened_at + (
            self.grace if header.closed else timedelta(minutes=header.window_minutes) + self.grace
        )
        if self.clock() >= over and not self.book.pending(header, 1) and self.book.retire(header) is not None:
            report.retired += 1

    # -- the record ---------------------------------------------------------------------------------
    def _record(self, header: Header, report: NotesReport, deadline: Deadline) -> Header | None:
        """Finish a record its opener left unwritten; None when it must wait (a live claim, or no action)."""
        if header.state == "claimed" and not self.book.stale(header.claimed_at):
            return None
        taken = self.book.take_over(header)
        if taken is None:
            return None
        records = Records(self._client(header))
        found = records.find(header.table, header.correlation_id)
        if found is None:
            if deadline.passed():  # one call after the deadline at most: the lookup; the write waits
                self.book.unwritten(taken, maybe_written=False)
                report.stopped = True
                return None
            action = self.rules.current().actions.get(header.action)
            if action is None or action.group is None:
                logger.error("alert group %r: action %r no longer groups alerts", header.value, header.action)
                return None
            (first,) = self.book.members(header, [header.first_member])
            try:
                message = parse_message(first.body())
            except InvalidMessageError as exc:
                logger.error("alert group %r: its first alert cannot be read again: %s", header.value, exc.reason)
                return None
            opener = prepare(message)
            assets: AssetFields | None = None
            try:
                if self.assets is not None:
                    assets = self.assets.for_record(message, action, opener.values["details"], records.link)
                found = records.create(header.table, group_record_values(opener, action, taken, assets))
            except Exception as exc:
                failure = classify(exc)
                self.book.unwritten(taken, maybe_written=failure is None or failure.maybe_written)
                raise
            if self.assets is not None:
                self.assets.affect(records.affect, found["sys_id"], assets)
        created = self.book.created(taken, found["sys_id"], found.get("number", ""))
        if created is not None:
            report.records += 1
            logger.info("alert group %r: record %s written for its opener", header.value, created.number)
        return created

    # -- the notes ----------------------------------------------------------------------------------
    def _note(self, header: Header, members: list[Member], report: NotesReport) -> Header | None:
        begun = self.book.begin_note(header, [m.row for m in members])
        if begun is None:
            return None  # another run took it
        return self._send(begun, members, report)

    def _send(self, header: Header, members: list[Member], report: NotesReport) -> Header | None:
        total = header.count + len(members)
        lines = [
            f"{marker(header.note_seq)} {len(members)} more alert(s) of this group "
            f"({header.value}); {total} in all so far:",
            *(f"- {m.line}" for m in members),
        ]
        client = self._client(header)
        try:
            record = client.update_record(
                header.table,
                header.sys_id,
                {"work_notes": "\n".join(lines), "correlation_display": note_display(header.note_seq)},
                retry_safe=False,
            )
        except Exception:
            self.book.hand_over_note(header)  # the next run reads the record back first, without waiting
            raise
        closed = str(record.get("state", "")) in table_of(header.table).ended
        return self._finish(header, members, report, closed=closed)

    def _finish(self, header: Header, members: list[Member], report: NotesReport, *, closed: bool) -> Header | None:
        self.book.mark_noted(header.gid, [m.row for m in members])
        finished = self.book.finish_note(header, len(members), closed=closed)
        if finished is not None:
            report.notes += 1
            report.alerts += len(members)
            telemetry.ALERTS_FORWARDED.add(len(members), {"action": header.action, "operation": "group_note"})
        return finished

    def _recover_note(self, header: Header, report: NotesReport) -> Header | None:
        """A note whose fate is unknown: finish it if the record carries its number, else send it again."""
        taken = self.book.take_note(header)
        if taken is None:
            return None
        members = list(self.book.members(taken, taken.note_members))
        record = self._client(taken).get_record(taken.table, taken.sys_id, fields=["correlation_display"])
        if record.get("correlation_display") == note_display(taken.note_seq):
            logger.info("alert group %r: note %d was written; finishing it", taken.value, taken.note_seq)
            return self._finish(taken, members, report, closed=False)
        return self._send(taken, members, report)
