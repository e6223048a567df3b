"""The forwarding rules as every function reads them: where the settings say, through the alerts storage
account's blob service unless they are a local file."""

from __future__ import annotations

from shared.alerting.rules_store import RulesSource
from shared.platform.storage import blob_service
from shared.settings import Settings


def rules_source(settings: Settings, *, check_seconds: float = 0.0) -> RulesSource:
    """``check_seconds``: how long the rules in force stand before the document is looked at again (0: every
    read; the forwarder's, per alert, waits ``FORWARDING_RULES_CHECK_SECONDS``)."""
    location = settings.forwarding.rules_location
    blobs = None if location.path is not None else blob_service(settings.alerts_storage)
    return RulesSource(location, blobs, [c.name for c in settings.connections], check_seconds=check_seconds)
