"""Builds the group notes writer from the settings; the alert_groups function's entry point."""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.alerting import queue_depth
from shared.alerting.group_notes import GroupNotes, NotesReport
from shared.alerting.groups import GroupBook
from shared.alerting.poison import poison_queue_name
from shared.app import ProcessSingleton, board_for, budget_for, forwarding_table, secret_store, servicenow_client
from shared.app.forwarding import asset_lookup
from shared.app.rules import rules_source
from shared.platform.storage import queue_service
from shared.platform.times import Deadline
from shared.settings import Settings, get_settings

logger = logging.getLogger("shared.app.groups")


def build_group_notes(settings: Settings) -> GroupNotes:
    book = GroupBook(forwarding_table(settings), settings.forwarding.claim_seconds)
    secrets = secret_store(settings)
    return GroupNotes(
        book,
        rules_source(settings),
        {c.name: servicenow_client(c, secrets, settings.http, budget_for(settings, c)) for c in settings.connections},
        assets=asset_lookup(settings),
    )


def _ready(notes: GroupNotes) -> GroupNotes:
    notes.book.ensure_table()
    return notes


_notes = ProcessSingleton(lambda: _ready(build_group_notes(get_settings())))
_queues: tuple[QueueClient, QueueClient] | None = None


def observe_queues(settings: Settings | None = None) -> None:
    """The queue gauges, on this timer because it always runs (every 30 s); a storage hiccup costs one reading,
    never the group notes."""
    global _queues  # noqa: PLW0603 - the clients are reused, as the notes writer is
    pair = _queues
    if settings is not None or pair is None:
        current = settings or get_settings()
        service = queue_service(current.alerts_storage)
        alerts = current.alerts_queue
        pair = (service.get_queue_client(alerts), service.get_queue_client(poison_queue_name(alerts)))
        if settings is None:
            _queues = pair
    try:
        queue_depth.observe(*pair)
    except AzureError as exc:
        logger.warning("queue depths not read this time: %s", exc)


def run_group_notes(settings: Settings | None = None) -> NotesReport:
    """One pass over the open alert groups. Raises after the pass when a group could not be written to, so
    that the invocation shows it (the next one continues where this one stopped)."""
    observe_queues(settings)
    notes = _ready(build_group_notes(settings)) if settings is not None else _notes.get()
    current = settings or get_settings()
    report = notes.run(Deadline(current.run_seconds))
    if report.notes:
        board_for(current).report_soon()  # the work notes' count reaches `status` through the board
    if report.records or report.notes or report.retired:
        logger.info(
            "alert groups: %d record(s) written, %d alert(s) listed in %d work note(s), %d group(s) retired",
            report.records,
            report.alerts,
            report.notes,
            report.retired,
        )
    if report.failed:
        raise RuntimeError(f"alert groups not written to now (the next run tries again): {'; '.join(report.failed)}")
    return report
