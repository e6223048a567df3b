"""Session fixtures: the real components, started once on free ports and stopped at the end.

The ServiceNow emulator runs in-process (its state is reset before each test that uses it);
Azurite runs from node_modules, in memory; the forward proxy is proxy.py. Nothing here mocks
product code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.app import servicenow_client
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore
from shared.platform.settings import ProxyUrl
from shared.servicenow.client import ServiceNowClient
from shared.servicenow.settings import ServiceNowConnection
from tools.emulators.keyvault import KeyVaultEmulator
from tools.emulators.servicenow import OAuthClient, ServiceNowEmulator
from tools.stack.azurite import Azurite, AzuriteError, start_azurite

pytest_plugins = ["tests.support.secret_scan"]
ROOT = Path(__file__).resolve().parent.parent
SN_USER, SN_PASSWORD = "svc_defender", "Test-Passw0rd-7781"
SN_CLIENT_ID, SN_CLIENT_SECRET = "defender-iot-tests", "Test-Client-Secret-5521"


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


@pytest.fixture(scope="session")
def keyvault_server(tls_dir: Path) -> Iterator[KeyVaultEmulator]:
    emulator = KeyVaultEmulator(tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def keyvault(keyvault_server: KeyVaultEmulator) -> KeyVaultEmulator:
    """The Key Vault emulator with no secrets and no faults, for one test."""
    keyvault_server.reset()
    return keyvault_server


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
        client = servicenow_client(connection, EnvironmentSecretStore(environ), settings)
        return client, environ


@pytest.fixture
def make_client(servicenow: ServiceNowEmulator) -> ClientFactory:
    return ClientFactory(servicenow)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    try:
        instance = start_azurite()
    except AzuriteError as exc:
        pytest.fail(str(exc))
    yield instance
    instance.stop()
