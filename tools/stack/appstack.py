"""The whole product on ephemeral ports, for end-to-end benchmarks, the fault campaign and their tests.

Azurite, the ServiceNow emulator (OAuth), the Key Vault emulator, the Resource Graph emulator (the cloud
source in DEFENDER_SOURCES) and function_app.py in the local host — the host in its own process, as
``func start`` would run it, so it can be killed with SIGKILL and started again while everything else
keeps its state. The connection signs in with ``connect``
(password grant once, tokens in Key Vault), exactly as an operator would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess  # starts the local host with this interpreter  # nosec B404
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueServiceClient

from shared.alerting.poison import poison_queue_name
from shared.alerting.records import correlation_id
from shared.alerting.rules import parse_rules
from shared.alerting.rules_store import write_rules
from shared.app import secret_store
from shared.app.tokens import connect_connection
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from shared.platform.secrets import KeyVaultSecretStore, Secret
from shared.platform.storage import blob_service, pooled_session
from shared.settings import load_settings
from tools.emulators.keyvault import KeyVaultEmulator
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.servicenow import OAuthClient, ServiceNowEmulator
from tools.stack.azurite import Azurite, start_azurite

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "svc_defender", "Stack-Passw0rd-7c1e"
CLIENT_ID, CLIENT_SECRET = "defender-iot", "Stack-Client-Secret-93ad"
RULES = {
    "actions": [{"name": "incident", "connection": "default", "report": "incident"}],
    "rules": [{"name": "all", "created_at": "2025-01-01T00:00:00+00:00", "actions": ["incident"]}],
}
FIRST_ALERT_TIME = 1763762400000  # 2025-11-21T22:00:00Z, in the console's epoch milliseconds


def alert_document(number: int, run: str) -> dict[str, Any]:
    """A valid alert message; ``number`` makes it unique within ``run``."""
    return {
        "schema": SCHEMA,
        "kind": "alert",
        "sensor": {"name": f"sensor-{run}", "id": run},
        "alert": {
            "id": number,
            "time": FIRST_ALERT_TIME + number,
            "title": "Unauthorized PLC Programming",
            "severity": ("Critical", "Major", "Minor", "Warning")[number % 4],
            "engine": "Policy Violation",
            "message": f"alert {number} of run {run}",
        },
    }


def alert_correlation_id(number: int, run: str) -> str:
    """The correlation id the product gives the incident of ``alert_document(number, run)``."""
    message = parse_message(json.dumps(alert_document(number, run)).encode())
    return correlation_id(message, parse_rules(RULES).actions["incident"])


def encode(document: Mapping[str, Any] | bytes) -> str:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return base64.b64encode(body).decode("ascii")


class AppStack:
    """Start with ``with AppStack(workdir) as stack:``; ``stack.start_host()`` runs the app."""

    def __init__(
        self,
        workdir: Path,
        *,
        latency_ms: float = 0,
        settings: Mapping[str, str] | None = None,
        receive_visibility: int = 600,
        rules: Mapping[str, Any] | None = None,
        app_dir: Path = ROOT,
        storage_debug_log: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.latency_ms = latency_ms
        self.receive_visibility = receive_visibility
        self.overrides = dict(settings or {})
        self.rules = dict(rules or RULES)
        self.app_dir = app_dir  # another checkout of the product (a benchmark's "before")
        self.storage_debug_log = storage_debug_log  # Azurite logs every request there (it slows Azurite)
        self.hosts: list[subprocess.Popen[bytes]] = []
        self.host_starts = 0
        self._stack = contextlib.ExitStack()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> AppStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_host()
        self._stack.close()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = self.workdir / "tls"
        self.azurite: Azurite = start_azurite(log=self.workdir / "azurite.log", debug_log=self.storage_debug_log)
        self._stack.callback(self.azurite.stop)
        self.servicenow = ServiceNowEmulator(
            tls_dir=tls, users={USER: PASSWORD}, clients=[OAuthClient(CLIENT_ID, CLIENT_SECRET)]
        ).start()
        self._stack.callback(self.servicenow.stop)
        self.servicenow.faults.configure({"latency_ms": self.latency_ms})
        self.vault = KeyVaultEmulator(tls_dir=tls).start()
        self._stack.callback(self.vault.stop)
        self.graph = ResourceGraphEmulator(tls_dir=tls).start()
        self._stack.callback(self.graph.stop)
        self.graph.faults.configure({"latency_ms": self.latency_ms})
        ca = str(self.servicenow.ca_pem.resolve())
        run = uuid.uuid4().hex[:10]
        vault_port = self.vault.url.rsplit(":", 1)[1]
        self.values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.azurite.connection_string,
            "ALERTS_STORAGE": self.azurite.connection_string,
            "ALERTS_QUEUE": f"alerts{run}",
            "FORWARDING_LEDGER_TABLE": f"ledger{run}",
            "TOKEN_REFRESH_SCHEDULE": "0 0 0 1 1 *",  # a schedule, not a password  # nosec B105
            "DEVICE_SYNC_SCHEDULE": "0 0 0 1 1 *",
            "ALERT_INTAKE_SCHEDULE": "0 0 0 1 1 *",
            "SERVICENOW_CONNECTIONS": json.dumps(
                [
                    {
                        "name": "default",
                        "instance_url": self.servicenow.url,
                        "auth": "oauth",
                        "client_id": CLIENT_ID,
                        "username": USER,
                    }
                ]
            ),
            "SERVICENOW_CA_BUNDLE": ca,
            "KEY_VAULT_URL": f"https://localhost:{vault_port}",
            "KEY_VAULT_CREDENTIAL": "emulator",
            "KEY_VAULT_CA_BUNDLE": ca,
            # Blob rules, as main.bicep deploys them (the forwarder looks for a new version every 30 s).
            "FORWARDING_RULES_LOCATION": f"rules{run}/forwarding-rules.json",
            "DEFENDER_SOURCES": json.dumps(
                [
                    {
                        "name": "cloud",
                        "kind": "cloud",
                        "subscriptions": [self.graph.subscription],
                        "resource_graph_url": self.graph.url,
                        "credential": "emulator",
                        "ca_bundle": ca,
                    }
                ]
            ),
            "ALERT_INTAKE_STATE_TABLE": f"intake{run}",
            **self.overrides,
        }
        self.settings_file = self.workdir / "local.settings.json"
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": self.values}, indent=2))
        self.settings = load_settings(self.values)
        write_rules(self.settings.forwarding.rules_location, blob_service(self.settings.alerts_storage), self.rules)
        store = secret_store(self.settings)
        assert isinstance(store, KeyVaultSecretStore)
        connection = self.settings.connection("default")
        store.write(connection.secret_name("client-secret"), Secret(CLIENT_SECRET), content_type="text/plain")
        self.connect()
        service = QueueServiceClient.from_connection_string(self.azurite.connection_string, session=pooled_session(16))
        for name in (self.values["ALERTS_QUEUE"], poison_queue_name(self.values["ALERTS_QUEUE"])):
            with contextlib.suppress(ResourceExistsError):
                service.create_queue(name)
        self.queue = service.get_queue_client(self.values["ALERTS_QUEUE"])
        self.poison = service.get_queue_client(poison_queue_name(self.values["ALERTS_QUEUE"]))

    def connect(self) -> None:
        """What an operator runs after a revocation: ``python -m shared connect`` (password grant once)."""
        connect_connection(self.settings, self.settings.connection("default"), USER, Secret(PASSWORD))

    # -- the host ----------------------------------------------------------------------------
    @property
    def host(self) -> subprocess.Popen[bytes] | None:
        """The host started last."""
        return self.hosts[-1] if self.hosts else None

    def start_host(self, *, wait: float = 60) -> None:
        """Start one more local host in its own process and wait until it says it is running."""
        self.start_hosts(1, wait=wait)

    def start_hosts(self, count: int, *, wait: float = 60) -> None:
        """Start ``count`` more hosts at once (own processes) and wait until each says it is running; hosts
        share the queue and the timers (one of them runs each), as the instances of a scaled-out app do."""
        started = []
        for _ in range(count):
            self.host_starts += 1
            path = self.workdir / f"host-{self.host_starts}.log"
            with path.open("wb") as log:
                host = subprocess.Popen(  # noqa: S603 - the project's own interpreter and module  # nosec B603
                    [
                        sys.executable,
                        "-m",
                        "tools.funchost",
                        "--app-dir",
                        str(self.app_dir),
                        "--settings",
                        str(self.settings_file),
                        "--receive-visibility",
                        str(self.receive_visibility),
                    ],
                    cwd=self.app_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.app_dir)},
                )
            self.hosts.append(host)
            started.append((host, path))
        deadline = time.monotonic() + wait
        for host, path in started:
            while "local Functions host running" not in path.read_text(errors="replace"):
                if host.poll() is not None:
                    raise RuntimeError(f"the local host exited with {host.returncode}: {path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the local host did not start within {wait} s (log: {path})")
                time.sleep(0.1)

    def kill_host(self) -> None:
        """SIGKILL every host: no graceful stop, in-flight messages come back when their visibility expires."""
        for host in self.hosts:
            if host.poll() is None:
                host.send_signal(signal.SIGKILL)
                host.wait()

    def stop_host(self) -> None:
        for host in self.hosts:
            if host.poll() is None:
                host.send_signal(signal.SIGINT)
        for host in self.hosts:
            try:
                host.wait(timeout=60)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()

    def host_logs(self) -> str:
        return "".join(
            (self.workdir / f"host-{n}.log").read_text(errors="replace") for n in range(1, self.host_starts + 1)
        )

    # -- alerts in, records out -------------------------------------------------------------------
    def enqueue(self, messages: Iterable[Mapping[str, Any] | bytes], threads: int = 8) -> None:
        """Send messages (documents or raw bodies) in parallel."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda message: self.queue.send_message(encode(message)), messages))

    def correlations(self) -> Counter[str]:
        """Incidents in ServiceNow by correlation id (one per alert and action)."""
        return Counter(r.get("correlation_id", "") for r in self.servicenow.store.all("incident"))

    def drain_poison(self) -> list[dict[str, Any]]:
        """Take every message off the poison queue (for a final count)."""
        found: list[dict[str, Any]] = []
        with contextlib.suppress(ResourceNotFoundError):
            while batch := list(self.poison.receive_messages(messages_per_page=32, visibility_timeout=60)):
                for message in batch:
                    body = base64.b64decode(message.content or "")
                    try:
                        document = json.loads(body)
                    except ValueError:
                        document = None
                    # The forwarder's wrapper is an object with a reason; anything else is a host-level copy.
                    found.append(document if isinstance(document, dict) else {"host_copy_base64": message.content})
                    self.poison.delete_message(message)
        return found

    def queue_depth(self) -> int:
        return int(self.queue.get_queue_properties().approximate_message_count or 0)
