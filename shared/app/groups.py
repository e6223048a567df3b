"""Builds the group notes writer from the settings; the alert_groups function's entry point."""

from __future__ import annotations

import logging
import threading

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from shared.alerting import queue_depth
from shared.alerting.group_notes import GroupNotes, NotesReport
from shared.alerting.groups import GroupBook
from shared.alerting.poison import poison_queue_name
from shared.alerting.rules_store import RulesSource
from shared.app import budget_for, forwarding_table, secret_store, servicenow_client
from shared.platform.settings import Settings, get_settings
from shared.platform.storage import blob_service, queue_service
from shared.platform.times import Deadline

logger = logging.getLogger("shared.app.groups")


def build_group_notes(settings: Settings) -> GroupNotes:
    storage = settings.alerts_storage
    forwarding = settings.forwarding
    book = GroupBook(forwarding_table(settings), forwarding.claim_seconds)
    location = forwarding.rules_location
    blobs = None if location.path is not None else blob_service(storage)
    secrets = secret_store(settings)
    return GroupNotes(
        book,
        RulesSource(location, blobs, [c.name for c in settings.connections], check_seconds=0),
        {c.name: servicenow_client(c, secrets, settings.http, budget_for(settings, c)) for c in settings.connections},
    )


_notes: GroupNotes | None = None
_queues: tuple[QueueClient, QueueClient] | None = None
_lock = threading.Lock()


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
    global _notes  # noqa: PLW0603 - one writer per worker process, built on first use, as the forwarder
    observe_queues(settings)
    if settings is not None:
        notes = build_group_notes(settings)
        notes.book.ensure_table()
    else:
        with _lock:
            if _notes is None:
                _notes = build_group_notes(get_settings())
                _notes.book.ensure_table()
        notes = _notes
    report = notes.run(Deadline((settings or get_settings()).run_seconds))
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
