"""The suite-wide secret scan (a pytest plugin, loaded by tests/conftest.py).

For the whole session every log record any test produces (all loggers, DEBUG and up, with
arguments, extras and exception text), every metric point's attributes, and the local host's own
log files (``record_text``) are kept. After each test the secret values the emulators know —
passwords, client secrets, Basic credentials, every OAuth token they issued, every Key Vault secret
and the console's and the sensors' API tokens — are collected. ``tests/test_secret_scan.py`` runs last and looks for
each of those values in everything kept.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tools.emulators.httpserver import STOPPED_SECRET_VALUES, TlsEmulator

MIN_SECRET_LENGTH = 8  # shorter values would match by chance
# Libraries only the PySNC comparison tests use (never deployed); requests-oauthlib logs the password
# grant's form, password included, at DEBUG. Everything the product runs on is scanned.
NOT_SHIPPED = ("pysnc", "requests_oauthlib", "oauthlib")
# One reader for the whole session (a process gets one global meter provider); test_telemetry reads it too.
METRICS = InMemoryMetricReader()
_SKIP = {"msg", "args", "exc_info", "exc_text", "stack_info", "created", "msecs", "relativeCreated", "thread",
         "threadName", "process", "processName", "taskName", "levelno", "lineno", "pathname", "filename",
         "module", "funcName", "name", "levelname"}  # fmt: skip


class Captured(logging.Handler):
    """Keeps the text of every record: the formatted message, extras and any exception."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.records = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(NOT_SHIPPED):
            return
        try:
            parts = [record.getMessage()]
        except Exception:  # a bad format string is the caller's bug; keep what there is
            parts = [str(record.msg), repr(record.args)]
        parts += [f"{k}={v!r}" for k, v in record.__dict__.items() if k not in _SKIP]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(record.exc_info[1])))
        with self._lock:
            self.texts.append(" ".join(parts))
            self.records += 1

    def add(self, text: str) -> None:
        with self._lock:
            self.texts.append(text)


CAPTURED = Captured()
SECRETS: set[str] = set()


def record_text(text: str) -> None:
    """Add text produced outside this process (the local host's log files) to what is scanned."""
    CAPTURED.add(text)


def harvest() -> None:
    for emulator in list(TlsEmulator.instances):
        SECRETS.update(emulator.secret_values())
    SECRETS.update(STOPPED_SECRET_VALUES)


def metric_texts() -> list[str]:
    texts: list[str] = []
    data = METRICS.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    texts.append(f"{metric.name} {dict(point.attributes or {})!r}")
    return texts


def findings(texts: list[str], secrets: set[str]) -> list[str]:
    """Each secret found, with the start of the first text that holds it (the secret itself masked)."""
    found = []
    for secret in sorted(s for s in secrets if len(s) >= MIN_SECRET_LENGTH):
        for text in texts:
            if secret in text:
                found.append(text.replace(secret, "<SECRET>")[:300])
                break
    return found


def pytest_configure(config: pytest.Config) -> None:
    metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))
    root = logging.getLogger()
    root.addHandler(CAPTURED)
    root.setLevel(logging.DEBUG)  # every record reaches the capture; pytest's own handlers keep their levels


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The scan needs everything else to have run first.
    scans = [item for item in items if item.nodeid.startswith("tests/test_secret_scan.py")]
    items[:] = [item for item in items if item not in scans] + scans


@pytest.fixture(autouse=True)
def _harvest_secrets() -> Iterator[None]:
    yield
    harvest()


def summary() -> dict[str, Any]:
    return {"records": CAPTURED.records, "texts": len(CAPTURED.texts), "secrets": len(SECRETS)}
