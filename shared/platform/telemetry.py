"""Telemetry: OpenTelemetry metrics and logs, exported to Application Insights when it is configured.

With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set (and, with local auth disabled,
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``), ``configure()`` installs the Azure Monitor
distro; otherwise the instruments are OpenTelemetry's no-ops and the structured log lines remain.
Metric names are the ones the Bicep alert rules and the workbook query (docs/operations.md lists them all).

With the worker's OpenTelemetry capability on (``PYTHON_ENABLE_OPENTELEMETRY``, host.json ``telemetryMode``),
the Python worker installs the distro itself before the app is imported and the host stops forwarding the
worker's log records: ``configure()`` then leaves it as it is, so each record is exported once.

Every instrument the product records is defined here, by the area that records it: one vocabulary, so a name,
unit or description is written once (tests/unit/test_operations.py holds it to the documentation and queries).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Meter
from opentelemetry.util.types import Attributes

from shared.platform import outcomes
from shared.platform.identity import azure_credential
from shared.platform.imports import late_imports

logger = logging.getLogger("shared.platform.telemetry")
_configured = False
_lock = threading.Lock()
_meter = metrics.get_meter("defender_iot_servicenow")


class _TalliedCounter:
    """An OpenTelemetry counter that also adds to the process's outcome tally, by one of its attributes: one
    count feeds both Application Insights and the budget board (``status``'s last hour)."""

    def __init__(self, counter: Counter, figure: str, by: str | None) -> None:
        self.counter = counter
        self.figure = figure
        self.by = by

    def add(self, amount: int, attributes: Attributes = None, context: Context | None = None) -> None:
        self.counter.add(amount, attributes, context)
        name = str((attributes or {}).get(self.by, "")) if self.by else ""
        outcomes.TALLY.add(self.figure, name, amount)


class _TalliedMeter:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def create_counter(self, name: str, *, figure: str, by: str | None = None, **options: Any) -> _TalliedCounter:
        return _TalliedCounter(self.meter.create_counter(name, **options), figure, by)


_tallied = _TalliedMeter(_meter)

# -- alert forwarding (shared.alerting.forwarder and its collaborators) ---------------------------------------
ALERTS_RECEIVED = _meter.create_counter(
    "alerts.received", unit="{message}", description="Messages taken off the alerts queue"
)
ALERTS_FILTERED = _tallied.create_counter(
    "alerts.filtered", figure="filtered", unit="{message}", description="Messages no rule selected"
)
ALERTS_FORWARDED = _tallied.create_counter(
    "alerts.forwarded",
    figure="written",
    by="action",
    unit="{record}",
    description="ServiceNow records written, by action and operation",
)
ALERTS_DEFERRED = _tallied.create_counter(
    "alerts.deferred", figure="deferred", by="reason", unit="{message}", description="Messages deferred for later"
)
ALERTS_POISONED = _tallied.create_counter(
    "alerts.poisoned", figure="poisoned", by="reason", unit="{message}", description="Messages put on the poison queue"
)
DUPLICATES_AVOIDED = _meter.create_counter(
    "alerts.duplicates_avoided", unit="{message}", description="Redeliveries and repeats that wrote no new record"
)
# Application Insights keeps a histogram's sum, count, min and max per export, not its buckets: the workbook's
# percentiles are of those per-minute means (docs/operations.md).
ALERTS_LATENCY = _meter.create_histogram(
    "alerts.latency", unit="s", description="From the alert's time in Defender to its new record in ServiceNow"
)
ALERT_ASSETS = _meter.create_counter(
    "alerts.assets",
    unit="{record}",
    description="New records and their devices in the asset index: linked, not_in_cmdb, failed, affected_ci_failed",
)


# -- the ServiceNow budget (shared.servicenow.budget) --------------------------------------------------------
THROTTLED = _meter.create_counter("servicenow.throttled", unit="{answer}", description="ServiceNow's 429 answers")
PAUSES = _meter.create_counter(
    "servicenow.budget.pauses", unit="{pause}", description="Pauses of every instance until a rate-limit window resets"
)

# -- alert intake (shared.alerting.intake) -------------------------------------------------------------------
INTAKE_MESSAGES = _meter.create_counter("intake.messages", unit="{message}", description="Messages put on the queue")
INTAKE_SKIPPED = _meter.create_counter(
    "intake.skipped", unit="{record}", description="Source records skipped: unreadable, or not a valid message"
)
INTAKE_RUNS = _meter.create_counter("intake.runs", unit="{run}")
INTAKE_LAG = _meter.create_gauge(
    "intake.lag_seconds", unit="s", description="Now minus the source's watermark (the newest alert start taken in)"
)

# -- the alerts queues (shared.alerting.queue_depth) ---------------------------------------------------------
QUEUE_DEPTH = _meter.create_gauge(
    "queue.depth", unit="{message}", description="Approximate messages in the queue, invisible (deferred) ones too"
)
QUEUE_OLDEST_AGE = _meter.create_gauge(
    "queue.oldest_age_seconds", unit="s", description="Age of the oldest visible message on the alerts queue"
)

# -- write-back (shared.alerting.writeback) ------------------------------------------------------------------
WRITEBACK = _meter.create_counter(
    "writeback.records", unit="{record}", description="Resolved records: written back, skipped or failed"
)

# -- ServiceNow sign-in (shared.connections) -----------------------------------------------------------------
REFRESH_TOKEN_DAYS_LEFT = _meter.create_gauge("servicenow.refresh_token.days_left", unit="d")
TOKEN_REFRESH_FAILURES = _meter.create_counter("servicenow.token_refresh.failures", unit="{refresh}")

# -- device sync (shared.devices.sync) -----------------------------------------------------------------------
SYNC_RUNS = _meter.create_counter("device_sync.runs", unit="{run}")
SYNC_ITEMS = _meter.create_counter("device_sync.items", unit="{item}")
SYNC_AGE = _meter.create_gauge("device_sync.age_seconds", unit="s")


def configure() -> bool:
    """Install the Azure Monitor exporter once, when Application Insights is configured."""
    global _configured  # noqa: PLW0603 - one exporter per process
    with _lock:
        if _configured or not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            return _configured
        with late_imports:
            from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - heavy, only when used

        if isinstance(metrics.get_meter_provider(), MeterProvider):
            logger.info("telemetry exported by the Python worker's OpenTelemetry distro")
        else:
            with late_imports:
                from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 - as above

            # Live Metrics stays on, as the distro's default, chosen here so it is a decision: the portal's live
            # view of the app; unwatched, each instance only pings the service every 5 s.
            options: dict[str, Any] = {"logger_name": "shared", "enable_live_metrics": True}
            client_id = os.environ.get("AZURE_CLIENT_ID")
            if "Authorization=AAD" in os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""):
                options["credential"] = azure_credential(client_id, managed_identity=True)
            configure_azure_monitor(**options)
            logger.info("telemetry exported to Application Insights")
        install_flush_on_stop()
        _configured = True
        return True


def flush(timeout_millis: int = 5_000) -> None:
    """Export what the meter, tracer and logger providers hold now (the distro's metrics go every 60 s)."""
    for provider in (metrics.get_meter_provider(), trace.get_tracer_provider(), _logs.get_logger_provider()):
        force_flush = getattr(provider, "force_flush", None)  # the API's no-op providers have none
        if force_flush is not None:
            try:
                force_flush(timeout_millis=timeout_millis)
            except Exception as exc:  # stopping goes on; what could not be sent is lost either way
                logger.warning("telemetry not flushed: %s", exc)


def install_flush_on_stop() -> bool:
    """Flush on SIGTERM, then stop as before. The SDK's providers flush at interpreter exit (atexit), but the
    Python worker handles no signal, so a SIGTERM (an instance stopped or scaled in) ends it without atexit and
    the last minute of metrics with it. False where no handler can be set (not the main thread)."""
    previous = signal.getsignal(signal.SIGTERM)

    def flush_then_stop(signum: int, frame: FrameType | None) -> None:
        flush()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    try:
        signal.signal(signal.SIGTERM, flush_then_stop)
    except ValueError:  # only the main thread may set handlers: atexit is what is left
        logger.info("no SIGTERM flush: telemetry is configured outside the main thread")
        return False
    return True
