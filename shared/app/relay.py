"""The relay: the alert intake of one locally managed sensor, run next to the sensor (an air-gapped OT
network that Azure cannot reach) and sending outward to the alerts queue. It needs nothing in Azure but
the right to send queue messages (Storage Queue Data Message Sender); its memory is a local file."""

from __future__ import annotations

import logging
import signal
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType

from shared.alerting.intake import FileIntakeState, Intake, IntakeResult
from shared.app import vault_store
from shared.defender.rest import DefenderApiError
from shared.defender.sensor import SensorSource
from shared.platform.storage import queue_service
from shared.settings import RelaySettings

logger = logging.getLogger("shared.app.relay")


class Relay:
    def __init__(self, settings: RelaySettings, state_path: Path) -> None:
        self.settings = settings
        self.state = FileIntakeState(state_path)
        self.state.ensure()
        secrets = vault_store(settings.key_vault)
        source = settings.source
        self.source = SensorSource.connect(source, lambda: secrets.get(source.token_secret), settings.http)
        self.queue = queue_service(settings.alerts_storage).get_queue_client(settings.alerts_queue)
        self.intake = Intake(self.source, self.queue, self.state, timedelta(minutes=settings.overlap_minutes))
        self.stopping = False

    def cycle(self) -> IntakeResult | None:
        """One poll of the sensor; a failure is logged and the next cycle tries again."""
        try:
            result = self.intake.run()
        except DefenderApiError as exc:
            logger.error("relay: sensor '%s' could not be read; the next cycle tries again: %s", self.source.name, exc)
            return None
        logger.info(
            "relay: sensor '%s': queued %s; %d skipped",
            self.source.name,
            ", ".join(f"{count} {kind}" for kind, count in result.queued.items()),
            len(result.skipped),
        )
        return result

    def run(self, interval_seconds: float) -> None:
        """Poll until SIGTERM or SIGINT; a signal only sets a flag (the loop checks it in short sleeps)."""

        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self.stopping:
                started = time.monotonic()
                self.cycle()
                while not self.stopping and time.monotonic() - started < interval_seconds:
                    time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.source.close()
        logger.info("relay: stopped")
