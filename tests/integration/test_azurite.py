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
