"""HTTPS proxy (with credentials) and CA bundle handling, against a real forward proxy and real TLS."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import proxy
import pytest

from shared.http.errors import ConnectionFailedError, PermanentError
from shared.http.settings import HttpSettings
from tests.conftest import ClientFactory
from tools.emulators.servicenow import ServiceNowEmulator
from tools.stack.azurite import free_port

pytestmark = pytest.mark.integration
PROXY_USER, PROXY_PASSWORD = "squid", "Pr0xy-Pa55"


@pytest.fixture(scope="module")
def proxy_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy") / "upstreams.txt"


@pytest.fixture(scope="module")
def forward_proxy(proxy_record: Path) -> Iterator[int]:
    port = free_port()
    os.environ["PROXY_RECORD_FILE"] = str(proxy_record)
    with proxy.Proxy(
        hostname=ipaddress.ip_address("127.0.0.1"),
        port=port,
        threaded=True,
        num_workers=1,
        num_acceptors=1,
        basic_auth=f"{PROXY_USER}:{PROXY_PASSWORD}",
        plugins=["tests.support.proxy_recorder.RecordUpstreams"],
    ):
        yield port


def test_traffic_goes_through_the_proxy_with_credentials(
    servicenow: ServiceNowEmulator, make_client: ClientFactory, forward_proxy: int, proxy_record: Path
) -> None:
    proxy_record.write_text("")
    client, _ = make_client(proxy_url=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{forward_proxy}")
    client.create_record("incident", {"short_description": "through the proxy"})
    port = servicenow.url.rsplit(":", 1)[1]
    assert f"CONNECT localhost:{port}" in proxy_record.read_text().splitlines()
    assert len(servicenow.store.all("incident")) == 1


def test_wrong_proxy_credentials_fail_clearly_without_leaking_them(
    servicenow: ServiceNowEmulator, make_client: ClientFactory, forward_proxy: int
) -> None:
    client, _ = make_client(
        proxy_url=f"http://{PROXY_USER}:Wrong-Pr0xy@127.0.0.1:{forward_proxy}",
        http=HttpSettings(connect_timeout=2, read_timeout=2, retry_budget_seconds=1, max_attempts=2),
    )
    with pytest.raises(ConnectionFailedError) as info:
        client.create_record("incident", {"short_description": "refused by proxy"})
    assert "proxy" in str(info.value)
    assert "Wrong-Pr0xy" not in str(info.value) and "Wrong-Pr0xy" not in repr(info.value)
    assert servicenow.store.all("incident") == []


def test_private_ca_is_refused_without_the_bundle(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client(ca_bundle=None)
    with pytest.raises(PermanentError, match="TLS verification failed; set SERVICENOW_CA_BUNDLE"):
        list(client.query("incident"))
    assert servicenow.stats["requests"] == 0


def test_private_ca_is_trusted_with_the_bundle(servicenow: ServiceNowEmulator, make_client: ClientFactory) -> None:
    client, _ = make_client()
    assert list(client.query("incident")) == []
