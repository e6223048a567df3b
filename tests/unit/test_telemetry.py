"""Telemetry survives the instance's stop: a SIGTERM flushes what the 60-s metric export has not sent yet."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# A process as the worker is: a meter provider whose reader exports once an hour (the distro's is every
# minute), a counter added to, then SIGTERM, the signal Flex stops an instance's worker with.
PROCESS = """
import os, signal, sys, time
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout), export_interval_millis=3_600_000)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
from shared.platform import telemetry

if sys.argv[1] == "flush":
    assert telemetry.install_flush_on_stop()
telemetry.ALERTS_RECEIVED.add(7)
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(10)
"""


@pytest.mark.parametrize("handler", ["flush", "none"])
def test_a_sigterm_exports_the_pending_metrics_and_still_stops_the_process(handler: str) -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROCESS, handler], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGTERM, done.stderr  # stopped by the signal, as without the handler
    exported = '"name": "alerts.received"' in done.stdout and '"value": 7' in done.stdout
    assert exported is (handler == "flush"), done.stdout  # without it, the minute's metrics are lost
