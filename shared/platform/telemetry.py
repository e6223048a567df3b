"""Telemetry: OpenTelemetry metrics and logs, exported to Application Insights when it is configured.

With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set (and, with local auth disabled,
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``), ``configure()`` installs the Azure Monitor
distro; otherwise the instruments are OpenTelemetry's no-ops and the structured log lines remain.
Metric names are the ones the Bicep alert rules query.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from opentelemetry import metrics

from shared.platform.identity import azure_credential

logger = logging.getLogger("shared.platform.telemetry")
_configured = False
_lock = threading.Lock()
_meter = metrics.get_meter("defender_iot_servicenow")

ALERTS_RECEIVED = _meter.create_counter(
    "alerts.received", unit="{message}", description="Messages taken off the alerts queue"
)
ALERTS_FILTERED = _meter.create_counter("alerts.filtered", unit="{message}", description="Messages no rule selected")
ALERTS_FORWARDED = _meter.create_counter(
    "alerts.forwarded", unit="{record}", description="ServiceNow records written, by action and operation"
)
ALERTS_DEFERRED = _meter.create_counter("alerts.deferred", unit="{message}", description="Messages deferred for later")
ALERTS_POISONED = _meter.create_counter(
    "alerts.poisoned", unit="{message}", description="Messages put on the poison queue"
)
DUPLICATES_AVOIDED = _meter.create_counter(
    "alerts.duplicates_avoided", unit="{message}", description="Redeliveries and repeats that wrote no new record"
)
# Application Insights keeps a histogram's sum, count, min and max per export, not its buckets: the workbook's
# percentiles are of those per-minute means (docs/operations.md).
ALERTS_LATENCY = _meter.create_histogram(
    "alerts.latency", unit="s", description="From the alert's time in Defender to its new record in ServiceNow"
)


def configure() -> bool:
    """Install the Azure Monitor exporter once, when Application Insights is configured."""
    global _configured  # noqa: PLW0603 - one exporter per process
    with _lock:
        if _configured or not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            return _configured
        from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 - heavy, only when used

        options: dict[str, Any] = {"logger_name": "shared"}
        client_id = os.environ.get("AZURE_CLIENT_ID")
        if "Authorization=AAD" in os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""):
            options["credential"] = azure_credential(client_id, managed_identity=True)
        configure_azure_monitor(**options)
        _configured = True
        logger.info("telemetry exported to Application Insights")
        return True
