"""The Azurite fixture: real storage for the tests, reached with the real Azure SDK."""

from __future__ import annotations

import pytest
from azure.storage.queue import QueueClient

from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration


def test_queue_round_trip(azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, "smoke")
    queue.create_queue()
    queue.send_message('{"kind": "alert"}')
    (message,) = queue.receive_messages(max_messages=1)
    assert message.content == '{"kind": "alert"}' and message.dequeue_count == 1
    queue.delete_message(message)
    queue.delete_queue()


def test_storage_clients_do_not_consult_the_environment(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy variable in the environment (as any app setting is, in Azure) is not looked at per request:
    the product's storage traffic goes where its settings say, and does not pay for the lookups."""
    import uuid

    from shared.platform.settings import StorageConnection
    from shared.platform.storage import blob_service, queue_service, table_service

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    connection = StorageConnection("ALERTS_STORAGE", azurite.connection_string)
    name = f"env{uuid.uuid4().hex[:10]}"
    queue_service(connection, retry_total=0).get_queue_client(name).create_queue()
    table_service(connection).get_table_client(name).create_table()
    blob_service(connection, retry_total=0).get_container_client(name).create_container()
