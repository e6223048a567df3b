"""``status``: the app's health at a glance, from what it already keeps — the queues, its tables, the budget
board and the tokens' metadata in Key Vault. Nothing here calls Defender, nor ServiceNow unless asked to
(``check_servicenow``).

Each finding is OK, WARN or FAIL by a threshold named with it; the thresholds are constants at the top of each
module here, each with why (docs/operations.md says what to do about each). Storage errors are not caught here:
without the storage account there is nothing to show, and the command says so in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.app.status.connections import connection_findings
from shared.app.status.findings import Figure, Finding, Level, Status, duration
from shared.app.status.forwarding import board_view, budget_findings, forwarding_finding, queue_findings
from shared.app.status.servicenow import servicenow_findings
from shared.app.status.sources import source_findings, sync_findings, writeback_findings
from shared.platform.storage import queue_service, table_service
from shared.settings import Settings

__all__ = ["Figure", "Finding", "Level", "Status", "duration", "gather_status"]


def gather_status(
    settings: Settings,
    storage_options: Mapping[str, Any],
    now: datetime | None = None,
    *,
    check_servicenow: bool = False,
) -> Status:
    """Every finding, in the order an operator reads them: the queue, forwarding, connections, sources.
    ``storage_options``: the storage clients' options (an operator at a terminal wants few retries);
    ``check_servicenow``: also sign in to each connection and read a row (the one call beyond storage)."""
    now = now or datetime.now(UTC)
    queues = queue_service(settings.alerts_storage, **storage_options)
    tables = table_service(settings.alerts_storage, **storage_options)
    board = board_view(settings, tables, now)  # read once: the queue, forwarding and budget lines share it
    findings = [
        *queue_findings(settings, queues, board, now),
        forwarding_finding(board, now),
        *budget_findings(settings, board, now),
        *(servicenow_findings(settings) if check_servicenow else ()),
        *connection_findings(settings, now),
        *source_findings(settings, tables, now),
        *sync_findings(settings, tables, now),
        *writeback_findings(settings, tables, now),
    ]
    return Status(now, tuple(findings))
