"""function_app.py: five functions with their real triggers, and start-up refused on bad settings."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import azure.functions.timer
import pytest

from shared.app.tokens import refresh_tokens
from shared.settings import get_settings
from tests.conftest import ROOT

APP_SETTINGS = {
    "ALERTS_QUEUE": "alerts",
    "ALERTS_STORAGE": "UseDevelopmentStorage=true",
    "TOKEN_REFRESH_SCHEDULE": "0 */10 * * * *",
    "DEVICE_SYNC_SCHEDULE": "0 */5 * * * *",
    "ALERT_INTAKE_SCHEDULE": "0 */1 * * * *",
    "SERVICENOW_CONNECTIONS": json.dumps(
        [{"name": "default", "instance_url": "https://dev1.service-now.com", "auth": "basic", "username": "u"}]
    ),
}


@pytest.fixture
def function_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for name, value in APP_SETTINGS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    module = (
        importlib.reload(sys.modules["function_app"])
        if "function_app" in sys.modules
        else importlib.import_module("function_app")
    )
    yield module
    get_settings.cache_clear()


def test_five_functions_with_their_triggers(function_app: ModuleType) -> None:
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    assert sorted(functions) == [
        "alert_forwarder",
        "alert_groups",
        "alert_intake",
        "device_sync_timer",
        "token_refresh",
    ]
    queue = functions["alert_forwarder"].get_trigger()
    assert (queue.type, queue.queue_name, queue.connection) == ("queueTrigger", "%ALERTS_QUEUE%", "ALERTS_STORAGE")
    for name, setting in (
        ("device_sync_timer", "%DEVICE_SYNC_SCHEDULE%"),
        ("token_refresh", "%TOKEN_REFRESH_SCHEDULE%"),
        ("alert_intake", "%ALERT_INTAKE_SCHEDULE%"),
        ("alert_groups", "*/30 * * * * *"),
    ):
        timer = functions[name].get_trigger()
        assert (timer.type, timer.schedule, timer.use_monitor, timer.run_on_startup) == (
            "timerTrigger",
            setting,
            True,
            False,
        )


def test_timers_with_nothing_configured_do_nothing(function_app: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    timer = azure.functions.timer.TimerRequest(past_due=False)
    with caplog.at_level("INFO"):
        functions["device_sync_timer"](timer)  # DEVICE_SYNC_ENABLED defaults to false
        functions["token_refresh"](timer)  # no OAuth connection configured: nothing to renew
    assert "device sync is disabled (DEVICE_SYNC_ENABLED)" in caplog.text
    assert [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("shared", "functions"))
    ] == []
    assert refresh_tokens() == []  # no connection renewed, and no Key Vault asked for (none is configured)


def test_start_up_stops_naming_the_bad_settings() -> None:
    environ = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
    environ.update(APP_SETTINGS, ALERTS_QUEUE="", SERVICENOW_CONNECTIONS='[{"name": "default"}]')
    result = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SettingsError: invalid app settings (2 problem(s))" in result.stderr
    assert "ALERTS_QUEUE is not set; expected a storage queue name" in result.stderr
    assert "SERVICENOW_CONNECTIONS[default].instance_url is missing" in result.stderr


HEAVY_SDKS = (
    "azure.storage.queue",
    "azure.storage.blob",
    "azure.data.tables",
    "azure.keyvault.secrets",
    "azure.identity",
    "azure.monitor.opentelemetry",
    "requests",
    "yaml",
)


def test_indexing_the_app_loads_no_heavy_sdk() -> None:
    # The host imports function_app.py to index the functions; each function loads its SDKs on first use.
    probe = f"import sys, function_app; print(sorted(m for m in {HEAVY_SDKS!r} if m in sys.modules))"
    result = subprocess.run(  # noqa: S603 - this interpreter, our own probe
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, **APP_SETTINGS},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout
