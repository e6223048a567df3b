"""Builds the alert intake from the settings; the alert_intake function's entry point."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from shared.alerting.intake import Intake, IntakeCycle, IntakeResult, IntakeState, record_cycle
from shared.app import secret_store
from shared.app.sources import alert_source
from shared.defender.rest import DefenderApiError
from shared.platform.imports import late_imports
from shared.platform.storage import queue_service, table_service
from shared.platform.times import NO_DEADLINE, Deadline
from shared.settings import Settings, get_settings

logger = logging.getLogger("shared.app.intake")


def intake_state(settings: Settings) -> IntakeState:
    return IntakeState(table_service(settings.alerts_storage).get_table_client(settings.intake.state_table))


def run_intake(settings: Settings | None = None, deadline: Deadline = NO_DEADLINE) -> list[IntakeResult]:
    """One cycle over every configured source; a source that cannot be read now does not stop the others,
    and one not begun when ``deadline`` passed waits for the next cycle.

    Raises after the cycle when a source failed, so that the invocation shows it (the next one retries).
    """
    settings = settings or get_settings()
    if not settings.intake.sources:
        logger.debug("alert intake: no DEFENDER_SOURCES configured")
        return []
    state = intake_state(settings)
    state.ensure()
    queue = queue_service(settings.alerts_storage).get_queue_client(settings.alerts_queue)
    overlap = timedelta(minutes=settings.intake.overlap_minutes)
    results, failed = [], []
    secrets = secret_store(settings) if any(s.kind != "cloud" for s in settings.intake.sources) else None
    for source_settings in settings.intake.sources:
        if deadline.passed():
            logger.warning(
                "alert intake from source '%s' left for the next cycle: %s passed", source_settings.name, deadline
            )
            continue
        source = alert_source(source_settings, settings, secrets)
        try:
            result = Intake(source, queue, state, overlap).run()
        except DefenderApiError as exc:
            # A refusal (no read access, say) will not pass by itself: say what to fix, not just "later".
            then = "the next cycle tries again" if exc.retryable else _fix(source_settings.kind)
            logger.error("alert intake from source '%s' failed; %s: %s", source.name, then, exc)
            record_cycle(state, source.name, IntakeCycle(datetime.now(UTC), error=str(exc)))
            failed.append(source.name)
            continue
        finally:
            source.close()
        logger.info(
            "alert intake from source '%s': queued %s; %d queries; %d skipped",
            result.source,
            ", ".join(f"{count} {kind}" for kind, count in result.queued.items()),
            result.queries,
            len(result.skipped),
        )
        results.append(result)
    if failed:
        raise RuntimeError(f"alert intake failed for source(s) {', '.join(failed)}; see the log above")
    return results


def _fix(kind: str) -> str:
    if kind == "cloud":
        return "the app's identity needs read access to Defender for IoT (infra/bicep/defender-reader.bicep)"
    return f"check the {kind}'s API token (its Key Vault secret) and that the token may read alerts"


def run_cycle(settings: Settings | None = None) -> None:
    """The alert_intake timer: take in what the sources raised and closed, then write back what analysts
    resolved in ServiceNow (:mod:`shared.app.writeback`). Either failing does not stop the other; the
    invocation fails after both, so that it shows."""
    with late_imports:
        from shared.app.writeback import run_writeback  # noqa: PLC0415 - the rules and ledger only when needed

    settings = settings or get_settings()
    deadline = Deadline(settings.run_seconds)  # one for both steps: they share the invocation
    problems = []
    for step in (run_intake, run_writeback):
        try:
            step(settings, deadline)
        except RuntimeError as exc:
            problems.append(str(exc))
    if problems:
        raise RuntimeError("; ".join(problems))
