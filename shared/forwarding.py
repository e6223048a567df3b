"""Alert forwarding: queue message → forwarding rules → ServiceNow records (alert-forwarding issue)."""


def handle_queue_message(body: bytes, *, message_id: str, dequeue_count: int) -> None:
    """Process one message from the alerts queue.

    Not built yet: the alert-forwarding issue implements the message contract, rules and records.
    Raising keeps the message in the queue (and, after maxDequeueCount, in the poison queue) rather
    than pretending it was forwarded.
    """
    raise NotImplementedError(
        f"alert forwarding is not implemented yet; message {message_id} (dequeue count {dequeue_count}) "
        "was not forwarded and stays in the queue"
    )
