"""The queue trigger, with the Functions host's semantics against real storage (Azurite).

Per listener: fetch ``batchSize`` messages with a 10-minute visibility; fetch again once the
in-flight count drops to ``newBatchThreshold``; after an empty poll wait
``100 ms + rand(0.8..1.2) × 2^(k-1) × 100 ms`` capped at ``maxPollingInterval``. Per message: over
``maxDequeueCount`` on receipt, or not valid base64 under base64 encoding → poison queue without
running; visibility renewed while the message is in the host (waiting for a worker thread or
running); success → delete; failure → poison when the dequeue count has reached the maximum, else
visible again after ``visibilityTimeout``. The invocations run on the shared worker (``invoke.Worker``).

Stop, as the host's: fetch no more, wait for every received message's invocation to finish (each up
to functionTimeout), and release nothing; a message whose invocation has not finished, or whose
worker was restarted, stays invisible until its receive lease lapses, as after a kill.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions.queue
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage

from tools.funchost.config import QueueOptions
from tools.funchost.invoke import Invocation, Worker

logger = logging.getLogger("funchost")


@dataclass(frozen=True)
class QueueTimings:
    """The host's fixed timings; tests shorten them to observe renewal and shutdown quickly."""

    receive_visibility: int = 600  # seconds a received message stays invisible
    renew_every: float = 300.0  # how often that visibility is renewed while the function runs


@dataclass
class _InFlight:
    message: QueueMessage
    pop_receipt: str
    renewed_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    invocation: Invocation | None = None

    @property
    def killed(self) -> bool:
        return self.invocation is not None and self.invocation.killed


class QueueListener:
    def __init__(
        self,
        function_name: str,
        user_function: Callable[..., Any],
        arg_name: str,
        queue: QueueClient,
        poison: QueueClient,
        options: QueueOptions,
        worker: Worker,
        timings: QueueTimings = QueueTimings(),
    ) -> None:
        self.function_name = function_name
        self.user_function = user_function
        self.arg_name = arg_name
        self.queue = queue
        self.poison = poison
        self.options = options
        self.worker = worker
        self.timings = timings
        self.inflight: dict[str, _InFlight] = {}
        self.changed = threading.Condition()
        self.stopping = threading.Event()  # fetch no more
        self.closed = threading.Event()  # renew no more: nothing left running
        self.rng = random.Random()  # polling jitter  # nosec B311
        self.threads: list[threading.Thread] = []
        self.stats = {"received": 0, "succeeded": 0, "failed": 0, "poisoned": 0}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._poll, "poll"), (self._renew, "renew")):
            thread = threading.Thread(target=target, name=f"{self.function_name}-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop fetching; wait for every received message's invocation to finish, each up to functionTimeout;
        release nothing."""
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        for thread in self.threads[:1]:  # the poller; the renewer keeps running messages invisible
            thread.join(timeout=5)
        with self.changed:
            # The worker's watchdog kills an invocation at functionTimeout: that bounds the wait.
            while self._running():
                self.changed.wait(timeout=0.2)
            left = list(self.inflight.values())
        self.closed.set()
        for item in left:
            logger.warning(
                "%s: message %s still running at shutdown; it stays invisible until its receive lease lapses",
                self.function_name,
                item.message.id,
            )

    def _running(self) -> int:
        # A killed invocation's message is no longer the host's: after a restart it would not be counted.
        return sum(1 for item in self.inflight.values() if not item.killed)

    # -- fetching --------------------------------------------------------------------------
    def _poll(self) -> None:
        empty_polls = 0
        while not self.stopping.is_set():
            with self.changed:
                while self._running() > self.options.new_batch_threshold and not self.stopping.is_set():
                    self.changed.wait(timeout=1)
            if self.stopping.is_set():
                return
            try:
                messages = list(
                    self.queue.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=self.timings.receive_visibility,
                    )
                )
            except AzureError as exc:
                logger.error(
                    "%s: receiving from queue '%s' failed: %s",
                    self.function_name,
                    self.queue.queue_name,
                    exc.message if hasattr(exc, "message") else exc,
                )
                messages = []
            if not messages:
                empty_polls += 1
                delay = 0.1 + self.rng.uniform(0.8, 1.2) * (2 ** min(empty_polls - 1, 20)) * 0.1
                self.stopping.wait(min(delay, self.options.max_polling_interval))
                continue
            empty_polls = 0
            for message in messages:
                self._accept(message)

    def _accept(self, message: QueueMessage) -> None:
        self.stats["received"] += 1
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > self.options.max_dequeue_count:
            self._to_poison(message, message.pop_receipt or "", "dequeue count over maxDequeueCount on receipt")
            return
        if self.options.message_encoding == "base64":
            try:
                body = base64.b64decode(message.content or "", validate=True)
            except (binascii.Error, ValueError):
                self._to_poison(
                    message, message.pop_receipt or "", "message is not valid base64 (messageEncoding base64)"
                )
                return
        else:
            body = (message.content or "").encode("utf-8")
        item = _InFlight(message, message.pop_receipt or "", time.monotonic())
        trigger = azure.functions.queue.QueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        with self.changed:
            self.inflight[message.id] = item
            reason = f"New queue message detected on '{self.queue.queue_name}'."
            item.invocation = self.worker.submit(
                self.function_name,
                self.user_function,
                {self.arg_name: trigger},
                reason,
                then=lambda invocation, succeeded: self._settle(item, succeeded),
            )

    # -- one message -----------------------------------------------------------------------
    def _settle(self, item: _InFlight, succeeded: bool) -> None:
        message = item.message
        try:
            with item.lock:
                if succeeded:
                    self.stats["succeeded"] += 1
                    self.queue.delete_message(message.id, item.pop_receipt)
                elif (message.dequeue_count or 1) >= self.options.max_dequeue_count:
                    self.stats["failed"] += 1
                    self._to_poison(message, item.pop_receipt, f"failed {message.dequeue_count} time(s)")
                else:
                    self.stats["failed"] += 1
                    self.queue.update_message(
                        message.id, item.pop_receipt, visibility_timeout=int(self.options.visibility_timeout)
                    )
        except AzureError as exc:
            logger.error("%s: settling message %s failed: %s", self.function_name, message.id, exc)
        finally:
            with self.changed:
                if self.inflight.get(message.id) is item:  # not a redelivery of a killed one
                    del self.inflight[message.id]
                self.changed.notify_all()

    def _to_poison(self, message: QueueMessage, pop_receipt: str, reason: str) -> None:
        """Copy the message, as stored, to ``<queue>-poison`` (created if missing) and delete it."""
        with contextlib.suppress(ResourceExistsError):
            self.poison.create_queue()
        self.poison.send_message(message.content)
        self.queue.delete_message(message.id, pop_receipt)
        self.stats["poisoned"] += 1
        logger.warning(
            "%s: message %s moved to queue '%s': %s", self.function_name, message.id, self.poison.queue_name, reason
        )

    def _renew(self) -> None:
        period = min(1.0, self.timings.renew_every / 4)
        while not self.closed.wait(period):
            now = time.monotonic()
            with self.changed:
                due = [i for i in self.inflight.values() if now - i.renewed_at >= self.timings.renew_every]
            for item in due:
                with item.lock:
                    if item.killed or self.inflight.get(item.message.id) is not item:
                        continue
                    try:
                        receipt = self.queue.update_message(
                            item.message.id, item.pop_receipt, visibility_timeout=self.timings.receive_visibility
                        )
                        item.pop_receipt = receipt.pop_receipt or item.pop_receipt
                        item.renewed_at = now
                    except AzureError as exc:
                        logger.error(
                            "%s: renewing visibility of %s failed: %s", self.function_name, item.message.id, exc
                        )
