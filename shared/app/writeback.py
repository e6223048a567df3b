"""Builds the write-back (ServiceNow → Defender) from the settings: run by the alert_intake function after
each intake cycle, so one timer keeps both directions in step."""

from __future__ import annotations

import logging

from shared.alerting.ledger import Ledger
from shared.alerting.rules import Action
from shared.alerting.rules_store import RulesUnavailableError
from shared.alerting.writeback import Writeback, WritebackResult, WritebackState
from shared.app import budget_for, forwarding_table, secret_store, servicenow_client
from shared.app.rules import rules_source
from shared.app.sources import alert_writer
from shared.defender.writeback import AlertWriter
from shared.platform.secrets import SecretStore
from shared.platform.storage import table_service
from shared.platform.times import NO_DEADLINE, Deadline
from shared.settings import Settings

logger = logging.getLogger("shared.app.writeback")


def writers(settings: Settings, secrets: SecretStore) -> dict[str, AlertWriter]:
    return {source.name: alert_writer(source, settings, secrets) for source in settings.intake.sources}


def writeback_state(settings: Settings) -> WritebackState:
    return WritebackState(table_service(settings.alerts_storage).get_table_client(settings.intake.state_table))


def _actions(settings: Settings) -> list[Action]:
    try:
        rules = rules_source(settings).current()
    except RulesUnavailableError as exc:
        logger.info("write-back: nothing to do (%s)", exc)
        return []
    return [a for a in rules.actions.values() if a.write_back] if settings.intake.sources else []


def write_back_tables(settings: Settings) -> list[tuple[str, str]]:
    """The (connection, table) pairs a write-back cycle reads."""
    return sorted({(a.connection, a.table) for a in _actions(settings)})


def run_writeback(settings: Settings, deadline: Deadline = NO_DEADLINE) -> list[WritebackResult]:
    """One write-back cycle per connection and table that write-back actions write, stopping between two
    records once ``deadline`` passed. Raises after the cycle when a record could not be written back, so
    that the invocation shows it (the next one retries)."""
    actions = _actions(settings)
    if not actions:
        return []
    secrets = secret_store(settings)
    ledger = Ledger(forwarding_table(settings), settings.forwarding.claim_seconds)
    ledger.ensure_table()
    state = writeback_state(settings)
    sources = writers(settings, secrets)
    results: list[WritebackResult] = []
    try:
        for connection in sorted({a.connection for a in actions}):
            named = settings.connection(connection)
            client = servicenow_client(named, secrets, settings.http, budget_for(settings, named))
            try:
                results += Writeback(connection, client, ledger, sources, state, actions, deadline=deadline).run()
            finally:
                client.close()
    finally:
        for writer in sources.values():
            getattr(writer, "close", lambda: None)()
    for result in results:
        if result.written or result.failed:
            logger.info(
                "write-back %s/%s: %d closed at their source, %d failed, skipped %s",
                result.connection,
                result.table,
                result.written,
                len(result.failed),
                result.skipped or "none",
            )
    failed = [r for r in results if r.failed]
    if failed:
        where = ", ".join(f"{r.connection}/{r.table}" for r in failed)
        raise RuntimeError(f"write-back failed for some records of {where}; the next cycle tries again")
    return results
