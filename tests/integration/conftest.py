"""Fixtures for integration tests that need the forwarding stack (Azurite + emulator + forwarder)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.app.forwarding import build_forwarder
from shared.settings import load_settings
from tests.conftest import SN_PASSWORD
from tests.support.forwarding import Stack, rules
from tests.support.settings import app_settings
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.servicenow import ServiceNowEmulator
from tools.stack.azurite import Azurite


@pytest.fixture(scope="session")
def resourcegraph_server(tls_dir: Path) -> Iterator[ResourceGraphEmulator]:
    emulator = ResourceGraphEmulator(tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def graph(resourcegraph_server: ResourceGraphEmulator) -> ResourceGraphEmulator:
    """The Resource Graph emulator, empty, with no faults and the default quota, for one test."""
    resourcegraph_server.reset()
    return resourcegraph_server


@pytest.fixture
def make_stack(
    azurite: Azurite, servicenow: ServiceNowEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Stack]]:
    monkeypatch.setenv("SERVICENOW_DEFAULT_PASSWORD", SN_PASSWORD)
    built: list[Stack] = []

    def make(document: dict[str, Any] | None = None, **overrides: str) -> Stack:
        rules_path = tmp_path / f"rules-{uuid.uuid4().hex[:6]}.json"
        rules_path.write_text(json.dumps(document or rules()))
        defaults = {
            "SERVICENOW_CA_BUNDLE": str(servicenow.ca_pem),
            "SERVICENOW_READ_TIMEOUT_SECONDS": "1",
            "SERVICENOW_RETRY_BUDGET_SECONDS": "2",
            "FORWARDING_RULES_LOCATION": f"file:{rules_path}",
            "FORWARDING_RETRY_BASE_SECONDS": "1",
            "FORWARDING_RETRY_MAX_SECONDS": "2",
        }
        environ = app_settings(azurite.connection_string, servicenow.url, **{**defaults, **overrides})
        settings = load_settings(environ)
        forwarder = build_forwarder(settings)
        forwarder.queue.create_queue()
        stack = Stack(settings, forwarder, servicenow, forwarder.queue, forwarder.poison, rules_path, environ)
        built.append(stack)
        return stack

    yield make
    for stack in built:
        for client in stack.forwarder.clients.values():
            client.close()
