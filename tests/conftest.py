"""Session fixtures: the real components, started once on free ports and stopped at the end.

The ServiceNow emulator runs in-process (its state is reset before each test that uses it);
Azurite runs from node_modules; the forward proxy is proxy.py. Nothing here mocks product code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.secrets import EnvironmentSecretStore
from shared.servicenow.client import ServiceNowClient
from shared.settings import HttpSettings, ProxyUrl, ServiceNowConnection
from tools.servicenow_emulator import OAuthClient, ServiceNowEmulator

ROOT = Path(__file__).resolve().parent.parent
SN_USER, SN_PASSWORD = "svc_defender", "Test-Passw0rd-7781"
SN_CLIENT_ID, SN_CLIENT_SECRET = "defender-iot-tests", "Test-Client-Secret-5521"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_ca_bundle() -> Iterator[None]:
    """`requests` lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own `verify` (PySNC
    and plain sessions included); machines often set them. The product's client ignores them
    (trust_env=False); third-party clients in the tests must see the CA they are given."""
    saved = {name: os.environ.pop(name) for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="session")
def servicenow_server(tls_dir: Path) -> Iterator[ServiceNowEmulator]:
    emulator = ServiceNowEmulator(
        tls_dir=tls_dir,
        users={SN_USER: SN_PASSWORD},
        clients=[OAuthClient(SN_CLIENT_ID, SN_CLIENT_SECRET)],
    ).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def servicenow(servicenow_server: ServiceNowEmulator) -> ServiceNowEmulator:
    """The emulator with empty tables, no faults and the default users, for one test."""
    servicenow_server.reset()
    servicenow_server.oauth.users = {SN_USER: SN_PASSWORD}
    servicenow_server.oauth.revoke()
    servicenow_server.batch_max_serviced = None
    return servicenow_server


@dataclass
class ClientFactory:
    emulator: ServiceNowEmulator

    def __call__(
        self,
        *,
        password: str = SN_PASSWORD,
        http: HttpSettings | None = None,
        proxy_url: str | None = None,
        ca_bundle: Path | str | None = "emulator",
        auth: str = "basic",
        token: str = "",
    ) -> tuple[ServiceNowClient, dict[str, str]]:
        """A client for the emulator, and the mutable secret environment it reads from."""
        environ = {"SERVICENOW_TEST_PASSWORD": password, "SERVICENOW_TEST_TOKEN": token}
        connection = ServiceNowConnection(
            name="test",
            instance_url=self.emulator.url,
            auth=auth,  # type: ignore[arg-type]
            username=SN_USER,
            proxy=ProxyUrl(proxy_url) if proxy_url else None,
            ca_bundle=self.emulator.ca_pem if ca_bundle == "emulator" else (Path(ca_bundle) if ca_bundle else None),
        )
        settings = http or HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=10, max_attempts=5)
        client = ServiceNowClient.for_connection(connection, EnvironmentSecretStore(environ), settings)
        return client, environ


@pytest.fixture
def make_client(servicenow: ServiceNowEmulator) -> ClientFactory:
    return ClientFactory(servicenow)


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        # The well-known development account (public, documented by Microsoft for Azurite).
        key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/devstoreaccount1;"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        pytest.fail("Azurite is not installed: run `make test` (it runs `npm ci`) instead of calling pytest directly")
    ports = Azurite(free_port(), free_port(), free_port())
    process = subprocess.Popen(  # noqa: S603 - fixed argument list, local binary
        [
            str(binary),
            "--silent",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(ports.blob_port),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(ports.queue_port),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(ports.table_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PATH": f"{Path(shutil.which('node') or 'node').parent}:{os.environ.get('PATH', '')}"},
    )
    try:
        for port in (ports.blob_port, ports.queue_port, ports.table_port):
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"Azurite exited with {process.returncode}: {stderr.strip()}")
            wait_for_port(port)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
