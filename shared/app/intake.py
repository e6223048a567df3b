"""Builds the alert intake from the settings; the alert_intake function's entry point."""

from __future__ import annotations

import logging
from datetime import timedelta

from azure.mgmt.resourcegraph import ResourceGraphClient

from shared.alerting.intake import Intake, IntakeResult, IntakeState
from shared.defender.cloud import CloudSource, CloudSourceError
from shared.platform.identity import LocalEmulatorCredential, azure_credential
from shared.platform.settings import CloudSourceSettings, Settings, get_settings
from shared.platform.storage import queue_service, table_service

logger = logging.getLogger("shared.app.intake")


def cloud_source(source: CloudSourceSettings) -> CloudSource:
    """The Resource Graph client for one cloud source, signed in as the settings say."""
    credential = (
        LocalEmulatorCredential()
        if source.credential == "emulator"
        else azure_credential(source.client_id, managed_identity=source.credential == "managed_identity")
    )
    client = ResourceGraphClient(
        credential,
        base_url=source.resource_graph_url,
        connection_verify=str(source.ca_bundle) if source.ca_bundle else True,
        retry_total=3,  # a cycle a minute: the next one tries again rather than this one waiting long
    )
    return CloudSource(source.name, client, source.subscriptions)


def intake_state(settings: Settings) -> IntakeState:
    return IntakeState(table_service(settings.alerts_storage).get_table_client(settings.intake.state_table))


def run_intake(settings: Settings | None = None) -> list[IntakeResult]:
    """One cycle over every configured source; a source that cannot be read now does not stop the others.

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
    for source_settings in settings.intake.sources:
        source = cloud_source(source_settings)
        try:
            result = Intake(source, queue, state, overlap).run()
        except CloudSourceError as exc:
            # A refusal (no read access, say) will not pass by itself: say what to fix, not just "later".
            then = (
                "the next cycle tries again"
                if exc.retryable
                else "the app's identity needs read access to Defender for IoT (infra/bicep/defender-reader.bicep)"
            )
            logger.error("alert intake from source '%s' failed; %s: %s", source.name, then, exc)
            failed.append(source.name)
            continue
        finally:
            source.close()
        logger.info(
            "alert intake from source '%s': queued %s; %d Resource Graph queries; %d skipped",
            result.source,
            ", ".join(f"{count} {kind}" for kind, count in result.queued.items()),
            result.queries,
            len(result.skipped),
        )
        results.append(result)
    if failed:
        raise RuntimeError(f"alert intake failed for source(s) {', '.join(failed)}; see the log above")
    return results
